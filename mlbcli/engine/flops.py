"""Theoretical LLM FLOPs spent on visual tokens, in the convention of the FastV/FastVID/LLaVA-MLB papers.

The per-layer count (research/algorithms.md §2.1) is

    FLOPs_layer(n) = 2·n·D²  +  2·n·D·(h_kv·d)  +  2·n²·D  +  3·n·D·D'
                     Q and O    K and V (GQA)    QKᵀ, A·V   SwiGLU gate/up/down

A linear-attention layer of a hybrid decoder (Qwen3.5's Gated DeltaNet, `LLMDims.layer_kinds`) has no
n² term: its token mixer is a recurrent state, O(n):

    FLOPs_linear(n) = n·D·(2·k + 2·v + 2·h_v)  +  n·v·D  +  3·n·h_v·d_k·d_v  +  3·n·D·D'
                      q/k/v, gate z, a/b in     out      delta rule (read,   SwiGLU
                                                         update, output)

(k = key heads x d_k, v = value heads x d_v; the depthwise conv, k_conv MACs per channel, is left out
like the norms). So the FLOPs ratio of a hybrid follows its layer kinds.

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

__all__ = [
    "TERA",
    "LLMDims",
    "flops_ratio",
    "flops_text",
    "input_resolution",
    "layer_flops",
    "parse_resolution",
    "probe_flops",
    "tokens_per_layer",
    "visual_flops",
]

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
    # Per layer "full" or "linear" (`ModelAdapter.layer_kinds`); empty = every layer full attention.
    layer_kinds: tuple[str, ...] = ()
    linear_key_dim: int = 0  # k = linear_num_key_heads x linear_key_head_dim
    linear_value_dim: int = 0  # v = linear_num_value_heads x linear_value_head_dim
    linear_value_heads: int = 0  # h_v
    linear_key_head_dim: int = 0  # d_k

    def kind(self, layer: int) -> str:
        return self.layer_kinds[layer] if self.layer_kinds else "full"

    def __post_init__(self) -> None:
        for name in ("num_layers", "hidden", "intermediate", "num_heads", "num_kv_heads", "head_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"LLMDims.{name} must be a positive int, got {value!r}")

    @classmethod
    def from_config(cls, text_config: Any, layer_kinds: Sequence[str] = ()) -> LLMDims:
        """Build from a transformers-style text config object or a plain dict of the same keys;
        `layer_kinds` (the adapter's `layer_kinds`) charges linear-attention layers O(n).

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
            layer_kinds=tuple(layer_kinds),
            linear_key_dim=int(_get(text_config, "linear_num_key_heads", 0))
            * int(_get(text_config, "linear_key_head_dim", 0)),
            linear_value_dim=int(_get(text_config, "linear_num_value_heads", 0))
            * int(_get(text_config, "linear_value_head_dim", 0)),
            linear_value_heads=int(_get(text_config, "linear_num_value_heads", 0)),
            linear_key_head_dim=int(_get(text_config, "linear_key_head_dim", 0)),
        )


def layer_flops(n: float, dims: LLMDims, kind: str = "full") -> float:
    """FLOPs (MACs) of one decoder layer of `kind` ("full" or "linear") for `n` visual tokens. `n` may
    be fractional (an average)."""
    if n < 0:
        raise ValueError(f"token count must be >= 0, got {n}")
    d_model = float(dims.hidden)
    if kind == "linear":
        k, v, hv = float(dims.linear_key_dim), float(dims.linear_value_dim), float(dims.linear_value_heads)
        state = hv * dims.linear_key_head_dim * (v / hv if hv else 0.0)  # h_v x d_k x d_v
        return (
            n * d_model * (2.0 * k + 2.0 * v + 2.0 * hv)
            + n * v * d_model
            + 3.0 * n * state
            + 3.0 * n * d_model * float(dims.intermediate)
        )
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
    return sum(layer_flops(n, dims, dims.kind(i)) for i, n in enumerate(tokens_per_layer))


