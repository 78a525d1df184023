"""Batched greedy decoding over a prefilled `Batch`, with per-row decode-time KV policies.

Each step embeds the live rows' last tokens `[A, 1, D]` (A = rows still generating) and runs them
through every decoder layer against the shared cache. The mask `[A, 1, 1, W_l + step + 1]` is built
only where a layer has padding or a row's policy hides keys there; otherwise SDPA runs without one,
exactly as `generate()` does. A row leaves the batch (and the cache) the step it finishes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from mlbcli.engine.cache import Batch, PrefillResult, drop_rows, one_row_batch
from mlbcli.engine.forward import last_logits, run_layer
from mlbcli.engine.linear import LINEAR, kinds_of, probe_layer
from mlbcli.engine.probe import ProbeCapture, attention_probe
from mlbcli.engine.rows import window_mask
from mlbcli.selection.plan import DecodeContext

if TYPE_CHECKING:
    from mlbcli.models.contract import Adapter


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


#: batch row -> {layer: key slots hidden at that layer in this step} (its policy's decision)
HiddenSlots = dict[int, dict[int, torch.Tensor]]


def step_visual_keys(
    row: PrefillResult,
    windows: dict[int, int | None],
    step: int,
    hidden: dict[int, torch.Tensor] | None = None,
) -> tuple[int, int]:
    """(read, full): the visual KV entries the decoding token of `step` attends to, summed over the
    layers of `windows` (those that cache keys: layer -> its sliding window, None for a global layer),
    and what the unpruned model's token would. `hidden`: layer -> key slots its policy hides this step.

    A sliding layer sees the last `window` real keys (`rows.window_mask`; hidden keys still count):
    with `c` real keys cached, the step's token and the `step` generated before it, key slot s is in
    the window when c - s + step + 1 <= window (slots are 0..c-1, the prompt right-aligned before any
    padding). The unpruned model's window falls on its own prompt, by the same rule."""
    hidden = hidden or {}
    read = full = 0
    for i, window in windows.items():
        gone = hidden.get(i)
        if window is None or i >= len(row.key_counts):  # a global layer reads every cached visual key
            read += row.visual_per_layer[i] - (int(gone.numel()) if gone is not None else 0)
            full += row.visual_in
            continue
        slots = row.alive_keys[i]  # [k] visual key slots of this layer's cache row
        seen = slots >= row.key_counts[i] + step + 1 - window
        if gone is not None:
            seen &= ~torch.isin(slots, gone.to(slots.device))
        read += int(seen.sum())
        if row.visual_slots_in is None:
            full += row.visual_in
        else:
            full += int((row.visual_slots_in >= row.length_in + step + 1 - window).sum())
    return read, full


