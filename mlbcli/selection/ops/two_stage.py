"""Full two-stage LLaVA-MLB for image LLMs driven on video (LLaVA-NeXT; research/algorithms.md §3.3).

Stage 1 (compression, "SegAttn + GAPool"): the frames are split into S consecutive segments that each
fit the LLM's context (T_s*N + text <= max_position_embeddings). Every segment is probed with the
request's question through decoder layers 0..K-1 (`PlanContext.probe`: its own prompt, query rows =
the question tokens or the last token, attention of layer K-1, mean over heads and rows), and GAPool
(select mode) keeps the most attended token of every grid cell of every frame.
Stage 2 (expansion + VSTail): one sequence of all segments' kept tokens in time order, followed by the
Visual Summarization Tail (every frame adaptively average-pooled to s x s), then the question: a
layer-0 step (keep + append) of the final pass, with contiguous positions (the adapter re-sequences).

Budget (`--variant budget`, the default), the same contract as every method:
- --keep 1.0 (or unset): no pruning (`compress` still runs the segment probes for the raw attention).
- --keep < 1: token_budget(T*N, keep) tokens in all, the T s x s tails included; GAPool keeps the
  rest, split evenly over the frames, over `grid` cells (0 = one per kept token).
Paper layout (`--variant paper`, takes no --keep): g x g cells of one token each per frame (`grid`,
unset = ceil(side/3): 8x8 = 64 of 24x24) plus the s x s tail (`tail_size`, unset =
max(1, round(side/12)): 2x2 at 24x24), i.e. 68 of 576 tokens per frame (11.8%).
The realized keep and both FLOPs ratios (final pass; final pass + probes) are measured per row.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from mlbcli.errors import UsageError
from mlbcli.models.base import VideoTokens
from mlbcli.selection.base import token_budget
from mlbcli.selection.ops import debias as D
from mlbcli.selection.ops.baselines import frame_budgets
from mlbcli.selection.plan import LayerContext, LayerKeep, PrunePlan

if TYPE_CHECKING:
    from mlbcli.selection.base import Method, PlanContext


def segment_sizes(
    num_frames: int,
    tokens_per_frame: int,
    *,
    text_tokens: int,
    context_limit: int | None,
    segments: int = 0,
) -> list[int]:
    """Consecutive segment lengths (near-even, longer ones first) whose probe passes fit the context.

    `segments` > 0 fixes S; 0 takes the fewest segments with T_s*N + text_tokens <= context_limit.
    """
    if num_frames < 1:
        raise UsageError("the two-stage mlb needs at least one frame")
    fit = None
    if context_limit is not None:
        fit = (context_limit - text_tokens) // tokens_per_frame
        if fit < 1:
            raise UsageError(
                f"one frame ({tokens_per_frame} tokens) plus the {text_tokens}-token prompt does not fit "
                f"the model's context of {context_limit}: the two-stage mlb cannot probe it"
            )
    count = 1 if fit is None else math.ceil(num_frames / fit)  # the fewest that fit
    if segments > 0:
        count = min(segments, num_frames)
    base, extra = divmod(num_frames, count)
    sizes = [base + 1] * extra + [base] * (count - extra)
    if fit is not None and sizes[0] > fit:
        raise UsageError(
            f"segments={count} gives {sizes[0]}-frame segments ({sizes[0] * tokens_per_frame} visual + "
            f"{text_tokens} text tokens), more than the model's context of {context_limit}: use at least "
            f"{math.ceil(num_frames / fit)} segments (or segments=0)"
        )
    return sizes


def frame_layout(
    grid: tuple[int, int],
    num_frames: int,
    keep: float | None,
    cells: int,
    tail_size: int | None,
    use_tail: bool = True,
) -> tuple[list[int], int, int]:
    """(tokens GAPool keeps in each frame, cells per side for `grid_cell_ids`, tail side s).

    keep None: the paper layout (g x g per frame); else token_budget(T*N, keep) minus the T s x s
    tails, split evenly over the frames (like MLB-lite; a frame may get only its tail).
    """
    h, w = grid
    side = min(h, w)
    s = 0 if not use_tail else (tail_size if tail_size is not None else max(1, round(side / 12)))
    if keep is None:
        g = min(cells if cells > 0 else math.ceil(side / 3), side)
        return [g * g] * num_frames, g, s
    total = token_budget(num_frames * h * w, keep)
    tail = num_frames * s * s
    if total - tail < 1:
        raise UsageError(
            f"--keep {keep} gives {total} tokens, not more than the {tail}-token summary tail ({s}x{s} per "
            "frame): raise --keep or lower tail_size"
        )
    return frame_budgets(total - tail, num_frames), cells, s


def _side_grid(num_visual: int, num_frames: int, context: PlanContext) -> tuple[int, int]:
    if context.grid is not None:
        return context.grid
    n = num_visual // max(1, num_frames)
    side = math.isqrt(n)
    return (side, side) if side * side == n else (1, n)


def _layout_keep(method: Method) -> float | None:
    return None if method.variant == "paper" else method.keep


def nominal(
    method: Method, params: dict[str, Any], num_visual: int, num_frames: int, context: PlanContext
) -> dict[int, int]:
    """`mlb flops`: the final pass's layer-0 count; the planned probe passes go to `context.probe_passes`."""
    if method.variant != "paper" and method.keep >= 1.0:
        return {}
    grid = _side_grid(num_visual, num_frames, context)
    per_frame, _, s = frame_layout(
        grid, num_frames, _layout_keep(method), params["grid"], params["tail_size"], params["use_tail"]
    )
    sizes = segment_sizes(
        num_frames,
        grid[0] * grid[1],
        text_tokens=context.text_tokens,
        context_limit=context.context_limit,
        segments=params["segments"],
    )
    context.probe_passes.extend((size * grid[0] * grid[1], method.layer) for size in sizes)
    return {0: sum(min(b, grid[0] * grid[1]) + s * s for b in per_frame)}


