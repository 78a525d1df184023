"""The plans of the pre-LLM peers with paper/official variants: VisionZip* (its per-frame kernel is
`ops.debias.visionzip_frame`; DyCoke TTM's plan is in `ops.dycoke`)."""

from __future__ import annotations

import torch

from mlbcli.models.base import VideoTokens
from mlbcli.selection.base import token_budget
from mlbcli.selection.ops import debias as D
from mlbcli.selection.ops.baselines import frame_budgets
from mlbcli.selection.plan import LayerContext, LayerKeep, PrunePlan


def visionzip_plan(video: VideoTokens, keep: float, ratio: float, variant: str) -> PrunePlan:
    """Per frame (even budgets summing to token_budget(T*N, keep)): dominant + contextual tokens."""
    T, N = video.num_frames, video.tokens_per_frame
    budgets = frame_budgets(token_budget(T * N, keep), T)

    def prune(ctx: LayerContext) -> LayerKeep:
        x = ctx.hidden[0, ctx.visual_slots].view(T, N, -1)  # [T, N, D]
        order, states = [], []
        for t, b in enumerate(budgets):
            idx, st = D.visionzip_frame(x[t], b, ratio, variant)  # in the LLM's order
            order.append(idx + t * N)
            states.append(st)
        kept, replace = D.as_slots(torch.cat(order), torch.cat(states))
        return LayerKeep(
            keep=kept.to(ctx.visual_slots.device),
            replace=replace,
            info={"frame_budgets": budgets, "dominant_ratio": ratio, "variant": variant},
        )

    return PrunePlan(steps={0: prune})
