"""Gemma 4's per-layer inputs and sliding windows in the engine's bookkeeping (tiny checkpoint, offline):
tokens merged before the LLM carry the per-layer inputs of their merged embedding (as the stock model fed
those embeddings computes them), and a sliding-window layer's decode reads count only its window."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlbcli.engine import batch as engine
from mlbcli.engine.rows import RowSequence, apply_keep
from mlbcli.selection.plan import LayerContext, LayerKeep, PrunePlan

QUESTION = "What is happening in the video?"


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory):
    from mlbcli.models import load_adapter
    from mlbcli.testing.tiny_gemma4 import build_tiny_gemma4

    return load_adapter(str(build_tiny_gemma4(tmp_path_factory.mktemp("gemma-4-tiny-it"))), device="cpu")


@pytest.fixture(scope="module")
def video(adapter):
    frames = np.random.default_rng(3).integers(0, 255, (3, 90, 120, 3), dtype=np.uint8)
    return adapter.encode(adapter.preprocess(frames))


def _pair_means(hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(keep [k], replace [k, D]) of visual states `hidden` [n, D] averaged in pairs (2j, 2j+1): each pair
    survives as its first token holding the pair's mean (an odd last token stays as it is)."""
    n = hidden.shape[0]
    keep = torch.arange(0, n, 2)
    partner = (keep + 1).clamp(max=n - 1)
    return keep, (hidden[keep] + hidden[partner]) / 2


def _pair_plan() -> PrunePlan:
    def prune(ctx: LayerContext) -> LayerKeep:
        keep, replace = _pair_means(ctx.hidden[0, ctx.visual_slots])
        return LayerKeep(keep.to(ctx.visual_slots.device), replace=replace)

    return PrunePlan(steps={0: prune})


def test_tokens_merged_before_the_llm_match_stock_fed_the_merged_embeddings(adapter, video):
    """Averaging pairs of visual tokens before layer 0 equals the stock model fed the merged embeddings at
    the kept positions, its per-layer inputs projected (by the stock model) from those embeddings. Per-layer
    inputs left as computed from each survivor's own embedding give other logits."""
    prompt = adapter.build_prompt(QUESTION, video)
    inputs = adapter.model_inputs(prompt, video)
    batch, errors = engine.prefill_batch(adapter, [inputs], [_pair_plan()])
    assert not errors, errors
    row = batch.rows[0]

    slots = prompt.visual_slots()
    embeds = adapter.embed(prompt, video)  # [1, L, D] stock input embeddings (video features at slots)
    kept_visual, merged = _pair_means(embeds[0, slots])
    embeds[0, slots[kept_visual]] = merged
    alive = torch.ones(prompt.length, dtype=torch.bool)
    alive[slots] = False
    alive[slots[kept_visual]] = True
    keep = alive.nonzero().flatten()  # [L'] slots of the pruned sequence
    full = adapter.position_ids(prompt, video)
    assert torch.equal(row.position_ids, full[..., keep]) and torch.equal(row.kept_ids, kept_visual)

    text_model = adapter.model.model.language_model
    with torch.inference_mode():
        # The token-identity part from the ids (visual ones as PAD, as the stock forward); the stock text
        # model adds the part it projects from `inputs_embeds`, i.e. from the merged embeddings.
        identity = text_model.get_per_layer_inputs(adapter._llm_ids(prompt.input_ids[:, keep]), None)
        out = adapter.model(
            inputs_embeds=embeds[:, keep],
            per_layer_inputs=identity,
            # An explicit mask: without one, transformers reads the gaps in `position_ids` as packed
            # sequences and masks across them, which is not the pruned sequence's causal attention.
            attention_mask=torch.ones(1, keep.numel(), dtype=torch.long),
            position_ids=full[..., keep],
            logits_to_keep=1,
        )
    torch.testing.assert_close(row.logits[0], out.logits[0, -1].float(), rtol=1e-4, atol=1e-4)


def test_a_state_replaced_inside_the_llm_keeps_its_per_layer_inputs():
    """Inside the LLM a replaced hidden state is no input embedding: the stock model computes per-layer
    inputs once, before layer 0, so the token keeps the ones it entered with (no recomputation asked)."""
    hidden = torch.randn(1, 5, 4)
    token_inputs = torch.randn(1, 5, 3, 2)
    slots = torch.tensor([1, 2, 3])
    empty = torch.zeros(0, dtype=torch.long)
    seq = RowSequence(hidden, torch.arange(5)[None], slots, torch.arange(3), empty, empty, token_inputs)
    decision = LayerKeep(torch.tensor([0, 2]), replace=torch.randn(2, 4))

    def refuse(embeds: torch.Tensor) -> torch.Tensor:
        raise AssertionError("per-layer inputs recomputed inside the LLM")

    later = apply_keep(seq, decision, 2, refuse)
    assert later.token_inputs is not None
    assert torch.equal(later.token_inputs, token_inputs[:, [0, 1, 3, 4]])
    fresh = torch.full((1, 2, 3, 2), 7.0)
    first = apply_keep(seq, decision, 0, lambda embeds: fresh)
    assert first.token_inputs is not None
    assert torch.equal(first.token_inputs[0, [1, 2]], fresh[0])  # the kept slots 1 and 3, now 1 and 2
    assert torch.equal(first.token_inputs[0, [0, 3]], token_inputs[0, [0, 4]])


