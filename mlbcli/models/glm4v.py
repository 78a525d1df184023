"""GLM-4.1V and GLM-4.6V (`Glm4vForConditionalGeneration`, e.g. zai-org/GLM-4.1V-9B-Thinking;
`Glm46VForConditionalGeneration`, zai-org/GLM-4.6V-Flash): a Qwen-style patch tower with 2-D RoPE and a
GLM-4 LLM with 3-D RoPE (temporal, height, width), like Qwen2-VL's M-RoPE.

What the official processor (`Glm4vProcessor` + `Glm4vVideoProcessor`) does, and so what we do:

- Frames. All frames get one size: GLM's `smart_resize` of the video (multiples of 28; the WHOLE video's
  pixels t' x H' x W' within `size.shortest_edge` .. `size.longest_edge`, t' the frame count rounded to
  pairs), bicubic + antialias on uint8, CLIP mean/std. Frames come in pairs (temporal patches of 2; an odd
  count repeats the last frame), patchified exactly as Qwen2-VL's (`QwenVideoAdapter.preprocess`).
- Features. The tower runs each temporal patch as its own image (grid [1, h, w] per patch) and merges
  2 x 2 patches: (h / 2) x (w / 2) tokens per temporal patch, one `VideoTokens` row per patch.
- Prompt. The template renders a video as `<|begin_of_video|><|video|><|end_of_video|>`; the processor
  replaces `<|video|>` with, per temporal patch, `<|begin_of_image|><|image|> x N<|end_of_image|>` and the
  patch's time: GLM-4.1V `int(seconds)` ("3"), GLM-4.6V `"{seconds:.1f} seconds"`. A patch's time is its
  first frame's (`metadata.timestamps[::2]`): frame index / the video's fps (24 fps when unknown, as the
  processor). The frame tokens are `<|image|>` tokens; `mm_token_type_ids` marks those inside the video 2.
- Positions. The model's own `get_rope_index`: text advances all three axes by one per token; each temporal
  patch is an image at the current position (t the same for its tokens, h and w its row and column), and
  the next token starts at +max(h, w) / 2. Time enters only through the timestamp text, not the positions.
  Pruned tokens keep their 3-D positions; decoding continues at max + 1, as stock `rope_deltas` do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mlbcli.io.sampling import FrameRule
from mlbcli.models.base import Prompt, VideoTokens
from mlbcli.models.interleaved import embed_at_slots, expand_video_placeholder
from mlbcli.models.qwen2_vl import QwenVideoAdapter

if TYPE_CHECKING:
    import torch

#: The video processor's defaults (`Glm4vVideoProcessor.size`): pixels of the whole video.
VIDEO_MIN_PIXELS = 112 * 112
VIDEO_MAX_PIXELS = 28 * 28 * 2 * 30000
DEFAULT_FPS = 24.0  # the processor's assumption when a video's frame rate is unknown

#: Frames in pairs (temporal patches of 2), as the processor's `sample_frames` makes them.
GLM_FRAME_RULE = FrameRule(multiple=2, source="as the GLM-4.1V processor samples")


def glm_smart_resize(
    num_frames: int,
    height: int,
    width: int,
    *,
    temporal_factor: int,
    factor: int,
    min_pixels: int,
    max_pixels: int,
) -> tuple[int, int]:
    """(H', W'): the video processor's `smart_resize` (pixels of t' x H' x W' within the bounds)."""
    if height < factor or width < factor:
        scale = max(factor / height, factor / width)
        height, width = int(height * scale), int(width * scale)
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    t_bar = round(num_frames / temporal_factor) * temporal_factor
    if t_bar * h_bar * w_bar > max_pixels:
        beta = math.sqrt((num_frames * height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif t_bar * h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (num_frames * height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


class Glm4vAdapter(QwenVideoAdapter):
    family = "glm4v"
    model_types = ("glm4v",)
    default_frames = 32
    frame_rule = GLM_FRAME_RULE
    tower_saliency = False  # its own `encode_batch` captures nothing: the proxy

    @classmethod
    def model_class(cls) -> type[Any]:
        from transformers import Glm4vForConditionalGeneration

        return Glm4vForConditionalGeneration

    @staticmethod
    def format_time(seconds: float) -> str:
        return str(int(seconds))  # GLM-4.1V: whole seconds

    # -- token counts from the config alone (`mlb flops`) -------------------------------------------------
    @classmethod
    def visual_tokens(cls, config: Any, num_frames: int) -> int:
        """Upper bound: the processor's default pixel budget of the whole video spread over its frames."""
        vision = config.vision_config
        factor = vision.patch_size * vision.spatial_merge_size
        patches = -(-num_frames // vision.temporal_patch_size)
        frames = patches * vision.temporal_patch_size
        return patches * max(1, VIDEO_MAX_PIXELS // (frames * factor * factor))

    @classmethod
    def tokens_per_frame(cls, config: Any) -> int:
        return cls.visual_tokens(config, cls.default_frames) // cls.default_frames

    # -- vision side -------------------------------------------------------------------------------------
    def frame_size(self, num_frames: int, height: int, width: int) -> tuple[int, int]:
        size = self.preprocess_config.get("size") or {}
        vision = self._vision
        return glm_smart_resize(
            max(num_frames, vision.temporal_patch_size),  # the processor refuses fewer; we pad to a pair
            height,
            width,
            temporal_factor=vision.temporal_patch_size,
            factor=vision.patch_size * vision.spatial_merge_size,
            min_pixels=int(size.get("shortest_edge") or VIDEO_MIN_PIXELS),
            max_pixels=int(size.get("longest_edge") or VIDEO_MAX_PIXELS),
        )

    def encode_batch(self, pixel_inputs: Sequence[dict[str, torch.Tensor]]) -> list[VideoTokens]:
        """All videos through the stock `get_video_features` in one call (each temporal patch is its own
        image in the tower); per video [t, n, D] tokens and the merged tower state per patch, mean-pooled."""
        import torch

        grid_thw = torch.cat([inputs["video_grid_thw"] for inputs in pixel_inputs])  # [B, 3]
        pixel = torch.cat([inputs["pixel_values_videos"] for inputs in pixel_inputs])
        out = self.model.model.get_video_features(
            pixel_values_videos=pixel, video_grid_thw=grid_thw, return_dict=True
        )
        M = self._vision.spatial_merge_size
        merged = out.last_hidden_state  # [sum t*n, Dv']: the downsampled tower state, one row per token
        videos, start = [], 0
        for index, (gt, gh, gw) in enumerate(grid_thw.tolist()):
            n = (gh // M) * (gw // M)
            stop = start + gt * n
            videos.append(
                VideoTokens(
                    features=out.pooler_output[index].reshape(gt, n, -1),  # (t, row, col) raster
                    grid=(gh // M, gw // M),
                    extra=None,
                    frame_features=merged[start:stop].float().reshape(gt, n, -1).mean(dim=1),
                )
            )
            start = stop
        return videos

    # -- text side ---------------------------------------------------------------------------------------
    def _special(self, config_id: str) -> str:
        return str(self.tokenizer.convert_ids_to_tokens(getattr(self.model.config, config_id)))

    def patch_times(self, video: VideoTokens) -> list[float]:
        """Seconds of each temporal patch: its first frame's index / fps (`metadata.timestamps[::2]`),
        the last repeated when there are fewer; without indices, the real timestamps or 24 fps."""
        tp = self._vision.temporal_patch_size
        if video.frame_indices and video.native_fps:
            stamps = [index / video.native_fps for index in video.frame_indices]
        elif video.timestamps_s:
            stamps = [float(t) for t in video.timestamps_s]
        else:
            stamps = [i / DEFAULT_FPS for i in range(video.num_frames * tp)]
        times = stamps[::tp][: video.num_frames]
        return times + [times[-1] if times else 0.0] * (video.num_frames - len(times))

    def video_text(self, video: VideoTokens) -> str:
        """What the processor puts in place of `<|video|>`, with ONE `<|image|>` per temporal patch."""
        begin, end = self._special("image_start_token_id"), self._special("image_end_token_id")
        image = self._special("image_token_id")
        return "".join(f"{begin}{image}{end}{self.format_time(t)}" for t in self.patch_times(video))

    def build_prompt(self, question_text: str, video: VideoTokens) -> Prompt:
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question_text}]}]
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        placeholder = self._special("video_token_id")
        image_token_id = self.model.config.image_token_id
        block = self.video_text(video)
        return expand_video_placeholder(
            self.tokenizer, text, placeholder, block, image_token_id, video, question_text
        )

    def mm_token_type_ids(self, prompt: Prompt) -> torch.Tensor:
        """Image tokens inside `<|begin_of_video|>` .. `<|end_of_video|>` 2, others 1, text 0 (the
        processor's `create_mm_token_type_ids`: GLM's video frames are image tokens)."""
        import torch

        ids = prompt.input_ids
        cfg = self.model.config
        inside = torch.cumsum(ids == cfg.video_start_token_id, -1) > torch.cumsum(
            ids == cfg.video_end_token_id, -1
        )
        image = ids == cfg.image_token_id
        return (image & inside).int() * 2 + (image & ~inside).int()

    def embed(self, prompt: Prompt, video: VideoTokens) -> torch.Tensor:
        return embed_at_slots(self.decoder.embed_tokens, prompt, video, self.device)  # [1, L, D]


class Glm46VAdapter(Glm4vAdapter):
    family = "glm46v"
    model_types = ("glm46v",)

    @classmethod
    def model_class(cls) -> type[Any]:
        from transformers import Glm46VForConditionalGeneration

        return Glm46VForConditionalGeneration

    @staticmethod
    def format_time(seconds: float) -> str:
        return f"{seconds:.1f} seconds"  # GLM-4.6V: tenths of a second
