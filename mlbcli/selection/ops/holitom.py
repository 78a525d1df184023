"""HoliTom (NeurIPS'25, arXiv 2505.21334): holistic temporal segmentation + spatio-temporal merging
before the LLM, and (optional) token merging inside it.

[C] cokeshao/HoliTom (e9b2972f) `holitom/llava_arch.py`, `holitom/modeling_qwen2.py`:
    - per position, cosine of a token with the same position in the next frame; a window [s, e] has
      static positions where every adjacent pair inside it is > tau (`T`, 0.8); a dynamic programme
      over frames picks the windows (length <= `MAX_WINDOW_SIZE`, unbounded by default) that maximise
      the tokens removed by collapsing each static position to one token, sum (#static) * (e - s);
    - the retain ratio r is raised to r' = min(1, r * total / (total - removed)) for the rest;
    - static tokens of a window are averaged over it, then DPC-kNN (k = min(7, count)) keeps
      round(#static * r') centres; every other static token joins its nearest centre, and a centre with
      members becomes beta * centre + (1 - beta) * mean(members) (beta = 0.6);
    - dynamic tokens, per frame: ceil(#dynamic * r') of them, the top (1 - D) share by the vision
      tower's attention (dominant) and the rest DPC-kNN centres merged like the static ones (D = 0 by
      default: all dominant);
    - inner-LLM merging (`HOLITOM_k`, `HOLITOM_r`; the full "HoliTom" rows of the paper, off in the
      "w/o M" rows): before layer k, by the last prompt token's layer-(k-1) attention (head mean), the
      top round(n * (1 - r)) visual tokens stay; every other one is averaged, in index order, into its
      most cosine-similar survivor: s <- (s + x) / 2.
[C] `--variant official` (the default; e9b2972f `holitom/llava_arch.py` L29-312, L360-410 with
    `mm_newline_position` "one_token", LLaVA-OneVision's video setting): r' = min(1, r / ((T*N -
    removed) / (T*N))); a frame's dynamic group keeps ceil(#dynamic * r') tokens, round(that * (1 - D))
    of them dominant; a window's static group keeps round(#static * r') (Python's round, half to even);
    the LLM receives, window by window, the static centres (position order), then frame by frame the
    dominant tokens (position order) and the contextual centres (position order), at contiguous
    positions (the code concatenates); saliency = `VideoTokens.saliency` (the tower's attention, the
    reference pools it like the features) where the family gives it.
[R] `--variant exact`: exactly token_budget(T*N, keep) before the LLM: the groups (each window's static tokens,
    each frame's dynamic tokens) get their counts in proportion to their sizes (largest remainder),
    which is r' up to the reference's per-group round/ceil. The inner merge (`holitom_layer` K > 0)
    then keeps round(budget * (1 - holitom_merge_ratio)) from layer K on (`keep_note` says so).
[R] attention without `VideoTokens.saliency`: the pseudo-[CLS] proxy (`clustering.frame_saliency`;
    the reference patches SigLIP to return its last layer's attention).
[R] a static token stands for its centre in the window's first frame (the reference places static
    tokens with the window's first frame as well); `exact` keeps original positions.
[R] deterministic density ties (see `clustering`).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from mlbcli.models.base import VideoTokens
from mlbcli.selection.base import token_budget
from mlbcli.selection.ops import debias as D
from mlbcli.selection.ops.baselines import layer0_features, merged_index, missed
from mlbcli.selection.ops.clustering import (
    assign_to_centres,
    cosine_assign,
    density_peaks,
    frame_saliency,
    stable_top,
)
from mlbcli.selection.plan import LayerContext, LayerKeep, LayerPruner, PrunePlan

NEIGHBOURS = 7


def static_windows(
    similarity: torch.Tensor, threshold: float, max_window: int
) -> tuple[list[tuple[int, int]], float]:
    """HoliTom's window DP. similarity [T-1, N] (frame t vs t+1) -> ([(first, last_inclusive)], removed)."""
    T = similarity.shape[0] + 1
    above = (similarity > threshold).float()  # [T-1, N]
    # removed[s][e] = #positions static over frames s..e, times (e - s)
    removed = torch.zeros(T, T)
    for s in range(T - 1):
        run = torch.cumprod(above[s:], dim=0).sum(dim=1).cpu()  # [T-1-s]: static count over s..s+1+j
        for j, count in enumerate(run.tolist()):
            removed[s, s + 1 + j] = count * (j + 1)
    best = [0.0] * T
    start = [0] * T
    for i in range(T):
        value, first = (best[i - 1] if i > 0 else 0.0), i
        for size in range(2, min(i + 1, max_window) + 1):
            j = i - size
            candidate = (best[j] if j >= 0 else 0.0) + float(removed[j + 1, i])
            if candidate > value:
                value, first = candidate, j + 1
        best[i], start[i] = value, first
    windows = []
    i = T - 1
    while i >= 0:
        windows.append((start[i], i))
        i = start[i] - 1
    return windows[::-1], best[-1]