def _top_k_plan(layer: int, keep: int) -> PrunePlan:
    def prune(ctx: LayerContext) -> LayerKeep:
        assert ctx.scores is not None
        return LayerKeep(ctx.scores.topk(keep).indices.sort().values, info={})

    return PrunePlan(steps={layer: prune}, needs_scores=frozenset({layer}))


def _stock_window_reads(length: int, slots: torch.Tensor, step: int, window: int | None) -> int:
    """Visual keys (at `slots` of a `length`-token prompt) the token of decode `step` attends to, by
    transformers' own sliding rule: query q sees key k when q - window < k <= q (global: every key)."""
    if window is None:
        return int(slots.numel())
    query = length + step  # the prompt, the `step` tokens generated before, then this one
    return int(((slots > query - window) & (slots <= query)).sum())


def test_decode_kv_ratio_counts_only_a_sliding_layers_window(adapter, video):
    """More visual tokens than the window: a sliding layer reads (and the unpruned model would read) only
    the visual keys inside its window; the ratio equals the one counted from stock's sliding rule on the
    pruned and the unpruned sequences, layer by layer and step by step (not the count of every key)."""
    from helpers_engine import no_eos

    from mlbcli.engine.decode import Generation
    from mlbcli.engine.flops import LLMDims
    from mlbcli.engine.stats import decode_kv_ratio

    saved = adapter.text_config.sliding_window
    adapter.text_config.sliding_window = 48  # reaches back into the visual block, not over all of it
    try:
        prompt = adapter.build_prompt(QUESTION, video)
        batch, errors = engine.prefill_batch(
            adapter, [adapter.model_inputs(prompt, video)], [_top_k_plan(2, 60)]
        )
        assert not errors, errors
        with no_eos(adapter):
            (gen,) = engine.greedy_decode_batch(adapter, batch, max_new_tokens=4)
        state = batch.rows[0]
        assert len(gen.token_ids) == 4  # three decode steps

        slots = prompt.visual_slots()
        alive = torch.ones(prompt.length, dtype=torch.bool)
        alive[slots] = False
        alive[slots[state.kept_ids]] = True
        pruned_slots = (alive.cumsum(0) - 1)[slots[state.kept_ids]]  # kept tokens' slots after pruning
        windows = [adapter.attention_window(i) for i in range(len(adapter.layers))]
        assert video.num_visual > 48 and any(w is not None for w in windows)

        def counted(step: int) -> tuple[int, int]:
            read = full = 0
            for i, window in enumerate(windows):  # pruning before layer 2: layers 0, 1 see every token
                length, kept = (prompt.length, slots) if i < 2 else (int(alive.sum()), pruned_slots)
                read += _stock_window_reads(length, kept, step, window)
                full += _stock_window_reads(prompt.length, slots, step, window)
            return read, full

        read, full = (sum(column) for column in zip(*(counted(step) for step in range(3)), strict=True))
        assert (gen.visual_keys_read, gen.visual_keys_full) == (read, full)
        assert read < sum(state.visual_per_layer) * 3  # the window really leaves keys out

        # No decode step (one token): the stats count what the first step would read, by the same rule.
        dims = LLMDims.from_config(
            adapter.text_config,
            adapter.layer_kinds(adapter.text_config),
            [adapter.kv_source(i) for i in range(len(adapter.layers))],
        )
        first_read, first_full = counted(0)
        ratio = decode_kv_ratio(state, Generation([], [], 0.0), dims)
        assert ratio == pytest.approx(first_read / first_full)
    finally:
        adapter.text_config.sliding_window = saved


def test_decode_policy_in_the_shared_kv_span_and_extending_are_refused(adapter, video):
    """A decode policy from layer 5 would hide keys from no layer (5 and 6 read the caches of 3 and 4),
    and a suffix given as embeddings has no per-layer inputs: both are refused with a clear error."""
    from mlbcli.selection.plan import DecodePolicy

    class Late(DecodePolicy):
        layer = 5
        needs_attention = False

    inputs = adapter.model_inputs(adapter.build_prompt(QUESTION, video), video)
    _, errors = engine.prefill_batch(adapter, [inputs], [PrunePlan(decode_policy=Late())])
    assert "layer 5 reads the KV cache of layer 3" in str(errors[0]) and "<= 3" in str(errors[0])

    batch, errors = engine.prefill_batch(adapter, [inputs], [None])
    assert not errors
    suffix = adapter.embed_ids(torch.tensor([[5, 6]]))
    with pytest.raises(ValueError, match="per-layer embeddings"):
        engine.extend_batch(adapter, batch, [(suffix, torch.tensor([[inputs.length, inputs.length + 1]]))])
