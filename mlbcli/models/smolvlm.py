"""SmolVLM2 (`SmolVLMForConditionalGeneration`, e.g. HuggingFaceTB/SmolVLM2-2.2B-Instruct, -500M-Video-
Instruct, -256M-Video-Instruct): SigLIP + pixel shuffle + SmolLM2; a video is its frames as images.

What the official processor (`SmolVLMProcessor` + `SmolVLMVideoProcessor`) does, and so what we do:

- Frames. Each frame is resized twice, both times with LANCZOS (antialiased, the checkpoints' `resample`
  1) on uint8: first so that its LONG edge is `size.longest_edge` (the short edge `int(long / aspect)`,
  rounded up to even), then squashed to `max_image_size.longest_edge` square (384 for 2.2B, 512 for the
  small ones); rescaled and normalised (mean = std = 0.5). Videos are never split into tiles.
- Features. The vision tower runs on each frame; the connector's pixel shuffle (`scale_factor` s) folds
  s x s patches into one token and projects it: (g / s)^2 tokens per frame on a raster grid (27 / 3 ->
  81 for 2.2B, 32 / 4 -> 64 for the small ones).
- Prompt. The processor renders the user turn with its own video template (`<|im_start|>User: <video>
  question<end_of_utterance>\\nAssistant:`) and replaces `<video>` with an intro ("You are provided the
  following series of {T in words} frames from a {H:MM:SS} [H:MM:SS] video.\\n"), then per frame
  "\\nFrame from {mm:ss}:<fake_token_around_image><global-img><image> x N<fake_token_around_image>", then
  "\\n\\n". Frame times are the sampled frames' indices over the video's frame rate (the processor's
  metadata), the duration the whole video's; without them, 24 fps as the processor assumes.
- Positions are 0..L-1 (Llama); the frames' text stays between them (never pruned), and the kept tokens
  keep their positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from mlbcli.models.base import ModelAdapter, Prompt, VideoTokens, split_videos
from mlbcli.models.interleaved import embed_at_slots, expand_video_placeholder

if TYPE_CHECKING:
    import numpy as np
    import torch

#: The processor's template for a conversation with a video (`processing_smolvlm.DEFAULT_CHAT_TEMPLATE`:
#: it replaces the checkpoint's own template, which renders no video item).
VIDEO_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% elif line['type'] == 'video' %}{{ '<video>' }}"
    "{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
VIDEO_INTRO = "You are provided the following series of {count} frames from a {duration} [H:MM:SS] video.\n"
FRAME_MESSAGE = "\nFrame from {timestamp}:"
MEDIA_OUTTRO = "\n\n"
DEFAULT_FPS = 24.0  # the processor's assumption when a video's frame rate is unknown
LANCZOS = 1  # PIL's code, the checkpoints' `resample`
_PIL_MODES = {1: "lanczos", 2: "bilinear", 3: "bicubic"}

_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def number_words(n: int) -> str:
    """`num2words(n)` (English) for 0 <= n < 1,000,000: 7 -> "seven", 64 -> "sixty-four", 101 -> "one
    hundred and one", 1203 -> "one thousand, two hundred and three" (the processor's frame count)."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else "-" + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " and " + number_words(rest))
    if n < 1_000_000:
        rest = n % 1000
        head = number_words(n // 1000) + " thousand"
        if rest == 0:
            return head
        return head + (", " if rest >= 100 else " and ") + number_words(rest)
    return str(n)


def longest_edge_size(height: int, width: int, longest: int) -> tuple[int, int]:
    """(h, w) with the long edge `longest`, the other `int(long / aspect)` made even (the processor's
    `get_resize_output_image_size`, capped at 4096)."""
    longest = min(4096, longest)
    aspect = width / height
    if width >= height:
        width, height = longest, int(longest / aspect)
        height += height % 2
    else:
        height, width = longest, int(longest * aspect)
        width += width % 2
    return max(height, 1), max(width, 1)


def resize_uint8(frames: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """[T, 3, H, W] uint8 -> [T, 3, h, w] uint8 with `mode` (lanczos/bicubic/bilinear) + antialias, as
    torchvision resizes uint8 frames: torch's native uint8 kernel on the CPU; floats clamped and rounded
    on a GPU (`mlbcli.models.base.resize_frames` for bicubic)."""
    import torch
    import torch.nn.functional as F

    if tuple(frames.shape[-2:]) == tuple(size):
        return frames
    if frames.device.type == "cpu":
        return F.interpolate(frames, size=size, mode=mode, antialias=True, align_corners=False)
    resized = F.interpolate(frames.float(), size=size, mode=mode, antialias=True, align_corners=False)
    return resized.clamp_(0, 255).round_().to(torch.uint8)


class SmolVLMAdapter(ModelAdapter):
    family = "smolvlm"
    model_types = ("smolvlm",)
    default_frames = 64  # the processor's `video_sampling.max_frames` (it samples 1 fps up to 64)

    @classmethod
    def model_class(cls) -> type[Any]:
        from transformers import SmolVLMForConditionalGeneration

        return SmolVLMForConditionalGeneration

    @classmethod
    def tokens_per_frame(cls, config: Any) -> int:
        side = config.vision_config.image_size // config.vision_config.patch_size
        return (side // config.scale_factor) ** 2

    # -- vision side -------------------------------------------------------------------------------------
    def frame_sizes(self, height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """The two resizes of a frame: to the long edge, then the square the tower takes."""
        cfg = self.preprocess_config
        square = int(
            (cfg.get("max_image_size") or {}).get("longest_edge")
            or self.model.config.vision_config.image_size
        )
        sampling = (cfg.get("video_sampling") or {}).get("video_size") or {}
        longest = int((cfg.get("size") or sampling).get("longest_edge") or square)
        return longest_edge_size(height, width, longest), (square, square)

    def preprocess(self, frames: np.ndarray) -> dict[str, torch.Tensor]:
        import torch

        cfg = self.preprocess_config
        mode = _PIL_MODES.get(int(cfg.get("resample", LANCZOS)), "lanczos")
        x = self.frames_tensor(frames).permute(0, 3, 1, 2)  # [T, 3, H, W] uint8
        first, square = self.frame_sizes(int(x.shape[-2]), int(x.shape[-1]))
        x = resize_uint8(resize_uint8(x, first, mode), square, mode)  # [T, 3, S, S]
        scale = 1.0 / float(cfg.get("rescale_factor", 1 / 255))
        mean = torch.tensor(cfg.get("image_mean", [0.5] * 3), device=x.device).view(1, 3, 1, 1) * scale
        std = torch.tensor(cfg.get("image_std", [0.5] * 3), device=x.device).view(1, 3, 1, 1) * scale
        pixel = (x.float() - mean) / std  # fused rescale + normalise, as the processor
        return {"pixel_values": pixel.unsqueeze(0).to(dtype=self.dtype)}  # [1, T, 3, S, S]

    def encode(self, pixel_inputs: dict[str, torch.Tensor]) -> VideoTokens:
        return self.encode_batch([pixel_inputs])[0]

    def encode_batch(self, pixel_inputs: Sequence[dict[str, torch.Tensor]]) -> list[VideoTokens]:
        """Frames of all videos through the stock `get_image_features` at once ([1, sum T, 3, S, S]): the
        tower and the pixel-shuffle connector work frame by frame."""
        import torch

        counts = [int(inputs["pixel_values"].shape[1]) for inputs in pixel_inputs]
        pixel = torch.cat([inputs["pixel_values"] for inputs in pixel_inputs], dim=1)
        out = self.model.model.get_image_features(pixel_values=pixel, return_dict=True)
        total = sum(counts)
        flat = torch.cat(list(out.pooler_output))  # [sum T * N, D]
        features = flat.reshape(total, -1, flat.shape[-1])  # [sum T, N, D], raster (g/s) x (g/s)
        frame_features = out.last_hidden_state.float().mean(dim=1)  # [sum T, Dv]
        return split_videos(features, frame_features, counts)

    # -- text side ---------------------------------------------------------------------------------------
    def _token(self, attribute: str, default: str) -> str:
        return str(getattr(self.tokenizer, attribute, None) or default)

    @staticmethod
    def frame_times(video: VideoTokens) -> tuple[list[float], float]:
        """(seconds of each frame, the video's duration) as the processor's metadata gives them: frame
        index / fps, and the whole video's frame count / fps (k sampled at `sampled_fps`: k / sampled_fps)."""
        count = video.num_frames
        fps = video.native_fps or None
        if video.frame_indices and fps:
            times = [index / fps for index in video.frame_indices[:count]]
        elif video.timestamps_s:
            times = list(video.timestamps_s[:count])
        else:
            times = [index / DEFAULT_FPS for index in range(count)]
        duration = times[-1]  # the processor's fallback without a duration
        if video.sampled_fps and fps:
            # k frames sampled of N at `fps`: sampled_fps = k / N x fps, so N = k x fps / sampled_fps (rounded:
            # 7 / 3.5 x 25 is 49.999...) and the duration N / fps, as HF's decoders give it
            sampled = len(video.frame_indices) or count
            duration = round(sampled * fps / video.sampled_fps) / fps
        return times, duration

    def video_text(self, video: VideoTokens) -> str:
        """What the processor puts in place of `<video>`, with ONE `<image>` per frame."""
        image = self._token("image_token", "<image>")
        fake = self._token("fake_image_token", "<fake_token_around_image>")
        global_image = self._token("global_image_token", "<global-img>")
        times, duration = self.frame_times(video)
        text = VIDEO_INTRO.format(
            count=number_words(video.num_frames), duration=str(timedelta(seconds=int(duration)))
        )
        for second in times:
            stamp = f"{int(second // 60):02d}:{int(second % 60):02d}"
            text += FRAME_MESSAGE.format(timestamp=stamp) + fake + global_image + image + fake
        return text + MEDIA_OUTTRO

    def build_prompt(self, question_text: str, video: VideoTokens) -> Prompt:
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question_text}]}]
        text = self.tokenizer.apply_chat_template(
            messages, chat_template=VIDEO_CHAT_TEMPLATE, add_generation_prompt=True, tokenize=False
        )
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

    # -- the decoder ---------------------------------------------------------------------------------------
    @property
    def decoder(self) -> Any:
        return self.model.model.text_model  # SmolVLM names its LLM `text_model`
