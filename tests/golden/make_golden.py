"""Regenerate the golden fixtures: what the official Hugging Face processors make of fixed frames.

mlb does each processor's job itself (`mlbcli/models/*.py`: resizing, normalising, patchifying, the
prompt's placeholder block, M-RoPE inputs, frame sampling) because the HF video processors need
torchvision, which mlb does not install. `tests/test_golden.py` compares mlb's inputs with the ones
stored here on every CI run, WITHOUT torchvision. This script is the only place that runs the
references; run it again whenever transformers (or torch / torchvision / qwen-vl-utils) is upgraded
and commit the new fixtures with the upgrade.

Reference environment (x86_64; Python 3.11; transformers must equal the pin in constraints.txt):

    python3.11 -m venv /work/refvenv
    /work/refvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 transformers==5.23.0 \\
        tokenizers==0.23.3 numpy pillow qwen-vl-utils==0.0.14 typer rich

Run from the repository root:

    PYTHONPATH=. /work/refvenv/bin/python tests/golden/make_golden.py

Writes `tests/golden/golden.npz` (arrays) and `tests/golden/manifest.json` (versions, date, prompts,
grids, second_per_grid_ts, frame-sampling and resize goldens, and the key of every array).

What is stored, per family and case (`tests/golden/frames.py`: 4 synthetic clips x 8/7 frames):
- `prompt_text`: the rendered chat template before placeholder expansion (what `Prompt.text` holds);
- `input_ids` [L] and, for Qwen families, `mm_token_type_ids` [L], `video_grid_thw` [3],
  `positions` [3, L] from the tiny model's own `get_rope_index`, `second_per_grid_t` (Qwen2.5-VL);
- pixel values, losslessly packed: every HF pixel value is `lut[channel, level]`, where `level` is the
  uint8 value torchvision's resize produced (recovered with `do_rescale=False, do_normalize=False`)
  and `lut` [3, 256] is HF's own fused rescale+normalise of 0..255; the script checks bit equality of
  `lut[channel, level]` with the processor's real `pixel_values` before saving. Qwen2.5-VL and LLaVA-Video
  run the very same video processor as Qwen2-VL and OneVision (checked bit for bit here), so their
  pixels are stored once.

Reference calls:
- LLaVA-OneVision / LLaVA-Video / Qwen2-VL / Qwen2.5-VL: `processor.apply_chat_template(messages,
  add_generation_prompt=True, tokenize=False)` then `processor(text=[text], videos=[frames],
  video_metadata=[metadata], do_sample_frames=False)`.
- Qwen-family videos with `cap_pixels_per_frame=True` (the reference, qwen-vl-utils, behaviour; the
  default from transformers 5.22 on per its own warning).
- Qwen3-VL: the stock 5.23 processor replaces only `<|video_pad|>` and keeps the template's own
  `<|vision_start|>`/`<|vision_end|>` around the timestamped block (`input_ids_stock`, stored for the
  record); the reference layout (qwen-vl-utils, transformers 4.57, vLLM, how the model was trained) has
  no such wrapper, so the comparable ids come from the same processor given the template's text with
  `<|vision_start|><|video_pad|><|vision_end|>` replaced by a bare `<|video_pad|>`.
- LLaVA-NeXT: T `{"type": "image"}` items, `processor(images=frames)`; only the base patch
  `pixel_values[:, 0]` is comparable with mlb (no any-res tiles, one `<image>` for all frames: by design,
  see `mlbcli/models/llava_next.py`). Tiny NeXT checkpoints lack `num_additional_image_tokens`; the prompt
  is not stored, so that does not matter here.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import math
import platform
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))  # `tests.golden.frames` and `mlbcli.testing.tiny` from this checkout

from tests.golden.frames import CASES, QUESTION, Case, sha256  # noqa: E402

NPZ = HERE / "golden.npz"
MANIFEST = HERE / "manifest.json"

#: Small `max_video_tokens` that make `cap_pixels_per_frame` bind on small frames (recorded in the manifest).
SMALL_MAX_VIDEO_TOKENS = {"qwen2_vl": 64, "qwen3_vl": 5}
#: The published video-processor bounds of the real hub repos (per frame for Qwen2-VL, per video for Qwen3-VL).
HUB_SIZE = {
    "qwen2_vl": {"shortest_edge": 128 * 28 * 28, "longest_edge": 768 * 28 * 28},
    "qwen3_vl": {"shortest_edge": 4096, "longest_edge": 25165824},
}
RESIZE_FRAME_SIZES = [(120, 160), (55, 97), (160, 90), (480, 640), (720, 1280), (1080, 1920), (1920, 1080)]
RESIZE_FRAME_COUNTS = [2, 4, 7, 8, 16, 32, 64, 128, 768]

SAMPLING_CLIPS = [  # (num_frames_total, native_fps)
    (1, 30.0),
    (2, 30.0),
    (3, 30.0),
    (5, 25.0),
    (8, 8.0),
    (50, 25.0),
    (64, 16.0),
    (95, 25.0),
    (150, 29.97),
    (900, 30.0),
    (1800, 30.0),
    (7200, 24.0),
]
SAMPLING_FRAMES = [1, 2, 3, 4, 5, 7, 8, 9, 11, 16, 32, 64]
SAMPLING_FPS = [0.5, 1.0, 2.0, 4.0]
SAMPLING_FPS_CAPS = [8, 32]  # --fps f --frames cap


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _builders(root: Path) -> dict[str, Path]:
    """The tiny checkpoints, built with the same (default) options as tests/test_golden.py builds them."""
    from mlbcli.testing import tiny

    return {
        "llava_onevision": tiny.build_tiny_llava_onevision(root / "tiny-llava-ov"),
        "llava_video": tiny.build_tiny_llava_video(root / "tiny-LLaVA-Video"),
        "qwen2_vl": tiny.build_tiny_qwen2_vl(root / "tiny-qwen2-vl", version="2"),
        "qwen2_5_vl": tiny.build_tiny_qwen2_vl(root / "tiny-qwen2.5-vl", version="2.5"),
        "qwen3_vl": tiny.build_tiny_qwen3_vl(root / "tiny-qwen3-vl"),
        "llava_next": tiny.build_tiny_llava_next(root / "tiny-llava-next"),
    }


def _messages(item_type: str, count: int = 1) -> list[dict[str, Any]]:
    """The user turn mlb renders: the visual item(s), then the question."""
    content: list[dict[str, Any]] = [{"type": item_type} for _ in range(count)]
    content.append({"type": "text", "text": QUESTION})
    return [{"role": "user", "content": content}]


def _pack_pixels(
    pixel: np.ndarray, levels: np.ndarray, channel_of: np.ndarray, lut_source: Any
) -> tuple[np.ndarray, np.ndarray]:
    """(levels uint8, lut [3, 256] float32) with `lut[channel_of, levels] == pixel` bit for bit.

    `channel_of` broadcasts against `pixel` (the channel of every element); `lut_source(x)` applies the
    processor's own rescale+normalise to a [1, 3, 1, 256] float tensor of the levels 0..255.
    """
    import torch

    if not np.array_equal(levels, np.round(levels)) or levels.min() < 0 or levels.max() > 255:
        raise SystemExit("the processor did not resize in uint8: levels are not integers in 0..255")
    levels_u8 = levels.astype(np.uint8)
    ramp = torch.arange(256, dtype=torch.float32).view(1, 1, 1, 256).expand(1, 3, 1, 256).contiguous()
    lut = lut_source(ramp).reshape(3, 256).numpy().astype(np.float32)
    rebuilt = lut[np.broadcast_to(channel_of, pixel.shape), levels_u8]
    if not np.array_equal(rebuilt.view(np.uint32), pixel.astype(np.float32).view(np.uint32)):
        bad = np.abs(rebuilt - pixel).max()
        raise SystemExit(f"lut[channel, level] differs from the processor's pixel values (max {bad})")
    return levels_u8, lut


def _normaliser(processor: Any) -> Any:
    """x [1, 3, 1, 256] float -> the processor's fused rescale+normalise of it, as its `_preprocess` runs."""

    def apply(x: Any) -> Any:
        return processor.rescale_and_normalize(
            x,
            processor.do_rescale,
            processor.rescale_factor,
            processor.do_normalize,
            processor.image_mean,
            processor.image_std,
        )

    return apply


