"""Re-decode a row's sampled frames as small thumbnails and shade them by the kept-token mask.

Why not ``mlbcli.io.video.decode_frames``: it *plans* which frames to take from a count or a rate, so
it can only guess what a run sampled (a family's frame rule or a truncated file changes the plan). Rows
record what was really sampled (``frame_timestamps_s``; ``frame_indices`` in ``sample`` files), so this
module decodes the file sequentially with PyAV, exactly as mlb's PyAV backend does, and picks the frames
at those timestamps (nearest presentation time) or indices. Each picked frame is shrunk to a thumbnail
at once: a long video costs one decode pass and a few kilobytes of memory per frame.

One row becomes one JPEG strip (frames side by side): far smaller than one image per frame (no repeated
JPEG headers, better compression) and one ``<img>`` to load. Kept patches are shown as decoded, dropped
ones darkened, merged ones (token-merging methods) darkened less and tinted, as the methods' figures do.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FrameStrip", "Thumbs", "decode_thumbs", "render_strip"]

GAP_PX = 2  # pixels between frames in a strip
DROPPED = 0.3  # brightness of a dropped patch (greyed)
MERGED = 0.55  # brightness of a merged patch (and a blue tint)
PLACEHOLDER_RGB = (96, 96, 104)  # frame colour when the video is gone but a mask is known
_MAX_BAD_PACKETS = 32
SEEK_GAP_S = 4.0  # seek instead of decoding through a gap longer than this


@dataclass
class Thumbs:
    """Thumbnails of one row's frames (RGB uint8 ``[h, w, 3]`` each), or why there are none."""

    images: list[np.ndarray]
    times: list[float | None]
    error: str | None = None
    note: str | None = None  # usable but approximate (frames re-planned from the count)


@dataclass
class FrameStrip:
    """A rendered strip: a data URI plus the frame labels, or the reason it could not be made."""

    uri: str | None
    width: int
    height: int
    labels: list[str]
    tile_w: int
    error: str | None = None


def _check(path: str) -> str | None:
    p = Path(path)
    if not path:
        return "no video path recorded"
    if not p.exists():
        return "video not found"
    if not p.is_file():
        return "not a regular file"
    if p.stat().st_size == 0:
        return "empty file (0 bytes)"
    return None


def _thumb(frame: Any, width: int) -> np.ndarray:
    """A PyAV frame scaled to ``width`` pixels wide (aspect kept), as RGB uint8."""
    height = max(1, round(frame.height * width / max(frame.width, 1)))
    return np.asarray(frame.reformat(width=width, height=height, format="rgb24").to_ndarray())


def _frame_time(frame: Any, start_pts: int | None) -> float:
    """Seconds since the stream's first frame, as ``mlbcli.io.video`` records ``frame_timestamps_s``."""
    if frame.pts is None or frame.time_base is None:
        return float(frame.time or 0.0)
    return float((frame.pts - (start_pts or 0)) * frame.time_base)


def _iter_frames(container: Any, stream: Any) -> Any:
    """Decoded frames in order; damaged packets are skipped, a demuxer error ends the stream."""
    bad = 0
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except Exception:  # noqa: BLE001 - a damaged tail: treat as end of file, drain the decoder
            yield from stream.codec_context.decode(None)
            return
        try:
            frames = packet.decode()
            bad = 0
        except Exception:  # noqa: BLE001 - one undecodable packet must not lose the video
            bad += 1
            if bad > _MAX_BAD_PACKETS:
                return
            continue
        yield from frames


