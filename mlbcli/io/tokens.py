"""Saved visual tokens on disk: `compress --save-tokens DIR` writes them, `answer --tokens DIR` reuses them.

The vision tower is most of the cost of a video question on small LLMs (stack.md: 70-80 %), so a
video compressed once can be asked many questions later without decoding or encoding it again.

This module is the file format only: names, metadata, atomic writes and the checks that decide whether
a file may serve a video. Turning tensors into model objects (the video's tokens, a replayed reduction)
is `mlbcli.engine.saved_tokens`, one layer up. What is stored (one safetensors file per video):
- methods that prune only before the LLM and ignore the question (uniform, random, visionzip, dycoke):
  the *reduced* tokens: `kept_ids` [k], `kept` [k, D] (merged/pooled states included) and the
  `appended` [m, D] tokens. Reusing them reproduces that method's run exactly.
- every other method (its selection depends on the question or happens inside the LLM): the full
  encoded tokens `features` [T, N, D], so any method can run on them at answer time.
- families that add per-layer visual features inside the LLM (Qwen3-VL's DeepStack): `layer_features.{l}`
  for the same tokens ([T*N, D], or [k, D] at `kept_ids`), so a reused video runs as the encoded one.
Metadata records the model, the video id, the sampled frame indices and timestamps and the video's
size-mtime fingerprint. A file whose video changed since, or that was written for another video id or
model, is ignored (the video is decoded and encoded again, with a warning for a foreign file). Files are
named by `mlbcli.io.naming.safe_name` (full sha1 of the id), and written with the usual umask permissions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from mlbcli.errors import UsageError
from mlbcli.io.items import Item, fingerprint
from mlbcli.io.naming import safe_name
from mlbcli.io.sampling import GENERIC, FrameRule, plan_frames

if TYPE_CHECKING:
    import torch

    from mlbcli.io.decoders import Frames

__all__ = [
    "FORMAT_VERSION",
    "find_video_tokens",
    "read_tokens_file",
    "require_tokens_dir",
    "sampling_metadata",
    "sampling_mismatch",
    "tokens_path",
    "write_tokens_file",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = "1"
_SUFFIX = ".safetensors"


def tokens_path(folder: str | Path, video_id: str) -> Path:
    return Path(folder) / safe_name(video_id, _SUFFIX)


def _legacy_tokens_path(folder: str | Path, video_id: str) -> Path:
    """The name mlb used before `naming.safe_name` (32-bit hash, could collide).

    Still read, so a folder saved by an older mlb keeps working: the stored `video_id` is checked on
    load, so a colliding file is never used for the wrong video.
    """
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", video_id).strip("_")[:80] or "video"
    digest = hashlib.sha1(video_id.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return Path(folder) / f"{readable}-{digest}{_SUFFIX}"


def require_tokens_dir(folder: str | Path) -> None:
    """UsageError unless `folder` (an `answer --tokens` argument) is an existing folder."""
    path = Path(folder)
    if not path.is_dir():
        what = "is not a folder" if path.exists() else "does not exist"
        raise UsageError(f"--tokens {folder} {what}; give the folder written by `mlb compress --save-tokens`")


def sampling_metadata(item: Item, frames: Frames) -> dict[str, str]:
    """The metadata that ties a file to its video and says how its frames were sampled.

    The video id, path and fingerprint decide whether the file may serve a video (`find_video_tokens`);
    the frame indices, the video's length and frame rate let `answer --tokens --frames N` tell whether
    its own sampling would pick the same frames (`sampling_mismatch`).
    """
    return {
        "format_version": FORMAT_VERSION,
        "video_id": item.video_id,
        "video_path": item.video_path,
        "fingerprint": fingerprint(item.video_path),
        "frames": str(len(frames.indices)),
        "frame_indices": json.dumps([int(i) for i in frames.indices]),
        "num_frames_total": str(int(frames.info.num_frames_total)),
        "native_fps": repr(float(frames.info.fps)),
        "timestamps_s": json.dumps([float(t) for t in frames.timestamps_s]),
    }


def write_tokens_file(
    folder: str | Path, video_id: str, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]
) -> Path:
    """Write one video's tensors (on the CPU, contiguous) and metadata; returns the file's path.

    Serialised in memory and written with open(): safetensors' save_file creates files mode 0600, which
    makes a shared --tokens folder unreadable for others; open() follows the umask like every other
    output. Written to a temporary name and renamed, so a reader never sees half a file.
    """
    from safetensors.torch import save

    target = tokens_path(folder, video_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(save(dict(tensors), metadata=dict(metadata)))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def read_tokens_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a file found by `find_video_tokens`."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    return tensors, metadata


def find_video_tokens(folder: str | Path, item: Item, model_id: str) -> Path | None:
    """The file that may serve `item`'s video for `model_id`, checked from its metadata alone, or None.

    A file whose stored `video_id` is not `item.video_id` (a name collision of an older mlb, or a file
    renamed by hand) is treated as absent, with a warning: the video is decoded and encoded again, so
    the answer is right, never another video's. So is a file of another model, or of a video changed
    since (its size-mtime fingerprint differs).
    """
    from safetensors import safe_open

    path = tokens_path(folder, item.video_id)
    if not path.is_file():
        path = _legacy_tokens_path(folder, item.video_id)
        if not path.is_file():
            return None
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("video_id") != item.video_id:
        log.warning(
            "ignoring %s: it holds the tokens of video %r, not %r",
            path,
            metadata.get("video_id"),
            item.video_id,
        )
        return None
    if metadata.get("format_version") != FORMAT_VERSION or metadata.get("model") != model_id:
        return None
    try:
        if metadata.get("fingerprint") != fingerprint(item.video_path):
            return None
    except OSError:
        pass  # the video itself is gone: the saved tokens are all we have, use them
    return path


def sampling_mismatch(
    path: Path,
    metadata: Mapping[str, str],
    num_frames: int | None,
    fps: float | None,
    rule: FrameRule = GENERIC,
) -> str | None:
    """Why an explicit `--frames`/`--fps` disagrees with the saved frames, or None when it agrees.

    The frames the run would sample are recomputed from the stored video length and frame rate with
    the same sampler the decoder uses, and compared with the stored indices. With neither option
    given, the saved frames are used as they are (None).
    """
    if num_frames is None and fps is None:
        return None
    asked = " ".join(
        f"--{name} {value:g}" for name, value in (("frames", num_frames), ("fps", fps)) if value is not None
    )
    saved = int(metadata["frames"])
    if "frame_indices" in metadata:
        total = int(metadata["num_frames_total"])
        native_fps = float(metadata["native_fps"])
        expected = plan_frames(
            total, native_fps if native_fps > 0 else 1.0, num_frames=num_frames, fps=fps, rule=rule
        ).indices
        if expected == json.loads(metadata["frame_indices"]):
            return None
        wanted: int | None = len(expected)
    elif fps is None and num_frames == saved:
        return None  # a file of an older mlb: only the frame count can be compared
    else:
        wanted = num_frames if fps is None else None
    would = f"would sample {wanted} frame(s)" if wanted is not None else "samples other frames"
    return (
        f"{path.name} holds {saved} frame(s) sampled by `compress`, but {asked} {would}; "
        "drop --frames/--fps to use the saved tokens, or run compress again with the same sampling"
    )
