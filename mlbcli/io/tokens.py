"""Saved visual tokens: `compress --save-tokens DIR` writes them, `answer --tokens DIR` reuses them.

The vision tower is most of the cost of a video question on small LLMs (stack.md: 70-80 %), so a
video compressed once can be asked many questions later without decoding or encoding it again.

What is stored (one safetensors file per video, named after the video id):
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
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mlbcli.engine import batch as engine
from mlbcli.errors import UsageError
from mlbcli.io.naming import safe_name
from mlbcli.io.sampling import GENERIC, FrameRule, plan_frames
from mlbcli.models.base import INPUTS_VERSION, VideoTokens, sampled_fps
from mlbcli.selection.base import Method, MethodOptions

if TYPE_CHECKING:
    from mlbcli.engine.pipeline import EncodedVideo, Pipeline
    from mlbcli.io.sources import Item
    from mlbcli.io.video import Frames

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


def _is_reusable_reduction(method: Method) -> bool:
    return not method.query_aware and method.name != "none"


def save_video_tokens(
    folder: str | Path, item: Item, video: EncodedVideo, frames: Frames, pipe: Pipeline
) -> Path:
    from safetensors.torch import save

    from mlbcli.io.items import fingerprint

    tokens = video.tokens
    tensors: dict[str, torch.Tensor] = {}
    reduced = False
    if _is_reusable_reduction(pipe.method):
        plan = pipe.method.plan(tokens, None)  # query-agnostic methods do not look at the prompt
        if set(plan.steps) == {0}:
            flat = tokens.features.reshape(-1, tokens.features.shape[-1])  # [T*N, D]
            n = flat.shape[0]
            ctx = engine.LayerContext(0, flat[None], torch.arange(n), torch.arange(n), None)
            decision = plan.steps[0](ctx)
            tensors["kept_ids"] = decision.keep.to(torch.int64)
            tensors["kept"] = decision.replace if decision.replace is not None else flat[decision.keep]
            if decision.append is not None:
                tensors["appended"] = decision.append
            reduced = True
    if not reduced:
        tensors["features"] = tokens.features
    for layer, layer_features in tokens.layer_features.items():  # DeepStack: [T, N, D], kept rows if reduced
        flat = layer_features.reshape(-1, layer_features.shape[-1])
        tensors[f"layer_features.{layer}"] = flat[tensors["kept_ids"]] if reduced else flat
    if tokens.extra is not None:
        tensors["extra"] = tokens.extra
    if tokens.frame_features is not None:
        tensors["frame_features"] = tokens.frame_features
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    metadata = {
        "format_version": FORMAT_VERSION,
        "model": pipe.adapter.model_id,
        "video_id": item.video_id,
        "video_path": item.video_path,
        "fingerprint": fingerprint(item.video_path),
        "shape": json.dumps([tokens.num_frames, tokens.tokens_per_frame, int(tokens.features.shape[-1])]),
        "grid": json.dumps(list(tokens.grid)),
        "frames": str(len(frames.indices)),
        # What sampling produced these tokens, so `answer --tokens --frames N` can tell whether its
        # own sampling would pick the same frames (see SavedTokens.sampling_mismatch).
        "frame_indices": json.dumps([int(i) for i in frames.indices]),
        "num_frames_total": str(int(frames.info.num_frames_total)),
        "native_fps": repr(float(frames.info.fps)),
        "timestamps_s": json.dumps([float(t) for t in frames.timestamps_s]),
        "input_note": json.dumps(tokens.input_note),
        "inputs": str(INPUTS_VERSION),  # how the frames were prepared (SavedTokens.inputs_mismatch)
        "reduced": json.dumps(reduced),
        "method": pipe.method.name,
        "keep": str(pipe.method.keep),
    }
    target = tokens_path(folder, item.video_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    # Serialised in memory and written with open(): safetensors' save_file creates files mode 0600,
    # which makes a shared --tokens folder unreadable for others; open() follows the umask like every
    # other output. Written to a temporary name and renamed, so a reader never sees half a file.
    try:
        with open(tmp, "wb") as handle:
            handle.write(save(tensors, metadata=metadata))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


class SavedTokens:
    """A saved file loaded back: the video's tokens, and the stored reduction if there is one."""

    def __init__(self, path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]):
        self.path = path
        self.metadata = metadata
        T, N, D = json.loads(metadata["shape"])
        h, w = json.loads(metadata["grid"])
        self.reduced = json.loads(metadata["reduced"])
        features = tensors.get("features")
        if features is None:  # dropped tokens are never read (pruned before layer 0): zeros are fine
            features = torch.zeros(T * N, D, dtype=tensors["kept"].dtype)
            features[tensors["kept_ids"]] = tensors["kept"]
            features = features.view(T, N, D)
        layer_features: dict[int, torch.Tensor] = {}
        for name, stored in tensors.items():
            if name.startswith("layer_features."):  # [T*N, D], or [k, D] at kept_ids when reduced
                full = stored
                if "features" not in tensors:
                    full = torch.zeros(T * N, stored.shape[-1], dtype=stored.dtype)
                    full[tensors["kept_ids"]] = stored
                layer_features[int(name.rsplit(".", 1)[1])] = full.view(T, N, -1)
        self.tensors = tensors
        self.timestamps_s = json.loads(metadata["timestamps_s"])
        frame_indices = json.loads(metadata.get("frame_indices", "[]"))
        self.tokens = VideoTokens(
            features=features,
            grid=(h, w),
            extra=tensors.get("extra"),
            frame_features=tensors.get("frame_features"),
            timestamps_s=self.timestamps_s,
            layer_features=layer_features,
            # older token files lack these; the adapters then fall back to the timestamps
            frame_indices=frame_indices,
            native_fps=float(metadata["native_fps"]) if "native_fps" in metadata else None,
            input_note=json.loads(metadata.get("input_note", "null")),
            sampled_fps=sampled_fps(
                len(frame_indices),
                int(metadata.get("num_frames_total", 0)),
                float(metadata.get("native_fps", 0.0)),
            ),
        )

    @property
    def method_name(self) -> str:
        return self.metadata["method"]

    def inputs_mismatch(self) -> str | None:
        """Why these tokens cannot serve this mlb: frames prepared by another input version, else None."""
        saved = int(self.metadata.get("inputs", 1))
        if saved == INPUTS_VERSION:
            return None
        return (
            f"{self.path.name} was saved by an mlb that prepared model inputs otherwise (inputs v{saved}, "
            f"now v{INPUTS_VERSION}: resize rounding, frame counts, timing); run compress --save-tokens again"
        )

    def sampling_mismatch(
        self, num_frames: int | None, fps: float | None, rule: FrameRule = GENERIC
    ) -> str | None:
        """Why an explicit `--frames`/`--fps` disagrees with the saved frames, or None when it agrees.

        The frames the run would sample are recomputed from the stored video length and frame rate with
        the same sampler the decoder uses, and compared with the stored indices. With neither option
        given, the saved frames are used as they are (None).
        """
        if num_frames is None and fps is None:
            return None
        asked = " ".join(
            f"--{name} {value:g}"
            for name, value in (("frames", num_frames), ("fps", fps))
            if value is not None
        )
        saved = int(self.metadata["frames"])
        if "frame_indices" in self.metadata:
            total = int(self.metadata["num_frames_total"])
            native_fps = float(self.metadata["native_fps"])
            expected = plan_frames(
                total, native_fps if native_fps > 0 else 1.0, num_frames=num_frames, fps=fps, rule=rule
            ).indices
            if expected == json.loads(self.metadata["frame_indices"]):
                return None
            wanted: int | None = len(expected)
        elif fps is None and num_frames == saved:
            return None  # a file of an older mlb: only the frame count can be compared
        else:
            wanted = num_frames if fps is None else None
        would = f"would sample {wanted} frame(s)" if wanted is not None else "samples other frames"
        return (
            f"{self.path.name} holds {saved} frame(s) sampled by `compress`, but {asked} {would}; "
            "drop --frames/--fps to use the saved tokens, or run compress again with the same sampling"
        )

    def stored_reduction(self) -> Method:
        """A method that replays the stored pre-LLM reduction."""
        return StoredReduction(self)


