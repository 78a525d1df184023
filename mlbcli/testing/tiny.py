"""Tiny random checkpoints built from config, for `mlb doctor` and the test suite.

No weights can be downloaded in CI, so we build a real `LlavaOnevisionForConditionalGeneration` (and
Qwen2-VL / Qwen2.5-VL / Qwen3-VL / LLaVA-NeXT models, one builder each) with a few thousand parameters,
save it with `save_pretrained` next to a byte-level BPE tokenizer trained on the fly, and load it back
by path exactly as a user loads a real checkpoint. Random weights are drawn with a large
`initializer_range` (0.5): at the default 0.02 a tiny model prints the same tokens whatever the video,
and tests could not see the effect of pruning.

This module is the face: `TINY_FAMILIES` and `build_tiny(family, out_dir)` let a caller (the doctor)
go over every family without naming one; the builders live in `tiny_llava.py` and `tiny_qwen.py`.
Nothing on the runtime path imports this package.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlbcli.testing.tiny_gemma4 import build_tiny_gemma4
from mlbcli.testing.tiny_glm4v import build_tiny_glm4v
from mlbcli.testing.tiny_internvl import build_tiny_internvl
from mlbcli.testing.tiny_llava import (
    build_tiny_llava_next,
    build_tiny_llava_onevision,
    build_tiny_llava_video,
)
from mlbcli.testing.tiny_llava_next_video import build_tiny_llava_next_video
from mlbcli.testing.tiny_qwen import build_tiny_qwen2_vl, build_tiny_qwen3_vl
from mlbcli.testing.tiny_qwen3_5 import build_tiny_qwen3_5
from mlbcli.testing.tiny_smolvlm import build_tiny_smolvlm
from mlbcli.testing.tokenizer import build_tokenizer

#: Adapter family (`ModelAdapter.family`) -> the builder of its tiny checkpoint, in the doctor's order.
_BUILDERS: dict[str, Callable[..., Path]] = {
    "llava_onevision": build_tiny_llava_onevision,
    "qwen2_vl": lambda out, **options: build_tiny_qwen2_vl(out, version="2", **options),
    "qwen2_5_vl": lambda out, **options: build_tiny_qwen2_vl(out, version="2.5", **options),
    "llava_next": build_tiny_llava_next,
    "qwen3_vl": build_tiny_qwen3_vl,
    "qwen3_vl_moe": lambda out, **options: build_tiny_qwen3_vl(out, moe=True, **options),
    # its folder must name it (`build_tiny_llava_video`): `tiny-llava_video` does
    "llava_video": build_tiny_llava_video,
    "gemma4": build_tiny_gemma4,
    "qwen3_5": build_tiny_qwen3_5,
    "llava_next_video": build_tiny_llava_next_video,
    "smolvlm": build_tiny_smolvlm,
    "internvl": build_tiny_internvl,
    "glm4v": build_tiny_glm4v,
    "glm46v": lambda out, **options: build_tiny_glm4v(out, version="4.6", **options),
}

#: Every family a tiny checkpoint can be built for (all built-in adapter families).
TINY_FAMILIES: tuple[str, ...] = tuple(_BUILDERS)


def build_tiny(family: str, out_dir: str | Path, **options: Any) -> Path:
    """Write a tiny random checkpoint of adapter family `family` to `out_dir`; returns its path.

    `options` go to the family's builder (`seed`, `num_layers`, `hidden_size`...). A LLaVA-Video folder
    must contain "llava-video" or "llava_video" in its name, as the hub repos do (that is how the
    adapter tells it from OneVision).
    """
    if family not in _BUILDERS:
        raise KeyError(f"no tiny checkpoint for family {family!r}; known: {', '.join(TINY_FAMILIES)}")
    return _BUILDERS[family](out_dir, **options)


__all__ = [
    "TINY_FAMILIES",
    "build_tiny",
    "build_tiny_llava_next",
    "build_tiny_llava_onevision",
    "build_tiny_llava_video",
    "build_tiny_qwen2_vl",
    "build_tiny_qwen3_vl",
    "build_tiny_qwen3_5",
    "build_tokenizer",
]
