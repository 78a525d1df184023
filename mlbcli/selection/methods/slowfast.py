"""SlowFast-LLaVA's training-free token layout as a pre-LLM method (research/algorithms.md §5.1); the
layout itself is in `mlbcli.selection.ops.slowfast`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlbcli.selection.base import PlanContext
from mlbcli.selection.methods.common import PeerMethod
from mlbcli.selection.parameters import param

if TYPE_CHECKING:
    from mlbcli.models.base import Prompt, VideoTokens
    from mlbcli.selection.plan import PrunePlan


class SlowFast(PeerMethod):
    """SlowFast-LLaVA (training-free, arXiv 2407.15841) as a pre-LLM token layout.

    [C] slow = 10 uniformly spaced frames, horizontal 1-D max-pool 24x24 -> 24x12; fast = all frames
        adaptive-avg-pooled to 4x4; fast tokens after the slow ones.
    [R] a slow token takes the place (and on video LLMs the position id) of its window's first token;
        --keep does not apply (an error): the token count is fixed by the pooling.
    Variants (`--variant`): paper (default) = slow frames by rounded linspace, first and last frame
    included; official = SF-LLaVA's `linspace(0, T, n+1)[:-1]` chunk starts, positions re-sequenced
    (SF-LLaVA concatenates slow then fast tokens; M-RoPE families keep original positions).
    """

    @dataclass(frozen=True)
    class Params:
        slow_frames: int = param(
            10, "frames of the slow path, uniformly spaced (capped at the sampled frames).", 1
        )
        slow_pool: int = param(
            2,
            "horizontal 1-D max-pool width of the slow path (24x24 -> 24x12 with 2, SF-LLaVA); 1 = no "
            "pooling.",
            1,
        )
        fast_size: int = param(
            4,
            "every frame adaptively average-pooled to f x f fast tokens, appended after the slow "
            "tokens (capped at the frame grid).",
            1,
        )

    name = "slowfast"
    description = "SlowFast-LLaVA: few frames lightly pooled (slow) + all frames pooled to 4x4 (fast, after)."
    options_used = frozenset({"variant", "positions"})

    def nominal_schedule(self, num_visual: int, num_frames: int = 1) -> dict[int, int]:
        """Slow + fast tokens, assuming square frame grids (the measured count is in every row)."""
        from mlbcli.selection.ops.slowfast import slowfast_count

        n = num_visual // max(1, num_frames)
        side = math.isqrt(n)
        grid = (side, side) if side * side == n else (1, n)
        return {0: slowfast_count(num_frames, grid, self.params, self.variant or "paper")}

    def plan(
        self, video: VideoTokens, prompt: Prompt | None, context: PlanContext | None = None
    ) -> PrunePlan:
        from mlbcli.selection.ops.slowfast import slowfast_plan

        return self.position_policy(slowfast_plan(video, self.params, self.variant or "paper"), context)
