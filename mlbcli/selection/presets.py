"""Attention-debiased token pruning: scorer -> debiasers -> selector, and the method presets.

Scorer: the engine's probe at layer K-1 (`--layer K`, default 2; `--query question|last`): the
attention the query rows give each visual token, mean over heads and rows.
Debiasers (`--debias`, composable, order-free): `global`, `local`, `grid`, `tail` (see `DEBIASERS`).
Selector: top-k of the probe scores inside the budget groups the debiasers define (whole video,
segment, frame, or grid cell).

Presets (`--method`): fastv = no debiasing, adatp = global+local, mlb = grid+tail; `--debias`
replaces a preset's debiasers, so `fastv --debias local` is a valid ablation. visionzip and dycoke are
pre-LLM methods without attention: they ignore --layer/--query and accept no debiasers.

Common rules: `--keep 1.0` returns an empty plan for every preset (no reduction requested; the output
is token- and logit-identical to `none`). Budgets are exact: `token_budget(T*N, keep)` visual tokens
continue past the pruning layer, summary-tail tokens included.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from mlbcli.engine import LayerContext, LayerKeep, PrunePlan
from mlbcli.errors import UsageError
from mlbcli.models.base import Prompt, VideoTokens
from mlbcli.selection import debias as D
from mlbcli.selection.base import Method, MethodOptions, PlanContext, register_method, token_budget
from mlbcli.selection.baselines import frame_budgets
from mlbcli.selection.params import resolve_params

DEBIASERS: dict[str, str] = {
    "global": "AdaTP: segment budgets by adjacent-frame similarity, segment length and question relevance",
    "local": "AdaTP: drop same-position near-duplicates of the previous frame inside a segment (pre-LLM)",
    "grid": "LLaVA-MLB GAPool (select): every frame's budget spread over spatial cells, top token per cell",
    "tail": "LLaVA-MLB VSTail: s x s pooled summary of every frame appended after the visual block",
    "none": "no debiasing (plain global top-k by attention)",
}


def parse_debias(debias: Sequence[str] | None, default: tuple[str, ...]) -> tuple[str, ...]:
    """Validated debiaser names in canonical order; () for none. None -> the preset's default."""
    if debias is None:
        return default
    names = [d.strip().lower() for d in debias if d.strip()]
    unknown = [d for d in names if d not in DEBIASERS]
    if unknown:
        raise UsageError(f"unknown debiaser(s) {', '.join(unknown)}; choose from {', '.join(DEBIASERS)}")
    if "none" in names and len(set(names)) > 1:
        raise UsageError("--debias none cannot be combined with other debiasers")
    return tuple(d for d in ("global", "local", "grid", "tail") if d in names)


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
    relevance_temperature: float = 1.0,
    cells_per_side: int = 0,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The selector at layer K. Pure: scores [n] of candidates with flat ids [n] -> (keep [k] asc, info).

    - segments given (global): per-segment budgets (`segment_budgets`), then top-k per segment, or per
      frame inside the segment when `use_grid`;
    - use_grid alone: even per-frame budgets (capacity-aware), GAPool-select inside each frame;
    - neither: FastV's global top-k.
    k = min(budget, n) exactly.
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
        keep = D.select_grid(scores, frames, positions, grid, per_frame, cells_per_side)
    # Diagnostics for the bias report: the probe's attention mass per frame over all candidates, and
    # over the kept tokens only (what the selection actually spends its budget on), each summing to 1.
    info["attention_per_frame"] = D.per_group_mass(scores, frames, num_frames)
    info["attention_per_frame_debiased"] = D.per_group_mass(scores[keep], frames[keep], num_frames)
    return keep, info


