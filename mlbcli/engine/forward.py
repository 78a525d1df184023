"""The engine's calls into the stock decoder modules: one decoder layer, and the logits head.

These are the very modules (weights, SDPA kernels) that `model.generate()` runs; the engine only
chooses which tokens enter each layer (see `engine.batch`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from mlbcli.models.contract import Adapter


def run_layer(
    layer: torch.nn.Module,
    hidden: torch.Tensor,
    positions: torch.Tensor,
    cos_sin: Any,
    cache: Any,
    mask: torch.Tensor | None,
    extra: dict[str, Any] | None = None,
) -> torch.Tensor:
    """`hidden` [B, q, D] through one decoder layer, its keys and values appended to `cache`.

    attention_mask=None: SDPA applies its own causal mask (prefill; right padding is never seen by a
    real token) and none for a 1-token decode step without padding. Otherwise `mask` [B, 1, q, k] bool.
    `extra`: the adapter's `layer_kwargs` (they replace `position_embeddings` when they name it).
    """
    kwargs: dict[str, Any] = {"position_embeddings": cos_sin}
    kwargs.update(extra or {})
    return layer(
        hidden,
        attention_mask=mask,
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
        **kwargs,
    )


def last_logits(adapter: Adapter, hidden: torch.Tensor) -> torch.Tensor:
    """[B, V] float logits of `hidden` [B, D] (final norm, then the LM head)."""
    return adapter.lm_head(adapter.decoder.norm(hidden)).float()


def row_logits(adapter: Adapter, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """[B, V] logits of each row's last real position of `hidden` [B, L, D]."""
    if hidden.shape[0] == 1:
        return last_logits(adapter, hidden[:, int(lengths[0]) - 1])
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return last_logits(adapter, hidden[rows, lengths.to(hidden.device) - 1])
