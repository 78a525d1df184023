"""The vision tower's own attention as token saliency (`--saliency tower`, `VideoTokens.saliency`).

What the official code of the methods that read it takes (read at the commits of the README table):

- LLaVA-OneVision / LLaVA-Video (SigLIP, no CLS): HoliTom (`LLaVA-NeXT/llava/model/multimodal_encoder/
  siglip_encoder.py`, `attentions[-1].mean(dim=1).mean(dim=1)`), its VisionZip port and FlashVID
  (`flashvid/siglip_encoder.py`, `attn_weights.mean(1).mean(1)`) read the attention of the tower layer
  whose output becomes the features, averaged over heads and over query patches (the attention each
  patch receives), [T, g*g], then pooled to the token grid like the features (bilinear, `get_2dPool`).
  FastVID reads the pooling head of the full SigLIP checkpoint instead, which the llava-hf checkpoints
  do not ship; mlb gives it the same layer attention.
- Qwen2-VL / Qwen2.5-VL / Qwen3-VL: FlashVID (`flashvid/modeling_qwen2_5_vl.py`) reads the last vision
  block's attention inside each temporal patch, mean over heads and queries, averaged over the
  spatial_merge_size^2 patches of each merged token and put back in raster order (Qwen2.5-VL's blocks
  run in window order).

How it is read: one attention function registered with transformers' `AttentionInterface`
(`mlb_saliency`). Inside `capture_attention`, the tower's config names it, so every attention call of
the tower comes through it: it runs the tower's own implementation (SDPA, flash...) for the output and,
for the one module asked about only, also computes that layer's softmax (float32, one head at a time)
and keeps its mean over heads and queries. The config is restored when the block ends.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

#: The name the capture is registered under in transformers' `AttentionInterface`.
INTERFACE_NAME = "mlb_saliency"


@dataclass
class AttentionCapture:
    """The attention received by each token of `module`'s calls: [rows, S] per call, in call order."""

    module: Any
    fallback: str  # the tower's own attention implementation, which still computes every output
    rows: list[torch.Tensor] = field(default_factory=list)

    def flat(self) -> torch.Tensor | None:
        """All tokens the module saw, in sequence order ([sum of rows * S]); None if it never ran."""
        import torch

        if not self.rows:
            return None
        return torch.cat([row.reshape(-1) for row in self.rows])


_ACTIVE: contextvars.ContextVar[AttentionCapture | None] = contextvars.ContextVar(
    "mlb_saliency", default=None
)
_REQUESTED: contextvars.ContextVar[bool] = contextvars.ContextVar("mlb_saliency_requested", default=False)


@contextlib.contextmanager
def requested(enabled: bool = True) -> Iterator[None]:
    """Ask the adapters to capture tower saliency while the block runs (the pipeline does, for a method
    that reads it with `--saliency tower`); without it the tower runs untouched."""
    token = _REQUESTED.set(enabled)
    try:
        yield
    finally:
        _REQUESTED.reset(token)


def is_requested() -> bool:
    return _REQUESTED.get()


