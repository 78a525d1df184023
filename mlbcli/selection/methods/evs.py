"""EVS (Efficient Video Sampling, NVIDIA) as vLLM ships it: the algorithm and its sources are in
`mlbcli.selection.ops.evs`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlbcli.selection.methods.common import PeerMethod

if TYPE_CHECKING:
    from mlbcli.models.base import VideoTokens
    from mlbcli.selection.plan import PrunePlan


class EVS(PeerMethod):
    """--keep = 1 - q of vLLM's `--video-pruning-rate q`; the count is vLLM's (floor), so the very
    tokens vLLM keeps are kept. No hyperparameters.

    One variant, official ([C] vLLM `vllm/multimodal/evs.py` `compute_retention_mask`): vLLM keeps
    the kept tokens' M-RoPE positions, so positions stay original.
    """

    variants = ("official",)
    official_positions = "original"

    name = "evs"
    description = (
        "EVS (vLLM --video-pruning-rate q = 1 - --keep): drop the tokens most similar to the same "
        "position in the previous frame; first frame kept. official: vLLM."
    )

    def prune_plan(self, video: VideoTokens) -> PrunePlan:
        from mlbcli.selection.ops.evs import evs_plan

        return evs_plan(video, self.keep)

    def nominal_schedule(self, num_visual: int, num_frames: int = 1) -> dict[int, int]:
        from mlbcli.selection.ops.evs import evs_count

        if self.keep >= 1.0:
            return {}
        return {0: evs_count(num_frames, max(1, num_visual // max(1, num_frames)), self.keep)}
