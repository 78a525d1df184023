"""FlashVID (ICLR 2026 oral): attention- and diversity-based selection plus tree-based spatio-temporal
merging before the LLM (with an expanded budget), then attention pruning inside it. The algorithm, its
sources and where we differ are in `mlbcli.selection.ops.flashvid`.

Families: the vision side runs on every family (it reads the projector outputs per frame); the official
code is tied to LLaVA-OneVision / LLaVA-Video (1-D positions, re-sequenced: contiguous here too) and
Qwen2.5-VL / Qwen3-VL (M-RoPE, original positions kept: so here on M-RoPE families). The in-LLM step
runs on 1-D and M-RoPE families alike (the engine's probe gives the last prompt token's attention).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlbcli.errors import UsageError
from mlbcli.selection.base import Method, PlanContext, keep_everything, token_budget
from mlbcli.selection.parameters import param

if TYPE_CHECKING:
    from mlbcli.models.base import Prompt, VideoTokens
    from mlbcli.selection.plan import PrunePlan

#: The official pruning layer and the depth it was set for (Qwen2-7B in LLaVA-OneVision / LLaVA-Video).
OFFICIAL_LAYER, OFFICIAL_DEPTH = 20, 28


class FlashVID(Method):
    """FlashVID: ADTS + TSTM at e x --keep before the LLM, then the top llm_retention by attention."""

    @dataclass(frozen=True)
    class Params:
        flashvid_expansion: float = param(
            1.25, "e; the vision side keeps ceil(N * keep * e) tokens a frame (capped at N).", 1.0
        )
        flashvid_alpha: float = param(
            0.7, "share of a frame's vision-side tokens chosen by ADTS (attention x diversity).", 0.0, 1.0
        )
        flashvid_temporal_threshold: float = param(
            0.8,
            "TSTM; a token joins its most similar token of the previous frame above this cosine.",
            -1.0,
            1.0,
        )
        flashvid_segment_threshold: float = param(
            0.9, "DySeg; a segment cut where adjacent frame means have cosine < this.", -1.0, 1.0
        )
        flashvid_min_segments: int = param(
            8, "DySeg; the least similar frame pairs become cuts until there are this many segments.", 1
        )
        flashvid_llm_retention: float = param(
            0.3, "share of the visual tokens kept before --layer by the last token's attention.", 0.0, 1.0
        )

    name = "flashvid"
    description = (
        "FlashVID: attention/diversity selection + spatio-temporal tree merging at 1.25 x --keep before "
        "the LLM, then the top 30% by attention before --layer (official: Fanziyang-v/FlashVID 1d37422c)."
    )
    query_aware = True
    prune_point = "layer"
    options_used = frozenset({"keep", "layer", "variant", "positions", "saliency"})
    variants = ("official",)
    default_layer = OFFICIAL_LAYER
    default_query = "last"
    #: Decoder depth of the model, when known (`check_layer`): scales the default pruning layer.
    depth: int | None = None

    @property
    def layer(self) -> int:
        """--layer, else 20 on a 28-layer LLM and round(20 / 28 * L) on an L-layer one."""
        if self.options.layer is not None:
            return int(self.options.layer)
        if self.depth is None or self.depth == OFFICIAL_DEPTH:
            return OFFICIAL_LAYER
        return min(self.depth - 1, max(1, round(OFFICIAL_LAYER / OFFICIAL_DEPTH * self.depth)))

    @property
    def positions(self) -> str:
        """Official LLaVA code concatenates the compressed tokens: contiguous unless asked (M-RoPE
        families keep the original positions, as the official Qwen-VL code does)."""
        return self.options.positions or "contiguous"

    def check_layer(self, num_layers: int) -> None:
        self.depth = num_layers
        super().check_layer(num_layers)

    def vision_tokens(self, num_visual: int, num_frames: int) -> int:
        """Tokens entering the LLM as planned: b = ceil(N keep e) a frame (merging may give fewer)."""
        from mlbcli.selection.ops.flashvid import frame_budget

        per_frame = max(1, num_visual // max(1, num_frames))
        sel, merge = frame_budget(
            per_frame, self.keep, self.params["flashvid_expansion"], self.params["flashvid_alpha"]
        )
        return (sel + merge) * num_frames

    def plan(
        self, video: VideoTokens, prompt: Prompt | None, context: PlanContext | None = None
    ) -> PrunePlan:
        from mlbcli.selection.ops.flashvid import flashvid_plan

        if self.keep >= 1.0:
            return keep_everything()
        if self.layer < 1:
            raise UsageError(f"--method {self.name} prunes inside the LLM by attention: use --layer >= 1")
        T, N = video.num_frames, video.tokens_per_frame
        plan = flashvid_plan(video, self.keep, self.layer, token_budget(T * N, self.keep), self.params)
        return self.position_policy(plan, context)

    def nominal_schedule(self, num_visual: int, num_frames: int = 1) -> dict[int, int]:
        from mlbcli.selection.ops.flashvid import inner_keep

        if self.keep >= 1.0:
            return {}
        entering = self.vision_tokens(num_visual, num_frames)
        return {0: entering, self.layer: inner_keep(entering, self.params["flashvid_llm_retention"])}
