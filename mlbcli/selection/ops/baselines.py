"""Shared pre-LLM pieces (even frame budgets, grid cells, layer-0 features) and the plans of the
query-agnostic baselines uniform (pooling) and random (the sanity floor)."""

from __future__ import annotations

import math

import torch

from mlbcli.models.base import VideoTokens
from mlbcli.selection.base import token_budget
from mlbcli.selection.plan import LayerContext, LayerKeep, PrunePlan


def frame_budgets(total: int, num_frames: int) -> list[int]:
    """Split `total` tokens over frames as evenly as possible (earlier frames take the remainder)."""
    base, extra = divmod(total, num_frames)
    return [base + (1 if t < extra else 0) for t in range(num_frames)]


def grid_cells(h: int, w: int, cells: int) -> list[list[int]]:
    """Partition an h x w raster grid into `cells` spatially contiguous rectangles, as evenly as possible.

    Rows of the grid are split into r horizontal bands (r ~ sqrt(cells * h / w), enough bands that no
    band needs more cells than it has columns), and each band into its share of cells by columns.
    Returns, per cell in raster order, the flat indices r * w + c of its tokens.
    """
    if not 1 <= cells <= h * w:
        raise ValueError(f"cannot split a {h}x{w} grid into {cells} cells")
    bands = min(h, cells, max(math.ceil(cells / w), round(math.sqrt(cells * h / w)) or 1))
    row_groups = [g.tolist() for g in torch.arange(h).tensor_split(bands)]
    per_band = frame_budgets(cells, bands)
    out: list[list[int]] = []
    for rows, n_cells in zip(row_groups, per_band, strict=True):
        for cols in torch.arange(w).tensor_split(n_cells):
            out.append([r * w + int(c) for r in rows for c in cols])
    return out


def uniform_plan(video: VideoTokens, keep: float) -> PrunePlan:
    """Per-frame spatial average pooling: each frame's budget (even split) is a set of grid cells, each
    pooled into one token at the position of the cell's centre token. keep < 1."""
    T, N = video.num_frames, video.tokens_per_frame
    h, w = video.grid
    budgets = frame_budgets(token_budget(T * N, keep), T)

    def prune(ctx: LayerContext) -> LayerKeep:
        # ctx.visual_ids is 0..T*N-1 before the LLM
        kept, pooled = [], []
        owner = torch.full((T * N,), -1, dtype=torch.long)  # [T*N] flat id of the cell centre pooling it
        for t, cells in enumerate(budgets):
            if cells == 0:
                continue
            for cell in grid_cells(h, w, cells):
                ids = torch.tensor(cell, device=ctx.hidden.device) + t * N
                kept.append(int(ids[(len(cell) - 1) // 2]))
                owner[ids.cpu()] = kept[-1]
                pooled.append(ctx.hidden[0, ctx.visual_slots[ids]].mean(dim=0))
        order = torch.tensor(kept, device=ctx.hidden.device).argsort()
        keep = torch.tensor(kept, device=ctx.hidden.device)[order]
        return LayerKeep(
            keep=keep,
            replace=torch.stack(pooled)[order],
            merged_into=merged_index(owner, keep),
        )

    return PrunePlan(steps={0: prune})


def random_plan(video: VideoTokens, keep: float, seed: int) -> PrunePlan:
    """A seeded uniformly random subset of token_budget(T*N, keep) visual tokens. keep < 1."""
    budget = token_budget(video.num_visual, keep)
    generator = torch.Generator().manual_seed(seed)

    def prune(ctx: LayerContext) -> LayerKeep:
        chosen = torch.randperm(ctx.visual_slots.numel(), generator=generator)[:budget]
        return LayerKeep(keep=chosen.sort().values.to(ctx.visual_slots.device))

    return PrunePlan(steps={0: prune})


def layer0_features(hidden: torch.Tensor, visual_slots: torch.Tensor, T: int, N: int) -> torch.Tensor:
    """[T, N, D] input embeddings of the visual block (`LayerContext.hidden` at layer 0)."""
    return hidden[0, visual_slots].view(T, N, -1)


def merged_index(owner: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """`LayerKeep.merged_into` from `owner` [n] (per visual token of the step, the step index of the
    kept token whose new state took it in, -1 for none) and `keep` [k] (ascending step indices): [n]
    index into `keep`, -1 where the owner is none or not kept. On the CPU (the engine reads it there)."""
    owner, keep = owner.long().cpu(), keep.long().cpu()
    slot = torch.full((owner.numel(),), -1, dtype=torch.long)  # [n] step index -> index in keep
    slot[keep] = torch.arange(keep.numel())
    return torch.where(owner >= 0, slot[owner.clamp(min=0)], -1)


def missed(kept: int, target: int, num_frames: int, why: str) -> str | None:
    """`why` when `kept` misses `target` by more than the contract's rounding (half a token per frame,
    `selection.base.keep_note`), for the step's `keep_note` diagnostics; else None."""
    return why if 2 * abs(kept - target) > max(1, num_frames) else None
