"""GLM-4.1V / GLM-4.6V: per-patch timestamps in the prompt, 3-D positions kept under pruning, and the
attention probe (half-rotated heads, three RoPE sections) against the stock eager attention."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_engine import no_eos

from mlbcli.engine import batch as engine
from mlbcli.selection import MethodOptions, get_method

QUESTION = "What is happening in the video?"


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    from mlbcli.models import load_adapter
    from mlbcli.testing.tiny import build_tiny

    return {
        name: load_adapter(str(build_tiny(name, tmp_path_factory.mktemp(f"tiny-{name}"))), device="cpu")
        for name in ("glm4v", "glm46v")
    }


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (8, 90, 120, 3), dtype=np.uint8)


def engine_generate(adapter, video, question, max_new_tokens, plan=None):
    """Prefill with the adapter's own model inputs (interleaved visual slots) + greedy decode."""
    prompt = adapter.build_prompt(question, video)
    batch, errors = engine.prefill_batch(adapter, [adapter.model_inputs(prompt, video)], [plan])
    assert not errors, errors
    with no_eos(adapter):
        gen = engine.greedy_decode(adapter, batch.rows[0], max_new_tokens=max_new_tokens, keep_logits=True)
    return prompt, batch.rows[0], gen


def _video(adapter, frames):
    video = adapter.encode(adapter.preprocess(frames))
    # 8 of 300 frames at 30 fps (a 10 s video): patches start at frames 0, 84, 170, 256
    video.frame_indices = [0, 42, 84, 128, 170, 214, 256, 299]
    video.native_fps, video.sampled_fps = 30.0, 8 / 300 * 30
    return video


@pytest.mark.parametrize(
    ("name", "stamps"),
    [
        ("glm4v", ["0", "2", "5", "8"]),
        ("glm46v", ["0.0 seconds", "2.8 seconds", "5.7 seconds", "8.5 seconds"]),
    ],
)
def test_prompt_times_each_temporal_patch_by_its_first_frame(adapters, frames, name, stamps):
    adapter = adapters[name]
    video = _video(adapter, frames)
    prompt = adapter.build_prompt(QUESTION, video)
    assert prompt.text.startswith("[gMASK]<sop><|user|>\n<|begin_of_video|><|begin_of_image|>")
    parts = prompt.text.split("<|end_of_image|>")[1:]
    assert [part.split("<|")[0] for part in parts] == stamps
    mm = adapter.mm_token_type_ids(prompt)[0]
    slots = prompt.visual_slots()
    assert bool((mm[slots] == 2).all()) and int((mm != 0).sum()) == video.num_visual  # video frames: type 2


@pytest.mark.parametrize("method", ["uniform", "random"])
def test_pruned_run_keeps_the_3d_positions(adapters, frames, method):
    """Survivors keep their own (t, h, w) positions; logits equal the stock model fed those positions."""
    adapter = adapters["glm4v"]
    video = _video(adapter, frames)
    prompt = adapter.build_prompt(QUESTION, video)
    full = adapter.position_ids(prompt, video)  # [3, 1, L]
    assert not torch.equal(full[1], full[0])  # really 3-D: height and width axes differ from time
    plan = get_method(method, MethodOptions(keep=0.3, seed=3)).plan(video, prompt)
    decisions = []
    pruner = plan.steps[0]
    plan.steps[0] = lambda ctx: decisions.append(pruner(ctx)) or decisions[-1]
    _, state, gen = engine_generate(adapter, video, QUESTION, 3, plan)
    slots = prompt.visual_slots()
    kept = torch.zeros(prompt.length, dtype=torch.bool)
    kept[:] = True
    kept[slots] = False
    kept[slots[state.kept_ids]] = True
    keep = torch.nonzero(kept).flatten()
    assert 0 < state.kept_ids.numel() < video.num_visual
    assert torch.equal(state.position_ids, full[..., keep])  # not renumbered
    embeds = adapter.embed(prompt, video)
    if decisions[0].replace is not None:
        embeds[0, slots[state.kept_ids]] = decisions[0].replace.to(embeds.dtype)
    with torch.inference_mode():
        out = adapter.model(inputs_embeds=embeds[:, keep], position_ids=full[..., keep], logits_to_keep=1)
    assert torch.equal(out.logits[:, -1].float(), gen.logits[0][None])


@pytest.mark.parametrize("name", ["glm4v", "glm46v"])
def test_probe_matches_eager_attention(adapters, frames, name):
    adapter = adapters[name]
    video = _video(adapter, frames)
    prompt = adapter.build_prompt(QUESTION, video)
    seen = {}

    def keep_all(ctx: engine.LayerContext) -> engine.LayerKeep:
        seen["scores"] = ctx.scores
        return engine.LayerKeep(keep=torch.arange(ctx.visual_slots.numel()))

    engine_generate(
        adapter, video, QUESTION, 1, engine.PrunePlan(steps={2: keep_all}, needs_scores=frozenset({2}))
    )
    lm = adapter.decoder
    lm.config._attn_implementation = "eager"
    try:
        with torch.inference_mode():
            attn = lm(
                inputs_embeds=adapter.embed(prompt, video),
                position_ids=adapter.position_ids(prompt, video),
                output_attentions=True,
            ).attentions[1]  # [1, H, L, L]
    finally:
        lm.config._attn_implementation = "sdpa"
    expected = attn[0][:, prompt.question_index].mean(dim=(0, 1))[prompt.visual_slots()].float()
    torch.testing.assert_close(seen["scores"], expected, rtol=1e-5, atol=1e-7)
