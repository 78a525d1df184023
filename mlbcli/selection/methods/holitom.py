"""HoliTom (NeurIPS'25): holistic temporal segmentation + spatio-temporal merging before the LLM, and
optional merging inside it. The algorithm, its sources and where we differ are in
`mlbcli.selection.ops.holitom`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlbcli.selection.base import token_budget
from mlbcli.selection.methods.common import PeerMethod
from mlbcli.selection.parameters import param

if TYPE_CHECKING:
    from mlbcli.models.base import VideoTokens
    from mlbcli.selection.plan import PrunePlan


class HoliTom(PeerMethod):
    """HoliTom: static windows (DP) merged by density peaks, dynamic tokens by attention.

    Variants (`--variant`), [C] against cokeshao/HoliTom e9b2972f (`holitom/llava_arch.py`):
    - official (default): the reference's counts (ceil per frame's dynamic tokens, round per static
      group, after raising the ratio by the tokens the static windows removed), its entry order and
      contiguous positions (it concatenates; M-RoPE families keep the original ones).
    - exact: mlb's budget contract, exactly token_budget(T*N, keep) tokens at original positions.
    """

    variants = ("official", "exact")
    options_used = frozenset({"keep", "variant", "positions", "saliency"})  # --saliency tower|proxy

    @dataclass(frozen=True)
    class Params:
        holitom_threshold: float = param(
            0.8,
            "tau; a position is static in a window when every adjacent pair is more similar (cosine).",
            -1.0,
            1.0,
        )
        holitom_max_window: int = param(
            1024, "longest static window (frames) the segmentation DP considers.", 1
        )
        holitom_beta: float = param(
            0.6, "a merged centre is beta * centre + (1 - beta) * mean(members).", 0.0, 1.0
        )
        holitom_contextual: float = param(
            0.0,
            "D, the share of each frame's dynamic budget merged by density peaks instead of kept by "
            "attention (HoliTom's default 0).",
            0.0,
            1.0,
        )
        holitom_layer: int = param(
            0,
            "inner-LLM merge before this decoder layer (HoliTom's full rows use 18 on 28-layer "
            "Qwen2); 0 = off (the paper's 'w/o M').",
            0,
        )
        holitom_merge_ratio: float = param(
            0.5,
            "r; the inner merge keeps (1 - r) of the visual tokens (the rest are averaged into them).",
            0.0,
            1.0,
        )

    name = "holitom"
    description = (
        "HoliTom: global static-window segmentation (DP), static tokens merged by density peaks, "
        "dynamic tokens by attention (before the LLM); optional inner-LLM merge at holitom_layer. "
        "official: cokeshao/HoliTom e9b2972f."
    )

    def prune_plan(self, video: VideoTokens) -> PrunePlan:
        from mlbcli.selection.ops.holitom import holitom_plan

        return holitom_plan(video, self.keep, self.params, self.variant or "official")

    def nominal_schedule(self, num_visual: int, num_frames: int = 1) -> dict[int, int]:
        if self.keep >= 1.0:
            return {}
        budget = token_budget(num_visual, self.keep)
        if self.variant == "official":  # content-dependent: no static window, ceil per frame
            per_frame = max(1, num_visual // max(1, num_frames))
            budget = num_frames * math.ceil(per_frame * self.keep)
        schedule = {0: budget}
        inner_layer = self.params["holitom_layer"]
        if inner_layer > 0:
            schedule[inner_layer] = max(1, round(budget * (1 - self.params["holitom_merge_ratio"])))
        return schedule
