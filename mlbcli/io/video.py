"""Probe, decode and sample videos; the only module that touches a decoder.

Decoders (decord, PyAV) and PIL are imported inside functions: this module is imported on the CLI's fast
path (``mlb --help``, source listing) and must stay cheap. ``decode_frames`` prefers decord (fast batched
random access) and falls back to PyAV, which decodes sequentially and tolerates damaged files better.
Every failure becomes a ``VideoDecodeError`` whose message names the file and the cause in one line, so
it can be written into a result row as is.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from mlbcli.errors import UsageError, VideoDecodeError
from mlbcli.io.sampling import GENERIC, FrameRule, plan_frames

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
PATTERNS = ("moving", "flash", "static")

# decord's own thread pool: one thread per reader, because prefetch already runs one decoder per
# worker process and the model needs the remaining cores.
_DECORD_THREADS = 1
# Give up on a PyAV stream after this many undecodable packets in a row (garbage, not a video).
_MAX_CONSECUTIVE_PACKET_ERRORS = 32


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


@dataclass
class Frames:
    """Sampled frames of one video.

    ``timestamps_s`` are presentation times read from the container (relative to the stream's first
    frame), not ``index / fps``: they stay right for variable-frame-rate files. ``warning`` is set when
    the result is usable but degraded (e.g. a truncated file decoded only partly).
    """

    array: np.ndarray  # [T, H, W, 3] uint8 RGB
    indices: list[int]
    timestamps_s: list[float]
    info: VideoInfo
    backend: str
    warning: str | None = field(default=None)
    # Set when the model family's frame rule changed the requested count (`sampling.plan_frames`).
    note: str | None = field(default=None)


def is_video_path(path: str | os.PathLike[str]) -> bool:
    """True when the file name has a known video extension (case-insensitive)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


# --------------------------------------------------------------------------------------------------
# Native stderr silencing
# --------------------------------------------------------------------------------------------------

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


def _import_av() -> Any:
    try:
        import av
    except ImportError as exc:  # pragma: no cover - av is a hard dependency
        raise VideoDecodeError(f"PyAV is not installed ({exc})") from exc
    _configure_pyav_logging(av)
    return av


# --------------------------------------------------------------------------------------------------
# Probing
# --------------------------------------------------------------------------------------------------


def _check_file(path: str | os.PathLike[str]) -> str:
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


def _open_av(av: Any, name: str) -> Any:
    try:
        return av.open(name, mode="r")
    except FileNotFoundError as exc:
        raise VideoDecodeError(f"{name}: file not found") from exc
    except Exception as exc:
        raise VideoDecodeError(f"{name}: {_av_cause(exc)}") from exc


def _video_stream(container: Any, name: str) -> Any:
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


def _av_info(av: Any, name: str) -> VideoInfo:
    container = _open_av(av, name)
    try:
        stream = _video_stream(container, name)
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
            codec=_codec_of(stream),
        )
    finally:
        container.close()


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Read container metadata with PyAV (no frame decoding except a packet count when the header lacks it)."""
    name = _check_file(path)
    av = _import_av()
    with quiet_native_stderr():
        return _av_info(av, name)


@dataclass(frozen=True)
class _Header:
    """What PyAV reads from the container header alone: enough to choose a backend."""

    format_name: str
    codec: str | None


def _codec_of(stream: Any) -> str | None:
    """Codec id name ("h264", "hevc", "av1"), not the decoder's name ("libdav1d")."""
    ctx = stream.codec_context
    codec = getattr(ctx, "codec", None)
    return getattr(codec, "canonical_name", None) or ctx.name or None


def _read_header(av: Any, name: str) -> _Header:
    container = _open_av(av, name)
    try:
        stream = _video_stream(container, name)
        return _Header(format_name=str(container.format.name), codec=_codec_of(stream))
    finally:
        container.close()