def load_video_tokens(folder: str | Path, item: Item, model_id: str) -> SavedTokens | None:
    """The saved tokens of `item`'s video, or None when absent, for another model, or stale.

    A file whose stored `video_id` is not `item.video_id` (a name collision of an older mlb, or a file
    renamed by hand) is treated as absent, with a warning: the video is decoded and encoded again, so
    the answer is right, never another video's.
    """
    from safetensors import safe_open

    path = find_video_tokens(folder, item, model_id)
    if path is None:
        return None
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    return SavedTokens(path, tensors, metadata)


def find_video_tokens(folder: str | Path, item: Item, model_id: str) -> Path | None:
    """The file `load_video_tokens` would load, checked from its metadata alone (no tensors read), or None."""
    from safetensors import safe_open

    from mlbcli.io.items import fingerprint

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


class StoredReduction(Method):
    """Replays a reduction saved by `compress --save-tokens` (deliberately not in the --method registry)."""

    name = "stored"
    description = "Replay the reduction stored with saved tokens (used by `answer --tokens`)."

    def __init__(self, saved: SavedTokens | None = None, options: MethodOptions | None = None):
        super().__init__(options or MethodOptions(keep=float(saved.metadata["keep"]) if saved else 1.0))
        self.saved = saved

    def target_tokens(self, num_visual: int, num_frames: int = 1) -> int | None:
        return None  # a replay keeps what was stored; the budget was checked when it was made

    def plan(self, video: VideoTokens, prompt: Any) -> engine.PrunePlan:
        if self.saved is None:
            raise UsageError("the 'stored' method is used through `mlb answer --tokens DIR`")
        kept_ids = self.saved.tensors["kept_ids"]
        kept = self.saved.tensors["kept"]
        appended = self.saved.tensors.get("appended")

        def replay(ctx: engine.LayerContext) -> engine.LayerKeep:
            device = ctx.hidden.device
            return engine.LayerKeep(
                keep=kept_ids.to(device),
                replace=kept.to(device, ctx.hidden.dtype),
                append=None if appended is None else appended.to(device, ctx.hidden.dtype),
            )

        return engine.PrunePlan(steps={0: replay})