class _Cursor:
    """Walks a stream forward to requested timestamps, seeking over long gaps (long videos stay fast).

    Picks the frame whose presentation time is nearest each requested time; frames are compared by
    their recorded time, so seeking to a keyframe first changes nothing about which frame is chosen.
    """

    def __init__(self, container: Any, stream: Any) -> None:
        self.container, self.stream = container, stream
        self.start_pts = stream.start_time
        self.frames: Any = None
        self.prev: tuple[float, Any] | None = None
        self.ahead: tuple[float, Any] | None = None

    def _restart(self, want: float) -> None:
        base = self.stream.time_base
        if self.frames is not None and base:
            try:
                target = (self.start_pts or 0) + int(max(want - 0.5, 0.0) / base)
                self.container.seek(target, stream=self.stream, backward=True, any_frame=False)
            except Exception:  # noqa: BLE001 - an unseekable file is walked sequentially instead
                return
        self.frames = _iter_frames(self.container, self.stream)
        self.prev = self.ahead = None

    def _next(self) -> tuple[float, Any] | None:
        if self.ahead is not None:
            item, self.ahead = self.ahead, None
            return item
        frame = next(self.frames, None)
        return None if frame is None else (_frame_time(frame, self.start_pts), frame)

    def at(self, want: float) -> tuple[float, Any] | None:
        last = self.ahead or self.prev
        if self.frames is None or last is None or want - last[0] > SEEK_GAP_S:
            self._restart(want)
        while True:
            cur = self._next()
            if cur is None:
                return self.prev
            if cur[0] >= want - 1e-6:
                self.ahead = cur
                if self.prev is not None and abs(self.prev[0] - want) < abs(cur[0] - want):
                    return self.prev
                return cur
            self.prev = cur


def _pick(
    container: Any, stream: Any, times: Sequence[float] | None, indices: Sequence[int] | None, width: int
) -> dict[int, tuple[np.ndarray, float]]:
    """Slot -> (thumbnail, time) for the requested timestamps (nearest frame) or frame indices."""
    out: dict[int, tuple[np.ndarray, float]] = {}
    if times:
        cursor = _Cursor(container, stream)
        for k in sorted(range(len(times)), key=lambda j: times[j]):
            hit = cursor.at(float(times[k]))
            if hit is not None:
                out[k] = (_thumb(hit[1], width), hit[0])
        return out
    wanted = {int(i): k for k, i in enumerate(indices or [])}
    last = max(wanted) if wanted else -1
    for n, frame in enumerate(_iter_frames(container, stream)):
        if n in wanted:
            out[wanted[n]] = (_thumb(frame, width), _frame_time(frame, stream.start_time))
        if n >= last:
            break
    return out


def decode_thumbs(
    path: str, *, times: Sequence[float] | None, indices: Sequence[int] | None, width: int, count: int = 0
) -> Thumbs:
    """Thumbnails of the frames a row sampled; never raises (the reason is in ``Thumbs.error``).

    A row that recorded neither timestamps nor indices (older files) gets ``count`` frames planned
    again by ``mlbcli.io.video.decode_frames``, with a note that they may differ from the run's.
    """
    problem = _check(path)
    if problem:
        return Thumbs([], [], problem)
    if not times and not indices:
        return _replanned(path, count, width) if count > 0 else Thumbs([], [], "no frames recorded")
    try:
        import av

        from mlbcli.io.video import quiet_native_stderr

        with quiet_native_stderr(), av.open(path, mode="r") as container:
            if not container.streams.video:
                return Thumbs([], [], "no video stream in file")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            picked = _pick(container, stream, times, indices, width)
    except Exception as exc:  # noqa: BLE001 - anything a decoder throws is shown, never raised
        return Thumbs([], [], f"undecodable: {_cause(exc)}")
    if not picked:
        return Thumbs([], [], "undecodable: no frame could be decoded")
    slots = range(len(times or indices or []))
    # Slots past a truncated end reuse the last decoded frame rather than leaving holes.
    last = picked[max(picked)]
    chosen = [picked.get(k, last) for k in slots]
    return Thumbs([img for img, _ in chosen], [t for _, t in chosen])


