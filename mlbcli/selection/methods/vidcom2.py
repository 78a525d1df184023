"""VidCom2 (Video Compression Commander): the algorithm and its sources are in
`mlbcli.selection.ops.vidcom2`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlbcli.selection.methods.common import PeerMethod

if TYPE_CHECKING:
    from mlbcli.models.base import VideoTokens
    from mlbcli.selection.plan import PrunePlan


class VidCom2(PeerMethod):
    """Pre-LLM, no attention. No hyperparameters.

    Variants (`--variant`):
    - official (default), [C] xuyang-liu16/VidCom2 944a17d1 (`token_compressor/vidcom2/vidcom2.py`,
      golden fixtures): per frame round(scale_t * N) tokens (at least one), their sum a few tokens off
      --keep (`keep_note`); positions contiguous, as the authors' LLaVA path concatenates the kept
      tokens (M-RoPE families keep the original positions, as vLLM does).
    - vllm, [C] vLLM's port: the same scores, then reconciled to exactly max(T, int(T*N*keep)) tokens;
      original positions.
    Ties (identical tokens, static videos) break to the lower index; the reference's `topk` leaves
    them to the kernel, so a static video may keep other, equally scored tokens.
    """

    variants = ("official", "vllm")

    name = "vidcom2"
    description = (
        "VidCom2: per-frame budgets by frame uniqueness, then the least redundant tokens of each "
        "frame (Gaussian similarity to video and frame centres); no attention. official: "
        "xuyang-liu16/VidCom2 944a17d1; vllm: vLLM's exact count."
    )

    def prune_plan(self, video: VideoTokens) -> PrunePlan:
        from mlbcli.selection.ops.vidcom2 import vidcom2_plan

        return vidcom2_plan(video, self.keep, self.variant or "official")

    def nominal_schedule(self, num_visual: int, num_frames: int = 1) -> dict[int, int]:
        from mlbcli.selection.ops.vidcom2 import vidcom2_count

        if self.keep >= 1.0:
            return {}
        per_frame = max(1, num_visual // max(1, num_frames))
        if self.variant == "vllm":
            return {0: vidcom2_count(num_frames, per_frame, self.keep)}
        # official: content-dependent budgets; equal frames (p_t = 1/T) give round(keep * N) each
        return {0: num_frames * min(per_frame, max(1, round(self.keep * per_frame)))}
