"""Statistics of `mlb score` on 0/1 outcomes (pure Python: no numpy, no torch).

What `mlb score` reports and how (z = 1.959964, two-sided 95%):

- **Accuracy** (micro): correct / graded rows (rows with `correct` set; error rows, rows without ground
  truth and rows a benchmark's policy excludes are not graded).
- **Standard error**, clustered by video: questions about one video are not independent. The same formula
  as lmms-eval's `clustered_stderr` (Miller 2024, "Adding error bars to evals", eq. 4):
  ``SE² = Σ(y−ȳ)²/((n−1)n) + Σ_videos[(Σ_i(y_i−ȳ))² − Σ_i(y_i−ȳ)²]/n²``; with one question per video
  it is the plain standard error of the mean.
- **95% interval of the accuracy**: Wilson's score interval on the effective sample size
  ``n_eff = n / deff``, ``deff = SE² / SE_iid²`` (at least 1; when every row agrees, ``n_eff`` is the
  number of videos). Wilson's interval stays inside [0, 1] and keeps its coverage for small n and
  accuracies near 0 or 1, where ``p ± z·SE`` does not.
- **Macro accuracy** (benchmarks that average categories, e.g. MLVU): the mean of the per-category
  accuracies; its interval is ``± z·sqrt(Σ_k SE_k²)/K`` with Agresti–Coull variances per category
  (``p̃ = (k + z²/2)/(n_eff + z²)``, ``SE_k² = p̃(1−p̃)/(n_eff + z²)``), clipped to [0, 1].
- **Paired comparison** (`--against`), on the rows graded in both files with the same
  (video_id, question_id): ``delta`` = mean of ``d = correct − correct_baseline`` (this file minus the
  baseline), its interval ``delta ± z·SE(d)`` with the clustered SE above; the exact (binomial) McNemar
  test on the discordant rows: ``p = min(1, 2·P(X ≤ min(b, c)))``, ``X ~ Binomial(b + c, 1/2)``, where b
  rows flipped to correct and c flipped to wrong (1.0 when none flipped). The McNemar test treats rows as
  independent.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(p: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval of a proportion `p` observed on `n` (possibly effective, fractional) trials."""
    if n <= 0:
        return (0.0, 1.0)
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(max(p * (1 - p) / n + z * z / (4 * n * n), 0.0))
    # Rounding puts `center - half` a hair above 0 at p = 0 (2.8e-17): the interval must contain p.
    return (max(0.0, min(p, center - half)), min(1.0, max(p, center + half)))


def clustered_stderr(values: Sequence[float], clusters: Sequence[Any]) -> float | None:
    """Standard error of the mean of `values`, clustered (see the module docstring); None below 2 values."""
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    by_cluster: dict[Any, list[float]] = defaultdict(list)
    for value, cluster in zip(values, clusters, strict=True):
        by_cluster[cluster].append(value - mean)
    cross = sum(sum(d) ** 2 - sum(x * x for x in d) for d in by_cluster.values()) / (n * n)
    return math.sqrt(max(variance / n + cross, 0.0))


def effective_n(values: Sequence[float], clusters: Sequence[Any]) -> float:
    """n divided by the design effect of clustering (never above n; the number of clusters when all agree)."""
    n = len(values)
    if n < 2:
        return float(n)
    mean = sum(values) / n
    iid = sum((v - mean) ** 2 for v in values) / (n - 1) / n
    if iid == 0:
        return float(len(set(clusters)))
    se = clustered_stderr(values, clusters) or 0.0
    return n / max(se * se / iid, 1.0)


def mcnemar_exact(flipped_to_correct: int, flipped_to_wrong: int) -> float:
    """Two-sided exact McNemar p-value: 2·P(X <= min(b, c)), X ~ Binomial(b + c, 1/2), at most 1."""
    b, c = flipped_to_correct, flipped_to_wrong
    n = b + c
    if n == 0:
        return 1.0
    tail = Fraction(sum(math.comb(n, i) for i in range(min(b, c) + 1)), 2**n)
    return float(min(Fraction(1), 2 * tail))
