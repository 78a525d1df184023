"""Building blocks shared by the merge-based baselines (FastVID, HoliTom, PruneVid): DPC-kNN density
peaks, nearest-centre assignment, a ViT-attention proxy, and stable top-k.

All functions are pure and deterministic (CPU or GPU): where the reference implementations add
`torch.rand(...) * 1e-6` to the density to break ties, we break them by token index instead (a
lower index counts as the denser one), so that a run is reproducible and a batch row is the row alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def stable_top(scores: torch.Tensor, k: int, *, largest: bool = True) -> torch.Tensor:
    """Indices of the `k` largest (or smallest) `scores` [n], ties to the lower index, in rank order."""
    k = max(0, min(int(k), scores.numel()))
    order = torch.argsort(scores, descending=largest, stable=True)
    return order[:k]


def density_peaks(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """DPC-kNN scores of the tokens `x` [n, D]: (score [n], distances [n, n]).

    distance = Euclidean / sqrt(D); density = exp(-mean of the squared distances to the k nearest
    tokens, the token itself included); delta = distance to the nearest denser token (the largest
    distance for the densest one); score = delta * density. The cluster centres are the top scores.
    """
    n, dim = x.shape
    dist = torch.cdist(x.float()[None], x.float()[None])[0] / math.sqrt(dim)  # [n, n]
    k = max(1, min(int(k), n))
    nearest = dist.topk(k, dim=-1, largest=False).values  # [n, k]
    density = (-(nearest**2).mean(dim=-1)).exp()  # [n]
    index = torch.arange(n, device=x.device)
    # j is denser than i: a higher density, or the same density and a lower index (deterministic ties)
    denser = (density[None, :] > density[:, None]) | (
        (density[None, :] == density[:, None]) & (index[None, :] < index[:, None])
    )  # [i, j]
    far = dist.max() if n else dist.new_zeros(())
    delta = torch.where(denser, dist, far).min(dim=-1).values if n else dist.new_zeros(0)
    return delta * density, dist


def assign_to_centres(dist: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """[n] index (into `centres`) of the nearest centre of every token; a centre joins itself."""
    assign = dist[:, centres].argmin(dim=1)  # [n]
    assign[centres] = torch.arange(centres.numel(), device=dist.device)
    return assign


def frame_saliency(features: torch.Tensor) -> torch.Tensor:
    """[T, N, D] -> [T, N] pseudo-[CLS] attention of every token inside its frame.

    The reference methods rank tokens by the vision tower's attention (SigLIP's pooling head or last
    layer); `VideoTokens` carries no ViT attention, so every merge-based baseline here uses the same
    proxy as `visionzip`: softmax over the frame of <mean token, token> / sqrt(D) on the projector
    outputs.
    """
    x = features.float()
    return torch.softmax((x * x.mean(dim=1, keepdim=True)).sum(-1) / math.sqrt(x.shape[-1]), dim=-1)


def cosine_assign(members: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[m] index of the most cosine-similar target [t, D] of every member [m, D] (ties: lower index)."""
    sim = F.normalize(members.float(), dim=-1) @ F.normalize(targets.float(), dim=-1).T  # [m, t]
    return sim.argmax(dim=1)


def even_split(total: int, parts: int) -> list[int]:
    """`total` over `parts` as evenly as possible, the first parts taking the remainder."""
    if parts <= 0:
        return []
    base, extra = divmod(int(total), parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def runs(labels: list[int]) -> list[tuple[int, int]]:
    """Contiguous runs of equal labels: [(start, stop_exclusive), ...]."""
    out: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            out.append((start, i))
            start = i
    return out
