"""LLaVA-NeXT (`LlavaNextForConditionalGeneration`, e.g. llava-hf/llava-v1.6-vicuna-7b-hf), driven on video
without training (the LLaVA-MLB / IG-VLM setting, algorithms.md §1.2).

The model is an image model; a video enters as its frames, each one as a base-resolution image:

- Preprocessing. Every frame is squashed to the checkpoint's base size (`crop_size` / `size`, else
  `vision_config.image_size`: 336 px for the real models) with bicubic + antialias, rescaled by 1/255
  and normalised with the checkpoint's mean/std (CLIP's by default). This is exactly the first
  ("base") patch the LLaVA-NeXT image processor builds; the any-res tiles are NOT built: they would
  multiply the tokens per frame by up to 5 for no benefit on low-resolution video frames.
- Features. CLIP runs on the T frames as a batch; the hidden state at `vision_feature_layer` (-2; a
  list is concatenated as in the stock model) with `vision_feature_select_strategy` ("default" drops
  CLS) goes through the projector: (S/14)^2 tokens per frame, 24 x 24 = 576 for CLIP-336, raster order.
  These are the same numbers `get_image_features` computes for the base patch (checked in
  tests/test_families.py).
- No `image_newline`. The stock model appends a learned newline after each row of the *tiled* feature
  map (spatial_unpad) and none after the base features; we feed base features only, so no newline is
  inserted, per frame or per row (`VideoTokens.extra` is None). This keeps every visual token prunable
  and the per-frame grid a clean h x w raster for selection methods.
- Prompt. The checkpoint's chat template renders one `{"type": "image"}` item (the llava-hf templates
  render only image items, not video ones); its `<image>` is expanded into T * N placeholders, the
  frames concatenated in time order. The tokenizer's BOS is prepended when the template does not
  render it (the Vicuna templates do not; the llava-hf processor tokenizes with special tokens).
- Context. Vicuna-7B has 4096 positions: 7 frames of 576 tokens already fill it. Frames of an image
  LLM carry no positional meaning of their own, so tokens kept before the LLM are re-sequenced
  (contiguous positions, as SF-LLaVA and LLaVA-MLB feed them): pruning before the LLM lets more frames
  fit. The engine calls `check_context` on the sequence that actually enters the LLM and raises
  `UsageError` naming the options to change; nothing ever runs past the trained positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mlbcli.models.base import ModelAdapter, Prompt, VideoTokens, split_videos

if TYPE_CHECKING:
    import numpy as np
    import torch


class LlavaNextAdapter(ModelAdapter):
    family = "llava_next"
    model_types = ("llava_next",)
    default_frames = 6
    renumber_input_positions = (
        True  # 6 x 576 = 3456 visual tokens: fits Vicuna's 4096 with the prompt and an answer
    )

    @classmethod
    def model_class(cls) -> type[Any]:
        from transformers import LlavaNextForConditionalGeneration

        return LlavaNextForConditionalGeneration

    @classmethod
    def tokens_per_frame(cls, config: Any) -> int:
        side = config.vision_config.image_size // config.vision_config.patch_size
        return side * side  # CLS dropped ("default") or not, the projector output is g x g (+1 for "full")

    # -- vision side -------------------------------------------------------------------------------------
    @property
    def image_size(self) -> tuple[int, int]:
        cfg = self.preprocess_config
        crop = cfg.get("crop_size") or {}
        size = cfg.get("size") or {}
        if "height" in crop and "width" in crop:
            return int(crop["height"]), int(crop["width"])
        if "height" in size and "width" in size:
            return int(size["height"]), int(size["width"])
        if "shortest_edge" in size:
            return int(size["shortest_edge"]), int(size["shortest_edge"])
        side = self.model.config.vision_config.image_size
        return side, side

    def preprocess(self, frames: np.ndarray) -> dict[str, torch.Tensor]:
        x = self.normalized_frames(frames, self.image_size)  # [T, 3, S, S]
        return {"pixel_values": x.to(dtype=self.dtype)}

    def encode(self, pixel_inputs: dict[str, torch.Tensor]) -> VideoTokens:
        return self.encode_batch([pixel_inputs])[0]

    def encode_batch(self, pixel_inputs: Sequence[dict[str, torch.Tensor]]) -> list[VideoTokens]:
        """Frames of all videos through the tower in one call; it works frame by frame (images)."""
        import torch

        cfg = self.model.config
        inner = self.model.model
        counts = [int(inputs["pixel_values"].shape[0]) for inputs in pixel_inputs]
        pixel = torch.cat([inputs["pixel_values"] for inputs in pixel_inputs])  # [sum T, 3, S, S]
        out = inner.vision_tower(pixel, output_hidden_states=True, return_dict=True)
        layer = cfg.vision_feature_layer
        if isinstance(layer, int):
            selected = out.hidden_states[layer]
        else:
            selected = torch.cat([out.hidden_states[i] for i in layer], dim=-1)
        if cfg.vision_feature_select_strategy == "default":
            selected = selected[:, 1:]  # drop CLS
        features = inner.multi_modal_projector(selected)  # [sum T, N, D]
        n = features.shape[1]
        side = self.model.config.vision_config.image_size // self.model.config.vision_config.patch_size
        grid = (side, side) if side * side == n else (1, n)  # "full" keeps CLS: no clean raster
        frame_features = selected.float().mean(dim=1)  # [sum T, Dv]
        return split_videos(features, frame_features, counts, grid)

    # -- text side ---------------------------------------------------------------------------------------
    @property
    def image_token(self) -> str:
        token = getattr(self.tokenizer, "image_token", None)
        return token or self.tokenizer.convert_ids_to_tokens(self.model.config.image_token_id)

    def build_prompt(self, question_text: str, video: VideoTokens) -> Prompt:
        # One <image> item expanded into T*N placeholders; BOS prepended (the Vicuna templates omit it).
        return self._expand_prompt(
            question_text,
            item_type="image",
            placeholder=self.image_token,
            placeholder_id=self.model.config.image_token_id,
            num_visual=video.num_visual,
            add_bos=True,
        )

    def embed(self, prompt: Prompt, video: VideoTokens) -> torch.Tensor:
        return self._splice_visual(prompt, video)  # [1, L, D], frames in time order, no newline

    def position_ids(self, prompt: Prompt, video: VideoTokens) -> torch.Tensor:
        import torch

        # The engine checks the context after pruning before the LLM (which renumbers positions here).
        return torch.arange(prompt.length, device=self.device)[None]
