"""Batched prefill with a keep schedule per row (`prefill_batch`), and continuing a cached prefix
(`extend_batch`). The loop's design, and why it is ours, is told in `engine.batch`."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from mlbcli.engine.cache import Batch, PrefillResult, before_shared_kv, drop_rows, make_cache, one_row_batch
from mlbcli.engine.forward import row_logits, run_layer
from mlbcli.engine.linear import LINEAR, kinds_of, resolve_reads, run_linear_layer
from mlbcli.engine.probe import ProbeCapture, attention_probe
from mlbcli.engine.rows import (
    RowSequence,
    apply_keep,
    contiguous_positions,
    merge_targets,
    pack_rows,
    pack_token_inputs,
    text_only,
    valid_slots,
    window_mask,
)
from mlbcli.models.inputs import ModelInputs
from mlbcli.selection.plan import LayerContext, PrunePlan

if TYPE_CHECKING:
    from mlbcli.models.contract import Adapter


@dataclass
class _Row:
    """Everything the batched prefill tracks for one row."""

    index: int  # the caller's request index
    plan: PrunePlan
    reserve: int  # tokens the row will generate after the prompt (context check)
    seq: RowSequence
    visual_in: int
    residuals: dict[int, torch.Tensor] = field(default_factory=dict)  # see ModelInputs.visual_residuals
    visual_per_layer: list[int] = field(default_factory=list)
    scores: dict[int, torch.Tensor] = field(default_factory=dict)
    infos: dict[int, dict[str, Any]] = field(default_factory=dict)
    # pruning layer K -> the layer whose attention its pruner reads (K - 1, or on a hybrid decoder the
    # nearest full-attention layer: `engine.linear.resolve_reads`)
    reads: dict[int, int] = field(default_factory=dict)
    visual_keys: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    merges: dict[int, int] = field(default_factory=dict)  # pruned visual id -> id it was merged into
    key_counts: list[int] = field(default_factory=list)  # see PrefillResult.key_counts
    alive_keys: list[torch.Tensor] = field(default_factory=list)
    length_in: int = 0
    visual_slots_in: torch.Tensor | None = None

    def result(self, cache: Any, logits: torch.Tensor, seconds: float) -> PrefillResult:
        return PrefillResult(
            cache=cache,
            logits=logits,
            position_ids=self.seq.position_ids,
            visual_per_layer=self.visual_per_layer,
            visual_in=self.visual_in,
            kept_ids=self.seq.visual_ids,
            appended=int(self.seq.appended_slots.numel()),
            scores=self.scores,
            infos=self.infos,
            seconds=seconds,
            visual_keys=self.visual_keys,
            decode_policy=self.plan.decode_policy,
            merges=self.merges,
            key_counts=self.key_counts,
            alive_keys=self.alive_keys,
            length_in=self.length_in,
            visual_slots_in=self.visual_slots_in,
        )


def _plan_error(plan: PrunePlan, num_layers: int, sources: Sequence[int] = ()) -> ValueError | None:
    """Why `plan` cannot run on a decoder of `num_layers` layers, or None. `sources[j]`: the layer
    whose KV cache layer j reads (`Adapter.kv_source`)."""
    last_step = max(plan.steps, default=-1)
    if last_step >= num_layers:
        return ValueError(f"pruning layer {last_step} does not exist: the model has {num_layers} layers")
    for step in plan.steps:
        # A token pruned before layer K must be gone from every layer that reads a cache it is in; a
        # layer >= K reading the KV of a layer < K would still see it (and its slots would not line up).
        shared = [j for j in range(step, len(sources)) if sources[j] < step]
        if step > 0 and shared:
            return ValueError(
                f"pruning before layer {step} is impossible on this model: layer {shared[0]} reads the KV "
                f"cache of layer {sources[shared[0]]}, which holds every token (prune at layer <= "
                f"{min(sources[j] for j in shared)})"
            )
    policy = plan.decode_policy
    if policy is not None and not (int(policy.needs_attention) <= policy.layer < num_layers):
        return ValueError(
            f"decode-time KV pruning from layer {policy.layer} is impossible: the model has "
            f"{num_layers} decoder layers (choose 1..{num_layers - 1})"
        )
    # A hidden key is masked in the layers reading a cache written at or after the policy's layer; a layer
    # >= it that reads an earlier layer's cache (Gemma 4's shared KV) would still see every key.
    shared = [j for j in range(policy.layer, len(sources)) if sources[j] < policy.layer] if policy else []
    if policy is not None and shared:
        return ValueError(
            f"decode-time KV pruning from layer {policy.layer} is impossible on this model: layer "
            f"{shared[0]} reads the KV cache of layer {sources[shared[0]]}, where nothing is hidden "
            f"(choose a layer <= {min(sources[j] for j in shared)})"
        )
    return None


def _start_row(index: int, inputs: ModelInputs, plan: PrunePlan, reserve: int, reads: dict[int, int]) -> _Row:
    """The row of one request as it enters layer 0: every visual token, ids 0..n-1 in slot order."""
    device = inputs.embeds.device
    query = inputs.query_slots
    if plan.query == "last":
        query = torch.tensor([inputs.length - 1])
    n_in = int(inputs.visual_slots.numel())
    seq = RowSequence(
        hidden=inputs.embeds,
        position_ids=inputs.position_ids.to(device),
        visual_slots=inputs.visual_slots.to(device),
        visual_ids=torch.arange(n_in, device=device),
        appended_slots=torch.zeros(0, dtype=torch.long, device=device),
        query_slots=query.to(device),
        token_inputs=inputs.token_inputs,
    )
    row = _Row(index, plan, reserve, seq, n_in, dict(inputs.visual_residuals), reads=reads)
    row.length_in, row.visual_slots_in = inputs.length, seq.visual_slots
    return row


class _Prefill:
    """The state of one `prefill_batch` call: live rows, the shared cache and the packed batch.

    `hidden` [B, L, D], `positions` [..., B, L] and `lengths` [B] are the packed rows between pruning
    steps; rows are unpacked into their own sequences only when a pruner runs.
    """

    def __init__(self, adapter: Adapter, rows: list[_Row], errors: dict[int, Exception]):
        self.adapter = adapter
        self.rows = rows
        self.errors = errors
        self.cache = make_cache(adapter.text_config)
        self.kinds = kinds_of(adapter)  # "full" / "linear" per decoder layer
        self.key_valid: list[torch.Tensor] = []
        self.hidden: torch.Tensor | None = None  # None = repack from the rows
        self.positions: torch.Tensor | None = None
        self.lengths: torch.Tensor | None = None
        self.token_inputs: torch.Tensor | None = None  # [B, L, ...] packed per-token layer inputs
        self.cos_sin: Any = None
        self.masks: dict[int, torch.Tensor] = {}  # window -> [B, 1, L, L] mask of the packed rows

    def fail(self, failed: list[int]) -> None:
        """Take rows (indices into `rows`) out of the batch, cache included."""
        keep = [r for r in range(len(self.rows)) if r not in failed]
        if self.key_valid:
            device = self.key_valid[0].device
            picked = torch.tensor(keep, dtype=torch.long, device=device)
            self.key_valid = drop_rows(self.cache, self.key_valid, picked)
        self.rows[:] = [self.rows[r] for r in keep]

    def prune(self, i: int, stepping: list[int]) -> None:
        """Run the pruners of layer `i` (rows `stepping`) on unpacked rows, then repack the survivors."""
        if self.hidden is not None:  # unpack: each row's real tokens, as they leave layer i-1
            for r, row in enumerate(self.rows):
                row.seq.hidden = self.hidden[r : r + 1, : row.seq.length]
        failed: list[int] = []
        for r in stepping:
            row = self.rows[r]
            try:
                # [n] the scores of the layer this pruner reads, for the tokens alive now (by visual id)
                scores = row.scores[row.reads[i]][row.seq.visual_ids] if i in row.reads else None
                ctx = LayerContext(i, row.seq.hidden, row.seq.visual_slots, row.seq.visual_ids, scores)
                decision = row.plan.steps[i](ctx)
                row.infos[i] = decision.info
                if i in row.reads and row.reads[i] != i - 1:
                    row.infos[i] = {**decision.info, "probe_layer": row.reads[i]}  # the layer actually read
                row.merges.update(merge_targets(row.seq.visual_ids, decision))
                row.seq = apply_keep(
                    row.seq, decision, i, lambda embeds: self.adapter.token_inputs(None, embeds)
                )
            except Exception as exc:
                self.errors[row.index] = exc
                failed.append(r)
        if i == 0:
            failed += self._enter_llm(failed)
        if failed:
            self.fail(sorted(set(failed)))
        if self.rows:
            self.hidden, self.positions, self.lengths = pack_rows([row.seq for row in self.rows])
            self.token_inputs = pack_token_inputs([row.seq for row in self.rows])
            self.cos_sin = None
            self.masks = {}

    def _enter_llm(self, failed: list[int]) -> list[int]:
        """Positions of the sequences entering the LLM (after pruning before it) and the context
        check; returns the rows (indices into `rows`) that cannot run."""
        more = []
        for r, row in enumerate(self.rows):
            if r in failed:
                continue
            try:
                row.seq.position_ids = self.adapter.positions_after_input_pruning(row.seq.position_ids)
                if row.plan.contiguous_positions:
                    row.seq.position_ids = contiguous_positions(row.seq.position_ids)
                extent = int(row.seq.position_ids.max()) + 1
                self.adapter.check_context(extent, row.reserve, num_visual=int(row.seq.visual_slots.numel()))
            except Exception as exc:
                self.errors[row.index] = exc
                more.append(r)
        return more

    def run(self, i: int, layer: Any) -> None:
        """Decoder layer `i` over the packed batch, with the probe of the rows whose pruner reads this
        layer's attention, and the layer's DeepStack residuals added at the surviving visual tokens."""
        assert self.hidden is not None and self.positions is not None and self.lengths is not None
        linear = self.kinds[i] == LINEAR
        for row in self.rows:
            row.visual_per_layer.append(row.seq.alive)
            empty = row.seq.visual_slots[:0]  # a linear layer caches no keys
            keys = (empty, row.seq.visual_ids[:0]) if linear else (row.seq.visual_slots, row.seq.visual_ids)
            row.visual_keys.append(keys)
            row.key_counts.append(row.seq.length)
            alive = torch.cat([row.seq.visual_slots, row.seq.appended_slots]).sort().values  # [alive]
            row.alive_keys.append(empty if linear else alive)
        if self.cos_sin is None:  # recomputed only when the sequence changed, as the stock model does once
            self.cos_sin = self.adapter.rotary(self.hidden, self.positions)
        if linear:  # a recurrent state, no attention to read; padding must not run through a row's state
            hidden = run_linear_layer(
                layer,
                i,
                self.hidden,
                self.positions,
                self.cos_sin,
                self.cache,
                self.lengths,
                self.adapter.text_config,
            )
            self.key_valid.append(valid_slots(self.lengths, 0))  # [B, 0]
            self.hidden = self._add_residuals(i, hidden)
            return
        probing = [r for r, row in enumerate(self.rows) if i in row.reads.values()]
        probe_ctx = (
            attention_probe(layer.self_attn, self.adapter.apply_rotary) if probing else nullcontext(None)
        )
        kwargs = self.adapter.layer_kwargs(i, self.cos_sin, self.cache, self.token_inputs)
        with probe_ctx as probe:
            if probe is not None:
                probe.window = self.adapter.attention_window(i)
            mask = self.window_mask(self.adapter.attention_window(i))
            hidden = run_layer(layer, self.hidden, self.positions, self.cos_sin, self.cache, mask, kwargs)
        self.key_valid.append(valid_slots(self.lengths, hidden.shape[1]))
        self.hidden = self._add_residuals(i, hidden)
        self._record_scores(i, probing, probe)

    def _add_residuals(self, i: int, hidden: torch.Tensor) -> torch.Tensor:
        """`hidden` [B, L, D] leaving layer `i` with its DeepStack residuals added at the surviving
        visual tokens (a copy when there are any)."""
        if any(i in row.residuals for row in self.rows):
            hidden = hidden.clone()
            for r, row in enumerate(self.rows):
                if i in row.residuals:  # [n, D] by visual id -> the surviving tokens' slots
                    extra = row.residuals[i].to(hidden.device, hidden.dtype)[row.seq.visual_ids]
                    hidden[r, row.seq.visual_slots] += extra
        return hidden

    def window_mask(self, window: int | None) -> torch.Tensor | None:
        """[B, 1, L, L] mask of a sliding-window layer over the packed rows (causal, the last `window`
        tokens of each row's sequence: kept tokens count); None where the window covers every token
        (SDPA's own causal mask, as stock attention on a sequence no longer than its window)."""
        assert self.hidden is not None
        length = self.hidden.shape[1]
        if window is None or length <= window:
            return None
        if window not in self.masks:
            causal = torch.ones(length, length, dtype=torch.bool, device=self.hidden.device).tril()
            self.masks[window] = window_mask(causal, window)[None, None].expand(len(self.rows), 1, -1, -1)
        return self.masks[window]

    def _record_scores(self, i: int, probing: list[int], probe: ProbeCapture | None) -> None:
        """Probe scores of layer `i` by visual id (NaN where dropped), for the pruners that read it."""
        for r in probing:
            row = self.rows[r]
            assert probe is not None
            received = probe.received(r, row.seq.query_slots, row.seq.length, row.plan.probe_reduce)  # [L_r]
            full = torch.full((row.visual_in,), float("nan"), device=received.device)
            full[row.seq.visual_ids] = received[row.seq.visual_slots].float()
            row.scores[i] = full


@torch.inference_mode()
def prefill_batch(
    adapter: Adapter,
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
    kinds = kinds_of(adapter)
    sources = [adapter.kv_source(j) for j in range(len(layers))]
    rows: list[_Row] = []
    errors: dict[int, Exception] = {}
    for index, (row_inputs, plan) in enumerate(zip(inputs, plans, strict=True)):
        plan = plan or PrunePlan()
        try:  # where pruners run and read: moved before shared KV caches and on hybrid decoders
            steps, needs = before_shared_kv(plan.steps, plan.needs_scores, sources)
            steps, reads = resolve_reads(steps, needs, kinds)
        except ValueError as exc:
            errors[index] = exc
            continue
        # a family may read another layer in place of K-1 (Gemma 4: the nearest global layer)
        reads = {k: adapter.probe_layer(r) for k, r in reads.items()}
        plan = dataclasses.replace(plan, steps=steps, needs_scores=frozenset(reads))
        error = _plan_error(plan, len(layers), sources)
        if error is not None:
            errors[index] = error
        else:
            rows.append(_start_row(index, row_inputs, plan, reserves[index], reads))
    state = _Prefill(adapter, rows, errors)
    last_step = max((max(row.plan.steps, default=-1) for row in rows), default=-1)
    if stop_before_layer is not None:  # a probe pass runs through its (possibly moved) pruning step
        stop_before_layer = max(stop_before_layer, last_step)
    for i, layer in enumerate(layers):
        if not state.rows:
            break
        stepping = [r for r, row in enumerate(state.rows) if i in row.plan.steps]
        if stepping or i == 0:
            state.prune(i, stepping)
            if not state.rows:
                break
        if (stop_before_layer is not None and i >= stop_before_layer) or (
            stop_after_pruning and i > last_step
        ):
            for row in state.rows:  # the skipped layers would see as many tokens
                row.visual_per_layer.extend([row.seq.alive] * (len(layers) - i))
            break
        state.run(i, layer)
    usable = stop_before_layer is None and (not stop_after_pruning or last_step == len(layers) - 1)
    logits = None
    if usable and state.rows and state.hidden is not None and state.lengths is not None:
        logits = row_logits(adapter, state.hidden, state.lengths)  # [B, V]
    share = (time.perf_counter() - started) / max(1, len(state.rows) + len(errors))
    results = [
        row.result(state.cache, logits[r : r + 1] if logits is not None else torch.empty(0), share)
        for r, row in enumerate(state.rows)
    ]
    return Batch(
        state.cache, state.key_valid, results, [row.index for row in state.rows], adapter.text_config
    ), errors


@torch.inference_mode()
def prefill(
    adapter: Adapter,
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


def _fitting_rows(
    adapter: Adapter, batch: Batch, suffixes: Sequence[tuple[torch.Tensor, torch.Tensor]], reserves: list[int]
) -> tuple[list[int], dict[int, Exception]]:
    """Rows of `batch` whose prefix + suffix + reserve fit the context, and the errors of the others."""
    errors: dict[int, Exception] = {}
    keep: list[int] = []
    for b, (row, (_, suffix_positions)) in enumerate(zip(batch.rows, suffixes, strict=True)):
        extent = int(torch.cat([row.position_ids.flatten(), suffix_positions.flatten()]).max()) + 1
        try:
            adapter.check_context(extent, reserves[b])
            keep.append(b)
        except Exception as exc:
            errors[batch.index[b]] = exc
    return keep, errors


@torch.inference_mode()
def extend_batch(
    adapter: Adapter,
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
    if suffixes and adapter.token_inputs(None, suffixes[0][0][:, :1]) is not None:
        # Per-token layer inputs (Gemma 4's per-layer embeddings) come from each token's id, which a
        # suffix given as embeddings does not carry: the layers would run without them.
        raise ValueError(
            "extending a cached prefix is not supported on a family with per-token layer inputs "
            "(Gemma 4's per-layer embeddings): prefill the whole prompt instead"
        )
    reserves = [reserve_tokens] * len(batch) if isinstance(reserve_tokens, int) else list(reserve_tokens)
    keep, errors = _fitting_rows(adapter, batch, suffixes, reserves)
    if len(keep) < len(batch):
        if not keep:
            return Batch(batch.cache, [], [], [], batch.text_config), errors
        batch = batch.select(keep)
        suffixes = [suffixes[b] for b in keep]
    device = suffixes[0][0].device
    hidden, positions, lengths = pack_rows([text_only(e, p.to(device)) for e, p in suffixes])  # [B, M, D]...
    m = hidden.shape[1]
    suffix_valid = valid_slots(lengths, m)  # [B, M]
    causal = torch.ones(m, m, dtype=torch.bool, device=device).tril()  # [M, M]
    # A padding query attends to its own row's keys too (never to nothing: no NaN rows).
    suffix_keys = causal[None] & (suffix_valid[:, None, :] | ~suffix_valid[:, :, None])  # [B, M, M]
    cos_sin = adapter.rotary(hidden, positions)
    kinds = kinds_of(adapter)
    for i, layer in enumerate(adapter.layers):
        if kinds[i] == LINEAR:  # each row's state continues over its own suffix tokens only
            config = batch.text_config
            hidden = run_linear_layer(layer, i, hidden, positions, cos_sin, batch.cache, lengths, config)
            continue
        cached = batch.key_valid[i][:, None, :].expand(-1, m, -1)  # [B, M, W]
        mask = torch.cat([cached, suffix_keys], dim=2)[:, None]  # [B, 1, M, W + M]
        window = adapter.attention_window(i)
        if window is not None:
            mask = window_mask(mask, window)
        extra = adapter.layer_kwargs(i, cos_sin, batch.cache, None)
        hidden = run_layer(layer, hidden, positions, cos_sin, batch.cache, mask, extra)
        batch.key_valid[i] = torch.cat([batch.key_valid[i], suffix_valid], dim=1)
    logits = row_logits(adapter, hidden, lengths)  # [B, V]
    share = (time.perf_counter() - started) / max(1, len(batch))
    rows = [
        dataclasses.replace(
            row,
            cache=batch.cache,
            logits=logits[b : b + 1],
            position_ids=torch.cat([row.position_ids, suffix[1].to(row.position_ids.device)], dim=-1),
            # the suffix's keys follow the prompt's in every layer, in this run and in the unpruned one
            key_counts=[count + suffix[0].shape[1] for count in row.key_counts],
            length_in=row.length_in + suffix[0].shape[1],
            seconds=row.seconds + share,
            probe_passes=list(row.probe_passes),
        )
        for b, (row, suffix) in enumerate(zip(batch.rows, suffixes, strict=True))
    ]
    return Batch(batch.cache, batch.key_valid, rows, list(batch.index), batch.text_config), errors


@torch.inference_mode()
def extend(
    adapter: Adapter,
    prefix: PrefillResult,
    embeds: torch.Tensor,
    position_ids: torch.Tensor,
    *,
    reserve_tokens: int = 0,
) -> PrefillResult:
    """`extend_batch` of one row whose prefix cache holds only that row (grows `prefix.cache`)."""
    batch, errors = extend_batch(
        adapter,
        one_row_batch(prefix, adapter.text_config),
        [(embeds, position_ids)],
        reserve_tokens=reserve_tokens,
    )
    if errors:
        raise errors[0]
    return batch.rows[0]
