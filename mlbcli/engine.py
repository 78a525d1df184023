"""Prefill + greedy decode over the decoder layers, with a per-layer keep schedule.

Why our own loop instead of `model.generate()`: token pruning inside the LLM (FastV-style, at layer K)
changes the sequence length between layers, which stock `generate` cannot express without copied
modelling code or class patches. We call the *stock* decoder layers one by one (the same modules,
weights and SDPA kernels that `generate` uses), so with an empty schedule the result is identical,
token for token and logit for logit, to `generate()` (tested in tests/test_engine.py).

Vocabulary:
- sequence: the tokens entering a layer; `[1, L, D]` hidden states with their position ids.
- visual ids: the flat `t * N + i` numbering of the prunable frame tokens (see `VideoTokens`).
- keep schedule (`PrunePlan.steps`): `layer -> pruner`. The pruner runs *before* that layer; layer 0
  means pruning before the LLM, layer K means FastV-style pruning after K full layers. A pruner that
  needs attention scores gets them from a probe on layer K-1 (computed beside SDPA, see `probe.py`).
- Surviving tokens keep their ORIGINAL position ids, so RoPE still encodes where they were.

Batching is designed in but not enabled: every tensor carries the batch axis, and the only batch-1
assumptions are `attention_mask=None` (SDPA's own causal mask, no padding) and one keep set per call.
Padded batches need an explicit 4-D mask per row in `_run_layer`, as `extend` already builds for a
shared prefix: several questions of one video continue one cached prefix (`extend`, `truncate_cache`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from mlbcli.probe import attention_probe

if TYPE_CHECKING:
    from mlbcli.models.base import ModelAdapter


@dataclass
class LayerContext:
    """What a pruner sees before decoder layer `layer` (0 = before the LLM)."""

    layer: int
    hidden: torch.Tensor  # [1, L, D] hidden states entering the layer (input embeddings at layer 0)
    visual_slots: torch.Tensor  # [n] positions in the current sequence of the prunable visual tokens
    visual_ids: torch.Tensor  # [n] their flat ids t * N + i in the original video, ascending
    scores: torch.Tensor | None  # [n] attention the query rows give them at layer-1 (mean over heads, rows)


@dataclass
class LayerKeep:
    """A pruner's decision. `keep` indexes `LayerContext.visual_slots`; order is always preserved."""

    keep: torch.Tensor  # [k] ascending indices into visual_slots
    replace: torch.Tensor | None = None  # [k, D] new states for the kept tokens (token merging / pooling)
    append: torch.Tensor | None = None  # [m, D] new tokens right after the visual block (layer 0 only)
    info: dict[str, Any] = field(default_factory=dict)  # method diagnostics (segments, budgets...)


LayerPruner = Callable[[LayerContext], LayerKeep]


@dataclass
class PrunePlan:
    """The keep schedule of one request: which pruner runs before which layer."""

    steps: dict[int, LayerPruner] = field(default_factory=dict)
    needs_scores: frozenset[int] = frozenset()  # layers whose pruner needs the probe of layer - 1
    query: str = "question"  # probe query rows: "question" (all question tokens) or "last"

    def __post_init__(self) -> None:
        if 0 in self.needs_scores:
            raise ValueError("no attention scores exist before layer 0: use layer >= 1 for attention pruning")
        if not self.needs_scores <= set(self.steps):
            raise ValueError("needs_scores names a layer without a pruner")
        if self.query not in ("question", "last"):
            raise ValueError(f"query must be 'question' or 'last', not {self.query!r}")


@dataclass
class PrefillResult:
    cache: Any  # transformers DynamicCache with per-layer KV of different lengths
    logits: torch.Tensor  # [1, V] logits of the last prompt position
    position_ids: torch.Tensor  # [..., 1, L'] position ids of the sequence leaving the last layer
    visual_per_layer: list[int]  # visual tokens entering each decoder layer (appended ones included)
    visual_in: int  # prunable visual tokens of the prompt
    kept_ids: torch.Tensor  # [k] visual ids alive after the last pruning step
    appended: int  # tokens added by pruners (e.g. a summary tail)
    # probe layer -> [n_visual] scores by visual id (NaN where already dropped)
    scores: dict[int, torch.Tensor]
    infos: dict[int, dict[str, Any]]  # layer -> pruner diagnostics
    seconds: float = 0.0
    # Extra probe passes a method ran to plan this request (`PlanContext.probe`): one
    # (visual tokens, decoder layers run) pair each, charged in `flops_probe_ratio`.
    probe_passes: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class _Sequence:
    """Bookkeeping of the current sequence: which slots are visual, appended, or query rows."""

    hidden: torch.Tensor  # [1, L, D]
    position_ids: torch.Tensor  # [..., 1, L] ([1, L], or [3, 1, L] for M-RoPE)
    visual_slots: torch.Tensor  # [n]
    visual_ids: torch.Tensor  # [n]
    appended_slots: torch.Tensor  # [m]
    query_slots: torch.Tensor  # [q]

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


