"""Gemma 4 (`Gemma4ForConditionalGeneration`, e.g. google/gemma-4-e2b-it), as transformers 5.23 runs it.

What differs from the other families, and how the engine meets it (all through `ModelAdapter` hooks):

- Preprocessing (`Gemma4VideoProcessor`). Every frame is resized (bicubic + antialias, uint8) to the
  largest size that keeps its aspect ratio, has sides multiple of `pooling_kernel_size * patch_size`
  (48 px) and at most `max_soft_tokens * pooling_kernel_size**2` patches of `patch_size` (70 x 9 of 16 px
  by default); pixels are rescaled to [0, 1] (mean 0, std 1); each frame becomes [P, patch*patch*3]
  patches (row-major, channels last) padded to the max patch count, with (x, y) patch positions (-1 at
  padding). The tower pools 3x3 patches into one token: N = (h/3) x (w/3) tokens per frame, row-major.
- Frames. The processor samples 32 frames by default (`num_frames` of the video preprocessor config);
  that is `default_frames`, and `input_note` says so when `--frames` asks for another count.
- Prompt (`Gemma4Processor`). The chat template renders `<|video|>` once (and emits BOS itself); the
  processor replaces it with, per frame, `mm:ss <|image>` + N `<|video|>` + `<image|>`, joined by spaces,
  where mm:ss is the frame's time (index / native fps; 24 fps when unknown, as the processor). 1-D
  positions 0..L-1. The video tokens are not contiguous: `Gemma4Prompt.slots` lists them.
- Decoder. Sliding-window layers (`layer_types`, window `sliding_window`) and global layers; the engine
  masks the window over the sequence as it is (kept tokens count: stock attention on the shorter
  sequence). The last `num_kv_shared_layers` layers reuse the KV of the last earlier layer of their type;
  the engine gives them that layer's cache object (`engine.cache.make_cache`), and runs a pruning step
  planned between a cache's writer and a reader before the writer (`engine.cache.before_shared_kv`: the
  pruned token would stay in the cache its reader sees). `mlb flops` charges no K/V to those layers
  (`kv_sources`) and O(L * window) to sliding ones (`layer_kinds` "sliding").
- Decoding embeds a generated `<|image|>`/`<|video|>`/`<|audio|>` as PAD, as the stock forward (`embed_ids`).
  Per-layer embeddings (PLE): every token carries [num_layers, ple] inputs computed from its id (the pad
  id for visual tokens) and its input embedding; they travel with their tokens (`token_inputs`).
  Rotary embeddings differ per layer type; logits are soft-capped (`final_logit_softcapping`).
- Attention methods read a global layer (`probe_layer`): the nearest global layer at or before K-1 that
  computes its own keys, else K-1 itself, read within its window; the row's method diagnostics record
  `probe_layer` when it is not K-1.
- Not supported: checkpoints with bidirectional attention over vision tokens
  (`use_bidirectional_attention`): the engine's masks are causal (refused at load).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from mlbcli.models.base import ModelAdapter, Prompt, VideoTokens
from mlbcli.models.interleaved import InterleavedPrompt, tokenize_interleaved

if TYPE_CHECKING:
    import numpy as np
    import torch

    from mlbcli.models.inputs import ModelInputs


PROCESSOR_FRAMES = 32  # `num_frames` of Gemma4VideoProcessor: what it samples by default
DEFAULT_SOFT_TOKENS = 70  # `max_soft_tokens` of Gemma4VideoProcessor (per video frame)
UNKNOWN_FPS = 24.0  # the processor's frame rate when the video's is unknown


def aspect_preserving_size(
    height: int, width: int, patch_size: int, max_patches: int, pooling: int
) -> tuple[int, int]:
    """`get_aspect_ratio_preserving_size` of transformers' Gemma 4 processors: (H', W')."""
    target_px = max_patches * patch_size**2
    factor = math.sqrt(target_px / (height * width))
    side = pooling * patch_size
    new_h = int(math.floor(factor * height / side)) * side
    new_w = int(math.floor(factor * width / side)) * side
    if new_h == 0 and new_w == 0:
        raise ValueError(f"a {height}x{width} frame cannot be resized to multiples of {side} px")
    longest = (max_patches // pooling**2) * side
    if new_h == 0:
        new_h, new_w = side, min(int(math.floor(width / height)) * side, longest)
    elif new_w == 0:
        new_h, new_w = min(int(math.floor(height / width)) * side, longest), side
    return new_h, new_w


def _config(config: Any, name: str) -> Any:
    """`name` of a transformers config or of its dict (`mlb flops` reads both)."""
    return config.get(name) if isinstance(config, dict) else getattr(config, name)


#: Video tokens between per-frame timestamps: `slots` lists them (`models.interleaved`).
Gemma4Prompt = InterleavedPrompt


class _SoftcappedHead:
    """The LM head followed by Gemma's logit soft-capping, tanh(x / c) * c (as the stock forward)."""

    def __init__(self, head: Any, cap: float | None):
        self.head, self.cap = head, cap

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        import torch

        logits = self.head(hidden)
        return logits if self.cap is None else torch.tanh(logits / self.cap) * self.cap


class Gemma4Adapter(ModelAdapter):
    family = "gemma4"
    model_types = ("gemma4",)
    default_frames = PROCESSOR_FRAMES

    def __init__(
        self, model: Any, tokenizer: Any, model_id: str, preprocess_config: dict[str, Any], **options: Any
    ):
        super().__init__(model, tokenizer, model_id, preprocess_config, **options)
        text = model.config.get_text_config()
        if getattr(text, "use_bidirectional_attention", None):
            from mlbcli.errors import ModelLoadError

            raise ModelLoadError(
                f"{model_id}: Gemma 4 checkpoints with bidirectional attention "
                f"({text.use_bidirectional_attention!r}) are not supported yet: mlb's masks are causal"
            )

    @classmethod
    def model_class(cls) -> type[Any]:
        from transformers import Gemma4ForConditionalGeneration

        return Gemma4ForConditionalGeneration

    @classmethod
    def tokens_per_frame(cls, config: Any) -> int:
        """At most `max_soft_tokens` (70 by default) tokens per frame; fewer for odd aspect ratios."""
        return DEFAULT_SOFT_TOKENS

    # -- vision side -------------------------------------------------------------------------------------
    @property
    def _vision(self) -> Any:
        return self.model.config.vision_config

    @property
    def soft_tokens(self) -> int:
        return int(self.preprocess_config.get("max_soft_tokens") or DEFAULT_SOFT_TOKENS)

    def resized_size(self, num_frames: int, height: int, width: int) -> tuple[int, int]:
        vision = self._vision
        pooling = int(self.preprocess_config.get("pooling_kernel_size") or vision.pooling_kernel_size)
        patch = int(self.preprocess_config.get("patch_size") or vision.patch_size)
        return aspect_preserving_size(height, width, patch, self.soft_tokens * pooling**2, pooling)

    def input_note(self, num_frames: int, height: int, width: int) -> str | None:
        expected = int(self.preprocess_config.get("num_frames") or PROCESSOR_FRAMES)
        if num_frames == expected:
            return None
        return f"Gemma 4's processor samples {expected} frames; --frames gave {num_frames}"

    def preprocess(self, frames: np.ndarray) -> dict[str, torch.Tensor]:
        """[T, H, W, 3] uint8 -> patches [T, P_max, p*p*3] and their (x, y) positions [T, P_max, 2]."""
        import torch

        vision = self._vision
        patch = int(self.preprocess_config.get("patch_size") or vision.patch_size)
        pooling = int(self.preprocess_config.get("pooling_kernel_size") or vision.pooling_kernel_size)
        size = self.resized_size(frames.shape[0], frames.shape[1], frames.shape[2])
        x = self.normalized_frames(frames, size, mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0])  # [T, 3, h, w]
        t, c, h, w = x.shape
        ph, pw = h // patch, w // patch
        patches = x.reshape(t, c, ph, patch, pw, patch).permute(0, 2, 4, 3, 5, 1).reshape(t, ph * pw, -1)
        ys, xs = torch.meshgrid(torch.arange(ph), torch.arange(pw), indexing="ij")
        positions = torch.stack([xs, ys], dim=-1).reshape(1, ph * pw, 2).repeat(t, 1, 1).to(x.device)
        max_patches = self.soft_tokens * pooling**2
        pad = max_patches - ph * pw
        patches = torch.nn.functional.pad(patches, (0, 0, 0, pad))
        positions = torch.nn.functional.pad(positions, (0, 0, 0, pad), value=-1)
        return {
            "pixel_values_videos": patches.to(self.dtype),
            "video_position_ids": positions,
            "grid": torch.tensor([ph // pooling, pw // pooling]),
        }

    def encode(self, pixel_inputs: dict[str, torch.Tensor]) -> VideoTokens:
        return self.encode_batch([pixel_inputs])[0]

    def encode_batch(self, pixel_inputs: Sequence[dict[str, torch.Tensor]]) -> list[VideoTokens]:
        """Frames of all videos through the tower in one call (frames never attend to each other)."""
        import torch

        counts = [int(inputs["pixel_values_videos"].shape[0]) for inputs in pixel_inputs]
        out = self.model.model.get_video_features(
            pixel_values_videos=torch.cat([inputs["pixel_values_videos"] for inputs in pixel_inputs]),
            video_position_ids=torch.cat([inputs["video_position_ids"] for inputs in pixel_inputs]),
            num_frames_per_video=torch.tensor(counts),
            return_dict=True,
        )
        tower = out.last_hidden_state  # [sum T * N, Dv] pooled tower tokens (padding stripped)
        videos, start = [], 0
        for inputs, count, pooled in zip(pixel_inputs, counts, out.pooler_output, strict=True):
            h, w = (int(v) for v in inputs["grid"])
            n = h * w
            frame_tower = tower[start * n : (start + count) * n].reshape(count, n, -1)
            videos.append(
                VideoTokens(
                    features=pooled.reshape(count, n, -1),
                    grid=(h, w),
                    extra=None,
                    frame_features=frame_tower.float().mean(dim=1),
                )
            )
            start += count
        return videos

    # -- text side ---------------------------------------------------------------------------------------
    def _token(self, attribute: str, fallback: str) -> str:
        return getattr(self.tokenizer, attribute, None) or fallback

    def frame_times(self, video: VideoTokens) -> list[float]:
        """Seconds of each frame as the processor's metadata gives them: index / native fps."""
        if video.frame_indices and len(video.frame_indices) == video.num_frames:
            fps = video.native_fps if video.native_fps and video.native_fps > 0 else UNKNOWN_FPS
            return [index / fps for index in video.frame_indices]
        if len(video.timestamps_s) == video.num_frames:
            return [float(t) for t in video.timestamps_s]
        return [i / UNKNOWN_FPS for i in range(video.num_frames)]

    def build_prompt(self, question_text: str, video: VideoTokens) -> Gemma4Prompt:
        tok = self.tokenizer
        video_tok = "<|video|>"
        video_id = int(self.model.config.video_token_id)
        boi, eoi = self._token("boi_token", "<|image>"), self._token("eoi_token", "<image|>")
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question_text}]}]
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        if text.count(video_tok) != 1:
            raise ValueError(f"chat template rendered {text.count(video_tok)} video placeholders, expected 1")
        at = text.index(video_tok)
        stamps = [f"{int(t // 60):02d}:{int(t % 60):02d}" for t in self.frame_times(video)]
        block = " ".join(f"{stamp} {boi}{video_tok}{eoi}" for stamp in stamps)
        expanded = text[:at] + block + text[at + len(video_tok) :]
        # One placeholder per frame while tokenising (special tokens are atomic), then N of them.
        return tokenize_interleaved(
            tok,
            expanded,
            placeholder_id=video_id,
            tokens_per_frame=video.tokens_per_frame,
            num_visual=video.num_visual,
            question_text=question_text,
            question_after=at + len(block),
        )

    def _llm_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Ids with every multimodal placeholder replaced by PAD, as the stock forward embeds them."""
        import torch

        config = self.model.config
        special = torch.tensor(
            [config.image_token_id, config.video_token_id, config.audio_token_id], device=input_ids.device
        )
        return torch.where(torch.isin(input_ids, special), self.text_config.pad_token_id, input_ids)

    def embed_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """A generated `<|image|>` / `<|video|>` / `<|audio|>` is embedded as PAD, as the stock forward does
        (it replaces every placeholder before embedding; its per-layer inputs then see PAD too)."""
        embeds: torch.Tensor = self.decoder.embed_tokens(self._llm_ids(input_ids))
        return embeds

    def embed(self, prompt: Prompt, video: VideoTokens) -> torch.Tensor:
        embeds = self.decoder.embed_tokens(self._llm_ids(prompt.input_ids.to(self.device)))  # [1, L, D]
        visual = video.features.reshape(-1, video.features.shape[-1]).to(embeds.device, embeds.dtype)
        embeds[0, prompt.visual_slots().to(self.device)] = visual
        return embeds

    def position_ids(self, prompt: Prompt, video: VideoTokens) -> torch.Tensor:
        import torch

        return torch.arange(prompt.length, device=self.device)[None]  # [1, L]

    def model_inputs(self, prompt: Prompt, video: VideoTokens) -> ModelInputs:
        inputs = super().model_inputs(prompt, video)
        ids = self._llm_ids(prompt.input_ids.to(self.device))
        inputs.token_inputs = self.token_inputs(ids, inputs.embeds)
        return inputs

    # -- the decoder ---------------------------------------------------------------------------------------
    def token_inputs(self, input_ids: torch.Tensor | None, embeds: torch.Tensor) -> torch.Tensor | None:
        """Per-layer embeddings [B, q, layers, ple] of tokens `input_ids` (None: visual, PAD's identity)."""
        import torch

        decoder = self.decoder
        if not self.text_config.hidden_size_per_layer_input:
            return None
        if input_ids is None:
            input_ids = torch.full(embeds.shape[:2], self.text_config.pad_token_id, device=embeds.device)
        identity = decoder.get_per_layer_inputs(self._llm_ids(input_ids), None)
        return decoder.project_per_layer_inputs(embeds, identity)

    @functools.cached_property
    def _types(self) -> list[str]:
        return list(self.text_config.layer_types)

    def rotary(self, hidden: torch.Tensor, position_ids: torch.Tensor) -> Any:
        """{layer type: (cos, sin)}: sliding and global layers rotate with their own frequencies."""
        return {
            kind: self.decoder.rotary_emb(hidden, position_ids, kind) for kind in sorted(set(self._types))
        }

    @property
    def apply_rotary(self) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
        """Gemma 4's `apply_rotary_pos_emb(x, cos, sin)` rotates one tensor; the probe rotates pairs."""
        import sys

        rotate = sys.modules[type(self.decoder).__module__].apply_rotary_pos_emb
        return lambda q, k, cos, sin: (rotate(q, cos, sin), rotate(k, cos, sin))

    @functools.cached_property
    def lm_head(self) -> Any:
        return _SoftcappedHead(self.model.lm_head, self.text_config.final_logit_softcapping)

    def layer_kwargs(self, index: int, cos_sin: Any, cache: Any, token_inputs: Any) -> dict[str, Any]:
        kind = self._types[index]
        source = self.kv_source(index)
        # A "reuse" layer reads the cache of its source (the same object: engine.cache.make_cache); a
        # "store" layer writes its KV into the dict, which nothing reads afterwards.
        shared = {kind: (cache.layers[source].keys, cache.layers[source].values)} if source != index else {}
        return {
            "position_embeddings": cos_sin[kind],
            "per_layer_input": None if token_inputs is None else token_inputs[:, :, index],
            "shared_kv_states": shared,
        }

    def attention_window(self, index: int) -> int | None:
        return int(self.text_config.sliding_window) if self._types[index] == "sliding_attention" else None

    @classmethod
    def layer_kinds(cls, text_config: Any) -> tuple[str, ...]:
        """ "sliding" for the sliding-window layers of `layer_types` (`mlb flops` charges them O(L * window)),
        "full" for the global ones; the engine treats both as attention layers."""
        return tuple(
            "sliding" if kind == "sliding_attention" else "full"
            for kind in _config(text_config, "layer_types")
        )

    @classmethod
    def kv_sources(cls, text_config: Any) -> tuple[int, ...]:
        """The last `num_kv_shared_layers` layers read the KV of the last earlier layer of their type
        (transformers' `kv_sharing_modes`: "reuse" reads the "store" layer of its type)."""
        types = list(_config(text_config, "layer_types"))
        first_shared = len(types) - int(_config(text_config, "num_kv_shared_layers") or 0)
        return tuple(
            i if i < first_shared else max(j for j in range(first_shared) if types[j] == types[i])
            for i in range(len(types))
        )

    @functools.cached_property
    def _sources(self) -> tuple[int, ...]:
        return self.kv_sources(self.text_config)

    def kv_source(self, index: int) -> int:
        return self._sources[index]

    def probe_layer(self, layer: int) -> int:
        """The nearest global layer at or before `layer` that computes its own keys, else `layer`."""
        for j in range(layer, -1, -1):
            if self._types[j] == "full_attention" and self.kv_source(j) == j:
                return j
        return layer
