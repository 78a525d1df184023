"""FlashVID (ICLR 2026, arXiv 2602.08024): vision-side compression with an expanded budget, then
attention pruning inside the LLM.

[C] Fanziyang-v/FlashVID (1d37422c) `flashvid/utils.py`, `flashvid/token_selection.py`,
    `flashvid/modeling_qwen2.py`, `flashvid/llava_arch.py`, `flashvid/__init__.py` (defaults):
    - the vision side keeps per frame b = ceil(N * r * e) tokens (r = --keep, e = expansion 1.25):
      ceil(b * alpha) by ADTS (alpha 0.7) and the other b - ceil(b * alpha) by TSTM;
    - DySeg: cosine of adjacent frame means (mean over the frame's tokens); a cut after frame t where
      it is < 0.9; with fewer than `min_segment_num` (8) segments, the least similar remaining pairs
      become cuts too (`complementary_segment`);
    - ADTS ("attn_div_v2", the default of `flashvid()`), per frame: the cosine distance matrix, each
      column j scaled by the tower attention a_j * 1e6 and by the event relevance x_j . mean(frame
      means of the segment); farthest-point selection: first the token whose second-nearest scaled
      distance is largest, then repeatedly the token farthest (min over the chosen) from the chosen;
    - TSTM on the other tokens of a segment: each token joins its most similar non-selected token of
      the previous frame when the cosine is > 0.8 (a soft threshold keeps at least b tokens a frame);
      merging runs from the last frame back (sums into the anchor, divided by its direct member count
      + 1 when the anchor itself is kept); then per frame DPC-kNN (k = min(clusters, 7), distances /
      sqrt(D)) keeps ceil(count * ratio) cluster means, ratio = (b - ceil(b alpha)) * L / survivors;
    - all vision-side tokens are sorted by their flat id t * N + n (original order);
    - inside the LLM, before layer 20 (of Qwen2-7B's 28), the last prompt token's layer-19 attention
      (mean over heads) keeps the top ceil(n * 0.3) of the n visual tokens, in order, positions kept.
    - positions: LLaVA concatenates the compressed tokens (contiguous positions); Qwen2.5-VL / Qwen3-VL
      select the original M-RoPE positions of the kept tokens.
[R] budget: the official budget is an average over layers (e * r before layer K, 0.3 * e * r after:
    20 * 1.25 r + 8 * 0.375 r = 28 r on 28 layers), so the last layer sees about 0.375 r; the row's
    `keep_note` says so. b is capped at N (the official code fails at r * e > 1).
[R] the pruning layer: 20 on a 28-layer LLM, round(20 / 28 * L) on an L-layer one (tiny test models).
[R] saliency: `VideoTokens.saliency` (tower attention, mean over heads and queries, pooled like the
    tokens: what the official SigLIP patch returns) when captured, else the `frame_saliency` proxy.
[R] the official ADTS can pick a chosen token again when a scaled distance is <= 0 (negative event
    relevance); the port never picks a token twice. A one-frame segment's TSTM in the official code
    clusters all N tokens, the ADTS-chosen ones included (a token may then enter twice); the port
    clusters the others, as for longer segments. Duplicate complementary cuts (the official code then
    fails on an empty segment) are merged. DPC-kNN without the official 1e-6 random density noise
    (ties go to the lower index). LLaVA-Video's per-frame newline tokens are not pruned.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from mlbcli.models.base import VideoTokens
from mlbcli.selection.ops.baselines import layer0_features, merged_index
from mlbcli.selection.ops.clustering import frame_saliency
from mlbcli.selection.plan import LayerContext, LayerKeep, LayerPruner, PrunePlan

KNN = 7  # DPC-kNN neighbours (capped at the cluster count)
ATTENTION_SCALE = 1e6  # the official scaling of the tower attention before the product


def frame_budget(tokens: int, keep: float, expansion: float, alpha: float) -> tuple[int, int]:
    """(ADTS, TSTM) tokens per frame: b = ceil(N r e) capped at N, split ceil(b alpha) / the rest."""
    budget = min(tokens, math.ceil(tokens * keep * expansion))
    selected = math.ceil(budget * alpha)
    return selected, budget - selected


def segments(frame_means: torch.Tensor, threshold: float, minimum: int) -> list[tuple[int, int]]:
    """DySeg: [T, D] frame means -> [(first, stop)] covering 0..T-1."""
    T = frame_means.shape[0]
    unit = frame_means / frame_means.norm(p=2, dim=-1, keepdim=True)
    similarity = (unit[:-1] * unit[1:]).sum(-1)  # [T-1]: frame t vs t+1
    cuts = set((similarity < threshold).nonzero().squeeze(1).tolist())
    if len(cuts) + 1 < minimum and T > 1:
        rest = similarity.clone()
        rest[similarity < threshold] = 1.0  # natural cuts are taken: rank the others
        extra = torch.topk(rest, k=min(minimum - len(cuts) - 1, T - 1), largest=False).indices
        cuts |= set(extra.tolist())
    bounds = [0, *(c + 1 for c in sorted(cuts)), T]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def adts(features: torch.Tensor, attention: torch.Tensor, count: int) -> torch.Tensor:
    """Attention- and diversity-based selection, per frame: [L, N, D], [L, N] -> [L, count] ascending."""
    x = features.float()
    L, N, _ = x.shape
    unit = x / x.norm(p=2, dim=-1, keepdim=True)
    distance = 1.0 - torch.bmm(unit, unit.transpose(1, 2))  # [L, N, N] cosine distance
    relevance = torch.einsum("bnd,cd->bcn", x, x.mean(1)).mean(1)  # [L, N]: x_j . segment event
    # column j (the candidate) is scaled: distance[i, j] * a_j * rel_j, the official order of products
    scaled = distance * (attention.float() * ATTENTION_SCALE).unsqueeze(1) * relevance.unsqueeze(1)
    chosen = torch.zeros(L, count, dtype=torch.long, device=x.device)
    if count == 0:
        return chosen
    taken = torch.zeros(L, N, dtype=torch.bool, device=x.device)
    frames = torch.arange(L, device=x.device)
    nearest = torch.topk(scaled, k=min(2, N), dim=1, largest=False).values[:, -1, :]  # [L, N]
    chosen[:, 0] = nearest.argmax(-1)
    taken[frames, chosen[:, 0]] = True
    closest = scaled[frames, chosen[:, 0]]  # [L, N] min scaled distance to the chosen set
    for i in range(1, count):
        pick = closest.masked_fill(taken, -math.inf).argmax(-1)  # [L]
        chosen[:, i] = pick
        taken[frames, pick] = True
        closest = torch.minimum(closest, scaled[frames, pick])
    return chosen.sort(dim=1).values


def temporal_merge(
    x: torch.Tensor, free: torch.Tensor, threshold: float, lower_bound: int, into: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """TSTM's temporal step on one segment: [L, N, D] states, [L, N] not-selected mask ->
    (states [L, N, D] after merging, [L, N] tokens that remain). `into` [L, N] (filled when given):
    the position in frame t-1 of the anchor each merged token of frame t joined, -1 elsewhere."""
    L, N, _ = x.shape
    x = x.clone()
    unit = x / x.norm(p=2, dim=-1, keepdim=True)
    similarity = torch.einsum("bnd,bmd->bnm", unit[1:], unit[:-1])  # [L-1, N (frame t), N (frame t-1)]
    similarity[~free[1:].unsqueeze(-1).expand(-1, -1, N)] = -1.0
    similarity[~free[:-1].unsqueeze(1).expand(-1, N, -1)] = -1.0
    best, anchor = similarity.max(dim=-1)  # [L-1, N]
    best = F.pad(best, (0, 0, 1, 0), value=-1.0)  # frame 0 merges nowhere
    anchor = F.pad(anchor, (0, 0, 1, 0), value=-1)
    merged = best > threshold
    if int((~merged).sum()) < lower_bound and lower_bound < L * N:
        # keep at least `lower_bound` tokens: the (L N - lower_bound)-th largest similarity decides
        soft = float(best.reshape(-1).topk(L * N - lower_bound).values[-1])
        merged = best > max(soft, -1.0 + 1e-6)
    if into is not None:
        into.copy_(torch.where(merged, anchor, -1))
    counts = torch.ones(L, N, dtype=x.dtype, device=x.device)
    for t in range(L - 1, -1, -1):
        stay = ~merged[t]
        x[t, stay] = x[t, stay] / counts[t, stay].unsqueeze(-1)
        counts[t, stay] = 1
        if bool(merged[t].any()):
            # the accumulated sums move on, but the anchor counts each direct member once (official)
            members = merged[t].nonzero().squeeze(1)
            x[t - 1].index_add_(0, anchor[t, members], x[t, members])
            counts[t - 1].index_add_(
                0, anchor[t, members], torch.ones(members.numel(), dtype=x.dtype, device=x.device)
            )
            counts[t, members] = 0
    return x, ~merged & free


def dpc_knn(x: torch.Tensor, clusters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[n, D] -> (assignment [n] to a centre slot, centre indices [clusters] by score, highest first)."""
    n, D = x.shape
    distance = torch.cdist(x.float()[None], x.float()[None])[0] / math.sqrt(D)  # [n, n]
    nearest = torch.topk(distance, k=min(clusters, KNN), dim=-1, largest=False).values
    density = torch.mean(-(nearest**2), dim=-1).exp()  # [n]
    higher = density[None, :] > density[:, None]  # [i, j]: j is denser than i
    parent = torch.where(higher, distance, distance.max()).min(dim=-1).values
    centres = torch.topk(parent * density, k=clusters).indices
    assign = distance[:, centres].argmin(dim=-1)
    assign[centres] = torch.arange(clusters, device=x.device)
    return assign, centres


