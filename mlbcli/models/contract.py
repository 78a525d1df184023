"""The adapter contract: everything a Video-LLM family must provide to mlb, in one place.

The engine (`mlbcli.engine`), the pipeline and the runners type against `Adapter`; a family is a class
that satisfies it. The practical way is to subclass `mlbcli.models.base.ModelAdapter`, which provides
everything here except the family's own vision side and prompt (the `abstractmethod`s there), and to
register it under the entry point group `mlb.models` (see `mlbcli.models.registry`).

Shapes, nanoGPT style: T sampled frames, H x W pixels, N visual tokens per frame on an (h, w) grid,
n = T * N prunable visual tokens, L prompt tokens, D the LLM width, V the vocabulary, B rows of a
batch. "Visual id" is the flat `t * N + r * w + c` numbering of a video's frame tokens.

The data path of one request, and which member serves each step:

    frames [T, H, W, 3] uint8                       (decoded by `mlbcli.io.video`, counted by `frame_rule`)
      -> preprocess(frames)  -> pixel inputs        (dict of tensors on the model's device)
      -> encode_batch([...]) -> [VideoTokens]       (features [T, N, D], grid (h, w), ...)
      -> build_prompt(question, video) -> Prompt    (input_ids [1, L], one visual block)
      -> model_inputs(prompt, video) -> ModelInputs (embeds [1, L, D], position_ids [..., 1, L], slots)
      -> the engine runs `layers` itself, between `rotary`, `decoder.norm` and `lm_head`
      -> decode_text(token_ids) -> answer
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from mlbcli.io.sampling import FrameRule
    from mlbcli.models.base import Prompt, VideoTokens
    from mlbcli.models.inputs import ModelInputs


class Adapter(Protocol):
    """What the engine, the pipeline and the runners ask of a loaded model family."""

    # -- identity and defaults (class attributes of the family) -----------------------------------------
    @property
    def family(self) -> str:
        """The family's name in rows and messages, e.g. "qwen2_5_vl"."""

    @property
    def model_id(self) -> str:
        """The checkpoint as rows record it: hub id, or a local folder's absolute path."""

    @property
    def default_frames(self) -> int:
        """`--frames` when none is given (the family's usual evaluation setting)."""

    @property
    def frame_rule(self) -> FrameRule:
        """How many frames the family takes (Qwen: pairs, `--fps` counts within [4, 768])."""

    @property
    def renumber_input_positions(self) -> bool:
        """True for image LLMs driven on video: tokens kept before the LLM get contiguous positions."""

    @property
    def mc_post_prompt(self) -> str:
        """The multiple-choice post-prompt of the family's usual evaluation (lmms-eval's)."""

    @property
    def prompt_profile(self) -> str:
        """lmms-eval's prompt profile of a benchmark task for this family: "default", or a family's
        own (e.g. "qwen3_vl" on Video-MME); `mlbcli.eval.benchmarks` picks the prompt layout by it."""

    # -- vision side -----------------------------------------------------------------------------------
    def preprocess(self, frames: np.ndarray) -> dict[str, torch.Tensor]:
        """[T, H, W, 3] uint8 RGB -> the tensors the vision tower takes, on the model's device."""

    def encode_batch(self, pixel_inputs: Sequence[dict[str, torch.Tensor]]) -> list[VideoTokens]:
        """Vision tower + projector + the model's own pooling, per video: features [T', N, D] (T' = T,
        or T / 2 for Qwen's temporal patches), the same tokens as one `encode` call per video."""

    def input_note(self, num_frames: int, height: int, width: int) -> str | None:
        """Why a video of T = `num_frames` (height x width) frames gets other inputs than asked, or None."""

    # -- text side -------------------------------------------------------------------------------------
    def check_prompt_text(self, text: str) -> None:
        """UsageError for a prompt that cannot fit the context, before tokenising it."""

    def build_prompt(self, question_text: str, video: VideoTokens) -> Prompt:
        """The chat-templated prompt, input_ids [1, L], with n + E visual placeholders in one block."""

    def model_inputs(self, prompt: Prompt, video: VideoTokens) -> ModelInputs:
        """One row as the LLM sees it: embeds [1, L, D], position_ids [1, L] (or [3, 1, L] for M-RoPE),
        visual_slots [n] (visual id i sits at visual_slots[i]), query_slots [q], and per-layer
        visual_residuals [n, D] (DeepStack) if the family adds features inside the LLM."""

    def decode_text(self, token_ids: Sequence[int]) -> str:
        """Generated token ids -> the answer text (special tokens dropped, stripped)."""

    # -- the decoder, run layer by layer by the engine ---------------------------------------------------
    @property
    def decoder(self) -> Any:
        """The text decoder module: `.embed_tokens` ([B, q] ids -> [B, q, D]), `.norm`, `.layers`."""

    @property
    def layers(self) -> Sequence[Any]:
        """The decoder layers in order; layer(hidden [B, q, D], attention_mask, position_embeddings,
        position_ids, past_key_values, use_cache) -> [B, q, D]; each has `.self_attn` (probed)."""

    @property
    def text_config(self) -> Any:
        """The decoder's config (`num_hidden_layers`, `max_position_embeddings`...); builds KV caches."""

    @property
    def lm_head(self) -> nn.Module:
        """[B, D] normed hidden states -> [B, V] logits."""

    def layer_kinds(self, text_config: Any) -> tuple[str, ...]:
        """Per decoder layer, "full" or "sliding" (attention, KV cache) or "linear" (a recurrent state, no keys)."""

    @property
    def apply_rotary(self) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
        """`apply_rotary_pos_emb(q, k, cos, sin)` of the decoder's modelling file (the probe rotates q, k)."""

    def rotary(self, hidden: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin), each [B, L, d_head], of positions [..., B, L] (`hidden` [B, L, D] gives dtype)."""

    def layer_kwargs(self, index: int, cos_sin: Any, cache: Any, token_inputs: Any) -> dict[str, Any]:
        """Keyword arguments of layer `index`'s call: `position_embeddings` and the family's own."""

    def attention_window(self, index: int) -> int | None:
        """Keys a query of layer `index` sees (sliding window, itself included), or None (global)."""

    def kv_source(self, index: int) -> int:
        """The layer whose KV cache layer `index` reads (itself unless it shares another's)."""

    def probe_layer(self, layer: int) -> int:
        """The layer an attention method reads in place of `layer` (a global one where `layer` slides)."""

    def embed_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Generated token ids [B, q] -> input embeddings [B, q, D], as the stock forward embeds them."""

    def token_inputs(self, input_ids: torch.Tensor | None, embeds: torch.Tensor) -> torch.Tensor | None:
        """Per-token layer inputs [B, q, ...] that travel with their tokens, or None."""

    # -- positions policy --------------------------------------------------------------------------------
    def positions_after_input_pruning(self, position_ids: torch.Tensor) -> torch.Tensor:
        """[..., 1, L'] positions of the sequence entering the LLM after pruning before it: unchanged
        (video LLMs keep original positions) or 0..L'-1 (`renumber_input_positions`)."""

    def suffix_positions(
        self, prefix_positions: torch.Tensor, suffix_positions: torch.Tensor, appended: int
    ) -> torch.Tensor:
        """[..., 1, m] positions of prompt tokens continuing a cached, pruned prefix [..., 1, P]."""

    def next_positions(self, position_ids: torch.Tensor, steps: int) -> torch.Tensor:
        """[..., 1, 1] positions of the `steps`-th generated token after a prefill at `position_ids`;
        must equal `next_positions(p, 0) + steps` (the engine asks only for steps = 0)."""

    # -- limits and decoding -------------------------------------------------------------------------------
    @property
    def context_limit(self) -> int | None:
        """Longest sequence (prompt + generated) the LLM supports; None when the config names none."""

    def check_context(
        self, num_prompt_tokens: int, max_new_tokens: int, *, num_visual: int | None = None
    ) -> None:
        """UsageError when prompt + new tokens cannot fit `context_limit` (never truncates)."""

    @property
    def eos_token_ids(self) -> set[int]:
        """Token ids that end generation (the EOS token is kept in the output, as `generate` does)."""

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...


class AdapterClass(Protocol):
    """What is asked of a family's class before any weight is loaded (`mlb flops`, option checks,
    choosing the class for a checkpoint). `ModelAdapter` provides all of it as class attributes and
    classmethods; a family overrides the ones that differ."""

    family: str
    model_types: tuple[str, ...]  # config.model_type values the family serves
    default_frames: int
    frame_rule: FrameRule
    renumber_input_positions: bool
    tower_saliency: bool  # `encode_batch` fills `VideoTokens.saliency` (--saliency tower)
    option_defaults: dict[str, Any]  # the family's own settings (`--min-pixels`...) and defaults

    def model_class(self) -> type[Any]:
        """The transformers class to instantiate (imported lazily)."""

    def detect(self, config: Any) -> bool:
        """Whether `config` is a checkpoint of this variant (one that shares another family's
        model_type and differs in defaults, e.g. LLaVA-Video)."""

    def check_options(self, options: dict[str, Any]) -> None:
        """UsageError for a setting the family does not have (None counts as not given)."""

    def tokens_per_frame(self, config: Any) -> int:
        """N, from the checkpoint config alone."""

    def layer_kinds(self, text_config: Any) -> tuple[str, ...]:
        """Per decoder layer, "full" or "linear" (`mlb flops` charges linear layers O(L))."""

    def visual_tokens(self, config: Any, num_frames: int) -> int:
        """n for T = `num_frames` frames, from the config alone (a whole-video budget may lower N)."""

    def structural_tokens(self, config: Any, num_frames: int) -> int:
        """E: non-prunable tokens of the visual block (OneVision's image_newline)."""