class _DecodeLoop:
    """The state of one `greedy_decode_batch` call. Rows are numbered by their batch row; `live` lists
    the rows still generating in cache-row order, and a slot is a row's place in `live`."""

    def __init__(self, adapter: Adapter, batch: Batch, limits: list[int], keep_logits: bool):
        self.adapter, self.batch, self.limits, self.keep_logits = adapter, batch, limits, keep_logits
        self.layers = list(adapter.layers)
        self.eos = adapter.eos_token_ids
        self.results = [Generation([], [], 0.0) for _ in range(len(batch))]
        self.cache, self.key_valid = batch.cache, list(batch.key_valid)
        self.live = list(range(len(batch)))
        # Position of each row's first generated token; the n-th continues at + n (`next_positions`).
        self.first = torch.cat([adapter.next_positions(row.position_ids, 0) for row in batch.rows], dim=-2)
        self.padded = [not bool(valid.all()) for valid in self.key_valid]  # per layer; changes as rows leave
        self.policies = [row.decode_policy for row in batch.rows]
        self.states = [policy.start() if policy is not None else None for policy in self.policies]
        # Only full-attention layers cache keys (a hybrid's linear layers read a state: `engine.linear`).
        self.kinds = kinds_of(adapter)
        self.full_layers = [i for i, kind in enumerate(self.kinds) if kind != LINEAR]
        # layers that cache keys -> their sliding window (None: global), for the decode KV accounting
        self.windows = {i: adapter.attention_window(i) for i in self.full_layers}
        # Per row with a policy: the layer whose attention it reads (its layer - 1, or the nearest full
        # layer), and the first layer whose keys it may hide (after that read, at or after its layer).
        self.reads = [self._read_layer(policy) for policy in self.policies]
        self.hide_from = [
            max(policy.layer, read + 1) if policy is not None else 0
            for policy, read in zip(self.policies, self.reads, strict=True)
        ]

    def _read_layer(self, policy: Any) -> int:
        if policy is None:
            return -1
        if not policy.needs_attention:  # no attention read: the ids cached at its first full layer
            return next((i for i in self.full_layers if i >= policy.layer), len(self.layers)) - 1
        # the nearest full layer on a hybrid decoder, then the family's choice (Gemma 4: a global layer)
        return self.adapter.probe_layer(probe_layer(self.kinds, policy.layer - 1))

    def emit(self, next_tokens: torch.Tensor, logits: torch.Tensor) -> list[int]:
        """Append each live row's token [A]; the slots of the rows that go on (not EOS, under limit)."""
        still: list[int] = []
        for slot, (row, token) in enumerate(zip(self.live, next_tokens.tolist(), strict=True)):
            self.results[row].token_ids.append(int(token))
            if self.keep_logits:
                self.results[row].logits.append(logits[slot])
            if int(token) not in self.eos and len(self.results[row].token_ids) < self.limits[row]:
                still.append(slot)
        return still

    def leave(self, still: list[int], next_tokens: torch.Tensor, started: float) -> torch.Tensor:
        """Take finished rows out of the batch and the cache; the tokens [A'] of the rows left."""
        picked = torch.tensor(still, dtype=torch.long, device=next_tokens.device)
        self.key_valid = drop_rows(self.cache, self.key_valid, picked)
        self.padded = [not bool(valid.all()) for valid in self.key_valid]
        self.first = self.first.index_select(-2, picked.to(self.first.device))
        next_tokens = next_tokens.index_select(0, picked)
        self.share(time.perf_counter() - started)
        self.live = [self.live[slot] for slot in still]
        return next_tokens

    def share(self, seconds: float) -> None:
        for row in self.live:
            self.results[row].seconds += seconds / len(self.live)

    def step(self, step: int, next_tokens: torch.Tensor) -> torch.Tensor:
        """One decode step of the live rows: [A] tokens in, [A, V] logits of the next tokens out."""
        hidden = self.adapter.embed_ids(next_tokens[:, None])  # [A, 1, D]
        token_inputs = self.adapter.token_inputs(next_tokens[:, None], hidden)  # [A, 1, ...] or None
        positions = self.first + step  # [..., A, 1]
        cos_sin = self.adapter.rotary(hidden, positions)
        hidden_slots: HiddenSlots = {}
        for row in self.live:  # policies that need no attention decide before layer 0
            policy = self.policies[row]
            if policy is not None and not policy.needs_attention:
                state = self.batch.rows[row]
                ids = state.visual_keys[min(self.hide_from[row], len(self.layers) - 1)][1]
                ctx = DecodeContext(step, ids, None, state.kept_ids)
                self.decide(row, ctx, hidden_slots)
        for i, layer in enumerate(self.layers):
            mask = self.mask(i, step, hidden_slots)
            scoring = [
                (slot, row)
                for slot, row in enumerate(self.live)
                if (policy := self.policies[row]) is not None
                and policy.needs_attention
                and self.reads[row] == i
            ]
            probe_ctx = (
                attention_probe(layer.self_attn, self.adapter.apply_rotary) if scoring else nullcontext()
            )
            extra = self.adapter.layer_kwargs(i, cos_sin, self.cache, token_inputs)
            with probe_ctx as probe:
                hidden = run_layer(layer, hidden, positions, cos_sin, self.cache, mask, extra)
            for slot, row in scoring:
                self.decide_from_attention(step, i, slot, row, probe, mask, hidden_slots)
        self.account(step, hidden_slots)
        return last_logits(self.adapter, hidden[:, -1])  # [A, V]

    def mask(self, i: int, step: int, hidden_slots: HiddenSlots) -> torch.Tensor | None:
        """[A, 1, 1, W_i + step + 1] keys visible at layer `i`; None (no mask, as `generate`) when the
        layer has no padding and no policy hides a key there."""
        masked = [(slot, row) for slot, row in enumerate(self.live) if i in hidden_slots.get(row, {})]
        valid = self.key_valid[i]  # [A, W_i]
        window = self.adapter.attention_window(i)
        slides = window is not None and valid.shape[1] + step + 1 > window
        if not (self.padded[i] or masked or slides):
            return None
        new = torch.ones(len(self.live), step + 1, dtype=torch.bool, device=valid.device)
        visible = torch.cat([valid, new], dim=1)  # [A, W_i + step + 1]
        if window is not None:  # the last `window` real keys (a policy's hidden keys still count)
            visible = window_mask(visible, window)
        for slot, row in masked:
            visible[slot, hidden_slots[row][i]] = False
        return visible[:, None, None, :]

    def decide(self, row: int, ctx: DecodeContext, hidden_slots: HiddenSlots) -> None:
        """Ask `row`'s policy which visual ids to hide, as key slots of each layer >= `policy.layer`."""
        policy = self.policies[row]
        assert policy is not None
        hide, self.states[row] = policy.step(ctx, self.states[row])
        if hide is None or not hide.numel():
            return
        per_layer = {}
        # Hidden from every attention layer that reads a cache of a layer >= the policy's first (a layer
        # sharing another's KV loses a key exactly when its source does: one cache, one decision); a
        # linear layer has no keys to hide: its state is what it is.
        for j in range(len(self.layers)):
            if self.adapter.kv_source(j) < self.hide_from[row] or self.kinds[j] == LINEAR:
                continue
            slots, ids = self.batch.rows[row].visual_keys[j]
            per_layer[j] = slots[torch.isin(ids, hide.to(ids.device))]
        hidden_slots[row] = per_layer

    def decide_from_attention(
        self,
        step: int,
        i: int,
        slot: int,
        row: int,
        probe: ProbeCapture | None,
        mask: torch.Tensor | None,
        hidden_slots: HiddenSlots,
    ) -> None:
        """`decide` for a policy that reads the attention of layer `i` (its layer - 1, or the nearest
        full-attention layer)."""
        keys = self.cache.layers[i].keys  # [A, Hkv, W_i + step + 1, d], this step's key included
        seen = mask[slot, 0, 0] if mask is not None else torch.ones(keys.shape[-2], dtype=torch.bool)
        attention = _decode_attention(probe, keys, slot, seen.to(keys.device))
        slots, ids = self.batch.rows[row].visual_keys[i]
        ctx = DecodeContext(step, ids, attention[slots], self.batch.rows[row].kept_ids)
        self.decide(row, ctx, hidden_slots)

    def account(self, step: int, hidden_slots: HiddenSlots) -> None:
        """Decode-time KV accounting: visual keys attended this step vs the unpruned model's."""
        for row in self.live:
            read, full = step_visual_keys(self.batch.rows[row], self.windows, step, hidden_slots.get(row))
            self.results[row].visual_keys_read += read
            self.results[row].visual_keys_full += full


