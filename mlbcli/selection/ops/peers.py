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


def visionzip_plan(video: VideoTokens, keep: float, ratio: float, variant: str) -> PrunePlan:
    """Per frame (even budgets summing to token_budget(T*N, keep)): dominant + contextual tokens."""
    T, N = video.num_frames, video.tokens_per_frame
    budgets = frame_budgets(token_budget(T * N, keep), T)

    def prune(ctx: LayerContext) -> LayerKeep:
        x = ctx.hidden[0, ctx.visual_slots].view(T, N, -1)  # [T, N, D]
        order, states = [], []
        for t, b in enumerate(budgets):
            idx, st = D.visionzip_frame(x[t], b, ratio, variant)  # in the LLM's order
            order.append(idx + t * N)
            states.append(st)
        kept, replace = D.as_slots(torch.cat(order), torch.cat(states))
        return LayerKeep(
            keep=kept.to(ctx.visual_slots.device),
            replace=replace,
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
