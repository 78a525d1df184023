"""LLaVA-OneVision (`LlavaOnevisionForConditionalGeneration`, e.g. llava-hf/llava-onevision-qwen2-0.5b-ov-hf).

Video layout in transformers 5.x (`LlavaOnevisionModel.get_video_features`): every frame goes through
SigLIP at `image_size` (384 px for the real models), the projector maps each of the g x g patches
(g = image_size // patch_size = 27) into the LLM width, and the grid is bilinearly pooled to
ceil(g/2) x ceil(g/2) = 14 x 14 = 196 tokens per frame. One `image_newline` token follows the last
frame. The prompt holds T*N + 1 `<video>` placeholders that the stock forward `masked_scatter`s.

We do the processor's job ourselves (no torchvision here, see stack.md): resize to the checkpoint's
size with bicubic + antialias on uint8 frames, rescale by 1/255 and normalise with the checkpoint's
mean/std (`ModelAdapter.normalized_frames`: the reference processors' pixels to the last bit).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mlbcli.models import saliency as tower_saliency
from mlbcli.models.base import ModelAdapter, Prompt, VideoTokens

if TYPE_CHECKING:
    import numpy as np
    import torch


class LlavaOnevisionAdapter(ModelAdapter):
    family = "llava_onevision"
    model_types = ("llava_onevision",)
    default_frames = 32
    tower_saliency = True  # SigLIP's feature layer (`models.saliency`)

    @classmethod
    def model_class(cls) -> type[Any]:
        from transformers import LlavaOnevisionForConditionalGeneration

        return LlavaOnevisionForConditionalGeneration

    @classmethod
    def tokens_per_frame(cls, config: Any) -> int:
        vision = config.vision_config
        side = math.ceil((vision.image_size // vision.patch_size) / 2)  # bilinear 2x pooling, rounded up
        return side * side

    @classmethod
    def structural_tokens(cls, config: Any, num_frames: int) -> int:
        return 1  # one image_newline after the last frame

    # -- vision side -------------------------------------------------------------------------------------
    @property
    def image_size(self) -> tuple[int, int]:
        size = self.preprocess_config.get("size") or {}
        side = self.model.config.vision_config.image_size
        if "height" in size and "width" in size:
            return int(size["height"]), int(size["width"])
        if "shortest_edge" in size:
            return int(size["shortest_edge"]), int(size["shortest_edge"])
        return side, side

    def preprocess(self, frames: np.ndarray) -> dict[str, torch.Tensor]:
        x = self.normalized_frames(frames, self.image_size, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])
        pixel = x.unsqueeze(0).to(dtype=self.dtype)  # [1, T, 3, S, S]
        return {"pixel_values_videos": pixel}

    def encode(self, pixel_inputs: dict[str, torch.Tensor]) -> VideoTokens:
        return self.encode_batch([pixel_inputs])[0]

    def encode_batch(self, pixel_inputs: Sequence[dict[str, torch.Tensor]]) -> list[VideoTokens]:
        """Frames of all videos through the tower in one call ([1, sum T, 3, S, S]); the tower, projector
        and 2x2 pooling work frame by frame, so each video's tokens are those it gets alone."""
        import torch

        counts = [int(inputs["pixel_values_videos"].shape[1]) for inputs in pixel_inputs]
        pixel = torch.cat([inputs["pixel_values_videos"] for inputs in pixel_inputs], dim=1)
        # `--saliency tower`: the feature layer's attention, mean over heads and query patches
        layer = tower_saliency.siglip_feature_attention(
            self.model.model.vision_tower, self.model.config.vision_feature_layer
        )
        with tower_saliency.maybe_capture(layer) as capture:
            out = self.model.model.get_video_features(pixel_values_videos=pixel, return_dict=True)
        total = sum(counts)
        pooled = out.pooler_output[0]  # [sum T * N + 1, D]: frames then image_newline
        n = (pooled.shape[0] - 1) // total
        side = math.isqrt(n)
        features = pooled[:-1].reshape(total, n, -1)  # [sum T, N, D]
        g = self.model.config.vision_config.image_size // self.model.config.vision_config.patch_size
        saliency = tower_saliency.siglip_token_saliency(capture, total, g)  # [sum T, N] or None
        # One global vector per frame from the tower's last hidden state ([T, g*g, Dv]), mean-pooled:
        # cheap (already computed) and what segment detection compares between adjacent frames.
        frame_features = (
            out.last_hidden_state.float().mean(dim=1) if out.last_hidden_state is not None else None
        )
        videos, start = [], 0
        for count in counts:
            videos.append(
                VideoTokens(
                    features=features[start : start + count],
                    grid=(side, n // side),
                    extra=pooled[-1:],
                    frame_features=None if frame_features is None else frame_features[start : start + count],
                    saliency=None if saliency is None else saliency[start : start + count],
                )
            )
            start += count
        return videos

    # -- text side ---------------------------------------------------------------------------------------
    @property
    def video_token(self) -> str:
        token = getattr(self.tokenizer, "video_token", None)
        return token or self.tokenizer.convert_ids_to_tokens(self.model.config.video_token_id)

    def build_prompt(self, question_text: str, video: VideoTokens) -> Prompt:
        # T*N frame placeholders, then one per structural token (image_newline).
        return self._expand_prompt(
            question_text,
            item_type="video",
            placeholder=self.video_token,
            placeholder_id=self.model.config.video_token_id,
            num_visual=video.num_visual,
            num_extra=0 if video.extra is None else int(video.extra.shape[0]),
        )

    def embed(self, prompt: Prompt, video: VideoTokens) -> torch.Tensor:
        return self._splice_visual(prompt, video)  # [1, L, D], frames then image_newline

    def position_ids(self, prompt: Prompt, video: VideoTokens) -> torch.Tensor:
        import torch

        return torch.arange(prompt.length, device=self.device)[None]  # [1, L]
