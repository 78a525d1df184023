"""FastVID (NeurIPS'25): dynamic temporal segmentation + density spatio-temporal pruning before the
LLM. The algorithm, its sources and where we differ are in `mlbcli.selection.ops.fastvid`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlbcli.selection.methods.common import PreLLMMethod
from mlbcli.selection.parameters import param

if TYPE_CHECKING:
    from mlbcli.models.base import VideoTokens
    from mlbcli.selection.plan import PrunePlan


class FastVID(PreLLMMethod):
    """FastVID: DySeg segments, then per segment salient tokens + density-peak anchors (DTM)."""

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
        "anchors that merge the rest (before the LLM)."
    )

    def prune_plan(self, video: VideoTokens) -> PrunePlan:
        from mlbcli.selection.ops.fastvid import fastvid_plan

        return fastvid_plan(video, self.keep, self.params)
