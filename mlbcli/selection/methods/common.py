"""The common frames of the pre-LLM methods: the published video baselines and the paper/official peers.

The video baselines (EVS, VidCom2, FastVID, HoliTom, PruneVid) are first of all pre-LLM pruners
(layer 0, `LayerKeep` with keep and, for the merging ones, replace); PruneVid and HoliTom add an
in-LLM step. They take --keep (the budget, token_budget(T*N, keep) visual tokens into the last layer,
checked per row by the runner's `keep_note`) and --positions (original by default, as every one of
them keeps or recomputes the original positions on the video LLMs they ship for), declare their own
hyperparameters (`Params`), and return an empty plan at --keep 1.0 (the output is then identical to
`--method none`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from mlbcli.selection.base import Method, PlanContext, keep_everything

if TYPE_CHECKING:
    from mlbcli.models.base import Prompt, VideoTokens
    from mlbcli.selection.plan import PrunePlan


class PreLLMMethod(Method):
    """Prunes before the LLM to the --keep budget: nothing at --keep 1.0, else `prune_plan` with the
    method's position policy (--positions)."""

    prune_point = "input"
    options_used = frozenset({"keep", "positions"})

    def plan(
        self, video: VideoTokens, prompt: Prompt | None, context: PlanContext | None = None
    ) -> PrunePlan:
        if self.keep >= 1.0:
            return keep_everything()
        return self.position_policy(self.prune_plan(video), context)

    def prune_plan(self, video: VideoTokens) -> PrunePlan:
        """The plan at `self.keep` < 1 (positions are the caller's)."""
        raise NotImplementedError


class PeerMethod(PreLLMMethod):
    """Pre-LLM peers with an official-code reading (`--variant official`: the peer's budget rounding,
    token order and positions, see each class) and mlb's own reading(s); each class names its default
    first (the peers of issue 19 default to `official`)."""

    options_used = frozenset({"keep", "variant", "positions"})
    variants: ClassVar[tuple[str, ...]] = ("paper", "official")
    #: The positions the official code gives the kept tokens: "contiguous" where it concatenates them
    #: into a fresh sequence, "original" where it keeps their position ids.
    official_positions: ClassVar[str] = "contiguous"

    @property
    def positions(self) -> str:
        """The official variant's positions (`official_positions`) unless asked otherwise; mlb's own
        readings keep the original positions."""
        default = self.official_positions if self.variant == "official" else "original"
        return self.options.positions or default
