"""Golden parity: mlb's model inputs against what the official Hugging Face processors make of the same frames.

mlb does each processor's job itself (no torchvision in its environment). The references ran once, in a
separate environment with torchvision, and their outputs are stored in `tests/golden/` (golden.npz +
manifest.json; how and with which versions: `tests/golden/make_golden.py`). Here, on every CI run and
without torchvision, mlb's public path is compared with them:

    video = Pipeline(checkpoint).encode(Frames(...))              # preprocess + encode, timestamps, indices
    prompt = adapter.build_prompt(QUESTION, video)                # prompt text and input_ids
    adapter.position_ids(prompt, video), adapter.rope_kwargs(...)  # M-RoPE positions, grid, seconds
    adapter.preprocess(frames)                                    # pixel values

What must match, and how exactly:
- rendered prompt text, input_ids, mm_token_type_ids, video_grid_thw, 3-D positions, frame-sampling
  indices and the capped per-frame resize: exactly;
- Qwen2.5-VL `second_per_grid_t`: to 1e-9 (HF's convention 2 N / (k fps): N total frames, k sampled);
- pixel values: bit for bit on the CPU (the message gives max |delta| and the share of elements that
  differ otherwise).

Differences by design, so not compared:
- LLaVA-NeXT: mlb gives all frames ONE `<image>` (T x N placeholders, no newline tokens) and feeds only
  the base patch of each frame (no any-res tiles), see `mlbcli/models/llava_next.py`; HF renders one
  `<image>` per frame and adds tiles. Only the base-patch pixels (HF `pixel_values[:, 0]`) are compared.
- Qwen3-VL: transformers 5.23's processor keeps the template's `<|vision_start|>`/`<|vision_end|>` around
  the timestamped block it inserts; mlb follows the reference layout without them (qwen-vl-utils, vLLM,
  transformers 4.57). The ids compared are the processor's own for the template text with the wrapped
  placeholder replaced by a bare `<|video_pad|>` (make_golden.py); the stock ids are kept in the fixture.

Fixtures made with another transformers version fail every test here with the command that regenerates
them: they are only valid for the version they were made with.
"""

from __future__ import annotations

import functools
import inspect
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from golden.frames import CASES, QUESTION, Case, sha256

GOLDEN = Path(__file__).resolve().parent / "golden"
REGENERATE = (
    "PYTHONPATH=. /work/refvenv/bin/python tests/golden/make_golden.py (see its docstring for the venv)"
)
QWEN = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
VIDEO_FAMILIES = ("llava_onevision", "llava_video", *QWEN)
ALL_FAMILIES = (*VIDEO_FAMILIES, "llava_next")
CASE_NAMES = [case.name for case in CASES]