def _cause(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _replanned(path: str, count: int, width: int) -> Thumbs:
    try:
        from PIL import Image

        from mlbcli.io.video import decode_frames

        frames = decode_frames(path, num_frames=count, backend="pyav")
    except Exception as exc:  # noqa: BLE001 - shown in the page
        return Thumbs([], [], f"undecodable: {_cause(exc)}")
    images = []
    for rgb in frames.array:
        height = max(1, round(rgb.shape[0] * width / max(rgb.shape[1], 1)))
        images.append(np.asarray(Image.fromarray(rgb).resize((width, height), Image.Resampling.BILINEAR)))
    note = "no timestamps recorded: frames sampled again, they may differ from the run's"
    return Thumbs(images, list(frames.timestamps_s), note=note)


def _shade(img: np.ndarray, kept: np.ndarray, merged: np.ndarray | None) -> np.ndarray:
    """Darken the pixels of pruned grid cells; ``kept``/``merged`` are bool ``[grid_h, grid_w]``."""
    h, w = img.shape[:2]
    gh, gw = kept.shape
    rows = np.minimum(np.arange(h) * gh // h, gh - 1)
    cols = np.minimum(np.arange(w) * gw // w, gw - 1)
    keep_px = kept[rows][:, cols]
    rgb = img.astype(np.float32)
    grey = (rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]
    # Pruned: dark and colourless, so the kept patches' colour stands out even on dark footage.
    out = np.where(keep_px[..., None], rgb, grey * DROPPED + 12.0)
    if merged is not None:
        merge_px = merged[rows][:, cols] & ~keep_px
        tinted = grey * MERGED + np.array([0.0, 25.0, 80.0], dtype=np.float32)
        out = np.where(merge_px[..., None], tinted, out)
    return np.clip(out, 0, 255).astype(np.uint8)


def _token_frame(k: int, shown: int, grid_frames: int) -> int:
    """The token frame of sampled frame ``k`` (Qwen fuses frame pairs: fewer token frames than frames)."""
    return min(grid_frames - 1, k * grid_frames // max(shown, 1))


def _jpeg_uri(strip: np.ndarray, quality: int = 65) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(strip).save(buf, format="JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def spread(n: int, limit: int) -> list[int]:
    """Up to ``limit`` indices evenly spread over ``range(n)`` (all of them when n <= limit)."""
    if n <= limit:
        return list(range(n))
    return sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)}) if limit > 1 else [0]


def render_strip(
    thumbs: Thumbs,
    *,
    kept: np.ndarray | None,
    merged: np.ndarray | None,
    frames: int,
    thumb_px: int,
    max_frames: int,
) -> FrameStrip:
    """One JPEG strip of a row's frames, shaded by ``kept`` ``[T, H, W]`` when present.

    When the video is gone but the mask is known, grey tiles carry the mask so the budget's shape shows.
    """
    count = len(thumbs.images) or (frames if kept is not None else 0)
    if not count:
        return FrameStrip(None, 0, 0, [], thumb_px, thumbs.error or "no frames")
    if thumbs.images:
        tiles = list(thumbs.images)
    else:
        tile_h = max(1, round(thumb_px * 3 / 4))
        tiles = [np.full((tile_h, thumb_px, 3), PLACEHOLDER_RGB, dtype=np.uint8)] * count
    order = spread(len(tiles), max_frames)
    height = max(t.shape[0] for t in tiles)
    strip = np.full((height, len(order) * (thumb_px + GAP_PX) - GAP_PX, 3), 255, dtype=np.uint8)
    labels = []
    for slot, k in enumerate(order):
        img = tiles[k]
        if kept is not None:
            g = _token_frame(k, len(tiles), kept.shape[0])
            img = _shade(img, kept[g], None if merged is None else merged[g])
        x = slot * (thumb_px + GAP_PX)
        strip[: img.shape[0], x : x + min(img.shape[1], thumb_px)] = img[:, :thumb_px]
        t = thumbs.times[k] if k < len(thumbs.times) else None
        labels.append(f"#{k + 1}" + ("" if t is None or not math.isfinite(t) else f" {t:.1f}s"))
    return FrameStrip(_jpeg_uri(strip), strip.shape[1], height, labels, thumb_px, thumbs.error)
