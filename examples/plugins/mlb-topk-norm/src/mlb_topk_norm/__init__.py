"""`topk-norm`: an example mlb method plugin. Per frame, keep the visual tokens whose features have the
largest L2 norm, before the LLM; the budget is met exactly.

A method is a `mlbcli.selection.Method` subclass: a `name`, a `description`, the options it reads
(`options_used`), its hyperparameters as a frozen `Params` dataclass (each field a `param`), and
`plan`, which returns the keep schedule (`PrunePlan`) for one video. The engine does the rest:
order, position ids, KV cache, statistics, the output row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mlbcli.models.base import Prompt, VideoTokens
from mlbcli.selection import Method, PlanContext, param, token_budget
from mlbcli.selection.plan import LayerContext, LayerKeep, PrunePlan

__all__ = ["TopKNorm", "frame_budgets", "topk_norm_keep"]


def frame_budgets(total: int, num_frames: int) -> list[int]:
    """`total` tokens over `num_frames` frames as evenly as possible (earlier frames take the rest)."""
    base, extra = divmod(total, num_frames)
    return [base + (1 if t < extra else 0) for t in range(num_frames)]


def topk_norm_keep(features: torch.Tensor, budgets: list[int], p: float = 2.0) -> torch.Tensor:
    """[T, N, D] visual tokens -> flat ids t * N + i of the `budgets[t]` tokens of largest L_p norm in
    every frame t, ascending (ties: the lower index)."""
    T, N, _ = features.shape
    norms = torch.linalg.vector_norm(features.float(), ord=p, dim=-1)  # [T, N]
    kept = []
    for t, budget in enumerate(budgets):
        order = torch.argsort(norms[t], descending=True, stable=True)[:budget]  # [budget]
        kept.append(order + t * N)
    return torch.cat(kept).sort().values


class TopKNorm(Method):
    """Per frame, the tokens with the largest feature norm (a query-agnostic, attention-free baseline)."""

    @dataclass(frozen=True)
    class Params:
        topk_norm_p: float = param(2.0, "the order p of the norm that ranks tokens (2 = L2).", 1.0)

    name = "topk-norm"
    description = "Per frame, keep the visual tokens with the largest L2 norm (before the LLM)."
    prune_point = "input"  # before the LLM: `mlb flops` plans it without running the model
    options_used = frozenset({"keep", "positions"})

    def plan(
        self, video: VideoTokens, prompt: Prompt | None, context: PlanContext | None = None
    ) -> PrunePlan:
        if self.keep >= 1.0:
            return PrunePlan()  # --keep 1.0 prunes nothing
        T, N = video.num_frames, video.tokens_per_frame
        budgets = frame_budgets(token_budget(T * N, self.keep), T)  # sums to the budget exactly
        p = self.params["topk_norm_p"]

        def prune(ctx: LayerContext) -> LayerKeep:
            # Before the LLM (layer 0) the visual block is the T*N projector outputs, frame-major.
            features = ctx.hidden[0, ctx.visual_slots].view(T, N, -1)  # [T, N, D]
            keep = topk_norm_keep(features, budgets, p)
            return LayerKeep(keep=keep.to(ctx.visual_slots.device), info={"frame_budgets": budgets})

        return self.position_policy(PrunePlan(steps={0: prune}), context)
