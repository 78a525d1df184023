"""Pure tensor functions behind the attention-debiased methods (no model, no engine state).

Naming: `T` frames, `N = h * w` tokens per frame, `n` candidate visual tokens (a subset of the T*N,
identified by their flat visual ids `t * N + p`), `D` hidden size. Every selector returns ascending
indices into its candidate list, so the engine can use them as `LayerKeep.keep` directly.

Pieces (composed in `mlbcli.selection.presets`):
- `segment_frames`      AdaTP video segmentation by adjacent-frame similarity.
- `allocate`            exact integer budgets: floors, weights, capacities, largest remainder.
- `segment_budgets`     AdaTP global debiasing: per-segment budgets (length x relevance, floor b_min).
- `dedup_keep`          AdaTP local debiasing: same-position deduplication inside a segment.
- `select_*`            plain top-k, grouped top-k, gridded (GAPool select) top-k.
- `summary_tail`        LLaVA-MLB VSTail: s x s average pool of every frame.
- `visionzip_frame`     VisionZip* (dominant + contextual) for one frame.
- `dycoke_keep`         DyCoke TTM temporal pruning in windows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from mlbcli.selection.baselines import grid_cells


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

    weight_j = |s_j| * exp(z_j / temperature) (length prior x question relevance, z_j = relevance
    standardised over segments); floor_j =
    floor(min_fraction * total * |s_j| / T), so no segment (e.g. the middle of the video) can be
    starved by attention that piles up at the two ends of the sequence.
    """
    lengths = torch.bincount(segments).tolist()
    T = sum(lengths)
    r = relevance.float() if relevance is not None else torch.zeros(len(lengths))
    # z-score across segments: cosines in the LLM embedding space have a model-dependent scale, so
    # the temperature is in standard deviations (scale-free across models).
    z = (r - r.mean()) / r.std().clamp_min(1e-6) if r.numel() > 1 else torch.zeros_like(r)
    boost = torch.exp((z - z.max()) / temperature).tolist()
    weights = [n * b for n, b in zip(lengths, boost, strict=True)]
    floors = [math.floor(min_fraction * total * n / T) for n in lengths]
    return allocate(total, weights, capacities, floors)


