"""Decode and sample videos: the one entry point (`decode_frames`) that the rest of mlb calls.

The work is split by concern: `mlbcli.io.containers` probes files and silences the C libraries,
`mlbcli.io.decoders` holds the decord and PyAV decoders, `mlbcli.io.synthetic` writes test clips;
their public names are importable from here too. Decoders (decord, PyAV) and PIL are imported inside
functions: this module is imported on the CLI's fast path (``mlb --help``, source listing) and must stay
cheap. ``decode_frames`` prefers decord (fast batched random access) where it is frame-exact and falls
back to PyAV, which decodes sequentially and tolerates damaged files better. Every failure becomes a
``VideoDecodeError`` whose message names the file and the cause in one line, so it can be written into a
result row as is.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from mlbcli.errors import UsageError, VideoDecodeError
from mlbcli.io.containers import (
    VideoInfo,
    check_file,
    decord_is_exact_for,
    import_av,
    probe_video,
    quiet_native_stderr,
    read_header,
)
from mlbcli.io.decoders import Frames, decode_decord, decode_pyav
from mlbcli.io.sampling import GENERIC, FrameRule
from mlbcli.io.synthetic import PATTERNS, make_test_video

__all__ = [
    "BACKENDS",
    "PATTERNS",
    "VIDEO_EXTENSIONS",
    "Frames",
    "VideoInfo",
    "contact_sheet",
    "decode_frames",
    "is_video_path",
    "make_test_video",
    "probe_video",
    "quiet_native_stderr",
]

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".gif"}
)

BACKENDS = ("auto", "decord", "pyav")


def is_video_path(path: str | os.PathLike[str]) -> bool:
    """True when the file name has a known video extension (case-insensitive)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def decode_frames(
    path: str | os.PathLike[str],
    *,
    num_frames: int | None = None,
    fps: float | None = None,
    backend: str = "auto",
    rule: FrameRule = GENERIC,
) -> Frames:
    """Decode the frames chosen by :func:`mlbcli.io.sampling.plan_frames` as one RGB uint8 array.

    ``rule`` is the model family's frame rule (``ModelAdapter.frame_rule``; Qwen takes frames in pairs);
    ``Frames.note`` says when it changed the requested count.

    ``backend="auto"`` reads the container header with PyAV (cheap; gives the codec and clear errors for
    non-videos), decodes with decord where decord is known to be frame-exact, and with PyAV otherwise or
    when decord fails. ``Frames.backend`` records which one produced the result. Raises
    ``VideoDecodeError`` for any problem with the file.
    """
    if backend not in BACKENDS:
        raise UsageError(f"unknown video backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if num_frames is None and fps is None:
        raise UsageError("decode_frames needs num_frames or fps")
    if num_frames is not None and num_frames < 1:
        raise UsageError(f"number of frames must be >= 1, got {num_frames}")
    if fps is not None and not (fps > 0 and math.isfinite(fps)):
        raise UsageError(f"fps must be a positive number, got {fps}")
    name = check_file(path)
    with quiet_native_stderr():
        frames = _decode_with(backend, name, num_frames, fps, rule)
    if frames.warning:
        # Logged outside the quiet block: fd 2 is /dev/null inside it, and the log handler may use it.
        logger.warning("%s: %s", name, frames.warning)
    return frames


def _decode_with(
    backend: str, name: str, num_frames: int | None, fps: float | None, rule: FrameRule = GENERIC
) -> Frames:
    if backend == "pyav":
        return decode_pyav(name, num_frames, fps, rule)
    if backend == "decord":
        return decode_decord(name, num_frames, fps, codec=_codec_or_none(name), rule=rule)
    header = read_header(import_av(), name)
    if not decord_is_exact_for(header):
        logger.debug("%s: %s in %s -> PyAV", name, header.codec, header.format_name)
        return decode_pyav(name, num_frames, fps, rule)
    try:
        return decode_decord(name, num_frames, fps, codec=header.codec, rule=rule)
    except VideoDecodeError as exc:
        logger.debug("decord failed on %s (%s); falling back to PyAV", name, exc)
        return decode_pyav(name, num_frames, fps, rule)


def _codec_or_none(name: str) -> str | None:
    """Codec for an explicit decord decode; PyAV may fail where decord works, so never raise."""
    try:
        return read_header(import_av(), name).codec
    except VideoDecodeError:
        return None


# --------------------------------------------------------------------------------------------------
# Contact sheet
# --------------------------------------------------------------------------------------------------

_IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


def contact_sheet(
    frames: Frames,
    path: str | os.PathLike[str],
    *,
    columns: int | None = None,
    tile_width: int = 160,
) -> Path:
    """Save a grid of the sampled frames, each labelled with its timestamp, and return the path.

    Tiles keep the video's aspect ratio (``tile_height = round(tile_width * H / W)``); the sheet is
    ``columns * tile_width`` wide and ``ceil(T / columns) * tile_height`` high, with ``columns`` defaulting
    to ``ceil(sqrt(T))``. Written to a temporary file then renamed, so readers never see half an image.
    """
    from PIL import Image, ImageDraw

    out = Path(path)
    fmt = _IMAGE_FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise UsageError(f"{out}: contact sheet must end in .png, .jpg or .jpeg")
    t, h, w = (int(x) for x in frames.array.shape[:3])
    if t == 0:
        raise ValueError("contact_sheet needs at least one frame")
    if tile_width <= 0 or (columns is not None and columns <= 0):
        raise ValueError("tile_width and columns must be positive")
    cols = columns or math.ceil(math.sqrt(t))
    cols = min(cols, t)
    rows = math.ceil(t / cols)
    tile_h = max(1, round(tile_width * h / w))
    sheet = Image.new("RGB", (cols * tile_width, rows * tile_h), (0, 0, 0))
    draw = ImageDraw.Draw(sheet)
    for k in range(t):
        x, y = (k % cols) * tile_width, (k // cols) * tile_h
        tile = Image.fromarray(frames.array[k]).resize((tile_width, tile_h), Image.Resampling.BILINEAR)
        sheet.paste(tile, (x, y))
        _label(draw, x, y, _timestamp_label(frames, k))
    _atomic_save(sheet, out, fmt)
    return out


def _timestamp_label(frames: Frames, k: int) -> str:
    ts = frames.timestamps_s[k] if k < len(frames.timestamps_s) else float("nan")
    return f"{ts:.2f}s #{frames.indices[k]}" if k < len(frames.indices) else f"{ts:.2f}s"


def _label(draw: Any, x: int, y: int, text: str) -> None:
    """Text on a dark box in the tile's corner, readable on any frame content."""
    left, top, right, bottom = draw.textbbox((x + 3, y + 2), text)
    draw.rectangle((left - 2, top - 1, right + 2, bottom + 1), fill=(0, 0, 0))
    draw.text((x + 3, y + 2), text, fill=(255, 255, 255))


def _atomic_save(image: Any, out: Path, fmt: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            image.save(fh, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; an image is meant to be shared
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
