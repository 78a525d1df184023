"""Batched prefill + greedy decode over the decoder layers, with a keep schedule per row.

Why our own loop instead of `model.generate()`: token pruning inside the LLM (FastV-style, at layer K)
changes the sequence length between layers, differently for every row of a batch, which stock
`generate` cannot express without copied modelling code or class patches. We call the *stock* decoder
layers one by one (the same modules, weights and SDPA kernels that `generate` uses), so with an empty
schedule and one row the result is identical, token for token and logit for logit, to `generate()`
(tests/test_engine.py), and a batch gives every row the tokens it gets alone (tests/test_batching.py).

Vocabulary:
- row: one request (a video x prompt) of the batch; rows never see each other.
- sequence: the tokens of one row entering a layer, with their position ids.
- visual ids: the flat `t * N + i` numbering of the prunable frame tokens (see `VideoTokens`).
- keep schedule (`PrunePlan.steps`): `layer -> pruner`, one plan per row. The pruner runs *before* that
  layer; layer 0 means pruning before the LLM, layer K means FastV-style pruning after K full layers.
  A pruner that needs attention scores gets them from a probe on layer K-1 (see `probe.py`).
- Surviving tokens keep their ORIGINAL position ids, so RoPE still encodes where they were (families
  that re-sequence instead say so through `ModelAdapter.positions_after_input_pruning`).

How a batch runs. Rows are packed right-padded into `[B, Lmax, D]`: every real token of a row comes
before its padding, so SDPA's own causal mask (`attention_mask=None`, the kernel `generate` uses)
already keeps real tokens from seeing padding, and a row's numbers are those of the row alone. Pruners
see one row at a time (`LayerContext` is per row, `[1, L, D]`); after a pruning step the rows are
repacked to the new longest row. The KV cache holds `[B, H, W_l, d]` per layer `l`, with
`key_valid[l]` `[B, W_l]` marking the real keys; decoding and `extend` mask the padding explicitly.
A row that fails (a pruner error, a context overflow) is taken out of the batch and reported as its
own error; the other rows go on. Finished rows leave the decode batch, so they stop costing.

This module is the loop's public face (`from mlbcli.engine import batch as engine`); the code lives in
`rows.py` (a row's sequence, packing), `cache.py` (`Batch`, `PrefillResult`, KV edits), `forward.py`
(calls into the stock layers), `prefill.py` (`prefill_batch`, `extend_batch`) and `decode.py`
(`greedy_decode_batch`). The method-facing types come from `plan.py`.
"""

from mlbcli.engine.cache import Batch, PrefillResult, cache_lengths, concat_batches
from mlbcli.engine.decode import Generation, greedy_decode, greedy_decode_batch
from mlbcli.engine.prefill import extend, extend_batch, prefill, prefill_batch
from mlbcli.engine.rows import contiguous_positions
from mlbcli.models.inputs import ModelInputs
from mlbcli.selection.plan import DecodeContext, DecodePolicy, LayerContext, LayerKeep, LayerPruner, PrunePlan

__all__ = [
    "Batch",
    "DecodeContext",
    "DecodePolicy",
    "Generation",
    "LayerContext",
    "LayerKeep",
    "LayerPruner",
    "ModelInputs",
    "PrefillResult",
    "PrunePlan",
    "cache_lengths",
    "concat_batches",
    "contiguous_positions",
    "extend",
    "extend_batch",
    "greedy_decode",
    "greedy_decode_batch",
    "prefill",
    "prefill_batch",
]
