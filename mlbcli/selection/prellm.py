"""The common frame of the published video baselines (EVS, VidCom2, FastVID, HoliTom, PruneVid).

Each of them is first of all a pre-LLM pruner (layer 0, `LayerKeep` with keep and, for the merging
ones, replace); PruneVid and HoliTom add an in-LLM step. They take no debiasers, read their own
hyperparameters from the registry (`params.HYPERPARAMETERS`, one name prefix per method), and return
an empty plan at --keep 1.0 (output identical to `--method none`).
"""

from __future__ import annotations

from typing import Any

import torch

from mlbcli.errors import UsageError
from mlbcli.selection.base import Method, MethodOptions
from mlbcli.selection.params import resolve_params


class VideoBaseline(Method):
    """A published video token-reduction method re-implemented on our hooks."""

    prune_point = "input"

    def __init__(self, options: MethodOptions | None = None):
        super().__init__(options)
        self.params()  # UsageError at construction, before any work

    def params(self) -> dict[str, Any]:
        if self.options.debias is not None and tuple(d.strip() for d in self.options.debias) not in (
            (),
            ("none",),
        ):
            raise UsageError(
                f"--method {self.name} is a published method with its own selection rule and takes no "
                f"debiasers; use fastv/adatp/mlb with --debias to combine debiasers"
            )
        return resolve_params(self.options.params, (self.name,))


def layer0_features(hidden: torch.Tensor, visual_slots: torch.Tensor, T: int, N: int) -> torch.Tensor:
    """[T, N, D] input embeddings of the visual block (`LayerContext.hidden` at layer 0)."""
    return hidden[0, visual_slots].view(T, N, -1)


def keep_note(requested: float, kept: int, total: int, why: str) -> str | None:
    """A one-line reason when the realised keep differs from the request by more than one token."""
    if abs(kept - requested * total) < 1.0:
        return None
    return f"kept {kept}/{total} = {kept / total:.4f} vs --keep {requested:g}: {why}"