def _run_layer(layer: torch.nn.Module, seq: _Sequence, cos_sin: Any, cache: Any) -> torch.Tensor:
    # attention_mask=None: SDPA applies its own causal mask for the prefill and none for 1-token decode.
    return layer(
        seq.hidden,
        attention_mask=None,
        position_embeddings=cos_sin,
        position_ids=seq.position_ids,
        past_key_values=cache,
        use_cache=True,
    )


def _last_logits(adapter: ModelAdapter, hidden: torch.Tensor) -> torch.Tensor:
    """[1, V] float logits of the last position of `hidden` [1, L, D] (final norm, then the LM head)."""
    return adapter.lm_head(adapter.decoder.norm(hidden[:, -1])).float()


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
    """Run the decoder over `embeds` [1, L, D], applying `plan` between layers.

    `visual_slots` are the positions of the prunable visual tokens (their visual ids are 0..n-1 in
    order); `query_slots` are the probe's query rows. With `stop_after_pruning`, layers after the last
    pruning step are skipped (token statistics only: `compress`) and `logits`/`cache` are not usable.
    The sequence that enters the LLM (after any layer-0 step) plus `reserve_tokens` generated tokens
    must fit the model's context (`adapter.check_context` raises otherwise).
    `stop_before_layer=K` runs only decoder layers 0..K-1 (after the pruning step of layer K, if any):
    an attention probe pass (`PlanContext.probe`); `logits`/`cache` are not usable then either.
    """
    from transformers import DynamicCache

    plan = plan or PrunePlan()
    started = time.perf_counter()
    device = embeds.device
    visual_slots = visual_slots.to(device)
    n_in = int(visual_slots.numel())
    if plan.query == "last":
        query_slots = torch.tensor([embeds.shape[1] - 1], device=device)
    seq = _Sequence(
        hidden=embeds,
        position_ids=position_ids.to(device),
        visual_slots=visual_slots,
        visual_ids=torch.arange(n_in, device=device),
        appended_slots=torch.zeros(0, dtype=torch.long, device=device),
        query_slots=query_slots.to(device),
    )
    cache = DynamicCache(config=adapter.text_config)
    layers = list(adapter.layers)
    last_step = max(plan.steps, default=-1)
    if last_step >= len(layers):
        raise ValueError(f"pruning layer {last_step} does not exist: the model has {len(layers)} layers")
    visual_per_layer: list[int] = []
    scores_by_layer: dict[int, torch.Tensor] = {}
    infos: dict[int, dict[str, Any]] = {}
    pending_scores: torch.Tensor | None = None
    cos_sin = None
    for i, layer in enumerate(layers):
        if i in plan.steps:
            ctx = LayerContext(i, seq.hidden, seq.visual_slots, seq.visual_ids, pending_scores)
            decision = plan.steps[i](ctx)
            infos[i] = decision.info
            seq = _apply_keep(seq, decision, i)
            cos_sin = None
        if i == 0:
            if adapter.renumber_input_positions and seq.position_ids.dim() == 2:
                seq.position_ids = torch.arange(seq.hidden.shape[1], device=device)[None]
            extent = int(seq.position_ids.max()) + 1
            adapter.check_context(extent, reserve_tokens, num_visual=int(seq.visual_slots.numel()))
        alive = int(seq.visual_slots.numel() + seq.appended_slots.numel())
        if (stop_before_layer is not None and i >= stop_before_layer) or (
            stop_after_pruning and i > last_step
        ):
            visual_per_layer.extend([alive] * (len(layers) - i))  # the skipped layers would see as many
            break
        visual_per_layer.append(alive)
        if cos_sin is None:  # recomputed only when the sequence changed, as the stock model does once
            cos_sin = adapter.rotary(seq.hidden, seq.position_ids)
        probing = (i + 1) in plan.needs_scores
        probe_ctx = (
            attention_probe(layer.self_attn, seq.query_slots, adapter.apply_rotary)
            if probing
            else nullcontext()
        )
        with probe_ctx as probe:
            seq.hidden = _run_layer(layer, seq, cos_sin, cache)
        if probing:
            received = probe.received()  # [L] mean attention each token receives from the query rows
            pending_scores = received[seq.visual_slots].float()
            full = torch.full((n_in,), float("nan"), device=device)
            full[seq.visual_ids] = pending_scores
            scores_by_layer[i] = full
        else:
            pending_scores = None
    logits = torch.empty(0)
    if stop_before_layer is None and (not stop_after_pruning or last_step == len(layers) - 1):
        logits = _last_logits(adapter, seq.hidden)
    return PrefillResult(
        cache=cache,
        logits=logits,
        position_ids=seq.position_ids,
        visual_per_layer=visual_per_layer,
        visual_in=n_in,
        kept_ids=seq.visual_ids,
        appended=int(seq.appended_slots.numel()),
        scores=scores_by_layer,
        infos=infos,
        seconds=time.perf_counter() - started,
    )


