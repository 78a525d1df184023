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
    """DyCoke temporal token merging (TTM), prefill only, before the LLM (spec §5.4).

    [C] windows of 4 frames; the first frame of a window is kept whole; the other frames keep the
        tokens least similar (same position) to a reference frame.
    [R] --keep is the budget: token_budget(T*N, keep) tokens in all, the window heads whole and the
        rest split evenly over the other frames. Below the heads' share (1/window of the tokens;
        25% with 4-frame windows, DyCoke's minimum) the heads alone are kept and the row's `keep_note`
        says so. `merge_ratio` instead sets DyCoke's K directly (floor((1-K)N) per compared frame;
        then --keep does not apply).
    Variants (`--variant`, `dycoke_references`):
    - paper (default): frames 1 and 2 vs frame 0, frame 3 vs frame 2; the trailing partial window
      likewise; original position ids.
    - official (`dycole_ttm` @26dc6f4): frame 1 ranked by the previous pair's similarity (wrapping to
      the last pair), frame 3 by the pair (0, 1), frame 2 of the last window kept whole; tokens in
      the code's order (ascending similarity) and positions re-sequenced (it concatenates).
    Stage 2, dynamic KV-cache pruning while decoding, is on by default (`dycoke_kv`, --no-dycoke-kv):
    see `mlbcli.selection.ops.dycoke_kv`; it shows in the `decode_kv_ratio` column, not in `flops_ratio`.
    """

    @dataclass(frozen=True)
    class Params:
        merge_window: int = param(4, "frames per temporal-merging window (DyCoke TTM uses 4).", 2)
        merge_ratio: float | None = param(
            None,
            "DyCoke's pruning ratio K in [0, 1]: every compared frame keeps floor((1-K)N) tokens (then "
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
            "P, the share of the visual KV entries hidden at each decode step (DyCoke's README: 0.7).",
            0.0,
            1.0,
        )
        dycoke_kv_threshold: float = param(
            0.9,
            "a decode step re-chooses the kept video keys when the cosine between its video attention "
            "and the previous step's is < this (DyCoke: 0.9).",
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
        from mlbcli.selection.ops.peers import dycoke_plan

        if not self._prunes():
            return keep_everything()
        plan = dycoke_plan(video, self.keep, self.params, self.variant or "paper", self.decode_policy())
        return self.position_policy(plan, context)

    def decode_policy(self) -> DecodePolicy | None:
        """Stage 2 (`dycoke_kv`): the per-step KV policy of `ops.dycoke_kv`."""
        from mlbcli.selection.ops.dycoke_kv import DyCokeKV

        p = self.params
        if not p["dycoke_kv"]:
            return None
        return DyCokeKV(p["dycoke_kv_layer"], p["dycoke_kv_ratio"], p["dycoke_kv_threshold"])

    def nominal_schedule(self, num_visual: int, num_frames: int = 1) -> dict[int, int]:
        """The count a run keeps (`dycoke_frame_counts`), assuming every frame has num_visual / T tokens."""
        from mlbcli.selection.ops.peers import dycoke_frame_counts

        if not self._prunes():
            return {}
        N = num_visual // max(1, num_frames)
        p = self.params
        _, counts, _ = dycoke_frame_counts(
            num_frames, N, self.keep, p["merge_window"], p["merge_ratio"], self.variant or "paper"
        )
        return {0: sum(counts)}
