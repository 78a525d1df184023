"""Deterministic synthetic clips for the golden fixtures, in integer arithmetic only.

Both sides of the comparison (the reference environment that runs the official processors, and CI) build
the frames from this module, so nothing but the formulas below is stored. Everything is integer numpy
(no RNG, no floating-point transcendental functions whose last bit could change between numpy builds or
CPUs), so the same uint8 arrays come out everywhere; the manifest keeps a SHA-256 of every clip and the
test checks it.

What a frame contains, and why (bicubic + antialias resizing must be exercised, not just a flat image):
- smooth colour gradients (red across, green down): the interpolation's smooth part;
- a blue triangle wave (period 14 x 10 px, drifting with the frame index): fine periodic detail, so
  downscaling aliases unless antialiasing is right;
- 1-px vertical bars and a checkerboard patch: the sharpest edges, where the kernel's overshoot is
  clipped (the fixed-point uint8 path rounds and clips between its two passes);
- a yellow disc moving with the frame index: content that differs between sampled frames, so every
  frame index and the temporal-patch pairing are visible in the pixels.
A frame is a function of its SOURCE index (the index in the clip of `num_frames_total` frames), so the
k frames sampled from a clip are what a decoder would have returned for those indices.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Clip:
    """A synthetic clip: `num_frames_total` frames of `height` x `width` at `native_fps`."""

    name: str
    width: int
    height: int
    num_frames_total: int
    native_fps: float


@dataclass(frozen=True)
class Case:
    """One golden case: `len(indices)` frames of `clip`, sampled at source indices `indices`."""

    name: str
    clip: Clip
    indices: tuple[int, ...]

    @property
    def timestamps_s(self) -> list[float]:
        """index / native fps: the timestamps HF's `VideoMetadata.timestamps` derives."""
        return [i / self.clip.native_fps for i in self.indices]

    def frames(self) -> np.ndarray:
        """[T, H, W, 3] uint8 RGB."""
        return clip_frames(self.clip, self.indices)

    def metadata(self) -> dict[str, object]:
        """The `video_metadata` given to the HF processors (and, as `VideoInfo`, to mlb)."""
        return {
            "total_num_frames": self.clip.num_frames_total,
            "fps": self.clip.native_fps,
            "frames_indices": list(self.indices),
            "width": self.clip.width,
            "height": self.clip.height,
        }


def _evenly_spaced(num_frames_total: int, count: int) -> tuple[int, ...]:
    """floor(linspace(0, N-1, k) + 0.5) in integers: first and last frame included."""
    if count == 1:
        return (0,)
    return tuple(((2 * i * (num_frames_total - 1)) // (count - 1) + 1) // 2 for i in range(count))


def _triangle(value: np.ndarray, period: int) -> np.ndarray:
    """Integer triangle wave in 0..255 with the given period (in units of `value`)."""
    phase = value % period
    half = period // 2
    return np.where(phase < half, phase * 255 // half, (period - phase) * 255 // (period - half))


def clip_frames(clip: Clip, indices: tuple[int, ...] | list[int]) -> np.ndarray:
    """The frames of `clip` at source `indices`: [T, H, W, 3] uint8, integer arithmetic only."""
    height, width = clip.height, clip.width
    y, x = np.mgrid[0:height, 0:width].astype(np.int64)  # [H, W] each
    frames = np.empty((len(indices), height, width, 3), dtype=np.uint8)
    radius = max(3, min(height, width) // 5)
    for out, index in enumerate(indices):
        i = int(index)
        red = x * 255 // max(1, width - 1)
        green = y * 255 // max(1, height - 1)
        blue = (_triangle(x * 10 + y * 14 + 9 * i, 140) + _triangle(3 * x + 5 * y, 46)) // 2
        # 1-px bars near the left edge and a checkerboard of 2-px cells in the lower right quarter.
        bars = (x < width // 4) & (x % 3 == 0)
        checker = (y > height // 2) & (x > width // 2) & (((x // 2) + (y // 2)) % 2 == 0)
        # The disc travels left to right and bounces vertically (integer triangle), one step per frame.
        cx = radius + (i * 5) % max(1, width - 2 * radius)
        cy = (
            radius
            + _triangle(np.int64(i * 7), 2 * max(1, height - 2 * radius)) * max(1, height - 2 * radius) // 255
        )
        disc = (x - cx) ** 2 + (y - cy) ** 2 <= radius * radius
        rgb = np.stack([red, green, blue], axis=-1)  # [H, W, 3]
        rgb = np.where(bars[..., None], np.array([255, 255, 255]), rgb)
        rgb = np.where(checker[..., None], np.array([0, 0, 0]), rgb)
        rgb = np.where(disc[..., None], np.array([250, 220, 30]), rgb)
        frames[out] = np.clip(rgb, 0, 255).astype(np.uint8)
    return frames


def sha256(array: np.ndarray) -> str:
    """Digest of an array's bytes, shape and dtype (the manifest's record of every clip)."""
    digest = hashlib.sha256(f"{array.shape}|{array.dtype}|".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


# A 320x240 camera clip downscaled to 160x120, an odd-sized one, a portrait one; 8 and 7 frames.
LANDSCAPE = Clip("landscape", width=160, height=120, num_frames_total=64, native_fps=16.0)
ODD = Clip("odd", width=97, height=55, num_frames_total=50, native_fps=25.0)
PORTRAIT = Clip("portrait", width=90, height=160, num_frames_total=45, native_fps=15.0)

CASES: tuple[Case, ...] = (
    Case("landscape-8", LANDSCAPE, _evenly_spaced(64, 8)),
    Case("landscape-7", LANDSCAPE, _evenly_spaced(64, 7)),
    Case("odd-7", ODD, _evenly_spaced(50, 7)),
    Case("portrait-8", PORTRAIT, _evenly_spaced(45, 8)),
)

#: The question of every golden prompt (words of the tiny tokenizer's corpus, plus options).
QUESTION = (
    "What is happening in the video?\nA. running\nB. jumping\nC. sitting\nD. swimming\n"
    "Answer with the option's letter from the given choices directly."
)
