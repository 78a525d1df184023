"""Hybrid decoders: layers whose token mixer is a recurrent state, not attention (Qwen3.5's Gated DeltaNet).

The adapter says what each decoder layer is (`ModelAdapter.layer_kinds`: "full" attention with a KV
cache, or "linear" attention with a fixed-size state); this module is everything the engine does
differently for the linear ones:

- The cache. transformers' `DynamicCache(config=...)` already builds one `LinearAttentionLayer` per
  linear layer, holding `conv_states[0]` [B, C, k] (the last k inputs of the causal depthwise conv,
  C = 2 * key_dim + value_dim) and `recurrent_states[0]` [B, Hv, dk, dv] (the delta-rule state) beside
  the `DynamicLayer` KV of the full layers. A linear layer has no keys, so its `key_valid` row is
  [B, 0] and it never takes a mask. Selecting, dropping and concatenating rows edits these states the
  way `cache.py` edits keys (`select_state`, `concat_states`).
- Padding. The engine packs rows right-padded; a full-attention layer never lets a real token see
  the padding after it, but a recurrent layer carries its state THROUGH the padding (the gated decay
  and the conv window run over it), so the state a short row would decode from is not its own. (The
  stock model pads on the left and zeroes padded inputs, which keeps the state at zero; it also moves
  the chunk boundaries of the chunked delta rule, so a padded row rounds differently from the same row
  alone.) `run_linear_layer` therefore runs a padded batch through a linear layer one row at a time,
  each on its real tokens only, with its own state: the very computation of that row alone, so batched
  equals batch 1. An unpadded batch runs as one call, as `generate` does.
- Pruning needs nothing here: a pruned token simply is not in the sequence the next layer (of either
  kind) sees, and the state a linear layer builds in prefill is the state over the tokens it saw.
- Attention exists only at full layers: `probe_layer(kinds, layer)` is the full layer an attention
  probe at `layer` reads (the nearest at or before it; the first after it when none comes before).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from mlbcli.engine.forward import run_layer

if TYPE_CHECKING:
    from mlbcli.models.contract import Adapter

FULL = "full"
LINEAR = "linear"


def kinds_of(adapter: Adapter) -> tuple[str, ...]:
    """Per decoder layer, "full" or "linear" (`ModelAdapter.layer_kinds`)."""
    return tuple(adapter.layer_kinds(adapter.text_config))


def probe_layer(kinds: Sequence[str], layer: int) -> int:
    """The full-attention layer an attention probe meant for `layer` reads: `layer` itself when it is
    one, else the nearest full layer before it, else (none before) the first full layer after it."""
    before = [i for i in range(min(layer, len(kinds) - 1), -1, -1) if kinds[i] != LINEAR]
    if before:
        return before[0]
    after = [i for i in range(layer, len(kinds)) if kinds[i] != LINEAR]
    if not after:
        raise ValueError("the model has no attention layer: attention scores cannot be read")
    return after[0]


def is_linear_cache(layer: Any) -> bool:
    """Whether a cache layer holds a recurrent state (`LinearAttentionLayer`) instead of keys."""
    return hasattr(layer, "recurrent_states") and not hasattr(layer, "keys")


def _states(layer: Any) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(conv [B, C, k], recurrent [B, Hv, dk, dv]) of a linear cache layer; None before its first use."""
    if not layer.has_previous_state[0]:
        return None, None
    return layer.conv_states[0], layer.recurrent_states[0]


def set_state(layer: Any, conv: torch.Tensor | None, recurrent: torch.Tensor | None) -> None:
    """Replace a linear cache layer's states (rows selected, stacked or dropped). The layer is then
    initialised as its first `update_conv_state` / `update_recurrent_state` would leave it."""
    if conv is None or recurrent is None:
        return
    layer.conv_states[0], layer.recurrent_states[0] = conv, recurrent
    layer.conv_kernel_size[0] = int(conv.shape[-1])
    layer.dtype, layer.device = conv.dtype, conv.device
    layer.is_conv_states_initialized[0] = True
    layer.is_recurrent_states_initialized[0] = True
    layer.has_previous_state[0] = True


