"""The contract between token-selection methods and the engine: keep schedules and what pruners see.

A method returns a `PrunePlan` (which pruner runs before which decoder layer, and an optional
per-step KV policy for decoding); the engine (`mlbcli.engine.prefill` / `decode`) runs it. This module
holds data only, so methods depend on it and never on the engine's loop, and the engine, one layer up,
imports it from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class LayerContext:
    """What a pruner sees of its row before decoder layer `layer` (0 = before the LLM)."""

    layer: int
    hidden: torch.Tensor  # [1, L, D] hidden states entering the layer (input embeddings at layer 0)
    visual_slots: torch.Tensor  # [n] positions in the current sequence of the prunable visual tokens
    # [n] their flat ids t * N + i in the original video: ascending, except after a step that fed them
    # in its own order (`LayerKeep.entry_ids`)
    visual_ids: torch.Tensor
    scores: torch.Tensor | None  # [n] attention the query rows give them at layer-1 (mean over heads, rows)


@dataclass
class LayerKeep:
    """A pruner's decision. `keep` indexes `LayerContext.visual_slots`; order is always preserved."""

    keep: torch.Tensor  # [k] ascending indices into visual_slots
    replace: torch.Tensor | None = None  # [k, D] new states for the kept tokens (token merging / pooling)
    append: torch.Tensor | None = None  # [m, D] new tokens right after the visual block (layer 0 only)
    info: dict[str, Any] = field(default_factory=dict)  # method diagnostics (segments, budgets...)
    # [k] visual ids in the order the method feeds them to the LLM, when that differs from the slots'
    # ascending order (official peers that concatenate in their own order write the states of this
    # order into the kept slots via `replace`); the engine then relabels the kept slots with these ids
    # and moves each one's position along with it (`engine.rows.apply_keep`). None: each kept slot
    # holds its own token.
    entry_ids: torch.Tensor | None = None
    # [n] for each visual token entering this step, the index in `keep` of the kept token whose new
    # state took it in (token merging / pooling), -1 where it was simply dropped; None: no merging.
    # Only where the pruned tokens went is read (`kept_tokens.merged_into`, what `mlb report` draws).
    merged_into: torch.Tensor | None = None


LayerPruner = Callable[[LayerContext], LayerKeep]


@dataclass
class DecodeContext:
    """What a decode-time KV policy sees of its row at one decode step (one generated token's forward)."""

    step: int  # 0 = the forward of the first generated token
    # [n] visual ids cached at layer `policy.layer - 1` (at `policy.layer` when no attention is needed)
    visual_ids: torch.Tensor
    # [n] attention the step's token gives them at layer `policy.layer - 1` (fp32, mean over heads; a
    # softmax over every key the token sees there); None when the policy does not need it
    attention: torch.Tensor | None
    kept_ids: torch.Tensor  # [k] visual ids alive after the prefill's last pruning step


class DecodePolicy:
    """A per-step KV policy: which cached visual tokens the decoding token may attend to.

    At every decode step, after decoder layer `layer - 1` ran (before layer 0 when `needs_attention`
    is False), `step(ctx, state)` returns the visual ids to hide from layers >= `layer` for this step
    (None: hide nothing) and the row's next state. The KV cache itself is never edited: a hidden key is
    masked, so a later step may see it again (DyCoke's dynamic pruning). Policies are stateless
    objects (one may serve several rows, e.g. questions sharing a prefix); the engine keeps one
    `state` per row, starting from `start()`. Appended tokens (summary tails) are never hidden.
    """

    layer: int = 1
    needs_attention: bool = True

    def start(self) -> Any:
        return None

    def step(self, ctx: DecodeContext, state: Any) -> tuple[torch.Tensor | None, Any]:
        raise NotImplementedError


@dataclass
class PrunePlan:
    """The keep schedule of one request: which pruner runs before which layer."""

    steps: dict[int, LayerPruner] = field(default_factory=dict)
    needs_scores: frozenset[int] = frozenset()  # layers whose pruner needs the probe of layer - 1
    query: str = "question"  # probe query rows: "question" (all question tokens) or "last"
    # Re-sequence positions after the layer-0 step (0, 1, 2, ... over the whole row), as peers that
    # concatenate the kept tokens do (official VisionZip, DyCoke). 1-D RoPE only: an M-RoPE row fails.
    contiguous_positions: bool = False
    decode_policy: DecodePolicy | None = None  # per-step KV policy while decoding (DyCoke stage 2)
    # How the probe's [H, q, L] probabilities become one score per token: "mean" over heads and query
    # rows (FastV and most methods), or "max" over both (PruneVid's official `process_attention`).
    probe_reduce: str = "mean"

    def __post_init__(self) -> None:
        if 0 in self.needs_scores:
            raise ValueError("no attention scores exist before layer 0: use layer >= 1 for attention pruning")
        if not self.needs_scores <= set(self.steps):
            raise ValueError("needs_scores names a layer without a pruner")
        if self.probe_reduce not in ("mean", "max"):
            raise ValueError(f"probe_reduce must be 'mean' or 'max', not {self.probe_reduce!r}")
        if self.query not in ("question", "last"):
            raise ValueError(f"query must be 'question' or 'last', not {self.query!r}")
