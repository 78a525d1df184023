"""Pruned runs of the 2026 families against the stock transformers model fed the pruned input (tiny
checkpoints, offline): Qwen3.5 (hybrid linear attention, M-RoPE) and Gemma 4 (1-D positions).

The reference is never one of our own runs: a layer-0 pruning planned as the pipeline plans it runs
through the engine, and the stock model receives the kept embeddings at the kept tokens' own positions
(taken from the unpruned prompt) with an explicit all-ones attention mask (without one, transformers
reads the gaps in `position_ids` as packed sequences). First-token logits and a few greedy steps must
agree; the same stock model fed renumbered (contiguous) positions must not, so the equality pins the
positions. Gemma 4's positions are also checked against the ones the stock forward builds itself.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_engine import no_eos

from mlbcli.engine import batch as engine
from mlbcli.selection import MethodOptions, get_method
from mlbcli.selection.base import PlanContext

QUESTION = "What is happening in the video?"
STEPS = 4
TOL = {"rtol": 1e-4, "atol": 1e-4}


@pytest.fixture(scope="module")
def qwen(tmp_path_factory: pytest.TempPathFactory):
    from mlbcli.models import load_adapter
    from mlbcli.testing.tiny import build_tiny

    return load_adapter(str(build_tiny("qwen3_5", tmp_path_factory.mktemp("Qwen3.5-tiny"))), device="cpu")


@pytest.fixture(scope="module")
def gemma(tmp_path_factory: pytest.TempPathFactory):
    from mlbcli.models import load_adapter
    from mlbcli.testing.tiny_gemma4 import build_tiny_gemma4

    return load_adapter(str(build_tiny_gemma4(tmp_path_factory.mktemp("gemma-4-tiny-it"))), device="cpu")


def _frames(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (count, 90, 120, 3), dtype=np.uint8)


def _pruned_engine_run(adapter, video, method: str, mrope: bool):
    """(prompt, row, generation, decision, keep): a layer-0 `method` plan at keep 0.5, run as the pipeline
    runs it; `keep` [L'] are the prompt slots of the pruned sequence."""
    prompt = adapter.build_prompt(QUESTION, video)
    plan = get_method(method, MethodOptions(keep=0.5, seed=3)).plan_with_context(
        video, prompt, PlanContext(mrope=mrope)
    )
    assert set(plan.steps) == {0}
    decisions = []
    pruner = plan.steps[0]
    plan.steps[0] = lambda ctx: decisions.append(pruner(ctx)) or decisions[-1]
    batch, errors = engine.prefill_batch(adapter, [adapter.model_inputs(prompt, video)], [plan])
    assert not errors, errors
    row = batch.rows[0]
    with no_eos(adapter):
        gen = engine.greedy_decode(adapter, row, max_new_tokens=STEPS, keep_logits=True)
    slots = prompt.visual_slots()
    assert 0 < row.kept_ids.numel() < slots.numel()
    alive = torch.ones(prompt.length, dtype=torch.bool)
    alive[slots] = False
    alive[slots[row.kept_ids]] = True
    keep = alive.nonzero().flatten()
    (decision,) = decisions
    return prompt, row, gen, decision, keep


def _kept_embeddings(adapter, prompt, video, row, decision, keep) -> torch.Tensor:
    """Stock input embeddings of the pruned sequence (pooled states where the method replaces them)."""
    embeds = adapter.embed(prompt, video)
    if decision.replace is not None:  # uniform pools: the kept tokens carry pooled states
        embeds[0, prompt.visual_slots()[row.kept_ids]] = decision.replace.to(embeds.dtype)
    return embeds[:, keep]


def _differs(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool((a.float() - b.float()).abs().max() > 1e-3)


# -- Qwen3.5: hybrid linear attention, M-RoPE --------------------------------------------------------------


@pytest.mark.parametrize("method", ["random", "uniform"])
def test_qwen3_5_pruned_run_equals_stock_on_the_pruned_input(qwen, method):
    adapter = qwen
    video = adapter.encode(adapter.preprocess(_frames(7, seed=0)))
    video.timestamps_s = [0.25 * i for i in range(7)]
    prompt, row, gen, decision, keep = _pruned_engine_run(adapter, video, method, mrope=True)
    full = adapter.position_ids(prompt, video)  # [3, 1, L] from the stock get_rope_index
    assert full.shape == (3, 1, prompt.length)
    assert torch.equal(row.position_ids, full[..., keep])
    embeds = _kept_embeddings(adapter, prompt, video, row, decision, keep)
    n = keep.numel()
    # The stock 4-row layout: row 0 the text positions (cache positions, for the masks), rows 1-3 M-RoPE.
    text = torch.arange(n).view(1, 1, n)
    positions = torch.cat([text, full[..., keep]])
    ones = torch.ones(1, n, dtype=torch.long)
    model = adapter.model
    with torch.inference_mode():
        out = model(
            inputs_embeds=embeds,
            position_ids=positions,
            attention_mask=ones,
            use_cache=True,
            logits_to_keep=1,
        )
        torch.testing.assert_close(gen.logits[0], out.logits[0, -1].float(), **TOL)
        # Stock decoding: position = cache length + rope_deltas, the deltas of the kept positions.
        model.model.rope_deltas = (full[..., keep].max() + 1 - n).view(1, 1)
        try:
            cache = out.past_key_values
            for step in range(1, STEPS):
                token = torch.tensor([[gen.token_ids[step - 1]]])
                step_out = model(input_ids=token, past_key_values=cache, use_cache=True)
                cache = step_out.past_key_values
                torch.testing.assert_close(gen.logits[step], step_out.logits[0, -1].float(), **TOL)
                assert int(step_out.logits[0, -1].argmax()) == gen.token_ids[step]
        finally:
            model.model.rope_deltas = None
        # Renumbered positions (contiguous, as if the pruned sequence were a fresh prompt) give other logits.
        contiguous = torch.arange(n).view(1, 1, n).expand(4, 1, n)
        renumbered = model(
            inputs_embeds=embeds, position_ids=contiguous, attention_mask=ones, logits_to_keep=1
        )
        assert _differs(renumbered.logits[0, -1], gen.logits[0])


# -- Gemma 4: 1-D positions ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["random", "uniform"])
def test_gemma4_pruned_run_equals_stock_on_the_pruned_input(gemma, method):
    adapter = gemma
    video = adapter.encode(adapter.preprocess(_frames(3, seed=3)))
    prompt, row, gen, decision, keep = _pruned_engine_run(adapter, video, method, mrope=False)
    full = adapter.position_ids(prompt, video)
    assert torch.equal(row.position_ids, full[..., keep])
    embeds = _kept_embeddings(adapter, prompt, video, row, decision, keep)
    n = keep.numel()
    assert int(full[..., keep].max()) + 1 > n  # pruning leaves a gap for the positions to keep
    text_model = adapter.model.model.language_model
    model = adapter.model

    def stock(position_ids: torch.Tensor, **kwargs):
        # Per-layer inputs: the identity part from the ids (visual ones as PAD, as the stock forward); the
        # stock text model projects the other part from `inputs_embeds`.
        identity = text_model.get_per_layer_inputs(adapter._llm_ids(prompt.input_ids[:, keep]), None)
        return model(
            inputs_embeds=embeds,
            per_layer_inputs=identity,
            attention_mask=torch.ones(1, n, dtype=torch.long),
            position_ids=position_ids,
            **kwargs,
        )

    with torch.inference_mode():
        out = stock(full[..., keep], use_cache=True, logits_to_keep=1)
        torch.testing.assert_close(gen.logits[0], out.logits[0, -1].float(), **TOL)
        cache = out.past_key_values
        for step in range(1, STEPS):
            token = torch.tensor([[gen.token_ids[step - 1]]])
            step_out = model(
                input_ids=token,
                past_key_values=cache,
                position_ids=(full.max() + step).view(1, 1),  # the prompt's last position + 1, + 1, ...
                attention_mask=torch.ones(1, n + step, dtype=torch.long),
                use_cache=True,
            )
            cache = step_out.past_key_values
            torch.testing.assert_close(gen.logits[step], step_out.logits[0, -1].float(), **TOL)
            assert int(step_out.logits[0, -1].argmax()) == gen.token_ids[step]
        renumbered = stock(torch.arange(n)[None], logits_to_keep=1)
        assert _differs(renumbered.logits[0, -1], gen.logits[0])


def test_gemma4_positions_are_the_ones_the_stock_forward_builds(gemma):
    """The adapter's position ids equal those the stock forward computes itself (no position_ids given),
    read where it feeds them to its rotary embedding; and our unpruned prefill's logits equal stock's."""
    adapter = gemma
    pixel = adapter.preprocess(_frames(3, seed=5))
    video = adapter.encode(pixel)
    prompt = adapter.build_prompt(QUESTION, video)
    seen: list[torch.Tensor] = []

    def capture(module, args, kwargs):
        seen.append((args[1] if len(args) > 1 else kwargs["position_ids"]).clone())

    rotary = adapter.model.model.language_model.rotary_emb
    handle = rotary.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        with torch.inference_mode():
            out = adapter.model(
                input_ids=prompt.input_ids,
                pixel_values_videos=pixel["pixel_values_videos"],
                video_position_ids=pixel["video_position_ids"],
                num_frames_per_video=torch.tensor([video.num_frames]),
                logits_to_keep=1,
            )
    finally:
        handle.remove()
    assert seen, "the stock forward never reached its rotary embedding"
    ours = adapter.position_ids(prompt, video)
    for stock_positions in seen:  # one call per layer type (sliding / full)
        assert torch.equal(stock_positions.to(ours.device), ours)
    batch, errors = engine.prefill_batch(adapter, [adapter.model_inputs(prompt, video)], [None])
    assert not errors, errors
    torch.testing.assert_close(batch.rows[0].logits[0], out.logits[0, -1].float(), **TOL)
