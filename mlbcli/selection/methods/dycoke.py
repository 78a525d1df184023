"""DyCoke: temporal token merging (TTM) before the LLM, then dynamic KV-cache pruning while decoding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlbcli.errors import UsageError
from mlbcli.selection.base import MethodOptions, PlanContext, keep_everything
from mlbcli.selection.methods.common import PeerMethod
from mlbcli.selection.parameters import param

if TYPE_CHECKING:
    from mlbcli.models.base import Prompt, VideoTokens
    from mlbcli.selection.plan import DecodePolicy, PrunePlan


class DyCokeTTM(PeerMethod):
    """DyCoke: temporal token merging (TTM) before the LLM, then dynamic KV pruning while decoding.

    [C] windows of 4 frames; the first frame of a window is kept whole; the other frames keep the
        tokens least similar (same position) to a reference frame; nothing is merged (kept tokens are
        copied), so "merging" is pruning.
    [R] --keep is the budget: token_budget(T*N, keep) tokens in all, the whole frames kept whole and the
        rest over the compared frames. Below the whole frames' share (25% with 4-frame windows,
        DyCoke's minimum) they alone are kept and the row's `keep_note` says so. `merge_ratio` instead
        sets DyCoke's K directly (then --keep does not apply).
    Variants (`--variant`; `ops.dycoke` has the details):
    - official: KD-TAO/DyCoke at dd746349 (HEAD), `dycole_ttm` [C]: frame i+1 vs frame i; frame a+2
      vs frame a except in the last window (kept whole); an odd T drops its last frame; int((1-K)N)
      per compared frame (--keep: one count for all, round(rest / compared)); tokens in the code's
      order (a compared frame's by ascending similarity) and positions re-sequenced (it concatenates).
      Stage 2 as `PrunableDynamicCache` at that commit (`ops.dycoke_kv`) [C].
    - paper (default): DyCoke §3.2: frames 1 and 2 vs frame 0, frame 3 vs frame 2 in every window,
      the last one and a trailing partial window included (no frame dropped); floor((1-K)N) per
      compared frame (--keep: the rest split evenly); original position ids. Stage 2 scores every video
      key (the code's span stops one key short).
    Stage 2, on by default (`dycoke_kv`, --no-dycoke-kv): at every decode step whose layer L-1 video
    attention moved (cosine with the previous step's < 0.9; the first step always), layers >= L see
    only that step's top (1-P) video keys; other steps see the whole cache. It shows in the
    `decode_kv_ratio` column, not in `flops_ratio`.
    """

    @dataclass(frozen=True)
    class Params:
        merge_window: int = param(4, "frames per temporal-merging window (DyCoke TTM uses 4).", 2)
        merge_ratio: float | None = param(
            None,
            "DyCoke's pruning ratio K in [0, 1]: every compared frame keeps (1-K)N tokens, rounded down (then "
            "--keep does not apply); unset = --keep is the budget, the window heads kept whole.",
            0.0,
            1.0,
        )
        dycoke_kv: bool = param(
            True, "stage 2, dynamic KV-cache pruning while decoding (--no-dycoke-kv: TTM only)."
        )
        dycoke_kv_layer: int = param(
            3,
            "decode steps read the new token's attention at layer L-1 and prune the visual keys of "
            "layers >= L (DyCoke's L = 3).",
            1,
        )
        dycoke_kv_ratio: float = param(
            0.7,
            "P, the share of the visual KV entries hidden at a pruning decode step (DyCoke's README: 0.7).",
            0.0,
            1.0,
        )
        dycoke_kv_threshold: float = param(
            0.9,
            "a decode step prunes (keeps its top video keys) when the cosine between its video attention "
            "and the previous step's is < this, else it sees the whole cache (DyCoke: 0.9).",
            -1.0,
            1.0,
        )

    name = "dycoke"
    description = (
        "DyCoke: TTM drops tokens similar to the same position in a window's reference frame; then "
        "decode-time KV pruning by attention (--no-dycoke-kv: TTM only)."
    )

    def __init__(self, options: MethodOptions | None = None):
        super().__init__(options)
        if self.options.keep is not None and self.params["merge_ratio"] is not None:
            raise UsageError(
                "--keep does not apply to --method dycoke with merge_ratio (K sets the retention): "
                "give one of them"
            )
        if self.variant == "official" and self.params["merge_window"] != 4:
            raise UsageError(
                "--variant official is DyCoke's code, which uses 4-frame windows (merge_window 4)"
            )

    def target_tokens(self, num_visual: int, num_frames: int = 1) -> int | None:
        if self.params["merge_ratio"] is not None:
            return None
        return super().target_tokens(num_visual, num_frames)

    def _prunes(self) -> bool:
        return self.keep < 1.0 or self.params["merge_ratio"] is not None

    def plan(
        self, video: VideoTokens, prompt: Prompt | None, context: PlanContext | None = None
    ) -> PrunePlan:
        from mlbcli.selection.ops.dycoke import dycoke_plan

        if not self._prunes():
            return keep_everything()
        plan = dycoke_plan(video, self.keep, self.params, self.variant or "paper", self.decode_policy())
        return self.position_policy(plan, context)

    def decode_policy(self) -> DecodePolicy | None:
        """Stage 2 (`dycoke_kv`): the per-step KV policy of `ops.dycoke_kv` (official: the code's span)."""
        from mlbcli.selection.ops.dycoke_kv import DyCokeKV

        p = self.params
        if not p["dycoke_kv"]:
            return None
        return DyCokeKV(
            p["dycoke_kv_layer"],
            p["dycoke_kv_ratio"],
            p["dycoke_kv_threshold"],
            last_key_visible=self.variant == "official",
        )

    def nominal_schedule(self, num_visual: int, num_frames: int = 1) -> dict[int, int]:
        """The count a run keeps (`dycoke_frame_counts`), assuming every frame has num_visual / T tokens."""
        from mlbcli.selection.ops.dycoke import dycoke_frame_counts

        if not self._prunes():
            return {}
        N = num_visual // max(1, num_frames)
        p = self.params
        _, counts, _ = dycoke_frame_counts(
            num_frames, N, self.keep, p["merge_window"], p["merge_ratio"], self.variant or "paper"
        )
        return {0: sum(counts)}