# decord (decord2 3.4.0 here) seeks to keyframes with its own frame index and silently returns the WRONG
# frames for some inputs (measured against a sequential PyAV decode of synthetic clips): HEVC with
# B-frames (mp4 and mkv), H.264 in AVI, H.264 with B-frames in MPEG-TS, MPEG-1/2 in MPEG-PS/TS, WMV2
# in ASF (also garbage timestamps). Frame-exact in every trial: H.264, MPEG-4 part 2, VP8, VP9 and AV1
# in MP4/MOV, Matroska/WebM and FLV. So "auto" uses decord only for these pairs and PyAV otherwise.
_DECORD_SAFE_FORMATS = frozenset({"mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "flv"})
_DECORD_SAFE_CODECS = frozenset({"h264", "mpeg4", "vp8", "vp9", "av1", "flv1"})


def _decord_is_exact_for(header: _Header) -> bool:
    return header.format_name in _DECORD_SAFE_FORMATS and header.codec in _DECORD_SAFE_CODECS


# --------------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------------


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
    name = _check_file(path)
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
        return _decode_pyav(name, num_frames, fps, rule)
    if backend == "decord":
        return _decode_decord(name, num_frames, fps, codec=_codec_or_none(name), rule=rule)
    header = _read_header(_import_av(), name)
    if not _decord_is_exact_for(header):
        logger.debug("%s: %s in %s -> PyAV", name, header.codec, header.format_name)
        return _decode_pyav(name, num_frames, fps, rule)
    try:
        return _decode_decord(name, num_frames, fps, codec=header.codec, rule=rule)
    except VideoDecodeError as exc:
        logger.debug("decord failed on %s (%s); falling back to PyAV", name, exc)
        return _decode_pyav(name, num_frames, fps, rule)


def _codec_or_none(name: str) -> str | None:
    """Codec for an explicit decord decode; PyAV may fail where decord works, so never raise."""
    try:
        return _read_header(_import_av(), name).codec
    except VideoDecodeError:
        return None


def _decode_decord(
    name: str, num_frames: int | None, fps: float | None, *, codec: str | None, rule: FrameRule = GENERIC
) -> Frames:
    try:
        import decord
    except ImportError as exc:
        raise VideoDecodeError(f"{name}: decord is not installed") from exc
    try:
        vr = decord.VideoReader(name, ctx=decord.cpu(0), num_threads=_DECORD_THREADS)
    except Exception as exc:
        raise VideoDecodeError(f"{name}: decord cannot open file ({_first_line(exc)})") from exc
    try:
        n = len(vr)
        native_fps = float(vr.get_avg_fps() or 0.0)
        if n <= 0:
            raise VideoDecodeError(f"{name}: video stream has no frames")
        plan = plan_frames(
            n, native_fps if native_fps > 0 else 1.0, num_frames=num_frames, fps=fps, rule=rule
        )
        indices = plan.indices
        try:
            array = vr.get_batch(indices).asnumpy()
            stamps = vr.get_frame_timestamp(indices)
            end = float(vr.get_frame_timestamp(n - 1)[1])
        except Exception as exc:
            raise VideoDecodeError(f"{name}: decord failed to decode frames ({_first_line(exc)})") from exc
        finally:
            # Long-lived readers grow in memory after get_batch (dmlc/decord#197); rewind before release.
            with contextlib.suppress(Exception):
                vr.seek(0)
    finally:
        del vr
    array = _as_rgb_uint8(array, name)
    timestamps = [float(t) for t in np.asarray(stamps).reshape(len(indices), -1)[:, 0]]
    _check_timestamps(timestamps, name)
    info = VideoInfo(
        path=name,
        num_frames_total=n,
        fps=native_fps,
        duration_s=end if end > 0 else (n / native_fps if native_fps > 0 else 0.0),
        width=int(array.shape[2]),
        height=int(array.shape[1]),
        codec=codec,
    )
    return Frames(
        array=array,
        indices=list(indices),
        timestamps_s=timestamps,
        info=info,
        backend="decord",
        note=plan.note,
    )


def _check_timestamps(timestamps: list[float], name: str) -> None:
    """decord's seek index goes wrong on some containers and then reports nonsense times: refuse those."""
    ok = all(math.isfinite(t) and t > -1e-3 for t in timestamps) and all(
        b > a for a, b in itertools.pairwise(timestamps)
    )
    if not ok:
        raise VideoDecodeError(f"{name}: decord returned inconsistent timestamps")


_DECORD_NOISE = re.compile(r"\[\d{2}:\d{2}:\d{2}\]\s*\S+\.(?:cc|h|cpp):\d+:\s*")


def _first_line(exc: BaseException) -> str:
    """decord messages embed timestamps, C++ source locations and newlines; keep a short plain cause."""
    text = _DECORD_NOISE.sub("", str(exc))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:200]


def _as_rgb_uint8(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 4 or array.shape[-1] != 3:
        raise VideoDecodeError(f"{name}: decoder returned an unexpected frame shape {array.shape}")
    if array.dtype != np.uint8:
        array = array.astype(np.uint8)
    return np.ascontiguousarray(array)


@dataclass
class _PassResult:
    """What one sequential PyAV pass saw: the frames it kept and how many frames it decoded in total."""

    kept: dict[int, tuple[np.ndarray, float]]
    decoded: int
    errors: int


def _decode_pyav(name: str, num_frames: int | None, fps: float | None, rule: FrameRule = GENERIC) -> Frames:
    av = _import_av()
    info = _av_info(av, name)
    native_fps = info.fps if info.fps > 0 else 1.0
    if info.num_frames_total <= 0:
        raise VideoDecodeError(f"{name}: video stream has no frames")
    plan = plan_frames(info.num_frames_total, native_fps, num_frames=num_frames, fps=fps, rule=rule)
    indices = plan.indices
    result = _pyav_pass(av, name, set(indices), stop_after=indices[-1])
    warning = None
    if result.decoded <= indices[-1]:
        # Fewer frames decode than the header promised (truncated/corrupt tail): resample over what is
        # really there, so the caller still gets the requested spread of frames, and say so.
        if result.decoded == 0:
            raise VideoDecodeError(f"{name}: corrupt or truncated video (no frame could be decoded)")
        warning = (
            f"only {result.decoded} of {info.num_frames_total} frames could be decoded "
            "(file truncated or corrupt); sampled from those"
        )
        plan = plan_frames(result.decoded, native_fps, num_frames=num_frames, fps=fps, rule=rule)
        indices = plan.indices
        if not set(indices) <= result.kept.keys():
            result = _pyav_pass(av, name, set(indices), stop_after=indices[-1])
        info = VideoInfo(**{**info.__dict__, "num_frames_total": result.decoded})
    elif result.errors:
        warning = f"{result.errors} undecodable packet(s) skipped (file damaged)"
    frames = [result.kept[i] for i in indices]
    array = _as_rgb_uint8(np.stack([f for f, _ in frames]), name)
    return Frames(
        array=array,
        indices=list(indices),
        timestamps_s=[t for _, t in frames],
        info=info,
        backend="pyav",
        warning=warning,
        note=plan.note,
    )


def _pyav_pass(av: Any, name: str, wanted: set[int], *, stop_after: int) -> _PassResult:
    """Decode sequentially from the start, keeping frames whose presentation index is in ``wanted``.

    Sequential decoding is exact (no keyframe-seek ambiguity) and fast enough for the short clips
    Video-QA deals with. Undecodable packets are skipped so one damaged packet does not lose the video.
    """
    container = _open_av(av, name)
    kept: dict[int, tuple[np.ndarray, float]] = {}
    decoded = errors = consecutive = 0
    try:
        stream = _video_stream(container, name)
        stream.thread_type = "AUTO"
        start_pts = stream.start_time
        for packet in _safe_demux(container, stream):
            try:
                decoded_frames = packet.decode()
                consecutive = 0
            except av.error.FFmpegError:
                errors += 1
                consecutive += 1
                if consecutive > _MAX_CONSECUTIVE_PACKET_ERRORS:
                    break
                continue
            for frame in decoded_frames:
                if decoded in wanted:
                    kept[decoded] = (frame.to_ndarray(format="rgb24"), _frame_time(frame, start_pts))
                decoded += 1
            if decoded > stop_after:
                break
    finally:
        container.close()
    return _PassResult(kept=kept, decoded=decoded, errors=errors)


def _safe_demux(container: Any, stream: Any) -> Iterator[Any]:
    """Demux packets (including the final flush packet) and treat a demuxer error as end of file."""
    it = container.demux(stream)
    while True:
        try:
            packet = next(it)
        except StopIteration:
            return
        except Exception:
            logger.debug("demuxer error; treating as end of stream", exc_info=True)
            # Still flush the decoder so frames buffered for B-frame reordering come out.
            yield _FlushPacket(stream)
            return
        yield packet


class _FlushPacket:
    """Stands in for the empty packet that drains a decoder when the demuxer stopped on an error."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def decode(self) -> list[Any]:
        return list(self._stream.codec_context.decode(None))


def _frame_time(frame: Any, start_pts: int | None) -> float:
    """Seconds since the stream's first frame: containers like MPEG-TS start at a non-zero pts."""
    if frame.pts is None or frame.time_base is None:
        return float(frame.time or 0.0)
    return float((frame.pts - (start_pts or 0)) * frame.time_base)


# --------------------------------------------------------------------------------------------------
# Synthetic test clips
# --------------------------------------------------------------------------------------------------


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
    av = _import_av()
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
