"""Regenerate the Qwen3.5 golden fixtures: what the official processor of a `qwen3_5` checkpoint makes of
fixed frames (transformers' auto tables give it `Qwen3VLProcessor` with `Qwen3VLVideoProcessor`).

Run from the repository root in the reference environment (see tests/golden/make_golden.py):

    PYTHONPATH=. /work/refvenv/bin/python tests/golden/make_golden_qwen3_5.py

Writes `tests/golden/qwen3_5_golden.npz` and `tests/golden/qwen3_5_manifest.json`, compared with mlb's
inputs by `tests/test_golden_2026.py`.

Processor provenance: `AutoProcessor.from_pretrained(<tiny folder>)` of the tiny checkpoint
(`mlbcli.testing.tiny.build_tiny("qwen3_5")`, default options: its tokenizer, chat_template.jinja,
preprocessor_config.json and video_preprocessor_config.json); positions from that checkpoint's own
`model.model.get_rope_index`. As for Qwen3-VL (make_golden.py), the stock processor keeps the template's
`<|vision_start|>`/`<|vision_end|>` around the timestamped block (`input_ids_stock`, stored for the record)
and the comparable ids come from the template's text with that wrapper replaced by a bare `<|video_pad|>`;
videos with `cap_pixels_per_frame=True`. Pixels are uint8 levels (value = lut[channel, level], checked
bit for bit), LZMA-compressed (`pixel_levels_xz`).
"""

from __future__ import annotations

import datetime
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from tests.golden.frames import CASES, sha256  # noqa: E402
from tests.golden.make_golden import (  # noqa: E402
    _messages,
    _normaliser,
    _pack_pixels,
    _qwen_channel_of,
    _version,
    _video_call,
)
from tests.golden.make_golden_gemma4 import CASE_NAMES, pack_levels  # noqa: E402

FAMILY = "qwen3_5"
EXTRA = {"cap_pixels_per_frame": True}


def _case(processor: Any, model: Any, case: Any, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    import torch

    text = processor.apply_chat_template(_messages("video"), add_generation_prompt=True, tokenize=False)
    stock = _video_call(processor, case, text, **EXTRA)
    arrays[f"{case.name}/input_ids_stock"] = stock["input_ids"][0].numpy()
    wrapped = processor.vision_start_token + processor.video_token + processor.vision_end_token
    if text.count(wrapped) != 1:
        raise SystemExit(f"the template does not render {wrapped!r} once")
    call_text = text.replace(wrapped, processor.video_token)
    out = _video_call(processor, case, call_text, **EXTRA)
    plain = _video_call(processor, case, call_text, do_rescale=False, do_normalize=False, **EXTRA)
    pixel = out["pixel_values_videos"].numpy()
    vp = processor.video_processor
    channel_of = _qwen_channel_of(pixel.shape[-1], vp.temporal_patch_size, vp.patch_size)
    levels, lut = _pack_pixels(pixel, plain["pixel_values_videos"].numpy(), channel_of, _normaliser(vp))
    arrays[f"{case.name}/pixel_levels_xz"] = pack_levels(levels)
    arrays[f"{case.name}/pixel_lut"] = lut
    arrays[f"{case.name}/input_ids"] = out["input_ids"][0].numpy()
    arrays[f"{case.name}/mm_token_type_ids"] = out["mm_token_type_ids"][0].numpy()
    grid = out["video_grid_thw"]
    with torch.no_grad():
        positions, _ = model.model.get_rope_index(
            out["input_ids"], mm_token_type_ids=out["mm_token_type_ids"], video_grid_thw=grid
        )
    arrays[f"{case.name}/positions"] = positions[:, 0].numpy()  # [3, L]
    video_token_id = processor.tokenizer.convert_tokens_to_ids(processor.video_token)
    return {
        "prompt_text": text,
        "video_grid_thw": grid[0].tolist(),
        "num_video_tokens": int((out["input_ids"][0] == video_token_id).sum()),
        "pixel_shape": list(pixel.shape),
        "pixel_sha256": sha256(pixel.astype(np.float32)),
        "frames_sha256": sha256(case.frames()),
    }


def main() -> None:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from mlbcli.testing.tiny import build_tiny

    arrays: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as root:
        path = build_tiny(FAMILY, Path(root) / "Qwen3.5-tiny")
        processor = AutoProcessor.from_pretrained(path)
        model = AutoModelForImageTextToText.from_pretrained(path).eval()
        cases = {
            case.name: _case(processor, model, case, arrays) for case in CASES if case.name in CASE_NAMES
        }
    manifest = {
        "generated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "regenerate": f"PYTHONPATH=. /work/refvenv/bin/python tests/golden/{Path(__file__).name}",
        "versions": {name: _version(name) for name in ("transformers", "torch", "torchvision", "tokenizers")},
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "processor": f"{type(processor).__name__} from the tiny checkpoint folder (module docstring)",
        "video_processor": type(processor.video_processor).__name__,
        "call_kwargs": {"do_sample_frames": False, **EXTRA},
        "cases": cases,
    }
    np.savez_compressed(HERE / f"{FAMILY}_golden.npz", **arrays)
    (HERE / f"{FAMILY}_manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()
