"""Attention-debiased token pruning: scorer -> debiasers -> selector, and the method presets.

Scorer: the engine's probe at layer K-1 (`--layer K`, default 2; `--query question|last`): the
attention the query rows give each visual token, mean over heads and rows.
Debiasers (`--debias`, composable, order-free): `global`, `local`, `grid`, `tail` (see `DEBIASERS`).
Selector: top-k of the probe scores inside the budget groups the debiasers define (whole video,
segment, frame, or grid cell).

Presets (`--method`): fastv = no debiasing, adatp = global+local, mlb = grid+tail; `--debias`
replaces a preset's debiasers, so `fastv --debias local` is a valid ablation. visionzip and dycoke are
pre-LLM methods without attention: --layer/--query/--debias are errors with them (`check_method_options`).

Common rules (the budget contract): `--keep 1.0` (or no --keep) prunes nothing for every preset (the
output is token- and logit-identical to `none`; with `compress` attention presets still probe the raw
attention field, keeping every token). Budgets are exact: `token_budget(T*N, keep)` visual tokens
continue past the pruning layer, summary-tail tokens included; a method that cannot reach its budget
(DyCoke's reference frames) does the closest thing and says why in the row's `keep_note`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from mlbcli.engine.plan import LayerContext, LayerKeep, PrunePlan
from mlbcli.errors import UsageError
from mlbcli.models.base import Prompt, VideoTokens
from mlbcli.selection import debias as D
from mlbcli.selection.base import Method, MethodOptions, PlanContext, register_method, token_budget
from mlbcli.selection.baselines import frame_budgets
from mlbcli.selection.params import resolve_params

DEBIASERS: dict[str, str] = {
    "global": "AdaTP: segment budgets by adjacent-frame similarity, segment length and question relevance",
    "local": "AdaTP: drop same-position near-duplicates of the last kept token inside a segment (pre-LLM)",
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


class _AttentionPreset(Method):
    """Prune before decoder layer K by the layer-(K-1) probe, with composable debiasers."""

    default_debias: ClassVar[tuple[str, ...]] = ()
    query_aware = True
    prune_point = "layer"
    options_used = frozenset({"keep", "layer", "query", "debias"})

    def __init__(self, options: MethodOptions | None = None):
        super().__init__(options)
        resolve_params(self.options.params, self.debiasers())  # UsageError at construction, before any work

    def debiasers(self) -> tuple[str, ...]:
        return parse_debias(self.options.debias, self.default_debias)

    def nominal_schedule(self, num_visual: int, num_frames: int = 1) -> dict[int, int]:
        """{K: budget}, plus the summary tail riding through layers 0..K-1 when `tail` is on.

        Validated like a run: a budget that cannot hold the tail is the same `UsageError`.
        """
        schedule = super().nominal_schedule(num_visual, num_frames)
        debias = self.debiasers()
        if schedule and "tail" in debias:
            size = resolve_params(self.options.params, debias)["tail_size"]
            n_tail = num_frames * size * size
            self._check_tail(schedule[self.layer], n_tail)
            schedule[0] = num_visual + n_tail
        return schedule

    def _check_tail(self, budget: int, n_tail: int) -> None:
        if budget - n_tail < 1:
            raise UsageError(
                f"--keep {self.keep} gives {budget} tokens, not more than the {n_tail}-token "
                f"summary tail: raise --keep or lower tail_size"
            )

    def plan(
        self, video: VideoTokens, prompt: Prompt | None, context: PlanContext | None = None
    ) -> PrunePlan:
        debias = self.debiasers()
        params = resolve_params(self.options.params, debias)
        K = self.layer
        if K < 1:
            raise UsageError(f"--method {self.name} prunes inside the LLM by attention: use --layer >= 1")
        T, N, grid = video.num_frames, video.tokens_per_frame, video.grid
        frame_vec = video.frame_features if video.frame_features is not None else video.features.mean(1)
        adjacent = [round(c, 6) for c in D.adjacent_similarity(frame_vec)] if "global" in debias else None
        if self.keep >= 1.0:  # no pruning; `compress` still reads the raw attention field
            if context is not None and context.diagnostics:
                extra = {"frame_similarity": adjacent} if adjacent is not None else None
                return probe_only_plan(video, K, self.query, extra)
            return PrunePlan()
        n = T * N
        budget = token_budget(n, self.keep)
        tail_size = params.get("tail_size", 0) if "tail" in debias else 0
        n_tail = T * tail_size * tail_size
        self._check_tail(budget, n_tail)
        segments = None
        if "global" in debias:
            if prompt is None:  # the segment budgets follow the question
                raise ValueError(f"--method {self.name}: the 'global' debiaser needs the request's prompt")
            question_index = prompt.question_index  # [q] positions of the question tokens
            # Global frame vectors from the vision tower; fall back to the frames' mean visual token.
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
                    # at least the grid budget survives dedup, so layer K can spend all of it
                    mask, restored = D.dedup_keep(
                        video.features, dedup_segments, params["dedup_threshold"], min_keep=budget - n_tail
                    )  # [T, N]
                    keep = mask.flatten().nonzero().squeeze(1)
                    info["deduplicated"] = int(n - keep.numel())
                    info["dedup_restored"] = restored
                    info["kept_after_dedup_per_frame"] = mask.sum(1).tolist()
                if "global" in debias:
                    question = ctx.hidden[0, question_index.to(device)].float().mean(0)  # [D]
                    state["relevance"] = D.segment_relevance(question, video.features, global_segments)
                    info["frame_similarity"] = adjacent  # what segment_threshold is compared with
                append = D.summary_tail(video.features, grid, tail_size).to(device) if n_tail else None
                if n_tail:
                    info["tail_tokens"] = n_tail
                return LayerKeep(keep=keep.to(device), append=append, info=info)

            steps[0] = before_llm

        def at_layer(ctx: LayerContext) -> LayerKeep:
            assert ctx.scores is not None
            pooling: dict[str, torch.Tensor] = {}
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
                relevance_temperature=params.get("relevance_temperature", 0.05),
                cells_per_side=params.get("grid", 0),
                pool_temperature=params.get("pool_temperature", 0.0),
                pooling=pooling,
            )
            info["debias"] = list(debias) or ["none"]
            info["layer"] = K
            if "local" not in debias:  # every token reached the probe: this is the raw field
                info["attention_per_frame_raw"] = info["attention_per_frame"]
            replace = None
            if pooling:  # GAPool pool mode: the cell's weighted mean at its centre token's slot
                x = ctx.hidden[0, ctx.visual_slots]  # [n, D] states entering layer K
                replace = D.pooled_states(x, keep.numel(), **pooling)
            return LayerKeep(keep=keep.to(ctx.visual_slots.device), replace=replace, info=info)

        steps[K] = at_layer
        return PrunePlan(steps=steps, needs_scores=frozenset({K}), query=self.query)


@register_method
class FastV(_AttentionPreset):
    """FastV: global top-k of the visual tokens by layer-(K-1) attention, pruned before layer K.

    [C] query = the last prompt token's row (FastV's own, and FastVID's FastV rows): the default;
        `--query question` (mean over all question rows, the spec's [R] default for adatp/mlb) is an
        ablation.
    """

    name = "fastv"
    default_query = "last"
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
        |s_j| * exp((r_j - max r)/T_r) as in the spec, T_r = 0.05 in cosine units (smooth in r: tiny
        relevance differences leave the split alone, large ones move it); floor b_min = 0.25 of the
        segment's even share; largest-remainder rounding; budgets sum exactly to the total.
    [R] local: pre-LLM (layer 0) same-position dedup inside a segment against the last *kept* token
        at the position (a slow drift keeps a token each time it has moved by the threshold), cosine
        on projector outputs >= 0.9, keep-first (no merging); ranking at layer K only among survivors.
        Backfill: when fewer tokens than the budget survive, the least similar duplicates are kept
        back, so --keep is met exactly.
    [R] selection: per-segment top-k of the layer-(K-1) probe (question rows, head mean), K = 2.
    Diagnostics: `frame_similarity` (the adjacent-frame cosines compared with segment_threshold);
    the raw attention field before dedup is the probe-only run (`compress --keep 1.0`).
    """

    name = "adatp"
    description = "AdaTP (reconstruction): segment budgets + same-position dedup, then attention top-k."
    default_debias = ("global", "local")


@register_method
class LlavaMLB(_AttentionPreset):
    """LLaVA-MLB "MLB-lite" for OneVision (reconstruction, arXiv 2503.11205; spec §3.5). grid + tail.

    [R] no segmentation (the whole video fits the context); one probe at layer K-1 (K = 2, question rows).
    [R] GAPool in `select` mode by default (a kept token is an original token, at its own position
        id): each frame's budget (even split) is spread over ragged grid cells (`grid_cells`), each cell
        keeps its most attended token(s); default one cell per kept token (`grid=0`).
        `pool_temperature` > 0: `pool` mode (spec §3.3), each cell one softmax(a/(tau*std))-weighted
        mean of its layer-K states, at the cell's centre token's position (spec §3.5).
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
    options_used = frozenset({"keep", "layer", "query", "debias", "variant"})
    #: "budget": --keep is the budget (1.0 = no pruning); "paper": the two-stage LLaVA-MLB paper layout
    #: (g x g GAPool cells + s x s tail per frame, 68 of 576 at 24x24), fixed, so it takes no --keep.
    variants = ("budget", "paper")

    # On image LLMs (PlanContext.image_llm, i.e. LLaVA-NeXT) `mlb` is the full two-stage algorithm of
    # algorithms.md §3.3 (`mlbcli.selection.two_stage`, where --keep's meaning there is documented);
    # elsewhere, or without a context (saved-token replays, plugins' direct calls), it is MLB-lite.

    def __init__(self, options: MethodOptions | None = None):
        Method.__init__(self, options)
        if self.variant == "paper" and self.options.keep is not None:
            raise UsageError(
                "--keep does not apply to --method mlb --variant paper (the paper layout is fixed: "
                "grid x grid tokens + the tail per frame)"
            )
        self._params()  # UsageError at construction, before any work

    def target_tokens(self, num_visual: int, num_frames: int = 1) -> int | None:
        return None if self.variant == "paper" else super().target_tokens(num_visual, num_frames)

    @property
    def keep_requested(self) -> float | None:
        return None if self.variant == "paper" else self.keep

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

    def _check_video_llm(self) -> None:
        if self.options.params.get("segments") is not None:
            raise UsageError("parameter 'segments' applies to the two-stage mlb on image LLMs (LLaVA-NeXT)")
        if self.variant == "paper":
            raise UsageError(
                "--variant paper is the two-stage LLaVA-MLB layout of image LLMs (LLaVA-NeXT); on this "
                "video LLM mlb is MLB-lite: use --keep"
            )

    def plan(
        self, video: VideoTokens, prompt: Prompt | None, context: PlanContext | None = None
    ) -> PrunePlan:
        if context is None or not context.image_llm:
            self._check_video_llm()
            return super().plan(video, prompt, context)
        from mlbcli.selection import two_stage

        return two_stage.plan(self, self._two_stage_params(), video, context)

    def nominal_schedule(
        self, num_visual: int, num_frames: int = 1, context: PlanContext | None = None
    ) -> dict[int, int]:
        if context is None or not context.image_llm:
            self._check_video_llm()
            return super().nominal_schedule(num_visual, num_frames)
        from mlbcli.selection import two_stage

        return two_stage.nominal(self, self._two_stage_params(), num_visual, num_frames, context)


class _PreLLMPreset(Method):
    """Pre-LLM peers with a paper reading (default) and an official-code reading (`--variant official`:
    the peer's token order and re-sequenced positions, see each class)."""

    prune_point = "input"
    options_used = frozenset({"keep", "variant", "positions"})
    variants = ("paper", "official")

    def __init__(self, options: MethodOptions | None = None):
        super().__init__(options)
        self._check()  # UsageError at construction, before any work

    def _check(self) -> dict[str, Any]:
        return resolve_params(self.options.params, (self.name,))

    @property
    def positions(self) -> str:
        """The official code concatenates the kept tokens: contiguous positions unless asked otherwise."""
        default = "contiguous" if self.variant == "official" else "original"
        return self.options.positions or default


@register_method
class VisionZipStar(_PreLLMPreset):
    """VisionZip* (FastVID's post-pooling VisionZip), pre-LLM, per frame: dominant + contextual tokens.

    [C] 54:10 dominant:contextual ratio of each frame's budget (even split of the total over frames);
        contextual targets uniformly spaced among the non-dominant tokens, others assigned by cosine.
    [R] SigLIP has no [CLS]: the dominant signal is a pseudo-[CLS] attention, softmax over the frame of
        <mean token, token>/sqrt(D) on the projector outputs (cheap, no vision-tower change).
    [R] assignment by cosine of projector outputs (VisionZip uses attention keys).
    Variants (`--variant`):
    - paper (default): a contextual token is the *mean* of its target and members (keeps the
      embedding scale the LLM expects), at the target's position; tokens in position order, original
      position ids; targets at int(i * R / n_ctx).
    - official (VisionZip's code): contextual = target + mean(members); per frame the dominant tokens
      (position order) then the contextual ones; positions re-sequenced (the code concatenates);
      targets at arange(0, R, R // n_ctx)[:n_ctx].
    """

    name = "visionzip"
    description = "VisionZip* (after pooling, before the LLM): dominant tokens + merged contextual tokens."

    def plan(
        self, video: VideoTokens, prompt: Prompt | None, context: PlanContext | None = None
    ) -> PrunePlan:
        params = self._check()
        if self.keep >= 1.0:
            return PrunePlan()
        T, N = video.num_frames, video.tokens_per_frame
        budgets = frame_budgets(token_budget(T * N, self.keep), T)
        ratio = params["dominant_ratio"]
        variant = self.variant or "paper"

        def prune(ctx: LayerContext) -> LayerKeep:
            x = ctx.hidden[0, ctx.visual_slots].view(T, N, -1)  # [T, N, D]
            order, states = [], []
            for t, b in enumerate(budgets):
                idx, st = D.visionzip_frame(x[t], b, ratio, variant)  # in the LLM's order
                order.append(idx + t * N)
                states.append(st)
            keep, replace = D.as_slots(torch.cat(order), torch.cat(states))
            return LayerKeep(
                keep=keep.to(ctx.visual_slots.device),
                replace=replace,
                info={"frame_budgets": budgets, "dominant_ratio": ratio, "variant": variant},
            )

        return self.position_policy(PrunePlan(steps={0: prune}), context)


@register_method
class DyCokeTTM(_PreLLMPreset):
    """DyCoke temporal token merging (TTM), prefill only, before the LLM (spec §5.4).

    [C] windows of 4 frames; the first frame of a window is kept whole; the other frames keep the
        tokens least similar (same position) to a reference frame.
    [R] --keep is the budget: token_budget(T*N, keep) tokens in all, the window heads whole and the
        rest split evenly over the other frames. Below the heads' share (1/window of the tokens;
        25% with 4-frame windows, DyCoke's minimum) the heads alone are kept and the row's `keep_note`
        says so. `merge_ratio` instead sets DyCoke's K directly (floor((1-K)N) per compared frame;
        then --keep does not apply).
    Variants (`--variant`, `dycoke_references`):
    - paper (default): frames 1 and 2 vs frame 0, frame 3 vs frame 2; the trailing partial window
      likewise; original position ids.
    - official (`dycole_ttm` @26dc6f4): frame 1 ranked by the previous pair's similarity (wrapping to
      the last pair), frame 3 by the pair (0, 1), frame 2 of the last window kept whole; tokens in
      the code's order (ascending similarity) and positions re-sequenced (it concatenates).
    Stage 2, dynamic KV-cache pruning while decoding, is on by default (`dycoke_kv`, --no-dycoke-kv):
    see `mlbcli.selection.dycoke_kv`; it shows in the `decode_kv_ratio` column, not in `flops_ratio`.
    """

    name = "dycoke"
    description = (
        "DyCoke: TTM drops tokens similar to the same position in a window's reference frame; then "
        "decode-time KV pruning by attention (--no-dycoke-kv: TTM only)."
    )

    def __init__(self, options: MethodOptions | None = None):
        super().__init__(options)
        if self.options.keep is not None and self._check()["merge_ratio"] is not None:
            raise UsageError(
                "--keep does not apply to --method dycoke with merge_ratio (K sets the retention): "
                "give one of them"
            )
        if self.variant == "official" and self._check()["merge_window"] != 4:
            raise UsageError(
                "--variant official is DyCoke's code, which uses 4-frame windows (merge_window 4)"
            )

    def target_tokens(self, num_visual: int, num_frames: int = 1) -> int | None:
        return (
            None
            if self._check()["merge_ratio"] is not None
            else super().target_tokens(num_visual, num_frames)
        )

    def frame_counts(self, T: int, N: int) -> tuple[list[tuple[int, int] | None], list[int], str | None]:
        """(reference pairs, tokens kept per frame, keep_note reason or None)."""
        params = self._check()
        window, ratio = params["merge_window"], params["merge_ratio"]
        refs = D.dycoke_references(T, window, self.variant or "paper")
        whole = [t for t in range(T) if refs[t] is None]
        compared = [t for t in range(T) if refs[t] is not None]
        counts = [N] * T
        if ratio is not None:  # DyCoke's own count
            for t in compared:
                counts[t] = math.floor((1.0 - ratio) * N + 1e-9)
            return refs, counts, None
        rest = token_budget(T * N, self.keep) - len(whole) * N
        shares = D.allocate(max(0, rest), [1.0] * len(compared), [N] * len(compared))
        for t, share in zip(compared, shares, strict=True):
            counts[t] = share
        reason = None
        if rest < 0:
            reason = (
                f"DyCoke keeps {len(whole)} reference frame(s) whole ({len(whole) * N} tokens, "
                f"{len(whole) / T:.0%} of the frames): its minimum retention"
            )
        return refs, counts, reason

    def plan(
        self, video: VideoTokens, prompt: Prompt | None, context: PlanContext | None = None
    ) -> PrunePlan:
        params = self._check()
        if self.keep >= 1.0 and params["merge_ratio"] is None:
            return PrunePlan()
        T, N = video.num_frames, video.tokens_per_frame
        refs, counts, reason = self.frame_counts(T, N)
        variant = self.variant or "paper"

        def prune(ctx: LayerContext) -> LayerKeep:
            x = ctx.hidden[0, ctx.visual_slots].view(T, N, -1)  # [T, N, D]
            per_frame = D.dycoke_select(x, counts, refs)  # kept positions per frame, DyCoke's order
            order = torch.cat([idx + t * N for t, idx in enumerate(per_frame)])
            info: dict[str, Any] = {
                "merge_window": params["merge_window"],
                "variant": variant,
                "references": [list(r) if r is not None else None for r in refs],
                "kept_per_frame": [int(idx.numel()) for idx in per_frame],
            }
            if params["merge_ratio"] is not None:
                info["merge_ratio"] = params["merge_ratio"]
            if reason:
                info["keep_note"] = reason
            if variant == "official":  # the code's token order, written into the kept slots
                keep, replace = D.as_slots(order, x.reshape(T * N, -1)[order])
                return LayerKeep(keep=keep.to(ctx.visual_slots.device), replace=replace, info=info)
            return LayerKeep(keep=order.sort().values.to(ctx.visual_slots.device), info=info)

        policy = None
        if params["dycoke_kv"]:
            from mlbcli.selection.dycoke_kv import DyCokeKV

            policy = DyCokeKV(
                params["dycoke_kv_layer"], params["dycoke_kv_ratio"], params["dycoke_kv_threshold"]
            )
        return self.position_policy(PrunePlan(steps={0: prune}, decode_policy=policy), context)

    def nominal_schedule(self, num_visual: int, num_frames: int = 1) -> dict[int, int]:
        """The count a run keeps (`frame_counts`), assuming every frame has num_visual / T tokens."""
        params = self._check()
        if self.keep >= 1.0 and params["merge_ratio"] is None:
            return {}
        N = num_visual // max(1, num_frames)
        _, counts, _ = self.frame_counts(num_frames, N)
        return {0: sum(counts)}
