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

A sliding-window layer (Gemma 4, kind "sliding") attends to at most `window` keys per query, O(n·w):

    FLOPs_sliding(n) = ... + 2·n·min(n, w)·q   (in place of 2·n²·q)

Heterogeneous decoders (Gemma 4: transformers' `per_layer_config`) are charged layer by layer: a layer's
query width q = heads x its head_dim replaces the paper's D in the Q/O and attention terms (uniform
decoders keep D, the published convention), its K/V term counts the projections it computes (none for a
layer that reads another layer's KV, one where K doubles as V), its FFN its own width (Gemma 4's
double-wide MLP of KV-shared layers, its MoE block beside the dense MLP), plus the per-layer-input gate
and projection (2·n·D·ple).

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
    # Per layer "full", "sliding" or "linear" (`ModelAdapter.layer_kinds`); empty = every layer full.
    layer_kinds: tuple[str, ...] = ()
    window: int = 0  # keys a query of a "sliding" layer sees
    linear_key_dim: int = 0  # k = linear_num_key_heads x linear_key_head_dim
    linear_value_dim: int = 0  # v = linear_num_value_heads x linear_value_head_dim
    linear_value_heads: int = 0  # h_v
    linear_key_head_dim: int = 0  # d_k
    # Per layer (empty = uniform): head_dim, K/V heads, K/V projections computed (2; 1 when K doubles as
    # V; 0 when the layer reads another layer's KV), FFN width.
    layer_head_dims: tuple[int, ...] = ()
    layer_kv_heads: tuple[int, ...] = ()
    kv_projections: tuple[int, ...] = ()
    layer_intermediate: tuple[int, ...] = ()
    per_layer_input: int = 0  # Gemma 4's per-layer-input width (gate D -> ple, projection ple -> D)

    def kind(self, layer: int) -> str:
        return self.layer_kinds[layer] if self.layer_kinds else "full"

    def _at(self, values: tuple[int, ...], layer: int | None, default: int) -> int:
        return values[layer] if values and layer is not None else default

    def __post_init__(self) -> None:
        for name in ("num_layers", "hidden", "intermediate", "num_heads", "num_kv_heads", "head_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"LLMDims.{name} must be a positive int, got {value!r}")

    @classmethod
    def from_config(
        cls, text_config: Any, layer_kinds: Sequence[str] = (), kv_sources: Sequence[int] = ()
    ) -> LLMDims:
        """Build from a transformers-style text config object or a plain dict of the same keys;
        `layer_kinds` (the adapter's `layer_kinds`) charges linear-attention layers O(n) and sliding ones
        O(n·window); `kv_sources` (the adapter's `kv_sources`) marks layers that read another's KV.

        A full VLM config (with a `text_config` inside and no `num_hidden_layers` of its own) is
        accepted too, because callers easily pass `model.config` instead of `model.config.text_config`.
        Attributes a heterogeneous config sets per layer (`per_layer_config`) are read per layer.
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
        layers = int(_get(text_config, "num_hidden_layers"))
        hidden = int(_get(text_config, "hidden_size"))
        heads = int(_get(text_config, "num_attention_heads"))
        head_dims = _per_layer(text_config, "head_dim", layers, hidden // heads)
        # Configs without GQA omit num_key_value_heads (or set it to None): that means MHA.
        kv_heads = _per_layer(text_config, "num_key_value_heads", layers, heads)
        kinds = tuple(layer_kinds)
        return cls(
            num_layers=layers,
            hidden=hidden,
            intermediate=_ffn_width(text_config),
            num_heads=heads,
            num_kv_heads=kv_heads[0],
            head_dim=head_dims[0],
            layer_kinds=kinds,
            window=int(_get(text_config, "sliding_window", 0)) if "sliding" in kinds else 0,
            linear_key_dim=int(_get(text_config, "linear_num_key_heads", 0))
            * int(_get(text_config, "linear_key_head_dim", 0)),
            linear_value_dim=int(_get(text_config, "linear_num_value_heads", 0))
            * int(_get(text_config, "linear_value_head_dim", 0)),
            linear_value_heads=int(_get(text_config, "linear_num_value_heads", 0)),
            linear_key_head_dim=int(_get(text_config, "linear_key_head_dim", 0)),
            **_layer_fields(text_config, kinds, tuple(kv_sources), head_dims, kv_heads),
        )


def _per_layer(config: Any, name: str, layers: int, default: int) -> list[int]:
    """`name` for each layer: a heterogeneous config's per-layer value (its global one is ambiguous and
    transformers refuses to read it), else the global value, else `default`."""
    if isinstance(config, Mapping):
        overrides = config.get("per_layer_config") or {}
        value = int(_get(config, name, default))
        return [
            int((overrides.get(str(i)) or overrides.get(i) or {}).get(name, value)) for i in range(layers)
        ]
    if name in (getattr(config, "per_layer_attributes", None) or ()):
        return [int(_get(layer, name, default)) for layer in config.per_layer_config]
    return [int(_get(config, name, default))] * layers


def _ffn_width(config: Any) -> int:
    """D' of every layer (the dense one; `_layer_fields` doubles it where Gemma 4 does)."""
    intermediate = int(_get(config, "intermediate_size"))
    experts = int(_get(config, "num_experts", 0))
    if _get(config, "enable_moe_block", False) and experts > 0:
        # Gemma 4's MoE layers run the dense MLP and top-k experts beside it.
        return intermediate + int(_get(config, "top_k_experts", 1)) * int(
            _get(config, "moe_intermediate_size")
        )
    if experts > 0 and _get(config, "moe_intermediate_size") is not None:
        # Mixture of experts (Qwen3-VL-MoE): a token runs its top-k experts, so the FFN it pays for is
        # k experts wide. Counted for every layer: the published MoE checkpoints have no dense layers
        # (`mlp_only_layers` empty, `decoder_sparse_step` 1); the router's D x E product is left out.
        return int(_get(config, "num_experts_per_tok", 1)) * int(_get(config, "moe_intermediate_size"))
    return intermediate