class _AttentionPreset(Method):
    """Prune before decoder layer K by the layer-(K-1) probe, with composable debiasers."""

    default_debias: ClassVar[tuple[str, ...]] = ()
    query_aware = True
    prune_point = "layer"

    def __init__(self, options: MethodOptions | None = None):
        super().__init__(options)
        resolve_params(self.options.params, self.debiasers())  # UsageError at construction, before any work

    def debiasers(self) -> tuple[str, ...]:
        return parse_debias(self.options.debias, self.default_debias)

    def nominal_schedule(self, num_visual: int, num_frames: int = 1) -> dict[int, int]:
        """{K: budget}, plus the summary tail riding through layers 0..K-1 when `tail` is on."""
        schedule = super().nominal_schedule(num_visual, num_frames)
        debias = self.debiasers()
        if schedule and "tail" in debias:
            size = resolve_params(self.options.params, debias)["tail_size"]
            schedule[0] = num_visual + num_frames * size * size
        return schedule

    def plan(self, video: VideoTokens, prompt: Prompt | None) -> PrunePlan:
        debias = self.debiasers()
        params = resolve_params(self.options.params, debias)
        if self.options.keep >= 1.0:
            return PrunePlan()
        K = self.options.layer
        if K < 1:
            raise UsageError(f"--method {self.name} prunes inside the LLM by attention: use --layer >= 1")
        T, N, grid = video.num_frames, video.tokens_per_frame, video.grid
        n = T * N
        budget = token_budget(n, self.options.keep)
        tail_size = params.get("tail_size", 0) if "tail" in debias else 0
        n_tail = T * tail_size * tail_size
        if budget - n_tail < 1:
            raise UsageError(
                f"--keep {self.options.keep} gives {budget} tokens, not more than the {n_tail}-token "
                f"summary tail: raise --keep or lower tail_size"
            )
        segments = None
        if "global" in debias:
            if prompt is None:  # the segment budgets follow the question
                raise ValueError(f"--method {self.name}: the 'global' debiaser needs the request's prompt")
            question_index = prompt.question_index  # [q] positions of the question tokens
            # Global frame vectors from the vision tower; fall back to the frames' mean visual token.
            frame_vec = video.frame_features if video.frame_features is not None else video.features.mean(1)
            segments = global_segments = D.segment_frames(frame_vec, params["segment_threshold"])  # [T]
        dedup_segments = segments if segments is not None else torch.zeros(T, dtype=torch.long)
        state: dict[str, torch.Tensor] = {}
        steps: dict = {}

        if debias:  # layer-0 step: dedup, question relevance, summary tail (keeps all otherwise)

            def before_llm(ctx: LayerContext) -> LayerKeep:
                device = ctx.visual_slots.device
                info: dict[str, Any] = {}
                keep = torch.arange(n)
                if "local" in debias:
                    mask = D.dedup_keep(video.features, dedup_segments, params["dedup_threshold"])  # [T, N]
                    keep = mask.flatten().nonzero().squeeze(1)
                    info["deduplicated"] = int(n - keep.numel())
                    info["kept_after_dedup_per_frame"] = mask.sum(1).tolist()
                if "global" in debias:
                    question = ctx.hidden[0, question_index.to(device)].float().mean(0)  # [D]
                    state["relevance"] = D.segment_relevance(question, video.features, global_segments)
                append = D.summary_tail(video.features, grid, tail_size).to(device) if n_tail else None
                if n_tail:
                    info["tail_tokens"] = n_tail
                return LayerKeep(keep=keep.to(device), append=append, info=info)

            steps[0] = before_llm

        def at_layer(ctx: LayerContext) -> LayerKeep:
            assert ctx.scores is not None
            keep, info = attention_select(
                ctx.scores,
                ctx.visual_ids,
                num_frames=T,
                grid=grid,
                budget=budget - n_tail,
                segments=segments,
                relevance=state.get("relevance"),
                use_grid="grid" in debias,
                min_segment_budget=params.get("min_segment_budget", 0.25),
                relevance_temperature=params.get("relevance_temperature", 1.0),
                cells_per_side=params.get("grid", 0),
            )
            info["debias"] = list(debias) or ["none"]
            info["layer"] = K
            return LayerKeep(keep=keep.to(ctx.visual_slots.device), info=info)

        steps[K] = at_layer
        return PrunePlan(steps=steps, needs_scores=frozenset({K}), query=self.options.query)


@register_method
class FastV(_AttentionPreset):
    """FastV: global top-k of the visual tokens by layer-(K-1) attention, pruned before layer K.

    Reconstruction notes: the original uses the last prompt token's row ([C]); we default to the mean
    over all question rows (`--query question`, the spec's [R] default); `--query last` is FastV.
    """

    name = "fastv"
    description = "FastV: prune at layer K to the top --keep visual tokens by layer K-1 attention."
    default_debias = ()


@register_method
class AdaTP(_AttentionPreset):
    """AdaTP (reconstruction, arXiv 2505.20100; spec §4.3). Default debiasers: global + local.

    [S] segmentation rule (cos of adjacent global frame features < tau_s starts a segment).
    [R] global frame features = mean-pooled SigLIP last hidden state (`VideoTokens.frame_features`), not
        the SigLIP attention-pooling head; tau_s = 0.9.
    [R] relevance: no SigLIP text tower in LLaVA-OV, so r_j = cosine between the mean question-token
        *input embedding* of the LLM and the segment's mean visual token (same input space); weight =
        |s_j| * exp(z_j/T_r), z = r standardised over segments (cosine scale differs from SigLIP's, so
        the spec's T_r = 0.05 does not transfer), T_r = 1; floor b_min = 0.25 of the segment's even share;
        largest-remainder rounding; budgets sum exactly to the total.
    [R] local: pre-LLM (layer 0) same-position dedup vs the previous frame inside a segment, cosine on
        projector outputs >= 0.9, keep-first (no merging); ranking at layer K only among survivors.
        If fewer tokens survive than the budget, all survivors are kept (realized keep is measured).
    [R] selection: per-segment top-k of the layer-(K-1) probe (question rows, head mean), K = 2.
    """

    name = "adatp"
    description = "AdaTP (reconstruction): segment budgets + same-position dedup, then attention top-k."
    default_debias = ("global", "local")


