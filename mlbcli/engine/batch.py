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
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from mlbcli.engine.plan import (
    DecodeContext,
    DecodePolicy,
    LayerContext,
    LayerKeep,
    ModelInputs,
    PrunePlan,
)
from mlbcli.engine.probe import attention_probe

if TYPE_CHECKING:
    from mlbcli.models.base import ModelAdapter


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
        cache = _make_cache(self.text_config)
        for source, target in zip(self.cache.layers, cache.layers, strict=True):
            _set_layer(target, source.keys.index_select(0, picked), source.values.index_select(0, picked))
        return Batch(
            cache=cache,
            key_valid=[valid.index_select(0, picked) for valid in self.key_valid],
            rows=[self.rows[r] for r in rows],
            index=[self.index[r] for r in rows],
            text_config=self.text_config,
        )


@dataclass
class _Sequence:
    """Bookkeeping of one row's sequence: which slots are visual, appended, or query rows."""

    hidden: torch.Tensor  # [1, L, D]
    position_ids: torch.Tensor  # [..., 1, L] ([1, L], or [3, 1, L] for M-RoPE)
    visual_slots: torch.Tensor  # [n]
    visual_ids: torch.Tensor  # [n]
    appended_slots: torch.Tensor  # [m]
    query_slots: torch.Tensor  # [q]

    @property
    def length(self) -> int:
        return int(self.hidden.shape[1])

    @property
    def alive(self) -> int:
        """Visual tokens in the sequence: original survivors plus appended ones."""
        return int(self.visual_slots.numel() + self.appended_slots.numel())

    def select(self, order: torch.Tensor) -> _Sequence:
        """Keep the slots in `order` (ascending) and renumber every slot index."""
        length = self.hidden.shape[1]
        new_index = torch.full((length,), -1, dtype=torch.long, device=order.device)
        new_index[order] = torch.arange(order.numel(), device=order.device)

        def remap(slots: torch.Tensor) -> torch.Tensor:
            mapped = new_index[slots]
            return mapped[mapped >= 0]

        visual_alive = new_index[self.visual_slots] >= 0
        return _Sequence(
            hidden=self.hidden[:, order],
            position_ids=self.position_ids[..., order],
            visual_slots=remap(self.visual_slots),
            visual_ids=self.visual_ids[visual_alive],
            appended_slots=remap(self.appended_slots),
            query_slots=remap(self.query_slots),
        )


def _apply_keep(seq: _Sequence, decision: LayerKeep, layer: int) -> _Sequence:
    keep = decision.keep.to(seq.visual_slots.device)
    n = seq.visual_slots.numel()
    if keep.numel() == n and decision.replace is None and decision.append is None:
        return seq  # keeps everything as it is (e.g. a diagnostics-only step): no copy
    if keep.numel() and (keep.min() < 0 or keep.max() >= n or not bool((keep[1:] > keep[:-1]).all())):
        raise ValueError("pruner must return unique ascending indices into visual_slots")
    hidden = seq.hidden
    if decision.replace is not None:
        if decision.replace.shape[0] != keep.numel():
            raise ValueError("LayerKeep.replace must have one row per kept token")
        hidden = hidden.clone()
        hidden[0, seq.visual_slots[keep]] = decision.replace.to(hidden.dtype)
    dropped = seq.visual_slots[~torch.isin(torch.arange(n, device=keep.device), keep)]  # [n - k]
    alive = torch.ones(seq.hidden.shape[1], dtype=torch.bool, device=hidden.device)  # [L]
    alive[dropped] = False
    seq = dataclasses.replace(seq, hidden=hidden).select(alive.nonzero().squeeze(1))
    if decision.append is not None and decision.append.shape[0]:
        if layer != 0:
            raise ValueError(
                "tokens can only be appended before the LLM (layer 0): earlier KV would miss them"
            )
        seq = _insert_after_visual(seq, decision.append)
    return seq


