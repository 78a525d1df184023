"""Small deterministic synthetic clips, for tests, examples and `mlb doctor` (no real video needed).

Each pattern exercises something a pruning method or the decoder must get right: ``moving`` objects
(temporal redundancy with motion), ``flash`` (hard scene cuts, for segment detection) and ``static``
(near-identical frames). The same arguments give byte-identical files (single-threaded encoders).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from mlbcli.io.containers import import_av, quiet_native_stderr

__all__ = ["PATTERNS", "make_test_video"]

PATTERNS = ("moving", "flash", "static")


def make_test_video(
    path: str | os.PathLike[str],
    *,
    num_frames: int = 32,
    width: int = 160,
    height: int = 120,
    fps: float = 8,
    codec: str = "libx264",
    seed: int = 0,
    pattern: str = "moving",
    container_options: dict[str, str] | None = None,
) -> Path:
    """Write a small deterministic synthetic clip with PyAV and return its path.

    Patterns: ``moving`` (a yellow disc moving right and a red square moving down on a blue gradient),
    ``flash`` (four scenes with different background colours and objects: hard cuts at frames
    ``num_frames * k // 4``, for segment detection) and ``static`` (an almost still scene, for redundancy
    tests). The ``seed`` perturbs colours and positions; same arguments give the same frames.
    ``container_options`` go to the muxer, e.g. ``{"movflags": "faststart"}`` to put the MP4 index first
    (then a truncated copy still opens, which tests partial decoding).
    """
    if pattern not in PATTERNS:
        raise ValueError(f"unknown pattern {pattern!r}; choose one of {', '.join(PATTERNS)}")
    if num_frames <= 0 or width <= 0 or height <= 0:
        raise ValueError("num_frames, width and height must be positive")
    av = import_av()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    scene = _SceneParams.random(rng)
    rate = Fraction(fps).limit_denominator(1001)
    with quiet_native_stderr(), av.open(str(out), mode="w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = width, height
        stream.pix_fmt = _pick_pix_fmt(stream)
        if codec == "libx264":
            stream.options = {"threads": "1"}  # single-threaded: byte-identical output for a seed
        elif codec == "libx265":
            # x265 prints its statistics with its own logger, outside FFmpeg's log level.
            stream.options = {"x265-params": "log-level=error:frame-threads=1"}
        for i in range(num_frames):
            rgb = _render(pattern, i, num_frames, width, height, scene)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out


def _pick_pix_fmt(stream: Any) -> str:
    """yuv420p where the encoder takes it (what real videos use), else the encoder's first format."""
    formats = [f.name for f in (stream.codec_context.codec.video_formats or [])]
    if not formats or "yuv420p" in formats:
        return "yuv420p"
    return formats[0]


@dataclass(frozen=True)
class _SceneParams:
    """Seed-dependent knobs of the synthetic scenes."""

    hue_shift: int
    y_disc: float
    x_square: float
    radius: float

    @staticmethod
    def random(rng: np.random.Generator) -> _SceneParams:
        return _SceneParams(
            hue_shift=int(rng.integers(0, 40)),
            y_disc=float(rng.uniform(0.3, 0.7)),
            x_square=float(rng.uniform(0.2, 0.8)),
            radius=float(rng.uniform(0.1, 0.18)),
        )


# Background / object colours of the four "flash" scenes: far apart so cuts are unmistakable.
_FLASH_SCENES = (
    ((30, 60, 200), (250, 220, 30)),
    ((200, 40, 40), (40, 220, 240)),
    ((30, 170, 60), (250, 250, 250)),
    ((120, 40, 160), (250, 150, 20)),
)


def _render(pattern: str, i: int, n: int, w: int, h: int, s: _SceneParams) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    t = i / max(n - 1, 1)
    if pattern == "flash":
        k = min(i * 4 // n, 3)
        bg, fg = _FLASH_SCENES[k]
        img = np.empty((h, w, 3), np.uint8)
        img[:] = bg
        local = (i - k * n / 4) / max(n / 4, 1)
        _disc(img, xx, yy, cx=(0.2 + 0.6 * local) * w, cy=s.y_disc * h, r=s.radius * min(w, h), color=fg)
        return img
    # Blue gradient background (its tint shifted by the seed).
    img = np.empty((h, w, 3), np.uint8)
    img[..., 0] = 20 + s.hue_shift
    img[..., 1] = (40 + 60 * yy / max(h - 1, 1)).astype(np.uint8)
    img[..., 2] = 170 + s.hue_shift
    if pattern == "static":
        t = 0.02 * t  # objects barely move: consecutive frames nearly identical
    r = s.radius * min(w, h)
    _disc(img, xx, yy, cx=r + t * (w - 2 * r), cy=s.y_disc * h, r=r, color=(250, 220, 30))
    side = int(0.15 * min(w, h))
    x0 = int(s.x_square * (w - side))
    y0 = int(t * (h - side))
    img[y0 : y0 + side, x0 : x0 + side] = (220, 40, 40)
    return img


def _disc(
    img: np.ndarray, xx: np.ndarray, yy: np.ndarray, *, cx: float, cy: float, r: float, color: Any
) -> None:
    img[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = color
