"""Qwen3-VL, Qwen3-VL-MoE and LLaVA-Video against their stock transformers models (tiny checkpoints, offline).

Qwen3-VL is the family where the prompt interleaves text with the visual tokens (one timestamp per
temporal patch) and where the LLM adds per-layer visual features (DeepStack) at the visual tokens; these
tests pin both against the stock model, including under pruning, and check that a misalignment of the
DeepStack features (or renumbered positions) would be caught.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from helpers_engine import stock_generate

from mlbcli.engine import batch as engine
from mlbcli.engine.pipeline import Pipeline

QUESTION = "What is happening in the video?"
QWEN3 = ["qwen3_vl", "qwen3_vl_moe"]
FAMILIES = [*QWEN3, "llava_video"]
TIMESTAMPS = [0.25 * i for i in range(7)]  # 7 frames sampled at 4 fps
METHODS = ["none", "uniform", "random", "fastv", "adatp", "mlb", "visionzip", "dycoke", "slowfast"]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from mlbcli.testing.tiny import build_tiny_llava_video, build_tiny_qwen3_vl

    return {
        "qwen3_vl": str(build_tiny_qwen3_vl(tmp_path_factory.mktemp("qwen3_vl"))),
        "qwen3_vl_moe": str(build_tiny_qwen3_vl(tmp_path_factory.mktemp("qwen3_vl_moe"), moe=True)),
        # named like the hub repo: LLaVA-Video is a llava_onevision checkpoint told apart by its name
        "llava_video": str(build_tiny_llava_video(tmp_path_factory.mktemp("LLaVA-Video-7B-Qwen2-hf"))),
    }


@pytest.fixture(scope="module")
def adapters(model_dirs):
    from mlbcli.models import load_adapter

    return {name: load_adapter(path, device="cpu") for name, path in model_dirs.items()}


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    # 7 frames: an odd count, so Qwen pads the last temporal patch with a repeated frame.
    return np.random.default_rng(0).integers(0, 255, (7, 90, 120, 3), dtype=np.uint8)


def _encode(adapter, frames, timestamps=TIMESTAMPS):
    video = adapter.encode(adapter.preprocess(frames))
    video.timestamps_s = list(timestamps)  # what Pipeline.encode does with decoded Frames
    return video


def _run(adapter, video, plan=None, max_new_tokens=8, question=QUESTION):
    """Prefill (with the adapter's own model inputs: interleaved slots, DeepStack) + greedy decode."""
    prompt = adapter.build_prompt(question, video)
    batch, errors = engine.prefill_batch(adapter, [adapter.model_inputs(prompt, video)], [plan])
    assert not errors, errors
    state = batch.rows[0]
    saved = adapter.model.generation_config.eos_token_id
    adapter.model.generation_config.eos_token_id = -1  # compare every one of the logits
    try:
        gen = engine.greedy_decode(adapter, state, max_new_tokens=max_new_tokens, keep_logits=True)
    finally:
        adapter.model.generation_config.eos_token_id = saved
    return prompt, state, gen


def _stock_kwargs(name, adapter, frames, prompt):
    """The inputs stock `generate()` takes, as the official processor would build them."""
    pixel = adapter.preprocess(frames)
    if name == "llava_video":
        return {"pixel_values_videos": pixel["pixel_values_videos"]}
    return {
        "pixel_values_videos": pixel["pixel_values_videos"],
        "video_grid_thw": pixel["video_grid_thw"],
        "mm_token_type_ids": adapter.mm_token_type_ids(prompt),
    }


# -- parity with stock generate ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILIES)
def test_empty_schedule_reproduces_stock_generate(adapters, frames, name):
    adapter = adapters[name]
    video = _encode(adapter, frames)
    prompt, _, gen = _run(adapter, video, max_new_tokens=10)
    out = stock_generate(
        adapter, 10, input_ids=prompt.input_ids, **_stock_kwargs(name, adapter, frames, prompt)
    )
    assert gen.token_ids == out.sequences[0, prompt.length :].tolist()
    for ours, theirs in zip(gen.logits, out.logits, strict=True):
        assert torch.equal(ours, theirs[0].float())  # identical, not merely close


@pytest.mark.parametrize("name", FAMILIES)
def test_output_depends_on_video(adapters, frames, name):
    """Guards the tiny model itself: a model that ignores the video would make the tests vacuous."""
    adapter = adapters[name]
    a = _run(adapter, _encode(adapter, frames), max_new_tokens=6)[2].token_ids
    b = _run(adapter, _encode(adapter, np.full_like(frames, 200)), max_new_tokens=6)[2].token_ids
    assert a != b


# -- Qwen3-VL preprocessing and prompt -------------------------------------------------------------------------


def test_qwen3_preprocess_layout_and_volume_bounds(adapters, frames):
    adapter = adapters["qwen3_vl"]
    pixel = adapter.preprocess(frames)
    # T'=8 x 90x120 exceeds the 8*64*96 volume: beta = sqrt(7*90*120 / 49152) -> 64x96 px -> 4x6 patches.
    assert pixel["video_grid_thw"].tolist() == [[4, 4, 6]]
    assert pixel["pixel_values_videos"].shape == (4 * 4 * 6, 3 * 2 * 16 * 16)
    last = pixel["pixel_values_videos"][-24:].view(24, 3, 2, 16 * 16)  # odd count: frame 6 repeated
    assert torch.equal(last[:, :, 0], last[:, :, 1])
    video = adapter.encode(pixel)
    assert video.features.shape[:2] == (4, 6) and video.grid == (2, 3)
    assert sorted(video.layer_features) == [0, 1]  # DeepStack into LLM layers 0 and 1
    assert all(f.shape == video.features.shape for f in video.layer_features.values())
    # The bound is on the whole video: twice the frames, a smaller frame (Qwen2-VL's is per frame).
    assert adapter.preprocess(np.concatenate([frames, frames]))["video_grid_thw"].tolist() == [[7, 2, 4]]
    # --max-pixels is per frame: x frames -> volume (7 x 64*96; smart_resize floors 90x120 to 64x64 px).
    adapter.max_pixels = 64 * 96
    try:
        assert adapter.volume_bounds(7) == (4096, 7 * 64 * 96)
        assert adapter.preprocess(frames)["video_grid_thw"].tolist() == [[4, 4, 4]]
    finally:
        adapter.max_pixels = None
    image_only = type(adapter)(
        adapter.model, adapter.tokenizer, "x", {"image_processor_type": "Qwen2VLImageProcessor"}
    )
    assert image_only.volume_bounds(8) == (4096, 25165824)  # the published video bounds, not the image's


def test_qwen3_prompt_timestamps_from_real_timestamps(adapters, frames):
    """One `<t seconds>` per temporal patch, t = mean of its first and last REAL frame time; the whole
    `<|vision_start|><|video_pad|><|vision_end|>` is replaced (no nested vision markers)."""
    adapter = adapters["qwen3_vl"]
    video = _encode(adapter, frames, timestamps=[0.0, 1.0, 2.5, 3.0, 10.0, 10.4, 12.0])
    prompt = adapter.build_prompt(QUESTION, video)
    # patches (0, 1) (2.5, 3) (10, 10.4) (12, 12 repeated): the processor's _calculate_timestamps
    stamps = ["<0.5 seconds>", "<2.8 seconds>", "<10.2 seconds>", "<12.0 seconds>"]
    block = "".join(f"{s}<|vision_start|><|video_pad|><|vision_end|>" for s in stamps)
    assert prompt.text == f"<|im_start|>user\n{block}{QUESTION}<|im_end|>\n<|im_start|>assistant\n"
    from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor

    # the stock helper on frame indices at 10 fps gives the same values
    stock = Qwen3VLProcessor._calculate_timestamps(None, [0, 10, 25, 30, 100, 104, 120], 10.0, 2)
    assert [f"<{t:.1f} seconds>" for t in stock] == stamps
    ids = prompt.input_ids[0]
    slots = prompt.visual_slots()
    assert slots.numel() == video.num_visual and bool(
        (ids[slots] == adapter.model.config.video_token_id).all()
    )
    assert int((ids == adapter.model.config.video_token_id).sum()) == video.num_visual
    assert int((ids == adapter.model.config.vision_start_token_id).sum()) == 4  # one per patch, no outer one
    # the patches are separated by timestamp text: the slots are not contiguous
    assert (
        prompt.num_extra > 0 and prompt.visual_start + prompt.num_visual + prompt.num_extra == slots[-1] + 1
    )
    # question rows are the question's tokens, after the video
    assert adapter.tokenizer.decode(ids[prompt.question_index]).strip() == QUESTION
    # without timestamps: frames sampled at the checkpoint's fps (2)
    video.timestamps_s = []
    assert adapter.patch_timestamps(video) == [0.25, 1.25, 2.25, 3.25]


def test_select_rows_keeps_timestamps_and_deepstack_per_temporal_patch(adapters, frames):
    """The mlb method's probe passes see row subsets: their prompt needs the rows' own frame times."""
    adapter = adapters["qwen3_vl"]
    video = _encode(adapter, frames)
    part = video.select_rows(1, 3)
    assert part.timestamps_s == TIMESTAMPS[2:6]  # 2 sampled frames per row
    assert torch.equal(part.layer_features[1], video.layer_features[1][1:3])
    assert adapter.patch_timestamps(part) == adapter.patch_timestamps(video)[1:3]


# -- DeepStack and positions under pruning -----------------------------------------------------------------


def _shallow(module: torch.nn.Module) -> torch.nn.Module:
    """A copy sharing the weights whose submodules can be replaced without touching the original."""
    clone = copy.copy(module)
    clone._modules = dict(module._modules)
    return clone


def _reference_logits(adapter, prompt, video, keep_before: torch.Tensor, cut: int = 0, keep_at_cut=None):
    """The stock text model's own forward (its `_deepstack_process`) on the tokens that survive.

    keep_before: visual ids entering the LLM. With `cut` K > 0, visual ids `keep_at_cut` (a subset) go on
    from layer K: the first K layers run as one stock forward, the rest as a second stock forward of a
    copy holding only layers K.. and the DeepStack features from layer K on (restricted to the survivors).
    """
    lm = adapter.decoder
    positions = adapter.position_ids(prompt, video)  # [3, 1, L]
    embeds = adapter.embed(prompt, video)
    slots = prompt.visual_slots()
    L = prompt.length

    def rows(visual_ids):
        alive = torch.ones(L, dtype=torch.bool)
        alive[slots] = False
        alive[slots[visual_ids]] = True
        return alive.nonzero().squeeze(1), alive

    def deepstack(visual_ids, layers):
        return [video.layer_features[layer].reshape(-1, embeds.shape[-1])[visual_ids] for layer in layers]

    index, alive = rows(keep_before)
    mask = torch.zeros(L, dtype=torch.bool)
    mask[slots[keep_before]] = True
    layers = sorted(video.layer_features)
    with torch.inference_mode():
        if cut == 0:
            out = lm(
                inputs_embeds=embeds[:, index],
                position_ids=positions[..., index],
                visual_pos_masks=mask[index][None],
                deepstack_visual_embeds=deepstack(keep_before, layers),
            ).last_hidden_state
            return adapter.lm_head(out[:, -1]).float()
        head = _shallow(lm)
        head.layers = lm.layers[:cut]
        head.norm = torch.nn.Identity()
        hidden = head(
            inputs_embeds=embeds[:, index],
            position_ids=positions[..., index],
            visual_pos_masks=mask[index][None],
            deepstack_visual_embeds=deepstack(keep_before, [x for x in layers if x < cut]),
        ).last_hidden_state
        later, later_alive = rows(keep_at_cut)
        tail = _shallow(lm)
        tail.layers = lm.layers[cut:]
        mask_later = torch.zeros(L, dtype=torch.bool)
        mask_later[slots[keep_at_cut]] = True
        out = tail(
            inputs_embeds=hidden[:, later_alive[index]],
            position_ids=positions[..., later],
            visual_pos_masks=mask_later[later][None],
            deepstack_visual_embeds=deepstack(keep_at_cut, [x for x in layers if x >= cut]),
        ).last_hidden_state
        return adapter.lm_head(out[:, -1]).float()


def _fixed(keep: torch.Tensor):
    """A pruner that keeps the given visual ids (of those still alive)."""

    def prune(ctx: engine.LayerContext) -> engine.LayerKeep:
        return engine.LayerKeep(keep=torch.isin(ctx.visual_ids, keep).nonzero().squeeze(1))

    return prune


@pytest.mark.parametrize("name", QWEN3)
def test_deepstack_follows_tokens_pruned_before_the_llm(adapters, frames, name):
    adapter = adapters[name]
    video = _encode(adapter, frames)
    n = video.num_visual
    keep = torch.randperm(n, generator=torch.Generator().manual_seed(1))[: n // 3].sort().values
    plan = engine.PrunePlan(steps={0: _fixed(keep)})
    prompt, state, gen = _run(adapter, video, plan, max_new_tokens=1)
    assert torch.equal(state.kept_ids, keep)
    expected = _reference_logits(adapter, prompt, video, keep)
    assert torch.equal(gen.logits[0][None], expected)
    # 3-D positions of the survivors are their own (never renumbered)
    full = adapter.position_ids(prompt, video)
    alive = torch.ones(prompt.length, dtype=torch.bool)
    alive[prompt.visual_slots()] = False
    alive[prompt.visual_slots()[keep]] = True
    assert torch.equal(state.position_ids, full[..., alive])
    assert not torch.equal(state.position_ids[0, 0], torch.arange(int(alive.sum())))


@pytest.mark.parametrize("name", QWEN3)
def test_deepstack_stops_for_tokens_pruned_inside_the_llm(adapters, frames, name):
    """Pruned before layer 1: survivors get layer 1's DeepStack features, the pruned ones nothing more."""
    adapter = adapters[name]
    video = _encode(adapter, frames)
    n = video.num_visual
    keep = torch.randperm(n, generator=torch.Generator().manual_seed(2))[: n // 2].sort().values
    plan = engine.PrunePlan(steps={1: _fixed(keep)})
    prompt, state, gen = _run(adapter, video, plan, max_new_tokens=1)
    assert torch.equal(state.kept_ids, keep)
    expected = _reference_logits(adapter, prompt, video, torch.arange(n), cut=1, keep_at_cut=keep)
    torch.testing.assert_close(gen.logits[0][None], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cut", [0, 1])
def test_misaligned_deepstack_would_be_caught(adapters, frames, cut):
    """The tests above fail when a token receives another token's DeepStack features."""
    adapter = adapters["qwen3_vl"]
    video = _encode(adapter, frames)
    n = video.num_visual
    keep = torch.randperm(n, generator=torch.Generator().manual_seed(3))[: n // 2].sort().values
    prompt = adapter.build_prompt(QUESTION, video)
    expected = (
        _reference_logits(adapter, prompt, video, keep)
        if cut == 0
        else _reference_logits(adapter, prompt, video, torch.arange(n), cut=1, keep_at_cut=keep)
    )
    shuffled = copy.copy(video)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(4))
    shuffled.layer_features = {
        layer: f.reshape(n, -1)[perm].reshape(f.shape) for layer, f in video.layer_features.items()
    }
    _, _, gen = _run(adapter, shuffled, engine.PrunePlan(steps={cut: _fixed(keep)}), max_new_tokens=1)
    assert (gen.logits[0][None] - expected).abs().max() > 1e-3
    # and the engine's own result with the right features matches (the control)
    _, _, right = _run(adapter, video, engine.PrunePlan(steps={cut: _fixed(keep)}), max_new_tokens=1)
    torch.testing.assert_close(right.logits[0][None], expected, rtol=1e-5, atol=1e-5)


def test_renumbered_positions_would_be_caught(adapters, frames):
    """The M-RoPE test above fails if survivors were re-sequenced: the logits would differ."""
    adapter = adapters["qwen3_vl"]
    video = _encode(adapter, frames)
    n = video.num_visual
    keep = torch.arange(0, n, 3)
    prompt = adapter.build_prompt(QUESTION, video)
    inputs = adapter.model_inputs(prompt, video)
    alive = torch.ones(prompt.length, dtype=torch.bool)
    alive[prompt.visual_slots()] = False
    alive[prompt.visual_slots()[keep]] = True
    renumbered = inputs.position_ids.clone()
    renumbered[..., alive] = torch.arange(int(alive.sum())).expand(3, 1, -1)
    inputs.position_ids = renumbered
    batch, _ = engine.prefill_batch(adapter, [inputs], [engine.PrunePlan(steps={0: _fixed(keep)})])
    expected = _reference_logits(adapter, prompt, video, keep)
    assert not torch.equal(batch.rows[0].logits, expected)


def test_tokens_without_deepstack_features_are_refused(adapters, frames):
    from mlbcli.errors import MlbError

    adapter = adapters["qwen3_vl"]
    video = copy.copy(_encode(adapter, frames))
    video.layer_features = {}
    with pytest.raises(MlbError, match="DeepStack"):
        adapter.model_inputs(adapter.build_prompt(QUESTION, video), video)


# -- every method, statistics, flops, loading ---------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", FAMILIES)
def test_every_method_end_to_end(adapters, frames, name, method):
    from mlbcli.selection import method_option_rules

    adapter = adapters[name]
    keep = {"keep": 0.5} if "keep" in method_option_rules(method)[0] else {}  # none/slowfast refuse it
    pipe = Pipeline(adapter, method=method, **keep)
    encoded = pipe.encode(frames)
    encoded.tokens.timestamps_s = list(TIMESTAMPS)
    result = pipe.answer(encoded, QUESTION, max_new_tokens=3)
    stats = result.stats
    video = encoded.tokens
    assert 1 <= len(result.token_ids) <= 3
    assert stats.visual_tokens_in == video.num_visual
    assert stats.visual_tokens_kept == stats.tokens_per_layer[-1]
    # Qwen3: one row per temporal patch (2 sampled frames): 4 for 7 frames
    assert len(stats.kept_per_frame) == (4 if name in QWEN3 else 7) == video.num_frames
    assert sum(stats.kept_per_frame) + stats.appended_tokens == stats.visual_tokens_kept
    if method == "none":
        assert stats.keep_realized == 1.0 and stats.flops_ratio == 1.0
    elif method not in ("slowfast", "mlb"):
        assert stats.flops_ratio < 1.0


@pytest.mark.parametrize("name", QWEN3)
def test_pipeline_answer_equals_stock_generate(adapters, frames, name):
    """`Pipeline.run` (method none: the shared-prefix path) gives the stock model's tokens (and logits)."""
    from mlbcli.engine.pipeline import Request

    adapter = adapters[name]
    pipe = Pipeline(adapter)
    encoded = pipe.encode(frames)
    encoded.tokens.timestamps_s = list(TIMESTAMPS)
    result = pipe.run([Request(encoded, QUESTION, 6)])[0]
    prompt = adapter.build_prompt(QUESTION, encoded.tokens)
    kwargs = _stock_kwargs(name, adapter, frames, prompt)
    with torch.inference_mode():
        logits = adapter.model(input_ids=prompt.input_ids, **kwargs).logits[:, -1].float()
    adapter.model.model.rope_deltas = None
    # a cached prefix + its extension is not one SDPA call: close, not bit-identical
    torch.testing.assert_close(result.state.logits.float(), logits, rtol=1e-4, atol=1e-4)
    out = adapter.model.generate(input_ids=prompt.input_ids, **kwargs, max_new_tokens=6, do_sample=False)
    assert result.token_ids == out[0, prompt.length :].tolist()


def test_probe_pass_sees_deepstack(adapters, frames):
    """A method's probe pass (two-stage mlb) scores what the real prefill's probe scores."""
    adapter = adapters["qwen3_vl"]
    video = _encode(adapter, frames)
    prompt = adapter.build_prompt(QUESTION, video)
    probed = Pipeline(adapter).plan_context(QUESTION, prompt).probe(video, 2, "question")
    _, state, _ = _run(adapter, video, _keep_all_with_scores(2), max_new_tokens=1)
    torch.testing.assert_close(probed, state.scores[1], rtol=1e-5, atol=1e-7)


def _keep_all_with_scores(layer: int) -> engine.PrunePlan:
    def keep_all(ctx: engine.LayerContext) -> engine.LayerKeep:
        return engine.LayerKeep(keep=torch.arange(ctx.visual_slots.numel()))

    return engine.PrunePlan(steps={layer: keep_all}, needs_scores=frozenset({layer}))


@pytest.mark.parametrize("name", QWEN3)
def test_probe_matches_eager_attention_with_deepstack(adapters, frames, name):
    """The layer-K probe (interleaved M-RoPE, question rows after the timestamped block, DeepStack added
    after layer 0) equals the stock model's eager attention map of layer K-1."""
    adapter = adapters[name]
    video = _encode(adapter, frames)
    prompt = adapter.build_prompt(QUESTION, video)
    _, state, _ = _run(adapter, video, _keep_all_with_scores(2), max_new_tokens=1)
    lm = adapter.decoder
    slots = prompt.visual_slots()
    mask = torch.zeros(1, prompt.length, dtype=torch.bool)
    mask[0, slots] = True
    D = video.features.shape[-1]
    lm.config._attn_implementation = "eager"
    try:
        with torch.inference_mode():
            attn = lm(
                inputs_embeds=adapter.embed(prompt, video),
                position_ids=adapter.position_ids(prompt, video),
                visual_pos_masks=mask,
                deepstack_visual_embeds=[
                    video.layer_features[k].reshape(-1, D) for k in sorted(video.layer_features)
                ],
                output_attentions=True,
            ).attentions[1]  # [1, H, L, L]
    finally:
        lm.config._attn_implementation = "sdpa"
    expected = attn[0][:, prompt.question_index].mean(dim=(0, 1))[slots].float()
    torch.testing.assert_close(state.scores[1], expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", QWEN3)
def test_shared_prefix_equals_full_prefill(adapters, frames, name):
    """Questions sharing a video's cached prefix (ending after the LAST patch) answer as a full prefill."""
    adapter = adapters[name]
    pipe = Pipeline(adapter, method="uniform", keep=0.5)
    encoded = pipe.encode(frames)
    questions = ["What is happening in the video?", "Which colour is the square?"]
    shared = [pipe.answer(encoded, q, max_new_tokens=4).token_ids for q in questions]
    alone = [
        Pipeline(adapter, method="uniform", keep=0.5, share_prefix=False).answer(encoded, q, max_new_tokens=4)
        for q in questions
    ]
    assert shared == [a.token_ids for a in alone]


def test_saved_tokens_keep_deepstack(adapters, frames, tmp_path):
    """`compress --save-tokens` / `answer --tokens` carry the DeepStack features (full and reduced), so a
    reused video answers exactly as the freshly encoded one."""
    from types import SimpleNamespace

    from mlbcli.engine.saved_tokens import load_video_tokens, save_video_tokens
    from mlbcli.io.sources import Item

    adapter = adapters["qwen3_vl"]
    clip = tmp_path / "c.mp4"
    clip.write_bytes(b"stand-in video file")  # only its size and mtime are fingerprinted
    item = Item("c", str(clip), None, None, None, None, "test")
    sampled = SimpleNamespace(
        indices=list(range(7)),
        timestamps_s=list(TIMESTAMPS),
        info=SimpleNamespace(num_frames_total=7, fps=4.0),
    )
    for method, keep in (("none", {}), ("uniform", {"keep": 0.5})):
        pipe = Pipeline(adapter, method=method, **keep)
        encoded = pipe.encode(frames)
        encoded.tokens.timestamps_s = list(TIMESTAMPS)
        save_video_tokens(tmp_path / method, item, encoded, sampled, pipe)
        saved = load_video_tokens(tmp_path / method, item, adapter.model_id)
        assert saved is not None
        video, again = encoded.tokens, saved.tokens
        assert sorted(again.layer_features) == sorted(video.layer_features) == [0, 1]
        kept = saved.tensors["kept_ids"] if method == "uniform" else torch.arange(video.num_visual)
        for layer, features in video.layer_features.items():
            flat = again.layer_features[layer].reshape(video.num_visual, -1)
            assert torch.equal(flat[kept], features.reshape(video.num_visual, -1)[kept])
        replay = saved.stored_reduction() if method == "uniform" else None
        reused = pipe.answer(type(encoded)(again, 0.0), QUESTION, max_new_tokens=4, method=replay)
        assert reused.token_ids == pipe.answer(encoded, QUESTION, max_new_tokens=4).token_ids


def test_flops_from_config(model_dirs):
    from mlbcli.api import flops
    from mlbcli.engine.flops import LLMDims
    from mlbcli.models import load_config

    plan = flops(model=model_dirs["qwen3_vl"], method="uniform", keep=0.5)
    assert plan.family == "qwen3_vl" and plan.frames == 32
    # the published 25165824-pixel volume over 32 frames: 16 patches x 768 tokens
    assert plan.visual_tokens == 16 * 768
    # a volume budget: 64 frames cost as many tokens (half the pixels per frame), 8 frames a quarter
    assert flops(model=model_dirs["qwen3_vl"], frames=64).visual_tokens == 32 * 384
    assert flops(model=model_dirs["qwen3_vl"], frames=8).visual_tokens == 4 * 3072
    assert 0 < plan.flops < plan.flops_vanilla
    moe = LLMDims.from_config(load_config(model_dirs["qwen3_vl_moe"]))
    assert moe.intermediate == 2 * 32  # top-2 experts of width 32, not the dense intermediate_size
    video = flops(model=model_dirs["llava_video"])
    assert video.family == "llava_video" and video.frames == 64 and video.visual_tokens == 64 * 16


def test_llava_video_is_told_apart_by_name(adapters):
    from types import SimpleNamespace

    from mlbcli.models import adapter_class_for
    from mlbcli.models.llava_onevision import LlavaOnevisionAdapter
    from mlbcli.models.llava_video import LlavaVideoAdapter

    def cls(name):
        return adapter_class_for(SimpleNamespace(model_type="llava_onevision", _name_or_path=name))

    assert cls("llava-hf/LLaVA-Video-7B-Qwen2-hf") is LlavaVideoAdapter
    assert cls("/models/llava_video_72b") is LlavaVideoAdapter
    snapshot = "/hf/hub/models--llava-hf--LLaVA-Video-7B-Qwen2-hf/snapshots/0123abcd"
    assert cls(snapshot) is LlavaVideoAdapter
    assert cls("llava-hf/llava-onevision-qwen2-7b-ov-hf") is LlavaOnevisionAdapter
    assert cls("/data/llava_video_runs/llava-onevision-qwen2-0.5b-ov-hf") is LlavaOnevisionAdapter
    assert cls("llava-hf/LLaVA-NeXT-Video-7B-hf") is LlavaOnevisionAdapter
    adapter = adapters["llava_video"]
    assert adapter.family == "llava_video" and adapter.default_frames == 64
    assert Pipeline(adapter).default_frames == 64


@pytest.mark.parametrize("name", FAMILIES)
def test_cli_answer_with_the_checkpoint(model_dirs, clips_dir, tmp_path, name):
    """`mlb answer ... --model <checkpoint>` end to end (decode -> encode -> prune -> answer -> Parquet)."""
    from typer.testing import CliRunner

    from mlbcli.cli.app import app
    from mlbcli.io.writers import read_results

    out = tmp_path / "answers.parquet"
    args = ["answer", str(clips_dir / "a.mp4"), "--question", QUESTION, "--model", model_dirs[name]]
    args += [
        "--method",
        "fastv",
        "--keep",
        "0.5",
        "--frames",
        "6",
        "--max-new-tokens",
        "3",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (row,) = read_results(out).to_pylist()
    assert row["error"] is None and row["answer"] is not None
    per_patch = 3 if name in QWEN3 else 6  # Qwen3: 6 frames = 3 temporal patches
    assert len(row["kept_per_frame"]) == per_patch
    assert row["visual_tokens_kept"] < row["visual_tokens_in"]


def test_qwen3_reference_spacing_times_frames_by_index_over_fps(adapters, frames):
    """`--temporal-spacing reference` (default) times frames as the processor's metadata does (index /
    fps); "exact" uses the container's presentation times (a variable-frame-rate file differs)."""
    adapter = adapters["qwen3_vl"]
    video = _encode(adapter, frames, timestamps=[0.0, 1.0, 2.5, 3.0, 10.0, 10.4, 12.0])  # real PTS
    video.frame_indices, video.native_fps = [0, 8, 16, 24, 32, 40, 48], 8.0
    assert adapter.temporal_spacing == "reference"
    assert adapter.patch_timestamps(video) == [0.5, 2.5, 4.5, 6.0]  # (0+1)/2, (2+3)/2, (4+5)/2, 6
    adapter.temporal_spacing = "exact"
    try:
        assert adapter.patch_timestamps(video) == pytest.approx([0.5, 2.75, 10.2, 12.0])
    finally:
        adapter.temporal_spacing = "reference"


def test_qwen3_per_frame_cap_shrinks_frames_and_the_row_says_so(adapters):
    """HF `cap_pixels_per_frame=True` / qwen-vl-utils: at most `max_video_tokens` tokens' pixels a frame."""
    adapter = adapters["qwen3_vl"]
    assert adapter.input_note(8, 240, 320) is None
    saved = dict(adapter.preprocess_config)
    adapter.preprocess_config["max_video_tokens"] = 2  # 2 tokens of 32x32 px per frame at most
    try:
        h, w = adapter.resized_size(8, 240, 320)
        assert (h, w) != adapter.resized_size(8, 240, 320, capped=False)
        note = adapter.input_note(8, 240, 320)
        assert note is not None and f"{w}x{h}" in note and "per-frame pixel cap" in note
    finally:
        adapter.preprocess_config.clear()
        adapter.preprocess_config.update(saved)


def test_qwen3_caps_never_exceed_an_explicit_max_pixels(model_dirs):
    """A per-frame --min-pixels is not the video's volume floor: frames stay within --max-pixels."""
    from mlbcli.models import load_adapter

    adapter = load_adapter(model_dirs["qwen3_vl"], device="cpu", min_pixels=50000, max_pixels=60000)
    for frames in (2, 8, 32):
        h, w = adapter.resized_size(frames, 720, 1280)
        assert h * w <= 60000, (frames, h, w)
        assert adapter.input_note(frames, 720, 1280) is None  # nothing grew, nothing to explain
