"""Gemma 4 against its stock transformers model (tiny checkpoint, offline): sliding-window layers, layers
that share another layer's KV, per-layer embeddings and soft-capped logits, with and without pruning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlbcli.engine import batch as engine
from mlbcli.engine.cache import make_cache
from mlbcli.engine.rows import window_mask
from mlbcli.selection.plan import LayerKeep, PrunePlan

QUESTION = "What is happening in the video?"


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory):
    from mlbcli.models import load_adapter
    from mlbcli.testing.tiny_gemma4 import build_tiny_gemma4

    return load_adapter(str(build_tiny_gemma4(tmp_path_factory.mktemp("gemma-4-tiny-it"))), device="cpu")


@pytest.fixture(scope="module")
def videos(adapter):
    rng = np.random.default_rng(0)
    out = []
    for count in (3, 4, 2, 3):
        frames = rng.integers(0, 255, (count, 90, 120, 3), dtype=np.uint8)
        inputs = adapter.preprocess(frames)
        out.append((inputs, adapter.encode(inputs)))
    return out


def _top_k_plan(layer: int, keep: int) -> PrunePlan:
    """Keep the `keep` best-scored visual tokens before `layer` (scores of the adapter's probe layer)."""

    def prune(ctx: engine.LayerContext) -> LayerKeep:
        assert ctx.scores is not None
        return LayerKeep(ctx.scores.topk(keep).indices.sort().values, info={})

    return PrunePlan(steps={layer: prune}, needs_scores=frozenset({layer}))


def _run(adapter, items, plans, steps=6):
    inputs = [adapter.model_inputs(adapter.build_prompt(QUESTION, video), video) for _, video in items]
    batch, errors = engine.prefill_batch(adapter, inputs, plans)
    assert not errors, errors
    gens = engine.greedy_decode_batch(adapter, batch, max_new_tokens=steps, keep_logits=True)
    return batch, gens


def test_empty_schedule_reproduces_stock_generate(adapter, videos):
    for pixel, video in videos[:2]:
        prompt = adapter.build_prompt(QUESTION, video)
        _, (gen,) = _run(adapter, [(pixel, video)], [None])
        stock = adapter.model.generate(
            input_ids=prompt.input_ids,
            pixel_values_videos=pixel["pixel_values_videos"],
            video_position_ids=pixel["video_position_ids"],
            num_frames_per_video=torch.tensor([video.num_frames]),
            max_new_tokens=6,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
        )
        new = stock.sequences[0, prompt.length :].tolist()
        assert gen.token_ids[: len(new)] == new
        for ours, theirs in zip(gen.logits, stock.logits, strict=False):
            torch.testing.assert_close(ours, theirs[0].float(), rtol=1e-4, atol=1e-4)


def test_prompt_is_per_frame_with_timestamps(adapter, videos):
    _, video = videos[1]
    video.frame_indices, video.native_fps = [0, 30, 60, 90], 30.0
    prompt = adapter.build_prompt(QUESTION, video)
    assert "00:00 <|image>" in prompt.text and "00:03 <|image>" in prompt.text
    assert prompt.text.startswith("<bos>")
    slots = prompt.visual_slots()
    assert slots.numel() == video.num_visual == 4 * 63
    assert bool((prompt.input_ids[0, slots] == adapter.model.config.video_token_id).all())


def test_batch_of_four_equals_batch_one_under_pruning(adapter, videos):
    plans = [_top_k_plan(2, 40) for _ in videos]
    batch, gens = _run(adapter, videos, plans)
    for index, item in enumerate(videos):
        alone_batch, (alone,) = _run(adapter, [item], [plans[index]])
        assert gens[index].token_ids == alone.token_ids
        assert torch.equal(batch.rows[index].kept_ids, alone_batch.rows[0].kept_ids)


def test_keep_everything_equals_no_schedule(adapter, videos):
    everyone = [_top_k_plan(2, video.num_visual) for _, video in videos]
    _, kept = _run(adapter, videos, everyone)
    _, plain = _run(adapter, videos, [None] * len(videos))
    assert [g.token_ids for g in kept] == [g.token_ids for g in plain]


def test_probe_reads_a_global_layer_and_the_row_records_it(adapter, videos):
    # Layer 2 is a sliding one: pruning before layer 3 reads global layer 1, and says so.
    assert adapter.attention_window(2) is not None and adapter.probe_layer(2) == 1
    batch, _ = _run(adapter, videos[:1], [_top_k_plan(3, 30)])
    row = batch.rows[0]
    assert row.infos[3]["probe_layer"] == 1 and set(row.scores) == {1}
    assert adapter.attention_window(1) is None


def test_shared_kv_layers_hold_their_sources_cache(adapter, videos):
    sources = [adapter.kv_source(i) for i in range(len(adapter.layers))]
    assert sources == [0, 1, 2, 3, 4, 3, 4]
    cache = make_cache(adapter.text_config)
    assert cache.layers[5] is cache.layers[3] and cache.layers[6] is cache.layers[4]
    batch, _ = _run(adapter, videos[:2], [_top_k_plan(2, 30), None])
    # A pruned token is gone from every reader: the shared layers see exactly their sources' keys.
    assert torch.equal(batch.key_valid[5], batch.key_valid[3])
    # Pruning between a cache's writer (3) and its reader (5) would leave the token there: the step runs
    # before the writer instead, reads the layer before its new place, and says where it was planned.
    inputs = adapter.model_inputs(adapter.build_prompt(QUESTION, videos[0][1]), videos[0][1])
    moved, errors = engine.prefill_batch(adapter, [inputs], [_top_k_plan(5, 30)])
    assert not errors
    row = moved.rows[0]
    assert row.visual_per_layer == [inputs.visual_slots.numel()] * 3 + [30] * 4
    assert row.infos[3]["moved_from_layer"] == 5 and set(row.scores) == {adapter.probe_layer(2)}
    # ... unless another pruner already runs there: refused.
    two = PrunePlan(
        steps={**_top_k_plan(3, 40).steps, **_top_k_plan(5, 30).steps}, needs_scores=frozenset({3, 5})
    )
    _, errors = engine.prefill_batch(adapter, [inputs], [two])
    assert "reads the KV" in str(errors[0]) and "already prunes" in str(errors[0])


def test_window_mask_counts_kept_tokens():
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    mask = window_mask(causal, 3)
    assert mask[5].tolist() == [False, False, False, True, True, True]
    padded = torch.tensor([[True, False, True, True, False, True]])  # padding does not count
    assert window_mask(padded, 3).tolist() == [[False, False, True, True, False, True]]


def test_sliding_window_changes_the_answer(adapter, videos):
    """Guard: the window mask is really applied (a global mask everywhere gives other logits)."""
    _, (windowed,) = _run(adapter, videos[:1], [None], steps=2)
    saved = adapter.text_config.sliding_window
    adapter.text_config.sliding_window = 100000
    try:
        _, (unwindowed,) = _run(adapter, videos[:1], [None], steps=2)
    finally:
        adapter.text_config.sliding_window = saved
    assert not torch.allclose(windowed.logits[0], unwindowed.logits[0])
