"""mlb's inputs for Gemma 4 and Qwen3.5 against their official HF processors (fixtures made in the reference
environment by tests/golden/make_golden_gemma4.py and make_golden_qwen3_5.py; no torchvision here): token
ids exact, pixels within one level, positions exact, for two clip lengths and two frame counts."""

from __future__ import annotations

import functools
import json
import lzma
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from golden.frames import CASES
from test_golden import _frames

GOLDEN = Path(__file__).resolve().parent / "golden"
FAMILIES = ("gemma4", "qwen3_5")
CASE_NAMES = ("landscape-8", "odd-7")
QUESTION = json.loads((GOLDEN / "manifest.json").read_text())["question"]


@functools.cache
def _golden(family: str) -> tuple[dict[str, Any], Any]:
    import transformers

    manifest = json.loads((GOLDEN / f"{family}_manifest.json").read_text())
    made_with = manifest["versions"]["transformers"]
    if made_with != transformers.__version__:
        pytest.fail(
            f"{family} golden fixtures were made with transformers {made_with}, this environment has "
            f"{transformers.__version__}: regenerate them with {manifest['regenerate']}",
            pytrace=False,
        )
    return manifest, np.load(GOLDEN / f"{family}_golden.npz")


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from mlbcli.engine.pipeline import Pipeline
    from mlbcli.testing.tiny import build_tiny

    root = tmp_path_factory.mktemp("golden-2026")
    names = {"gemma4": "gemma-4-tiny-it", "qwen3_5": "Qwen3.5-tiny"}  # as the generators name them
    return functools.cache(
        lambda family: Pipeline(str(build_tiny(family, root / names[family])), device="cpu", dtype="float32")
    )


@pytest.fixture(scope="module")
def encoded(pipelines: Any) -> Any:
    by_name = {case.name: case for case in CASES}

    @functools.cache
    def run(family: str, case: str) -> tuple[Any, Any, Any]:
        pipe = pipelines(family)
        video = pipe.encode(_frames(by_name[case])).tokens
        return pipe.adapter, video, pipe.adapter.build_prompt(QUESTION, video)

    return run


def test_fixtures_are_small_and_of_our_frames() -> None:
    from golden.frames import sha256

    for family in FAMILIES:
        assert (GOLDEN / f"{family}_golden.npz").stat().st_size < 300_000
        manifest, _ = _golden(family)
        for name in CASE_NAMES:
            case = next(c for c in CASES if c.name == name)
            assert manifest["cases"][name]["frames_sha256"] == sha256(case.frames())
    counts = {len(c.indices) for c in CASES if c.name in CASE_NAMES}
    lengths = {c.clip.num_frames_total for c in CASES if c.name in CASE_NAMES}
    assert len(counts) == 2 and len(lengths) == 2


@pytest.mark.parametrize("case", CASE_NAMES)
@pytest.mark.parametrize("family", FAMILIES)
def test_prompt_and_input_ids_match_the_processor(encoded: Any, family: str, case: str) -> None:
    adapter, video, prompt = encoded(family, case)
    manifest, arrays = _golden(family)
    entry = manifest["cases"][case]
    # the template's text with its video item expanded: mlb's Prompt.text holds the expanded block
    item = "<|video|>" if family == "gemma4" else "<|vision_start|><|video_pad|><|vision_end|>"
    before, after = entry["prompt_text"].split(item)
    assert prompt.text.startswith(before) and prompt.text.endswith(after)
    ours = prompt.input_ids[0].cpu().numpy()
    np.testing.assert_array_equal(ours, arrays[f"{case}/input_ids"])
    assert prompt.num_visual == entry["num_video_tokens"]
    if family == "qwen3_5":
        types = adapter.mm_token_type_ids(prompt)[0].cpu().numpy()
        np.testing.assert_array_equal(types, arrays[f"{case}/mm_token_type_ids"])


@pytest.mark.parametrize("case", CASE_NAMES)
@pytest.mark.parametrize("family", FAMILIES)
def test_positions_match_the_processor_and_the_model(encoded: Any, family: str, case: str) -> None:
    """Gemma 4: the patches' (x, y) `video_position_ids` (padding -1) and 1-D text positions; Qwen3.5:
    `video_grid_thw` and the [3, L] M-RoPE positions of the model's own `get_rope_index`."""
    adapter, video, prompt = encoded(family, case)
    manifest, arrays = _golden(family)
    if family == "gemma4":
        frames = next(c for c in CASES if c.name == case).frames()
        ours = adapter.preprocess(frames)["video_position_ids"].cpu().numpy()
        np.testing.assert_array_equal(ours, arrays[f"{case}/video_position_ids"])
        assert manifest["cases"][case]["num_frames_per_video"] == [video.num_frames]
        positions = adapter.position_ids(prompt, video)[0].cpu().numpy()
        np.testing.assert_array_equal(positions, np.arange(prompt.length))
    else:
        assert adapter.video_grid_thw(video)[0].tolist() == manifest["cases"][case]["video_grid_thw"]
        positions = adapter.position_ids(prompt, video)[:, 0].cpu().numpy()  # [3, L]
        np.testing.assert_array_equal(positions, arrays[f"{case}/positions"])


@pytest.mark.parametrize("case", CASE_NAMES)
@pytest.mark.parametrize("family", FAMILIES)
def test_pixel_values_within_one_level(pipelines: Any, family: str, case: str) -> None:
    import torch

    manifest, arrays = _golden(family)
    entry = manifest["cases"][case]
    shape = tuple(entry["pixel_shape"])
    levels = np.frombuffer(lzma.decompress(arrays[f"{case}/pixel_levels_xz"].tobytes()), np.uint8).reshape(
        shape
    )
    lut = arrays[f"{case}/pixel_lut"]  # [3, 256]
    columns = np.arange(shape[-1])
    # Gemma 4 [T, P, p*p*3] channels last; Qwen [rows, 3 * TP * P * P] channel-major columns
    channel = columns % 3 if family == "gemma4" else columns // (shape[-1] // 3)
    theirs = lut[np.broadcast_to(channel, shape), levels]
    frames = next(c for c in CASES if c.name == case).frames()
    with torch.inference_mode():
        ours = pipelines(family).adapter.preprocess(frames)["pixel_values_videos"].float().cpu().numpy()
    assert ours.shape == theirs.shape
    delta = np.abs(ours.astype(np.float64) - theirs)
    level = float((lut[:, 1] - lut[:, 0]).max())
    assert delta.max() <= level * 1.001, f"max |delta| {delta.max():.6g} ({delta.max() / level:.2f} levels)"
    assert np.mean(delta > 0) < 0.01  # a level off only where the resize kernels round differently
