"""The two frame decoders behind `mlbcli.io.video.decode_frames`: decord (batched random access) and PyAV.

decord is fast but seeks by its own keyframe index, so it is used only where it is frame-exact (see
`containers.decord_is_exact_for`) and its timestamps are checked. PyAV decodes sequentially from the
start, which is exact and tolerates damage: undecodable packets are skipped, and a truncated tail is
resampled over the frames that really decode (with a warning in `Frames.warning`). Both return RGB uint8
frames of shape [T, H, W, 3] and presentation timestamps read from the container.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlbcli.errors import VideoDecodeError
from mlbcli.io.containers import VideoInfo, av_info, import_av, open_av, video_stream
from mlbcli.io.sampling import GENERIC, FrameRule, plan_frames

__all__ = ["Frames", "decode_decord", "decode_pyav"]

logger = logging.getLogger(__name__)

# decord's own thread pool: one thread per reader, because prefetch already runs one decoder per
# worker process and the model needs the remaining cores.
_DECORD_THREADS = 1

# Give up on a PyAV stream after this many undecodable packets in a row (garbage, not a video).
_MAX_CONSECUTIVE_PACKET_ERRORS = 32


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


def decode_decord(
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
    array = as_rgb_uint8(array, name)
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


def as_rgb_uint8(array: np.ndarray, name: str) -> np.ndarray:
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


def decode_pyav(name: str, num_frames: int | None, fps: float | None, rule: FrameRule = GENERIC) -> Frames:
    av = import_av()
    info = av_info(av, name)
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
    array = as_rgb_uint8(np.stack([f for f, _ in frames]), name)
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
    container = open_av(av, name)
    kept: dict[int, tuple[np.ndarray, float]] = {}
    decoded = errors = consecutive = 0
    try:
        stream = video_stream(container, name)
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