def contiguous_positions(position_ids: torch.Tensor) -> torch.Tensor:
    """[1, L] positions -> 0..L-1 (`PrunePlan.contiguous_positions`); M-RoPE [3, 1, L] is refused:
    its three axes have no single "next" position to re-sequence to."""
    if position_ids.dim() != 2:
        raise ValueError("contiguous positions are defined for 1-D RoPE only (this family uses M-RoPE)")
    return torch.arange(position_ids.shape[-1], device=position_ids.device)[None]


def _insert_after_visual(seq: _Sequence, extra: torch.Tensor) -> _Sequence:
    """Insert `extra` [m, D] right after the last visual slot; later tokens' positions shift by m."""
    m = extra.shape[0]
    at = int(seq.visual_slots.max()) + 1 if seq.visual_slots.numel() else int(seq.query_slots.min())
    first_pos = seq.position_ids[..., at : at + 1]  # position the inserted block starts at
    hidden = torch.cat([seq.hidden[:, :at], extra[None].to(seq.hidden.dtype), seq.hidden[:, at:]], dim=1)
    new_pos = first_pos + torch.arange(m, device=first_pos.device)
    pos = torch.cat([seq.position_ids[..., :at], new_pos, seq.position_ids[..., at:] + m], dim=-1)

    def shift(slots: torch.Tensor) -> torch.Tensor:
        return torch.where(slots >= at, slots + m, slots)

    appended = torch.arange(at, at + m, device=seq.visual_slots.device)
    return _Sequence(
        hidden,
        pos,
        shift(seq.visual_slots),
        seq.visual_ids,
        torch.cat([shift(seq.appended_slots), appended]),
        shift(seq.query_slots),
    )


# -- packing rows into one padded batch --------------------------------------------------------------


def _pad_to(tensor: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    """Right-pad `tensor` with zeros along `dim` to `length`."""
    missing = length - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor, tensor.new_zeros(shape)], dim=dim)


