"""EVS (Efficient Video Sampling, NVIDIA, arXiv 2510.14624) as vLLM ships it (`--video-pruning-rate q`).

[C] vLLM `vllm/multimodal/evs.py` (`compute_retention_mask`, `compute_retained_tokens_count`):
    dissimilarity of a token = 1 - cosine with the token at the same grid position in the previous
    frame (frame = the LLM's temporal token row: a Qwen temporal patch of 2 frames); every token of the
    first frame gets 255 (always kept); the `max(N, int(T*N*(1-q)))` most dissimilar tokens over the
    whole video are kept (a stable descending sort: ties go to the earlier token); kept tokens keep
    their original (t, h, w) positions (vLLM's `recompute_mrope_positions`).
[C] rate convention: `--keep` = 1 - q, and the count is computed as vLLM computes it from q = 1 - keep
    (floor, not round), so `--keep 0.25` keeps the very tokens vLLM keeps at `--video-pruning-rate 0.75`.
[R] the cosine is computed in fp32 on the LLM input embeddings (vLLM: the embeddings' dtype, bf16).
[R] vLLM runs EVS on Qwen2.5-VL / Qwen3-VL only; here it runs on every family (the same rule on the
    projector outputs; LLaVA-NeXT re-sequences positions as that family always does).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mlbcli.models.base import VideoTokens
from mlbcli.selection.base import token_budget
from mlbcli.selection.ops.baselines import layer0_features, missed
from mlbcli.selection.plan import LayerContext, LayerKeep, PrunePlan


def evs_count(num_frames: int, tokens_per_frame: int, keep: float) -> int:
    """Tokens EVS keeps: vLLM's `max(N, int(T*N*(1-q)))` with q = 1 - keep (the first frame is a floor)."""
    q = 1.0 - keep
    total = num_frames * tokens_per_frame
    return min(total, max(tokens_per_frame, int(total * (1 - q))))


def evs_keep(features: torch.Tensor, count: int) -> torch.Tensor:
    """[T, N, D] -> the `count` kept flat ids t*N+i, ascending (vLLM's retention mask, as indices)."""
    T, N, _ = features.shape
    x = features.float()
    dissimilarity = 1 - F.cosine_similarity(x[1:], x[:-1], dim=-1)  # [T-1, N]
    first = torch.full((1, N), 255.0, device=x.device)  # the first frame always wins
    flat = torch.cat([first, dissimilarity]).flatten()  # [T*N]
    order = torch.argsort(flat, descending=True, stable=True)
    return order[:count].sort().values


def evs_plan(video: VideoTokens, keep: float) -> PrunePlan:
    """EVS before the LLM at rate q = 1 - keep (keep < 1)."""
    T, N = video.num_frames, video.tokens_per_frame
    count = evs_count(T, N, keep)
    note = missed(count, token_budget(T * N, keep), T, "EVS keeps the whole first frame")

    def prune(ctx: LayerContext) -> LayerKeep:
        kept = evs_keep(layer0_features(ctx.hidden, ctx.visual_slots, T, N), count)
        info: dict = {"pruning_rate": round(1.0 - keep, 6), "kept": count}
        if note:
            info["keep_note"] = note
        return LayerKeep(keep=kept.to(ctx.visual_slots.device), info=info)

    return PrunePlan(steps={0: prune})