def _video_call(processor: Any, case: Case, text: str, **extra: Any) -> Any:
    from transformers.video_utils import VideoMetadata

    metadata = VideoMetadata(**case.metadata())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return processor(
            text=[text],
            videos=[case.frames()],
            video_metadata=[metadata],
            do_sample_frames=False,
            return_tensors="pt",
            **extra,
        )


def _qwen_channel_of(columns: int, temporal_patch: int, patch: int) -> np.ndarray:
    """Channel of each column of patchified Qwen pixels ([rows, 3 * TP * P * P], channel-major)."""
    return (np.arange(columns) // (temporal_patch * patch * patch))[None, :]


def video_family(family: str, path: Path, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """OneVision / LLaVA-Video / Qwen2-VL / Qwen2.5-VL / Qwen3-VL: prompts, ids, pixels, grids, positions."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    qwen = family.startswith("qwen")
    processor_kwargs: dict[str, Any] = {}
    if not qwen:
        # What the llava-hf repos' processor_config.json carries and the tiny checkpoints lack: the
        # tower's patch count (112 / 14 = 8 -> 64) and the feature strategy of the checkpoint.
        config = AutoConfig.from_pretrained(path)
        side = config.vision_config.image_size // config.vision_config.patch_size
        processor_kwargs = {
            "num_image_tokens": side * side,
            "vision_feature_select_strategy": config.vision_feature_select_strategy,
        }
    processor = AutoProcessor.from_pretrained(path, **processor_kwargs)
    video_processor = processor.video_processor
    extra = {"cap_pixels_per_frame": True} if qwen else {}
    model = None
    if qwen:
        config = AutoConfig.from_pretrained(path)
        model = AutoModelForImageTextToText.from_pretrained(path, config=config).eval()
    record: dict[str, Any] = {
        "processor": type(processor).__name__,
        "video_processor": type(video_processor).__name__,
        "call_kwargs": {"do_sample_frames": False, **extra},
        "processor_kwargs": processor_kwargs,
        "cases": {},
    }
    for case in CASES:
        prefix = f"{family}/{case.name}"
        text = processor.apply_chat_template(_messages("video"), add_generation_prompt=True, tokenize=False)
        entry: dict[str, Any] = {"prompt_text": text}
        call_text = text
        if family == "qwen3_vl":
            stock = _video_call(processor, case, text, **extra)
            arrays[f"{prefix}/input_ids_stock"] = stock["input_ids"][0].numpy()
            wrapped = processor.vision_start_token + processor.video_token + processor.vision_end_token
            if text.count(wrapped) != 1:
                raise SystemExit(f"{family}: the template does not render {wrapped!r} once")
            call_text = text.replace(wrapped, processor.video_token)
        out = _video_call(processor, case, call_text, **extra)
        plain = _video_call(processor, case, call_text, do_rescale=False, do_normalize=False, **extra)
        pixel = out["pixel_values_videos"].numpy()
        levels = plain["pixel_values_videos"].numpy()
        if qwen:
            channel_of = _qwen_channel_of(
                pixel.shape[-1], video_processor.temporal_patch_size, video_processor.patch_size
            )
        else:  # [1, T, 3, S, S]
            channel_of = np.arange(3).reshape(1, 1, 3, 1, 1)
        levels_u8, lut = _pack_pixels(pixel, levels, channel_of, _normaliser(video_processor))
        arrays[f"{prefix}/pixel_levels"] = levels_u8
        arrays[f"{prefix}/pixel_lut"] = lut
        entry["pixel_shape"] = list(pixel.shape)
        entry["pixel_sha256"] = sha256(pixel.astype(np.float32))
        entry["frames_sha256"] = sha256(case.frames())
        arrays[f"{prefix}/input_ids"] = out["input_ids"][0].numpy()
        video_token_id = processor.tokenizer.convert_tokens_to_ids(processor.video_token)
        entry["num_video_tokens"] = int((out["input_ids"][0] == video_token_id).sum())
        if qwen:
            grid = out["video_grid_thw"]
            entry["video_grid_thw"] = grid[0].tolist()
            arrays[f"{prefix}/mm_token_type_ids"] = out["mm_token_type_ids"][0].numpy()
            uncapped = _video_call(processor, case, call_text, cap_pixels_per_frame=False)
            entry["cap_binds"] = uncapped["video_grid_thw"][0].tolist() != entry["video_grid_thw"]
            rope: dict[str, Any] = {
                "mm_token_type_ids": out["mm_token_type_ids"],
                "video_grid_thw": grid,
            }
            if "second_per_grid_ts" in out:
                from transformers.video_utils import VideoMetadata

                seconds = out["second_per_grid_ts"]  # float32, as the model receives it
                # The processor's own float64 value before the tensor: temporal_patch / sampled_fps.
                exact = video_processor.temporal_patch_size / VideoMetadata(**case.metadata()).sampled_fps
                if np.float32(exact) != np.float32(seconds[0]):
                    raise SystemExit(f"{family}: second_per_grid_ts {seconds} is not {exact}")
                entry["second_per_grid_t"] = exact
                entry["second_per_grid_t_float32"] = float(seconds[0])
                rope["second_per_grid_ts"] = torch.as_tensor(seconds)
            with torch.no_grad():
                positions, _ = model.model.get_rope_index(out["input_ids"], **rope)  # type: ignore[union-attr]
            arrays[f"{prefix}/positions"] = positions[:, 0].numpy()  # [3, L]
        record["cases"][case.name] = entry
    return record


def llava_next(path: Path, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """LLaVA-NeXT: the base patch (`pixel_values[:, 0]`) of every frame given as an image."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(path)
    image_processor = processor.image_processor
    record: dict[str, Any] = {
        "processor": type(processor).__name__,
        "image_processor": type(image_processor).__name__,
        "cases": {},
    }
    for case in CASES:
        prefix = f"llava_next/{case.name}"
        images = list(case.frames())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = image_processor(images=images, return_tensors="pt")
            plain = image_processor(images=images, do_rescale=False, do_normalize=False, return_tensors="pt")
        pixel = out["pixel_values"][:, 0].numpy()  # [T, 3, S, S] the base patch
        levels = plain["pixel_values"][:, 0].numpy()
        channel_of = np.arange(3).reshape(1, 3, 1, 1)
        levels_u8, lut = _pack_pixels(pixel, levels, channel_of, _normaliser(image_processor))
        arrays[f"{prefix}/pixel_levels"] = levels_u8
        arrays[f"{prefix}/pixel_lut"] = lut
        record["cases"][case.name] = {
            "pixel_shape": list(pixel.shape),
            "tiles_per_frame": int(out["pixel_values"].shape[1]),
            "image_sizes": out["image_sizes"].tolist(),
            "frames_sha256": sha256(case.frames()),
        }
    return record


def _dedupe(arrays: dict[str, np.ndarray], family: str, source: str) -> None:
    """Drop `family`'s pixels when they equal `source`'s bit for bit (the same processor); the manifest
    then says where they are."""
    for case in CASES:
        for key in ("pixel_levels", "pixel_lut"):
            mine, theirs = f"{family}/{case.name}/{key}", f"{source}/{case.name}/{key}"
            if not np.array_equal(arrays[mine], arrays[theirs]):
                raise SystemExit(f"{family} and {source} pixels differ for {case.name}: store both")
            del arrays[mine]


# -- frame sampling ------------------------------------------------------------------------------------
def sampling_goldens(qwen2_processor: Any, qwen3_processor: Any) -> list[dict[str, Any]]:
    """Frame indices of qwen-vl-utils 0.0.14 and of HF's Qwen2-VL / Qwen3-VL `sample_frames`.

    qwen-vl-utils: `smart_nframes(ele, N, fps)` then `torch.linspace(0, N-1, n).round()` (its decord /
    torchvision readers, whole clip). An exception is stored as {"error": message}.
    """
    import torch
    from qwen_vl_utils import vision_process
    from transformers.video_utils import VideoMetadata

    def run(fn: Any) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return [int(i) for i in fn()]
        except Exception as error:  # noqa: BLE001 - the reference's refusal is the golden value
            return {"error": f"{type(error).__name__}: {error}"}

    def qwen_vl_utils(total: int, native_fps: float, ele: dict[str, Any]) -> Any:
        def indices() -> list[int]:
            n = vision_process.smart_nframes(ele, total_frames=total, video_fps=native_fps)
            return torch.linspace(0, total - 1, n).round().long().tolist()

        return run(indices)

    def hf(processor: Any, total: int, native_fps: float, **kwargs: Any) -> Any:
        return run(
            lambda: processor.sample_frames(VideoMetadata(total_num_frames=total, fps=native_fps), **kwargs)
        )

    rows: list[dict[str, Any]] = []
    requests: list[dict[str, Any]] = [{"num_frames": k, "fps": None} for k in SAMPLING_FRAMES]
    requests += [{"num_frames": None, "fps": f} for f in SAMPLING_FPS]
    requests += [{"num_frames": k, "fps": f} for f in SAMPLING_FPS for k in SAMPLING_FPS_CAPS]
    for total, native_fps in SAMPLING_CLIPS:
        for request in requests:
            k, f = request["num_frames"], request["fps"]
            if f is None:
                ele: dict[str, Any] = {"nframes": k}
            else:
                ele = {"fps": f} if k is None else {"fps": f, "max_frames": k}
            row = {"num_frames_total": total, "native_fps": native_fps, **request}
            row["qwen_vl_utils"] = qwen_vl_utils(total, native_fps, ele)
            # linspace(0, N-1, k).round() for the requested k itself (no even rounding): the evenly
            # spaced rule with qwen-vl-utils' rounding, for the families without a temporal patch.
            if f is None:
                row["linspace_round"] = run(
                    lambda total=total, k=k: torch.linspace(0, total - 1, k).round().long().tolist()
                )
            if k is None or f is None:  # HF's samplers take one of the two
                hf_kwargs = {"num_frames": k} if f is None else {"fps": f}
                row["hf_qwen2_vl"] = hf(qwen2_processor, total, native_fps, **hf_kwargs)
                row["hf_qwen3_vl"] = hf(qwen3_processor, total, native_fps, **hf_kwargs)
            rows.append(row)
    return rows


# -- per-frame resize with the pixel cap ---------------------------------------------------------------
def resize_goldens(family: str, path: Path) -> list[dict[str, Any]]:
    """(h, w) HF's `resize` picks with `cap_pixels_per_frame=True`, for frame sizes x frame counts x configs.

    Only the size decision is HF's own code: the backend's pixel resize (`TorchvisionBackend.resize`) is
    replaced by a recorder, so 768 frames of 1080p cost nothing. The clip fixtures check the same sizes
    with the real resize.
    """
    import torch
    from transformers import AutoProcessor
    from transformers.image_utils import SizeDict

    base = AutoProcessor.from_pretrained(path).video_processor
    owner = next(c for c in type(base).__mro__[1:] if "resize" in c.__dict__)
    configs: list[dict[str, Any]] = [
        {"name": "tiny", "size": None, "max_video_tokens": SMALL_MAX_VIDEO_TOKENS[family]},
        {"name": "hub", "size": HUB_SIZE[family], "max_video_tokens": None},
        {
            "name": "hub-small-budget",
            "size": HUB_SIZE[family],
            "max_video_tokens": SMALL_MAX_VIDEO_TOKENS[family],
        },
    ]
    rows = []
    for config in configs:
        processor = AutoProcessor.from_pretrained(path).video_processor
        if config["size"] is not None:
            processor.size = SizeDict(**config["size"])
        if config["max_video_tokens"] is not None:
            processor.max_video_tokens = config["max_video_tokens"]
        config["effective"] = {
            "size": {
                "shortest_edge": processor.size.shortest_edge,
                "longest_edge": processor.size.longest_edge,
            },
            "max_video_tokens": processor.max_video_tokens,
        }
        seen: list[tuple[int, int]] = []

        def record(self: Any, image: Any, size: Any, *args: Any, seen: Any = seen, **kwargs: Any) -> Any:
            seen.append((int(size.height), int(size.width)))
            return image

        factor = processor.patch_size * processor.merge_size
        with mock.patch.object(owner, "resize", record):
            for height, width in RESIZE_FRAME_SIZES:
                for count in RESIZE_FRAME_COUNTS:
                    videos = torch.zeros(1, 1, 1, 1, 1, dtype=torch.uint8).expand(1, count, 3, height, width)
                    seen.clear()
                    processor.resize(
                        videos,
                        size=processor.size,
                        resample=processor.resample,
                        factor=factor,
                        temporal_factor=processor.temporal_patch_size,
                        cap_pixels_per_frame=True,
                    )
                    rows.append(
                        {
                            "config": config["name"],
                            "num_frames": count,
                            "height": height,
                            "width": width,
                            "resized": list(seen[0]),
                        }
                    )
    return [{"configs": configs}, *rows]


def main() -> None:
    import torch
    import transformers

    constraints = (ROOT / "constraints.txt").read_text()
    pinned = next(
        (
            line.split("==")[1].strip()
            for line in constraints.splitlines()
            if line.startswith("transformers==")
        ),
        None,
    )
    if pinned != transformers.__version__:
        raise SystemExit(
            f"transformers {transformers.__version__} here, constraints.txt pins {pinned}: "
            "regenerate with the pinned version (see this file's docstring)"
        )
    torch.set_num_threads(max(1, torch.get_num_threads()))
    arrays: dict[str, np.ndarray] = {}
    families: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mlb-golden-") as tmp:
        paths = _builders(Path(tmp))
        for family in ("llava_onevision", "llava_video", "qwen2_vl", "qwen2_5_vl", "qwen3_vl"):
            families[family] = video_family(family, paths[family], arrays)
        families["llava_next"] = llava_next(paths["llava_next"], arrays)
        _dedupe(arrays, "qwen2_5_vl", "qwen2_vl")
        _dedupe(arrays, "llava_video", "llava_onevision")
        families["qwen2_5_vl"]["pixels_from"] = "qwen2_vl"
        families["llava_video"]["pixels_from"] = "llava_onevision"
        from transformers import AutoProcessor

        sampling = sampling_goldens(
            AutoProcessor.from_pretrained(paths["qwen2_vl"]).video_processor,
            AutoProcessor.from_pretrained(paths["qwen3_vl"]).video_processor,
        )
        resize = {family: resize_goldens(family, paths[family]) for family in ("qwen2_vl", "qwen3_vl")}
        shutil.rmtree(tmp, ignore_errors=True)
    manifest = {
        "generated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "regenerate": "PYTHONPATH=. /work/refvenv/bin/python tests/golden/make_golden.py",
        "versions": {
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "torchvision": _version("torchvision"),
            "tokenizers": _version("tokenizers"),
            "qwen-vl-utils": _version("qwen-vl-utils"),
            "numpy": np.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            # torch's uint8 resize has per-ISA kernels: bit equality is promised on the same ISA only
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        },
        "question": QUESTION,
        "cases": {
            case.name: {**case.metadata(), "timestamps_s": case.timestamps_s, "sha256": sha256(case.frames())}
            for case in CASES
        },
        "families": families,
        "sampling": sampling,
        "resize": {
            family: {"configs": rows[0]["configs"], "rows": rows[1:]} for family, rows in resize.items()
        },
        "arrays": sorted(arrays),
    }
    np.savez_compressed(NPZ, **arrays)
    MANIFEST.write_text(json.dumps(manifest, indent=1, sort_keys=False) + "\n")
    size = NPZ.stat().st_size + MANIFEST.stat().st_size
    print(f"wrote {NPZ.name} and {MANIFEST.name}: {size / 1e6:.2f} MB, {len(arrays)} arrays")
    if not math.isfinite(size) or size > 3_000_000:
        print("warning: fixtures exceed 3 MB", file=sys.stderr)


if __name__ == "__main__":
    main()
