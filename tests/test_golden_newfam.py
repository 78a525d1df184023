"""Golden parity of the 2026 families (issue 21): mlb's model inputs against the official Hugging Face
processors' (fixtures `tests/golden/newfam_<family>.{npz,json}`, made by `tests/golden/make_golden_newfam.py`
in the reference venv with torchvision; compared here without it).

Per family, two clips of different lengths and frame counts (8 of 64 frames at 16 fps, 7 of 50 at 25 fps):
input_ids exactly (SmolVLM's per-frame times and frame count in words, InternVL's frame lines, GLM's
per-patch timestamps), pixel values within one 8-bit level (bit for bit on the reference's CPU kind), and
for GLM-4.1V / 4.6V the `mm_token_type_ids`, `video_grid_thw` and 3-D positions exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from golden.frames import CASES, QUESTION, sha256
from golden.make_golden_newfam import GOLDEN_OPTIONS, NEWFAM_CASES, PIXEL_KEY, _channel_of

GOLDEN = Path(__file__).resolve().parent / "golden"
REGENERATE = (
    "PYTHONPATH=.:/tmp/n2w /work/refvenv/bin/python tests/golden/make_golden_newfam.py (see its docstring)"
)
FAMILIES = list(GOLDEN_OPTIONS)


@pytest.fixture(scope="module")
def golden() -> dict[str, tuple[dict, dict]]:
    import transformers

    loaded = {}
    for family in FAMILIES:
        manifest = json.loads((GOLDEN / f"newfam_{family}.json").read_text())
        if manifest["versions"]["transformers"] != transformers.__version__:
            pytest.fail(
                f"{family} fixtures are for transformers {manifest['versions']['transformers']}: {REGENERATE}"
            )
        with np.load(GOLDEN / f"newfam_{family}.npz") as arrays:
            loaded[family] = (manifest, {key: arrays[key] for key in arrays.files})
    return loaded


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    from mlbcli.models import load_adapter
    from mlbcli.testing.tiny import build_tiny

    return {
        family: load_adapter(
            str(build_tiny(family, tmp_path_factory.mktemp(f"g-{family}"), **options)), device="cpu"
        )
        for family, options in GOLDEN_OPTIONS.items()
    }


def _frames(case):
    from mlbcli.io.video import Frames, VideoInfo

    clip = case.clip
    return Frames(
        array=case.frames(),
        indices=list(case.indices),
        timestamps_s=case.timestamps_s,
        info=VideoInfo(
            path=f"golden:{case.name}",
            num_frames_total=clip.num_frames_total,
            fps=clip.native_fps,
            duration_s=clip.num_frames_total / clip.native_fps,
            width=clip.width,
            height=clip.height,
            codec=None,
        ),
        backend="golden",
    )


CASE_BY_NAME = {case.name: case for case in CASES}


@pytest.mark.parametrize("case_name", NEWFAM_CASES)
@pytest.mark.parametrize("family", FAMILIES)
def test_inputs_equal_the_official_processor(golden, adapters, family, case_name):
    from mlbcli.engine.pipeline import Pipeline

    manifest, arrays = golden[family]
    case = CASE_BY_NAME[case_name]
    assert sha256(case.frames()) == manifest["clips"][case_name]["sha256"]  # the same clip on both sides
    assert manifest["question"] == QUESTION
    adapter = adapters[family]
    video = Pipeline(adapter).encode(_frames(case)).tokens
    prompt = adapter.build_prompt(QUESTION, video)
    prefix = f"{family}/{case_name}"
    expected_ids = arrays[f"{prefix}/input_ids"]
    ours = prompt.input_ids[0].numpy()
    assert ours.shape == expected_ids.shape, (
        adapter.tokenizer.decode(ours),
        adapter.tokenizer.decode(expected_ids),
    )
    assert np.array_equal(ours, expected_ids)

    # Pixels: HF's are lut[channel, level]; ours within one level of them.
    pixel = adapter.preprocess(case.frames())[PIXEL_KEY[family]].float().numpy()
    levels, lut = arrays[f"{prefix}/pixel_levels"], arrays[f"{prefix}/pixel_lut"]
    reference = lut[np.broadcast_to(_channel_of(family, levels.shape), levels.shape), levels]
    assert pixel.shape == reference.shape
    one_level = np.abs(lut[:, 1] - lut[:, 0]).max()  # the largest step between adjacent levels
    delta = np.abs(pixel - reference)
    assert delta.max() <= one_level * 1.001, f"max |delta| {delta.max() / one_level:.2f} levels"

    if family.startswith("glm"):
        grid = adapter.video_grid_thw(video)[0].tolist()
        assert grid == manifest["cases"][case_name]["video_grid_thw"]
        assert np.array_equal(
            adapter.mm_token_type_ids(prompt)[0].numpy(), arrays[f"{prefix}/mm_token_type_ids"]
        )
        positions = adapter.position_ids(prompt, video)[:, 0].numpy()
        assert np.array_equal(positions, arrays[f"{prefix}/positions"])


def test_fixtures_stay_small():
    for family in FAMILIES:
        size = (GOLDEN / f"newfam_{family}.npz").stat().st_size + (
            GOLDEN / f"newfam_{family}.json"
        ).stat().st_size
        assert size < 300_000, family