def merge_by_density(
    x: torch.Tensor,
    count: int,
    beta: float,
    owner: torch.Tensor | None = None,
    ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """[n, D] -> (centre indices [count] ascending, merged states [count, D]) (HoliTom, beta merge).

    With `owner` [T*N] and `ids` [F, n] (the flat ids each of the n tokens stands for: F frames of a
    static window, the first frame's ids being the centres' own), owner[ids] = its centre's flat id."""
    if count <= 0:
        return torch.zeros(0, dtype=torch.long, device=x.device), x[:0]
    score, dist = density_peaks(x, min(NEIGHBOURS, count))
    centres = stable_top(score, count).sort().values
    assign = assign_to_centres(dist, centres)
    if owner is not None and ids is not None:
        ids = ids.reshape(-1, x.shape[0])  # [F, n]
        owner[ids] = ids[0, centres][assign].expand_as(ids).to(owner.device)
    members = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    members[centres] = False
    xf = x.float()
    sums = torch.zeros(count, x.shape[1], device=x.device).index_add_(0, assign[members], xf[members])
    counts = torch.bincount(assign[members], minlength=count)[:, None]
    merged = torch.where(
        counts > 0, beta * xf[centres] + (1 - beta) * sums / counts.clamp(min=1), xf[centres]
    )
    return centres, merged.to(x.dtype)


def holitom_outer(
    features: torch.Tensor,
    budget: int,
    params: dict[str, Any],
    saliency: torch.Tensor | None = None,
    owner: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Before the LLM (`exact`): [T, N, D] -> (kept ids ascending [budget], states, info); `owner`
    [T*N] (filled when given): the flat id of the centre each merged token joined."""
    T, N, _ = features.shape
    x = features
    unit = torch.nn.functional.normalize(x.float(), dim=-1)
    similarity = (unit[:-1] * unit[1:]).sum(-1) if T > 1 else torch.zeros(0, N)  # [T-1, N]
    windows, removed = static_windows(similarity, params["holitom_threshold"], params["holitom_max_window"])
    saliency = frame_saliency(x) if saliency is None else saliency.float().to(x.device)  # [T, N]
    positions = torch.arange(N, device=x.device)
    groups = []  # (kind, frame, positions [g]) in order
    for s, e in windows:
        static = torch.zeros(N, dtype=torch.bool, device=x.device)
        if e > s:
            static = (similarity[s:e] > params["holitom_threshold"]).all(dim=0)
            if bool(static.any()):
                groups.append(("static", s, e, positions[static]))
        for t in range(s, e + 1):
            if bool((~static).any()):
                groups.append(("dynamic", t, t, positions[~static]))
    sizes = [int(g[3].numel()) for g in groups]
    counts = D.allocate(budget, sizes, sizes)
    ids, states = [], []
    beta, contextual = params["holitom_beta"], params["holitom_contextual"]
    for (kind, s, e, pos), count in zip(groups, counts, strict=True):
        if count == 0:
            continue
        if kind == "static":
            group = x[s : e + 1, pos].float().mean(dim=0).to(x.dtype)  # [g, D]
            window_ids = torch.arange(s, e + 1, device=x.device)[:, None] * N + pos  # [F, g]
            centres, merged = merge_by_density(group, count, beta, owner, window_ids)
            ids.append(s * N + pos[centres])
            states.append(merged)
            continue
        group = x[s, pos]
        dominant_count = round(count * (1 - contextual))
        dominant = stable_top(saliency[s, pos], dominant_count)
        ids.append(s * N + pos[dominant])
        states.append(group[dominant])
        if count > dominant_count:
            rest = torch.ones(pos.numel(), dtype=torch.bool, device=x.device)
            rest[dominant] = False
            rest_index = rest.nonzero().squeeze(1)
            centres, merged = merge_by_density(
                group[rest_index], count - dominant_count, beta, owner, s * N + pos[rest_index]
            )
            ids.append(s * N + pos[rest_index[centres]])
            states.append(merged)
    kept = torch.cat(ids)
    order = kept.argsort()
    info: dict[str, Any] = {
        "windows": [[s, e + 1] for s, e in windows],
        "static_removed": int(removed),
        "retain_after_static": round(min(1.0, budget / max(1.0, T * N - removed)), 6),
    }
    if sum(sizes) < budget:  # the reference caps r' at 1 as well
        info["keep_note"] = "HoliTom collapses each static window to one token per static position"
    return kept[order], torch.cat(states)[order], info


def official_dynamic(
    x: torch.Tensor,
    attn: torch.Tensor,
    count: int,
    contextual: float,
    beta: float,
    owner: torch.Tensor | None = None,
    ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One frame's dynamic tokens x [g, D], attention [g] -> (indices into g, states) in the order the
    reference feeds them: round(count * (1 - D)) dominant (position order), then the contextual
    density centres (position order) merged with their members."""
    dominant_count = round(count * (1 - contextual))
    dominant = stable_top(attn, dominant_count).sort().values
    rest = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    rest[dominant] = False
    rest_index = rest.nonzero().squeeze(1)
    rest_ids = None if ids is None else ids[rest_index]  # [R] flat ids (`owner`, see merge_by_density)
    centres, merged = merge_by_density(x[rest_index], count - dominant_count, beta, owner, rest_ids)
    return torch.cat([dominant, rest_index[centres]]), torch.cat([x[dominant], merged])


def holitom_outer_official(
    features: torch.Tensor,
    keep: float,
    params: dict[str, Any],
    saliency: torch.Tensor | None = None,
    owner: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Before the LLM (`official`): [T, N, D] -> (kept ids [k] in the reference's entry order, their
    states [k, D], info); counts by the reference's rounding (module docstring); `owner` as in
    `holitom_outer`."""
    T, N, _ = features.shape
    x = features
    unit = torch.nn.functional.normalize(x.float(), dim=-1)
    similarity = (unit[:-1] * unit[1:]).sum(-1) if T > 1 else torch.zeros(0, N)  # [T-1, N]
    tau, beta, contextual = params["holitom_threshold"], params["holitom_beta"], params["holitom_contextual"]
    windows, removed = static_windows(similarity, tau, params["holitom_max_window"])
    total = T * N
    retain = min(keep / ((total - removed) / total), 1.0)
    saliency = frame_saliency(x) if saliency is None else saliency.float().to(x.device)  # [T, N]
    ids: list[torch.Tensor] = []
    states: list[torch.Tensor] = []
    for s, e in windows:
        static = torch.zeros(N, dtype=torch.bool, device=x.device)
        if e > s:
            static = (similarity[s:e] > tau).all(dim=0)
        pos_static = static.nonzero().squeeze(1)
        pos_dynamic = (~static).nonzero().squeeze(1)
        if pos_static.numel():
            group = x[s : e + 1, pos_static].float().mean(dim=0).to(x.dtype)  # [g, D]
            window_ids = torch.arange(s, e + 1, device=x.device)[:, None] * N + pos_static  # [F, g]
            centres, merged = merge_by_density(
                group, round(pos_static.numel() * retain), beta, owner, window_ids
            )
            ids.append(s * N + pos_static[centres])
            states.append(merged)
        count = math.ceil(pos_dynamic.numel() * retain)  # per frame of the window
        for t in range(s, e + 1):
            if count == 0:
                continue
            index, state = official_dynamic(
                x[t, pos_dynamic],
                saliency[t, pos_dynamic],
                count,
                contextual,
                beta,
                owner,
                t * N + pos_dynamic,
            )
            ids.append(t * N + pos_dynamic[index])
            states.append(state)
    info: dict[str, Any] = {
        "windows": [[s, e + 1] for s, e in windows],
        "static_removed": int(removed),
        "retain_after_static": round(retain, 6),
    }
    return torch.cat(ids), torch.cat(states), info


def inner_merge(
    hidden: torch.Tensor, scores: torch.Tensor, keep: int, into: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """[n, D] states, [n] attention -> (kept indices ascending [keep], their merged states [keep, D]).
    `into` [n] (filled when given): the index in kept of the survivor each dropped token joined.

    Every dropped token, in index order, halves its way into the most similar kept one: s <- (s + x)/2,
    i.e. a survivor with members x_1..x_m (in order) ends as s/2^m + sum_j x_j / 2^(m-j+1).
    """
    n = hidden.shape[0]
    kept = stable_top(scores.float(), keep).sort().values
    dropped_mask = torch.ones(n, dtype=torch.bool, device=hidden.device)
    dropped_mask[kept] = False
    dropped = dropped_mask.nonzero().squeeze(1)
    states = hidden[kept].float()
    if dropped.numel():
        target = cosine_assign(hidden[dropped], hidden[kept])  # [d] -> kept slot
        if into is not None:
            into[dropped.to(into.device)] = target.to(into.device)
        total = torch.bincount(target, minlength=kept.numel())  # members per survivor
        # rank of each dropped token among its survivor's members, in index order (dropped is ascending)
        rank = torch.zeros_like(target)
        seen = torch.zeros_like(total)
        for j, slot in enumerate(target.tolist()):
            rank[j] = seen[slot]
            seen[slot] += 1
        exponent = (total[target] - rank).float()  # m - j + 1 with j 1-based
        weights = torch.pow(0.5, exponent)[:, None]
        states = states * torch.pow(0.5, total.float())[:, None]
        states = states.index_add(0, target, hidden[dropped].float() * weights)
    return kept, states.to(hidden.dtype)


def holitom_plan(
    video: VideoTokens, keep: float, params: dict[str, Any], variant: str = "official"
) -> PrunePlan:
    """The outer merge before the LLM (keep < 1: the reference's counts, or exactly
    token_budget(T*N, keep) tokens with `exact`) and, with `holitom_layer` K > 0, the inner merge
    before decoder layer K."""
    T, N = video.num_frames, video.tokens_per_frame
    budget = token_budget(T * N, keep)
    inner_layer = params["holitom_layer"]
    inner_keep = max(1, round(budget * (1 - params["holitom_merge_ratio"])))

    def outer(ctx: LayerContext) -> LayerKeep:
        x = layer0_features(ctx.hidden, ctx.visual_slots, T, N)
        owner = torch.full((T * N,), -1, dtype=torch.long, device=x.device)  # [T*N] centre flat id
        if variant == "official":
            order, states, info = holitom_outer_official(x, keep, params, video.saliency, owner)
            note = missed(int(order.numel()), budget, T, "HoliTom's official counts (ceil per frame)")
            if note:
                info["keep_note"] = note
            return LayerKeep(
                keep=order.sort().values.to(ctx.visual_slots.device),
                replace=states,  # [k, D] in the reference's entry order, written into the kept slots
                entry_ids=order,
                info=info,
                merged_into=merged_index(owner, order.sort().values),  # by token id, not entry slot
            )
        ids, states, info = holitom_outer(x, budget, params, video.saliency, owner)
        return LayerKeep(
            keep=ids.to(ctx.visual_slots.device),
            replace=states,
            info=info,
            merged_into=merged_index(owner, ids),
        )

    steps: dict[int, LayerPruner] = {0: outer}
    if inner_layer <= 0:
        return PrunePlan(steps=steps)
    why = f"the inner merge (holitom_layer {inner_layer}) keeps 1 - holitom_merge_ratio of them"

    def inner(ctx: LayerContext) -> LayerKeep:
        assert ctx.scores is not None
        states = ctx.hidden[0, ctx.visual_slots]
        into = torch.full((states.shape[0],), -1, dtype=torch.long)  # [n] index in kept of the survivor
        n = states.shape[0]
        # official: round(n * (1 - r)) of the n tokens that entered (the reference's rule); exact: of the
        # budget, so the last layer meets --keep
        count = (
            max(1, round(n * (1 - params["holitom_merge_ratio"]))) if variant == "official" else inner_keep
        )
        kept, merged = inner_merge(states, ctx.scores, min(count, n), into)
        info: dict[str, Any] = {"layer": inner_layer, "kept": int(kept.numel())}
        note = missed(int(kept.numel()), budget, T, why)
        if note:
            info["keep_note"] = note
        return LayerKeep(keep=kept.to(ctx.visual_slots.device), replace=merged, info=info, merged_into=into)

    steps[inner_layer] = inner
    return PrunePlan(steps=steps, needs_scores=frozenset({inner_layer}), query="last")
