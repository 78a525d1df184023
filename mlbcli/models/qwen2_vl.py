"""Qwen2-VL and Qwen2.5-VL (`Qwen2VLForConditionalGeneration`, `Qwen2_5_VLForConditionalGeneration`).

Video layout in transformers 5.x, which we reproduce without the HF video processor (it needs
torchvision):

- Preprocessing. Every frame is resized (bicubic + antialias) to (H', W') = `smart_resize(H, W)`:
  multiples of patch * merge = 28, aspect ratio kept, H' * W' within [min_pixels, max_pixels]. The
  bounds come from the checkpoint's `video_preprocessor_config.json` (`size.shortest_edge` /
  `size.longest_edge`, or `min_pixels` / `max_pixels`), and can be overridden with the
  `min_pixels=` / `max_pixels=` constructor kwargs (or the same-named adapter attributes). When
  only an *image* processor config is present (older hub repos), its pixel bounds are image bounds
  (up to 12.8 MP per image), so the video processor's defaults are used instead: 128*28*28 ..
  768*28*28 pixels per frame (qwen-vl-utils' VIDEO_MIN/MAX_PIXELS). qwen-vl-utils' per-video pixel
  budget (HF: `cap_pixels_per_frame=True`) lowers the per-frame max for long videos (`frame_pixel_cap`;
  binds beyond ~300 frames; the row's `input_note` says so). Resized as uint8 and rounded, then
  rescaled (1/255) and normalised with the checkpoint's mean/std (CLIP's by default), fused as the
  processor fuses them (`ModelAdapter.normalized_frames`). Frames come in pairs (`QWEN_FRAME_RULE`).
- Temporal patches. Two consecutive frames form one temporal patch (`temporal_patch_size` = 2); an odd
  frame count is padded by repeating the last frame, as the official processor does. The tower sees
  `pixel_values_videos` [t*h*w, 3*2*14*14] and `video_grid_thw` [[t, h, w]] (h, w in 14-px patches),
  and its merger turns every 2x2 patch window into one LLM token: t * (h/2) * (w/2) tokens, in
  (temporal patch, row, column) raster order.

Mapping to `VideoTokens` (what selection methods see):
  `features` is [t, (h/2)*(w/2), D]: ONE ROW PER TEMPORAL PATCH (= 2 sampled frames), `grid` is
  (h/2, w/2). So per-"frame" statistics, frame budgets, `kept_per_frame` and the `local` / `grid`
  debiasers all work per temporal patch on that grid; `num_frames` is t = ceil(frames / 2).
  `frame_features` is the tower's last hidden state mean-pooled per temporal patch. `timestamps_s`
  keeps the real timestamps of the sampled frames (2 per row).

Positions (M-RoPE). `position_ids()` returns the model's own `get_rope_index` result, [3, 1, L]
(temporal, height, width axes; text tokens have the same value on all three). Qwen2.5-VL spaces
temporal patches by `tokens_per_second * second_per_grid_t`, with `second_per_grid_t` = 2N / (k fps)
for k of the video's N frames at its native fps, as the processor computes it from the video's
metadata (`--temporal-spacing reference`, the default), or 2 x the mean interval between the REAL
sampled timestamps (`exact`); without metadata or timestamps: 2 / fps of the preprocess config
(2 fps by default, i.e. 1 s). Pruned
tokens keep their 3-D positions (the engine slices, never renumbers). Decoding continues as the stock
model does through `rope_deltas`: the n-th new token gets max(all prefill positions) + 1 + n on all
three axes.

Rotary. In transformers 5.23 `Qwen2VLRotaryEmbedding` already recomposes the mrope sections
(temporal / height / width frequency bands) into one [B, L, head_dim] cos/sin, and the attention
applies the plain `apply_rotary_pos_emb` of the modelling file, so the base class's `rotary` and
`apply_rotary` are exact for the probe as well.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from mlbcli.errors import UsageError
from mlbcli.io.sampling import FrameRule
from mlbcli.models import saliency as tower_saliency
from mlbcli.models.base import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, ModelAdapter, Prompt, VideoTokens

if TYPE_CHECKING:
    import numpy as np
    import torch

VIDEO_MIN_PIXELS = 128 * 28 * 28  # Qwen2VLVideoProcessor size.shortest_edge / qwen-vl-utils VIDEO_MIN_PIXELS
VIDEO_MAX_PIXELS = 768 * 28 * 28  # Qwen2VLVideoProcessor size.longest_edge / qwen-vl-utils VIDEO_MAX_PIXELS
DEFAULT_FPS = 2.0

#: Frames in pairs (temporal patches of 2); `--fps` counts clamped to [4, 768] (qwen-vl-utils 0.0.14,
#: `smart_nframes`; Hugging Face's Qwen video processors round the same way).
QWEN_FRAME_RULE = FrameRule(
    multiple=2, fps_min_frames=4, fps_max_frames=768, source="as qwen-vl-utils samples"
)


TEMPORAL_SPACINGS = ("reference", "exact")


def check_temporal_spacing(value: str | None) -> str:
    """`--temporal-spacing`: "reference" (the default: as the official processors) or "exact"."""
    if value is not None and value not in TEMPORAL_SPACINGS:
        raise UsageError(f"--temporal-spacing must be one of {', '.join(TEMPORAL_SPACINGS)}, got {value!r}")
    return "reference" if value is None else value


def cap_note(capped: tuple[int, int], free: tuple[int, int], reason: str) -> str | None:
    """The row's `input_note` when a qwen-vl-utils pixel cap made frames (H, W) smaller, else None."""
    if capped == free:
        return None
    return f"frames resized to {capped[1]}x{capped[0]} instead of {free[1]}x{free[0]}: {reason} (as qwen-vl-utils caps it)"


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """The official Qwen2-VL `smart_resize`: multiples of `factor`, pixel count within the bounds."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError(
            f"absolute aspect ratio must be smaller than 200, got {max(height, width) / min(height, width)}"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


class QwenVideoAdapter(ModelAdapter):
    """What Qwen2-VL, Qwen2.5-VL and Qwen3-VL (`models/qwen3_vl.py`) share: frames in pairs, the
    patchified pixel layout, one tower call per batch, 3-D M-RoPE positions from the model's own
    `get_rope_index`. A subclass says how large the frames are (`frame_size`) and how they are normalised."""

    default_frames = 32
    frame_rule = QWEN_FRAME_RULE
    tower_saliency = True  # the last vision block (`encode_batch`)
    pixel_mean: ClassVar[list[float]] = OPENAI_CLIP_MEAN  # when the checkpoint names none
    pixel_std: ClassVar[list[float]] = OPENAI_CLIP_STD

    def __init__(self, *args: Any, **options: Any):
        if "temporal_spacing" in self.option_defaults:  # Qwen2.5-VL, Qwen3-VL: a value of the two
            check_temporal_spacing(options.get("temporal_spacing"))
        super().__init__(*args, **options)

    @property
    def _vision(self) -> Any:
        return self.model.config.vision_config

    @abc.abstractmethod
    def frame_size(self, num_frames: int, height: int, width: int) -> tuple[int, int]:
        """(H', W') of every frame of a `num_frames`-frame video of (height, width) frames."""

    def preprocess(self, frames: np.ndarray) -> dict[str, torch.Tensor]:
        import torch

        vision = self._vision
        P, M, TP = vision.patch_size, vision.spatial_merge_size, vision.temporal_patch_size
        T, H, W = int(frames.shape[0]), int(frames.shape[1]), int(frames.shape[2])
        rh, rw = self.frame_size(T, H, W)
        x = self.normalized_frames(frames, (rh, rw), mean=self.pixel_mean, std=self.pixel_std)
        if pad := -T % TP:  # odd frame count: repeat the last frame (the processor's patchify)
            x = torch.cat([x, x[-1:].expand(pad, -1, -1, -1)])
        gt, gh, gw = x.shape[0] // TP, rh // P, rw // P
        # [t, TP, 3, h/M, M, P, w/M, M, P] -> rows (t, h/M, w/M, M, M), columns (3, TP, P, P)
        patches = x.view(gt, TP, 3, gh // M, M, P, gw // M, M, P).permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
        pixel = patches.reshape(gt * gh * gw, 3 * TP * P * P)
        return {
            "pixel_values_videos": pixel.to(device=self.device, dtype=self.dtype),
            "video_grid_thw": torch.tensor([[gt, gh, gw]], device=self.device),
        }

    def encode(self, pixel_inputs: dict[str, torch.Tensor]) -> VideoTokens:
        return self.encode_batch([pixel_inputs])[0]

    def encode_batch(self, pixel_inputs: Sequence[dict[str, torch.Tensor]]) -> list[VideoTokens]:
        """All videos through the tower in one call: patches concatenated, one grid row per video (the
        tower's attention windows never cross a video, as in the stock multi-video forward); per video
        the merged tokens, a mean tower state per temporal patch, and `layer_features` if the family has
        them."""
        import torch

        grid_thw = torch.cat([inputs["video_grid_thw"] for inputs in pixel_inputs])  # [B, 3]
        pixel = torch.cat([inputs["pixel_values_videos"] for inputs in pixel_inputs])
        visual = self.model.model.visual
        # `--saliency tower`: the last block's attention inside each temporal patch (FlashVID's reading)
        with tower_saliency.maybe_capture(tower_saliency.qwen_last_block_attention(visual)) as capture:
            out = self.model.model.get_video_features(
                pixel_values_videos=pixel, video_grid_thw=grid_thw, return_dict=True
            )
        M = self._vision.spatial_merge_size
        window = tower_saliency.qwen_window_index(visual, grid_thw) if capture is not None else None
        saliency = tower_saliency.qwen_token_saliency(capture, M, window)  # [sum t*n] or None
        offset = 0
        hidden = out.last_hidden_state  # [sum t*h*w, Dv], grouped by video then temporal patch
        videos, start = [], 0
        for index, (gt, gh, gw) in enumerate(grid_thw.tolist()):
            n = (gh // M) * (gw // M)
            pooled = out.pooler_output[index]  # [t * n, D] in (t, row, col) raster order
            frame_features = None
            if hidden is not None:
                stop = start + gt * gh * gw
                frame_features = hidden[start:stop].float().reshape(gt, gh * gw, -1).mean(dim=1)
                start = stop
            videos.append(
                VideoTokens(
                    features=pooled.reshape(gt, n, -1),
                    grid=(gh // M, gw // M),
                    extra=None,
                    frame_features=frame_features,
                    layer_features=self.layer_features(out, index, (gt, n)),
                    saliency=None if saliency is None else saliency[offset : offset + gt * n].view(gt, n),
                )
            )
            offset += gt * n
        return videos

    def layer_features(
        self, tower_output: Any, index: int, shape: tuple[int, int]
    ) -> dict[int, torch.Tensor]:
        """Decoder layer -> [t, n, D] features the LLM adds at video `index`'s tokens; none here."""
        return {}

    def video_grid_thw(self, video: VideoTokens) -> torch.Tensor:
        """[[t, h, w]] in tower patches, recovered from the token grid (also for saved tokens)."""
        import torch

        M = self._vision.spatial_merge_size
        h, w = video.grid
        return torch.tensor([[video.num_frames, h * M, w * M]], device=self.device)

    def mm_token_type_ids(self, prompt: Prompt) -> torch.Tensor:
        """Text 0, image 1, video 2, as the official processor builds them."""
        ids = prompt.input_ids
        cfg = self.model.config
        return (ids == cfg.image_token_id).int() + 2 * (ids == cfg.video_token_id).int()

    def rope_kwargs(self, prompt: Prompt, video: VideoTokens) -> dict[str, Any]:
        """The keyword arguments the stock model's `get_rope_index` / `forward` take for this prompt."""
        return {
            "mm_token_type_ids": self.mm_token_type_ids(prompt).to(self.device),
            "video_grid_thw": self.video_grid_thw(video),
        }

    def position_ids(self, prompt: Prompt, video: VideoTokens) -> torch.Tensor:
        """3-D M-RoPE positions [3, 1, L] from the model's own `get_rope_index`."""
        positions, _ = self.model.model.get_rope_index(
            prompt.input_ids.to(self.device), **self.rope_kwargs(prompt, video)
        )
        return positions

    def next_positions(self, position_ids: torch.Tensor, steps: int) -> torch.Tensor:
        """Stock decoding: position = cache length + rope_delta = max(prefill positions) + 1 + step, all axes."""
        value = position_ids.max() + 1 + steps
        return value.view(1, 1, 1).expand(3, position_ids.shape[-2], 1)


class _QwenVLAdapter(QwenVideoAdapter):
    """Shared Qwen2-VL / Qwen2.5-VL logic; the subclasses differ in class and temporal position spacing."""

    # Per-frame pixel bounds overriding the checkpoint's (`--min-pixels` / `--max-pixels`).
    option_defaults: ClassVar[dict[str, Any]] = {"min_pixels": None, "max_pixels": None}
    min_pixels: int | None
    max_pixels: int | None

    # -- loading -------------------------------------------------------------------------------------
    @classmethod
    def tokens_per_frame(cls, config: Any) -> int:
        """Resolution-dependent; from config alone we use the video default `max_pixels` (768*28*28).

        One temporal patch (2 frames) then becomes at most 768 tokens, i.e. 384 per sampled frame:
        an upper bound (smart_resize floors to multiples of 28), exact for frames whose resized size
        hits the budget exactly.
        """
        vision = config.vision_config
        factor = vision.patch_size * vision.spatial_merge_size
        per_patch = VIDEO_MAX_PIXELS // (factor * factor)
        return max(1, per_patch // vision.temporal_patch_size)

    # -- vision side -----------------------------------------------------------------------------------
    @property
    def pixel_bounds(self) -> tuple[int, int]:
        """(min_pixels, max_pixels) per frame: overrides > video config > video defaults.

        Top-level `min_pixels` / `max_pixels` / `size` of an image-processor config are image bounds
        and are ignored (see the module docstring); in a video config, or a config without
        `image_processor_type`, they are honoured.
        """
        cfg = self.preprocess_config
        size = cfg.get("size") or {}
        image_only = "image_processor_type" in cfg and "video_processor_type" not in cfg
        lo, hi = VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS
        if not image_only:
            lo = int(cfg.get("min_pixels") or size.get("shortest_edge") or lo)
            hi = int(cfg.get("max_pixels") or size.get("longest_edge") or hi)
        lo = int(self.min_pixels) if self.min_pixels is not None else lo
        hi = int(self.max_pixels) if self.max_pixels is not None else hi
        if lo > hi:
            raise ValueError(f"min_pixels {lo} > max_pixels {hi}")
        return lo, hi

    def frame_pixel_cap(self, num_frames: int) -> int:
        """Per-frame max pixels once `num_frames` frames share the video's pixel budget.

        qwen-vl-utils' cap (Hugging Face: `cap_pixels_per_frame=True`): 90% of `max_video_tokens` (128000,
        or the checkpoint's video config) tokens' worth of pixels, split evenly over the frames, at most
        the per-frame max and at least 1.05 x the per-frame min. It binds beyond ~300 frames at the
        default bounds (long videos with --fps), where it keeps the visual tokens within the context.
        `--max-pixels` is never exceeded (qwen-vl-utils: min(the user's max_pixels, the cap)).
        """
        factor = self._vision.patch_size * self._vision.spatial_merge_size
        lo, hi = self.pixel_bounds
        budget = int(int(self.preprocess_config.get("max_video_tokens") or 128000) * factor * factor * 0.9)
        cap = max(min(hi, budget * self._vision.temporal_patch_size // max(1, num_frames)), int(lo * 1.05))
        return min(cap, hi) if self.max_pixels is not None else cap

    def resized_size(
        self, height: int, width: int, num_frames: int = 1, *, capped: bool = True
    ) -> tuple[int, int]:
        """(H', W') of every frame of a `num_frames`-frame video: smart_resize within the pixel bounds,
        under the video's pixel budget unless `capped` is False (what `input_note` compares with)."""
        factor = self._vision.patch_size * self._vision.spatial_merge_size
        lo, hi = self.pixel_bounds
        return smart_resize(height, width, factor, lo, self.frame_pixel_cap(num_frames) if capped else hi)

    def input_note(self, num_frames: int, height: int, width: int) -> str | None:
        """Says when the video's pixel budget, not the per-frame bound, set the frame size."""
        return cap_note(
            self.resized_size(height, width, num_frames),
            self.resized_size(height, width, num_frames, capped=False),
            f"{num_frames} frames share the video's pixel budget",
        )

    def frame_size(self, num_frames: int, height: int, width: int) -> tuple[int, int]:
        return self.resized_size(height, width, num_frames)

    # -- text side -------------------------------------------------------------------------------------
    @property
    def video_token(self) -> str:
        return self.tokenizer.convert_ids_to_tokens(self.model.config.video_token_id)

    def build_prompt(self, question_text: str, video: VideoTokens) -> Prompt:
        # <|vision_start|><|video_pad|><|vision_end|>: the pad becomes t*(h/2)*(w/2) placeholders.
        return self._expand_prompt(
            question_text,
            item_type="video",
            placeholder=self.video_token,
            placeholder_id=self.model.config.video_token_id,
            num_visual=video.num_visual,
        )

    def embed(self, prompt: Prompt, video: VideoTokens) -> torch.Tensor:
        return self._splice_visual(prompt, video)  # [1, L, D]; no structural tokens (extra is None)


class Qwen2VLAdapter(_QwenVLAdapter):
    family = "qwen2_vl"
    model_types = ("qwen2_vl",)

    @classmethod
    def model_class(cls) -> type[Any]:
        from transformers import Qwen2VLForConditionalGeneration

        return Qwen2VLForConditionalGeneration


class Qwen2_5_VLAdapter(_QwenVLAdapter):  # noqa: N801 (the transformers spelling)
    family = "qwen2_5_vl"
    model_types = ("qwen2_5_vl",)

    # How temporal patches are spaced in time (`second_per_grid_t`): "reference" or "exact".
    option_defaults: ClassVar[dict[str, Any]] = {
        **_QwenVLAdapter.option_defaults,
        "temporal_spacing": "reference",
    }
    temporal_spacing: str

    @classmethod
    def model_class(cls) -> type[Any]:
        from transformers import Qwen2_5_VLForConditionalGeneration

        return Qwen2_5_VLForConditionalGeneration

    def second_per_grid_t(self, video: VideoTokens, spacing: str | None = None) -> float:
        """Seconds covered by one temporal patch (`spacing`: the adapter's `temporal_spacing` when None).

        "reference" (the Hugging Face processor given the video's metadata, and qwen-vl-utils):
        temporal_patch_size / sampled fps, with sampled fps = k / N x native fps for k of the video's N
        frames (`VideoTokens.sampled_fps`, the whole video's even for a subset of its rows), i.e.
        2N / (k x fps): a clip's length divided evenly, though the k frames span only N - 1 frame
        intervals. "exact": 2 x the mean interval between the real sampled timestamps, 2(N-1) / ((k-1) x
        fps) for evenly sampled frames (up to 14% less at k = 8). Without the video's metadata (tokens
        saved by an older mlb) the reference value cannot be computed and the exact one is used; without
        timestamps either, 2 / the preprocess config's fps (2 fps by default: 1 s).
        """
        spacing = spacing or self.temporal_spacing
        tp = self._vision.temporal_patch_size
        if spacing == "reference" and video.sampled_fps:
            return tp / video.sampled_fps
        ts = [float(t) for t in video.timestamps_s if t == t]  # drop NaN
        if len(ts) >= 2 and ts[-1] > ts[0]:
            return tp * (ts[-1] - ts[0]) / (len(ts) - 1)
        fps = float(self.preprocess_config.get("fps") or DEFAULT_FPS)
        return tp / fps

    def rope_kwargs(self, prompt: Prompt, video: VideoTokens) -> dict[str, Any]:
        import torch

        kwargs = super().rope_kwargs(prompt, video)
        seconds = self.second_per_grid_t(video)
        kwargs["second_per_grid_ts"] = torch.tensor([seconds], device=self.device)
        return kwargs