def plan(method: Method, params: dict[str, Any], video: VideoTokens, context: PlanContext) -> PrunePlan:
    """Stage 1 now (probe passes through `context`), stage 2 as the layer-0 step of the final pass.

    `method` is the `mlb` method (`methods.mlb.LlavaMLB`): its variant, keep, layer and query."""
    K = method.layer
    if K < 1:
        raise UsageError("--method mlb probes the attention of layer K-1: use --layer >= 1")
    probe_only = method.variant != "paper" and method.keep >= 1.0
    if probe_only and not context.diagnostics:
        return PrunePlan()  # --keep 1.0: no pruning
    T, N, grid = video.num_frames, video.tokens_per_frame, video.grid
    if probe_only:
        per_frame, cells, s = [N] * T, 0, 0
    else:
        per_frame, cells, s = frame_layout(
            grid, T, _layout_keep(method), params["grid"], params["tail_size"], params["use_tail"]
        )
    sizes = segment_sizes(
        T,
        N,
        text_tokens=context.text_tokens,
        context_limit=context.context_limit,
        segments=params["segments"],
    )
    pool = params.get("pool_temperature", 0.0) if not probe_only else 0.0
    kept: list[torch.Tensor] = []
    pooled: list[torch.Tensor] = []  # GAPool pool mode: the kept tokens' new states
    owned: list[torch.Tensor] = []  # GAPool pool mode, per segment [size * N]: owner's index in keep_ids
    bounds: list[list[int]] = []
    attention: list[float] = []
    start = 0
    for size in sizes:
        stop = start + size
        subset = video.select_rows(start, stop)  # timestamps and DeepStack features go with the rows
        scores = context.probe(subset, K, method.query).detach().float().cpu()  # [size * N]
        scores = torch.nan_to_num(scores)
        ids = torch.arange(size * N)
        frames, positions = ids // N, ids % N
        if probe_only:
            keep = ids
        elif pool > 0:
            keep, members, owners, weights = D.pool_grid(
                scores, frames, positions, grid, per_frame[start:stop], cells, pool
            )
            x = video.features[start:stop].reshape(size * N, -1)
            pooled.append(D.pooled_states(x, keep.numel(), members, owners, weights))
            owned.append(torch.full((size * N,), -1).index_put((members,), owners + sum(map(len, kept))))
        else:
            keep = D.select_grid(scores, frames, positions, grid, per_frame[start:stop], cells)
        kept.append(keep + start * N)
        bounds.append([start, stop])
        attention += D.per_group_mass(scores, frames, size)
        start = stop
    keep_ids = torch.cat(kept)
    replace, into = (torch.cat(pooled), torch.cat(owned)) if pooled else (None, None)  # into: [T*N]
    tail = D.summary_tail(video.features, grid, s) if s else None
    info: dict[str, Any] = {
        "variant": f"two-stage {method.variant}",
        "segments": bounds,
        "probe_tokens": [size * N for size in sizes],
        "probe_layers": K,
        "tokens_per_frame": sorted(set(per_frame)),
        "grid": cells,
        "tail_size": s,
        "tail_tokens": T * s * s,
        "gapool": "pool" if pooled else "select",
        # the probes' raw attention mass per frame (before GAPool), normalised inside each segment
        # (segments are separate passes)
        "attention_per_frame_raw": [round(a, 6) for a in attention],
    }
    if probe_only:
        info["probe_only"] = True

    def expand(ctx: LayerContext) -> LayerKeep:
        device = ctx.visual_slots.device
        append = None if tail is None else tail.to(device)
        new = None if replace is None else replace.to(device, ctx.hidden.dtype)
        return LayerKeep(keep=keep_ids.to(device), replace=new, append=append, info=info, merged_into=into)

    return PrunePlan(steps={0: expand})
