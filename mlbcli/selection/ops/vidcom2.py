"""VidCom2 (Video Compression Commander, EMNLP'25, arXiv 2505.14454), pre-LLM, no attention scores.

[C] xuyang-liu16/VidCom2 `token_compressor/vidcom2/vidcom2.py` (944a17d1, golden fixtures
    `tests/golden/methods/vidcom2.pt`) and vLLM's port `video_prune/vidcom2.py` (0f17ee06): on the
    projector outputs of the whole video [T*N, D]
    1. keep the lowest-variance half of the channels (variance over all tokens), L2-normalise tokens;
    2. multi-scale Gaussian similarity, sum over alpha in {1/8, 1/4, 1/2, 1, 2} of
       exp(-||x - c||^2 / (2 alpha)), to the video centre (v) and to the token's frame centre (f);
    3. frame budgets: uniqueness u_t = -mean_i v_ti, p = softmax((u - max u) / 0.01),
       scale_t = min(1, keep * (1 + p_t - mean p)), k_t = clamp(round(scale_t * N), 1, N);
    4. in every frame keep the k_t tokens with the lowest v + f (the least redundant), per frame in
       position order, frames in order.
[C] `--variant official` is the authors' code: sum_t k_t tokens (content-dependent, a few tokens off
    the budget: `keep_note`), contiguous positions (LLaVA-OneVision's path concatenates the kept
    tokens, `models/llava.py` L152-161). Equal to it on every tie-free golden case.
[C] `--variant vllm`, vLLM's reconciliation (not in the authors' repo): drop the kept tokens with the
    highest v + f, or add the dropped ones with the lowest, until exactly `max(T, int(T*N*(1-q)))`
    remain, q = 1 - keep (vLLM's rate convention, as `evs`); original positions.
[R] ties: the authors' `topk(sorted=False)` leaves the kept set among equal scores at a frame's budget
    edge to the kernel; here a stable sort keeps the lower index (the golden 'tied' cases: same count
    and scores, other tokens). fp32 throughout.
[R] runs on every family (the reference covers LLaVA-OV/Video and Qwen2/2.5/3-VL; vLLM Qwen3-VL).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mlbcli.models.base import VideoTokens
from mlbcli.selection.base import token_budget
from mlbcli.selection.ops.baselines import layer0_features, missed
from mlbcli.selection.ops.clustering import stable_top
from mlbcli.selection.plan import LayerContext, LayerKeep, PrunePlan

ALPHAS = tuple(2.0**k for k in range(-3, 2))
LOW_VARIANCE_CHANNELS = 0.5
FRAME_TEMPERATURE = 0.01


def vidcom2_count(num_frames: int, tokens_per_frame: int, keep: float) -> int:
    """vLLM's target: `max(T, int(T*N*(1-q)))` with q = 1 - keep (one token per frame at least)."""
    total = num_frames * tokens_per_frame
    return min(total, max(num_frames, int(total * (1 - (1.0 - keep)))))


def _gaussian(x: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    distance = ((x - centre) ** 2).sum(dim=-1)
    return sum(torch.exp(-distance / (2.0 * a)) for a in ALPHAS)  # type: ignore[return-value]


def vidcom2_scores(features: torch.Tensor, keep: float) -> tuple[torch.Tensor, list[int]]:
    """[T, N, D] -> (redundancy v + f [T, N], per-frame budgets k_t before reconciliation)."""
    T, N, D = features.shape
    flat = features.reshape(T * N, D).float()
    variances = flat.var(dim=0, unbiased=False)
    channels = stable_top(variances, max(1, int(D * LOW_VARIANCE_CHANNELS)), largest=False)
    frames = F.normalize(flat[:, channels].view(T, N, -1), dim=-1)
    v = _gaussian(frames, frames.mean(dim=(0, 1), keepdim=True))  # [T, N]
    f = _gaussian(frames, frames.mean(dim=1, keepdim=True))  # [T, N]
    uniqueness = -v.mean(dim=-1)  # [T]
    p = torch.softmax((uniqueness - uniqueness.max()) / FRAME_TEMPERATURE, dim=0)
    scales = (keep * (1 + p - p.mean())).clamp(max=1.0)
    budgets = (scales * N).round().long().clamp(min=1, max=N).tolist()
    return v + f, budgets


def vidcom2_keep(features: torch.Tensor, keep: float, target: int | None) -> tuple[torch.Tensor, list[int]]:
    """[T, N, D] -> (kept flat ids ascending; per-frame budgets of step 3): exactly `target` of them
    (vLLM's reconciliation), or with `target` None the sum of the budgets (the authors' code)."""
    T, N, _ = features.shape
    redundancy, budgets = vidcom2_scores(features, keep)
    mask = torch.zeros(T, N, dtype=torch.bool, device=features.device)
    for t, k in enumerate(budgets):
        mask[t, stable_top(redundancy[t], k, largest=False)] = True
    flat_mask, flat_score = mask.flatten(), redundancy.flatten()
    current = int(flat_mask.sum())
    if target is None:  # the authors' code: the per-frame budgets as they round
        return flat_mask.nonzero().squeeze(1), budgets
    if current > target:  # drop the most redundant of the kept
        kept = flat_mask.nonzero().squeeze(1)
        flat_mask[kept[stable_top(flat_score[kept], current - target)]] = False
    elif current < target:  # add the least redundant of the dropped
        dropped = (~flat_mask).nonzero().squeeze(1)
        flat_mask[dropped[stable_top(flat_score[dropped], target - current, largest=False)]] = True
    return flat_mask.nonzero().squeeze(1), budgets


def vidcom2_plan(video: VideoTokens, keep: float, variant: str = "official") -> PrunePlan:
    """VidCom2 before the LLM (keep < 1): the authors' per-frame budgets (`official`) or exactly
    `vidcom2_count` tokens (`vllm`)."""
    T, N = video.num_frames, video.tokens_per_frame
    target = vidcom2_count(T, N, keep) if variant == "vllm" else None
    budget = token_budget(T * N, keep)

    def prune(ctx: LayerContext) -> LayerKeep:
        kept, budgets = vidcom2_keep(layer0_features(ctx.hidden, ctx.visual_slots, T, N), keep, target)
        why = (
            "VidCom2 keeps at least one token per frame"
            if target is not None
            else "VidCom2's per-frame budgets round(scale_t * N) (the authors' code) miss the budget"
        )
        note = missed(int(kept.numel()), budget, T, why)
        info: dict = {"frame_budgets": budgets, "kept": int(kept.numel())}
        if note:
            info["keep_note"] = note
        return LayerKeep(keep=kept.to(ctx.visual_slots.device), info=info)

    return PrunePlan(steps={0: prune})