# -- local debiasing ---------------------------------------------------------------------------------------
def dedup_keep(features: torch.Tensor, segments: torch.Tensor, threshold: float) -> torch.Tensor:
    """AdaTP local debiasing. [T, N, D] features, [T] segment ids -> [T, N] bool mask of kept tokens.

    Token (t, p) is a duplicate when frame t-1 is in the same segment and cos(x[t, p], x[t-1, p]) >=
    threshold; duplicates are dropped (keep-first), so a static spot costs one token per segment
    instead of one per frame. Any two kept tokens at one position in adjacent frames of a segment
    therefore have cosine < threshold.
    """
    T, N, _ = features.shape
    keep = torch.ones(T, N, dtype=torch.bool)
    if T < 2:
        return keep
    x = F.normalize(features.float(), dim=-1)
    sim = (x[1:] * x[:-1]).sum(-1).cpu()  # [T-1, N] cosine with the same position one frame earlier
    same_segment = (segments[1:] == segments[:-1]).cpu()[:, None]  # [T-1, 1]
    keep[1:] = ~((sim >= threshold) & same_segment)
    return keep


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
    h, w = grid
    layouts: dict[int, torch.Tensor] = {}  # even frame budgets take at most two distinct values
    group = torch.full_like(frames, -1)
    budgets: list[int] = []
    for t, b in enumerate(frame_budgets):
        members = (frames == t).nonzero().squeeze(1)
        b = min(int(b), members.numel())
        if b <= 0:
            continue
        if b not in layouts:
            layouts[b] = grid_cell_ids(grid, b, cells_per_side)
        cells = layouts[b][positions[members]]  # [m] cell of each candidate of the frame
        n_cells = int(layouts[b].max()) + 1
        caps = torch.bincount(cells, minlength=n_cells).tolist()
        group[members] = cells + len(budgets)
        budgets += allocate(b, [1.0] * n_cells, caps)
    alive = (group >= 0).nonzero().squeeze(1)
    return alive[select_grouped(scores[alive], group[alive], budgets)]


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
    features: torch.Tensor, budget: int, dominant_ratio: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """VisionZip* for one frame: [N, D] tokens -> (kept positions [b] ascending, their states [b, D]).

    Dominant: the top round(ratio * b) tokens by a pseudo-[CLS] attention (softmax over the frame of
    the scaled dot product with the frame's mean token; SigLIP has no [CLS]). Contextual: the other
    tokens get b - dominant targets spaced uniformly among them; every remaining token joins its most
    similar target (cosine) and a contextual token is the mean of its target and its members, placed
    at the target's position.
    """
    N, D = features.shape
    budget = max(0, min(int(budget), N))
    x = features.float()
    attn = torch.softmax(x @ x.mean(0) / math.sqrt(D), dim=0)  # [N] pseudo-CLS attention
    n_dom = min(budget, round(dominant_ratio * budget))
    dominant = select_topk(attn, n_dom)
    rest = torch.ones(N, dtype=torch.bool)
    rest[dominant] = False
    rest_idx = rest.nonzero().squeeze(1)  # [R] ascending
    n_ctx = min(budget - n_dom, rest_idx.numel())
    keep, states = [dominant], [features[dominant]]
    if n_ctx > 0:
        step = rest_idx.numel() / n_ctx
        target_slot = torch.tensor([int(i * step) for i in range(n_ctx)])  # uniform over the rest
        targets = rest_idx[target_slot]
        is_target = torch.zeros(rest_idx.numel(), dtype=torch.bool)
        is_target[target_slot] = True
        others = rest_idx[~is_target]
        merged = x[targets].clone()
        counts = torch.ones(n_ctx)
        if others.numel():
            xn = F.normalize(x, dim=-1)
            assign = (xn[others] @ xn[targets].T).argmax(dim=1)  # [R - n_ctx] -> target slot
            merged.index_add_(0, assign, x[others])
            counts.index_add_(0, assign, torch.ones(others.numel()))
        keep.append(targets)
        states.append((merged / counts[:, None]).to(features.dtype))
    kept = torch.cat(keep)
    order = kept.argsort()
    return kept[order], torch.cat(states)[order]


def dycoke_ratio(keep: float, window: int) -> float:
    """DyCoke's pruning ratio K giving retention ~keep: keep = (1 + (window-1)(1-K)) / window."""
    return min(1.0, max(0.0, 1.0 - (window * keep - 1.0) / (window - 1)))


def dycoke_keep(features: torch.Tensor, ratio: float, window: int = 4) -> torch.Tensor:
    """DyCoke TTM: [T, N, D] -> [T, N] bool kept mask.

    In each window of `window` frames the first frame is kept whole; every other frame keeps its
    floor((1 - ratio) * N) tokens least similar (cosine, same position) to a reference frame: frame 1
    and 2 vs frame 0, frame 3 vs frame 2 (DyCoke's pairing; later frames of longer windows vs the
    previous frame). A trailing partial window is handled the same way (DyCoke's loop skips part of it).
    """
    T, N, _ = features.shape
    x = F.normalize(features.float(), dim=-1)
    keep = torch.zeros(T, N, dtype=torch.bool)
    n_keep = math.floor((1.0 - ratio) * N + 1e-9)
    for start in range(0, T, window):
        keep[start] = True
        for j in range(1, min(window, T - start)):
            ref = start if j <= 2 else start + j - 1  # 1, 2 vs 0; 3 vs 2 (longer windows: vs previous)
            sim = (x[start + j] * x[ref]).sum(-1)  # [N]
            keep[start + j, select_topk(-sim, n_keep)] = True
    return keep
