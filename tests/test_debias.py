"""Debiasing does what it claims on synthetic score fields with a positional attention bias.

The fields mimic the papers' observations: AdaTP's global bias (attention piles up at both ends of
the visual sequence: U-shape), LLaVA-MLB's (rising toward late frames), and AdaTP's local bias (one
spatial position wins in every frame). Plain top-k (FastV) follows the bias; debiased selections
spread over frames / positions measurably more evenly.
"""

from __future__ import annotations

import math

import pytest
import torch

from mlbcli.selection.ops import debias as D
from mlbcli.selection.ops.attention import attention_select

T, H, W = 32, 14, 14
N = H * W


def _field(shape: str, seed: int) -> torch.Tensor:
    """[T*N] scores: a positional bias over frames times log-normal noise."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, T)
    bias = {"u": 1 + 8 * ((2 * t - 1) ** 4), "rising": 1 + 8 * t**4}[shape]  # [T]
    noise = torch.exp(0.5 * torch.randn(T, N, generator=g))
    return (bias[:, None] * noise).flatten()


def _segments(num: int) -> torch.Tensor:
    """Global frame features forming `num` equal scenes -> segment ids via the real segmentation."""
    g = torch.Generator().manual_seed(0)
    scenes = torch.randn(num, 64, generator=g)
    frame_features = scenes.repeat_interleave(T // num, dim=0) + 0.01 * torch.randn(T, 64, generator=g)
    return D.segment_frames(frame_features, 0.9)


def _entropy(keep: torch.Tensor, ids: torch.Tensor) -> float:
    """Normalised entropy (0..1) of kept tokens per frame: 1 = perfectly even over the T frames."""
    counts = torch.bincount(ids[keep] // N, minlength=T).double()
    p = counts / counts.sum()
    p = p[p > 0]
    return float(-(p * p.log()).sum() / math.log(T))


@pytest.mark.parametrize("shape", ["u", "rising"])
@pytest.mark.parametrize("keep", [0.1, 0.25])
@pytest.mark.parametrize("seed", [0, 1])
def test_global_and_grid_spread_over_frames(shape, keep, seed):
    scores, ids = _field(shape, seed), torch.arange(T * N)
    budget = round(T * N * keep)
    common = {"num_frames": T, "grid": (H, W), "budget": budget}
    plain, _ = attention_select(scores, ids, **common)
    segments = _segments(8)
    assert int(segments.max()) + 1 == 8
    global_, info = attention_select(scores, ids, segments=segments, **common)
    grid, _ = attention_select(scores, ids, use_grid=True, **common)
    e_plain, e_global, e_grid = (_entropy(k, ids) for k in (plain, global_, grid))
    assert e_plain < 0.9  # the bias is visible in plain top-k
    assert e_global > e_plain + 0.15
    assert e_grid > e_plain + 0.15 and e_grid > 0.999  # every frame gets its even share
    # The middle of the video is no longer starved: every segment keeps at least its floor.
    assert min(info["budgets"]) >= math.floor(0.25 * budget / 8)


def test_local_dedup_breaks_position_monopoly():
    """Local bias: position 0 is static and most attended in every frame; dedup keeps it once per segment."""
    g = torch.Generator().manual_seed(0)
    features = torch.randn(T, N, 16, generator=g)
    features[:, 0] = features[0, 0]  # a static spot (e.g. a logo) at one grid position
    scores = torch.rand(T, N, generator=g)
    scores[:, 0] += 10.0
    segments = torch.zeros(T, dtype=torch.long)
    budget = 64
    plain, _ = attention_select(
        scores.flatten(), torch.arange(T * N), num_frames=T, grid=(H, W), budget=budget
    )
    alive = D.dedup_keep(features, segments, 0.9)[0].flatten()
    ids = alive.nonzero().squeeze(1)
    debiased, _ = attention_select(scores.flatten()[alive], ids, num_frames=T, grid=(H, W), budget=budget)

    def at_position_zero(kept_ids: torch.Tensor) -> int:
        return int((kept_ids % N == 0).sum())

    assert at_position_zero(plain) == T  # half the budget spent on one spot
    assert at_position_zero(ids[debiased]) == 1
    assert torch.unique(ids[debiased] % N).numel() > torch.unique(plain % N).numel() + 20
