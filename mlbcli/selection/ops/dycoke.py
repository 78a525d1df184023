"""DyCoke TTM (temporal token merging) before the LLM: frame pairs, counts, selection and the plan.

Two readings (`--variant`):
- "paper" (DyCoke §3.2): in each window of `window` frames the first is kept whole; frames 1 and 2 are
  compared with frame 0, frame 3 with frame 2 (later frames of longer windows with the previous
  frame); a trailing partial window the same way.
- "official": `dycole_ttm` of KD-TAO/DyCoke at dd746349 (HEAD; the function last changed in 35cc532),
  `llava/model/llava_arch.py` lines 35-91, window 4 only [C]:
  frame i+1 (i even) keeps the tokens least similar to frame i at the same position (pair (i, i+1));
  frame a+2 of the window at a is compared with frame a (pair (a, a+2)) for a in range(0, T-4, 4), so
  the last window's frame a+2 (a >= T-4) is kept whole; frames a and a+2 otherwise whole; an odd T
  drops the last frame (its loops stop at T-1). Counts int((1-K)N) per compared frame, K the code's
  `merging_ratio`. The kept tokens are concatenated frame by frame, a compared frame's in ascending
  similarity (`topk(largest=False)`), a whole frame's in position order. The code copies rows: the
  states are the input features, nothing is merged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from mlbcli.models.base import VideoTokens
from mlbcli.selection.base import token_budget
from mlbcli.selection.ops.debias import allocate, as_slots
from mlbcli.selection.plan import DecodePolicy, LayerContext, LayerKeep, PrunePlan

Pair = tuple[int, int]


def dycoke_ratio(keep: float, window: int) -> float:
    """DyCoke's pruning ratio K giving retention ~keep: keep = (1 + (window-1)(1-K)) / window."""
    return min(1.0, max(0.0, 1.0 - (window * keep - 1.0) / (window - 1)))


def dycoke_references(num_frames: int, window: int = 4, variant: str = "paper") -> list[Pair | None]:
    """Per frame, the frame pair whose same-position cosine ranks its tokens, or None (no ranking: the
    frame is kept whole, or, official variant, dropped; `dycoke_dropped` says which)."""
    T = num_frames
    refs: list[Pair | None] = [None] * T
    if variant == "official":
        if window != 4:
            raise ValueError("the official DyCoke variant is defined for 4-frame windows")
        for i in range(0, T - 1, 2):  # the code's `similarities[i // 2]`: pair (i, i + 1)
            refs[i + 1] = (i, i + 1)
        for a in range(0, T - 4, 4):  # `odd_similarities`: frame a+2 vs frame a, not in the last window
            refs[a + 2] = (a, a + 2)
        return refs
    for start in range(0, T, window):
        for j in range(1, min(window, T - start)):
            ref = start if j <= 2 else start + j - 1
            refs[start + j] = (ref, start + j)
    return refs


def dycoke_dropped(num_frames: int, variant: str) -> list[int]:
    """Frames the official code leaves out: the last of an odd T (its loops run over pairs up to T-1).
    For T <= 4 the code fails (`torch.stack` of an empty list); there the last frame is kept whole."""
    if variant == "official" and num_frames % 2 and num_frames > 4:
        return [num_frames - 1]
    return []


def _similarity(x: torch.Tensor, pair: Pair, variant: str) -> torch.Tensor:
    """[N] same-position cosine of the frames of `pair` in x [T, N, D] (fp32)."""
    a, b = x[pair[0]], x[pair[1]]
    if variant == "official" and pair[1] == pair[0] + 1:  # the code normalises adjacent frames first
        a, b = F.normalize(a, p=2, dim=1), F.normalize(b, p=2, dim=1)
    return F.cosine_similarity(a, b, dim=1)


