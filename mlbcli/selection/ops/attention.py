"""Attention-debiased token pruning: scorer -> debiasers -> selector (the tensor side of fastv/adatp/mlb).

Scorer: the engine's probe at layer K-1 (`--layer K`, default 2; `--query question|last`): the
attention the query rows give each visual token, mean over heads and rows.
Debiasers (`--debias`, composable, order-free): `global`, `local`, `grid`, `tail` and plugins
(`mlbcli.selection.debiasers`): this module calls their hooks and knows none of them by name.
Selector: top-k of the probe scores inside the budget groups the debiasers define (whole video,
segment, frame, or grid cell).

Attention methods (`--method`, `selection.methods.attention`): fastv = no debiasing, adatp =
global+local, mlb = grid+tail; `--debias` replaces a method's default debiasers, so `fastv --debias local`
is a valid ablation. visionzip and dycoke are pre-LLM methods without attention: --layer/--query/--debias
are errors with them (`check_method_options`).

Common rules (the budget contract): `--keep 1.0` (or no --keep) prunes nothing for every attention
method (the output is token- and logit-identical to `none`; with `compress` attention methods still
probe the raw attention field, keeping every token). Budgets are exact: `token_budget(T*N, keep)` visual tokens
continue past the pruning layer, summary-tail tokens included; a method that cannot reach its budget
(DyCoke's reference frames) does the closest thing and says why in the row's `keep_note`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from mlbcli.models.base import Prompt, VideoTokens
from mlbcli.selection.base import PlanContext, token_budget
from mlbcli.selection.debiasers import Debiaser, DebiasJob, make_debiasers
from mlbcli.selection.ops import debias as D
from mlbcli.selection.plan import LayerContext, LayerKeep, LayerPruner, PrunePlan


def frame_bounds(segments: torch.Tensor) -> list[list[int]]:
    """[T] segment ids -> [[first_frame, last_frame_exclusive], ...] (JSON-friendly)."""
    counts = torch.bincount(segments).tolist()
    bounds, start = [], 0
    for c in counts:
        bounds.append([start, start + c])
        start += c
    return bounds


def attention_select(
    scores: torch.Tensor,
    visual_ids: torch.Tensor,
    *,
    num_frames: int,
    grid: tuple[int, int],
    budget: int,
    segments: torch.Tensor | None = None,
    relevance: torch.Tensor | None = None,
    use_grid: bool = False,
    min_segment_budget: float = 0.25,
    relevance_temperature: float = 0.05,
    cells_per_side: int = 0,
    pool_temperature: float = 0.0,
    pooling: dict[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The selector at layer K. Pure: scores [n] of candidates with flat ids [n] -> (keep [k] asc, info).

    - segments given (global): per-segment budgets (`segment_budgets`), then top-k per segment, or per
      frame inside the segment when `use_grid`;
    - use_grid alone: even per-frame budgets (capacity-aware), GAPool-select inside each frame;
    - neither: FastV's global top-k.
    k = min(budget, n) exactly.
    GAPool pool mode (`use_grid` and pool_temperature > 0): one pooled token per cell; the pooling
    (members, owners, weights: `debias.pool_grid`) is written into `pooling` for the caller, who
    owns the hidden states.
    """
    scores = scores.detach().float().cpu()
    ids = visual_ids.cpu()
    N = grid[0] * grid[1]
    frames, positions = ids // N, ids % N  # [n], [n]
    frame_caps = torch.bincount(frames, minlength=num_frames).tolist()
    info: dict[str, Any] = {"budget": int(min(budget, scores.numel()))}
    per_frame: list[int] | None = None
    if segments is not None:
        segments = segments.cpu()  # [T]
        seg_of = segments[frames]  # [n]
        seg_caps = torch.bincount(seg_of, minlength=int(segments.max()) + 1).tolist()
        seg_budgets = D.segment_budgets(
            budget,
            segments,
            relevance,
            min_fraction=min_segment_budget,
            temperature=relevance_temperature,
            capacities=seg_caps,
        )
        info["segments"] = frame_bounds(segments)
        info["budgets"] = seg_budgets
        if relevance is not None:
            info["relevance"] = [round(float(r), 6) for r in relevance]
        if use_grid:
            per_frame = []
            for (a, b), sb in zip(info["segments"], seg_budgets, strict=True):
                per_frame += D.allocate(sb, [1.0] * (b - a), frame_caps[a:b])
        else:
            keep = D.select_grouped(scores, seg_of, seg_budgets)
    elif use_grid:
        per_frame = D.allocate(budget, [1.0] * num_frames, frame_caps)
    else:
        keep = D.select_topk(scores, budget)
    if per_frame is not None:
        info["frame_budgets"] = per_frame
        if pool_temperature > 0:
            keep, members, owners, weights = D.pool_grid(
                scores, frames, positions, grid, per_frame, cells_per_side, pool_temperature
            )
            if pooling is not None:
                pooling.update(members=members, owners=owners, weights=weights)
            info["gapool"] = "pool"
        else:
            keep = D.select_grid(scores, frames, positions, grid, per_frame, cells_per_side)
    # Diagnostics for the bias report: the probe's attention mass per frame over all candidates, and
    # over the kept tokens only (what the selection actually spends its budget on), each summing to 1.
    info["attention_per_frame"] = D.per_group_mass(scores, frames, num_frames)
    info["attention_per_frame_debiased"] = D.per_group_mass(scores[keep], frames[keep], num_frames)
    return keep, info


