"""Pure tensor functions behind the attention-debiased methods (no model, no engine state).

Naming: `T` frames, `N = h * w` tokens per frame, `n` candidate visual tokens (a subset of the T*N,
identified by their flat visual ids `t * N + p`), `D` hidden size. Every selector returns ascending
indices into its candidate list, so the engine can use them as `LayerKeep.keep` directly.

Pieces (composed in `mlbcli.selection.ops.attention` and the method plans):
- `segment_frames`      AdaTP video segmentation by adjacent-frame similarity.
- `allocate`            exact integer budgets: floors, weights, capacities, largest remainder.
- `segment_budgets`     AdaTP global debiasing: per-segment budgets (length x relevance, floor b_min).
- `dedup_keep`          AdaTP local debiasing: same-position deduplication inside a segment.
- `select_*`            plain top-k, grouped top-k, gridded (GAPool select) top-k.
- `summary_tail`        LLaVA-MLB VSTail: s x s average pool of every frame.
- `visionzip_frame`     VisionZip* (dominant + contextual) for one frame.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from mlbcli.selection.ops.baselines import grid_cells


# -- budgets -----------------------------------------------------------------------------------------------
def allocate(
    total: int, weights: Sequence[float], capacities: Sequence[int], floors: Sequence[int] | None = None
) -> list[int]:
    """Split `total` into integers per group: >= floor, <= capacity, the rest proportional to `weights`.

    Water-filling with largest-remainder rounding: groups that would exceed their capacity are filled
    and removed, the remainder is re-split among the others. The result sums to exactly
    min(total, sum(capacities)) (floors are assumed to sum to <= total; they are clipped to capacity).
    """
    k = len(capacities)
    caps = [max(0, int(c)) for c in capacities]
    alloc = [min(int(f), c) for f, c in zip(floors or [0] * k, caps, strict=True)]
    total = min(int(total), sum(caps))
    remaining = total - sum(alloc)
    if remaining < 0:
        raise ValueError("floors exceed the total")
    while remaining > 0:
        active = [j for j in range(k) if alloc[j] < caps[j]]
        w = [max(0.0, float(weights[j])) for j in active]
        wsum = sum(w)
        if not math.isfinite(wsum) or wsum <= 0:
            w, wsum = [1.0] * len(active), float(len(active))
        shares = [remaining * wj / wsum for wj in w]
        full = [j for j, s in zip(active, shares, strict=True) if alloc[j] + s >= caps[j]]
        if full:
            for j in full:
                remaining -= caps[j] - alloc[j]
                alloc[j] = caps[j]
            continue
        base = [math.floor(s) for s in shares]
        for j, b in zip(active, base, strict=True):
            alloc[j] += b
        left = remaining - sum(base)
        order = sorted(range(len(active)), key=lambda i: (-(shares[i] - base[i]), i))
        for i in order[:left]:
            alloc[active[i]] += 1
        remaining = 0
    return alloc


def segment_frames(frame_features: torch.Tensor, threshold: float) -> torch.Tensor:
    """[T, Dv] global frame vectors -> [T] segment id per frame (0, 0, 1, 1, 1, 2...).

    A new segment starts at frame i+1 when cos(f_i, f_{i+1}) < threshold (AdaTP's rule).
    """
    f = F.normalize(frame_features.float(), dim=-1)
    if f.shape[0] < 2:
        return torch.zeros(f.shape[0], dtype=torch.long)
    cut = (f[1:] * f[:-1]).sum(-1) < threshold  # [T-1]
    return torch.cat([torch.zeros(1, dtype=torch.long), cut.long().cumsum(0)]).cpu()


def segment_relevance(question: torch.Tensor, features: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
    """Cosine between a question vector [D] and each segment's mean visual token ([T, N, D] features)."""
    frame_means = features.float().mean(dim=1)  # [T, D]
    num = int(segments.max()) + 1
    sums = torch.zeros(num, frame_means.shape[1]).index_add_(0, segments, frame_means.cpu())
    means = sums / torch.bincount(segments, minlength=num)[:, None]
    return F.cosine_similarity(means, question.float().cpu()[None], dim=-1)  # [S]


def adjacent_similarity(frame_features: torch.Tensor) -> list[float]:
    """[T, Dv] global frame vectors -> the T-1 cosines between adjacent frames (segmentation input)."""
    f = F.normalize(frame_features.float(), dim=-1)
    return (f[1:] * f[:-1]).sum(-1).cpu().tolist() if f.shape[0] > 1 else []


def segment_budgets(
    total: int,
    segments: torch.Tensor,
    relevance: torch.Tensor | None,
    *,
    min_fraction: float,
    temperature: float,
    capacities: Sequence[int],
) -> list[int]:
    """AdaTP global debiasing: budget per segment, summing exactly to min(total, sum(capacities)).

    weight_j = |s_j| * exp((r_j - max r) / temperature) (spec §4.3: length prior x relevance boost,
    relevance r_j a cosine and the temperature in the same cosine units, T_r = 0.05); floor_j =
    floor(min_fraction * total * |s_j| / T), so no segment (e.g. the middle of the video) can be
    starved by attention that piles up at the two ends of the sequence.

    Stability: the weights are a smooth function of the relevance (|d log w_j / d r_k| <= 2 / T_r),
    so a relevance change of eps moves every weight by a factor of at most exp(2 eps / T_r): a 1e-5
    difference is noise and leaves the split alone, a large one moves it, and a more relevant segment
    never gets less (monotone). (Standardising r over segments, as before, made a 1e-5 difference
    swing the split as much as a large one.)
    """
    lengths = torch.bincount(segments).tolist()
    T = sum(lengths)
    r = relevance.double() if relevance is not None else torch.zeros(len(lengths), dtype=torch.float64)
    boost = torch.exp((r - r.max()) / temperature).tolist() if r.numel() else []
    weights = [n * b for n, b in zip(lengths, boost, strict=True)]
    floors = [math.floor(min_fraction * total * n / T) for n in lengths]
    return allocate(total, weights, capacities, floors)


# -- local debiasing ---------------------------------------------------------------------------------------
def dedup_keep(
    features: torch.Tensor, segments: torch.Tensor, threshold: float, min_keep: int = 0
) -> tuple[torch.Tensor, int]:
    """AdaTP local debiasing. [T, N, D] features, [T] segment ids -> ([T, N] bool kept mask, restored).

    Token (t, p) is a duplicate when it lies in the same segment as the last token *kept* at
    position p and cos(x[t, p], that token) >= threshold; duplicates are dropped (keep-first), so a
    static spot costs one token per segment instead of one per frame, while a slow drift (each frame
    close to the previous one, far from the kept one) keeps a token whenever it has moved away by
    the threshold. Every kept token at p therefore has cosine < threshold with the previous kept
    token at p of its segment.

    Backfill: when fewer than `min_keep` tokens survive (the budget would not be met), the dropped
    duplicates least similar to their reference are restored until `min_keep` is reached (before
    the LLM there are no attention scores; novelty is the score available). `restored` counts them.
    """
    T, N, _ = features.shape
    keep = torch.ones(T, N, dtype=torch.bool)
    if T < 2:
        return keep, 0
    x = F.normalize(features.float(), dim=-1).cpu()
    segments = segments.cpu()
    sim_to_ref = torch.full((T, N), -2.0)  # cosine with the reference kept token; -2 = no reference
    ref = x[0].clone()  # [N, D] the last kept token at each position
    for t in range(1, T):
        if segments[t] != segments[t - 1]:
            ref = x[t].clone()  # a segment starts fresh: every token kept
            continue
        sim = (x[t] * ref).sum(-1)  # [N]
        sim_to_ref[t] = sim
        duplicate = sim >= threshold
        keep[t] = ~duplicate
        ref[~duplicate] = x[t, ~duplicate]
    missing = min(int(min_keep), T * N) - int(keep.sum())
    restored = 0
    if missing > 0:
        dropped = (~keep).flatten().nonzero().squeeze(1)  # [d] ascending flat ids
        novelty = sim_to_ref.flatten()[dropped]
        order = torch.sort(novelty, stable=True).indices[:missing]  # least similar first, ties by id
        flat = keep.flatten()
        flat[dropped[order]] = True
        keep = flat.view(T, N)
        restored = int(order.numel())
    return keep, restored


# -- selectors ---------------------------------------------------------------------------------------------
def select_topk(scores: torch.Tensor, budget: int) -> torch.Tensor:
    """Indices of the `budget` highest scores (ties: lower index first), ascending."""
    budget = max(0, min(int(budget), scores.numel()))
    # Stable sort on -score: equal scores keep index order, so results are deterministic.
    order = torch.sort(-scores.float(), stable=True).indices[:budget]
    return order.sort().values


def select_grouped(scores: torch.Tensor, groups: torch.Tensor, budgets: Sequence[int]) -> torch.Tensor:
    """Top-`budgets[g]` of the candidates in each group `groups` [n] (group ids 0..G-1), ascending.

    Vectorised (one sort, no per-group loop): order by (group, -score, index), rank inside the group,
    keep ranks below the group's budget.
    """
    if scores.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    order = torch.sort(-scores.float(), stable=True).indices  # by score, ties: lower index first
    order = order[torch.sort(groups[order], stable=True).indices]  # then by group (stable)
    sorted_groups = groups[order]
    first = torch.searchsorted(sorted_groups, sorted_groups, right=False)  # start of each group's run
    rank = torch.arange(order.numel()) - first
    limit = torch.as_tensor(list(budgets), dtype=torch.long)
    return order[rank < limit[sorted_groups]].sort().values


def grid_cell_ids(grid: tuple[int, int], budget: int, cells_per_side: int = 0) -> torch.Tensor:
    """[h*w] cell id of every grid position when a frame with `budget` tokens is split into cells.

    `budget` cells (cells_per_side=0: one token per cell, the finest balanced grid) or
    min(g*g, budget) cells; ragged cells via `grid_cells`.
    """
    h, w = grid
    n_cells = budget if cells_per_side <= 0 else min(cells_per_side * cells_per_side, budget)
    n_cells = max(1, min(n_cells, h * w))
    cell_of_position = torch.empty(h * w, dtype=torch.long)
    for c, members in enumerate(grid_cells(h, w, n_cells)):
        cell_of_position[members] = c
    return cell_of_position


def frame_cells(
    frames: torch.Tensor,
    positions: torch.Tensor,
    grid: tuple[int, int],
    frame_budgets: Sequence[int],
    cells_per_side: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, int, int]]:
    """Per frame with a budget: (its candidates [m] ascending, their cell ids [m], the frame's budget
    capped at m, the number of cells), the frame split into its budget's cells (`grid_cell_ids`)."""
    layouts: dict[int, torch.Tensor] = {}  # even frame budgets take at most two distinct values
    for t, b in enumerate(frame_budgets):
        members = (frames == t).nonzero().squeeze(1)
        b = min(int(b), members.numel())
        if b <= 0:
            continue
        if b not in layouts:
            layouts[b] = grid_cell_ids(grid, b, cells_per_side)
        yield members, layouts[b][positions[members]], b, int(layouts[b].max()) + 1


