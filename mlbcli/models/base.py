"""The base class of model adapters: what Video-LLM families share, and the data types they speak.

The engine (`mlbcli.engine.batch`) only ever talks to an adapter (the `Adapter` protocol of
`models/contract.py` says exactly what it asks for): the decoder layers, the rotary embedding, the
prompt layout and the visual tokens. A new family (Qwen2.5-VL, LLaVA-NeXT...) is one new module that
subclasses `ModelAdapter` and is named in `models/registry.py` (built-ins) or by an `mlb.models` entry
point (plugins).
"""

from __future__ import annotations

import abc
import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from mlbcli.io.sampling import GENERIC, FrameRule
from mlbcli.models.traits import DecoderTraits

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from mlbcli.models.inputs import ModelInputs

#: CLIP's normalisation, the default of the checkpoints that name none (Qwen2-VL, LLaVA-NeXT).
OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


#: Version of how mlb prepares model inputs (resize, frame counts, timing), recorded with results and saved
#: tokens so that neither is mixed with inputs prepared otherwise. 1: float resize, real-time spacing;
#: 2: the reference processors' conventions (tests/test_golden.py).
INPUTS_VERSION = 2


def sampled_fps(num_sampled: int, num_frames_total: int, native_fps: float) -> float | None:
    """Frames per second of a sampled video as the reference processors count it (`VideoMetadata.
    sampled_fps`): k sampled of N frames at the native rate -> k / N x fps. None when unknown."""
    if num_sampled <= 0 or num_frames_total <= 0 or not native_fps > 0:
        return None
    return num_sampled / num_frames_total * native_fps