def dycoke_select(
    features: torch.Tensor, counts: Sequence[int], refs: Sequence[Pair | None], variant: str = "paper"
) -> list[torch.Tensor]:
    """DyCoke TTM: [T, N, D] -> per frame the kept positions, in the order DyCoke emits them.

    A frame with a reference pair (a, b) keeps its `counts[t]` tokens with the lowest cosine between
    frames a and b at the same position (ascending similarity, ties by position: `topk(largest=False)`
    order on tie-free input); a frame without one keeps its first `counts[t]` (N: whole; 0: dropped).
    """
    T, N, _ = features.shape
    x = features.float()
    out = []
    for t in range(T):
        count = max(0, min(int(counts[t]), N))
        pair = refs[t]
        if pair is None:
            out.append(torch.arange(count))
            continue
        sim = _similarity(x, pair, variant)  # [N]
        out.append(torch.sort(sim, stable=True).indices[:count])
    return out


def dycoke_keep(features: torch.Tensor, ratio: float, window: int = 4) -> torch.Tensor:
    """DyCoke TTM (paper pairing) with DyCoke's own count floor((1 - ratio) * N) per compared frame:
    [T, N, D] -> [T, N] bool kept mask."""
    T, N, _ = features.shape
    n_keep = math.floor((1.0 - ratio) * N + 1e-9)
    refs = dycoke_references(T, window)
    counts = [N if ref is None else n_keep for ref in refs]
    keep = torch.zeros(T, N, dtype=torch.bool)
    for t, idx in enumerate(dycoke_select(features, counts, refs)):
        keep[t, idx] = True
    return keep


def dycoke_frame_counts(
    T: int, N: int, keep: float, window: int, ratio: float | None, variant: str
) -> tuple[list[Pair | None], list[int], str | None]:
    """(reference pairs, tokens kept per frame, keep_note reason or None) of DyCoke TTM.

    `ratio` (DyCoke's K) given: per compared frame int((1-K)N) (official, the code's float arithmetic)
    or floor((1-K)N) (paper). Else --keep is the budget token_budget(T*N, keep), whole frames kept
    whole and the rest over the compared frames: split evenly (paper), or one count for every
    compared frame, round(rest / compared) (official: the code has one count, so --keep picks it).
    """
    refs = dycoke_references(T, window, variant)
    dropped = dycoke_dropped(T, variant)
    whole = [t for t in range(T) if refs[t] is None and t not in dropped]
    compared = [t for t in range(T) if refs[t] is not None]
    counts = [0 if t in dropped else N for t in range(T)]
    if ratio is not None:  # DyCoke's own count
        count = int((1 - ratio) * N) if variant == "official" else math.floor((1.0 - ratio) * N + 1e-9)
        for t in compared:
            counts[t] = count
        return refs, counts, None
    rest = token_budget(T * N, keep) - len(whole) * N
    if variant == "official":
        even = math.floor(max(0, rest) / max(1, len(compared)) + 0.5)
        shares = [min(N, even)] * len(compared)
    else:
        shares = allocate(max(0, rest), [1.0] * len(compared), [N] * len(compared))
    for t, share in zip(compared, shares, strict=True):
        counts[t] = share
    reason = None
    if dropped and rest > len(compared) * N:  # the compared frames are full; the dropped one is gone
        reason = f"DyCoke's code drops frame {dropped[0]} (the last of an odd number of frames)"
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
        per_frame = dycoke_select(x, counts, refs, variant)  # kept positions per frame, DyCoke's order
        order = torch.cat([idx + t * N for t, idx in enumerate(per_frame)])  # [K] frame-major
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
        device = ctx.visual_slots.device
        if variant == "official":  # the code's token order: its states written into the kept slots
            kept, replace = as_slots(order, x.reshape(T * N, -1)[order])
            entry = ctx.visual_ids[order.to(ctx.visual_ids.device)]  # [K] ids in the code's order
            return LayerKeep(keep=kept.to(device), replace=replace, info=info, entry_ids=entry)
        return LayerKeep(keep=order.sort().values.to(device), info=info)

    return PrunePlan(steps={0: prune}, decode_policy=policy)