def select_grid(
    scores: torch.Tensor,
    frames: torch.Tensor,
    positions: torch.Tensor,
    grid: tuple[int, int],
    frame_budgets: Sequence[int],
    cells_per_side: int = 0,
) -> torch.Tensor:
    """LLaVA-MLB GAPool (select mode): in every frame, the most attended tokens of each spatial cell.

    `scores`, `frames`, `positions` [n] describe the candidates (positions 0..h*w-1). Frame t's budget
    is split evenly over its cells (`grid_cell_ids`), capped by each cell's candidates with spill-over
    to the other cells of the frame; each cell keeps its top tokens. Returns ascending indices.
    """
    group = torch.full_like(frames, -1)
    budgets: list[int] = []
    for members, cells, b, n_cells in frame_cells(frames, positions, grid, frame_budgets, cells_per_side):
        caps = torch.bincount(cells, minlength=n_cells).tolist()
        group[members] = cells + len(budgets)
        budgets += allocate(b, [1.0] * n_cells, caps)
    alive = (group >= 0).nonzero().squeeze(1)
    return alive[select_grouped(scores[alive], group[alive], budgets)]


def pool_grid(
    scores: torch.Tensor,
    frames: torch.Tensor,
    positions: torch.Tensor,
    grid: tuple[int, int],
    frame_budgets: Sequence[int],
    cells_per_side: int = 0,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """LLaVA-MLB GAPool (pool mode, spec §3.3): one attention-weighted average per spatial cell.

    Cells as in `select_grid` (frame t split into its budget's cells). In each cell with candidates
    P, weights w = softmax(a_P / (temperature * std(a_P))) (std-normalised, spec §3.3), and the
    pooled token sits at the position of the cell's centre candidate (the (|P|-1)//2-th in raster
    order, like `uniform`'s pooled tokens). Returns (kept candidate indices [k] ascending, and the
    pooling as member indices [m], their owner in `kept` [m], weights [m]): the pooled state of
    kept[j] = sum of weight * x[member] over owner == j.
    """
    kept: list[int] = []
    members: list[torch.Tensor] = []
    owners: list[torch.Tensor] = []
    weights: list[torch.Tensor] = []
    for idx, cell_of, _, _ in frame_cells(frames, positions, grid, frame_budgets, cells_per_side):
        for cell in torch.unique(cell_of).tolist():
            m = idx[cell_of == cell]  # ascending = raster order (positions ascend with the index)
            a = scores[m].float()
            spread = a.std().clamp_min(1e-6) if m.numel() > 1 else torch.tensor(1.0)
            w = torch.softmax(a / (temperature * spread), dim=0)
            owners.append(torch.full((m.numel(),), len(kept), dtype=torch.long))
            kept.append(int(m[(m.numel() - 1) // 2]))
            members.append(m)
            weights.append(w)
    if not kept:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty, empty, torch.zeros(0)
    keep = torch.tensor(kept)
    order = keep.argsort()
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel())
    return keep[order], torch.cat(members), rank[torch.cat(owners)], torch.cat(weights)


def pooled_states(
    x: torch.Tensor, num_kept: int, members: torch.Tensor, owners: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """[n, D] candidate states -> [num_kept, D] GAPool pooled states (see `pool_grid`)."""
    out = torch.zeros(num_kept, x.shape[-1], dtype=torch.float32, device=x.device)
    contrib = weights.to(x.device)[:, None] * x[members.to(x.device)].float()
    return out.index_add_(0, owners.to(x.device), contrib).to(x.dtype)


def per_group_mass(scores: torch.Tensor, groups: torch.Tensor, num_groups: int) -> list[float]:
    """Sum of `scores` [n] per group, normalised to sum to 1 (all-zero input stays zero)."""
    mass = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, groups.cpu(), scores.double().cpu())
    total = float(mass.sum())
    return (mass / total if total > 0 else mass).tolist()


# -- additive / pre-LLM pieces -----------------------------------------------------------------------------
def summary_tail(features: torch.Tensor, grid: tuple[int, int], size: int) -> torch.Tensor:
    """LLaVA-MLB VSTail: [T, N, D] -> [T * s * s, D], every frame adaptively average-pooled to s x s."""
    T, N, D = features.shape
    h, w = grid
    x = features.reshape(T, h, w, D).permute(0, 3, 1, 2)  # [T, D, h, w]
    pooled = F.adaptive_avg_pool2d(x.float(), (size, size)).to(features.dtype)  # [T, D, s, s]
    return pooled.permute(0, 2, 3, 1).reshape(T * size * size, D)


def visionzip_frame(
    features: torch.Tensor,
    budget: int,
    dominant_ratio: float,
    variant: str = "paper",
    into: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """VisionZip* for one frame: [N, D] tokens -> (kept positions [b], their states [b, D]) in the
    order the LLM sees them.

    Dominant: the top round(ratio * b) tokens by a pseudo-[CLS] attention (softmax over the frame of
    the scaled dot product with the frame's mean token; SigLIP has no [CLS]). Contextual: the other
    tokens get b - dominant targets spaced uniformly among them; every remaining token joins its most
    similar target (cosine).
    - "paper" (mlb's reading): targets at int(i * R / n_ctx); a contextual token is the mean of its
      target and members, at the target's position; all kept tokens in position order.
    - "official" (VisionZip's code): targets at arange(0, R, R // n_ctx)[:n_ctx]; a contextual token
      is target + mean(members) (target alone without members); order = the dominant tokens in
      position order, then the contextual ones (the code concatenates them; positions re-sequenced).
    `into` [N] (filled when given): the position of the contextual target each merged token joined.
    """
    N, D = features.shape
    budget = max(0, min(int(budget), N))
    x = features.float()
    attn = torch.softmax(x @ x.mean(0) / math.sqrt(D), dim=0)  # [N] pseudo-CLS attention
    n_dom = min(budget, round(dominant_ratio * budget))
    dominant = select_topk(attn, n_dom)  # ascending positions
    rest = torch.ones(N, dtype=torch.bool)
    rest[dominant] = False
    rest_idx = rest.nonzero().squeeze(1)  # [R] ascending
    R = rest_idx.numel()
    n_ctx = min(budget - n_dom, R)
    keep, states = [dominant], [features[dominant]]
    if n_ctx > 0:
        if variant == "official":
            target_slot = torch.arange(0, R, max(1, R // n_ctx))[:n_ctx]
        else:
            step = R / n_ctx
            target_slot = torch.tensor([int(i * step) for i in range(n_ctx)])  # uniform over the rest
        targets = rest_idx[target_slot]
        is_target = torch.zeros(R, dtype=torch.bool)
        is_target[target_slot] = True
        others = rest_idx[~is_target]
        members = torch.zeros(n_ctx, D)
        counts = torch.zeros(n_ctx)
        if others.numel():
            xn = F.normalize(x, dim=-1)
            assign = (xn[others] @ xn[targets].T).argmax(dim=1)  # [R - n_ctx] -> target slot
            if into is not None:
                into[others.to(into.device)] = targets[assign].to(into.device)
            members.index_add_(0, assign, x[others])
            counts.index_add_(0, assign, torch.ones(others.numel()))
        if variant == "official":
            merged = x[targets] + members / counts.clamp_min(1)[:, None]
        else:
            merged = (x[targets] + members) / (counts + 1)[:, None]
        keep.append(targets)
        states.append(merged.to(features.dtype))
    kept, kept_states = torch.cat(keep), torch.cat(states)
    if variant == "official":
        return kept, kept_states
    order = kept.argsort()
    return kept[order], kept_states[order]


def as_slots(ids_in_order: torch.Tensor, states_in_order: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Kept tokens in a peer's own order -> (`LayerKeep.keep` ascending, `replace`).

    The engine keeps surviving slots in their original order; a peer that concatenates tokens in
    another order (official VisionZip, DyCoke) is reproduced by writing the r-th token of its order
    into the r-th kept slot. With contiguous positions a slot is nothing but its place in the row,
    so the LLM sees exactly the peer's sequence. Orders must stay frame-major (per-frame counts hold).
    """
    return ids_in_order.sort().values, states_in_order
