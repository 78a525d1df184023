"""Qwen2-VL, Qwen2.5-VL and LLaVA-NeXT adapters against their stock models (tiny checkpoints, offline)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_engine import engine_generate, stock_generate

from mlbcli.engine import batch as engine
from mlbcli.engine.pipeline import Pipeline
from mlbcli.errors import UsageError
from mlbcli.selection import MethodOptions, get_method
from mlbcli.selection.base import PlanContext

QUESTION = "What is happening in the video?"
QWEN_VERSIONS = {"qwen2_vl": "2", "qwen2_5_vl": "2.5"}
FAMILIES = ["qwen2_vl", "qwen2_5_vl", "llava_next"]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from mlbcli.testing.tiny import build_tiny_llava_next, build_tiny_qwen2_vl

    dirs = {
        name: str(build_tiny_qwen2_vl(tmp_path_factory.mktemp(name), version=v))
        for name, v in QWEN_VERSIONS.items()
    }
    dirs["llava_next"] = str(build_tiny_llava_next(tmp_path_factory.mktemp("llava_next")))
    return dirs


@pytest.fixture(scope="module")
def adapters(model_dirs):
    from mlbcli.models import load_adapter

    return {name: load_adapter(path, device="cpu") for name, path in model_dirs.items()}


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    # 7 frames: an odd count, so Qwen pads the last temporal patch with a repeated frame.
    return np.random.default_rng(0).integers(0, 255, (7, 90, 120, 3), dtype=np.uint8)


TIMESTAMPS = [0.25 * i for i in range(7)]  # 4 fps: Qwen2.5 second_per_grid_t = 0.5 s


def _encode(adapter, frames):
    video = adapter.encode(adapter.preprocess(frames))
    video.timestamps_s = list(TIMESTAMPS)  # what Pipeline.encode does with decoded Frames
    return video


def _engine_run(adapter, video, plan=None, max_new_tokens=8):
    return engine_generate(adapter, video, QUESTION, max_new_tokens, plan)


def _stock_kwargs(name, adapter, frames, video, prompt):
    """Inputs the stock `generate()` takes, built the way the official processor would."""
    if name == "llava_next":  # our frames-as-images layout has no stock input path: hand the features over
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        flat = adapter.encode(adapter.preprocess(frames)).features.reshape(-1, video.features.shape[-1])
        return {"mm_encoder_outputs": {"image": BaseModelOutputWithPooling(pooler_output=(flat,))}}
    pixel = adapter.preprocess(frames)
    kwargs = {
        "pixel_values_videos": pixel["pixel_values_videos"],
        "video_grid_thw": pixel["video_grid_thw"],
        "mm_token_type_ids": adapter.mm_token_type_ids(prompt),
    }
    if name == "qwen2_5_vl":
        kwargs["second_per_grid_ts"] = torch.tensor([2 * 0.25])
    return kwargs


# -- parity with stock generate --------------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILIES)
def test_empty_schedule_reproduces_stock_generate(adapters, frames, name):
    adapter = adapters[name]
    video = _encode(adapter, frames)
    prompt, _, gen = _engine_run(adapter, video, max_new_tokens=10)
    out = stock_generate(
        adapter, 10, input_ids=prompt.input_ids, **_stock_kwargs(name, adapter, frames, video, prompt)
    )
    assert gen.token_ids == out.sequences[0, prompt.length :].tolist()
    for ours, theirs in zip(gen.logits, out.logits, strict=True):
        assert torch.equal(ours, theirs[0].float())  # identical, not merely close


@pytest.mark.parametrize("name", FAMILIES)
def test_output_depends_on_video(adapters, frames, name):
    """Guards the tiny model itself: a model that ignores the video would make the tests vacuous."""
    adapter = adapters[name]
    a = _engine_run(adapter, _encode(adapter, frames), max_new_tokens=6)[2].token_ids
    b = _engine_run(adapter, _encode(adapter, np.full_like(frames, 200)), max_new_tokens=6)[2].token_ids
    assert a != b


def test_llava_next_features_are_the_stock_base_patch(adapters, frames):
    """Our per-frame tokens = the base-image part of the stock `get_image_features` (same layer, no CLS)."""
    adapter = adapters["llava_next"]
    pixel = adapter.preprocess(frames)["pixel_values"]  # [T, 3, S, S]
    video = adapter.encode({"pixel_values": pixel})
    S = pixel.shape[-1]
    cfg = adapter.model.config
    with torch.inference_mode():
        stock = adapter.model.model.get_image_features(
            pixel_values=pixel[:, None].expand(-1, 2, -1, -1, -1),
            image_sizes=torch.tensor([[S, S]] * len(frames)),
            vision_feature_layer=cfg.vision_feature_layer,
            vision_feature_select_strategy=cfg.vision_feature_select_strategy,
            return_dict=True,
        ).pooler_output
    n = video.tokens_per_frame
    assert n == (S // cfg.vision_config.patch_size) ** 2 and video.grid == (4, 4) and video.extra is None
    for t in range(len(frames)):
        assert torch.equal(stock[t][:n], video.features[t])
    prompt = adapter.build_prompt(QUESTION, video)
    assert prompt.input_ids[0, 0] == adapter.tokenizer.bos_token_id  # the Vicuna template renders no BOS
    assert int((prompt.input_ids == cfg.image_token_id).sum()) == len(frames) * n


# -- Qwen preprocessing and M-RoPE ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", QWEN_VERSIONS)
def test_qwen_preprocess_layout(adapters, frames, name):
    adapter = adapters[name]
    pixel = adapter.preprocess(frames)
    # 90x120 within [56*56, 112*112] -> smart_resize gives 84x112 -> 6x8 patches, 3x4 merged tokens.
    assert pixel["video_grid_thw"].tolist() == [[4, 6, 8]]
    assert pixel["pixel_values_videos"].shape == (4 * 6 * 8, 3 * 2 * 14 * 14)
    # Odd frame count: the last temporal patch repeats frame 6 (layout [..., 3, TP, 14, 14]).
    last = pixel["pixel_values_videos"][-48:].view(48, 3, 2, 14 * 14)
    assert torch.equal(last[:, :, 0], last[:, :, 1])
    video = adapter.encode(pixel)
    assert video.features.shape[:2] == (4, 12) and video.grid == (3, 4)
    assert video.frame_features.shape[0] == 4
    # Pixel bounds: video config honoured, image config ignored, explicit override wins.
    assert adapter.pixel_bounds == (56 * 56, 112 * 112)
    adapter.max_pixels = 56 * 56
    try:
        assert adapter.preprocess(frames)["video_grid_thw"].tolist() == [[4, 2, 4]]  # 28x56 px
    finally:
        adapter.max_pixels = None
    image_only = type(adapter)(
        adapter.model,
        adapter.tokenizer,
        "x",
        {"image_processor_type": "Qwen2VLImageProcessor", "max_pixels": 12845056},
    )
    assert image_only.pixel_bounds == (128 * 28 * 28, 768 * 28 * 28)


def test_qwen2_5_temporal_positions_follow_real_timestamps(adapters, frames):
    adapter = adapters["qwen2_5_vl"]
    video = _encode(adapter, frames)
    prompt = adapter.build_prompt(QUESTION, video)
    start, n = prompt.visual_start, prompt.num_visual
    temporal = adapter.position_ids(prompt, video)[0, 0, start : start + n].view(4, -1)[:, 0]
    # tokens_per_second 2 x second_per_grid 0.5 s = 1 position per temporal patch
    assert (temporal - temporal[0]).tolist() == [0, 1, 2, 3]
    video.timestamps_s = [1.5 * i for i in range(7)]  # 3 s per temporal patch -> 6 positions
    temporal = adapter.position_ids(prompt, video)[0, 0, start : start + n].view(4, -1)[:, 0]
    assert (temporal - temporal[0]).tolist() == [0, 6, 12, 18]


@pytest.mark.parametrize("name", QWEN_VERSIONS)
@pytest.mark.parametrize("method", ["uniform", "random", "visionzip"])
def test_qwen_pruned_run_keeps_mrope_positions(adapters, frames, name, method):
    """Pruning keeps each survivor's own 3-D position; logits equal the stock model fed those positions.
    Official VisionZip feeds its tokens in its own order (`entry_ids`): `kept_ids` are then in that
    order, and each state still sits at its own token's position."""
    adapter = adapters[name]
    video = _encode(adapter, frames)
    prompt = adapter.build_prompt(QUESTION, video)
    full_positions, _ = adapter.model.model.get_rope_index(
        prompt.input_ids, **adapter.rope_kwargs(prompt, video)
    )
    chosen = get_method(method, MethodOptions(keep=0.3, seed=3))
    plan = chosen.plan_with_context(video, prompt, PlanContext(mrope=True))  # as the pipeline plans it
    assert set(plan.steps) == {0}
    decisions = []
    pruner = plan.steps[0]
    plan.steps[0] = lambda ctx: decisions.append(pruner(ctx)) or decisions[-1]
    _, state, gen = _engine_run(adapter, video, plan, max_new_tokens=4)
    start, n = prompt.visual_start, prompt.num_visual
    keep = torch.cat([torch.arange(start), start + state.kept_ids, torch.arange(start + n, prompt.length)])
    assert 0 < state.kept_ids.numel() < n
    if decisions[0].entry_ids is not None:  # the method's order: the slots hold these tokens, in order
        assert torch.equal(state.kept_ids.cpu(), decisions[0].entry_ids.cpu())
        assert not torch.equal(state.kept_ids, state.kept_ids.sort().values)
    assert state.position_ids.shape == (3, 1, keep.numel())
    assert torch.equal(state.position_ids, full_positions[..., keep])  # not renumbered
    # Reference: the stock model on the kept tokens with their 3-D positions, then stock decoding through
    # `rope_deltas` (cache length + delta), compared logit for logit with our greedy_decode.
    model = adapter.model
    embeds = adapter.embed(prompt, video)
    if decisions[0].replace is not None:  # uniform pools: the kept tokens carry pooled states
        embeds[0, start + state.kept_ids] = decisions[0].replace.to(embeds.dtype)
    embeds = embeds[:, keep]
    pos = full_positions[..., keep]
    with torch.inference_mode():
        out = model(inputs_embeds=embeds, position_ids=pos, use_cache=True, logits_to_keep=1)
        assert torch.equal(out.logits[:, -1].float(), gen.logits[0][None])
        model.model.rope_deltas = (pos.max() + 1 - keep.numel()).view(1, 1)
        cache = out.past_key_values
        for step in range(1, 4):
            token = torch.tensor([[gen.token_ids[step - 1]]])
            out = model(input_ids=token, past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            assert torch.equal(out.logits[:, -1].float(), gen.logits[step][None])
        model.model.rope_deltas = None


@pytest.mark.parametrize("name", QWEN_VERSIONS)
def test_qwen_probe_matches_eager_attention(adapters, frames, name):
    """The layer-K probe (M-RoPE cos/sin + plain apply_rotary) equals the eager attention map."""
    adapter = adapters[name]
    video = _encode(adapter, frames)
    prompt = adapter.build_prompt(QUESTION, video)
    seen = {}

    def keep_all(ctx: engine.LayerContext) -> engine.LayerKeep:
        seen["scores"] = ctx.scores
        return engine.LayerKeep(keep=torch.arange(ctx.visual_slots.numel()))

    _engine_run(adapter, video, engine.PrunePlan(steps={2: keep_all}, needs_scores=frozenset({2})), 1)
    positions = adapter.position_ids(prompt, video)
    lm = adapter.decoder
    lm.config._attn_implementation = "eager"
    try:
        with torch.inference_mode():
            attn = lm(
                inputs_embeds=adapter.embed(prompt, video), position_ids=positions, output_attentions=True
            ).attentions[1]  # [1, H, L, L]
    finally:
        lm.config._attn_implementation = "sdpa"
    rows = prompt.question_index
    start = prompt.visual_start
    expected = attn[0][:, rows].mean(dim=(0, 1))[start : start + prompt.num_visual].float()
    torch.testing.assert_close(seen["scores"], expected, rtol=1e-5, atol=1e-7)


# -- pipeline, context limit, flops --------------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("method", ["uniform", "random"])
def test_pipeline_methods_end_to_end(adapters, frames, name, method):
    adapter = adapters[name]
    pipe = Pipeline(adapter, method=method, keep=0.25)
    encoded = pipe.encode(frames)
    result = pipe.answer(encoded, QUESTION, max_new_tokens=4)
    stats = result.stats
    n = encoded.tokens.num_visual
    assert stats.visual_tokens_in == n
    assert stats.visual_tokens_kept == round(n * 0.25)
    assert sum(stats.kept_per_frame) == stats.visual_tokens_kept
    # Qwen: one "frame" row per temporal patch (2 sampled frames).
    assert len(stats.kept_per_frame) == (4 if name != "llava_next" else 7)
    assert 1 <= len(result.token_ids) <= 4
    same = Pipeline(adapter, method=method, keep=1.0).answer(encoded, QUESTION, max_new_tokens=4)
    none = Pipeline(adapter, method="none").answer(encoded, QUESTION, max_new_tokens=4)
    assert same.token_ids == none.token_ids


def test_llava_next_context_limit(tmp_path):
    from mlbcli.models import load_adapter
    from mlbcli.testing.tiny import build_tiny_llava_next

    adapter = load_adapter(
        str(build_tiny_llava_next(tmp_path / "small", max_position_embeddings=128)), device="cpu"
    )
    pipe = Pipeline(adapter)
    few = np.random.default_rng(1).integers(0, 255, (4, 64, 64, 3), dtype=np.uint8)
    assert pipe.answer(pipe.encode(few), QUESTION, max_new_tokens=2).token_ids  # 64 visual tokens fit
    many = np.random.default_rng(1).integers(0, 255, (10, 64, 64, 3), dtype=np.uint8)  # 160 visual tokens
    with pytest.raises(UsageError, match=r"--frames") as info:
        pipe.answer(pipe.encode(many), QUESTION, max_new_tokens=2)
    assert "160 visual" in str(info.value) and "128" in str(info.value)
    # Pruning before the LLM re-sequences an image LLM's tokens, so the same video fits at keep 0.25.
    pruned = Pipeline(adapter, method="uniform", keep=0.25).answer(
        pipe.encode(many), QUESTION, max_new_tokens=2
    )
    assert pruned.stats.visual_tokens_kept == 40 and pruned.token_ids
    video = pipe.encode(few).tokens
    prompt = adapter.build_prompt(QUESTION, video)
    adapter.check_context(prompt.length, 128 - prompt.length)  # exactly fits
    with pytest.raises(UsageError, match=r"--method mlb"):
        adapter.check_context(prompt.length, 129 - prompt.length, num_visual=prompt.num_visual)


@pytest.mark.parametrize("name", FAMILIES)
def test_flops_from_config(model_dirs, name):
    from mlbcli.api import flops

    plan = flops(model=model_dirs[name], method="uniform", keep=0.5, frames=8)
    assert plan.family == name
    per_frame = 16 if name == "llava_next" else 768 // 2  # Qwen: default max_pixels 768*28*28 per 2 frames
    assert plan.visual_tokens == 8 * per_frame
    assert 0 < plan.flops < plan.flops_vanilla


ALL_METHODS = ["none", "uniform", "random", "fastv", "adatp", "mlb", "visionzip", "dycoke", "slowfast"]


@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("name", ["llava_onevision", *FAMILIES])
def test_every_method_on_every_family(adapters, tiny_adapter, frames, name, method):
    """Every method x family answers end to end with measured, consistent token statistics."""
    from mlbcli.selection import method_option_rules

    adapter = tiny_adapter if name == "llava_onevision" else adapters[name]
    keep = {"keep": 0.5} if "keep" in method_option_rules(method)[0] else {}  # none/slowfast refuse it
    pipe = Pipeline(adapter, method=method, **keep)
    encoded = pipe.encode(frames)
    result = pipe.answer(encoded, QUESTION, max_new_tokens=3)
    stats = result.stats
    video = encoded.tokens
    assert 1 <= len(result.token_ids) <= 3
    assert stats.visual_tokens_in == video.num_visual
    assert stats.visual_tokens_kept == stats.tokens_per_layer[-1]
    assert len(stats.kept_per_frame) == video.num_frames
    assert sum(stats.kept_per_frame) + stats.appended_tokens == stats.visual_tokens_kept
    assert stats.keep_realized == pytest.approx(stats.visual_tokens_kept / video.num_visual)
    if method == "none":
        assert stats.keep_realized == 1.0 and stats.flops_ratio == 1.0
    elif method not in ("slowfast", "mlb"):  # fixed-layout methods may keep more (measured, not assumed)
        assert stats.flops_ratio < 1.0


def test_qwen2_5_reference_spacing_is_the_processors_2n_over_k_fps(adapters, frames):
    """`--temporal-spacing reference` (default): second_per_grid_t = 2N / (k fps), as the HF processor with
    the video's metadata (sampled_fps = k / N x fps); "exact": 2 x the real mean frame interval."""
    adapter = adapters["qwen2_5_vl"]
    video = _encode(adapter, frames)
    # 7 of 64 frames at 16 fps, every 10th: reference 2*64/(7*16) = 1.1429 s, exact 2 * 10/16 = 1.25 s
    video.frame_indices = [0, 10, 20, 30, 40, 50, 60]
    video.native_fps, video.sampled_fps = 16.0, 7 / 64 * 16.0
    video.timestamps_s = [i / 16 for i in video.frame_indices]
    prompt = adapter.build_prompt(QUESTION, video)
    start, n = prompt.visual_start, prompt.num_visual

    def temporal() -> list[int]:
        axis = adapter.position_ids(prompt, video)[0, 0, start : start + n].view(4, -1)[:, 0]
        return (axis - axis[0]).tolist()

    assert adapter.temporal_spacing == "reference"
    assert adapter.second_per_grid_t(video, "reference") == pytest.approx(2 * 64 / (7 * 16))
    assert temporal() == [0, 2, 4, 6]  # floor(i x 1.1429 s x 2 tokens/s)
    adapter.temporal_spacing = "exact"
    try:
        assert adapter.second_per_grid_t(video, "exact") == pytest.approx(1.25)
        assert temporal() == [0, 2, 5, 7]  # floor(i x 1.25 s x 2)
    finally:
        adapter.temporal_spacing = "reference"


def test_temporal_spacing_is_an_option_of_the_families_it_changes(model_dirs):
    from mlbcli.errors import UsageError
    from mlbcli.models import load_adapter

    exact = load_adapter(model_dirs["qwen2_5_vl"], device="cpu", temporal_spacing="exact")
    assert exact.temporal_spacing == "exact"
    for name in ("qwen2_vl", "llava_next"):  # no time-based positions: the option would do nothing
        with pytest.raises(UsageError, match="--temporal-spacing does not apply"):
            load_adapter(model_dirs[name], device="cpu", temporal_spacing="exact")
    with pytest.raises(UsageError, match="reference, exact"):
        load_adapter(model_dirs["qwen2_5_vl"], device="cpu", temporal_spacing="real")


def test_qwen_pixel_budget_caps_long_videos_and_the_row_says_so(adapters):
    """qwen-vl-utils' cap (HF `cap_pixels_per_frame=True`): frames share 90% of max_video_tokens' pixels."""
    adapter = adapters["qwen2_vl"]
    lo, hi = adapter.pixel_bounds
    assert adapter.resized_size(240, 320, 8) == adapter.resized_size(240, 320, 1)  # short: no cap
    assert adapter.input_note(8, 240, 320) is None
    saved = dict(adapter.preprocess_config)
    adapter.preprocess_config["max_video_tokens"] = 100  # budget int(100 * 28^2 * 0.9) = 70560 px
    try:
        cap = adapter.frame_pixel_cap(16)  # 70560 * 2 // 16 = 8820, floored at 1.05 x min
        assert cap == max(min(hi, 70560 * 2 // 16), int(lo * 1.05))
        h, w = adapter.resized_size(240, 320, 16)
        assert h * w <= cap and (h, w) != adapter.resized_size(240, 320, 1)
        note = adapter.input_note(16, 240, 320)
        assert note is not None and f"{w}x{h}" in note and "16 frames" in note
        pixel = adapter.preprocess(np.zeros((16, 240, 320, 3), dtype=np.uint8))
        grid = pixel["video_grid_thw"][0].tolist()
        assert grid == [8, h // 14, w // 14]
    finally:
        adapter.preprocess_config.clear()
        adapter.preprocess_config.update(saved)


@pytest.mark.parametrize("name", FAMILIES)
def test_pixels_are_normalised_8_bit_levels(adapters, frames, name):
    """The reference processors resize uint8 frames and round: every pixel value is (level/255 - mean) /
    std for an integer level 0..255 (float resizing without rounding gave fractions of a level)."""
    adapter = adapters[name]
    pixel = adapter.preprocess(frames)
    cfg = adapter.preprocess_config
    from mlbcli.models.base import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    mean = torch.tensor(cfg.get("image_mean", OPENAI_CLIP_MEAN))
    std = torch.tensor(cfg.get("image_std", OPENAI_CLIP_STD))
    if name == "llava_next":
        values = pixel["pixel_values"].permute(0, 2, 3, 1).reshape(-1, 3)  # [T*S*S, 3]
    else:  # patches: rows (t, h, w, ...), columns (3, TP, P, P): channel-major
        values = pixel["pixel_values_videos"].reshape(pixel["pixel_values_videos"].shape[0], 3, -1)
        values = values.permute(0, 2, 1).reshape(-1, 3)
    levels = (values * std + mean) * 255
    assert torch.allclose(levels, levels.round(), atol=2e-3)
    assert levels.round().min() >= 0 and levels.round().max() <= 255
    # ... and they are the frames' own levels where the image is not resized at all
    from mlbcli.models.base import resize_frames

    uint8 = torch.from_numpy(frames).permute(0, 3, 1, 2)
    assert torch.equal(resize_frames(uint8, tuple(uint8.shape[-2:])), uint8)


def test_cli_rows_say_when_a_qwen_frame_rule_changed_the_request(model_dirs, clips_dir, tmp_path, caplog):
    """End to end: `--frames 7` on Qwen samples 8 frames (pairs, as qwen-vl-utils) and the row says so;
    an even request leaves `input_note` null; `--temporal-spacing` is recorded in the options."""
    import json

    from typer.testing import CliRunner

    from mlbcli.cli.app import app
    from mlbcli.io.writers import read_results

    out = tmp_path / "q.jsonl"
    base = ["answer", str(clips_dir / "a.mp4"), "--question", "q", "--model", model_dirs["qwen2_5_vl"]]
    fast = ["--workers", "0", "--max-new-tokens", "2", "-q", "--out", str(out), "--overwrite"]
    result = CliRunner().invoke(app, [*base, *fast, "--frames", "7"])
    assert result.exit_code == 0, result.output
    (row,) = read_results(out).to_pylist()
    assert row["frames"] == 8 and "--frames 7 -> 8" in row["input_note"]
    assert caplog.text.count("--frames 7 -> 8: this model takes frames in groups of 2") == 1  # once, up front
    assert json.loads(row["options_json"])["temporal_spacing"] is None  # the default: reference
    resumed = CliRunner().invoke(  # the default named explicitly is the same run: resumes, nothing to do
        app,
        [*base, *[f for f in fast if f != "--overwrite"], "--frames", "7", "--temporal-spacing", "reference"],
    )
    assert resumed.exit_code == 0, resumed.output
    result = CliRunner().invoke(app, [*base, *fast, "--frames", "8", "--temporal-spacing", "exact"])
    assert result.exit_code == 0, result.output
    (row,) = read_results(out).to_pylist()
    assert row["frames"] == 8 and row["input_note"] is None
    assert json.loads(row["options_json"])["temporal_spacing"] == "exact"
    refused = CliRunner().invoke(
        app, [*base, *fast, "--temporal-spacing", "exact", "--model", model_dirs["qwen2_vl"]]
    )
    assert refused.exit_code == 2 and "--temporal-spacing does not apply to qwen2_vl" in refused.output


def test_qwen2_5_reference_spacing_of_a_row_subset_is_the_whole_videos(adapters, frames):
    """Two-stage methods probe subsets of rows (`select_rows`): their temporal positions must use the
    whole video's sampled fps, not the subset's frame count."""
    adapter = adapters["qwen2_5_vl"]
    video = _encode(adapter, frames)
    video.frame_indices, video.native_fps, video.sampled_fps = [0, 10, 20, 30, 40, 50, 60], 16.0, 1.75
    whole = adapter.second_per_grid_t(video)
    part = video.select_rows(0, 2)
    assert part.frame_indices == [0, 10, 20, 30] and part.sampled_fps == 1.75
    assert adapter.second_per_grid_t(part) == whole == pytest.approx(2 / 1.75)


def test_pipeline_encode_records_where_the_frames_came_from(model_dirs, clips_dir):
    """From a real decode: indices, native fps and the reference sampled fps (k / N x fps)."""
    from mlbcli.engine.pipeline import Pipeline
    from mlbcli.io.video import decode_frames

    pipe = Pipeline(model_dirs["qwen2_5_vl"], device="cpu")
    decoded = decode_frames(clips_dir / "a.mp4", num_frames=7, rule=pipe.frame_rule)
    video = pipe.encode(decoded).tokens
    assert video.frame_indices == decoded.indices and len(decoded.indices) == 8  # 7 -> a pair
    assert video.native_fps == decoded.info.fps
    assert video.sampled_fps == pytest.approx(8 / decoded.info.num_frames_total * decoded.info.fps)
    assert video.input_note is not None and "--frames 7 -> 8" in video.input_note


def test_qwen_caps_never_exceed_an_explicit_max_pixels(model_dirs):
    """qwen-vl-utils: min(the user's max_pixels, the cap); the 1.05 x min floor must not lift frames
    above --max-pixels, nor read a per-frame --min-pixels as the whole video's."""
    from mlbcli.models import load_adapter

    qwen2 = load_adapter(model_dirs["qwen2_vl"], device="cpu", min_pixels=50000, max_pixels=52000)
    for frames in (2, 8, 32, 400):
        h, w = qwen2.resized_size(720, 1280, frames)
        assert h * w <= 52000, (frames, h, w)


def test_saved_tokens_keep_the_input_note_and_refuse_older_inputs(model_dirs, clips_dir, tmp_path):
    """`compress --save-tokens` then `answer --tokens`: the note travels with the tokens, and a token file
    of an mlb that prepared inputs otherwise (no `inputs` key) is an error row, not a silent answer."""
    import json

    from safetensors.torch import load_file, save_file
    from typer.testing import CliRunner

    from mlbcli.cli.app import app
    from mlbcli.io.writers import read_results

    model, clip, folder = model_dirs["qwen2_5_vl"], str(clips_dir / "a.mp4"), tmp_path / "tok"
    fast = ["--workers", "0", "-q", "--frames", "7"]
    done = CliRunner().invoke(
        app,
        [
            "compress",
            clip,
            "--model",
            model,
            "--save-tokens",
            str(folder),
            "--out",
            str(tmp_path / "c.parquet"),
            *fast,
        ],
    )
    assert done.exit_code == 0, done.output
    (compressed,) = read_results(tmp_path / "c.parquet").to_pylist()
    args = [
        "answer",
        clip,
        "--question",
        "q",
        "--model",
        model,
        "--tokens",
        str(folder),
        "--max-new-tokens",
        "2",
    ]
    answered = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "a.parquet"), *fast])
    assert answered.exit_code == 0, answered.output
    (row,) = read_results(tmp_path / "a.parquet").to_pylist()
    assert row["input_note"] == compressed["input_note"] and "--frames 7 -> 8" in row["input_note"]
    assert row["error"] is None

    (path,) = folder.rglob("*.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        metadata = dict(handle.metadata())
    del metadata["inputs"]  # as an older mlb saved it
    save_file(load_file(str(path)), str(path), metadata=metadata)
    old = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "old.parquet"), *fast])
    (row,) = read_results(tmp_path / "old.parquet").to_pylist()
    assert old.exit_code == 1 and "prepared model inputs otherwise (inputs v1, now v2" in row["error"]
    assert json.loads(row["options_json"])["inputs"] == 2
