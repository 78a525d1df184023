"""PruneVid (ACL'25): static/dynamic token merging before the LLM, then question-guided selection
inside it. The algorithm, its sources and where we differ are in `mlbcli.selection.ops.prunevid`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlbcli.errors import UsageError
from mlbcli.selection.base import MethodOptions, PlanContext, keep_everything, token_budget
from mlbcli.selection.methods.common import PreLLMMethod
from mlbcli.selection.parameters import param

if TYPE_CHECKING:
    from mlbcli.models.base import Prompt, VideoTokens
    from mlbcli.selection.plan import PrunePlan


class PruneVid(PreLLMMethod):
    """PruneVid: DPC-kNN merging per temporal segment, then top tokens per group at layer K.

    Variants (`--variant`), [C] against Visual-AI/PruneVid b12600c6 (`models/pllava/`):
    - exact (default): mlb's budget contract: --keep gives exactly token_budget(T*N, keep) tokens at
      layer K (default 2), original positions. The default because the reference has no budget (its
      retention is alpha of each merged group, content-dependent) and every method answers --keep.
    - official: the reference's settings: alpha 0.4 (`prunevid_alpha`; --keep does not
      apply, alpha sets the retention), selection after its `selected_layer` 10, i.e. before decoder
      layer 11 (`--layer 11`), per segment the static tokens then each frame's dynamic ones, clusters
      in centre-score rank (the order PLLaVA concatenates them) at contiguous positions; equal to the
      reference's merge and selection on the golden fixtures (same attention given to both).
    The official variant aggregates the probe as the reference does, max over heads and over the query
    rows (`PrunePlan.probe_reduce`); [R] the reference's rows are all text rows after the visual block,
    mlb's the question's rows (--query question); `exact` takes the mean, as the other methods do.
    """

    variants = ("exact", "official")
    variant_params = {"official": {"prunevid_alpha": 0.4}}
    official_layer = 11

    @dataclass(frozen=True)
    class Params:
        prunevid_segment_ratio: float = param(
            0.25, "temporal clusters of frames = int(T * this) (DPC-kNN on frame means).", 1e-6, 1.0
        )
        prunevid_threshold: float = param(
            0.8,
            "tau; a position is static in a segment when its mean pairwise cosine across the segment's "
            "frames is > this.",
            -1.0,
            1.0,
        )
        prunevid_cluster_ratio: float = param(
            0.5,
            "each static/dynamic group of > 14 tokens is merged by DPC-kNN into size * this tokens.",
            1e-6,
            1.0,
        )
        prunevid_alpha: float | None = param(
            None,
            "keep int(size * alpha) of every group at layer K (PruneVid uses 0.4); unset = derived "
            "from --keep (exact budget, groups in proportion to their sizes).",
            0.0,
            1.0,
        )

    name = "prunevid"
    description = (
        "PruneVid: static/dynamic DPC-kNN token merging per temporal segment before the LLM, then "
        "question-guided selection at layer K (decode sees only the kept tokens). official: "
        "Visual-AI/PruneVid b12600c6."
    )
    query_aware = True
    prune_point = "layer"
    options_used = frozenset({"keep", "layer", "query", "variant", "positions"})
    default_query = "question"

    def __init__(self, options: MethodOptions | None = None):
        super().__init__(options)
        given_alpha = "prunevid_alpha" in self.given_params
        if self.options.keep is not None and not given_alpha and self.variant == "official":
            raise UsageError(
                "--keep does not apply to --method prunevid --variant official (PruneVid's "
                "prunevid_alpha, 0.4 by default, sets the retention): give prunevid_alpha, or "
                "--variant exact for a --keep budget"
            )
        if self.options.keep is not None and self.params["prunevid_alpha"] is not None:
            raise UsageError(
                "--keep does not apply to --method prunevid with prunevid_alpha (alpha sets the "
                "retention): give one of them"
            )

    @property
    def layer(self) -> int:
        """The official variant selects where PruneVid does (after its layer 10: before layer 11)."""
        if self.options.layer is None and self.variant == "official":
            return self.official_layer
        return super().layer

    @property
    def positions(self) -> str:
        """PLLaVA concatenates the merged tokens: contiguous under the official variant."""
        default = "contiguous" if self.variant == "official" else "original"
        return self.options.positions or default

    def target_tokens(self, num_visual: int, num_frames: int = 1) -> int | None:
        if self.params["prunevid_alpha"] is not None:
            return None
        return super().target_tokens(num_visual, num_frames)

    def plan(
        self, video: VideoTokens, prompt: Prompt | None, context: PlanContext | None = None
    ) -> PrunePlan:
        from mlbcli.selection.ops.prunevid import prunevid_plan

        if self.keep >= 1.0 and self.params["prunevid_alpha"] is None:
            return keep_everything()
        if self.layer < 1:
            raise UsageError(f"--method {self.name} selects inside the LLM by attention: use --layer >= 1")
        plan = prunevid_plan(
            video, self.keep, self.layer, self.query, self.params, official=self.variant == "official"
        )
        return self.position_policy(plan, context)

    def nominal_schedule(self, num_visual: int, num_frames: int = 1) -> dict[int, int]:
        """Merging is content-dependent: layer 0 assumes r_cluster of every group (no static tokens)."""
        alpha = self.params["prunevid_alpha"]
        if self.keep >= 1.0 and alpha is None:
            return {}
        merged = max(1, round(num_visual * self.params["prunevid_cluster_ratio"]))
        final = int(merged * alpha) if alpha is not None else token_budget(num_visual, self.keep)
        return {0: merged, self.layer: min(merged, final)}