@torch.inference_mode()
def extend(
    adapter: ModelAdapter,
    prefix: PrefillResult,
    embeds: torch.Tensor,
    position_ids: torch.Tensor,
    *,
    reserve_tokens: int = 0,
) -> PrefillResult:
    """Continue a finished prefill with `embeds` [1, m, D] at `position_ids` [..., 1, m].

    The shared-prefix path: a video's system prompt + visual block is prefilled once and each question
    extends it. `prefix.cache` grows by m tokens in every layer (call `truncate_cache` to return to
    the prefix). The new tokens see every cached token and each other causally: SDPA's own causal
    flag assumes equal query and key lengths, so the mask here is explicit, [1, 1, m, cached + m].
    """
    started = time.perf_counter()
    m = embeds.shape[1]
    device = embeds.device
    position_ids = position_ids.to(device)
    extent = int(torch.cat([prefix.position_ids.flatten(), position_ids.flatten()]).max()) + 1
    adapter.check_context(extent, reserve_tokens)
    hidden = embeds
    cos_sin = adapter.rotary(hidden, position_ids)
    causal = torch.ones(m, m, dtype=torch.bool, device=device).tril()  # [m, m]
    for i, layer in enumerate(adapter.layers):
        cached = prefix.cache.layers[i].keys.shape[-2]
        mask = torch.cat([torch.ones(m, cached, dtype=torch.bool, device=device), causal], dim=1)
        hidden = layer(
            hidden,
            attention_mask=mask[None, None],
            position_embeddings=cos_sin,
            position_ids=position_ids,
            past_key_values=prefix.cache,
            use_cache=True,
        )
    logits = _last_logits(adapter, hidden)
    return PrefillResult(
        cache=prefix.cache,
        logits=logits,
        position_ids=torch.cat([prefix.position_ids, position_ids], dim=-1),
        visual_per_layer=prefix.visual_per_layer,
        visual_in=prefix.visual_in,
        kept_ids=prefix.kept_ids,
        appended=prefix.appended,
        scores=prefix.scores,
        infos=prefix.infos,
        seconds=time.perf_counter() - started,
        probe_passes=list(prefix.probe_passes),
    )


def cache_lengths(cache: Any) -> list[int]:
    """Cached tokens per decoder layer."""
    return [int(layer.keys.shape[-2]) for layer in cache.layers]


def truncate_cache(cache: Any, lengths: list[int]) -> None:
    """Drop what was appended after `lengths` (per layer): back to a shared prefix."""
    for layer, keep in zip(cache.layers, lengths, strict=True):
        extra = int(layer.keys.shape[-2]) - keep
        if extra > 0:
            layer.crop(-extra)


@dataclass
class Generation:
    token_ids: list[int]
    logits: list[torch.Tensor]  # [V] per generated token (only when requested)
    seconds: float


@torch.inference_mode()
def greedy_decode(
    adapter: ModelAdapter,
    state: PrefillResult,
    *,
    max_new_tokens: int,
    keep_logits: bool = False,
) -> Generation:
    """Greedy decoding from a prefill; stops at EOS (included, as `generate` does) or the token limit."""
    started = time.perf_counter()
    eos = adapter.eos_token_ids
    logits = state.logits
    tokens: list[int] = []
    kept: list[torch.Tensor] = []
    decoder = adapter.decoder
    for step in range(max_new_tokens):
        next_token = logits.argmax(-1)  # [1]
        tokens.append(int(next_token))
        if keep_logits:
            kept.append(logits[0])
        if int(next_token) in eos or step == max_new_tokens - 1:
            break
        hidden = decoder.embed_tokens(next_token[:, None])  # [1, 1, D]
        positions = adapter.next_positions(state.position_ids, step)
        cos_sin = adapter.rotary(hidden, positions)
        for layer in adapter.layers:
            hidden = layer(
                hidden,
                attention_mask=None,
                position_embeddings=cos_sin,
                position_ids=positions,
                past_key_values=state.cache,
                use_cache=True,
            )
        logits = _last_logits(adapter, hidden)
    return Generation(tokens, kept, time.perf_counter() - started)