@torch.inference_mode()
def greedy_decode_batch(
    adapter: Adapter,
    batch: Batch,
    *,
    max_new_tokens: Sequence[int] | int,
    keep_logits: bool = False,
) -> list[Generation]:
    """Greedy decoding of every row of `batch`; a row stops at EOS (included, as `generate` does) or at
    its own token limit, and then leaves the batch. Returns one `Generation` per row, in batch order.

    A row whose prefill carries a `DecodePolicy` gets, at every step, the visual keys its policy hides
    masked out of layers >= `policy.layer` (other rows and layers run exactly as without policies)."""
    if not len(batch):
        return []
    limits = [max_new_tokens] * len(batch) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    loop = _DecodeLoop(adapter, batch, limits, keep_logits)
    logits = torch.cat([row.logits for row in batch.rows])  # [B, V]
    step = 0
    while loop.live:
        started = time.perf_counter()
        next_tokens = logits.argmax(-1)  # [A]
        still = loop.emit(next_tokens, logits)
        if len(still) < len(loop.live):  # finished rows leave the batch (and the cache) now
            if not still:
                loop.share(time.perf_counter() - started)
                break
            next_tokens = loop.leave(still, next_tokens, started)
            started = time.perf_counter()
        logits = loop.step(step, next_tokens)
        step += 1
        loop.share(time.perf_counter() - started)
    return loop.results


@torch.inference_mode()
def greedy_decode(
    adapter: Adapter,
    state: PrefillResult,
    *,
    max_new_tokens: int,
    keep_logits: bool = False,
) -> Generation:
    """Greedy decoding of one prefilled row whose cache holds only that row."""
    batch = one_row_batch(state, adapter.text_config)
    return greedy_decode_batch(adapter, batch, max_new_tokens=max_new_tokens, keep_logits=keep_logits)[0]
