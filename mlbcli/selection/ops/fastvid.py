"""FastVID (NeurIPS'25, arXiv 2503.11187): dynamic temporal segmentation + density spatio-temporal
pruning, before the LLM, no LLM attention.

[C] LunarShen/FastVID (a40a109c) `fastvid_llavavideo/.../modeling_qwen2.py` (the plain version; the
    OneVision tree computes the same densities in parallel):
    - DySeg: cosine of adjacent frames' global features; a segment boundary after frame t when the pair
      is among the c-1 least similar (c = `fastvid_segments`, 8) or its cosine < tau (0.9);
    - per segment of L frames with R retained tokens: R_ctx = int(R * d) contextual (d = 0.4), the rest
      salient, split evenly over the frames (the first frames take the remainder);
    - salient: per frame, the top tokens by the vision tower's attention;
    - contextual (DTM): ceil(L / p) anchor frames (p = 4: frames i % p == 0, the list then reversed, so
      the anchors sit at the segment's end), R_ctx split evenly over them; on every anchor frame the
      non-salient tokens are scored by DPC-kNN (k = 4 nearest, the token itself included) and the top
      ones become anchors; every token of the segment that is neither salient nor one of this frame's
      anchors joins its most cosine-similar anchor, and an anchor becomes
      w * anchor + (1 - w) * mean(members), w = max(beta, 1 / (members + 1)), beta = 0.6;
    - kept tokens keep their original positions (`position_ids = keep_indexs`).
[C] `--variant official` (the default): the reference's budget, int(N * keep) tokens per frame (floored),
    segment_retain = that * L (so T * int(N * keep) in all, up to T fewer than token_budget: the row's
    `keep_note` says so when it misses by more than the contract's rounding); saliency = the vision
    tower's attention (`VideoTokens.saliency`, `--saliency tower`) where the family gives it.
[R] global frame feature: `VideoTokens.frame_features` (vision-tower mean) where the family has them,
    else the frame's mean visual token (the reference: SigLIP's pooling head on LLaVA; the mean of the
    merger outputs on Qwen2.5-VL). Saliency without `VideoTokens.saliency`: the pseudo-[CLS] proxy
    (`clustering.frame_saliency`; the reference reads SigLIP's head / last-block attention).
[R] `--variant exact`: exactly token_budget(T*N, keep), split evenly over frames and summed per
    segment (+0-1 token per frame against the reference). Both variants: anchor budgets are capped at the non-salient tokens of their frame,
    the excess going to salient tokens of the segment (the reference overflows at high keep).
[R] c-1 is capped at T-1 boundaries. Deterministic density ties (see `clustering`).
[R] not built: the Qwen2.5-VL tree's `DySeg_ignore` frame folding (budget only on the last frame of
    runs of near-identical frames, cosine >= 0.95).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from mlbcli.models.base import VideoTokens
from mlbcli.selection.base import token_budget
from mlbcli.selection.ops import debias as D
from mlbcli.selection.ops.baselines import frame_budgets, layer0_features, merged_index, missed
from mlbcli.selection.ops.clustering import (
    cosine_assign,
    density_peaks,
    even_split,
    frame_saliency,
    stable_top,
)
from mlbcli.selection.plan import LayerContext, LayerKeep, PrunePlan

DENSITY_NEIGHBOURS = 4


def dynamic_segments(frame_vectors: torch.Tensor, count: int, threshold: float) -> list[tuple[int, int]]:
    """DySeg: [T, Dv] -> [(first, stop), ...] segments covering 0..T-1 in order."""
    T = frame_vectors.shape[0]
    if T <= 1:
        return [(0, T)]
    v = torch.nn.functional.normalize(frame_vectors.float(), dim=-1)
    similarity = (v[:-1] * v[1:]).sum(dim=1)  # [T-1]
    cuts = set(stable_top(similarity, min(count - 1, T - 1), largest=False).tolist())
    cuts |= set((similarity < threshold).nonzero().squeeze(1).tolist())
    bounds = [0] + [c + 1 for c in sorted(cuts)] + [T]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def segment_plan(length: int, retain: int, tokens: int, d: float, p: int) -> tuple[list[int], list[int]]:
    """Per-frame (salient, contextual) counts of one segment of `length` frames retaining `retain`."""
    contextual = int(retain * d)
    salient = retain - contextual
    if length == 1:
        sal, ctx = [salient], [contextual]
    else:
        sal = even_split(salient, length)
        anchors = even_split(contextual, math.ceil(length / p))
        ctx = [anchors[i // p] if i % p == 0 else 0 for i in range(length)][::-1]
    # [R] capacity: a frame holds N tokens; excess anchors become salient tokens elsewhere in the segment
    sal = [min(s, tokens) for s in sal]
    ctx = [min(c, tokens - s) for c, s in zip(ctx, sal, strict=True)]
    missing = retain - sum(sal) - sum(ctx)
    if missing > 0:
        extra = D.allocate(missing, [1.0] * length, [tokens - s - c for s, c in zip(sal, ctx, strict=True)])
        sal = [s + e for s, e in zip(sal, extra, strict=True)]
    return sal, ctx


def official_frame_budgets(num_frames: int, tokens: int, keep: float) -> list[int]:
    """The reference's per-frame retention: int(N * keep) every frame (at least one token: the
    reference would keep none and fail)."""
    return [max(1, int(tokens * keep))] * num_frames


def fastvid_select(
    features: torch.Tensor,
    frame_vectors: torch.Tensor,
    per_frame: list[int],
    params: dict[str, Any],
    saliency: torch.Tensor | None = None,
    owner: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """[T, N, D] -> (kept flat ids ascending [k], their states [k, D], info); k = sum(per_frame).

    `per_frame` [T]: the tokens each frame contributes to its segment's budget; `saliency` [T, N]:
    the vision tower's attention (None: the pseudo-[CLS] proxy). `owner` [T*N] (filled when given):
    the flat id of the anchor each merged token joined; a token that several anchor frames of its
    segment absorb (the reference merges the whole segment into each) names the nearest one in time."""
    T, N, _ = features.shape
    x = features
    saliency = frame_saliency(x) if saliency is None else saliency.float().to(x.device)  # [T, N]
    segments = dynamic_segments(frame_vectors, params["fastvid_segments"], params["fastvid_threshold"])
    kept_ids: list[torch.Tensor] = []
    states: list[torch.Tensor] = []
    plans = []
    near = torch.full((T * N,), float(T), device=x.device)  # [T*N] frames to the anchor named in owner
    for a, b in segments:
        length = b - a
        sal, ctx = segment_plan(
            length, sum(per_frame[a:b]), N, params["fastvid_contextual"], params["fastvid_anchor_every"]
        )
        plans.append({"frames": [a, b], "salient": sal, "contextual": ctx})
        salient_ids = [stable_top(saliency[a + i], s) + (a + i) * N for i, s in enumerate(sal)]
        salient_flat = torch.cat(salient_ids) if salient_ids else torch.zeros(0, dtype=torch.long)
        kept_ids.append(salient_flat)
        states.append(x.reshape(T * N, -1)[salient_flat])
        segment_ids = torch.arange(a * N, b * N, device=x.device)
        is_salient = torch.isin(segment_ids, salient_flat)
        for i, c in enumerate(ctx):
            if c <= 0:
                continue
            t = a + i
            frame_ids = torch.arange(t * N, (t + 1) * N, device=x.device)
            rest = frame_ids[~torch.isin(frame_ids, salient_flat)]  # non-salient tokens of the frame
            score, _ = density_peaks(x[t, rest - t * N], DENSITY_NEIGHBOURS)
            anchors = rest[stable_top(score, c)].sort().values  # [c] flat ids
            members = segment_ids[~is_salient & ~torch.isin(segment_ids, anchors)]
            flat = x.reshape(T * N, -1)
            anchor_states = flat[anchors].float()
            if members.numel():
                assign = cosine_assign(flat[members], flat[anchors])  # [m] -> anchor slot
                counts = torch.bincount(assign, minlength=c).float()[:, None]  # [c, 1]
                sums = torch.zeros_like(anchor_states).index_add_(0, assign, flat[members].float())
                mean = sums / counts.clamp(min=1)
                weight = (1 / (counts + 1)).clamp(min=params["fastvid_beta"])
                anchor_states = weight * anchor_states + (1 - weight) * mean
                if owner is not None:
                    gap = (members // N - t).abs().float()  # [m] frames between member and anchor
                    closer = gap < near[members]
                    owner[members[closer]] = anchors[assign[closer]].to(owner.device)
                    near[members[closer]] = gap[closer]
            kept_ids.append(anchors)
            states.append(anchor_states.to(x.dtype))
    ids = torch.cat(kept_ids)
    merged = torch.cat(states)
    order = ids.argsort()
    return ids[order], merged[order], {"segments": plans}


def fastvid_plan(video: VideoTokens, keep: float, params: dict[str, Any], variant: str) -> PrunePlan:
    """FastVID before the LLM (keep < 1): T * int(N * keep) tokens (`official`) or exactly
    token_budget(T*N, keep) (`exact`)."""
    T, N = video.num_frames, video.tokens_per_frame
    if variant == "official":
        per_frame = official_frame_budgets(T, N, keep)
    else:
        per_frame = frame_budgets(token_budget(T * N, keep), T)

    def prune(ctx: LayerContext) -> LayerKeep:
        x = layer0_features(ctx.hidden, ctx.visual_slots, T, N)
        frames = video.frame_features if video.frame_features is not None else x.float().mean(1)
        owner = torch.full((T * N,), -1, dtype=torch.long, device=x.device)  # [T*N] anchor flat id
        ids, states, info = fastvid_select(x, frames.to(x.device), per_frame, params, video.saliency, owner)
        note = missed(
            int(ids.numel()), token_budget(T * N, keep), T, "FastVID's official int(N * keep) per frame"
        )
        if note:
            info["keep_note"] = note
        return LayerKeep(
            keep=ids.to(ctx.visual_slots.device),
            replace=states,
            info=info,
            merged_into=merged_index(owner, ids),
        )

    return PrunePlan(steps={0: prune})