def _pack_rows(
    seqs: Sequence[_Sequence],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded `[B, Lmax, D]` hidden, `[..., B, Lmax]` positions and `[B]` lengths of `seqs`.

    Padding positions are 0: their rotary values are never seen by a real token (see module doc).
    """
    longest = max(seq.length for seq in seqs)
    if len(seqs) == 1:  # nothing to pad: the very tensors of the row (batch-1 parity with generate)
        seq = seqs[0]
        return seq.hidden, seq.position_ids, torch.tensor([seq.length], device=seq.hidden.device)
    hidden = torch.cat([_pad_to(seq.hidden, longest, 1) for seq in seqs], dim=0)
    positions = torch.cat([_pad_to(seq.position_ids, longest, -1) for seq in seqs], dim=-2)
    lengths = torch.tensor([seq.length for seq in seqs], device=hidden.device)
    return hidden, positions, lengths


def _valid(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """[B, width] True where a slot holds a real token of its row."""
    return torch.arange(width, device=lengths.device)[None, :] < lengths[:, None]


def _make_cache(text_config: Any) -> Any:
    from transformers import DynamicCache

    return DynamicCache(config=text_config)


def _set_layer(layer: Any, keys: torch.Tensor, values: torch.Tensor) -> None:
    """Replace the KV of one cache layer (rows selected or padded). A DynamicLayer exposes them as
    plain attributes; it is initialised lazily by its first `update`, which we reproduce here."""
    if not getattr(layer, "is_initialized", True) and hasattr(layer, "lazy_initialization"):
        layer.lazy_initialization(keys, values)
    layer.keys, layer.values = keys, values
    if hasattr(layer, "is_initialized"):
        layer.is_initialized = True


def _drop_rows(cache: Any, key_valid: list[torch.Tensor], keep: torch.Tensor) -> list[torch.Tensor]:
    """Keep only batch rows `keep` [b'] in the cache (in place) and in `key_valid` (returned)."""
    for layer in cache.layers:
        if getattr(layer, "keys", None) is not None and layer.keys.numel():
            layer.keys = layer.keys.index_select(0, keep)
            layer.values = layer.values.index_select(0, keep)
    return [valid.index_select(0, keep) for valid in key_valid]


def _run_layer(
    layer: torch.nn.Module,
    hidden: torch.Tensor,
    positions: torch.Tensor,
    cos_sin: Any,
    cache: Any,
    mask: torch.Tensor | None,
) -> torch.Tensor:
    # attention_mask=None: SDPA applies its own causal mask (prefill; right padding is never seen by a
    # real token) and none for a 1-token decode step without padding. Otherwise `mask` [B, 1, q, k] bool.
    return layer(
        hidden,
        attention_mask=mask,
        position_embeddings=cos_sin,
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
    )


def _last_logits(adapter: ModelAdapter, hidden: torch.Tensor) -> torch.Tensor:
    """[B, V] float logits of `hidden` [B, D] (final norm, then the LM head)."""
    return adapter.lm_head(adapter.decoder.norm(hidden)).float()


def _row_logits(adapter: ModelAdapter, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """[B, V] logits of each row's last real position of `hidden` [B, L, D]."""
    if hidden.shape[0] == 1:
        return _last_logits(adapter, hidden[:, int(lengths[0]) - 1])
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return _last_logits(adapter, hidden[rows, lengths.to(hidden.device) - 1])


# -- prefill -------------------------------------------------------------------------------------------


@dataclass
class _Row:
    """Everything the batched prefill tracks for one row."""

    index: int  # the caller's request index
    plan: PrunePlan
    reserve: int  # tokens the row will generate after the prompt (context check)
    seq: _Sequence
    visual_in: int
    residuals: dict[int, torch.Tensor] = field(default_factory=dict)  # see ModelInputs.visual_residuals
    visual_per_layer: list[int] = field(default_factory=list)
    scores: dict[int, torch.Tensor] = field(default_factory=dict)
    infos: dict[int, dict[str, Any]] = field(default_factory=dict)
    pending: torch.Tensor | None = None  # [n] probe scores for the next layer's pruner
    visual_keys: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)


@torch.inference_mode()
def prefill_batch(
    adapter: ModelAdapter,
    inputs: Sequence[ModelInputs],
    plans: Sequence[PrunePlan | None],
    *,
    reserve_tokens: Sequence[int] | int = 0,
    stop_after_pruning: bool = False,
    stop_before_layer: int | None = None,
) -> tuple[Batch, dict[int, Exception]]:
    """Run the decoder over every row of `inputs`, applying each row's plan between layers.

    Returns the batch of rows that succeeded and `{request index: error}` for rows that failed (a
    pruner error, or a sequence that cannot fit the context with its `reserve_tokens`).
    `stop_after_pruning`: layers after the last pruning step of any row are skipped (token statistics
    only: `compress`), and logits/cache are not usable. `stop_before_layer=K` runs only decoder layers
    0..K-1 (after the pruning step of layer K, if any): an attention probe pass (`PlanContext.probe`).
    """
    started = time.perf_counter()
    reserves = [reserve_tokens] * len(inputs) if isinstance(reserve_tokens, int) else list(reserve_tokens)
    layers = list(adapter.layers)
    rows: list[_Row] = []
    errors: dict[int, Exception] = {}
    for index, (row_inputs, plan) in enumerate(zip(inputs, plans, strict=True)):
        plan = plan or PrunePlan()
        last_step = max(plan.steps, default=-1)
        if last_step >= len(layers):
            errors[index] = ValueError(
                f"pruning layer {last_step} does not exist: the model has {len(layers)} layers"
            )
            continue
        policy = plan.decode_policy
        if policy is not None and not (int(policy.needs_attention) <= policy.layer < len(layers)):
            errors[index] = ValueError(
                f"decode-time KV pruning from layer {policy.layer} is impossible: the model has "
                f"{len(layers)} decoder layers (choose 1..{len(layers) - 1})"
            )
            continue
        device = row_inputs.embeds.device
        query = row_inputs.query_slots
        if plan.query == "last":
            query = torch.tensor([row_inputs.length - 1])
        n_in = int(row_inputs.visual_slots.numel())
        seq = _Sequence(
            hidden=row_inputs.embeds,
            position_ids=row_inputs.position_ids.to(device),
            visual_slots=row_inputs.visual_slots.to(device),
            visual_ids=torch.arange(n_in, device=device),
            appended_slots=torch.zeros(0, dtype=torch.long, device=device),
            query_slots=query.to(device),
        )
        rows.append(_Row(index, plan, reserves[index], seq, n_in, dict(row_inputs.visual_residuals)))

    cache = _make_cache(adapter.text_config)
    key_valid: list[torch.Tensor] = []
    last_step = max((max(row.plan.steps, default=-1) for row in rows), default=-1)
    hidden = positions = lengths = None  # the packed batch; None = repack from the rows
    cos_sin = None

    def fail(failed: list[int]) -> None:
        """Take rows (indices into `rows`) out of the batch, cache included."""
        nonlocal key_valid
        keep = [r for r in range(len(rows)) if r not in failed]
        if key_valid:
            device = key_valid[0].device
            key_valid = _drop_rows(cache, key_valid, torch.tensor(keep, dtype=torch.long, device=device))
        rows[:] = [rows[r] for r in keep]

    for i, layer in enumerate(layers):
        if not rows:
            break
        stepping = [r for r, row in enumerate(rows) if i in row.plan.steps]
        if stepping or i == 0:
            if hidden is not None:  # unpack: each row's real tokens, as they leave layer i-1
                for r, row in enumerate(rows):
                    row.seq.hidden = hidden[r : r + 1, : row.seq.length]
            failed: list[int] = []
            for r in stepping:
                row = rows[r]
                try:
                    ctx = LayerContext(
                        i, row.seq.hidden, row.seq.visual_slots, row.seq.visual_ids, row.pending
                    )
                    decision = row.plan.steps[i](ctx)
                    row.infos[i] = decision.info
                    row.seq = _apply_keep(row.seq, decision, i)
                except Exception as exc:
                    errors[row.index] = exc
                    failed.append(r)
            if i == 0:
                for r, row in enumerate(rows):
                    if r in failed:
                        continue
                    try:
                        row.seq.position_ids = adapter.positions_after_input_pruning(row.seq.position_ids)
                        if row.plan.contiguous_positions:
                            row.seq.position_ids = contiguous_positions(row.seq.position_ids)
                        extent = int(row.seq.position_ids.max()) + 1
                        adapter.check_context(
                            extent, row.reserve, num_visual=int(row.seq.visual_slots.numel())
                        )
                    except Exception as exc:
                        errors[row.index] = exc
                        failed.append(r)
            if failed:
                fail(sorted(set(failed)))
            if not rows:
                break
            hidden, positions, lengths = _pack_rows([row.seq for row in rows])
            cos_sin = None
        assert hidden is not None and positions is not None and lengths is not None
        if (stop_before_layer is not None and i >= stop_before_layer) or (
            stop_after_pruning and i > last_step
        ):
            for row in rows:  # the skipped layers would see as many tokens
                row.visual_per_layer.extend([row.seq.alive] * (len(layers) - i))
            break
        for row in rows:
            row.visual_per_layer.append(row.seq.alive)
            row.visual_keys.append((row.seq.visual_slots, row.seq.visual_ids))
        if cos_sin is None:  # recomputed only when the sequence changed, as the stock model does once
            cos_sin = adapter.rotary(hidden, positions)
        probing = [r for r, row in enumerate(rows) if (i + 1) in row.plan.needs_scores]
        probe_ctx = attention_probe(layer.self_attn, adapter.apply_rotary) if probing else nullcontext(None)
        with probe_ctx as probe:
            hidden = _run_layer(layer, hidden, positions, cos_sin, cache, None)
        key_valid.append(_valid(lengths, hidden.shape[1]))
        if any(i in row.residuals for row in rows):
            hidden = hidden.clone()
            for r, row in enumerate(rows):
                if i in row.residuals:  # [n, D] by visual id -> the surviving tokens' slots
                    extra = row.residuals[i].to(hidden.device, hidden.dtype)[row.seq.visual_ids]
                    hidden[r, row.seq.visual_slots] += extra
        for r, row in enumerate(rows):
            row.pending = None
            if r in probing:
                assert probe is not None
                received = probe.received(r, row.seq.query_slots, row.seq.length)  # [L_r]
                row.pending = received[row.seq.visual_slots].float()
                full = torch.full((row.visual_in,), float("nan"), device=received.device)
                full[row.seq.visual_ids] = row.pending
                row.scores[i] = full

    usable = stop_before_layer is None and (not stop_after_pruning or last_step == len(layers) - 1)
    logits = None
    if usable and rows and hidden is not None and lengths is not None:
        logits = _row_logits(adapter, hidden, lengths)  # [B, V]
    share = (time.perf_counter() - started) / max(1, len(rows) + len(errors))
    results = [
        PrefillResult(
            cache=cache,
            logits=logits[r : r + 1] if logits is not None else torch.empty(0),
            position_ids=row.seq.position_ids,
            visual_per_layer=row.visual_per_layer,
            visual_in=row.visual_in,
            kept_ids=row.seq.visual_ids,
            appended=int(row.seq.appended_slots.numel()),
            scores=row.scores,
            infos=row.infos,
            seconds=share,
            visual_keys=row.visual_keys,
            decode_policy=row.plan.decode_policy,
        )
        for r, row in enumerate(rows)
    ]
    return Batch(cache, key_valid, results, [row.index for row in rows], adapter.text_config), errors


@torch.inference_mode()
def prefill(
    adapter: ModelAdapter,
    embeds: torch.Tensor,
    position_ids: torch.Tensor,
    visual_slots: torch.Tensor,
    query_slots: torch.Tensor,
    plan: PrunePlan | None = None,
    *,
    stop_after_pruning: bool = False,
    reserve_tokens: int = 0,
    stop_before_layer: int | None = None,
) -> PrefillResult:
    """`prefill_batch` of one row: raises its error instead of returning it (see `prefill_batch`)."""
    batch, errors = prefill_batch(
        adapter,
        [ModelInputs(embeds, position_ids, visual_slots, query_slots)],
        [plan],
        reserve_tokens=reserve_tokens,
        stop_after_pruning=stop_after_pruning,
        stop_before_layer=stop_before_layer,
    )
    if errors:
        raise errors[0]
    return batch.rows[0]


# -- continuing a cached prefix ------------------------------------------------------------------------


@torch.inference_mode()
def extend_batch(
    adapter: ModelAdapter,
    batch: Batch,
    suffixes: Sequence[tuple[torch.Tensor, torch.Tensor]],
    *,
    reserve_tokens: Sequence[int] | int = 0,
) -> tuple[Batch, dict[int, Exception]]:
    """Continue every row of `batch` with its own suffix `(embeds [1, m_b, D], positions [..., 1, m_b])`.

    The shared-prefix path: a video's system prompt + visual block is prefilled once, `Batch.select`
    fans it out to its questions, and each question only runs its own tokens here. A suffix token sees
    its row's real cached tokens and the suffix causally; the mask is explicit, `[B, 1, Mmax, W + Mmax]`.
    The cache grows in place. Rows whose sequence cannot fit the context come back as errors.
    """
    started = time.perf_counter()
    reserves = [reserve_tokens] * len(batch) if isinstance(reserve_tokens, int) else list(reserve_tokens)
    errors: dict[int, Exception] = {}
    keep: list[int] = []
    for b, (row, (_, suffix_positions)) in enumerate(zip(batch.rows, suffixes, strict=True)):
        extent = int(torch.cat([row.position_ids.flatten(), suffix_positions.flatten()]).max()) + 1
        try:
            adapter.check_context(extent, reserves[b])
            keep.append(b)
        except Exception as exc:
            errors[batch.index[b]] = exc
    if len(keep) < len(batch):
        if not keep:
            return Batch(batch.cache, [], [], [], batch.text_config), errors
        batch = batch.select(keep)
        suffixes = [suffixes[b] for b in keep]
    device = suffixes[0][0].device
    seqs = [
        _Sequence(embeds, positions.to(device), *(torch.zeros(0, dtype=torch.long, device=device),) * 4)
        for embeds, positions in suffixes
    ]
    hidden, positions, lengths = _pack_rows(seqs)  # [B, M, D], [..., B, M], [B]
    m = hidden.shape[1]
    suffix_valid = _valid(lengths, m)  # [B, M]
    causal = torch.ones(m, m, dtype=torch.bool, device=device).tril()  # [M, M]
    # A padding query attends to its own row's keys too (never to nothing: no NaN rows).
    suffix_keys = causal[None] & (suffix_valid[:, None, :] | ~suffix_valid[:, :, None])  # [B, M, M]
    cos_sin = adapter.rotary(hidden, positions)
    for i, layer in enumerate(adapter.layers):
        cached = batch.key_valid[i][:, None, :].expand(-1, m, -1)  # [B, M, W]
        mask = torch.cat([cached, suffix_keys], dim=2)[:, None]  # [B, 1, M, W + M]
        hidden = layer(
            hidden,
            attention_mask=mask,
            position_embeddings=cos_sin,
            position_ids=positions,
            past_key_values=batch.cache,
            use_cache=True,
        )
        batch.key_valid[i] = torch.cat([batch.key_valid[i], suffix_valid], dim=1)
    logits = _row_logits(adapter, hidden, lengths)  # [B, V]
    share = (time.perf_counter() - started) / max(1, len(batch))
    rows = [
        dataclasses.replace(
            row,
            cache=batch.cache,
            logits=logits[b : b + 1],
            position_ids=torch.cat([row.position_ids, suffix[1].to(row.position_ids.device)], dim=-1),
            seconds=row.seconds + share,
            probe_passes=list(row.probe_passes),
        )
        for b, (row, suffix) in enumerate(zip(batch.rows, suffixes, strict=True))
    ]
    return Batch(batch.cache, batch.key_valid, rows, list(batch.index), batch.text_config), errors


@torch.inference_mode()
def extend(
    adapter: ModelAdapter,
    prefix: PrefillResult,
    embeds: torch.Tensor,
    position_ids: torch.Tensor,
    *,
    reserve_tokens: int = 0,
) -> PrefillResult:
    """`extend_batch` of one row whose prefix cache holds only that row (grows `prefix.cache`)."""
    batch, errors = extend_batch(
        adapter, _one_row_batch(adapter, prefix), [(embeds, position_ids)], reserve_tokens=reserve_tokens
    )
    if errors:
        raise errors[0]
    return batch.rows[0]


def _one_row_batch(adapter: ModelAdapter, state: PrefillResult) -> Batch:
    """The batch of one prefilled row whose cache holds only that row (no padding anywhere)."""
    valid = [
        torch.ones(1, length, dtype=torch.bool, device=state.logits.device)
        for length in cache_lengths(state.cache)
    ]
    return Batch(state.cache, valid, [state], [0], adapter.text_config)


def cache_lengths(cache: Any) -> list[int]:
    """Cached tokens per decoder layer."""
    return [int(layer.keys.shape[-2]) for layer in cache.layers]


def concat_batches(batches: Sequence[Batch]) -> Batch:
    """One batch of the rows of `batches` (caches padded to the widest per layer), to decode together."""
    nonempty = [batch for batch in batches if len(batch)]
    if len(nonempty) <= 1:
        return nonempty[0] if nonempty else batches[0]
    batches = nonempty
    cache = _make_cache(batches[0].text_config)
    key_valid = []
    for i, target in enumerate(cache.layers):
        width = max(int(batch.cache.layers[i].keys.shape[-2]) for batch in batches)
        keys = torch.cat([_pad_to(batch.cache.layers[i].keys, width, -2) for batch in batches])
        values = torch.cat([_pad_to(batch.cache.layers[i].values, width, -2) for batch in batches])
        _set_layer(target, keys, values)
        key_valid.append(torch.cat([_pad_to(batch.key_valid[i], width, 1) for batch in batches]))
    rows = [dataclasses.replace(row, cache=cache) for batch in batches for row in batch.rows]
    index = [index for batch in batches for index in batch.index]
    return Batch(cache, key_valid, rows, index, batches[0].text_config)


# -- decoding ------------------------------------------------------------------------------------------


@dataclass
class Generation:
    token_ids: list[int]
    logits: list[torch.Tensor]  # [V] per generated token (only when requested)
    seconds: float  # this row's share of the decode loop (each step's time split over its live rows)
    # Visual KV entries the decode steps attended to, summed over steps and layers, and what the
    # unpruned model's steps would attend to (the prompt's visual tokens x layers x steps).
    visual_keys_read: int = 0
    visual_keys_full: int = 0


def _decode_attention(capture: Any, keys: torch.Tensor, slot: int, visible: torch.Tensor) -> torch.Tensor:
    """[W] fp32 attention (mean over heads) of batch row `slot`'s decoding token over the cached `keys`
    [A, Hkv, W, d] of one layer (rotated, as cached), zero where `visible` [W] is False."""
    attn = capture.attn
    if capture.q is None or capture.cos_sin is None:
        raise RuntimeError("the probed attention module did not run")
    q = capture.q[slot : slot + 1].reshape(1, 1, -1, attn.head_dim).transpose(1, 2)  # [1, Hq, 1, d]
    cos, sin = (t[..., slot : slot + 1, :, :] for t in capture.cos_sin)  # batch axis is -3
    q, _ = capture.apply_rotary(q, q, cos, sin)
    k = keys[slot : slot + 1][:, :, visible]  # [1, Hkv, w, d]: only the keys the token sees
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)  # GQA
    probs = ((q.float() @ k.float().transpose(-1, -2)) * attn.scaling).softmax(dim=-1)  # [1, Hq, 1, w]
    full = torch.zeros(keys.shape[-2], device=keys.device)
    full[visible] = probs[0, :, 0].mean(dim=0)
    return full


@torch.inference_mode()
def greedy_decode_batch(
    adapter: ModelAdapter,
    batch: Batch,
    *,
    max_new_tokens: Sequence[int] | int,
    keep_logits: bool = False,
) -> list[Generation]:
    """Greedy decoding of every row of `batch`; a row stops at EOS (included, as `generate` does) or at
    its own token limit, and then leaves the batch. Returns one `Generation` per row, in batch order.

    A row whose prefill carries a `DecodePolicy` gets, at every step, the visual keys its policy hides
    masked out of layers >= `policy.layer` (other rows and layers run exactly as without policies)."""
    count = len(batch)
    limits = [max_new_tokens] * count if isinstance(max_new_tokens, int) else list(max_new_tokens)
    eos = adapter.eos_token_ids
    results = [Generation([], [], 0.0) for _ in range(count)]
    if not count:
        return results
    cache, key_valid = batch.cache, list(batch.key_valid)
    live = list(range(count))  # batch rows still generating, in cache-row order
    # Position of each row's first generated token; the n-th continues at + n (`next_positions`).
    first = torch.cat(
        [adapter.next_positions(row.position_ids, 0) for row in batch.rows], dim=-2
    )  # [..., B, 1]
    logits = torch.cat([row.logits for row in batch.rows])  # [B, V]
    padded = [not bool(valid.all()) for valid in key_valid]  # per layer; changes only when rows leave
    decoder = adapter.decoder
    layers = list(adapter.layers)
    policies = [row.decode_policy for row in batch.rows]
    states = [policy.start() if policy is not None else None for policy in policies]
    static_reads = [sum(row.visual_per_layer) for row in batch.rows]  # visual keys a step reads, unmasked
    step = 0
    while live:
        started = time.perf_counter()
        next_tokens = logits.argmax(-1)  # [A]
        chosen = next_tokens.tolist()
        still: list[int] = []
        for slot, row in enumerate(live):
            token = int(chosen[slot])
            results[row].token_ids.append(token)
            if keep_logits:
                results[row].logits.append(logits[slot])
            if token not in eos and len(results[row].token_ids) < limits[row]:
                still.append(slot)
        if len(still) < len(live):  # finished rows leave the batch (and the cache) now
            if not still:
                _share(results, live, time.perf_counter() - started)
                break
            picked = torch.tensor(still, dtype=torch.long, device=next_tokens.device)
            key_valid = _drop_rows(cache, key_valid, picked)
            padded = [not bool(valid.all()) for valid in key_valid]
            next_tokens = next_tokens.index_select(0, picked)
            first = first.index_select(-2, picked.to(first.device))
            _share(results, live, time.perf_counter() - started)
            started = time.perf_counter()
            live = [live[slot] for slot in still]
        hidden = decoder.embed_tokens(next_tokens[:, None])  # [A, 1, D]
        step_positions = first + step  # [..., A, 1]
        cos_sin = adapter.rotary(hidden, step_positions)
        # batch row -> {layer: key slots hidden at that layer in this step} (its policy's decision)
        hidden_slots: dict[int, dict[int, torch.Tensor]] = {}

        def decide(row: int, ctx: DecodeContext, hidden_slots: dict[int, dict[int, torch.Tensor]]) -> None:
            policy = policies[row]
            assert policy is not None
            hide, states[row] = policy.step(ctx, states[row])
            if hide is None or not hide.numel():
                return
            per_layer = {}
            for j in range(policy.layer, len(layers)):
                slots, ids = batch.rows[row].visual_keys[j]
                per_layer[j] = slots[torch.isin(ids, hide.to(ids.device))]
            hidden_slots[row] = per_layer

        for row in live:  # policies that need no attention decide before layer 0
            policy = policies[row]
            if policy is not None and not policy.needs_attention:
                state = batch.rows[row]
                ctx = DecodeContext(step, state.visual_keys[policy.layer][1], None, state.kept_ids)
                decide(row, ctx, hidden_slots)
        for i, layer in enumerate(layers):
            masked = [(slot, row) for slot, row in enumerate(live) if i in hidden_slots.get(row, {})]
            mask = None  # no padding and nothing hidden in this layer: SDPA without a mask, as `generate`
            if padded[i] or masked:
                valid = key_valid[i]  # [A, W_i]
                new = torch.ones(len(live), step + 1, dtype=torch.bool, device=valid.device)
                visible = torch.cat([valid, new], dim=1)  # [A, W_i + step + 1]
                for slot, row in masked:
                    visible[slot, hidden_slots[row][i]] = False
                mask = visible[:, None, None, :]
            scoring = [
                (slot, row)
                for slot, row in enumerate(live)
                if (policy := policies[row]) is not None and policy.needs_attention and policy.layer - 1 == i
            ]
            probe_ctx = (
                attention_probe(layer.self_attn, adapter.apply_rotary) if scoring else nullcontext(None)
            )
            with probe_ctx as probe:
                hidden = _run_layer(layer, hidden, step_positions, cos_sin, cache, mask)
            for slot, row in scoring:
                keys = cache.layers[i].keys  # [A, Hkv, W_i + step + 1, d], this step's key included
                seen = mask[slot, 0, 0] if mask is not None else torch.ones(keys.shape[-2], dtype=torch.bool)
                attention = _decode_attention(probe, keys, slot, seen.to(keys.device))
                slots, ids = batch.rows[row].visual_keys[i]
                decide(
                    row, DecodeContext(step, ids, attention[slots], batch.rows[row].kept_ids), hidden_slots
                )
        logits = _last_logits(adapter, hidden[:, -1])  # [A, V]
        for row in live:  # decode-time KV accounting (visual keys attended vs the unpruned model's)
            hidden_count = sum(int(slots.numel()) for slots in hidden_slots.get(row, {}).values())
            results[row].visual_keys_read += static_reads[row] - hidden_count
            results[row].visual_keys_full += batch.rows[row].visual_in * len(layers)
        step += 1
        _share(results, live, time.perf_counter() - started)
    return results


def _share(results: list[Generation], live: list[int], seconds: float) -> None:
    for row in live:
        results[row].seconds += seconds / len(live)


@torch.inference_mode()
def greedy_decode(
    adapter: ModelAdapter,
    state: PrefillResult,
    *,
    max_new_tokens: int,
    keep_logits: bool = False,
) -> Generation:
    """Greedy decoding of one prefilled row whose cache holds only that row."""
    batch = _one_row_batch(adapter, state)
    return greedy_decode_batch(adapter, batch, max_new_tokens=max_new_tokens, keep_logits=keep_logits)[0]
