"""Pure frame-index samplers: which frames of a video to decode.

Kept free of decoders and torch so they are cheap to import and easy to property-test. Every sampler
returns indices that are sorted, unique and inside ``[0, num_frames_total)``; decoders rely on that.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["SAMPLERS", "fps_indices", "sample_indices", "uniform_indices"]


def uniform_indices(num_frames_total: int, num_samples: int) -> list[int]:
    """Return ``min(num_samples, num_frames_total)`` evenly spaced indices, first and last frame included.

    ``np.linspace(0, n-1, k).round()`` can repeat an index only when ``k > n``, which we clamp away, so the
    result is always exactly ``min(k, n)`` long (callers size tensors from it).
    """
    if num_samples <= 0:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    if num_frames_total < 0:
        raise ValueError(f"num_frames_total must be >= 0, got {num_frames_total}")
    if num_frames_total == 0:
        return []
    k = min(num_samples, num_frames_total)
    if k == 1:
        # linspace(0, n-1, 1) gives [0]; the first frame is as good a choice as any and is stable.
        return [0]
    # floor(x + 0.5), not np.round: round-half-to-even rounds 2.5 down but 1.5 up (parity-dependent).
    raw = np.floor(np.linspace(0, num_frames_total - 1, k) + 0.5).astype(np.int64)
    indices = sorted({int(i) for i in raw})
    # With k <= n consecutive linspace points are >= 1 apart, so rounding cannot collide; keep a guard
    # anyway because a silent short result would break batch shapes downstream.
    if len(indices) != k:  # pragma: no cover - defensive
        indices = list(range(k)) if k == num_frames_total else _fill_unique(indices, k, num_frames_total)
    return indices


def _fill_unique(indices: list[int], k: int, n: int) -> list[int]:
    """Top up a too-short index list with the nearest unused frames (defensive fallback only)."""
    chosen = set(indices)
    for i in range(n):
        if len(chosen) >= k:
            break
        chosen.add(i)
    return sorted(chosen)


def fps_indices(
    num_frames_total: int,
    native_fps: float,
    target_fps: float,
    max_frames: int | None = None,
) -> list[int]:
    """Frames nearest to times ``0, 1/target_fps, 2/target_fps, ...`` within the clip.

    If ``target_fps`` is at or above the native rate every frame is taken. When more than ``max_frames``
    frames would be sampled, fall back to ``max_frames`` uniform picks over the fps-sampled set, so the
    cap never produces clustering at the start of the video.
    """
    if target_fps <= 0 or not math.isfinite(target_fps):
        raise ValueError(f"target_fps must be a positive number, got {target_fps}")
    if native_fps <= 0 or not math.isfinite(native_fps):
        raise ValueError(f"native_fps must be a positive number, got {native_fps}")
    if max_frames is not None and max_frames <= 0:
        raise ValueError(f"max_frames must be positive, got {max_frames}")
    if num_frames_total < 0:
        raise ValueError(f"num_frames_total must be >= 0, got {num_frames_total}")
    if num_frames_total == 0:
        return []
    step = native_fps / target_fps  # frames between two samples
    if step <= 1.0:
        candidates = list(range(num_frames_total))
    else:
        count = int(math.floor((num_frames_total - 1) / step)) + 1
        raw = np.floor(np.arange(count) * step + 0.5).astype(np.int64)
        candidates = sorted({int(i) for i in raw if 0 <= i < num_frames_total})
    if max_frames is not None and len(candidates) > max_frames:
        picks = uniform_indices(len(candidates), max_frames)
        candidates = [candidates[p] for p in picks]
    return candidates


SAMPLERS: dict[str, Callable[..., list[int]]] = {
    "uniform": uniform_indices,
    "fps": fps_indices,
}


def sample_indices(
    num_frames_total: int,
    native_fps: float,
    *,
    num_frames: int | None,
    fps: float | None,
) -> list[int]:
    """Pick the sampler for the CLI options: ``fps`` wins (capped by ``num_frames``), else uniform."""
    if fps is not None:
        return SAMPLERS["fps"](num_frames_total, native_fps, fps, max_frames=num_frames)
    if num_frames is None:
        raise ValueError("either num_frames or fps must be given")
    return SAMPLERS["uniform"](num_frames_total, num_frames)


def describe(num_frames: int | None, fps: float | None) -> dict[str, Any]:
    """A small JSON-able record of the sampling settings, for run metadata and cache keys."""
    if fps is not None:
        return {"sampler": "fps", "fps": float(fps), "max_frames": num_frames}
    return {"sampler": "uniform", "num_frames": num_frames}
