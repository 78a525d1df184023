"""Regenerate the golden fixtures of the 2026 families (issue 21): what the official Hugging Face processors
make of fixed frames, for LLaVA-NeXT-Video, SmolVLM2, InternVL3.5 (HF) and GLM-4.1V / GLM-4.6V.

Like `make_golden.py` (same reference venv, same synthetic clips of `tests/golden/frames.py`), one file
per family: `tests/golden/newfam_<family>.npz` + `newfam_<family>.json`, compared by
`tests/test_golden_newfam.py` on every CI run without torchvision. The tiny checkpoints are built with
the options `GOLDEN_OPTIONS` names (smaller frames than the defaults, so each family's fixture stays well
under 300 KB), in this checkout's `mlbcli.testing.tiny`.

SmolVLM's processor needs `num2words`, which the reference venv lacks; install it beside it, not in it:

    /work/refvenv/bin/pip install --target /tmp/n2w num2words
    PYTHONPATH=.:/tmp/n2w /work/refvenv/bin/python tests/golden/make_golden_newfam.py

Reference call, per family and case: `processor.apply_chat_template(messages, add_generation_prompt=True,
tokenize=False)` (SmolVLM: its video template), then `processor(text=[text], videos=[frames],
video_metadata=[metadata], do_sample_frames=False)`, the metadata with the duration HF's decoders set (total frames
/ fps; SmolVLM prints it). Pixels are stored losslessly as uint8 levels (the
same call with `do_rescale=False, do_normalize=False`) and the processor's own [3, 256] rescale+normalise
table (`make_golden._pack_pixels` checks `lut[channel, level]` against the real pixel values bit for bit).
GLM: `mm_token_type_ids`, `video_grid_thw` and the 3-D positions of the tiny model's own `get_rope_index`.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

from tests.golden.frames import CASES, QUESTION, sha256  # noqa: E402
from tests.golden.make_golden import _normaliser, _pack_pixels  # noqa: E402

#: Two video lengths (4 s at 16 fps, 2 s at 25 fps) and two frame counts (8, 7).
NEWFAM_CASES = ("landscape-8", "odd-7")
#: family -> options of its tiny builder (the test builds the same checkpoints).
GOLDEN_OPTIONS: dict[str, dict[str, Any]] = {
    "llava_next_video": {"image_size": 56},
    "smolvlm": {},
    "internvl": {"image_size": 56},
    "glm4v": {"max_video_pixels": 28 * 28 * 2 * 12},
    "glm46v": {"max_video_pixels": 28 * 28 * 2 * 12},
}
#: family -> (name of its pixel tensor, how the channel of each element is found from its shape)
PIXEL_KEY = {
    "llava_next_video": "pixel_values_videos",  # [1, T, 3, S, S]
    "smolvlm": "pixel_values",  # [1, T, 3, S, S]
    "internvl": "pixel_values",  # [T, 3, S, S]
    "glm4v": "pixel_values_videos",  # [rows, 3 * TP * P * P], channel-major columns
    "glm46v": "pixel_values_videos",
}


def _channel_of(family: str, shape: tuple[int, ...]) -> np.ndarray:
    if family.startswith("glm"):
        return (np.arange(shape[-1]) // (shape[-1] // 3))[None, :]
    channel_axis = len(shape) - 3
    view = [1] * len(shape)
    view[channel_axis] = 3
    return np.arange(3).reshape(view)


def _video_call(processor: Any, case: Any, text: str, **extra: Any) -> Any:
    """`processor(text, videos, video_metadata)` with the metadata HF's own video decoders give
    (`load_video`: duration = total frames / fps; SmolVLM prints it in the prompt)."""
    import warnings

    from transformers.video_utils import VideoMetadata

    clip = case.clip
    metadata = VideoMetadata(**case.metadata(), duration=clip.num_frames_total / clip.native_fps)
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


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def family_golden(family: str, path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    import torch
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(path)
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    entry: dict[str, Any] = {"prompt_text": text, "cases": {}}
    arrays: dict[str, np.ndarray] = {}
    model = None
    if family.startswith("glm"):
        from transformers import AutoModelForImageTextToText

        model = AutoModelForImageTextToText.from_pretrained(path).eval()
    for case in (c for c in CASES if c.name in NEWFAM_CASES):
        out = _video_call(processor, case, text)
        raw = _video_call(processor, case, text, do_rescale=False, do_normalize=False)
        key = PIXEL_KEY[family]
        pixel = out[key].numpy()
        levels = raw[key].numpy()
        lut_source = _normaliser(processor.video_processor)
        packed, lut = _pack_pixels(pixel, levels, _channel_of(family, pixel.shape), lut_source)
        prefix = f"{family}/{case.name}"
        arrays[f"{prefix}/input_ids"] = out["input_ids"][0].numpy()
        arrays[f"{prefix}/pixel_levels"] = packed
        arrays[f"{prefix}/pixel_lut"] = lut
        case_entry: dict[str, Any] = {"pixel_shape": list(pixel.shape)}
        if model is not None:
            mm = out["mm_token_type_ids"]
            grid = out["video_grid_thw"]
            with torch.no_grad():
                positions, _ = model.model.get_rope_index(
                    out["input_ids"], mm_token_type_ids=mm, video_grid_thw=grid
                )
            arrays[f"{prefix}/mm_token_type_ids"] = mm[0].numpy()
            arrays[f"{prefix}/positions"] = positions[:, 0].numpy()
            case_entry["video_grid_thw"] = grid[0].tolist()
        entry["cases"][case.name] = case_entry
    return entry, arrays


def main() -> None:
    import torch

    from mlbcli.testing.tiny import build_tiny

    with tempfile.TemporaryDirectory() as tmp:
        for family, options in GOLDEN_OPTIONS.items():
            path = build_tiny(family, Path(tmp) / f"tiny-{family}", **options)
            entry, arrays = family_golden(family, path)
            manifest = {
                "generator": "tests/golden/make_golden_newfam.py",
                "family": family,
                "tiny_options": options,
                "versions": {
                    "transformers": _version("transformers"),
                    "torch": torch.__version__,
                    "torchvision": _version("torchvision"),
                    "tokenizers": _version("tokenizers"),
                    "num2words": _version("num2words"),
                    "numpy": np.__version__,
                    "python": platform.python_version(),
                    "machine": platform.machine(),
                    "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                },
                "question": QUESTION,
                "clips": {
                    c.name: {**c.metadata(), "sha256": sha256(c.frames())}
                    for c in CASES
                    if c.name in NEWFAM_CASES
                },
                **entry,
                "arrays": sorted(arrays),
            }
            npz = HERE / f"newfam_{family}.npz"
            np.savez_compressed(npz, **arrays)
            (HERE / f"newfam_{family}.json").write_text(json.dumps(manifest, indent=1) + "\n")
            print(f"{family}: {npz.stat().st_size / 1e3:.0f} KB, {len(arrays)} arrays")


if __name__ == "__main__":
    main()
