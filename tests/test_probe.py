"""The engine's layer-K probe equals the rows of eager attention (`output_attentions=True`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlbcli.engine import batch as engine

QUESTION = "What is happening in the video?"


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tiny_adapter):
    from transformers import LlavaOnevisionForConditionalGeneration

    eager = LlavaOnevisionForConditionalGeneration.from_pretrained(
        str(tiny_model_dir), attn_implementation="eager", dtype=torch.float32
    ).eval()
    frames = np.random.default_rng(3).integers(0, 255, (6, 90, 120, 3), dtype=np.uint8)
    video = tiny_adapter.encode(tiny_adapter.preprocess(frames))
    prompt = tiny_adapter.build_prompt(QUESTION, video)
    embeds = tiny_adapter.embed(prompt, video)
    positions = tiny_adapter.position_ids(prompt, video)
    with torch.inference_mode():
        out = eager.model.language_model(inputs_embeds=embeds, position_ids=positions, output_attentions=True)
    return tiny_adapter, video, prompt, embeds, positions, out.attentions


def _keep_all(ctx: engine.LayerContext) -> engine.LayerKeep:
    return engine.LayerKeep(keep=torch.arange(ctx.visual_slots.numel()))


@pytest.mark.parametrize("layer", [1, 2, 3])
@pytest.mark.parametrize("query", ["question", "last"])
def test_probe_matches_eager_attention(setup, layer, query):
    adapter, video, prompt, embeds, positions, attentions = setup
    visual = torch.arange(prompt.visual_start, prompt.visual_start + prompt.num_visual)
    plan = engine.PrunePlan(steps={layer: _keep_all}, needs_scores=frozenset({layer}), query=query)
    state = engine.prefill(adapter, embeds, positions, visual, prompt.question_index, plan)
    rows = prompt.question_index if query == "question" else torch.tensor([prompt.length - 1])
    expected = attentions[layer - 1][0].float()[:, rows].mean(dim=(0, 1))[visual]  # [n]
    assert state.scores[layer - 1].shape == (video.num_visual,)
    torch.testing.assert_close(state.scores[layer - 1], expected, rtol=0, atol=1e-5)
    # Keeping everything after probing changes nothing downstream.
    plain = engine.prefill(adapter, embeds, positions, visual, prompt.question_index)
    torch.testing.assert_close(state.logits, plain.logits, rtol=0, atol=1e-5)


def test_max_reduction_is_the_largest_probability_any_head_gives_from_any_row():
    """`PrunePlan.probe_reduce="max"` (PruneVid official): per key, the max over heads and query rows of
    the same probabilities the mean averages; it differs from the mean and bounds it from above."""
    import torch

    from mlbcli.engine.probe import ProbeCapture

    class Attn:
        head_dim, scaling = 4, 0.5

    def no_rotary(q, k, cos, sin):
        return q, k

    capture = ProbeCapture(Attn(), no_rotary)
    generator = torch.Generator().manual_seed(0)
    capture.q = torch.randn(1, 6, 2 * 4, generator=generator)  # [B, L, Hq*d], 2 heads
    capture.k = torch.randn(1, 6, 2 * 4, generator=generator)
    capture.cos_sin = (torch.zeros(1, 6, 4), torch.zeros(1, 6, 4))
    rows = torch.tensor([4, 5])
    p = capture.probabilities(0, rows, 6)[0]  # [H, q, L]
    assert torch.equal(capture.received(0, rows, 6, "max"), p.amax(dim=(0, 1)))
    assert torch.equal(capture.received(0, rows, 6), p.mean(dim=(0, 1)))
    assert bool((capture.received(0, rows, 6, "max") >= capture.received(0, rows, 6)).all())


def test_prunevid_official_reads_the_max_and_exact_the_mean():
    import torch

    from mlbcli.models.base import VideoTokens
    from mlbcli.selection import MethodOptions, get_method

    video = VideoTokens(torch.randn(4, 16, 8), (4, 4), None, None)
    official = get_method("prunevid", MethodOptions(variant="official")).plan(video, None)
    exact = get_method("prunevid", MethodOptions(keep=0.5)).plan(video, None)
    assert (official.probe_reduce, exact.probe_reduce) == ("max", "mean")
