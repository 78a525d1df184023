"""DyCoke stage 2: dynamic KV-cache pruning while decoding, as an `engine.DecodePolicy`.

[C] KD-TAO/DyCoke (dd746349) `llava/model/language_model/modeling_qwen2.py` (`PrunableDynamicCache`,
    `dycoke_pruning`, `update_cache`): at every decode step, the new token's attention at layer L-1
    (mean over heads, its one query row) over the video tokens is compared (cosine) with the previous
    step's; when the cosine is < 0.9 (and at the first step) the kept set is re-chosen as the top
    int(n * (1 - P)) video tokens by that attention; layers >= L of this and later steps attend only to
    the kept video tokens and to every non-video token. The cache itself is kept whole (a gather per
    step), so a later step can bring a token back. Defaults: L = 3, P = 0.7 (README's command).
[R] between re-choices the reference reuses an index list built for a shorter sequence, so the tokens
    generated since are left out of the gather; here every non-video key (prompt and generated) stays
    visible and only the video keys are masked.
[R] attention from our engine's decode-time probe (SDPA runs as usual; the one query row's softmax is
    recomputed beside it), over the keys the token sees at layer L-1.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from mlbcli.selection.ops.clustering import stable_top
from mlbcli.selection.plan import DecodeContext, DecodePolicy


class DyCokeKV(DecodePolicy):
    """Hide all but the top (1 - ratio) video keys from layers >= `layer`, re-chosen when attention moves."""

    needs_attention = True

    def __init__(self, layer: int, ratio: float, threshold: float):
        self.layer = int(layer)
        self.ratio = float(ratio)
        self.threshold = float(threshold)

    def start(self) -> Any:
        return (None, None)  # (previous step's attention [n], hidden ids)

    def step(self, ctx: DecodeContext, state: Any) -> tuple[torch.Tensor | None, Any]:
        previous, hidden = state
        attention = ctx.attention
        assert attention is not None
        similar = (
            previous is not None
            and previous.shape == attention.shape
            and float(F.cosine_similarity(attention, previous, dim=0)) >= self.threshold
        )
        if not similar:
            keep = stable_top(attention, int(attention.numel() * (1 - self.ratio)))
            mask = torch.ones(attention.numel(), dtype=torch.bool, device=attention.device)
            mask[keep] = False
            hidden = ctx.visual_ids[mask.to(ctx.visual_ids.device)]
        return hidden, (attention, hidden)

    def __repr__(self) -> str:
        return f"DyCokeKV(layer={self.layer}, ratio={self.ratio}, threshold={self.threshold})"
