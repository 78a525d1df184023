"""Theoretical LLM FLOPs spent on visual tokens, in the convention of the FastV/FastVID/LLaVA-MLB papers.

The per-layer count (research/algorithms.md §2.1) is

    FLOPs_layer(n) = 2·n·D²  +  2·n·D·(h_kv·d)  +  2·n²·D  +  3·n·D·D'
                     Q and O    K and V (GQA)    QKᵀ, A·V   SwiGLU gate/up/down

It counts one multiply-accumulate as one FLOP and only the visual tokens (text tokens and the vision
encoder are excluded). That is not "real" hardware FLOPs, but it is the number the published tables
print, so reporting it makes our ratios directly comparable with them. In-LLM pruning at layer K is
charged as K layers at the full count plus L−K layers at the reduced count.

No torch/transformers import: configs are read by duck typing so `mlb --help` stays fast.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["TERA", "LLMDims", "flops_ratio", "layer_flops", "tokens_per_layer", "visual_flops"]

# Papers print TFLOPs with a decimal tera.
TERA = 1e12


def _get(config: Any, name: str, default: Any = None) -> Any:
    """Read `name` from a dict or an attribute-style (transformers) config; None counts as missing."""
    value = config.get(name, default) if isinstance(config, Mapping) else getattr(config, name, default)
    return default if value is None else value


@dataclass(frozen=True)
class LLMDims:
    """The decoder dimensions the FLOPs formula needs."""

    num_layers: int
    hidden: int  # D
    intermediate: int  # D' (SwiGLU FFN size)
    num_heads: int
    num_kv_heads: int  # h_kv (== num_heads without GQA)
    head_dim: int  # d

    def __post_init__(self) -> None:
        for name in ("num_layers", "hidden", "intermediate", "num_heads", "num_kv_heads", "head_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"LLMDims.{name} must be a positive int, got {value!r}")

    @classmethod
    def from_config(cls, text_config: Any) -> LLMDims:
        """Build from a transformers-style text config object or a plain dict of the same keys.

        A full VLM config (with a `text_config` inside and no `num_hidden_layers` of its own) is
        accepted too, because callers easily pass `model.config` instead of `model.config.text_config`.
        """
        if _get(text_config, "num_hidden_layers") is None:
            inner = _get(text_config, "text_config")
            if inner is not None:
                text_config = inner
        missing = [
            key
            for key in ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads")
            if _get(text_config, key) is None
        ]
        if missing:
            raise ValueError(f"text config lacks {', '.join(missing)}; cannot compute FLOPs")
        hidden = int(_get(text_config, "hidden_size"))
        heads = int(_get(text_config, "num_attention_heads"))
        intermediate = int(_get(text_config, "intermediate_size"))
        experts = int(_get(text_config, "num_experts", 0))
        if experts > 0 and _get(text_config, "moe_intermediate_size") is not None:
            # Mixture of experts (Qwen3-VL-MoE): a token runs its top-k experts, so the FFN it pays for is
            # k experts wide. Counted for every layer: the published MoE checkpoints have no dense layers
            # (`mlp_only_layers` empty, `decoder_sparse_step` 1); the router's D x E product is left out.
            intermediate = int(_get(text_config, "num_experts_per_tok", 1)) * int(
                _get(text_config, "moe_intermediate_size")
            )
        return cls(
            num_layers=int(_get(text_config, "num_hidden_layers")),
            hidden=hidden,
            intermediate=intermediate,
            num_heads=heads,
            # Configs without GQA omit num_key_value_heads (or set it to None): that means MHA.
            num_kv_heads=int(_get(text_config, "num_key_value_heads", heads)),
            head_dim=int(_get(text_config, "head_dim", hidden // heads)),
        )


def layer_flops(n: float, dims: LLMDims) -> float:
    """FLOPs (MACs) of one decoder layer for `n` visual tokens. `n` may be fractional (an average)."""
    if n < 0:
        raise ValueError(f"token count must be >= 0, got {n}")
    d_model = float(dims.hidden)
    kv_width = float(dims.num_kv_heads * dims.head_dim)
    return (
        2.0 * n * d_model * d_model
        + 2.0 * n * d_model * kv_width
        + 2.0 * n * n * d_model
        + 3.0 * n * d_model * float(dims.intermediate)
    )


def visual_flops(tokens_per_layer: Sequence[float], dims: LLMDims) -> float:
    """Sum of `layer_flops` over the decoder; one visual-token count per layer."""
    if len(tokens_per_layer) != dims.num_layers:
        raise ValueError(
            f"need one token count per decoder layer ({dims.num_layers}), got {len(tokens_per_layer)}"
        )
    return sum(layer_flops(n, dims) for n in tokens_per_layer)


def tokens_per_layer(n_in: int, schedule: Mapping[int, int], num_layers: int) -> list[int]:
    """Expand a pruning schedule into one visual-token count per decoder layer.

    `schedule` maps a layer index to the number of visual tokens from that layer on: layer 0 means
    pruning before the LLM, layer K a FastV-style cut inside it. Layers before the first entry see
    all `n_in` tokens. E.g. FastV K=2 keeping 25% of 6272: `tokens_per_layer(6272, {2: 1568}, 28)`.
    """
    if num_layers <= 0:
        raise ValueError(f"num_layers must be positive, got {num_layers}")
    if n_in < 0:
        raise ValueError(f"n_in must be >= 0, got {n_in}")
    for layer, count in schedule.items():
        if not 0 <= layer < num_layers:
            raise ValueError(f"schedule layer {layer} outside the decoder's 0..{num_layers - 1}")
        if count < 0:
            # A count above n_in is legitimate: methods may append tokens (LLaVA-MLB's summary tail).
            raise ValueError(f"schedule count {count} at layer {layer} is negative")
    counts: list[int] = []
    current = n_in
    for layer in range(num_layers):
        current = schedule.get(layer, current)
        counts.append(current)
    return counts


def flops_ratio(tokens_per_layer: Sequence[float], dims: LLMDims, n_in: float) -> float:
    """FLOPs of a pruned schedule relative to the unpruned model on the same `n_in` visual tokens."""
    vanilla = visual_flops([n_in] * dims.num_layers, dims)
    if vanilla == 0:
        raise ValueError("n_in must be > 0 to compute a FLOPs ratio")
    return visual_flops(tokens_per_layer, dims) / vanilla