def spatial_merge(
    states: torch.Tensor, ids: torch.Tensor, ratio: float, owner: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One frame's TSTM survivors [m, D] -> ceil(m * ratio) cluster means at their centres' ids;
    `owner` [T*N] (filled when given): owner[ids] = the id of the centre each survivor ended in."""
    clusters = math.ceil(states.shape[0] * ratio)
    if owner is not None:
        owner[ids] = ids  # unclustered: each survivor stays itself
    if clusters <= 0 or ratio >= 1.0:
        return states, ids
    assign, centres = dpc_knn(states, clusters)
    if owner is not None:
        owner[ids] = ids[centres][assign]
    one_hot = F.one_hot(assign, num_classes=clusters).to(states.dtype)  # [m, c]
    means = torch.einsum("nc,nd->cd", one_hot, states) / one_hot.sum(0).unsqueeze(-1)
    return means, ids[centres]


def compress(
    features: torch.Tensor,
    saliency: torch.Tensor,
    keep: float,
    params: dict[str, Any],
    owner: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """The vision side: [T, N, D], [T, N] -> (kept flat ids ascending [k], states [k, D], info);
    `owner` [T*N] (filled when given): the flat id of the kept token each merged token ended in."""
    T, N, D = features.shape
    n_sel, n_merge = frame_budget(N, keep, params["flashvid_expansion"], params["flashvid_alpha"])
    bounds = segments(features.mean(1), params["flashvid_segment_threshold"], params["flashvid_min_segments"])
    ids, states = [], []
    flat = torch.arange(T * N, device=features.device).view(T, N)
    for a, b in bounds:
        x, L = features[a:b], b - a
        chosen = adts(x, saliency[a:b], n_sel)  # [L, n_sel]
        ids.append(flat[a:b].gather(1, chosen).reshape(-1))
        states.append(x.gather(1, chosen.unsqueeze(-1).expand(-1, -1, D)).reshape(-1, D))
        if n_merge <= 0 or params["flashvid_temporal_threshold"] >= 1.0:
            continue
        free = torch.ones(L, N, dtype=torch.bool, device=x.device)
        free.scatter_(1, chosen, False)
        merged, remain = x, free
        into = torch.full((L, N), -1, dtype=torch.long, device=x.device)  # [L, N] anchor in frame t-1
        if L > 1:
            lower = (n_sel + n_merge) * L  # ADTS tokens count among those that remain
            merged, remain = temporal_merge(x, free, params["flashvid_temporal_threshold"], lower, into)
        ratio = n_merge * L / max(1, int(remain.sum()))
        for t in range(L):
            kept, at = spatial_merge(merged[t][remain[t]], flat[a + t][remain[t]], ratio, owner)
            ids.append(at)
            states.append(kept.to(features.dtype))
        for t in range(1, L):  # temporal members end where their anchor (frame t-1, resolved) does
            m = into[t] >= 0
            if owner is not None:
                owner[flat[a + t][m]] = owner[flat[a + t - 1][into[t][m]]]
    order_ids = torch.cat(ids)
    order = order_ids.argsort()
    info = {"segments": [[a, b] for a, b in bounds], "adts_per_frame": n_sel, "tstm_per_frame": n_merge}
    return order_ids[order], torch.cat(states)[order], info


def inner_keep(alive: int, ratio: float) -> int:
    """Visual tokens past the in-LLM step: ceil(n * llm_retention)."""
    return max(1, min(alive, math.ceil(alive * ratio)))


def flashvid_plan(
    video: VideoTokens, keep: float, layer: int, target: int, params: dict[str, Any]
) -> PrunePlan:
    """Vision-side compression at layer 0, then attention pruning before decoder layer `layer`."""
    T, N = video.num_frames, video.tokens_per_frame
    retention = params["flashvid_llm_retention"]

    def vision(ctx: LayerContext) -> LayerKeep:
        x = layer0_features(ctx.hidden, ctx.visual_slots, T, N)
        saliency = video.saliency if video.saliency is not None else frame_saliency(x)
        owner = torch.full((T * N,), -1, dtype=torch.long, device=x.device)  # [T*N] kept flat id
        ids, states, info = compress(x, saliency.to(x.device).float(), keep, params, owner)
        info["saliency"] = "tower" if video.saliency is not None else "proxy"
        return LayerKeep(
            keep=ids.to(ctx.visual_slots.device),
            replace=states,
            info=info,
            merged_into=merged_index(owner, ids),
        )

    def inner(ctx: LayerContext) -> LayerKeep:
        assert ctx.scores is not None
        n = int(ctx.visual_slots.numel())
        count = inner_keep(n, retention)
        kept = torch.topk(ctx.scores.float(), count).indices.sort().values
        info: dict[str, Any] = {"layer": layer, "kept": count}
        if 2 * abs(count - target) > max(1, T):
            info["keep_note"] = (
                f"FlashVID's budget is the layer average: {params['flashvid_expansion']} x --keep "
                f"enters the LLM and {retention} of it continues past layer {layer} (official)"
            )
        return LayerKeep(keep=kept.to(ctx.visual_slots.device), info=info)

    steps: dict[int, LayerPruner] = {0: vision, layer: inner}
    return PrunePlan(steps=steps, needs_scores=frozenset({layer}), query="last")
