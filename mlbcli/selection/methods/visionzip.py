"""VisionZip* (FastVID's post-pooling VisionZip), pre-LLM, per frame: dominant + contextual tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlbcli.selection.methods.common import PeerMethod
from mlbcli.selection.parameters import param

if TYPE_CHECKING:
    from mlbcli.models.base import VideoTokens
    from mlbcli.selection.plan import PrunePlan


class VisionZipStar(PeerMethod):
    """VisionZip* (FastVID's post-pooling VisionZip), pre-LLM, per frame: dominant + contextual tokens.

    [C] 54:10 dominant:contextual ratio of each frame's budget; contextual targets uniformly spaced
        among the non-dominant tokens, others assigned by cosine.
    [R] the dominant signal: the vision tower's attention (`VideoTokens.saliency`) where the family
        gives it, else a pseudo-[CLS] attention, softmax over the frame of <mean token, token>/sqrt(D)
        on the projector outputs (SigLIP has no [CLS]).
    [R] assignment by cosine of projector outputs (VisionZip uses attention keys).
    Variants (`--variant`):
    - official (default; [C] cokeshao/HoliTom e9b2972f `visionzip/llava_arch.py`, the OneVision port of
      dvlab-research/VisionZip 3151f6df; [R] its per-frame count is a setting there, mlb derives it
      from --keep): per frame round(N * keep) tokens, int(b * 54/64) dominant
      (floored), contextual = target + mean(members); per frame the dominant tokens (position order)
      then the contextual ones; positions re-sequenced (the code concatenates); targets at
      arange(0, R, R // n_ctx)[:n_ctx].
    - paper (mlb's reading): a contextual token is the *mean* of its target and members (keeps the
      embedding scale the LLM expects), at the target's position; tokens in position order, original
      position ids; targets at int(i * R / n_ctx); round(b * ratio) dominant; even frame budgets
      summing to token_budget(T*N, keep).
    """

    @dataclass(frozen=True)
    class Params:
        dominant_ratio: float = param(
            54 / 64,
            "fraction of each frame's budget kept as dominant tokens; the rest are merged contextual "
            "tokens (VisionZip 54:10).",
            0.0,
            1.0,
        )

    variants = ("official", "paper")
    options_used = frozenset({"keep", "variant", "positions", "saliency"})  # --saliency tower|proxy
    name = "visionzip"
    description = (
        "VisionZip* (after pooling, before the LLM): dominant tokens + merged contextual tokens. "
        "official: cokeshao/HoliTom e9b2972f (VisionZip's OneVision port)."
    )

    def reads_saliency(self) -> bool:
        """The official code ranks by the tower's attention; the paper reading by the proxy only."""
        return self.variant == "official"

    def prune_plan(self, video: VideoTokens) -> PrunePlan:
        from mlbcli.selection.ops.peers import visionzip_plan

        return visionzip_plan(video, self.keep, self.params["dominant_ratio"], self.variant or "official")
