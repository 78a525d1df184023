"""The common frame of the published video baselines (EVS, VidCom2, FastVID, HoliTom, PruneVid).

Each of them is first of all a pre-LLM pruner (layer 0, `LayerKeep` with keep and, for the merging
ones, replace); PruneVid and HoliTom add an in-LLM step. They take --keep (the budget,
token_budget(T*N, keep) visual tokens into the last layer, checked per row by the runner's
`keep_note`) and --positions (original by default, as every one of them keeps or recomputes the
original positions on the video LLMs they ship for), read their own hyperparameters from the registry
(`params.HYPERPARAMETERS`, one name prefix per method), and return an empty plan at --keep 1.0 (the
output is then identical to `--method none`).
"""

from __future__ import annotations

from typing import Any

import torch

from mlbcli.selection.base import Method, MethodOptions
from mlbcli.selection.params import resolve_params


class VideoBaseline(Method):
    """A published video token-reduction method re-implemented on our hooks."""

    prune_point = "input"
    options_used = frozenset({"keep", "positions"})

    def __init__(self, options: MethodOptions | None = None):
        super().__init__(options)
        self.params()  # UsageError at construction, before any work

    def params(self) -> dict[str, Any]:
        return resolve_params(self.options.params, (self.name,))


def layer0_features(hidden: torch.Tensor, visual_slots: torch.Tensor, T: int, N: int) -> torch.Tensor:
    """[T, N, D] input embeddings of the visual block (`LayerContext.hidden` at layer 0)."""
    return hidden[0, visual_slots].view(T, N, -1)


def missed(kept: int, target: int, num_frames: int, why: str) -> str | None:
    """`why` when `kept` misses `target` by more than the contract's rounding (half a token per frame,
    `selection.base.keep_note`), for the step's `keep_note` diagnostics; else None."""
    return why if 2 * abs(kept - target) > max(1, num_frames) else None