def probe_flops(n: float, layers: int, dims: LLMDims) -> float:
    """FLOPs of a probe pass of `n` visual tokens through decoder layers 0..layers-1."""
    return sum(layer_flops(n, dims, dims.kind(i)) for i in range(int(layers)))


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


# -- for people: units that fit, and the input resolution a count assumes ------------------------------------
_UNITS = ((1e15, "PFLOPs"), (1e12, "TFLOPs"), (1e9, "GFLOPs"), (1e6, "MFLOPs"))


def flops_text(value: float) -> str:
    """`value` FLOPs in the unit that puts it in [1, 1000), two decimals: "48.82 TFLOPs", "3.10 GFLOPs";
    scientific below a mega or from 1000 peta ("3.2e+05 FLOPs"), so a small model never reads 0.00."""
    if value == 0:
        return "0 FLOPs"
    for scale, unit in _UNITS:
        if scale <= abs(value) < scale * 1000:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.2e} FLOPs"


def parse_resolution(text: str) -> tuple[int, int]:
    """`--resolution WxH` ("1280x720") as (width, height), both positive; a `UsageError` otherwise."""
    from mlbcli.errors import UsageError

    width, x, height = text.strip().lower().replace("×", "x").partition("x")
    if not (x and width.strip().isdigit() and height.strip().isdigit()) or 0 in (int(width), int(height)):
        raise UsageError(f"--resolution must be WIDTHxHEIGHT in pixels, e.g. 1280x720; got {text!r}")
    return int(width), int(height)


def _example_size(tokens: int, factor: int) -> str:
    """A frame size of `tokens` merged patches of `factor` pixels, as close to 4:3 as the count allows."""
    pairs = [
        (tokens // rows, rows)
        for rows in range(1, tokens + 1)
        if tokens % rows == 0 and rows <= tokens // rows
    ]
    cols, rows = min(pairs, key=lambda p: abs(p[0] / p[1] - 4 / 3))
    return f"{cols * factor}x{rows * factor}"


def input_resolution(
    adapter_cls: Any, config: Any, model: str, frames: int, resolution: tuple[int, int] | None
) -> tuple[int | None, str]:
    """(visual tokens of `frames` frames of `resolution`, or None for the family's own count; the line
    that says which input resolution the count assumes).

    Families with dynamic resolution (their adapter sizes frames by the video, `frame_size`) are sized
    here by the adapter's own rule, built on the config alone with the processor's default pixel bounds;
    without `resolution`, the family's count assumes frames at the pixel budget (an upper bound). Other
    families resize every frame to a fixed size: `resolution` is then a `UsageError`.
    """
    from types import SimpleNamespace

    from mlbcli.errors import UsageError

    vision = _get(config, "vision_config")
    if not callable(getattr(adapter_cls, "frame_size", None)):
        side = _get(vision, "image_size") if vision is not None else None
        fixed = f"{side}x{side}" if side else "a fixed size"
        if resolution is not None:
            raise UsageError(
                f"--resolution does not apply to {adapter_cls.family} models (every frame is resized to {fixed})"
            )
        return None, f"fixed: every frame is resized to {fixed}"
    factor = int(vision.patch_size) * int(vision.spatial_merge_size)
    patches = -(-frames // int(vision.temporal_patch_size))  # temporal patches (frames in pairs)
    if resolution is None:
        per_patch = adapter_cls.visual_tokens(config, frames) // patches
        return None, (
            f"dynamic; assumed frames at the pixel budget, {per_patch * factor * factor} pixels each after "
            f"resizing (e.g. {_example_size(per_patch, factor)}): an upper bound, smaller videos give fewer "
            "tokens (--resolution WxH for yours)"
        )
    width, height = resolution
    sizer = adapter_cls(SimpleNamespace(config=config), None, model, {})  # no weights: the size rule only
    new_height, new_width = sizer.frame_size(max(frames, 1), height, width)
    tokens = patches * (new_height // factor) * (new_width // factor)
    return (
        tokens,
        f"{width}x{height} frames, resized to {new_width}x{new_height} (the processor's default bounds)",
    )