def received_attention(
    query: torch.Tensor, key: torch.Tensor, scaling: float, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """[B, H, S, d] queries/keys -> [B, S]: softmax(q k^T * scaling) averaged over heads and query rows.

    One head at a time in float32 ([S, S] at most in memory), as an eager softmax would compute it.
    """
    import torch

    batch, heads, length = query.shape[0], query.shape[1], key.shape[2]
    out = torch.zeros(batch, length, dtype=torch.float32, device=query.device)
    for head in range(heads):
        q = query[:, head].float()  # [B, S_q, d]
        k = key[:, head if key.shape[1] == heads else head * key.shape[1] // heads].float()  # [B, S_k, d]
        scores = torch.matmul(q, k.transpose(1, 2)) * scaling  # [B, S_q, S_k]
        if mask is not None:
            scores = scores + (mask if mask.dtype != torch.bool else (~mask).float() * -1e30)[:, 0]
        out += torch.softmax(scores, dim=-1).mean(dim=1)  # [B, S_k]
    return out / heads


def _attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, **kwargs: Any) -> Any:
    """The registered attention function: the tower's own output, plus the capture for one module."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    capture = _ACTIVE.get()
    if capture is None:
        raise RuntimeError(f"the {INTERFACE_NAME!r} attention runs only inside capture_attention")
    if module is capture.module:
        scaling = kwargs.get("scaling") or query.shape[-1] ** -0.5
        capture.rows.append(received_attention(query, key, float(scaling), attention_mask))
    if capture.fallback == "eager":
        import importlib

        eager = importlib.import_module(type(module).__module__).eager_attention_forward
        return eager(module, query, key, value, attention_mask, **kwargs)
    return ALL_ATTENTION_FUNCTIONS[capture.fallback](module, query, key, value, attention_mask, **kwargs)


@contextlib.contextmanager
def capture_attention(module: Any) -> Iterator[AttentionCapture]:
    """Capture what `module` (one attention module of a tower) attends to while the block runs.

    The module's config (shared by the tower's layers) names the registered function for the block's
    duration; each other layer goes straight to the tower's own implementation.
    """
    from transformers import AttentionInterface

    AttentionInterface.register(INTERFACE_NAME, _attention)
    config = module.config
    fallback = config._attn_implementation or "eager"
    capture = AttentionCapture(module, fallback)
    token = _ACTIVE.set(capture)
    config._attn_implementation = INTERFACE_NAME
    try:
        yield capture
    finally:
        config._attn_implementation = fallback
        _ACTIVE.reset(token)


@contextlib.contextmanager
def maybe_capture(module: Any | None) -> Iterator[AttentionCapture | None]:
    """`capture_attention(module)` when saliency is requested and the tower has a module to read."""
    if module is None or not is_requested():
        yield None
        return
    with capture_attention(module) as capture:
        yield capture


# -- family layouts: captured patches -> [T, N] per token of the LLM --------------------------------------
def siglip_feature_attention(tower: Any, feature_layer: int | list[int]) -> Any | None:
    """The attention module of the SigLIP layer whose output is the features (`vision_feature_layer`,
    the last of a list); None when the features are the embeddings (nothing attended)."""
    layers = getattr(tower, "vision_model", tower).encoder.layers  # transformers 5: no vision_model level
    index = feature_layer[-1] if isinstance(feature_layer, (list, tuple)) else int(feature_layer)
    index = index % (len(layers) + 1)  # hidden_states[0] are the embeddings
    return None if index == 0 else layers[index - 1].self_attn


def siglip_token_saliency(capture: AttentionCapture | None, frames: int, side: int) -> torch.Tensor | None:
    """[frames * g*g] patch attention -> [frames, ceil(g/2)^2], pooled like OneVision's features
    (bilinear to ceil(g/2) x ceil(g/2), transformers' `apply_pooling`, the official `get_2dPool`)."""
    import torch.nn.functional as F

    flat = None if capture is None else capture.flat()
    if flat is None:
        return None
    grid = flat.view(frames, 1, side, side)  # [T, 1, g, g]
    pooled = F.interpolate(grid, size=[math.ceil(side / 2)] * 2, mode="bilinear")
    return pooled.reshape(frames, -1)  # [T, N]


def qwen_token_saliency(
    capture: AttentionCapture | None, merge_size: int, window_index: torch.Tensor | None = None
) -> torch.Tensor | None:
    """[sum t*h*w] patch attention (per temporal patch, in the block's order) -> [sum t*n] per merged
    token: mean over its merge_size^2 patches (consecutive in the tower's layout), back to raster order
    when the blocks run in window order (Qwen2.5-VL: `window_index`)."""
    import torch

    flat = None if capture is None else capture.flat()
    if flat is None:
        return None
    tokens = flat.view(-1, merge_size * merge_size).mean(dim=-1)  # [sum t*n], block order
    if window_index is not None:
        tokens = tokens[torch.argsort(window_index.to(tokens.device))]
    return tokens


def qwen_last_block_attention(visual: Any) -> Any:
    """The attention module of a Qwen vision tower's last block (FlashVID's `return_logits` block)."""
    return visual.blocks[-1].attn


def qwen_window_index(visual: Any, grid_thw: torch.Tensor) -> torch.Tensor | None:
    """The merged-token order of a windowed tower's blocks (Qwen2.5-VL), None for raster-order towers."""
    if not hasattr(visual, "fullatt_block_indexes"):
        return None
    from transformers.vision_utils import get_vision_window_index

    window_index, _ = get_vision_window_index(
        grid_thw, visual.spatial_merge_size, visual.window_size, visual.patch_size
    )
    return window_index
