"""Pure frame-index samplers: which frames of a video to decode.

Kept free of decoders and torch so they are cheap to import and easy to property-test. Every sampler
returns indices that are sorted, unique and inside ``[0, num_frames_total)``; decoders rely on that.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "GENERIC",
    "SAMPLERS",
    "FramePlan",
    "FrameRule",
    "fps_indices",
    "plan_frames",
    "sample_indices",
    "uniform_indices",
]


@dataclass(frozen=True)
class FrameRule:
    """A model family's constraints on how many frames it takes (a property of the adapter class).

    `multiple`: frame counts are rounded to a multiple of this (Qwen's temporal patches take frames in
    pairs: 2). `fps_min_frames` / `fps_max_frames`: bounds on the count that `--fps` asks for (qwen-vl-utils'
    FPS_MIN_FRAMES = 4 / FPS_MAX_FRAMES = 768). `source` names whose convention it is, for the row's note.
    Plain data, so decode processes and Ray tasks can take it.
    """

    multiple: int = 1
    fps_min_frames: int = 1
    fps_max_frames: int | None = None
    source: str = ""

    def frame_count(self, num_frames: int) -> int:
        """The count `--frames num_frames` becomes: round(k / m) * m, half to even (qwen-vl-utils'
        `round_by_factor`: 7 -> 8, 5 -> 4), at least m."""
        if self.multiple <= 1:
            return num_frames
        return max(self.multiple, _round_half_even_to(num_frames, self.multiple))


#: Families without constraints (LLaVA-OneVision, LLaVA-Video, LLaVA-NeXT): any count.
GENERIC = FrameRule()


@dataclass(frozen=True)
class FramePlan:
    """The frames to decode, and why their count differs from the request when a family rule changed it."""

    indices: list[int]
    note: str | None = None


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
    """``duration x target_fps`` frames (at least one), evenly spaced over the whole clip.

    As the reference samplers do (qwen-vl-utils, Hugging Face's video processors): the count comes from
    the clip's length, then the frames are spread like ``uniform_indices`` (first and last included), so
    the gaps stay even when ``max_frames`` caps the count. At or above the native rate every frame is taken.
    """
    _check_fps_args(num_frames_total, native_fps, target_fps, max_frames)
    if num_frames_total == 0:
        return []
    count = max(1, math.floor(num_frames_total / native_fps * target_fps))
    if max_frames is not None:
        count = min(count, max_frames)
    return uniform_indices(num_frames_total, count)


def _check_fps_args(
    num_frames_total: int, native_fps: float, target_fps: float, max_frames: int | None
) -> None:
    if target_fps <= 0 or not math.isfinite(target_fps):
        raise ValueError(f"target_fps must be a positive number, got {target_fps}")
    if native_fps <= 0 or not math.isfinite(native_fps):
        raise ValueError(f"native_fps must be a positive number, got {native_fps}")
    if max_frames is not None and max_frames <= 0:
        raise ValueError(f"max_frames must be positive, got {max_frames}")
    if num_frames_total < 0:
        raise ValueError(f"num_frames_total must be >= 0, got {num_frames_total}")


def _round_half_even_to(value: float, factor: int) -> int:
    """qwen-vl-utils' `round_by_factor`: Python's round (half to even) of value / factor, times factor."""
    return round(value / factor) * factor


def plan_frames(
    num_frames_total: int,
    native_fps: float,
    *,
    num_frames: int | None,
    fps: float | None,
    rule: FrameRule = GENERIC,
) -> FramePlan:
    """The frames a run decodes: `--frames` / `--fps` under the family's `rule`.

    Without constraints this is ``uniform_indices`` / ``fps_indices``. Under a rule with ``multiple``
    m > 1 the counts are those of qwen-vl-utils 0.0.14 (`smart_nframes`), which Hugging Face's Qwen
    video processors share: ``--frames k`` -> round(k / m) * m (half to even: 7 -> 8, 5 -> 4);
    ``--fps f`` -> duration x f clamped to [fps_min_frames, min(fps_max_frames, --frames, N)], floored to
    a multiple of m; indices spread like ``uniform_indices`` (for even counts exactly qwen-vl-utils'
    ``linspace(0, N - 1, n).round()``). A clip too short for the rule gives what it has (at least one
    frame; the adapter pads a temporal patch). `FramePlan.note` says when the rule changed the count.
    """
    if num_frames is None and fps is None:
        raise ValueError("either num_frames or fps must be given")
    n = num_frames_total
    if fps is not None:
        _check_fps_args(n, native_fps, fps, num_frames)
    elif num_frames is not None and num_frames <= 0:
        raise ValueError(f"num_samples must be positive, got {num_frames}")
    if rule.multiple <= 1 and rule.fps_max_frames is None and rule.fps_min_frames <= 1:
        return FramePlan(sample_indices(n, native_fps, num_frames=num_frames, fps=fps))
    if n == 0:
        return FramePlan([])
    m = rule.multiple
    if fps is None:
        assert num_frames is not None
        plain = min(num_frames, n)  # what a family without a rule would take
        count = min(rule.frame_count(num_frames), n)
        asked = f"--frames {num_frames}"
    else:
        wanted = n / native_fps * fps
        plain = min(n, max(1, math.floor(wanted)), num_frames or n)
        ceiling = min(n, *(c for c in (rule.fps_max_frames, num_frames) if c is not None))
        ceiling = max(1, ceiling // m * m)
        floor = -(-rule.fps_min_frames // m) * m
        count = max(1, math.floor(min(max(wanted, floor), ceiling) / m) * m)
        asked = f"--fps {fps:g}"
    return FramePlan(uniform_indices(n, count), _rule_note(rule, asked, plain, count))


def _rule_note(rule: FrameRule, asked: str, plain: int, count: int) -> str | None:
    """Why `rule` gave `count` frames where a family without a rule takes `plain` (None when equal)."""
    if count == plain:
        return None
    why = f" ({rule.source})" if rule.source else ""
    if rule.fps_max_frames is not None and count == rule.fps_max_frames < plain:
        reason = f"at most {rule.fps_max_frames} frames"
    elif count > plain and count >= rule.fps_min_frames and asked.startswith("--fps"):
        reason = f"at least {rule.fps_min_frames} frames"
    else:
        reason = f"frames are taken in groups of {rule.multiple}"
    return f"{asked} -> {count} frames: {reason}{why}"


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
    """Pick the sampler for the CLI options: ``fps`` wins (capped by ``num_frames``), else uniform. Without
    a family rule; `plan_frames` applies one."""
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
