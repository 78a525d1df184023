"""The plans of the pre-LLM peers with paper/official variants: VisionZip* and DyCoke TTM (their
per-frame kernels are in `ops.debias`: `visionzip_frame`, `dycoke_references`, `dycoke_select`)."""

from __future__ import annotations

import math
from typing import Any

import torch

from mlbcli.models.base import VideoTokens
from mlbcli.selection.base import token_budget
from mlbcli.selection.ops import debias as D
from mlbcli.selection.ops.baselines import frame_budgets
from mlbcli.selection.plan import DecodePolicy, LayerContext, LayerKeep, PrunePlan


def visionzip_official_frame(
    features: torch.Tensor, attention: torch.Tensor, budget: int, ratio: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """VisionZip's code for one frame ([C] cokeshao/HoliTom e9b2972f `visionzip/llava_arch.py`
    L62-181, the LLaVA-OneVision port of dvlab-research/VisionZip 3151f6df): features [N, D], the
    tower's attention [N] -> (kept positions [b], their states [b, D]) in the order the LLM sees them.

    int(b * ratio) dominant tokens (top attention, in position order), then b - that contextual
    targets at arange(0, R, max(1, R // n_ctx))[:n_ctx] of the R other tokens; every remaining token
    joins its most cosine-similar target, which becomes target + mean(members).
    [R] cosine on the features (the reference: the last layer's attention keys).
    """
    from mlbcli.selection.ops.clustering import cosine_assign, stable_top

    N = features.shape[0]
    budget = max(1, min(int(budget), N))
    n_dom = int(budget * ratio)
    dominant = stable_top(attention.float(), n_dom).sort().values  # [n_dom] position order
    rest = torch.ones(N, dtype=torch.bool, device=features.device)
    rest[dominant] = False
    rest_idx = rest.nonzero().squeeze(1)  # [R]
    n_ctx = min(budget - n_dom, rest_idx.numel())
    if n_ctx <= 0:
        return dominant, features[dominant]
    slots = torch.arange(0, rest_idx.numel(), max(1, rest_idx.numel() // n_ctx))[:n_ctx]
    targets = rest_idx[slots]  # [n_ctx]
    is_target = torch.zeros(rest_idx.numel(), dtype=torch.bool, device=features.device)
    is_target[slots] = True
    others = rest_idx[~is_target]
    x = features.float()
    merged = x[targets].clone()
    if others.numel():
        assign = cosine_assign(x[others], x[targets])  # [m] -> target slot
        sums = torch.zeros_like(merged).index_add_(0, assign, x[others])
        counts = torch.bincount(assign, minlength=n_ctx).clamp(min=1)[:, None].float()
        merged = merged + sums / counts
    return torch.cat([dominant, targets]), torch.cat([features[dominant], merged.to(features.dtype)])


def visionzip_plan(video: VideoTokens, keep: float, ratio: float, variant: str) -> PrunePlan:
    """Per frame: dominant + contextual tokens. `official`: the same budget round(N * keep) for every
    frame (the reference takes one per-frame count), saliency from the vision tower when the family
    gives it, the reference's order (`entry_ids`); `paper`: even budgets summing to
    token_budget(T*N, keep), the pseudo-[CLS] proxy, position order."""
    from mlbcli.selection.ops.clustering import frame_saliency

    T, N = video.num_frames, video.tokens_per_frame
    if variant == "official":
        budgets = [token_budget(N, keep)] * T
    else:
        budgets = frame_budgets(token_budget(T * N, keep), T)

    def prune(ctx: LayerContext) -> LayerKeep:
        x = ctx.hidden[0, ctx.visual_slots].view(T, N, -1)  # [T, N, D]
        order, states = [], []
        if variant == "official":
            tower = video.saliency
            attention = frame_saliency(x) if tower is None else tower.to(x.device)  # [T, N]
            for t, b in enumerate(budgets):
                idx, st = visionzip_official_frame(x[t], attention[t], b, ratio)
                order.append(idx + t * N)
                states.append(st)
        else:
            for t, b in enumerate(budgets):
                idx, st = D.visionzip_frame(x[t], b, ratio, variant)  # in the LLM's order
                order.append(idx + t * N)
                states.append(st)
        entry = torch.cat(order)
        return LayerKeep(
            keep=entry.sort().values.to(ctx.visual_slots.device),
            replace=torch.cat(states),  # [k, D] in entry order, written into the kept slots
            entry_ids=entry if variant == "official" else None,
            info={"frame_budgets": budgets, "dominant_ratio": ratio, "variant": variant},
        )

    return PrunePlan(steps={0: prune})


def dycoke_frame_counts(
    T: int, N: int, keep: float, window: int, ratio: float | None, variant: str
) -> tuple[list[tuple[int, int] | None], list[int], str | None]:
    """(reference pairs, tokens kept per frame, keep_note reason or None) of DyCoke TTM.

    `ratio` (DyCoke's K) given: floor((1-K)N) per compared frame; else --keep is the budget, the
    window heads kept whole and the rest split evenly over the other frames.
    """
    refs = D.dycoke_references(T, window, variant)
    whole = [t for t in range(T) if refs[t] is None]
    compared = [t for t in range(T) if refs[t] is not None]
    counts = [N] * T
    if ratio is not None:  # DyCoke's own count
        for t in compared:
            counts[t] = math.floor((1.0 - ratio) * N + 1e-9)
        return refs, counts, None
    rest = token_budget(T * N, keep) - len(whole) * N
    shares = D.allocate(max(0, rest), [1.0] * len(compared), [N] * len(compared))
    for t, share in zip(compared, shares, strict=True):
        counts[t] = share
    reason = None
    if rest < 0:
        reason = (
            f"DyCoke keeps {len(whole)} reference frame(s) whole ({len(whole) * N} tokens, "
            f"{len(whole) / T:.0%} of the frames): its minimum retention"
        )
    return refs, counts, reason


def dycoke_plan(
    video: VideoTokens, keep: float, params: dict[str, Any], variant: str, policy: DecodePolicy | None
) -> PrunePlan:
    """DyCoke TTM before the LLM (and `policy`, the decode-time KV pruning, when on)."""
    T, N = video.num_frames, video.tokens_per_frame
    window, ratio = params["merge_window"], params["merge_ratio"]
    refs, counts, reason = dycoke_frame_counts(T, N, keep, window, ratio, variant)

    def prune(ctx: LayerContext) -> LayerKeep:
        x = ctx.hidden[0, ctx.visual_slots].view(T, N, -1)  # [T, N, D]
        per_frame = D.dycoke_select(x, counts, refs)  # kept positions per frame, DyCoke's order
        order = torch.cat([idx + t * N for t, idx in enumerate(per_frame)])
        info: dict[str, Any] = {
            "merge_window": window,
            "variant": variant,
            "references": [list(r) if r is not None else None for r in refs],
            "kept_per_frame": [int(idx.numel()) for idx in per_frame],
        }
        if ratio is not None:
            info["merge_ratio"] = ratio
        if reason:
            info["keep_note"] = reason
        if variant == "official":  # the code's token order, written into the kept slots
            kept, replace = D.as_slots(order, x.reshape(T * N, -1)[order])
            return LayerKeep(keep=kept.to(ctx.visual_slots.device), replace=replace, info=info)
        return LayerKeep(keep=order.sort().values.to(ctx.visual_slots.device), info=info)

    return PrunePlan(steps={0: prune}, decode_policy=policy)
