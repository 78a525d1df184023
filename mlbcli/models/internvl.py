"""InternVL3 / InternVL3.5 in the Hugging Face format (`InternVLForConditionalGeneration`, e.g.
OpenGVLab/InternVL3_5-1B-HF, InternVL3-8B-hf): InternViT + pixel shuffle + MLP + Qwen2/Qwen3.

What the official processor (`InternVLProcessor` + `InternVLVideoProcessor`) does, and so what we do:

- Frames. Each frame is squashed to `size` (448 x 448 for the real models; no tiles for video, no crop)
  with bicubic + antialias on uint8, rescaled and normalised with the checkpoint's mean/std (ImageNet's
  for InternVL3.5).
- Features. The tower's hidden state at `vision_feature_layer` (-1) without CLS ("default"), g x g
  patches (448 / 14 = 32), goes through a pixel shuffle (`downsample_ratio` 0.5: 2 x 2 patches -> one
  token of 4x the width) and the projector: (g / 2)^2 = 256 tokens per frame, raster order.
- Prompt. The chat template renders a `{"type": "video"}` item as `<video>`, which the processor replaces
  with one line per frame: "Frame{i}: <img><IMG_CONTEXT> x N</img>", joined by "\\n" (no timestamps).
  The delimiters and labels stay between the frames (never pruned).
- Positions are 0..L-1 (a 1-D Qwen LLM), kept as they are under pruning.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mlbcli.models.base import ModelAdapter, Prompt, VideoTokens, resize_frames, split_videos
from mlbcli.models.interleaved import embed_at_slots, expand_video_placeholder

if TYPE_CHECKING:
    import numpy as np
    import torch

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def _pair(value: Any) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, (list, tuple)) else (int(value), int(value))


class InternVLAdapter(ModelAdapter):
    family = "internvl"
    model_types = ("internvl",)
    default_frames = 32  # lmms-eval's and the InternVL video evaluations' 32 uniformly sampled frames

    @classmethod
    def model_class(cls) -> type[Any]:
        from transformers import InternVLForConditionalGeneration

        return InternVLForConditionalGeneration

    @classmethod
    def tokens_per_frame(cls, config: Any) -> int:
        height, width = _pair(config.vision_config.image_size)
        patch_h, patch_w = _pair(config.vision_config.patch_size)
        ratio = float(config.downsample_ratio)
        return int((height // patch_h) * ratio) * int((width // patch_w) * ratio)

    # -- vision side -------------------------------------------------------------------------------------
    @property
    def image_size(self) -> tuple[int, int]:
        size = self.preprocess_config.get("size") or {}
        if "height" in size and "width" in size:
            return int(size["height"]), int(size["width"])
        return _pair(self.model.config.vision_config.image_size)

    def preprocess(self, frames: np.ndarray) -> dict[str, torch.Tensor]:
        import torch

        cfg = self.preprocess_config
        x = resize_frames(
            self.frames_tensor(frames).permute(0, 3, 1, 2), self.image_size
        )  # [T, 3, S, S] uint8
        scale = 1.0 / float(cfg.get("rescale_factor", 1 / 255))
        mean = torch.tensor(cfg.get("image_mean", IMAGENET_MEAN), device=x.device).view(1, 3, 1, 1) * scale
        std = torch.tensor(cfg.get("image_std", IMAGENET_STD), device=x.device).view(1, 3, 1, 1) * scale
        pixel = (x.float() - mean) / std  # fused rescale + normalise, as the processor
        return {"pixel_values": pixel.to(dtype=self.dtype)}  # [T, 3, S, S]: frames are the model's images

    def encode(self, pixel_inputs: dict[str, torch.Tensor]) -> VideoTokens:
        return self.encode_batch([pixel_inputs])[0]

    def encode_batch(self, pixel_inputs: Sequence[dict[str, torch.Tensor]]) -> list[VideoTokens]:
        """Frames of all videos through the stock `get_image_features` at once ([sum T, 3, S, S]): the
        tower, the pixel shuffle and the projector work frame by frame."""
        import torch

        counts = [int(inputs["pixel_values"].shape[0]) for inputs in pixel_inputs]
        pixel = torch.cat([inputs["pixel_values"] for inputs in pixel_inputs])
        out = self.model.model.get_image_features(pixel_values=pixel, return_dict=True)
        features = out.pooler_output  # [sum T, N, D], raster (g/2) x (g/2)
        frame_features = out.last_hidden_state.float().mean(dim=1)  # [sum T, Dv]
        return split_videos(features, frame_features, counts)

    # -- text side ---------------------------------------------------------------------------------------
    def _token(self, attribute: str, default: str) -> str:
        return str(getattr(self.tokenizer, attribute, None) or default)

    def video_text(self, video: VideoTokens) -> str:
        """What the processor puts in place of `<video>`, with ONE `<IMG_CONTEXT>` per frame."""
        start = self._token("start_image_token", "<img>")
        end = self._token("end_image_token", "</img>")
        context = self.tokenizer.convert_ids_to_tokens(self.model.config.image_token_id)
        return "\n".join(f"Frame{i + 1}: {start}{context}{end}" for i in range(video.num_frames))

    def build_prompt(self, question_text: str, video: VideoTokens) -> Prompt:
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question_text}]}]
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        placeholder = self._token("video_token", "<video>")
        image_token_id = self.model.config.image_token_id
        block = self.video_text(video)
        return expand_video_placeholder(
            self.tokenizer, text, placeholder, block, image_token_id, video, question_text
        )

    def embed(self, prompt: Prompt, video: VideoTokens) -> torch.Tensor:
        return embed_at_slots(self.decoder.embed_tokens, prompt, video, self.device)  # [1, L, D]

    def position_ids(self, prompt: Prompt, video: VideoTokens) -> torch.Tensor:
        import torch

        return torch.arange(prompt.length, device=self.device)[None]  # [1, L]
