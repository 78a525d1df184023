"""Query-agnostic baselines that prune before the LLM: none, uniform pooling, random (sanity floor)."""

from __future__ import annotations

import math

import torch

from mlbcli.engine.plan import LayerContext, LayerKeep, PrunePlan
from mlbcli.models.base import Prompt, VideoTokens
from mlbcli.selection.base import Method, MethodOptions, PlanContext, register_method, token_budget
from mlbcli.selection.params import resolve_params


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


class _Baseline(Method):
    """Query-agnostic baselines have no hyperparameters and no debiasers: refuse them, never ignore
    (`check_method_options`, `resolve_params`)."""

    options_used = frozenset({"keep", "positions"})

    def __init__(self, options: MethodOptions | None = None):
        super().__init__(options)
        resolve_params(self.options.params, (self.name,))


@register_method
class NoPruning(_Baseline):
    name = "none"
    description = "Keep every visual token (the reference)."
    prune_point = None
    options_used = frozenset()

    def plan(self, video: VideoTokens, prompt: Prompt | None) -> PrunePlan:
        return PrunePlan()


@register_method
class UniformPooling(_Baseline):
    name = "uniform"
    description = "Per-frame spatial average pooling of the token grid to meet --keep (before the LLM)."

    def plan(
        self, video: VideoTokens, prompt: Prompt | None, context: PlanContext | None = None
    ) -> PrunePlan:
        if self.keep >= 1.0:
            return PrunePlan()
        T, N = video.num_frames, video.tokens_per_frame
        h, w = video.grid
        budgets = frame_budgets(token_budget(T * N, self.keep), T)

        def prune(ctx: LayerContext) -> LayerKeep:
            # ctx.visual_ids is 0..T*N-1 before the LLM; pool each frame's cells into one token that
            # takes the position of the cell's centre token.
            keep, pooled = [], []
            for t, cells in enumerate(budgets):
                if cells == 0:
                    continue
                for cell in grid_cells(h, w, cells):
                    ids = torch.tensor(cell, device=ctx.hidden.device) + t * N
                    keep.append(int(ids[(len(cell) - 1) // 2]))
                    pooled.append(ctx.hidden[0, ctx.visual_slots[ids]].mean(dim=0))
            order = torch.tensor(keep, device=ctx.hidden.device).argsort()
            return LayerKeep(
                keep=torch.tensor(keep, device=ctx.hidden.device)[order],
                replace=torch.stack(pooled)[order],
            )

        return self.position_policy(PrunePlan(steps={0: prune}), context)


@register_method
class RandomSelection(_Baseline):
    name = "random"
    description = "A seeded uniformly random subset of the visual tokens (the sanity floor)."

    def plan(
        self, video: VideoTokens, prompt: Prompt | None, context: PlanContext | None = None
    ) -> PrunePlan:
        if self.keep >= 1.0:
            return PrunePlan()
        budget = token_budget(video.num_visual, self.keep)
        generator = torch.Generator().manual_seed(self.options.seed)

        def prune(ctx: LayerContext) -> LayerKeep:
            chosen = torch.randperm(ctx.visual_slots.numel(), generator=generator)[:budget]
            return LayerKeep(keep=chosen.sort().values.to(ctx.visual_slots.device))

        return self.position_policy(PrunePlan(steps={0: prune}), context)
