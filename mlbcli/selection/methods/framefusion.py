"""FrameFusion (ICCV 2025): inside the LLM, merge each token into the same patch of the previous frame
when they are similar, layer after layer, then prune by attention to a computation budget. The
algorithm, its sources and where we differ are in `mlbcli.selection.ops.framefusion`.

Families: the official code ships for LLaVA-Video, LLaVA-NeXT-Video, Qwen2-VL (M-RoPE, positions kept),
MiniCPM-V, NVILA and InternVL2.5; its idea needs only each token's place in its frame and the attention
of the last prompt token, so the port runs on every family (1-D and M-RoPE), original positions kept.
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

#: The depth the official cost formula assumes (Qwen2-7B); used when the model's is unknown.
OFFICIAL_DEPTH = 28


class FrameFusion(Method):
    """FrameFusion: similarity merging over the first layers, then attention pruning to the cost."""

    @dataclass(frozen=True)
    class Params:
        framefusion_similarity: float = param(
            0.6,
            "similarity_lower_bound; a token merges into the same patch of the previous frame at or "
            "above this cosine.",
            -1.0,
            1.0,
        )
        framefusion_ratio_floor: float = param(
            0.1,
            "ratio_lower_bound; merging goes on, layer after layer, while at least this share of the "
            "visual tokens merges.",
            0.0,
            1.0,
        )

    name = "framefusion"
    description = (
        "FrameFusion: merge tokens similar to the same patch of the previous frame over the first "
        "layers, then prune by attention so the visual tokens average --keep over the layers (cost; "
        "official: thu-nics/FrameFusion fbec1d2e)."
    )
    query_aware = True
    prune_point = "layer"
    options_used = frozenset({"keep", "variant"})
    variants = ("official",)
    default_layer = 1  # the earliest pruning point (after merging stops, the data decides)
    default_query = "last"
    #: Decoder depth of the model, when known (`check_layer`): the layers the cost is spread over.
    depth: int | None = None

    def check_layer(self, num_layers: int) -> None:
        if num_layers < 2:
            raise UsageError(
                f"--method {self.name} needs an LLM of at least 2 layers, this one has {num_layers}"
            )
        self.depth = num_layers

    def plan(
        self, video: VideoTokens, prompt: Prompt | None, context: PlanContext | None = None
    ) -> PrunePlan:
        from mlbcli.selection.ops.framefusion import FusionSettings, framefusion_plan

        if self.keep >= 1.0:
            return keep_everything()
        T, N = video.num_frames, video.tokens_per_frame
        settings = FusionSettings(
            cost=self.keep,
            similarity=self.params["framefusion_similarity"],
            ratio_floor=self.params["framefusion_ratio_floor"],
            depth=self.depth or OFFICIAL_DEPTH,
            tokens_per_frame=N,
            num_frames=T,
            target=token_budget(T * N, self.keep),
        )
        return framefusion_plan(settings)

    def nominal_schedule(self, num_visual: int, num_frames: int = 1) -> dict[int, int]:
        """Merging is content-dependent: planned as nothing merged, so pruning before layer 1."""
        from mlbcli.selection.ops.framefusion import pruning_ratio

        if self.keep >= 1.0:
            return {}
        ratio = pruning_ratio([0.0], self.keep, self.depth or OFFICIAL_DEPTH) or 0.0
        return {1: max(1, round(num_visual * (1 - ratio)))}
