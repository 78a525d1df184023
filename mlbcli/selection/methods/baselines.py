"""Query-agnostic baselines that prune before the LLM: none, uniform pooling, random (sanity floor).

They have no hyperparameters and no debiasers: giving them one is an error, never ignored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlbcli.selection.base import Method, PlanContext, keep_everything

if TYPE_CHECKING:
    from mlbcli.engine.plan import PrunePlan
    from mlbcli.models.base import Prompt, VideoTokens


class NoPruning(Method):
    name = "none"
    description = "Keep every visual token (the reference)."
    prune_point = None
    options_used = frozenset()

    def plan(self, video: VideoTokens, prompt: Prompt | None) -> PrunePlan:
        return keep_everything()


class UniformPooling(Method):
    name = "uniform"
    description = "Per-frame spatial average pooling of the token grid to meet --keep (before the LLM)."
    options_used = frozenset({"keep", "positions"})

    def plan(
        self, video: VideoTokens, prompt: Prompt | None, context: PlanContext | None = None
    ) -> PrunePlan:
        from mlbcli.selection.ops.baselines import uniform_plan

        if self.keep >= 1.0:
            return keep_everything()
        return self.position_policy(uniform_plan(video, self.keep), context)


class RandomSelection(Method):
    name = "random"
    description = "A seeded uniformly random subset of the visual tokens (the sanity floor)."
    options_used = frozenset({"keep", "positions"})

    def plan(
        self, video: VideoTokens, prompt: Prompt | None, context: PlanContext | None = None
    ) -> PrunePlan:
        from mlbcli.selection.ops.baselines import random_plan

        if self.keep >= 1.0:
            return keep_everything()
        return self.position_policy(random_plan(video, self.keep, self.options.seed), context)
