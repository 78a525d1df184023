"""LLaVA-MLB: the full two-stage algorithm on image LLMs, MLB-lite (grid + tail debiasers) elsewhere.

On image LLMs (`PlanContext.image_llm`, set by the engine from the adapter; LLaVA-NeXT today) `mlb` is
the two-stage algorithm of algorithms.md §3.3 (`selection.ops.two_stage`, where --keep's meaning there
is documented); elsewhere, or without a context (saved-token replays, plugins' direct calls), it is
MLB-lite: the attention method with the `grid` and `tail` debiasers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlbcli.errors import UsageError
from mlbcli.selection.base import MethodOptions, PlanContext
from mlbcli.selection.debiasers import GridCells, SummaryTail
from mlbcli.selection.methods.attention import AttentionMethod
from mlbcli.selection.parameters import param

if TYPE_CHECKING:
    from mlbcli.models.base import Prompt, VideoTokens
    from mlbcli.selection.plan import PrunePlan


class LlavaMLB(AttentionMethod):
    """LLaVA-MLB "MLB-lite" for OneVision (reconstruction, arXiv 2503.11205; spec §3.5). grid + tail.

    [R] no segmentation (the whole video fits the context); one probe at layer K-1 (K = 2, question rows).
    [R] GAPool in `select` mode by default (a kept token is an original token, at its own position
        id): each frame's budget (even split) is spread over ragged grid cells (`grid_cells`), each cell
        keeps its most attended token(s); default one cell per kept token (`grid=0`).
        `pool_temperature` > 0: `pool` mode (spec §3.3), each cell one softmax(a/(tau*std))-weighted
        mean of its layer-K states, at the cell's centre token's position (spec §3.5).
    [R] VSTail: every frame adaptively average-pooled to s x s (s = 1) and appended after the last
        visual token at layer 0 (positions continue after it); the T*s^2 tail tokens count in --keep,
        so the grid selection gets budget - T*s^2.
    [R] FLOPs: the tail also rides through layers 0..K-1 (n + T*s^2 tokens there), both in the measured
        `flops_ratio` and in `mlb flops`.
    """

    @dataclass(frozen=True)
    class Params(GridCells.Params, SummaryTail.Params):
        """The two-stage variant always reads `grid` and `tail_size`, whatever --debias says."""

        segments: int = param(
            0,
            "on image LLMs (two-stage, LLaVA-NeXT): consecutive frame segments probed separately "
            "(stage 1); 0 = the fewest that fit the context (T_s*N + text <= max_position_embeddings).",
            0,
        )

    name = "mlb"
    description = (
        "LLaVA-MLB: two-stage segment probes + GAPool + summary tail on image LLMs (LLaVA-NeXT); "
        "MLB-lite (gridded attention selection per frame + pooled summary tail) on video LLMs."
    )
    default_debias = ("grid", "tail")
    options_used = frozenset({"keep", "layer", "query", "debias", "variant"})
    #: "budget": --keep is the budget (1.0 = no pruning); "paper": the two-stage LLaVA-MLB paper layout
    #: (g x g GAPool cells + s x s tail per frame, 68 of 576 at 24x24), fixed, so it takes no --keep.
    variants = ("budget", "paper")

    def __init__(self, options: MethodOptions | None = None):
        super().__init__(options)
        if self.variant == "paper" and self.options.keep is not None:
            raise UsageError(
                "--keep does not apply to --method mlb --variant paper (the paper layout is fixed: "
                "grid x grid tokens + the tail per frame)"
            )

    @classmethod
    def reads_option(cls, name: str, options: MethodOptions) -> bool:
        """The paper layout is fixed: no budget, so keep resolves to None (no target, no column)."""
        paper = (options.variant or cls.variants[0]) == "paper"
        return super().reads_option(name, options) and not (name == "keep" and paper)

    def _two_stage_params(self) -> dict[str, Any]:
        debias = self.debiasers()
        if "grid" not in debias or set(debias) - {"grid", "tail"}:
            raise UsageError(
                "the two-stage mlb (image LLMs) always uses GAPool: --debias may only be 'grid' or "
                "'grid,tail' (global/local apply to MLB-lite variants on video LLMs)"
            )
        return {
            **self.params,
            # unset: the grid-scaled default of the two-stage variant (2 at 24x24), not MLB-lite's 1
            "tail_size": self.params["tail_size"] if "tail_size" in self.given_params else None,
            "use_tail": "tail" in debias,
        }

    def _check_video_llm(self) -> None:
        if "segments" in self.given_params:
            raise UsageError("parameter 'segments' applies to the two-stage mlb on image LLMs (LLaVA-NeXT)")
        if self.variant == "paper":
            raise UsageError(
                "--variant paper is the two-stage LLaVA-MLB layout of image LLMs (LLaVA-NeXT); on this "
                "video LLM mlb is MLB-lite: use --keep"
            )

    def plan(
        self, video: VideoTokens, prompt: Prompt | None, context: PlanContext | None = None
    ) -> PrunePlan:
        if context is None or not context.image_llm:
            self._check_video_llm()
            return super().plan(video, prompt, context)
        from mlbcli.selection.ops import two_stage

        return two_stage.plan(self, self._two_stage_params(), video, context)

    def nominal_schedule(
        self, num_visual: int, num_frames: int = 1, context: PlanContext | None = None
    ) -> dict[int, int]:
        if context is None or not context.image_llm:
            self._check_video_llm()
            return super().nominal_schedule(num_visual, num_frames)
        from mlbcli.selection.ops import two_stage

        return two_stage.nominal(self, self._two_stage_params(), num_visual, num_frames, context)
