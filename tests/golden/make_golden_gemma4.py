"""Regenerate the Gemma 4 golden fixtures: what the official `Gemma4Processor` makes of fixed frames.

Run from the repository root in the reference environment (see tests/golden/make_golden.py):

    PYTHONPATH=. /work/refvenv/bin/python tests/golden/make_golden_gemma4.py

Writes `tests/golden/gemma4_golden.npz` and `tests/golden/gemma4_manifest.json`; `tests/test_golden_2026.py`
compares mlb's inputs with them on every CI run, without torchvision.

Processor provenance: the tiny checkpoint (`mlbcli.testing.tiny_gemma4.build_tiny_gemma4`, default options)
ships no processor_config.json / preprocessor_config.json (the audio feature extractor's), so
`AutoProcessor` cannot load it; the processor is built from the checkpoint's own files instead:
`Gemma4Processor(tokenizer=AutoTokenizer(<tiny folder>), video_processor=Gemma4VideoProcessor(**<tiny
folder>/video_preprocessor_config.json), chat_template=<tiny folder>/chat_template.jinja,
image_processor=Gemma4ImageProcessor(<the same patch/pooling/soft tokens>),
feature_extractor=Gemma4AudioFeatureExtractor())` (the last two are not used by a video call).

Reference call per case (tests/golden/frames.py): `processor.apply_chat_template(messages,
add_generation_prompt=True, tokenize=False)`, then `processor(text=[text], videos=[frames],
video_metadata=[metadata], do_sample_frames=False)`. Stored: the template's text, `input_ids` [L],
`video_position_ids` [T, P, 2], `num_frames_per_video`, and the pixels [T, P, p*p*3] as uint8 levels
(the processor rescales by 1/255 with mean 0 and std 1: value = lut[channel, level], checked bit for bit),
LZMA-compressed (`pixel_levels_xz`).
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
from tests.golden.make_golden import _messages, _normaliser, _pack_pixels, _version, _video_call  # noqa: E402

FAMILY = "gemma4"
#: Two clip lengths (64 and 50 source frames) and two frame counts (8 and 7): each file stays < 300 KB.
CASE_NAMES = ("landscape-8", "odd-7")


def pack_levels(levels: np.ndarray) -> np.ndarray:
    """uint8 levels as an LZMA stream (zlib leaves the textured patches at ~80%; LZMA at ~40%, which
    keeps the file under 300 KB); the shape is `pixel_shape` in the manifest."""
    import lzma

    return np.frombuffer(lzma.compress(levels.tobytes(), preset=9 | lzma.PRESET_EXTREME), dtype=np.uint8)


def processor_from(path: Path) -> Any:
    """`Gemma4Processor` from the tiny checkpoint's tokenizer, template and video processor config."""
    from transformers import AutoTokenizer
    from transformers.models.gemma4 import (
        Gemma4AudioFeatureExtractor,
        Gemma4ImageProcessor,
        Gemma4Processor,
        Gemma4VideoProcessor,
    )

    config = json.loads((path / "video_preprocessor_config.json").read_text())
    config.pop("video_processor_type", None)
    video = Gemma4VideoProcessor(**config)
    image = Gemma4ImageProcessor(
        patch_size=config["patch_size"],
        max_soft_tokens=config["max_soft_tokens"],
        pooling_kernel_size=config["pooling_kernel_size"],
    )
    return Gemma4Processor(
        feature_extractor=Gemma4AudioFeatureExtractor(),
        image_processor=image,
        tokenizer=AutoTokenizer.from_pretrained(path),
        video_processor=video,
        chat_template=(path / "chat_template.jinja").read_text(),
    )


def main() -> None:
    import torch

    from mlbcli.testing.tiny_gemma4 import build_tiny_gemma4

    arrays: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as root:
        path = build_tiny_gemma4(Path(root) / "gemma-4-tiny-it")
        processor = processor_from(path)
        video_processor = processor.video_processor
        cases: dict[str, Any] = {}
        for case in (c for c in CASES if c.name in CASE_NAMES):
            text = processor.apply_chat_template(
                _messages("video"), add_generation_prompt=True, tokenize=False
            )
            out = _video_call(processor, case, text)
            plain = _video_call(processor, case, text, do_rescale=False, do_normalize=False)
            pixel = out["pixel_values_videos"].numpy()  # [T, P_max, p*p*3], channels last
            channel_of = (np.arange(pixel.shape[-1]) % 3)[None, None, :]
            levels, lut = _pack_pixels(
                pixel, plain["pixel_values_videos"].numpy(), channel_of, _normaliser(video_processor)
            )
            arrays[f"{case.name}/pixel_levels_xz"] = pack_levels(levels)
            arrays[f"{case.name}/pixel_lut"] = lut
            arrays[f"{case.name}/input_ids"] = out["input_ids"][0].numpy()
            arrays[f"{case.name}/video_position_ids"] = out["video_position_ids"].numpy().astype(np.int16)
            cases[case.name] = {
                "prompt_text": text,
                "num_frames_per_video": [
                    int(n) for n in torch.as_tensor(out["num_frames_per_video"]).tolist()
                ],
                "num_video_tokens": int((out["input_ids"][0] == processor.video_token_id).sum()),
                "pixel_shape": list(pixel.shape),
                "pixel_sha256": sha256(pixel.astype(np.float32)),
                "frames_sha256": sha256(case.frames()),
            }
    manifest = {
        "generated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "regenerate": f"PYTHONPATH=. /work/refvenv/bin/python tests/golden/{Path(__file__).name}",
        "versions": {name: _version(name) for name in ("transformers", "torch", "torchvision", "tokenizers")},
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "processor": "Gemma4Processor built from the tiny checkpoint's files (module docstring)",
        "video_processor": type(video_processor).__name__,
        "call_kwargs": {"do_sample_frames": False},
        "cases": cases,
    }
    np.savez_compressed(HERE / f"{FAMILY}_golden.npz", **arrays)
    (HERE / f"{FAMILY}_manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()
