"""What a video container says about itself (PyAV), and silencing the C libraries while decoders run.

`probe_video` reads the header (and counts packets when the header has no frame count); `read_header`
gives just enough to choose a decoder (`decord_is_exact_for`). Every problem becomes a one-line
``VideoDecodeError`` naming the file and the cause: a missing or empty file, no video stream, an MP4
cut off before its index. PyAV is imported inside functions (this module is on the CLI's fast path).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlbcli.errors import VideoDecodeError

__all__ = [
    "VideoInfo",
    "av_info",
    "check_file",
    "decord_is_exact_for",
    "import_av",
    "open_av",
    "probe_video",
    "quiet_native_stderr",
    "read_header",
    "video_stream",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoInfo:
    """Container-level facts about one video, as reported by the backend that read it."""

    path: str
    num_frames_total: int
    fps: float
    duration_s: float
    width: int
    height: int
    codec: str | None


_stderr_lock = threading.Lock()

_stderr_depth = 0

_stderr_saved_fd: int | None = None


@contextlib.contextmanager
def quiet_native_stderr(enabled: bool | None = None) -> Iterator[None]:
    """Send file descriptor 2 to /dev/null while decoders run, so FFmpeg/decord C-level chatter is hidden.

    ``enabled=None`` means "unless this module's logger is at DEBUG, and only in the main thread". The
    redirection is process-wide (that is the only way to reach C code), so it is reference-counted under
    a lock: nested or concurrent uses restore the real stderr only when the last one leaves. A helper
    thread does not redirect by default because it may never leave: ``prefetch`` abandons an inline
    decode that hangs (``--workers 0 --decode-timeout``), and the run's later messages, its summary
    included, would go to /dev/null. If fd 2 cannot be duplicated (closed in a daemon or an odd worker)
    it silently does nothing.
    """
    global _stderr_depth, _stderr_saved_fd
    if enabled is None:
        enabled = (
            not logger.isEnabledFor(logging.DEBUG) and threading.current_thread() is threading.main_thread()
        )
    if not enabled:
        yield
        return
    with _stderr_lock:
        if _stderr_depth == 0:
            _stderr_saved_fd = _redirect_fd2_to_devnull()
        _stderr_depth += 1
    try:
        yield
    finally:
        with _stderr_lock:
            _stderr_depth -= 1
            if _stderr_depth == 0 and _stderr_saved_fd is not None:
                _restore_fd2(_stderr_saved_fd)
                _stderr_saved_fd = None


def _redirect_fd2_to_devnull() -> int | None:
    """Point fd 2 at /dev/null and return a duplicate of the old fd 2 (None if that is impossible)."""
    with contextlib.suppress(Exception):
        sys.stderr.flush()  # Python-level buffered text must reach the real stderr first
    try:
        saved = os.dup(2)
    except OSError:
        return None
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
        finally:
            os.close(devnull)
    except OSError:
        os.close(saved)
        return None
    return saved


def _restore_fd2(saved: int) -> None:
    try:
        os.dup2(saved, 2)
    except OSError:  # pragma: no cover - nothing sensible left to do
        pass
    finally:
        os.close(saved)


def _configure_pyav_logging(av: Any) -> None:
    """PyAV routes FFmpeg logs into Python logging when a level is set; we want them only when debugging."""
    try:
        if logger.isEnabledFor(logging.DEBUG):
            av.logging.set_level(av.logging.ERROR)
        else:
            av.logging.set_level(None)
    except Exception:  # pragma: no cover - very old/new PyAV without this API
        logger.debug("could not configure PyAV logging", exc_info=True)


def import_av() -> Any:
    try:
        import av
    except ImportError as exc:  # pragma: no cover - av is a hard dependency
        raise VideoDecodeError(f"PyAV is not installed ({exc})") from exc
    _configure_pyav_logging(av)
    return av


def check_file(path: str | os.PathLike[str]) -> str:
    """Cheap checks that give better messages than any decoder would; returns the path as str."""
    p = Path(path)
    name = str(p)
    if not p.exists():
        raise VideoDecodeError(f"{name}: file not found")
    if not p.is_file():
        raise VideoDecodeError(f"{name}: not a regular file")
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise VideoDecodeError(f"{name}: cannot stat file ({exc.strerror or exc})") from exc
    if size == 0:
        raise VideoDecodeError(f"{name}: empty file (0 bytes)")
    if not os.access(p, os.R_OK):
        raise VideoDecodeError(f"{name}: permission denied")
    return name


def _av_cause(exc: BaseException) -> str:
    """A short human cause from a PyAV/FFmpeg exception (drops errno numbers and repeated file names)."""
    msg = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    if "Invalid data found when processing input" in msg:
        return "not a readable video (invalid data; corrupt, truncated or not a video file)"
    return msg.splitlines()[0][:200]


def open_av(av: Any, name: str) -> Any:
    try:
        return av.open(name, mode="r")
    except FileNotFoundError as exc:
        raise VideoDecodeError(f"{name}: file not found") from exc
    except Exception as exc:
        raise VideoDecodeError(f"{name}: {_av_cause(exc)}") from exc


def video_stream(container: Any, name: str) -> Any:
    if not container.streams.video:
        raise VideoDecodeError(f"{name}: no video stream in file")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        # FFmpeg found the stream but not its codec parameters: typically an MP4 whose moov atom (at
        # the end of the file) was cut off by an interrupted copy or download.
        raise VideoDecodeError(f"{name}: video stream has no codec parameters (truncated or corrupt file)")
    return stream


def _stream_fps(stream: Any) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and float(rate) > 0:
            return float(rate)
    return 0.0


def _count_packets(container: Any, stream: Any) -> int:
    """Frame count by demuxing (no decoding), for containers whose header has none (mkv, webm, ts)."""
    n = 0
    try:
        for packet in container.demux(stream):
            if packet.size:
                n += 1
    except Exception:  # a truncated tail: count what was readable
        logger.debug("demux stopped early while counting packets", exc_info=True)
    return n


def _av_duration(container: Any, stream: Any, n: int, fps: float) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return float(container.duration) / 1_000_000  # AV_TIME_BASE
    return n / fps if fps > 0 else 0.0


def av_info(av: Any, name: str) -> VideoInfo:
    container = open_av(av, name)
    try:
        stream = video_stream(container, name)
        fps = _stream_fps(stream)
        n = int(stream.frames or 0)
        if n <= 0:
            n = _count_packets(container, stream)
        ctx = stream.codec_context
        return VideoInfo(
            path=name,
            num_frames_total=n,
            fps=fps,
            duration_s=_av_duration(container, stream, n, fps),
            width=int(ctx.width or 0),
            height=int(ctx.height or 0),
            codec=codec_of(stream),
        )
    finally:
        container.close()


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Read container metadata with PyAV (no frame decoding except a packet count when the header lacks it)."""
    name = check_file(path)
    av = import_av()
    with quiet_native_stderr():
        return av_info(av, name)


