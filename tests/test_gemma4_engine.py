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
