"""VidCom2 (Video Compression Commander): the algorithm and its sources are in
`mlbcli.selection.ops.vidcom2`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlbcli.selection.methods.common import PeerMethod

if TYPE_CHECKING:
    from mlbcli.models.base import VideoTokens
    from mlbcli.selection.plan import PrunePlan


class VidCom2(PeerMethod):
    """Pre-LLM, no attention; vLLM's count (at least one token per frame). No hyperparameters.

    One variant, official ([C] vLLM's VidCom2 and xuyang-liu16/VidCom2): positions contiguous, as the
    authors' LLaVA path concatenates the kept tokens (M-RoPE families keep the original positions, as
    vLLM does). Ties (identical tokens, static videos) break to the lower index; vLLM's `topk` leaves
    their order to the kernel, so a static video may keep other, equally scored tokens.
    """

    variants = ("official",)

    name = "vidcom2"
    description = (
        "VidCom2: per-frame budgets by frame uniqueness, then the least redundant tokens of each "
        "frame (Gaussian similarity to video and frame centres); no attention. official: vLLM / "
        "xuyang-liu16/VidCom2."
    )

    def prune_plan(self, video: VideoTokens) -> PrunePlan:
        from mlbcli.selection.ops.vidcom2 import vidcom2_plan

        return vidcom2_plan(video, self.keep)

    def nominal_schedule(self, num_visual: int, num_frames: int = 1) -> dict[int, int]:
        from mlbcli.selection.ops.vidcom2 import vidcom2_count

        if self.keep >= 1.0:
            return {}
        return {0: vidcom2_count(num_frames, max(1, num_visual // max(1, num_frames)), self.keep)}