def probe_only_plan(
    video: VideoTokens, layer: int, query: str, extra: dict[str, Any] | None = None
) -> PrunePlan:
    """Keep every token, but read the layer-(K-1) attention (`compress --keep 1.0` of an attention
    method): the raw attention field per frame before any debiasing, for calibration and bias plots.
    Tokens, positions and FLOPs are those of `none`."""
    T = video.num_frames

    def observe(ctx: LayerContext) -> LayerKeep:
        assert ctx.scores is not None
        frames = ctx.visual_ids.cpu() // video.tokens_per_frame
        info = {
            "probe_only": True,
            "layer": layer,
            "attention_per_frame_raw": D.per_group_mass(ctx.scores, frames, T),
        }
        return LayerKeep(
            keep=torch.arange(ctx.visual_slots.numel(), device=ctx.visual_slots.device),
            info={**info, **(extra or {})},
        )

    return PrunePlan(steps={layer: observe}, needs_scores=frozenset({layer}), query=query)


@dataclass(frozen=True)
class AttentionSettings:
    """What an attention method (fastv, adatp, MLB-lite) resolved its options to, for one plan."""

    name: str  # the method, for messages
    keep: float  # < 1: the budget is token_budget(T*N, keep), the summary tail included
    layer: int  # prune before decoder layer K, scored by layer K-1
    query: str  # probe rows: "question" or "last"
    debias: tuple[str, ...]  # debiasers in application order
    params: Mapping[str, Any]  # resolved hyperparameters of the method and its debiasers

    def debiasers(self) -> tuple[Debiaser, ...]:
        return make_debiasers(self.debias, self.params)


def attention_plan(
    s: AttentionSettings, video: VideoTokens, prompt: Prompt | None, context: PlanContext | None
) -> PrunePlan:
    """The keep schedule of an attention method: the debiasers' layer-0 step (when there are any)
    and the selection before layer K, each calling the debiasers' hooks (`selection.debiasers`).
    `s.keep` < 1 and the tail fitting the budget are checked by the caller
    (`methods.attention.AttentionMethod.plan`)."""
    T, N = video.num_frames, video.tokens_per_frame
    frame_vec = video.frame_features if video.frame_features is not None else video.features.mean(1)
    debiasers = s.debiasers()
    job = DebiasJob(s.name, video, prompt, frame_vec)
    for debiaser in debiasers:
        debiaser.observe(job)
    if s.keep >= 1.0:  # no pruning; `compress` still reads the raw attention field
        if context is not None and context.diagnostics:
            return probe_only_plan(video, s.layer, s.query, job.observed or None)
        return PrunePlan()
    job.budget = token_budget(T * N, s.keep)
    job.tail_tokens = sum(T * d.tail_size() ** 2 for d in debiasers)
    for debiaser in debiasers:
        debiaser.prepare(job)
    steps: dict[int, LayerPruner] = {}
    if debiasers:  # layer-0 step: dedup, question relevance, summary tail (keeps all otherwise)
        steps[0] = _before_llm(debiasers, job)
    steps[s.layer] = _at_layer(s, debiasers, job)
    return PrunePlan(steps=steps, needs_scores=frozenset({s.layer}), query=s.query)


def _before_llm(debiasers: tuple[Debiaser, ...], job: DebiasJob) -> LayerPruner:
    """The layer-0 step: the debiasers drop tokens (`local`), read the input states (`global`'s
    question relevance) and append tokens (`tail`), in that order."""
    n = job.video.num_frames * job.video.tokens_per_frame

    def before_llm(ctx: LayerContext) -> LayerKeep:
        device = ctx.visual_slots.device
        info: dict[str, Any] = {}
        keep = torch.arange(n)
        for debiaser in debiasers:
            keep = debiaser.drop_before_llm(job, keep, info)
        for debiaser in debiasers:
            debiaser.read_before_llm(job, ctx, info)
        appended = [a for d in debiasers if (a := d.append_before_llm(job, ctx, info)) is not None]
        append = (appended[0] if len(appended) == 1 else torch.cat(appended)) if appended else None
        return LayerKeep(keep=keep.to(device), append=append, info=info)

    return before_llm


def _at_layer(s: AttentionSettings, debiasers: tuple[Debiaser, ...], job: DebiasJob) -> LayerPruner:
    """The selection before layer K: `attention_select` inside the debiasers' budget groups."""
    video = job.video
    raw_field = not any(d.drops_before_llm for d in debiasers)  # every token reached the probe

    def at_layer(ctx: LayerContext) -> LayerKeep:
        assert ctx.scores is not None
        pooling: dict[str, torch.Tensor] = {}
        options: dict[str, Any] = {}
        for debiaser in debiasers:
            options.update(debiaser.selection_options(job))
        keep, info = attention_select(
            ctx.scores,
            ctx.visual_ids,
            num_frames=video.num_frames,
            grid=video.grid,
            budget=job.budget - job.tail_tokens,
            pooling=pooling,
            **options,
        )
        info["debias"] = list(s.debias) or ["none"]
        info["layer"] = s.layer
        if raw_field:
            info["attention_per_frame_raw"] = info["attention_per_frame"]
        replace = merged_into = None
        if pooling:  # GAPool pool mode: the cell's weighted mean at its centre token's slot
            x = ctx.hidden[0, ctx.visual_slots]  # [n, D] states entering layer K
            replace = D.pooled_states(x, keep.numel(), **pooling)
            merged_into = torch.full((x.shape[0],), -1, dtype=torch.long)  # [n] owner in keep
            merged_into[pooling["members"]] = pooling["owners"]
        return LayerKeep(
            keep=keep.to(ctx.visual_slots.device), replace=replace, info=info, merged_into=merged_into
        )

    return at_layer
