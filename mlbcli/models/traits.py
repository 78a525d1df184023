"""Per-layer traits the engine asks a decoder about, with the defaults of a plain decoder of global layers.

`ModelAdapter` inherits them, and a family whose layers differ overrides the ones that do (Qwen3.5:
`layer_kinds`; Gemma 4: `attention_window`, `kv_source`, `probe_layer`, `token_inputs`, `layer_kwargs`).
Kept apart so that anything driving the engine without a full adapter (the prefill benchmark's bare
decoder) gets the same defaults instead of copying them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


class DecoderTraits:
    """How each decoder layer mixes tokens, which cache it reads, and what else its call takes."""

    @classmethod
    def layer_kinds(cls, text_config: Any) -> tuple[str, ...]:
        """Per decoder layer, how it mixes tokens: "full" (attention over every earlier token, keys and
        values cached), "sliding" (attention over the last `sliding_window` tokens, Gemma 4: `mlb flops`
        charges it O(L * window)) or "linear" (a recurrent state, O(L): Qwen3.5's Gated DeltaNet layers).
        The engine carries a linear layer's state instead of its keys and reads attention at full layers
        only (`engine.linear`); `mlb flops` charges each layer by its kind."""
        return ("full",) * int(text_config.num_hidden_layers)

    @classmethod
    def kv_sources(cls, text_config: Any) -> tuple[int, ...]:
        """Per decoder layer, the layer whose KV it reads (itself unless it shares another's, Gemma 4):
        `mlb flops` charges no K/V projections to a layer that reads another's."""
        return tuple(range(int(text_config.num_hidden_layers)))

    def layer_kwargs(self, index: int, cos_sin: Any, cache: Any, token_inputs: Any) -> dict[str, Any]:
        """Keyword arguments of decoder layer `index`'s call besides hidden states, mask, positions and
        cache: `position_embeddings` from `rotary`'s output, plus what the family's layers take (Gemma 4:
        its per-layer inputs, `token_inputs[:, :, index]`, and the KV it shares)."""
        return {"position_embeddings": cos_sin}

    def attention_window(self, index: int) -> int | None:
        """Keys a query of layer `index` sees (itself included; a sliding-window layer), or None (global)."""
        return None

    def kv_source(self, index: int) -> int:
        """The layer whose KV cache layer `index` reads (itself, unless it shares another's)."""
        return index

    def probe_layer(self, layer: int) -> int:
        """The layer whose attention an attention method reads in place of `layer`'s (K-1)."""
        return layer

    def embed_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token ids [B, q] (generated ones, while decoding) -> input embeddings [B, q, D], as the stock
        forward embeds them (Gemma 4 embeds a generated multimodal placeholder as PAD)."""
        embeds: torch.Tensor = self.decoder.embed_tokens(input_ids)  # type: ignore[attr-defined]
        return embeds

    def token_inputs(self, input_ids: torch.Tensor | None, embeds: torch.Tensor) -> torch.Tensor | None:
        """Per-token inputs [B, q, ...] of the decoder layers that travel with their tokens (Gemma 4's
        per-layer embeddings), for tokens `input_ids` [B, q] (None: visual or appended tokens) with input
        embeddings `embeds` [B, q, D]; None for families without them."""
        return None
