"""DyCoke stage 2: dynamic KV-cache pruning while decoding, as an `engine.DecodePolicy`.

[C] KD-TAO/DyCoke at dd746349 (HEAD), `llava/model/language_model/modeling_qwen2.py`:
    `PrunableDynamicCache.update / update_cache / dycoke_pruning` (lines 47-114) and the decoder loop's
    DyCoke branch in `Qwen2Model.forward` (lines 1136-1150). Per decode forward (one new token):
    - layers < L reset the pruned view (`kv_cache = None`): they, and layer L-1 whose attention is read,
      see the whole cache;
    - at layer L, the new token's attention of layer L-1 (mean over heads, its one query row) over the
      video span is compared by cosine with the previous step's (the first step has none: similarity 0),
      and the previous step's is replaced by this one, every step;
    - below 0.9, layers >= L of THIS step see every key outside the span plus the top int(m * (1 - P))
      video keys by this step's attention; otherwise they see the whole cache. Nothing carries over to
      the next step but the attention compared with. Defaults: L = 3, P = 0.7 (README's command).
    - the span is `image_token_length = size - 1` (`llava_arch.py:390`) of the TTM output's `size` video
      tokens, so m = n - 1: the last video key is outside it and always visible (`variant` official;
      "paper" scores all n video keys, DyCoke §3.3 prunes "the visual tokens").
[R] the video span is where the row's visual keys are (the code uses a fixed start, 14); the first step
    of every request has nothing to compare with (the code keeps the last attention on the model, so
    a request's first step is compared with the previous request's last); the threshold is a parameter
    (the code's 0.9 is the default).
[R] attention from our engine's decode-time probe (SDPA runs as usual; the one query row's softmax is
    recomputed beside it), over the keys the token sees at layer L-1 (all of them: nothing is hidden
    below L).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from mlbcli.selection.ops.clustering import stable_top
from mlbcli.selection.plan import DecodeContext, DecodePolicy


class DyCokeKV(DecodePolicy):
    """Per step: when this step's video attention moved (cosine with the previous step's < threshold),
    hide all but its top (1 - ratio) video keys from layers >= `layer`; otherwise hide nothing."""

    needs_attention = True

    def __init__(self, layer: int, ratio: float, threshold: float, last_key_visible: bool = False):
        self.layer = int(layer)
        self.ratio = float(ratio)
        self.threshold = float(threshold)
        # official: the code's video span stops one key short, so the last video key is never scored
        self.last_key_visible = bool(last_key_visible)

    def start(self) -> Any:
        return None  # the previous step's scored attention [m]

    def step(self, ctx: DecodeContext, state: Any) -> tuple[torch.Tensor | None, Any]:
        attention = ctx.attention  # [n] over ctx.visual_ids, this step, layer - 1
        assert attention is not None
        n = attention.numel()
        m = n - 1 if self.last_key_visible and n > 0 else n  # keys the policy scores and may hide
        scored = attention[:m]  # [m]
        previous: torch.Tensor | None = state
        similarity = 0.0  # the first step has nothing to compare with: the code's 0
        if previous is not None and previous.shape == scored.shape:
            similarity = float(F.cosine_similarity(scored, previous, dim=0))
        if similarity >= self.threshold:
            return None, scored  # the whole cache this step
        keep = stable_top(scored, int(m * (1 - self.ratio)))  # [k] indices into the m scored keys
        hidden = torch.ones(n, dtype=torch.bool, device=attention.device)
        hidden[keep] = False
        hidden[m:] = False  # the unscored last key stays visible
        return ctx.visual_ids[hidden.to(ctx.visual_ids.device)], scored

    def __repr__(self) -> str:
        return (
            f"DyCokeKV(layer={self.layer}, ratio={self.ratio}, threshold={self.threshold}, "
            f"last_key_visible={self.last_key_visible})"
        )
