"""LLaVA-NeXT-Video (`LlavaNextVideoForConditionalGeneration`, e.g. llava-hf/LLaVA-NeXT-Video-7B-hf): the
LLaVA-NeXT model (CLIP-336 + Vicuna/Llama) trained on video, with a pooling layer on the video path.

What the stock video path does (`LlavaNextVideoModel.get_video_features`), and so what we do:

- Preprocessing (`LlavaNextVideoVideoProcessor`): every frame is resized so that its SHORT edge is
  `size.shortest_edge` (336 for the real model; the long edge `int(336 * long / short)`), bicubic with
  antialias on uint8, then center-cropped to `crop_size` (336 x 336; top/left offsets floored), rescaled
  and normalised with CLIP's mean/std. No any-res tiles on the video path.
- Features. CLIP runs on the T frames; the hidden state at `vision_feature_layer` (-2) without CLS
  ("default") is average-pooled 2 x 2 (`spatial_pool_mode`, `spatial_pool_stride`: the
  `vision_resampler`) and projected: (24 / 2)^2 = 144 tokens per frame, raster order, no newline token.
- Prompt. The chat template renders one `{"type": "video"}` item as `<video>`; the processor expands it
  into T * 144 `<video>` tokens and tokenizes with the Llama tokenizer's BOS (the template renders none).
- Positions are 0..L-1 (a 1-D Llama LLM). Unlike LLaVA-NeXT on video (frames as images), this model was
  trained on video, so tokens kept before the LLM keep their original positions, like OneVision's.
- Context: Vicuna-7B's 4096 positions hold about 27 frames of 144 tokens; the engine refuses a request
  that does not fit (`check_context`), naming the options to change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mlbcli.models.base import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    ModelAdapter,
    Prompt,
    VideoTokens,
    resize_frames,
    split_videos,
)

if TYPE_CHECKING:
    import numpy as np
    import torch


def shortest_edge_size(height: int, width: int, shortest: int) -> tuple[int, int]:
    """(h, w) after resizing the short edge to `shortest`, the long edge floored as transformers'
    `get_resize_output_image_size(default_to_square=False)` does."""
    if width <= height:
        return int(shortest * height / width), shortest
    return shortest, int(shortest * width / height)


def center_crop(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[T, 3, H, W] -> [T, 3, h, w], offsets `int((H - h) / 2)` as the HF torchvision backend (frames
    smaller than the crop are zero-padded first, left/top getting the floor half)."""
    import torch.nn.functional as F

    crop_h, crop_w = size
    height, width = frames.shape[-2:]
    if crop_h > height or crop_w > width:
        pad_w, pad_h = max(crop_w - width, 0), max(crop_h - height, 0)
        frames = F.pad(frames, (pad_w // 2, (pad_w + 1) // 2, pad_h // 2, (pad_h + 1) // 2), value=0)
        height, width = frames.shape[-2:]
    top, left = int((height - crop_h) / 2.0), int((width - crop_w) / 2.0)
    return frames[..., top : top + crop_h, left : left + crop_w]


class LlavaNextVideoAdapter(ModelAdapter):
    family = "llava_next_video"
    model_types = ("llava_next_video",)
    default_frames = 8  # the model card's and the processor examples' 8 uniformly sampled frames

    @classmethod
    def model_class(cls) -> type[Any]:
        from transformers import LlavaNextVideoForConditionalGeneration

        return LlavaNextVideoForConditionalGeneration

    @classmethod
    def tokens_per_frame(cls, config: Any) -> int:
        side = config.vision_config.image_size // config.vision_config.patch_size
        pooled = side // int(getattr(config, "spatial_pool_stride", 2))  # AvgPool2d floors
        return pooled * pooled

    # -- vision side -------------------------------------------------------------------------------------
    @property
    def crop_size(self) -> tuple[int, int]:
        crop = self.preprocess_config.get("crop_size") or {}
        if "height" in crop and "width" in crop:
            return int(crop["height"]), int(crop["width"])
        side = self.model.config.vision_config.image_size
        return side, side

    def preprocess(self, frames: np.ndarray) -> dict[str, torch.Tensor]:
        import torch

        cfg = self.preprocess_config
        shortest = int((cfg.get("size") or {}).get("shortest_edge") or self.crop_size[0])
        x = self.frames_tensor(frames).permute(0, 3, 1, 2)  # [T, 3, H, W] uint8
        x = resize_frames(x, shortest_edge_size(int(x.shape[-2]), int(x.shape[-1]), shortest))
        if cfg.get("do_center_crop", True):
            x = center_crop(x, self.crop_size)  # [T, 3, S, S]
        scale = 1.0 / float(cfg.get("rescale_factor", 1 / 255))
        mean = torch.tensor(cfg.get("image_mean", OPENAI_CLIP_MEAN), device=x.device).view(1, 3, 1, 1) * scale
        std = torch.tensor(cfg.get("image_std", OPENAI_CLIP_STD), device=x.device).view(1, 3, 1, 1) * scale
        pixel = (x.float() - mean) / std  # fused rescale + normalise, as the processor
        return {"pixel_values_videos": pixel.unsqueeze(0).to(dtype=self.dtype)}  # [1, T, 3, S, S]

    def encode(self, pixel_inputs: dict[str, torch.Tensor]) -> VideoTokens:
        return self.encode_batch([pixel_inputs])[0]

    def encode_batch(self, pixel_inputs: Sequence[dict[str, torch.Tensor]]) -> list[VideoTokens]:
        """Frames of all videos through the stock `get_video_features` at once ([1, sum T, 3, S, S]): the
        tower, the 2x2 pooling and the projector work frame by frame."""
        import torch

        counts = [int(inputs["pixel_values_videos"].shape[1]) for inputs in pixel_inputs]
        pixel = torch.cat([inputs["pixel_values_videos"] for inputs in pixel_inputs], dim=1)
        out = self.model.model.get_video_features(pixel_values_videos=pixel, return_dict=True)
        total = sum(counts)
        features = out.pooler_output[0].reshape(total, -1, out.pooler_output.shape[-1])  # [sum T, N, D]
        # One global vector per frame: the tower's last hidden state [sum T, 1 + g*g, Dv], mean-pooled.
        frame_features = out.last_hidden_state.float().mean(dim=1)
        return split_videos(features, frame_features, counts)

    # -- text side ---------------------------------------------------------------------------------------
    @property
    def video_token(self) -> str:
        token = getattr(self.tokenizer, "video_token", None)
        return token or self.tokenizer.convert_ids_to_tokens(self.model.config.video_token_id)

    def build_prompt(self, question_text: str, video: VideoTokens) -> Prompt:
        # One <video> item expanded into T*N placeholders; BOS prepended (the template renders none).
        return self._expand_prompt(
            question_text,
            item_type="video",
            placeholder=self.video_token,
            placeholder_id=self.model.config.video_token_id,
            num_visual=video.num_visual,
            add_bos=True,
        )

    def embed(self, prompt: Prompt, video: VideoTokens) -> torch.Tensor:
        return self._splice_visual(prompt, video)  # [1, L, D], frames in time order

    def position_ids(self, prompt: Prompt, video: VideoTokens) -> torch.Tensor:
        import torch

        return torch.arange(prompt.length, device=self.device)[None]  # [1, L]
