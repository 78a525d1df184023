"""Saved visual tokens as model objects: the tensors a video's tokens are saved as, and back.

The file format (names, metadata, atomic writes, which file may serve which video) is
`mlbcli.io.tokens`; this module, one layer up, knows what the engine and the methods make of it:
which tensors to store for a method (its layer-0 reduction, or the full tokens), how to rebuild the
video's `VideoTokens` from them, and `StoredReduction`, the method that replays a stored reduction.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mlbcli.errors import UsageError
from mlbcli.io import tokens as token_files
from mlbcli.io.sampling import GENERIC, FrameRule
from mlbcli.models.base import INPUTS_VERSION, VideoTokens, sampled_fps
from mlbcli.selection.base import Method, MethodOptions
from mlbcli.selection.plan import LayerContext, LayerKeep, PrunePlan

if TYPE_CHECKING:
    from mlbcli.engine.pipeline import EncodedVideo, Pipeline
    from mlbcli.io.decoders import Frames
    from mlbcli.io.items import Item

__all__ = ["SavedTokens", "StoredReduction", "load_video_tokens", "save_video_tokens"]


def _is_reusable_reduction(method: Method) -> bool:
    return not method.query_aware and method.name != "none"


def _token_tensors(tokens: VideoTokens, method: Method) -> tuple[dict[str, torch.Tensor], bool]:
    """(tensors to store, whether they are the method's reduction rather than the full tokens)."""
    tensors: dict[str, torch.Tensor] = {}
    reduced = False
    if _is_reusable_reduction(method):
        plan = method.plan(tokens, None)  # query-agnostic methods do not look at the prompt
        if set(plan.steps) == {0}:
            flat = tokens.features.reshape(-1, tokens.features.shape[-1])  # [T*N, D]
            n = flat.shape[0]
            decision = plan.steps[0](LayerContext(0, flat[None], torch.arange(n), torch.arange(n), None))
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
    return {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, reduced


def save_video_tokens(
    folder: str | Path, item: Item, video: EncodedVideo, frames: Frames, pipe: Pipeline
) -> Path:
    """Save `video`'s tokens (reduced by `pipe.method` where that reduction can be replayed)."""
    tokens = video.tokens
    tensors, reduced = _token_tensors(tokens, pipe.method)
    metadata = {
        **token_files.sampling_metadata(item, frames),
        "model": pipe.adapter.model_id,
        "shape": json.dumps([tokens.num_frames, tokens.tokens_per_frame, int(tokens.features.shape[-1])]),
        "grid": json.dumps(list(tokens.grid)),
        "input_note": json.dumps(tokens.input_note),
        "inputs": str(INPUTS_VERSION),  # how the frames were prepared (SavedTokens.inputs_mismatch)
        "reduced": json.dumps(reduced),
        "method": pipe.method.name,
        "keep": str(pipe.method.keep),
    }
    return token_files.write_tokens_file(folder, item.video_id, tensors, metadata)


def _scatter(stored: torch.Tensor, kept_ids: torch.Tensor, rows: int) -> torch.Tensor:
    """[k, D] rows at `kept_ids` -> [rows, D]; dropped rows are zeros (pruned before layer 0, never read)."""
    full = torch.zeros(rows, stored.shape[-1], dtype=stored.dtype)
    full[kept_ids] = stored
    return full


class SavedTokens:
    """A saved file loaded back: the video's tokens, and the stored reduction if there is one."""

    def __init__(self, path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]):
        self.path = path
        self.metadata = metadata
        self.tensors = tensors
        self.reduced = json.loads(metadata["reduced"])
        self.timestamps_s = json.loads(metadata["timestamps_s"])
        self.tokens = self._video_tokens()

    def _video_tokens(self) -> VideoTokens:
        tensors, metadata = self.tensors, self.metadata
        T, N, D = json.loads(metadata["shape"])
        h, w = json.loads(metadata["grid"])
        features = tensors.get("features")
        if features is None:
            features = _scatter(tensors["kept"], tensors["kept_ids"], T * N).view(T, N, D)
        layer_features: dict[int, torch.Tensor] = {}
        for name, stored in tensors.items():
            if name.startswith("layer_features."):  # [T*N, D], or [k, D] at kept_ids when reduced
                full = stored if "features" in tensors else _scatter(stored, tensors["kept_ids"], T * N)
                layer_features[int(name.rsplit(".", 1)[1])] = full.view(T, N, -1)
        frame_indices = json.loads(metadata.get("frame_indices", "[]"))
        return VideoTokens(
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
        """Why an explicit `--frames`/`--fps` disagrees with the saved frames (see io.tokens), or None."""
        return token_files.sampling_mismatch(self.path, self.metadata, num_frames, fps, rule)

    def stored_reduction(self) -> Method:
        """A method that replays the stored pre-LLM reduction."""
        return StoredReduction(self)


def load_video_tokens(folder: str | Path, item: Item, model_id: str) -> SavedTokens | None:
    """The saved tokens of `item`'s video, or None when absent, for another model, or stale.

    Which file may serve the video is `io.tokens.find_video_tokens` (a foreign file is warned about and
    ignored: the video is decoded and encoded again, so the answer is never another video's).
    """
    path = token_files.find_video_tokens(folder, item, model_id)
    if path is None:
        return None
    tensors, metadata = token_files.read_tokens_file(path)
    return SavedTokens(path, tensors, metadata)


class StoredReduction(Method):
    """Replays a reduction saved by `compress --save-tokens` (deliberately not in the --method registry)."""

    name = "stored"
    description = "Replay the reduction stored with saved tokens (used by `answer --tokens`)."

    def __init__(self, saved: SavedTokens | None = None, options: MethodOptions | None = None):
        super().__init__(options or MethodOptions(keep=float(saved.metadata["keep"]) if saved else 1.0))
        self.saved = saved

    def target_tokens(self, num_visual: int, num_frames: int = 1) -> int | None:
        return None  # a replay keeps what was stored; the budget was checked when it was made

    def plan(self, video: VideoTokens, prompt: Any) -> PrunePlan:
        if self.saved is None:
            raise UsageError("the 'stored' method is used through `mlb answer --tokens DIR`")
        kept_ids = self.saved.tensors["kept_ids"]
        kept = self.saved.tensors["kept"]
        appended = self.saved.tensors.get("appended")

        def replay(ctx: LayerContext) -> LayerKeep:
            device = ctx.hidden.device
            return LayerKeep(
                keep=kept_ids.to(device),
                replace=kept.to(device, ctx.hidden.dtype),
                append=None if appended is None else appended.to(device, ctx.hidden.dtype),
            )

        return PrunePlan(steps={0: replay})
