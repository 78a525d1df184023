"""Attention methods: prune before decoder layer K by the layer-(K-1) probe, with composable debiasers.

fastv = no debiasing, adatp = global + local (mlb = grid + tail, in `methods.mlb`); `--debias` replaces
a method's debiasers, so `fastv --debias local` is a valid ablation. The hyperparameters are the
chosen debiasers' (`selection.debiasers`), so which names are valid depends on `--debias`. The tensor
side is `mlbcli.selection.ops.attention` (imported when a plan is built: this module is torch-free).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from mlbcli.errors import UsageError
from mlbcli.selection.base import Method, PlanContext, token_budget
from mlbcli.selection.debiasers import debiaser_params, make_debiasers, parse_debias

if TYPE_CHECKING:
    from mlbcli.models.base import Prompt, VideoTokens
    from mlbcli.selection.ops.attention import AttentionSettings
    from mlbcli.selection.plan import PrunePlan


class AttentionMethod(Method):
    """Prune before decoder layer K by the layer-(K-1) probe, with composable debiasers."""

    #: The debiasers without --debias (a tuple of `selection.debiasers` names).
    default_debias: ClassVar[tuple[str, ...]] = ()
    query_aware = True
    prune_point = "layer"
    options_used = frozenset({"keep", "layer", "query", "debias"})

    def debiasers(self) -> tuple[str, ...]:
        return parse_debias(self.options.debias, self.default_debias)

    def parameter_sources(self) -> tuple[type, ...]:
        return (self.Params, *debiaser_params(self.debiasers()))

    @classmethod
    def declared_parameter_sources(cls) -> tuple[type, ...]:
        return (cls.Params, *debiaser_params(cls.default_debias))

    def tail_tokens(self, num_frames: int) -> int:
        """Tokens the debiasers append (`tail`'s summary) for `num_frames` frames; 0 without one."""
        debiasers = make_debiasers(self.debiasers(), self.params)
        return sum(num_frames * d.tail_size() ** 2 for d in debiasers)

    def nominal_schedule(self, num_visual: int, num_frames: int = 1) -> dict[int, int]:
        """{K: budget}, plus the summary tail riding through layers 0..K-1 when `tail` is on.

        Validated like a run: a budget that cannot hold the tail is the same `UsageError`.
        """
        schedule = super().nominal_schedule(num_visual, num_frames)
        n_tail = self.tail_tokens(num_frames)
        if schedule and n_tail:
            self._check_tail(schedule[self.layer], n_tail)
            schedule[0] = num_visual + n_tail
        return schedule

    def _check_tail(self, budget: int, n_tail: int) -> None:
        if budget - n_tail < 1:
            raise UsageError(
                f"--keep {self.keep} gives {budget} tokens, not more than the {n_tail}-token "
                f"summary tail: raise --keep or lower tail_size"
            )

    def settings(self) -> AttentionSettings:
        from mlbcli.selection.ops.attention import AttentionSettings

        return AttentionSettings(self.name, self.keep, self.layer, self.query, self.debiasers(), self.params)

    def plan(
        self, video: VideoTokens, prompt: Prompt | None, context: PlanContext | None = None
    ) -> PrunePlan:
        from mlbcli.selection.ops.attention import attention_plan

        if self.layer < 1:
            raise UsageError(f"--method {self.name} prunes inside the LLM by attention: use --layer >= 1")
        if self.keep < 1.0:
            budget = token_budget(video.num_frames * video.tokens_per_frame, self.keep)
            self._check_tail(budget, self.tail_tokens(video.num_frames))
        return attention_plan(self.settings(), video, prompt, context)


class FastV(AttentionMethod):
    """FastV: global top-k of the visual tokens by layer-(K-1) attention, pruned before layer K.

    [C] query = the last prompt token's row (FastV's own, and FastVID's FastV rows): the default;
        `--query question` (mean over all question rows, the spec's [R] default for adatp/mlb) is an
        ablation.
    """

    name = "fastv"
    default_query = "last"
    description = "FastV: prune at layer K to the top --keep visual tokens by layer K-1 attention."
    default_debias = ()


class AdaTP(AttentionMethod):
    """AdaTP (reconstruction, arXiv 2505.20100; spec §4.3). Default debiasers: global + local.

    [S] segmentation rule (cos of adjacent global frame features < tau_s starts a segment).
    [R] global frame features = mean-pooled SigLIP last hidden state (`VideoTokens.frame_features`), not
        the SigLIP attention-pooling head; tau_s = 0.9.
    [R] relevance: no SigLIP text tower in LLaVA-OV, so r_j = cosine between the mean question-token
        *input embedding* of the LLM and the segment's mean visual token (same input space); weight =
        |s_j| * exp((r_j - max r)/T_r) as in the spec, T_r = 0.05 in cosine units (smooth in r: tiny
        relevance differences leave the split alone, large ones move it); floor b_min = 0.25 of the
        segment's even share; largest-remainder rounding; budgets sum exactly to the total.
    [R] local: pre-LLM (layer 0) same-position dedup inside a segment against the last *kept* token
        at the position (a slow drift keeps a token each time it has moved by the threshold), cosine
        on projector outputs >= 0.9, keep-first (no merging); ranking at layer K only among survivors.
        Backfill: when fewer tokens than the budget survive, the least similar duplicates are kept
        back, so --keep is met exactly.
    [R] selection: per-segment top-k of the layer-(K-1) probe (question rows, head mean), K = 2.
    Diagnostics: `frame_similarity` (the adjacent-frame cosines compared with segment_threshold);
    the raw attention field before dedup is the probe-only run (`compress --keep 1.0`).
    """

    name = "adatp"
    description = "AdaTP (reconstruction): segment budgets + same-position dedup, then attention top-k."
    default_debias = ("global", "local")
