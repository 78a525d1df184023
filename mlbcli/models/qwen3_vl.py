"""Qwen3-VL (`Qwen3VLForConditionalGeneration`) and Qwen3-VL-MoE (`Qwen3VLMoeForConditionalGeneration`).

What differs from Qwen2.5-VL, as transformers 5.23 runs it (`models/qwen3_vl/`), and how we reproduce it
without the HF video processor (it needs torchvision):

- Preprocessing (`Qwen3VLVideoProcessor`). Patch 16, temporal patch 2, merge 2: one LLM token per 32x32
  pixels of a temporal patch. Every frame is resized (bicubic + antialias) to `smart_resize`: multiples
  of 32, aspect ratio kept, and -- unlike Qwen2-VL -- the pixel bounds apply to the whole VIDEO volume
  T' x H' x W' (T' = frames rounded to a multiple of 2), not to one frame: `size.shortest_edge` /
  `size.longest_edge` of the checkpoint's `video_preprocessor_config.json` (4096 and 25165824 in every
  Qwen/Qwen3-VL-*-Instruct repo: at 32 frames a frame gets up to 768 tokens per temporal patch, at 64
  frames half of that). Those published values are also the fallback when a checkpoint ships only the
  image processor config (whose bounds are per image). `min_pixels=` / `max_pixels=` (the CLI's
  `--min-pixels` / `--max-pixels`) are PER-FRAME bounds, as for Qwen2-VL, turned into volume bounds by
  multiplying by the frame count (the rule of the processor's `cap_pixels_per_frame`). The processor's
  per-frame cap itself is off by default in transformers 5.23, so it is off here too. Normalisation:
  the checkpoint's mean/std (0.5, 0.5, 0.5 by default). An odd frame count repeats the last frame.
- Timestamps in the prompt (`Qwen3VLProcessor`). Time is not in the temporal rotary axis any more: the
  video placeholder `<|vision_start|><|video_pad|><|vision_end|>` rendered by the chat template is
  replaced by, per temporal patch, `<{t:.1f} seconds><|vision_start|>` + N `<|video_pad|>` +
  `<|vision_end|>`, where t is the mean time of the first and last frame of the patch (the processor's
  `_calculate_timestamps`, which pads an odd count with the last frame). t comes from the REAL sampled
  timestamps (`VideoTokens.timestamps_s`, set by the pipeline); without them, frames are taken to be
  sampled at the checkpoint's `fps` (2 by default), which is what its frame sampler would have done.
  The whole wrapped placeholder is replaced, as the reference implementation (qwen-vl-utils,
  transformers 4.57, vLLM) does and as the model was trained; the generic replacement of transformers
  5.23's processor swaps only `<|video_pad|>` and so leaves an extra `<|vision_start|>` /
  `<|vision_end|>` around the block. A template that renders a bare `<|video_pad|>` works too.
  The visual tokens are therefore NOT contiguous: `Qwen3Prompt.slots` lists them.
- Positions (M-RoPE, interleaved sections). `position_ids()` is the model's own `get_rope_index`
  ([3, 1, L]): each temporal patch is its own t=1 grid after its timestamp text. Pruned tokens keep their
  3-D positions (the engine slices, never renumbers); decoding continues at max(positions) + 1 + step
  on all axes (`rope_deltas`), as for Qwen2-VL.
- DeepStack. The vision tower also returns, for the first few LLM layers l = 0, 1, 2, a feature per
  visual token that the decoder ADDS to the output of layer l at the visual positions. They are
  `VideoTokens.layer_features` ([T, N, D] per layer) and reach the engine as
  `ModelInputs.visual_residuals`, indexed by visual id: a token pruned before the LLM takes its
  features with it, one pruned at layer K receives none after K, a kept one receives exactly its own,
  and tokens a method appends receive none.

Mapping to `VideoTokens`: as Qwen2-VL, one row per temporal patch (2 sampled frames), grid (h/2, w/2), so
per-"frame" statistics (`kept_per_frame`, frame budgets) are per temporal patch.

The MoE variant shares everything but the LLM's MLP (top-k experts); `mlb flops` counts the active
experts' width (`flops.LLMDims.from_config`).
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any, ClassVar

from mlbcli.models.base import Prompt, VideoTokens
from mlbcli.models.interleaved import InterleavedPrompt, tokenize_interleaved
from mlbcli.models.qwen2_vl import QwenVideoAdapter, cap_note

if TYPE_CHECKING:
    import torch

    from mlbcli.models.inputs import ModelInputs

log = logging.getLogger(__name__)

# `size` of the video_preprocessor_config.json of the Qwen/Qwen3-VL-*-Instruct repos: bounds on the pixels
# of the whole video (T' x H' x W'), T' = frames rounded to a multiple of the temporal patch.
VIDEO_MIN_VOLUME = 4096
VIDEO_MAX_VOLUME = 25165824  # = 24576 patches of 32x32: 768 tokens per temporal patch at 32 frames
DEFAULT_FPS = 2.0  # the checkpoints' frame-sampling rate (`fps` of the video preprocessor config)
IMAGE_STANDARD_MEAN = [0.5, 0.5, 0.5]
IMAGE_STANDARD_STD = [0.5, 0.5, 0.5]


def smart_resize_video(
    num_frames: int,
    height: int,
    width: int,
    *,
    temporal_factor: int,
    factor: int,
    min_pixels: int,
    max_pixels: int,
) -> tuple[int, int]:
    """`Qwen3VLVideoProcessor`'s `smart_resize`: multiples of `factor`, T' x H' x W' within the bounds."""
    if height < factor or width < factor:
        scale = max(factor / height, factor / width)
        height, width = int(height * scale), int(width * scale)
    if max(height, width) / min(height, width) > 200:
        raise ValueError(
            f"absolute aspect ratio must be smaller than 200, got {max(height, width) / min(height, width)}"
        )
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


#: A prompt whose visual tokens are not contiguous (timestamps between temporal patches): `slots` lists
#: them (`models.interleaved`).
Qwen3Prompt = InterleavedPrompt


class Qwen3VLAdapter(QwenVideoAdapter):
    family = "qwen3_vl"
    model_types = ("qwen3_vl",)
    pixel_mean = IMAGE_STANDARD_MEAN
    pixel_std = IMAGE_STANDARD_STD
    prompt_profile = "qwen3_vl"  # lmms-eval's Qwen3-VL profile (Video-MME: its own prompt layout)

    # Per-FRAME pixel bounds overriding the checkpoint's volume bounds (`--min-pixels` / `--max-pixels`);
    # "reference" frame times = index / container fps, as the processor's metadata gives them, or "exact":
    # the container's presentation times (right for variable frame rates).
    option_defaults: ClassVar[dict[str, Any]] = {
        "min_pixels": None,
        "max_pixels": None,
        "temporal_spacing": "reference",
    }
    min_pixels: int | None
    max_pixels: int | None
    temporal_spacing: str

    @classmethod
    def model_class(cls) -> type[Any]:
        from transformers import Qwen3VLForConditionalGeneration

        return Qwen3VLForConditionalGeneration

    # -- token counts from the config alone (`mlb flops`) -------------------------------------------------
    @classmethod
    def visual_tokens(cls, config: Any, num_frames: int) -> int:
        """Upper bound for frames at least as large as the budget: the published volume bound spread over
        the frames, `ceil(F / 2)` temporal patches of at most `VIDEO_MAX_VOLUME / (F * 32^2)` tokens."""
        vision = config.vision_config
        factor = vision.patch_size * vision.spatial_merge_size
        patches = -(-num_frames // vision.temporal_patch_size)
        return patches * max(1, VIDEO_MAX_VOLUME // (num_frames * factor * factor))

    @classmethod
    def tokens_per_frame(cls, config: Any) -> int:
        """Per sampled frame at the default frame count: 768 tokens per temporal patch / 2 = 384."""
        return cls.visual_tokens(config, cls.default_frames) // cls.default_frames

    # -- vision side -------------------------------------------------------------------------------------
    def volume_bounds(self, num_frames: int) -> tuple[int, int]:
        """(min, max) pixels of the whole video: per-frame overrides x frames > video config > published."""
        cfg = self.preprocess_config
        size = cfg.get("size") or {}
        image_only = "image_processor_type" in cfg and "video_processor_type" not in cfg
        lo, hi = VIDEO_MIN_VOLUME, VIDEO_MAX_VOLUME
        if not image_only:
            lo = int(size.get("shortest_edge") or lo)
            hi = int(size.get("longest_edge") or hi)
        if self.min_pixels is not None:
            lo = int(self.min_pixels) * num_frames
        if self.max_pixels is not None:
            hi = int(self.max_pixels) * num_frames
        if lo > hi:
            raise ValueError(f"min_pixels {lo} > max_pixels {hi} (pixels of the whole video)")
        return lo, hi

    def capped_volume(self, num_frames: int, lo: int, hi: int) -> int:
        """The video's max pixels under qwen-vl-utils' per-frame cap (Hugging Face: `cap_pixels_per_frame=
        True`): each frame at most `max_video_tokens` (768, or the checkpoint's video config) tokens' worth
        of pixels or an even share of the volume bound, at least 1.05 x the min bound (the checkpoint's,
        as the processor applies it, or `--min-pixels` per frame). `--max-pixels` is never exceeded."""
        factor = self._vision.patch_size * self._vision.spatial_merge_size
        frame_cap = int(self.preprocess_config.get("max_video_tokens") or 768) * factor * factor
        floor = int((self.min_pixels if self.min_pixels is not None else lo) * 1.05)
        capped = max(min(frame_cap, hi // num_frames), floor) * num_frames
        return min(capped, hi) if self.max_pixels is not None else capped

    def input_note(self, num_frames: int, height: int, width: int) -> str | None:
        """Says when the per-frame cap, not the volume bound, set the frame size."""
        return cap_note(
            self.resized_size(num_frames, height, width),
            self.resized_size(num_frames, height, width, capped=False),
            "per-frame pixel cap",
        )

    def resized_size(
        self, num_frames: int, height: int, width: int, *, capped: bool = True
    ) -> tuple[int, int]:
        """(H', W') of every frame: smart_resize within the volume bounds, under the per-frame cap unless
        `capped` is False (what `input_note` compares with)."""
        vision = self._vision
        # The processor refuses fewer frames than one temporal patch; we pad them to one, so size them so.
        frames = max(num_frames, vision.temporal_patch_size)
        lo, hi = self.volume_bounds(frames)
        if capped:
            hi = self.capped_volume(frames, lo, hi)
        return smart_resize_video(
            frames,
            height,
            width,
            temporal_factor=vision.temporal_patch_size,
            factor=vision.patch_size * vision.spatial_merge_size,
            min_pixels=lo,
            max_pixels=hi,
        )

    def frame_size(self, num_frames: int, height: int, width: int) -> tuple[int, int]:
        return self.resized_size(num_frames, height, width)

    def layer_features(
        self, tower_output: Any, index: int, shape: tuple[int, int]
    ) -> dict[int, torch.Tensor]:
        """DeepStack: per LLM layer l, the [t, n, D] features added at the video's tokens (`deepstack_features`
        holds one [t*n, D] per video for each layer)."""
        deepstack = tower_output.deepstack_features or []
        return {layer: per_video[index].reshape(*shape, -1) for layer, per_video in enumerate(deepstack)}

    def patch_timestamps(self, video: VideoTokens) -> list[float]:
        """Seconds of each temporal patch: mean of its first and last frame (`_calculate_timestamps`)."""
        tp = self._vision.temporal_patch_size
        stamps = [float(t) for t in video.timestamps_s]
        native = video.native_fps
        if self.temporal_spacing == "reference" and video.frame_indices and native and native > 0:
            stamps = [index / native for index in video.frame_indices]
        if not stamps or -(-len(stamps) // tp) != video.num_frames or any(t != t for t in stamps):
            fps = float(self.preprocess_config.get("fps") or DEFAULT_FPS)
            if stamps:
                log.debug(
                    "%d timestamps for %d temporal patches: using %s fps", len(stamps), video.num_frames, fps
                )
            stamps = [i / fps for i in range(video.num_frames * tp)]
        stamps += [stamps[-1]] * (-len(stamps) % tp)
        return [(stamps[i] + stamps[i + tp - 1]) / 2 for i in range(0, len(stamps), tp)]

    # -- text side ---------------------------------------------------------------------------------------
    def _special(self, attribute: str, config_id: str) -> str:
        token = getattr(self.tokenizer, attribute, None)
        return token or self.tokenizer.convert_ids_to_tokens(getattr(self.model.config, config_id))

    def build_prompt(self, question_text: str, video: VideoTokens) -> Qwen3Prompt:
        tok = self.tokenizer
        start_tok = self._special("vision_bos_token", "vision_start_token_id")
        end_tok = self._special("vision_eos_token", "vision_end_token_id")
        pad_tok = self._special("video_token", "video_token_id")
        pad_id = self.model.config.video_token_id
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question_text}]}]
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        if text.count(pad_tok) != 1:
            raise ValueError(f"chat template rendered {text.count(pad_tok)} video placeholders, expected 1")
        wrapped = start_tok + pad_tok + end_tok
        placeholder = wrapped if wrapped in text else pad_tok
        at = text.index(placeholder)
        block = "".join(
            f"<{t:.1f} seconds>{start_tok}{pad_tok}{end_tok}" for t in self.patch_timestamps(video)
        )
        expanded = text[:at] + block + text[at + len(placeholder) :]
        # Tokenised with ONE pad per patch (special tokens are atomic, so the text around them tokenises
        # as with N), then each pad becomes the patch's N placeholders.
        return tokenize_interleaved(
            tok,
            expanded,
            placeholder_id=pad_id,
            tokens_per_frame=video.tokens_per_frame,
            num_visual=video.num_visual,
            question_text=question_text,
            question_after=at + len(block),
        )

    def embed(self, prompt: Prompt, video: VideoTokens) -> torch.Tensor:
        """Token embeddings with the frame tokens written at their slots, as the stock `masked_scatter`."""
        embeds = self.decoder.embed_tokens(prompt.input_ids.to(self.device))  # [1, L, D]
        visual = video.features.reshape(-1, video.features.shape[-1]).to(
            embeds.device, embeds.dtype
        )  # [T*N, D]
        embeds[0, prompt.visual_slots().to(self.device)] = visual
        return embeds

    def model_inputs(self, prompt: Prompt, video: VideoTokens) -> ModelInputs:
        """The base inputs plus DeepStack: per LLM layer, [T*N, D] residuals indexed by visual id."""
        inputs = super().model_inputs(prompt, video)
        if not video.layer_features and self._vision.deepstack_visual_indexes:
            from mlbcli.errors import MlbError

            raise MlbError(
                f"{self.model_id}: these Qwen3-VL tokens lack their DeepStack features (saved by an older "
                "mlb?); encode the video again"
            )
        inputs.visual_residuals = {
            layer: features.reshape(-1, features.shape[-1]).to(self.device)
            for layer, features in video.layer_features.items()
        }
        return inputs


class Qwen3VLMoeAdapter(Qwen3VLAdapter):
    family = "qwen3_vl_moe"
    model_types = ("qwen3_vl_moe",)

    @classmethod
    def model_class(cls) -> type[Any]:
        from transformers import Qwen3VLMoeForConditionalGeneration

        return Qwen3VLMoeForConditionalGeneration