@register_method
class LlavaMLB(_AttentionPreset):
    """LLaVA-MLB "MLB-lite" for OneVision (reconstruction, arXiv 2503.11205; spec §3.5). grid + tail.

    [R] no segmentation (the whole video fits the context); one probe at layer K-1 (K = 2, question rows).
    [R] GAPool in `select` mode (a kept token must be an original token so it keeps its own position
        id): each frame's budget (even split) is spread over ragged grid cells (`grid_cells`), each cell
        keeps its most attended token(s); default one cell per kept token (`grid=0`).
    [R] VSTail: every frame adaptively average-pooled to s x s (s = 1) and appended after the last
        visual token at layer 0 (positions continue after it); the T*s^2 tail tokens count in --keep,
        so the grid selection gets budget - T*s^2.
    [R] FLOPs: the tail also rides through layers 0..K-1 (n + T*s^2 tokens there), both in the measured
        `flops_ratio` and in `mlb flops`.
    """

    name = "mlb"
    description = (
        "LLaVA-MLB: two-stage segment probes + GAPool + summary tail on image LLMs (LLaVA-NeXT); "
        "MLB-lite (gridded attention selection per frame + pooled summary tail) on video LLMs."
    )
    default_debias = ("grid", "tail")

    # On image LLMs (PlanContext.image_llm, i.e. LLaVA-NeXT) `mlb` is the full two-stage algorithm of
    # algorithms.md §3.3 (`mlbcli.selection.two_stage`, where --keep's meaning there is documented);
    # elsewhere, or without a context (saved-token replays, plugins' direct calls), it is MLB-lite.

    def __init__(self, options: MethodOptions | None = None):
        Method.__init__(self, options)
        self._params()  # UsageError at construction, before any work

    def _params(self) -> dict[str, Any]:
        return resolve_params(self.options.params, (*self.debiasers(), "mlb"))

    def _two_stage_params(self) -> dict[str, Any]:
        debias = self.debiasers()
        if "grid" not in debias or set(debias) - {"grid", "tail"}:
            raise UsageError(
                "the two-stage mlb (image LLMs) always uses GAPool: --debias may only be 'grid' or "
                "'grid,tail' (global/local apply to MLB-lite variants on video LLMs)"
            )
        params = self._params()
        return {
            **params,
            # unset: the grid-scaled default of the two-stage variant (2 at 24x24), not MLB-lite's 1
            "tail_size": params["tail_size"] if self.options.params.get("tail_size") is not None else None,
            "use_tail": "tail" in debias,
        }

    def plan(
        self, video: VideoTokens, prompt: Prompt | None, context: PlanContext | None = None
    ) -> PrunePlan:
        if context is None or not context.image_llm:
            if self.options.params.get("segments") is not None:
                raise UsageError(
                    "parameter 'segments' applies to the two-stage mlb on image LLMs (LLaVA-NeXT)"
                )
            return super().plan(video, prompt)
        from mlbcli.selection import two_stage

        return two_stage.plan(self.options, self._two_stage_params(), video, context)

    def nominal_schedule(
        self, num_visual: int, num_frames: int = 1, context: PlanContext | None = None
    ) -> dict[int, int]:
        if context is None or not context.image_llm:
            return super().nominal_schedule(num_visual, num_frames)
        from mlbcli.selection import two_stage

        return two_stage.nominal(self.options, self._two_stage_params(), num_visual, num_frames, context)


class _PreLLMPreset(Method):
    prune_point = "input"

    def __init__(self, options: MethodOptions | None = None):
        super().__init__(options)
        self._check()  # UsageError at construction, before any work

    def _check(self) -> dict[str, Any]:
        if self.options.debias is not None and parse_debias(self.options.debias, ()) != ():
            raise UsageError(
                f"--method {self.name} prunes before the LLM without attention scores and takes "
                f"no debiasers; use fastv/adatp/mlb with --debias instead"
            )
        return resolve_params(self.options.params, (self.name,))