# -- fixtures ------------------------------------------------------------------------------------------
@dataclass
class Golden:
    manifest: dict[str, Any]
    arrays: Any  # np.lib.npyio.NpzFile

    def family(self, family: str) -> dict[str, Any]:
        return self.manifest["families"][family]

    def entry(self, family: str, case: str) -> dict[str, Any]:
        return self.family(family)["cases"][case]

    def array(self, family: str, case: str, key: str) -> np.ndarray:
        return self.arrays[f"{family}/{case}/{key}"]

    def pixels(self, family: str, case: str) -> np.ndarray:
        """HF's pixel values, rebuilt losslessly: lut[channel, level] (make_golden checked bit equality)."""
        source = self.family(family).get("pixels_from", family)
        levels = self.array(source, case, "pixel_levels")
        lut = self.array(source, case, "pixel_lut")  # [3, 256] float32
        if family in QWEN:  # [rows, 3 * TP * P * P], channel-major columns
            channel = (np.arange(levels.shape[-1]) // (levels.shape[-1] // 3))[None, :]
        elif family == "llava_next":  # [T, 3, S, S]
            channel = np.arange(3).reshape(1, 3, 1, 1)
        else:  # [1, T, 3, S, S]
            channel = np.arange(3).reshape(1, 1, 3, 1, 1)
        return lut[np.broadcast_to(channel, levels.shape), levels]


@functools.cache
def _load_golden() -> Golden:
    manifest = json.loads((GOLDEN / "manifest.json").read_text())
    return Golden(manifest, np.load(GOLDEN / "golden.npz"))


@pytest.fixture(scope="session")
def golden() -> Golden:
    """The fixtures, refused (every test fails, naming the command) when made with another transformers."""
    import transformers

    data = _load_golden()
    made_with = data.manifest["versions"]["transformers"]
    if made_with != transformers.__version__:
        pytest.fail(
            f"golden fixtures were made with transformers {made_with}, this environment has "
            f"{transformers.__version__}: regenerate them with {REGENERATE}",
            pytrace=False,
        )
    return data


def _build(family: str, root: Path) -> Path:
    """The tiny checkpoint of `family`, with the options make_golden.py builds it with (the defaults)."""
    from mlbcli.testing import tiny

    builders: dict[str, Callable[[], Path]] = {
        "llava_onevision": lambda: tiny.build_tiny_llava_onevision(root / "tiny-llava-ov"),
        "llava_video": lambda: tiny.build_tiny_llava_video(root / "tiny-LLaVA-Video"),
        "qwen2_vl": lambda: tiny.build_tiny_qwen2_vl(root / "tiny-qwen2-vl", version="2"),
        "qwen2_5_vl": lambda: tiny.build_tiny_qwen2_vl(root / "tiny-qwen2.5-vl", version="2.5"),
        "qwen3_vl": lambda: tiny.build_tiny_qwen3_vl(root / "tiny-qwen3-vl"),
        "llava_next": lambda: tiny.build_tiny_llava_next(root / "tiny-llava-next"),
    }
    return builders[family]()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """family -> tiny checkpoint folder, built on first use."""
    root = tmp_path_factory.mktemp("golden-checkpoints")
    return functools.cache(lambda family: _build(family, root))


@pytest.fixture(scope="module")
def pipelines(checkpoints: Callable[[str], Path]) -> Callable[[str], Any]:
    """family -> `Pipeline` on the tiny checkpoint (CPU, fp32), loaded on first use."""
    from mlbcli.engine.pipeline import Pipeline

    return functools.cache(lambda family: Pipeline(str(checkpoints(family)), device="cpu", dtype="float32"))


def _frames(case: Case) -> Any:
    """The case as mlb's decoders return it: the sampled frames, their indices and index/fps timestamps."""
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


@pytest.fixture(scope="module")
def encoded(pipelines: Callable[[str], Any]) -> Callable[[str, str], tuple[Any, Any, Any]]:
    """(family, case) -> (adapter, VideoTokens from `Pipeline.encode`, Prompt), computed once."""
    by_name = {case.name: case for case in CASES}

    @functools.cache
    def run(family: str, case: str) -> tuple[Any, Any, Any]:
        pipe = pipelines(family)
        video = pipe.encode(_frames(by_name[case])).tokens
        return pipe.adapter, video, pipe.adapter.build_prompt(QUESTION, video)

    return run


def _first_difference(ours: np.ndarray, theirs: np.ndarray) -> str:
    if ours.shape != theirs.shape:
        return f"shape {ours.shape} vs {theirs.shape}"
    where = np.argwhere(ours != theirs)
    at = tuple(int(i) for i in where[0])
    return f"{len(where)} of {ours.size} differ, first at {at}: ours {ours[at]} vs HF {theirs[at]}"


# -- the fixtures themselves ---------------------------------------------------------------------------
def test_fixture_frames_are_the_frames_we_build(golden: Golden) -> None:
    """The clips are rebuilt from formulas on both sides; a drift would invalidate every comparison."""
    for case in CASES:
        recorded = golden.manifest["cases"][case.name]
        assert recorded["sha256"] == sha256(case.frames()), case.name
        assert recorded["frames_indices"] == list(case.indices)
        assert recorded["total_num_frames"] == case.clip.num_frames_total
        assert recorded["fps"] == case.clip.native_fps


# -- prompts, ids, grids, positions ----------------------------------------------------------------------
@pytest.mark.parametrize("case", CASE_NAMES)
@pytest.mark.parametrize("family", VIDEO_FAMILIES)
def test_prompt_and_input_ids_match_the_processor(
    golden: Golden, encoded: Any, family: str, case: str
) -> None:
    adapter, video, prompt = encoded(family, case)
    entry = golden.entry(family, case)
    problems = []
    hf_text = entry["prompt_text"]
    if (
        family == "qwen3_vl"
    ):  # mlb's Prompt.text holds the expanded timestamp block; the rest is the template's
        before, after = hf_text.split("<|vision_start|><|video_pad|><|vision_end|>")
        if not (prompt.text.startswith(before) and prompt.text.endswith(after)):
            problems.append(f"prompt text {prompt.text!r} is not {before!r} + block + {after!r}")
    elif prompt.text != hf_text:
        problems.append(f"prompt text {prompt.text!r} vs HF {hf_text!r}")
    ours = prompt.input_ids[0].cpu().numpy()
    theirs = golden.array(family, case, "input_ids")
    if not np.array_equal(ours, theirs):
        problems.append(f"input_ids: {_first_difference(ours, theirs)}")
    structural = 0 if video.extra is None else int(video.extra.shape[0])  # OneVision's image_newline
    if prompt.num_visual + structural != entry["num_video_tokens"]:
        problems.append(f"{prompt.num_visual} + {structural} placeholders vs HF {entry['num_video_tokens']}")
    if family in QWEN:
        types = adapter.mm_token_type_ids(prompt)[0].cpu().numpy()
        expected = golden.array(family, case, "mm_token_type_ids")
        if not np.array_equal(types, expected):
            problems.append(f"mm_token_type_ids: {_first_difference(types, expected)}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("case", CASE_NAMES)
@pytest.mark.parametrize("family", QWEN)
def test_grid_and_positions_match_get_rope_index(
    golden: Golden, encoded: Any, family: str, case: str
) -> None:
    """video_grid_thw, (Qwen2.5) second_per_grid_t, and the 3-D positions of the model's own get_rope_index."""
    adapter, video, prompt = encoded(family, case)
    entry = golden.entry(family, case)
    problems = []
    grid = adapter.video_grid_thw(video)[0].tolist()
    if grid != entry["video_grid_thw"]:
        problems.append(f"video_grid_thw {grid} vs HF {entry['video_grid_thw']}")
    if family == "qwen2_5_vl":
        # The adapter's own setting (`temporal_spacing`, "reference" by default: HF's 2 N / (k fps)).
        ours = float(adapter.second_per_grid_t(video))
        if abs(ours - entry["second_per_grid_t"]) > 1e-9:
            problems.append(f"second_per_grid_t {ours!r} vs HF {entry['second_per_grid_t']!r}")
        given = float(adapter.rope_kwargs(prompt, video)["second_per_grid_ts"][0])  # float32, as HF's tensor
        if given != entry["second_per_grid_t_float32"]:
            problems.append(
                f"second_per_grid_ts given to the model {given!r} vs HF {entry['second_per_grid_t_float32']!r}"
            )
    positions = adapter.position_ids(prompt, video)[:, 0].cpu().numpy()  # [3, L]
    expected = golden.array(family, case, "positions")
    if not np.array_equal(positions, expected):
        detail = _first_difference(positions, expected)
        if positions.shape == expected.shape:
            axes = [int(np.abs(positions[a] - expected[a]).max()) for a in range(3)]
            detail += f"; max |delta| per axis (t, h, w) {axes}"
        problems.append(f"positions: {detail}")
    assert not problems, "\n".join(problems)


# -- pixels --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASE_NAMES)
@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_pixel_values_match_the_processor_bit_for_bit(
    golden: Golden, pipelines: Callable[[str], Any], family: str, case: str
) -> None:
    """LLaVA-NeXT: the base patch only (HF `pixel_values[:, 0]`); the tiles are not built, by design."""
    import torch

    adapter = pipelines(family).adapter
    frames = next(c for c in CASES if c.name == case).frames()
    with torch.inference_mode():
        inputs = adapter.preprocess(frames)
    key = "pixel_values" if family == "llava_next" else "pixel_values_videos"
    ours = inputs[key].float().cpu().numpy()
    theirs = golden.pixels(family, case)
    assert ours.shape == theirs.shape
    delta = np.abs(ours.astype(np.float64) - theirs.astype(np.float64))
    message = f"pixel values: max |delta| {delta.max():.6g}, {np.mean(delta > 0):.2%} of {delta.size} elements differ"
    made_on = golden.manifest["versions"].get("cpu_capability")
    if made_on in (None, torch.backends.cpu.get_cpu_capability()):
        assert np.array_equal(ours, theirs), message
    else:  # torch's uint8 resize kernels differ per ISA (AVX2 / AVX512 / NEON) by at most one level
        source = golden.family(family).get("pixels_from", family)
        lut = golden.array(source, case, "pixel_lut")  # [3, 256]: one level = lut[:, 1] - lut[:, 0]
        assert delta.max() <= float((lut[:, 1] - lut[:, 0]).max()) * 1.001, message


# -- frame sampling ------------------------------------------------------------------------------------------
def _adapter_class(family: str) -> type[Any]:
    from mlbcli.models.llava_next import LlavaNextAdapter
    from mlbcli.models.llava_onevision import LlavaOnevisionAdapter
    from mlbcli.models.llava_video import LlavaVideoAdapter
    from mlbcli.models.qwen2_vl import Qwen2_5_VLAdapter, Qwen2VLAdapter
    from mlbcli.models.qwen3_vl import Qwen3VLAdapter

    return {
        "llava_onevision": LlavaOnevisionAdapter,
        "llava_video": LlavaVideoAdapter,
        "llava_next": LlavaNextAdapter,
        "qwen2_vl": Qwen2VLAdapter,
        "qwen2_5_vl": Qwen2_5_VLAdapter,
        "qwen3_vl": Qwen3VLAdapter,
    }[family]


def _plan(family: str, row: dict[str, Any]) -> list[int]:
    from mlbcli.io.sampling import plan_frames

    plan = plan_frames(
        row["num_frames_total"],
        row["native_fps"],
        num_frames=row["num_frames"],
        fps=row["fps"],
        rule=_adapter_class(family).frame_rule,
    )
    return [int(i) for i in plan.indices]


@pytest.mark.parametrize("family", QWEN)
def test_qwen_frame_sampling_matches_qwen_vl_utils(golden: Golden, family: str) -> None:
    """--frames k (k rounded to even, banker's), --fps f (floor to even, 4..768 frames, whole clip) and
    --fps f --frames cap: the indices qwen-vl-utils 0.0.14 decodes, for every (N, fps) of the grid,
    including N < 4 and N = 7200 @ 24 fps. Requests qwen-vl-utils refuses are not compared."""
    mismatches = []
    compared = 0
    for row in golden.manifest["sampling"]:
        reference = row["qwen_vl_utils"]
        if isinstance(reference, dict):  # the reference refused (e.g. k > N, or N = 1)
            continue
        compared += 1
        ours = _plan(family, row)
        if ours != reference:
            mismatches.append(
                f"N={row['num_frames_total']} fps={row['native_fps']} frames={row['num_frames']} "
                f"--fps={row['fps']}: ours {ours[:12]}{'...' if len(ours) > 12 else ''} ({len(ours)}) vs "
                f"{reference[:12]}{'...' if len(reference) > 12 else ''} ({len(reference)})"
            )
    assert compared > 100
    assert not mismatches, f"{len(mismatches)} of {compared} differ:\n" + "\n".join(mismatches[:15])


@pytest.mark.parametrize("family", QWEN)
def test_qwen_fps_frame_counts_match_hf_sample_frames(golden: Golden, family: str) -> None:
    """HF's Qwen2-VL sampler counts frames for --fps as qwen-vl-utils does (floor to even, 4..768);
    its indices differ (arange(n) * N / n, never reaching the tail), so only the count is compared."""
    mismatches = []
    for row in golden.manifest["sampling"]:
        reference = row.get("hf_qwen2_vl")
        if row["fps"] is None or row["num_frames"] is not None or not isinstance(reference, list):
            continue
        ours = _plan(family, row)
        if len(ours) != len(reference):
            mismatches.append(
                f"N={row['num_frames_total']} fps={row['native_fps']} --fps={row['fps']}: "
                f"{len(ours)} vs {len(reference)}"
            )
    assert not mismatches, "\n".join(mismatches)


@pytest.mark.parametrize("family", ("llava_onevision", "llava_video", "llava_next"))
def test_evenly_spaced_sampling_matches_qwen_vl_utils_for_even_counts(golden: Golden, family: str) -> None:
    """--frames k on the families without temporal patches: evenly spaced over the whole clip, first and
    last frame included, which is qwen-vl-utils' `linspace(0, N-1, k).round()` for the even k it keeps
    unchanged (k <= N). For odd k the fixture also holds `linspace_round` (torch rounds exact .5 ties to
    even); no reference samples an odd count that way, so it is not compared."""
    mismatches = []
    compared = 0
    for row in golden.manifest["sampling"]:
        reference = row["qwen_vl_utils"]
        k = row["num_frames"]
        if row["fps"] is not None or not isinstance(reference, list) or k % 2 or len(reference) != k:
            continue
        compared += 1
        ours = _plan(family, row)
        if ours != reference:
            mismatches.append(f"N={row['num_frames_total']} k={k}: ours {ours} vs {reference}")
    assert compared > 30
    assert not mismatches, f"{len(mismatches)} of {compared} differ:\n" + "\n".join(mismatches[:15])


# -- per-frame resize with the pixel cap ----------------------------------------------------------------------
def _resized(adapter: Any, num_frames: int, height: int, width: int) -> tuple[int, int]:
    """The adapter's resized (h, w) for `num_frames` frames of height x width (signature differs by family)."""
    parameters = list(inspect.signature(adapter.resized_size).parameters)
    if parameters[0] == "num_frames":
        return tuple(adapter.resized_size(num_frames, height, width))
    return tuple(adapter.resized_size(height, width, num_frames=num_frames))


@pytest.mark.parametrize("family", QWEN)
def test_capped_resize_matches_hf(
    golden: Golden, checkpoints: Callable[[str], Path], tmp_path: Path, family: str
) -> None:
    """HF's `cap_pixels_per_frame=True`: per-frame pixels bounded by an even share of `max_video_tokens`,
    floored at 1.05 x the minimum, for the tiny bounds, the hub bounds and a small token budget, 2..768
    frames, 55x97 .. 1080p. mlb reads `max_video_tokens` and `size` from the video preprocessor config."""
    from mlbcli.models import load_adapter

    processor_family = "qwen3_vl" if family == "qwen3_vl" else "qwen2_vl"
    recorded = golden.manifest["resize"][processor_family]
    source = checkpoints(family)
    mismatches = []
    for config in recorded["configs"]:
        folder = tmp_path / config["name"]
        shutil.copytree(source, folder)
        video_config = json.loads((folder / "video_preprocessor_config.json").read_text())
        video_config["size"] = config["effective"]["size"]
        if config["max_video_tokens"] is not None:
            video_config["max_video_tokens"] = config["max_video_tokens"]
        (folder / "video_preprocessor_config.json").write_text(json.dumps(video_config))
        adapter = load_adapter(str(folder), device="cpu", dtype="float32")
        for row in recorded["rows"]:
            if row["config"] != config["name"]:
                continue
            ours = list(_resized(adapter, row["num_frames"], row["height"], row["width"]))
            if ours != row["resized"]:
                mismatches.append(
                    f"{config['name']} T={row['num_frames']} {row['height']}x{row['width']}: "
                    f"ours {ours} vs HF {row['resized']}"
                )
    assert not mismatches, f"{len(mismatches)} differ:\n" + "\n".join(mismatches[:20])
