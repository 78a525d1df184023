"""FastVID (NeurIPS'25): dynamic temporal segmentation + density spatio-temporal pruning before the
LLM. The algorithm, its sources and where we differ are in `mlbcli.selection.ops.fastvid`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlbcli.selection.base import token_budget
from mlbcli.selection.methods.common import PeerMethod
from mlbcli.selection.parameters import param

if TYPE_CHECKING:
    from mlbcli.models.base import VideoTokens
    from mlbcli.selection.plan import PrunePlan


class FastVID(PeerMethod):
    """FastVID: DySeg segments, then per segment salient tokens + density-peak anchors (DTM).

    Variants (`--variant`), both [C] against LunarShen/FastVID a40a109c
    (`fastvid_llavavideo/LLaVA-NeXT/llava/model/language_model/modeling_qwen2.py` L893-1081):
    - official (default): the reference's budget int(N * keep) per frame (T * int(N * keep) in all);
      kept tokens in position order at their original positions (the reference's `keep_indexs`).
    - exact: mlb's budget contract, exactly token_budget(T*N, keep) split evenly over the frames.
    """

    variants = ("official", "exact")
    options_used = frozenset({"keep", "variant", "positions", "saliency"})  # --saliency tower|proxy
    official_positions = "original"

    @dataclass(frozen=True)
    class Params:
        fastvid_segments: int = param(
            8, "DySeg c; a segment boundary after each of the c-1 least similar adjacent frame pairs.", 1
        )
        fastvid_threshold: float = param(
            0.9,
            "DySeg tau; also a boundary wherever adjacent global frame features have cosine < this.",
            -1.0,
            1.0,
        )
        fastvid_contextual: float = param(
            0.4,
            "STPrune d, the share of each segment's budget spent on density-peak anchors that merge "
            "the rest (the other 1-d: salient tokens by attention).",
            0.0,
            1.0,
        )
        fastvid_anchor_every: int = param(4, "DTM p; one anchor frame per p frames of a segment.", 1)
        fastvid_beta: float = param(
            0.6,
            "DTM beta; an anchor keeps weight max(beta, 1/(members+1)) against its members' mean.",
            0.0,
            1.0,
        )

    name = "fastvid"
    description = (
        "FastVID: dynamic temporal segmentation, then per segment salient tokens + density-peak "
        "anchors that merge the rest (before the LLM). official: LunarShen/FastVID a40a109c."
    )

    def nominal_schedule(self, num_visual: int, num_frames: int = 1) -> dict[int, int]:
        if self.keep >= 1.0:
            return {}
        if self.variant != "official":
            return {0: token_budget(num_visual, self.keep)}
        per_frame = max(1, num_visual // max(1, num_frames))
        return {0: num_frames * max(1, int(per_frame * self.keep))}

    def prune_plan(self, video: VideoTokens) -> PrunePlan:
        from mlbcli.selection.ops.fastvid import fastvid_plan

        return fastvid_plan(video, self.keep, self.params, self.variant or "official")