def select_state(source: Any, target: Any, rows: torch.Tensor) -> None:
    """`target`'s states = `source`'s rows `rows` [b'] (copies: a later in-place update of one cache
    never reaches the other)."""
    conv, recurrent = _states(source)
    if conv is not None and recurrent is not None:
        rows = rows.to(conv.device)
        set_state(target, conv.index_select(0, rows), recurrent.index_select(0, rows))


def concat_states(sources: Sequence[Any], target: Any) -> None:
    """`target`'s states = the rows of `sources`, in order (states have no length: nothing to pad)."""
    pairs = [_states(layer) for layer in sources]
    if any(conv is None for conv, _ in pairs):
        return
    set_state(target, torch.cat([c for c, _ in pairs]), torch.cat([r for _, r in pairs]))  # type: ignore[misc]


def run_linear_layer(
    layer: torch.nn.Module,
    index: int,
    hidden: torch.Tensor,
    positions: torch.Tensor,
    cos_sin: Any,
    cache: Any,
    lengths: torch.Tensor,
    text_config: Any,
) -> torch.Tensor:
    """`hidden` [B, L, D] (row b real up to `lengths[b]`, padding after) through linear decoder layer
    `index`, its states continued (or started) in `cache`. Returns [B, L, D]; padding comes out as 0.

    Unpadded: one call, exactly as the stock model. Padded: row by row, each row's real tokens with
    that row's own state in a scratch cache, then the rows' states stacked back into `cache`.
    """
    if hidden.shape[0] == 1 or bool((lengths == hidden.shape[1]).all()):
        return run_layer(layer, hidden, positions, cos_sin, cache, None)
    from transformers import DynamicCache

    out = torch.zeros_like(hidden)
    shared = cache.layers[index]
    scratches = []
    for b, length in enumerate(lengths.tolist()):
        scratch = DynamicCache(config=text_config)  # layers are empty until used: cheap
        select_state(shared, scratch.layers[index], torch.tensor([b]))
        rows = (t[..., b : b + 1, :length, :] for t in cos_sin)  # cos, sin [B, L, d]: batch axis -3
        out[b : b + 1, :length] = run_layer(
            layer, hidden[b : b + 1, :length], positions[..., b : b + 1, :length], tuple(rows), scratch, None
        )
        scratches.append(scratch.layers[index])
    concat_states(scratches, shared)
    return out


def resolve_reads(
    steps: dict[int, Any], needs_scores: frozenset[int], kinds: Sequence[str]
) -> tuple[dict[int, Any], dict[int, int]]:
    """Where a plan's attention pruners read and run on a decoder of `kinds`.

    Returns (steps, reads): `reads[K]` is the layer whose attention the pruner of layer K reads
    (`probe_layer(kinds, K - 1)`: K - 1 itself on an all-attention decoder). A pruner whose layer K - 1
    has no full-attention layer at or before it (FastV's K = 2 on Qwen3.5, whose first is layer 3) runs
    right after the first full layer instead (K' = that layer + 1): it cannot read attention that no
    layer before K computes. The row's `tokens_per_layer` shows where it ran, `attention_layers` what it read.
    Where the same pruner already runs at K' (a plan with one pruner before every layer, FrameFusion),
    the step at K stays where it is without scores (`LayerContext.scores` None) and the method defers
    what needs them; two different pruners meeting there are an error.
    """
    steps = dict(steps)
    reads: dict[int, int] = {}
    for layer in sorted(needs_scores):
        read = probe_layer(kinds, layer - 1)
        if read >= layer:  # no attention before this pruner: it runs after the first layer that has some
            moved = read + 1
            if moved in steps and steps[moved] is steps[layer]:  # one pruner before every layer
                continue  # (FrameFusion): this step runs without scores and defers what needs them
            if moved in steps:
                raise ValueError(
                    f"the pruner of layer {layer} needs attention, and no layer before {layer} has any "
                    f"(layers 0..{layer - 1} are linear attention); layer {moved} already prunes"
                )
            steps[moved] = steps.pop(layer)
            layer = moved
        reads[layer] = read
    return steps, reads