def _layer_fields(
    config: Any, kinds: tuple[str, ...], sources: tuple[int, ...], head_dims: list[int], kv_heads: list[int]
) -> dict[str, Any]:
    """The per-layer `LLMDims` fields of a decoder whose layers differ (empty tuples where they do not)."""
    layers = len(head_dims)
    shared = [bool(sources) and sources[i] != i for i in range(layers)]
    # Gemma 4: global layers of `attention_k_eq_v` checkpoints compute K only (V = K).
    k_is_v = bool(_get(config, "attention_k_eq_v", False))
    projections = [
        0 if shared[i] else 1 if k_is_v and kinds and kinds[i] == "full" else 2 for i in range(layers)
    ]
    width = _ffn_width(config)
    double = bool(_get(config, "use_double_wide_mlp", False))
    ffn = [
        width + (int(_get(config, "intermediate_size")) if double and shared[i] else 0) for i in range(layers)
    ]
    uniform = len(set(head_dims)) == 1 and len(set(kv_heads)) == 1
    return {
        "layer_head_dims": () if uniform else tuple(head_dims),
        "layer_kv_heads": () if uniform else tuple(kv_heads),
        "kv_projections": () if set(projections) <= {2} else tuple(projections),
        "layer_intermediate": () if len(set(ffn)) == 1 else tuple(ffn),
        "per_layer_input": int(_get(config, "hidden_size_per_layer_input", 0)),
    }


def layer_flops(n: float, dims: LLMDims, kind: str | None = None, *, layer: int | None = None) -> float:
    """FLOPs (MACs) of one decoder layer for `n` visual tokens. `n` may be fractional (an average).

    `kind` ("full", "sliding" or "linear") defaults to layer `layer`'s (else "full"); `layer` gives the
    layer's own widths on a heterogeneous decoder (else the global ones)."""
    if n < 0:
        raise ValueError(f"token count must be >= 0, got {n}")
    kind = kind or (dims.kind(layer) if layer is not None else "full")
    d_model = float(dims.hidden)
    ffn = 3.0 * n * d_model * float(dims._at(dims.layer_intermediate, layer, dims.intermediate))
    ple = 2.0 * n * d_model * float(dims.per_layer_input)
    if kind == "linear":
        k, v, hv = float(dims.linear_key_dim), float(dims.linear_value_dim), float(dims.linear_value_heads)
        state = hv * dims.linear_key_head_dim * (v / hv if hv else 0.0)  # h_v x d_k x d_v
        return n * d_model * (2.0 * k + 2.0 * v + 2.0 * hv) + n * v * d_model + 3.0 * n * state + ffn + ple
    head_dim = dims._at(dims.layer_head_dims, layer, dims.head_dim)
    # The paper's D for Q, O and attention; a heterogeneous decoder's own query width per layer.
    width = float(dims.num_heads * head_dim) if dims.layer_head_dims else d_model
    kv_width = float(dims._at(dims.layer_kv_heads, layer, dims.num_kv_heads) * head_dim)
    projections = float(dims._at(dims.kv_projections, layer, 2))
    keys = min(n, float(dims.window)) if kind == "sliding" and dims.window > 0 else n  # keys per query
    return (
        2.0 * n * d_model * width + projections * n * d_model * kv_width + 2.0 * n * keys * width + ffn + ple
    )


def visual_flops(tokens_per_layer: Sequence[float], dims: LLMDims) -> float:
    """Sum of `layer_flops` over the decoder; one visual-token count per layer."""
    if len(tokens_per_layer) != dims.num_layers:
        raise ValueError(
            f"need one token count per decoder layer ({dims.num_layers}), got {len(tokens_per_layer)}"
        )
    return sum(layer_flops(n, dims, layer=i) for i, n in enumerate(tokens_per_layer))


def probe_flops(n: float, layers: int, dims: LLMDims) -> float:
    """FLOPs of a probe pass of `n` visual tokens through decoder layers 0..layers-1."""
    return sum(layer_flops(n, dims, layer=i) for i in range(int(layers)))


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
