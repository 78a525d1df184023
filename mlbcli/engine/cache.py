"""Rows that share one KV cache: the prefill's results (`PrefillResult`, `Batch`) and the cache edits
the batched loop needs (select, drop, pad and concatenate rows).

`cache.layers[l].keys` is `[B, Hkv, W_l, d]` (values alike); `key_valid[l]` `[B, W_l]` is False at
padding. A key's slot never moves once cached: extending appends, padding goes after, and selecting
rows keeps each row's slots (`PrefillResult.visual_keys` relies on it). A linear-attention layer of a
hybrid decoder (Qwen3.5) caches a fixed-size state instead (`engine.linear`): its `key_valid` is
`[B, 0]`, and row edits select or stack its states.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from mlbcli.engine.linear import concat_states, is_linear_cache, select_state
from mlbcli.engine.rows import pad_to
from mlbcli.selection.plan import DecodePolicy


@dataclass
class PrefillResult:
    """The prefill of one row: its logits, positions and token bookkeeping (statistics come from here)."""

    cache: Any  # the KV cache holding this row (shared by the rows of a batch; see `Batch`)
    logits: torch.Tensor  # [1, V] logits of the last prompt position
    position_ids: torch.Tensor  # [..., 1, L'] position ids of the row's sequence leaving the last layer
    visual_per_layer: list[int]  # visual tokens entering each decoder layer (appended ones included)
    visual_in: int  # prunable visual tokens of the prompt
    kept_ids: torch.Tensor  # [k] visual ids alive after the last pruning step
    appended: int  # tokens added by pruners (e.g. a summary tail)
    # probe layer -> [n_visual] scores by visual id (NaN where already dropped)
    scores: dict[int, torch.Tensor]
    infos: dict[int, dict[str, Any]]  # layer -> pruner diagnostics
    seconds: float = 0.0  # this row's share of the batch's wall time
    # Extra probe passes a method ran to plan this request (`PlanContext.probe`): one
    # (visual tokens, decoder layers run) pair each, charged in `flops_probe_ratio`.
    probe_passes: list[tuple[int, int]] = field(default_factory=list)
    # Per decoder layer: (key slots in that layer's cache row, visual ids) of the original visual tokens
    # cached there (slots are stable: extending, padding and row selection never move a prefix key).
    visual_keys: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    decode_policy: DecodePolicy | None = None  # the plan's decode-time KV policy
    merges: dict[int, int] = field(default_factory=dict)  # pruned visual id -> id it was merged into
    # What a sliding-window layer's decode reads are counted from (`engine.decode.step_visual_keys`): per
    # decoder layer, the row's real keys in that layer's cache row (prompt, then any extended suffix) and
    # [k_l] the key slots of its visual tokens, appended ones included; and the unpruned prompt's length
    # (suffix included) and [n] visual slots, where the unpruned model's window would fall.
    key_counts: list[int] = field(default_factory=list)
    alive_keys: list[torch.Tensor] = field(default_factory=list)
    length_in: int = 0
    visual_slots_in: torch.Tensor | None = None


@dataclass
class Batch:
    """Rows that share one KV cache: the output of `prefill_batch` / `extend_batch`, input of decoding.

    `cache.layers[l].keys` is `[B, Hkv, W_l, d]`; `key_valid[l]` `[B, W_l]` is False at padding.
    `rows[b]` is the prefill of row b; `index[b]` the caller's request index of that row.
    """

    cache: Any
    key_valid: list[torch.Tensor]
    rows: list[PrefillResult]
    index: list[int]
    text_config: Any = None  # builds empty caches of the same layer types

    def __len__(self) -> int:
        return len(self.rows)

    def select(self, rows: Sequence[int]) -> Batch:
        """A batch of the given rows (repeats allowed: one cached prefix fanned out to its questions)."""
        device = self.key_valid[0].device if self.key_valid else None
        picked = torch.tensor(list(rows), dtype=torch.long, device=device)
        cache = make_cache(self.text_config)
        for source, target in zip(self.cache.layers, cache.layers, strict=True):
            if is_linear_cache(source):
                select_state(source, target, picked)
                continue
            set_layer(target, source.keys.index_select(0, picked), source.values.index_select(0, picked))
        return Batch(
            cache=cache,
            key_valid=[valid.index_select(0, picked) for valid in self.key_valid],
            rows=[self.rows[r] for r in rows],
            index=[self.index[r] for r in rows],
            text_config=self.text_config,
        )


def make_cache(text_config: Any) -> Any:
    """An empty `DynamicCache` with the layer types of `text_config` (imported lazily: transformers).

    Two layer kinds differ from transformers' own cache, by transformers' cache contract (the config's
    `layer_types` and `kv_sharing_modes`): a sliding-window layer keeps every key (the engine masks the
    window itself, `rows.window_mask`: slots never move, as the bookkeeping here needs), and a layer that
    reuses another's KV ("reuse") holds the very cache layer object of its source, so that every edit
    of that cache (rows selected, dropped, padded) is the edit of all its readers.
    """
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    cache = DynamicCache(config=text_config)
    sources = kv_sources(text_config)
    for i, layer in enumerate(cache.layers):
        if isinstance(layer, DynamicSlidingWindowLayer):
            cache.layers[i] = DynamicLayer()
    for i, source in enumerate(sources):
        if source != i:
            cache.layers[i] = cache.layers[source]
    return cache


def kv_sources(text_config: Any) -> list[int]:
    """Per decoder layer, the layer whose KV cache it reads: itself, or for a "reuse" layer of
    `kv_sharing_modes` the "store" layer of its layer type (transformers' KV-sharing contract)."""
    modes = list(getattr(text_config, "kv_sharing_modes", None) or [])
    types = list(getattr(text_config, "layer_types", None) or [])
    count = int(getattr(text_config, "num_hidden_layers", len(modes)) or len(modes))
    sources = list(range(count))
    for i, mode in enumerate(modes):
        if mode == "reuse":
            sources[i] = next(j for j, m in enumerate(modes) if m == "store" and types[j] == types[i])
    return sources


def before_shared_kv(
    steps: dict[int, Any], needs_scores: frozenset[int], sources: Sequence[int]
) -> tuple[dict[int, Any], frozenset[int]]:
    """Where a plan's pruning steps run on a decoder whose layers share KV caches (`sources[j]`: the layer
    whose KV layer j reads; Gemma 4). A token pruned before layer K would stay in a cache written before K
    and read at or after it, so a step at such a K runs at the latest layer where no cache spans it, the
    smallest source of those readers (e.g. FlashVID's default layer 25 of Gemma 4 E2B runs at 13: layers
    15..34 read the KV of 13 and 14); it then reads the attention of the layer before its new place.
    Returns (steps, needs_scores); a moved step's diagnostics say `moved_from_layer`. Another pruner
    already at the new place is a `ValueError` (the caller's row error); the same pruner (a plan that
    runs one before every layer) is dropped, as it runs there anyway."""
    steps, scores = dict(steps), set(needs_scores)
    for layer in sorted(steps, reverse=True):
        target = layer
        while target > 0 and (
            spanning := [sources[j] for j in range(target, len(sources)) if sources[j] < target]
        ):
            target = min(spanning)
        if target == layer:
            continue
        if target in steps and callable(steps[layer]) and _origin(steps[target]) is _origin(steps[layer]):
            # One pruner planned before every layer (FrameFusion): it runs at the target anyway.
            del steps[layer]
            scores.discard(layer)
            continue
        if target in steps:
            raise ValueError(
                f"pruning before layer {layer} is impossible on this model (a layer at or after it reads the "
                f"KV cache of layer {target}); layer {target}, where it would run instead, already prunes"
            )
        step = steps.pop(layer)  # a pruner; `mlb flops` moves its nominal counts the same way
        steps[target] = _noting_move(step, layer) if callable(step) else step
        if layer in scores:
            scores.discard(layer)
            scores.add(target)
    return steps, frozenset(scores)


def _noting_move(step: Any, origin: int) -> Any:
    """`step` (a pruner: LayerContext -> LayerKeep) whose decision records the layer it was planned for."""

    def run(ctx: Any) -> Any:
        decision = step(ctx)
        return dataclasses.replace(decision, info={**decision.info, "moved_from_layer": origin})

    run.__wrapped__ = step  # type: ignore[attr-defined]
    return run


def _origin(step: Any) -> Any:
    """The pruner a (possibly moved) step runs."""
    return getattr(step, "__wrapped__", step)


def unique_layers(cache: Any) -> list[Any]:
    """The cache's layer objects, each once (layers that share a KV cache hold one object)."""
    seen: dict[int, Any] = {}
    for layer in cache.layers:
        seen.setdefault(id(layer), layer)
    return list(seen.values())


def set_layer(layer: Any, keys: torch.Tensor, values: torch.Tensor) -> None:
    """Replace the KV of one cache layer (rows selected or padded). A DynamicLayer exposes them as
    plain attributes; it is initialised lazily by its first `update`, which we reproduce here."""
    if not getattr(layer, "is_initialized", True) and hasattr(layer, "lazy_initialization"):
        layer.lazy_initialization(keys, values)
    layer.keys, layer.values = keys, values
    if hasattr(layer, "is_initialized"):
        layer.is_initialized = True


def drop_rows(cache: Any, key_valid: list[torch.Tensor], keep: torch.Tensor) -> list[torch.Tensor]:
    """Keep only batch rows `keep` [b'] in the cache (in place) and in `key_valid` (returned)."""
    for layer in unique_layers(cache):  # a shared cache layer is edited once
        if is_linear_cache(layer):
            select_state(layer, layer, keep)
        elif getattr(layer, "keys", None) is not None and layer.keys.numel():
            layer.keys = layer.keys.index_select(0, keep)
            layer.values = layer.values.index_select(0, keep)
    return [valid.index_select(0, keep) for valid in key_valid]


def cache_lengths(cache: Any) -> list[int]:
    """Cached tokens per decoder layer (0 for a linear-attention layer: a state, no keys)."""
    return [0 if is_linear_cache(layer) else int(layer.keys.shape[-2]) for layer in cache.layers]


def one_row_batch(state: PrefillResult, text_config: Any) -> Batch:
    """The batch of one prefilled row whose cache holds only that row (no padding anywhere)."""
    valid = [
        torch.ones(1, length, dtype=torch.bool, device=state.logits.device)
        for length in cache_lengths(state.cache)
    ]
    return Batch(state.cache, valid, [state], [0], text_config)


def concat_batches(batches: Sequence[Batch]) -> Batch:
    """One batch of the rows of `batches` (caches padded to the widest per layer), to decode together."""
    nonempty = [batch for batch in batches if len(batch)]
    if len(nonempty) <= 1:
        return nonempty[0] if nonempty else batches[0]
    batches = nonempty
    cache = make_cache(batches[0].text_config)
    key_valid = []
    for i, target in enumerate(cache.layers):
        if is_linear_cache(target):
            concat_states([batch.cache.layers[i] for batch in batches], target)
            key_valid.append(torch.cat([batch.key_valid[i] for batch in batches]))
            continue
        width = max(int(batch.cache.layers[i].keys.shape[-2]) for batch in batches)
        keys = torch.cat([pad_to(batch.cache.layers[i].keys, width, -2) for batch in batches])
        values = torch.cat([pad_to(batch.cache.layers[i].values, width, -2) for batch in batches])
        set_layer(target, keys, values)
        key_valid.append(torch.cat([pad_to(batch.key_valid[i], width, 1) for batch in batches]))
    rows = [dataclasses.replace(row, cache=cache) for batch in batches for row in batch.rows]
    index = [index for batch in batches for index in batch.index]
    return Batch(cache, key_valid, rows, index, batches[0].text_config)
