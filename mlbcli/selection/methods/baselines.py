"""Query-agnostic baselines that prune before the LLM: none, uniform pooling, random (sanity floor).

They have no hyperparameters and no debiasers: giving them one is an error, never ignored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlbcli.selection.base import Method, keep_everything
from mlbcli.selection.methods.common import PreLLMMethod

if TYPE_CHECKING:
    from mlbcli.models.base import Prompt, VideoTokens
    from mlbcli.selection.plan import PrunePlan


class NoPruning(Method):
    name = "none"
    description = "Keep every visual token (the reference)."
    prune_point = None
    options_used = frozenset()

    def plan(self, video: VideoTokens, prompt: Prompt | None) -> PrunePlan:
        return keep_everything()


class UniformPooling(PreLLMMethod):
    name = "uniform"
    description = "Per-frame spatial average pooling of the token grid to meet --keep (before the LLM)."

    def prune_plan(self, video: VideoTokens) -> PrunePlan:
        from mlbcli.selection.ops.baselines import uniform_plan

        return uniform_plan(video, self.keep)


class RandomSelection(PreLLMMethod):
    name = "random"
    description = "A seeded uniformly random subset of the visual tokens (the sanity floor)."

    def prune_plan(self, video: VideoTokens) -> PrunePlan:
        from mlbcli.selection.ops.baselines import random_plan

        return random_plan(video, self.keep, self.options.seed)