@dataclass(frozen=True)
class Header:
    """What PyAV reads from the container header alone: enough to choose a backend."""

    format_name: str
    codec: str | None


def codec_of(stream: Any) -> str | None:
    """Codec id name ("h264", "hevc", "av1"), not the decoder's name ("libdav1d")."""
    ctx = stream.codec_context
    codec = getattr(ctx, "codec", None)
    return getattr(codec, "canonical_name", None) or ctx.name or None


def read_header(av: Any, name: str) -> Header:
    container = open_av(av, name)
    try:
        stream = video_stream(container, name)
        return Header(format_name=str(container.format.name), codec=codec_of(stream))
    finally:
        container.close()


# decord (decord2 3.4.0 here) seeks to keyframes with its own frame index and silently returns the WRONG
# frames for some inputs (measured against a sequential PyAV decode of synthetic clips): HEVC with
# B-frames (mp4 and mkv), H.264 in AVI, H.264 with B-frames in MPEG-TS, MPEG-1/2 in MPEG-PS/TS, WMV2
# in ASF (also garbage timestamps). Frame-exact in every trial: H.264, MPEG-4 part 2, VP8, VP9 and AV1
# in MP4/MOV, Matroska/WebM and FLV. So "auto" uses decord only for these pairs and PyAV otherwise.
_DECORD_SAFE_FORMATS = frozenset({"mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "flv"})

_DECORD_SAFE_CODECS = frozenset({"h264", "mpeg4", "vp8", "vp9", "av1", "flv1"})


def decord_is_exact_for(header: Header) -> bool:
    return header.format_name in _DECORD_SAFE_FORMATS and header.codec in _DECORD_SAFE_CODECS