def resize_frames(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[T, 3, H, W] uint8 -> [T, 3, h, w] uint8: bicubic with antialias, the way the reference processors do.

    Hugging Face's processors resize uint8 frames with torchvision, which on the CPU calls torch's native
    uint8 kernel (fixed-point, two passes, rounded and clipped between them, within 1 level of PIL) and on
    CUDA interpolates floats, then clamps and rounds. We call the same kernels, so our pixels equal theirs
    (bit for bit on the CPU; tests/test_golden.py). Resizing floats and never rounding, as mlb did before,
    differed by up to 7 levels of 255.
    """
    import torch
    import torch.nn.functional as F

    if tuple(frames.shape[-2:]) == tuple(size):
        return frames  # torchvision returns the frames untouched too
    if frames.device.type == "cpu":
        return F.interpolate(frames, size=size, mode="bicubic", antialias=True, align_corners=False)
    resized = F.interpolate(frames.float(), size=size, mode="bicubic", antialias=True, align_corners=False)
    return resized.clamp_(0, 255).round_().to(torch.uint8)


@dataclass
class VideoTokens:
    """Visual tokens of one video, after the projector and the model's own pooling.

    `features` is frame-major, raster order inside a frame: token `t * N + r * w + c` is frame t,
    grid row r, column c. This flat numbering is the "visual id" every selection method speaks.
    """

    features: torch.Tensor  # [T, N, D] prunable frame tokens, N = h * w
    grid: tuple[int, int]  # (h, w) token grid of one frame
    extra: (
        torch.Tensor | None
    )  # [E, D] structural tokens after the frames (OneVision: image_newline); never pruned
    frame_features: torch.Tensor | None  # [T, Dv] one global vector per frame (vision tower, mean-pooled)
    timestamps_s: list[float] = field(default_factory=list)  # real timestamp of each sampled frame
    # Where the frames came from: their indices in the video, its frame rate, and the WHOLE video's
    # sampling rate (k sampled of N frames: k / N x fps; kept by `select_rows`). The reference processors
    # time Qwen's temporal patches from these (`temporal_spacing="reference"`).
    frame_indices: list[int] = field(default_factory=list)
    native_fps: float | None = None
    sampled_fps: float | None = None
    input_note: str | None = None  # set when a family cap changed the inputs (`ModelAdapter.input_note`)
    # Decoder layer l -> [T, N, D] features the LLM adds to the OUTPUT of layer l at each visual token,
    # laid out like `features` (Qwen3-VL's DeepStack); empty for families without them. They travel
    # with their tokens: a pruned token's features leave with it (`ModelInputs.visual_residuals`).
    layer_features: dict[int, torch.Tensor] = field(default_factory=dict)
    # [T, N] the vision tower's own attention to each frame token (what FastVID, HoliTom and VisionZip
    # read: `--saliency tower`); None where the tower has nothing to read or it was not captured, and
    # methods fall back to the pseudo-[CLS] proxy (`selection.ops.clustering.frame_saliency`).
    saliency: torch.Tensor | None = None

    @property
    def num_frames(self) -> int:
        return int(self.features.shape[0])

    @property
    def tokens_per_frame(self) -> int:
        return int(self.features.shape[1])

    @property
    def num_visual(self) -> int:
        return self.num_frames * self.tokens_per_frame

    def select_rows(self, start: int, stop: int) -> VideoTokens:
        """The frames (token rows) `start:stop` as a video of their own, every per-row field sliced.

        A row may stand for several sampled frames (Qwen's temporal patches: 2); the timestamps of
        those frames go with it: `ceil(len(timestamps_s) / T)` per row.
        """
        count = len(self.timestamps_s)
        per_row = -(-count // self.num_frames) if count > self.num_frames else 1
        return VideoTokens(
            features=self.features[start:stop],
            grid=self.grid,
            extra=self.extra,
            frame_features=None if self.frame_features is None else self.frame_features[start:stop],
            timestamps_s=list(self.timestamps_s[start * per_row : stop * per_row]),
            frame_indices=list(self.frame_indices[start * per_row : stop * per_row]),
            native_fps=self.native_fps,
            sampled_fps=self.sampled_fps,
            layer_features={layer: f[start:stop] for layer, f in self.layer_features.items()},
            saliency=None if self.saliency is None else self.saliency[start:stop],
        )


def split_videos(
    features: torch.Tensor,
    frame_features: torch.Tensor | None,
    counts: Sequence[int],
    grid: tuple[int, int] | None = None,
) -> list[VideoTokens]:
    """A batched tower call's output, [sum T, N, D] frame tokens and [sum T, Dv] global vectors, as one
    `VideoTokens` per video of `counts[i]` frames; `grid` defaults to (isqrt(N), N // isqrt(N))."""
    import math

    n = int(features.shape[1])
    side = math.isqrt(n)
    grid = grid or (side, n // side)
    videos, start = [], 0
    for count in counts:
        stop = start + count
        frames = None if frame_features is None else frame_features[start:stop]
        videos.append(
            VideoTokens(features=features[start:stop], grid=grid, extra=None, frame_features=frames)
        )
        start = stop
    return videos


@dataclass
class Prompt:
    """A tokenized prompt with one visual placeholder block.

    Layout: input_ids[visual_start : visual_start + num_visual] are frame-token placeholders, followed by
    `num_extra` structural placeholders; `question_index` are the positions of the user's question
    tokens (the default query rows of the attention probe).
    """

    input_ids: torch.Tensor  # [1, L]
    visual_start: int
    num_visual: int
    num_extra: int
    question_index: torch.Tensor  # [q] positions in input_ids, ascending
    text: str  # the rendered prompt, before placeholder expansion (provenance / debugging)

    @property
    def length(self) -> int:
        return int(self.input_ids.shape[1])

    def visual_slots(self) -> torch.Tensor:
        """[num_visual] positions of the frame-token placeholders (the engine's prunable slots)."""
        import torch

        return torch.arange(self.visual_start, self.visual_start + self.num_visual)


class ModelAdapter(DecoderTraits, abc.ABC):
    """One subclass per model family. Instances wrap a loaded model and its tokenizer."""

    family: ClassVar[str]  # e.g. "llava_onevision"
    model_types: ClassVar[tuple[str, ...]]  # config.model_type values this adapter serves
    default_frames: ClassVar[int]
    #: How many frames the family takes (`sampling.plan_frames`): any count, unless it groups frames.
    frame_rule: ClassVar[FrameRule] = GENERIC
    #: Image LLMs driven on video (LLaVA-NeXT) re-sequence the tokens kept before the LLM (contiguous
    #: positions), so that pruning makes room in a short context. Video LLMs keep original positions.
    renumber_input_positions: ClassVar[bool] = False
    #: Whether `encode_batch` captures the vision tower's attention (`VideoTokens.saliency`, `--saliency
    #: tower`); an explicit `--saliency tower` on a family without it is refused before loading.
    tower_saliency: ClassVar[bool] = False
    #: Multiple-choice post-prompt of the family's usual evaluation (lmms-eval's, shared by OneVision,
    #: Qwen2-VL and the LLaVA-NeXT video evaluations of SF-LLaVA).
    mc_post_prompt: ClassVar[str] = "Answer with the option's letter from the given choices directly."
    #: lmms-eval's prompt profile for benchmark tasks that have several (`mlbcli.eval.benchmarks`):
    #: "default", or the family's own (Qwen3-VL: "qwen3_vl", its Video-MME layout).
    prompt_profile: ClassVar[str] = "default"

    #: The family's own settings (`load_adapter(..., name=value)`, CLI `--name`) and their defaults, set as
    #: attributes (settable later). Any other is a UsageError, "--name does not apply to <family> models".
    #: How a setting is offered (flag, type, help, allowed values) is declared once, in
    #: `mlbcli/options/table.py` (torch-free, for `--help`); a test checks every name here is there.
    option_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        model_id: str,
        preprocess_config: dict[str, Any],
        **options: Any,
    ):
        # A transformers *ForConditionalGeneration whose submodules differ per family; typed Any because
        # nn.Module.__getattr__ types every submodule and config attribute as `Tensor | Module`.
        self.model: Any = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.preprocess_config = preprocess_config
        self.check_options(options)
        for name, default in self.option_defaults.items():
            value = options.get(name)
            setattr(self, name, default if value is None else value)

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        """UsageError for a setting the family does not have (None values count as not given)."""
        from mlbcli.errors import UsageError

        for name, value in options.items():
            if value is not None and name not in cls.option_defaults:
                raise UsageError(f"--{name.replace('_', '-')} does not apply to {cls.family} models")

    # -- loading ------------------------------------------------------------------------------------
    @classmethod
    @abc.abstractmethod
    def model_class(cls) -> type[Any]:
        """The transformers class to instantiate (imported lazily)."""

    @classmethod
    @abc.abstractmethod
    def tokens_per_frame(cls, config: Any) -> int:
        """Visual tokens one frame becomes, from the checkpoint config alone (for `mlb flops`)."""

    @classmethod
    def visual_tokens(cls, config: Any, num_frames: int) -> int:
        """Prunable visual tokens of `num_frames` frames, from the checkpoint config alone (`mlb flops`).

        Families whose per-frame count depends on the frame count (a pixel budget for the whole video,
        Qwen3-VL) override this.
        """
        return num_frames * cls.tokens_per_frame(config)

    @classmethod
    def detect(cls, config: Any) -> bool:
        """Whether `config` is a checkpoint of this variant (`register_adapter(..., variant=True)`):
        a variant shares its `model_type` with another family and differs in defaults (LLaVA-Video)."""
        return False

    @classmethod
    def structural_tokens(cls, config: Any, num_frames: int) -> int:
        """Non-prunable visual-block tokens (e.g. OneVision's image_newline); not counted as visual."""
        return 0

    # -- vision side -----------------------------------------------------------------------------------
    @abc.abstractmethod
    def preprocess(self, frames: np.ndarray) -> dict[str, torch.Tensor]:
        """[T, H, W, 3] uint8 RGB frames -> the tensors the vision tower takes."""

    def frames_tensor(self, frames: np.ndarray) -> torch.Tensor:
        """[T, H, W, 3] uint8 frames as a tensor on the model's device, moved once.

        On CUDA the uint8 frames (4x smaller than floats) go through pinned memory with a non-blocking
        copy, and resizing/normalising then runs on the GPU; on the CPU this is a zero-copy view.
        """
        import torch

        tensor = torch.from_numpy(frames)
        device = self.device
        if device.type != "cuda":
            return tensor
        return tensor.pin_memory().to(device, non_blocking=True)

    def normalized_frames(
        self,
        frames: np.ndarray,
        size: tuple[int, int],
        *,
        mean: Sequence[float] = OPENAI_CLIP_MEAN,
        std: Sequence[float] = OPENAI_CLIP_STD,
    ) -> torch.Tensor:
        """[T, H, W, 3] uint8 -> [T, 3, h, w] float32 on the model's device: resized (`resize_frames`),
        rescaled and normalised with the checkpoint's `rescale_factor` / `image_mean` / `image_std`
        (`mean` / `std` when it names none).

        Rescale and normalise are fused as the reference processors fuse them: (x - mean/scale) /
        (std/scale) in float32, which is what their pixel values are to the last bit.
        """
        import torch

        cfg = self.preprocess_config
        x = resize_frames(self.frames_tensor(frames).permute(0, 3, 1, 2), size)  # [T, 3, h, w] uint8
        inverse_scale = 1.0 / float(cfg.get("rescale_factor", 1 / 255))
        fused_mean = torch.tensor(cfg.get("image_mean", mean), device=x.device) * inverse_scale
        fused_std = torch.tensor(cfg.get("image_std", std), device=x.device) * inverse_scale
        return (x.float() - fused_mean.view(1, 3, 1, 1)) / fused_std.view(1, 3, 1, 1)

    def input_note(self, num_frames: int, height: int, width: int) -> str | None:
        """Why this video's inputs differ from what the options asked for (a family's cap), or None."""
        return None

    @abc.abstractmethod
    def encode(self, pixel_inputs: dict[str, torch.Tensor]) -> VideoTokens:
        """Vision tower + projector + the model's own pooling."""

    def encode_batch(self, pixel_inputs: Sequence[dict[str, torch.Tensor]]) -> list[VideoTokens]:
        """`encode` of several videos; families whose tower takes several videos in one call override
        this (frames of all videos through the tower together), with the same tokens per video."""
        return [self.encode(inputs) for inputs in pixel_inputs]

    # -- text side -------------------------------------------------------------------------------------
    @abc.abstractmethod
    def build_prompt(self, question_text: str, video: VideoTokens) -> Prompt:
        """Chat-templated prompt with the visual placeholder block expanded for `video`."""

    @abc.abstractmethod
    def embed(self, prompt: Prompt, video: VideoTokens) -> torch.Tensor:
        """Input embeddings [1, L, D] with the visual block filled in, as the stock forward builds them."""

    def _expand_prompt(
        self,
        question_text: str,
        *,
        item_type: str,
        placeholder: str,
        placeholder_id: int,
        num_visual: int,
        num_extra: int = 0,
        add_bos: bool = False,
    ) -> Prompt:
        """Render the chat template around one visual item and expand its placeholder into the block.

        The user turn is `[{"type": item_type}, {"type": "text", "text": question_text}]`; the template
        must render exactly one `placeholder`, which becomes `num_visual + num_extra` copies of
        `placeholder_id`. `add_bos` prepends the tokenizer's BOS when the template does not render it.
        """
        import torch

        messages = [
            {"role": "user", "content": [{"type": item_type}, {"type": "text", "text": question_text}]}
        ]
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        if text.count(placeholder) != 1:
            raise ValueError(
                f"chat template rendered {text.count(placeholder)} {item_type} placeholders, expected 1"
            )
        before, after = text.split(placeholder)
        ids_before = self.tokenizer(before, add_special_tokens=False).input_ids
        bos = self.tokenizer.bos_token
        if add_bos and bos and self.tokenizer.bos_token_id is not None and not text.startswith(bos):
            ids_before = [self.tokenizer.bos_token_id] + ids_before
        ids_after_enc = self.tokenizer(after, add_special_tokens=False, return_offsets_mapping=True)
        block = [placeholder_id] * (num_visual + num_extra)
        input_ids = torch.tensor([ids_before + block + ids_after_enc.input_ids], dtype=torch.long)  # [1, L]
        # The question's tokens: those whose characters overlap the question text inside `after`.
        q_start = after.rfind(question_text)
        q_end = q_start + len(question_text)
        offset = len(ids_before) + len(block)
        q_rows = [
            offset + i
            for i, (a, b) in enumerate(ids_after_enc.offset_mapping)
            if q_start >= 0 and b > q_start and a < q_end
        ]
        if not q_rows:
            # The template rewrote the question or put it before the video, where causal attention
            # cannot see the visual tokens: score with the last prompt token (FastV's row) instead.
            if question_text.strip():
                logging.getLogger(__name__).warning(
                    "question text not found after the %s in the chat template; the attention probe "
                    "uses the last prompt token",
                    item_type,
                )
            q_rows = [input_ids.shape[1] - 1]
        return Prompt(
            input_ids=input_ids,
            visual_start=len(ids_before),
            num_visual=num_visual,
            num_extra=num_extra,
            question_index=torch.tensor(q_rows, dtype=torch.long),
            text=text,
        )

    def _splice_visual(self, prompt: Prompt, video: VideoTokens) -> torch.Tensor:
        """Token embeddings of `prompt` with the placeholder block replaced by the video's tokens.

        The block is the frame tokens in visual-id order, then `video.extra` (if any): [1, L, D].
        """
        import torch

        ids = prompt.input_ids.to(self.device)
        embeds = self.decoder.embed_tokens(ids)  # [1, L, D]
        block = [video.features.reshape(-1, video.features.shape[-1])]  # [T*N, D]
        if video.extra is not None:
            block.append(video.extra)  # [E, D]
        visual = torch.cat(block).to(embeds.dtype)  # [T*N + E, D]
        start, stop = prompt.visual_start, prompt.visual_start + visual.shape[0]
        return torch.cat([embeds[:, :start], visual[None], embeds[:, stop:]], dim=1)

    @abc.abstractmethod
    def position_ids(self, prompt: Prompt, video: VideoTokens) -> torch.Tensor:
        """Position ids of the full prompt, as the stock model computes them: [1, L]."""

    # -- the decoder, exposed for the engine's own prefill/decode loop -------------------------------
    @property
    def decoder(self) -> Any:
        """The text decoder (an nn.Module): has `.layers`, `.norm`, `.rotary_emb`, `.embed_tokens`.

        The default is the transformers 5 `*ForConditionalGeneration` layout (`model.language_model`),
        shared by every family here; override for a model laid out differently.
        """
        return self.model.model.language_model

    @property
    def layers(self) -> Sequence[Any]:
        """The decoder layers (nn.Modules with `.self_attn`, `.mlp`...), as the decoder runs them."""
        return self.decoder.layers

    @property
    def text_config(self) -> Any:
        return self.decoder.config

    @property
    def lm_head(self) -> nn.Module:
        return self.model.lm_head

    @property
    def apply_rotary(self) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
        """`apply_rotary_pos_emb(q, k, cos, sin)` of the decoder's own modelling file (Qwen2, Llama...)."""
        import sys

        return sys.modules[type(self.decoder).__module__].apply_rotary_pos_emb

    def rotary(self, hidden: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.decoder.rotary_emb(hidden, position_ids)

    def model_inputs(self, prompt: Prompt, video: VideoTokens) -> ModelInputs:
        """One request as the engine takes it: embeddings, positions, visual slots and query rows."""
        from mlbcli.models.inputs import ModelInputs

        return ModelInputs(
            embeds=self.embed(prompt, video),
            position_ids=self.position_ids(prompt, video),
            visual_slots=prompt.visual_slots(),
            query_slots=prompt.question_index,
        )

    def positions_after_input_pruning(self, position_ids: torch.Tensor) -> torch.Tensor:
        """Positions of the sequence that enters the LLM after pruning before it ([..., 1, L']).

        Video LLMs keep each surviving token's original position; image LLMs driven on video
        (`renumber_input_positions`) re-sequence them, so that pruning makes room in a short context.
        """
        import torch

        if not self.renumber_input_positions:
            return position_ids
        return torch.arange(position_ids.shape[-1], device=position_ids.device)[None]

    def suffix_positions(
        self, prefix_positions: torch.Tensor, suffix_positions: torch.Tensor, appended: int
    ) -> torch.Tensor:
        """Positions of prompt tokens that continue a cached prefix (`engine.extend_batch`).

        `prefix_positions` [..., 1, P] are the prefix's positions after pruning, `suffix_positions`
        [..., 1, m] the suffix's positions in the unpruned prompt, `appended` the tokens a method
        inserted after the visual block (a summary tail), which shift the text after it.
        """
        import torch

        if self.renumber_input_positions:  # contiguous after the cut, as `positions_after_input_pruning`
            start = prefix_positions.shape[-1]
            length = suffix_positions.shape[-1]
            return torch.arange(start, start + length, device=suffix_positions.device)[None]
        return suffix_positions + appended

    def next_positions(self, position_ids: torch.Tensor, steps: int) -> torch.Tensor:
        """Position ids of the `steps`-th generated token (0-based) after a prefill with `position_ids`.

        The engine relies on `next_positions(p, n) == next_positions(p, 0) + n` (one position per
        generated token, as in stock decoding), and asks only for n = 0.
        """
        return position_ids.max(dim=-1, keepdim=True).values + 1 + steps

    # -- limits ------------------------------------------------------------------------------------------
    @property
    def context_limit(self) -> int | None:
        """Longest sequence (prompt + generated tokens) the LLM supports: `max_position_embeddings`."""
        limit = getattr(self.text_config, "max_position_embeddings", None)
        return int(limit) if limit else None

    @functools.cached_property
    def _longest_token_chars(self) -> int:
        """Characters of the longest token string in the vocabulary (a bound for `check_prompt_text`)."""
        vocab = self.tokenizer.get_vocab()
        return max((len(token) for token in vocab), default=1) or 1

    def check_prompt_text(self, text: str) -> None:
        """Refuse a prompt that cannot fit the context before tokenising it (megabytes take seconds).

        A prompt of c characters has at least c / (longest token string) tokens, so it cannot fit when
        that bound already exceeds the context; the exact check follows after tokenising.
        """
        from mlbcli.errors import UsageError

        limit = self.context_limit
        if limit is None:
            return
        at_least = len(text) // self._longest_token_chars
        if at_least > limit:
            raise UsageError(
                f"{self.model_id}: the prompt is {len(text)} characters, at least {at_least} tokens, "
                f"but the model's whole context is {limit} tokens (text_config.max_position_embeddings)"
            )

    def check_context(
        self, num_prompt_tokens: int, max_new_tokens: int, *, num_visual: int | None = None
    ) -> None:
        """Raise `UsageError` before running when the request cannot fit the LLM's context.

        `num_prompt_tokens` counts every prompt token that enters the LLM (text + visual placeholders);
        `num_visual` (optional) is the visual share of it, for the message. Never truncates silently.
        """
        from mlbcli.errors import UsageError

        limit = self.context_limit
        needed = int(num_prompt_tokens) + int(max_new_tokens)
        if limit is None or needed <= limit:
            return
        parts = f"{num_prompt_tokens} prompt tokens"
        if num_visual is not None:
            parts = f"{num_prompt_tokens - num_visual} text + {num_visual} visual prompt tokens"
        raise UsageError(
            f"{self.model_id}: the request needs {needed} tokens ({parts} + {max_new_tokens} new tokens) "
            f"but the model's context is {limit} (text_config.max_position_embeddings). "
            "Use fewer frames (--frames), prune before the LLM (--keep with a pre-LLM method), "
            "or use --method mlb."
        )

    @property
    def eos_token_ids(self) -> set[int]:
        ids = self.model.generation_config.eos_token_id
        if ids is None:
            ids = self.tokenizer.eos_token_id
        if ids is None:
            return set()
        return {int(i) for i in ids} if isinstance(ids, (list, tuple)) else {int(ids)}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def decode_text(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True).strip()
