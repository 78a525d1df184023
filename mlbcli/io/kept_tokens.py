"""The per-row record of which visual tokens survived pruning, compact enough to be always on.

Why a record at all: the report (and anyone reading a result file) should see *which* patches a method
kept on *which* frames, not just how many. Storing the kept ids as a list costs 2-8 bytes per kept token;
a bitmap over the whole token grid costs one bit per token whatever the budget (a 32-frame OneVision
video, 32 x 14 x 14 = 6272 tokens, is 784 bytes, 1048 characters of base64), so it can be written for
every row of every method.

The record is a plain dict that JSON and Arrow both hold as is (``arrow_type()`` gives the struct type)::

    {"frames": T, "grid_h": H, "grid_w": W,
     "bitmap": base64(numpy.packbits(mask.ravel()))  # bit order "big", C order over [T, H, W]
     "merged_into": None | base64(zlib(little-endian uint16/uint32 targets))}

A visual token's flat id is ``t * H * W + row * W + col`` (frame-major, row-major): the order in which
the models lay out a video's patch tokens. ``T`` counts token frames, which is the number of sampled
frames except for families that fuse frames (Qwen2-VL merges frame pairs: ``T = frames / 2``); the report
spreads token frames evenly over sampled frames.

``merged_into`` (token-merging methods only; ``None`` otherwise) says, for each *pruned* token in
ascending flat-id order, the flat id of the kept token it was merged into, or -1 when it was simply
dropped. Choice: only pruned tokens have an entry (kept tokens need none and the bitmap already orders
them), entries are the narrowest unsigned type that holds every flat id (uint16 up to 65535 tokens, else
uint32) with the type's maximum standing for -1, and the bytes are zlib-compressed because merge targets
repeat in runs (neighbouring patches merge into the same token), typically shrinking them 3-10x.
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["KeptRecord", "arrow_type", "decode_kept", "decode_merged", "encode_kept"]

KeptRecord = dict[str, Any]

_U16_LIMIT = 0xFFFF  # uint16 holds flat ids 0..65534; 65535 is the "dropped" sentinel


def _grid_size(frames: int, grid_h: int, grid_w: int) -> int:
    for name, value in (("frames", frames), ("grid_h", grid_h), ("grid_w", grid_w)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(frames) * int(grid_h) * int(grid_w)


def _merge_dtype(n: int) -> np.dtype[Any]:
    return np.dtype("<u2") if n < _U16_LIMIT else np.dtype("<u4")


def encode_kept(
    kept_ids: Sequence[int] | np.ndarray,
    frames: int,
    grid_h: int,
    grid_w: int,
    *,
    merged_into: Sequence[int] | np.ndarray | None = None,
) -> KeptRecord:
    """The record for one row: ``kept_ids`` are flat visual-token ids (any order, duplicates allowed).

    ``merged_into``, when given, has one entry per pruned token (ascending flat id): the flat id of the
    kept token it was merged into, or -1. Raises ``ValueError`` for ids outside the grid or a merge
    target that is not a kept token.
    """
    n = _grid_size(frames, grid_h, grid_w)
    ids = np.asarray(kept_ids, dtype=np.int64).ravel()
    if ids.size and (ids.min() < 0 or ids.max() >= n):
        raise ValueError(f"kept ids must lie in [0, {n}); got {int(ids.min())}..{int(ids.max())}")
    mask = np.zeros(n, dtype=bool)
    mask[ids] = True
    record: KeptRecord = {
        "frames": int(frames),
        "grid_h": int(grid_h),
        "grid_w": int(grid_w),
        "bitmap": base64.b64encode(np.packbits(mask).tobytes()).decode("ascii"),
        "merged_into": None,
    }
    if merged_into is not None:
        record["merged_into"] = _encode_merged(np.asarray(merged_into, dtype=np.int64).ravel(), mask)
    return record


def _encode_merged(targets: np.ndarray, mask: np.ndarray) -> str:
    pruned = int((~mask).sum())
    if targets.size != pruned:
        raise ValueError(f"merged_into needs one entry per pruned token ({pruned}), got {targets.size}")
    real = targets[targets >= 0]
    if (targets < -1).any() or (real.size and (real.max() >= mask.size or not mask[real].all())):
        raise ValueError("merged_into entries must be -1 or the flat id of a kept token")
    dtype = _merge_dtype(mask.size)
    sentinel = np.iinfo(dtype).max
    packed = np.where(targets < 0, sentinel, targets).astype(dtype)
    return base64.b64encode(zlib.compress(packed.tobytes(), 6)).decode("ascii")


def _as_record(record: Mapping[str, Any] | str) -> Mapping[str, Any]:
    """Accept the struct itself or its JSON text (CSV files store nested columns as JSON)."""
    if isinstance(record, str):
        loaded = json.loads(record)
        if not isinstance(loaded, dict):
            raise ValueError("kept-token record must be a JSON object")
        return loaded
    return record


def decode_kept(record: Mapping[str, Any] | str) -> np.ndarray:
    """The kept mask of a record as a bool array ``[frames, grid_h, grid_w]``."""
    rec = _as_record(record)
    t, h, w = int(rec["frames"]), int(rec["grid_h"]), int(rec["grid_w"])
    n = _grid_size(t, h, w)
    raw = np.frombuffer(base64.b64decode(rec["bitmap"], validate=True), dtype=np.uint8)
    if raw.size < (n + 7) // 8:
        raise ValueError(f"bitmap holds {raw.size * 8} bits, grid {t}x{h}x{w} needs {n}")
    return np.unpackbits(raw, count=n).astype(bool).reshape(t, h, w)


def decode_merged(record: Mapping[str, Any] | str) -> np.ndarray | None:
    """Per token (flat id) the flat id it was merged into; -1 for kept and dropped tokens.

    ``None`` when the record carries no merge information. Shape ``[frames, grid_h, grid_w]``.
    """
    rec = _as_record(record)
    blob = rec.get("merged_into")
    if not blob:
        return None
    grid = decode_kept(rec)
    mask = grid.ravel()
    dtype = _merge_dtype(mask.size)
    packed = np.frombuffer(zlib.decompress(base64.b64decode(blob, validate=True)), dtype=dtype)
    pruned = np.flatnonzero(~mask)
    if packed.size != pruned.size:
        raise ValueError(f"merged_into has {packed.size} entries for {pruned.size} pruned tokens")
    out = np.full(mask.size, -1, dtype=np.int64)
    values = packed.astype(np.int64)
    out[pruned] = np.where(values == np.iinfo(dtype).max, -1, values)
    return out.reshape(grid.shape)


def arrow_type() -> Any:
    """The pyarrow struct type of the ``kept_tokens`` column (pyarrow is imported only here)."""
    import pyarrow as pa

    return pa.struct(
        [
            pa.field("frames", pa.int64()),
            pa.field("grid_h", pa.int64()),
            pa.field("grid_w", pa.int64()),
            pa.field("bitmap", pa.string()),
            pa.field("merged_into", pa.string()),
        ]
    )