@register_method
class VisionZipStar(_PreLLMPreset):
    """VisionZip* (FastVID's post-pooling VisionZip), pre-LLM, per frame: dominant + contextual tokens.

    [C] 54:10 dominant:contextual ratio of each frame's budget (even split of the total over frames);
        contextual targets uniformly spaced among the non-dominant tokens, others assigned by cosine.
    [R] SigLIP has no [CLS]: the dominant signal is a pseudo-[CLS] attention, softmax over the frame of
        <mean token, token>/sqrt(D) on the projector outputs (cheap, no vision-tower change).
    [R] assignment by cosine of projector outputs (VisionZip uses attention keys), and a contextual
        token is the *mean* of its target and members (VisionZip adds target + mean; the mean keeps
        the embedding scale the LLM expects); it takes the target's position id.
    """

    name = "visionzip"
    description = "VisionZip* (after pooling, before the LLM): dominant tokens + merged contextual tokens."

    def plan(self, video: VideoTokens, prompt: Prompt | None) -> PrunePlan:
        params = self._check()
        if self.options.keep >= 1.0:
            return PrunePlan()
        T, N = video.num_frames, video.tokens_per_frame
        budgets = frame_budgets(token_budget(T * N, self.options.keep), T)
        ratio = params["dominant_ratio"]

        def prune(ctx: LayerContext) -> LayerKeep:
            x = ctx.hidden[0, ctx.visual_slots].view(T, N, -1)  # [T, N, D]
            keep, states = [], []
            for t, b in enumerate(budgets):
                idx, st = D.visionzip_frame(x[t], b, ratio)
                keep.append(idx + t * N)
                states.append(st)
            return LayerKeep(
                keep=torch.cat(keep).to(ctx.visual_slots.device),
                replace=torch.cat(states),
                info={"frame_budgets": budgets, "dominant_ratio": ratio},
            )

        return PrunePlan(steps={0: prune})


@register_method
class DyCokeTTM(_PreLLMPreset):
    """DyCoke temporal token merging (TTM), prefill only, before the LLM (spec §5.4).

    [C] windows of 4 frames; the first frame of a window is kept whole; frames 1 and 2 keep their
        floor((1-K)N) tokens least similar to frame 0 at the same position, frame 3 vs frame 2.
    [R] --keep mapping: K = 1 - (4*keep - 1)/3 clamped to [0, 1] (so keep = (1 + 3(1-K))/4 for full
        windows; keep <= 0.25 gives K = 1, i.e. 25% retention, DyCoke's minimum); `merge_ratio` sets K
        directly. The realized keep differs with T mod 4 and floor rounding: it is measured.
    [R] the trailing partial window is handled like a full one (the reference loop skips frame 2 of
        the last window); kept tokens keep their original position ids (DyCoke re-sequences them).
    Stage 2, dynamic KV-cache pruning while decoding, is on by default (`dycoke_kv`, --no-dycoke-kv):
    see `mlbcli.selection.dycoke_kv`; it shows in the `decode_kv_ratio` column, not in `flops_ratio`.
    """

    name = "dycoke"
    description = (
        "DyCoke: TTM drops tokens similar to the same position in a window's reference frame; then "
        "decode-time KV pruning by attention (--no-dycoke-kv: TTM only)."
    )

    def plan(self, video: VideoTokens, prompt: Prompt | None) -> PrunePlan:
        params = self._check()
        if self.options.keep >= 1.0 and params["merge_ratio"] is None:
            return PrunePlan()
        T, N = video.num_frames, video.tokens_per_frame
        window = params["merge_window"]
        ratio = params["merge_ratio"]
        if ratio is None:
            ratio = D.dycoke_ratio(self.options.keep, window)

        def prune(ctx: LayerContext) -> LayerKeep:
            x = ctx.hidden[0, ctx.visual_slots].view(T, N, -1)  # [T, N, D]
            mask = D.dycoke_keep(x, ratio, window)  # [T, N]
            keep = mask.flatten().nonzero().squeeze(1)
            info = {"merge_ratio": ratio, "merge_window": window, "kept_per_frame": mask.sum(1).tolist()}
            return LayerKeep(keep=keep.to(ctx.visual_slots.device), info=info)

        policy = None
        if params["dycoke_kv"]:
            from mlbcli.selection.dycoke_kv import DyCokeKV

            policy = DyCokeKV(
                params["dycoke_kv_layer"], params["dycoke_kv_ratio"], params["dycoke_kv_threshold"]
            )
        return PrunePlan(steps={0: prune}, decode_policy=policy)

    def nominal_schedule(self, num_visual: int, num_frames: int = 1) -> dict[int, int]:
        """Expected retention of full windows, (1 + (w-1)(1-K)) / w (not --keep: K is clamped to [0, 1])."""
        params = self._check()
        window, ratio = params["merge_window"], params["merge_ratio"]
        if ratio is None:
            if self.options.keep >= 1.0:
                return {}
            ratio = D.dycoke_ratio(self.options.keep, window)
        return {0: max(1, min(num_visual, round(num_visual * (1 + (window - 1) * (1 - ratio)) / window)))}
