"""Attention scores of a few query rows at one layer, computed beside SDPA.

Pruning needs "how much do the question tokens attend to each visual token" at layer K-1. Eager
attention with `output_attentions=True` would materialise an [H, L, L] map for every layer (gigabytes
at 6k tokens, 4x slower). Instead we hook the attention module of that one layer, capture what it
computes anyway (the q/k projections and the rotary cos/sin), and compute softmax(q_rows Kᵀ) only for
the chosen rows: [H, q, L] floats. The layer itself still runs with SDPA. Hooks are installed and
removed inside one context manager; no transformers class is modified.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


class ProbeCapture:
    """Holds what the hooks captured during one forward of the probed attention module."""

    def __init__(self, attn: nn.Module, apply_rotary: Callable[..., Any]):
        self.attn: Any = attn  # a transformers attention module (head_dim, scaling)
        self.apply_rotary = apply_rotary
        # The query and key before RoPE: [B, L, H*d] projections, or [B, L, H, d] after q_norm / k_norm.
        self.q: torch.Tensor | None = None  # Hq heads
        self.k: torch.Tensor | None = None  # Hkv heads
        self.cos_sin: tuple[torch.Tensor, torch.Tensor] | None = None  # [..., B, L, d] each
        # A sliding-window layer's window (a query sees itself and the window - 1 tokens before it), so
        # that the probe reads the attention the layer computes; None: a global layer.
        self.window: int | None = None

    def probabilities(self, row: int, query_slots: torch.Tensor, length: int) -> torch.Tensor:
        """[1, H, q, length] attention probabilities (causal, fp32) of batch row `row`'s query rows
        over that row's first `length` tokens (its real tokens; padding comes after them)."""
        if self.q is None or self.k is None or self.cos_sin is None:
            raise RuntimeError("the probed attention module did not run")
        head_dim = self.attn.head_dim
        rows = query_slots.to(self.q.device)
        q = self.q[row : row + 1, rows].view(1, rows.numel(), -1, head_dim).transpose(1, 2)  # [1, Hq, q, d]
        k = self.k[row : row + 1, :length].view(1, length, -1, head_dim).transpose(1, 2)  # [1, Hkv, L, d]
        cos, sin = (t[..., row : row + 1, :length, :] for t in self.cos_sin)  # batch axis is -3
        # Rotate each query row with its own position, the keys with theirs (as the layer does).
        q, _ = self.apply_rotary(q, q, cos[..., rows, :], sin[..., rows, :])
        _, k = self.apply_rotary(k, k, cos, sin)
        groups = q.shape[1] // k.shape[1]
        k = k.repeat_interleave(groups, dim=1)  # GQA: [1, Hq, L, d]
        logits = (q.float() @ k.float().transpose(-1, -2)) * self.attn.scaling  # [1, Hq, q, L]
        future = torch.arange(length, device=rows.device)[None, :] > rows[:, None]  # [q, L] causal mask
        if self.window is not None:  # keys that slid out of the window: [q, L]
            future |= rows[:, None] - torch.arange(length, device=rows.device)[None, :] >= self.window
        logits = logits.masked_fill(future, float("-inf"))
        return logits.softmax(dim=-1)

    def received(
        self, row: int, query_slots: torch.Tensor, length: int, reduce: str = "mean"
    ) -> torch.Tensor:
        """[length] attention each token of batch row `row` receives: the mean over heads and query rows,
        or with `reduce="max"` the largest any head gives it from any query row."""
        probabilities = self.probabilities(row, query_slots, length)[0]  # [H, q, length]
        if reduce == "max":
            return probabilities.amax(dim=(0, 1))
        return probabilities.mean(dim=(0, 1))


@contextmanager
def attention_probe(attn: nn.Module, apply_rotary: Callable[..., Any]) -> Iterator[ProbeCapture]:
    """Capture one forward of `attn` (a Qwen2/Llama-style attention module with q_proj/k_proj, and
    Qwen3's q_norm/k_norm after them).

    Usage: `with attention_probe(layer.self_attn, apply_rotary_pos_emb) as p: layer(...)`,
    then `p.received(row, query_slots, length)` for each batch row.
    """
    capture = ProbeCapture(attn, apply_rotary)

    def on_attention(module: nn.Module, args: tuple, kwargs: dict) -> None:
        capture.cos_sin = kwargs.get("position_embeddings", args[1] if len(args) > 1 else None)

    def on_q(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        capture.q = output

    def on_k(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        capture.k = output

    # Qwen3-style attention normalises every head's query and key (`q_norm` / `k_norm`, RMSNorm over d)
    # between the projection and RoPE: capture after those norms where the module has them.
    q_source: nn.Module = getattr(attn, "q_norm", None) or attn.get_submodule("q_proj")
    k_source: nn.Module = getattr(attn, "k_norm", None) or attn.get_submodule("k_proj")
    handles = [
        attn.register_forward_pre_hook(on_attention, with_kwargs=True),
        q_source.register_forward_hook(on_q),
        k_source.register_forward_hook(on_k),
    ]
    try:
        yield capture
    finally:
        for handle in handles:
            handle.remove()
