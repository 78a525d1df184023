"""Frame-index samplers: properties every decoder relies on (sorted, unique, in range, exact length)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlbcli.sampling import SAMPLERS, fps_indices, sample_indices, uniform_indices

totals = st.integers(min_value=0, max_value=5000)
counts = st.integers(min_value=1, max_value=600)
rates = st.floats(min_value=0.5, max_value=120.0, allow_nan=False, allow_infinity=False)


def _well_formed(indices: list[int], n: int) -> None:
    assert indices == sorted(indices)
    assert len(set(indices)) == len(indices)
    assert all(isinstance(i, int) and 0 <= i < n for i in indices)


@given(n=totals, k=counts)
def test_uniform_is_sorted_unique_in_range_with_exact_length(n: int, k: int) -> None:
    indices = uniform_indices(n, k)
    _well_formed(indices, n)
    assert len(indices) == min(k, n)


@given(n=st.integers(min_value=2, max_value=5000), k=st.integers(min_value=2, max_value=600))
def test_uniform_includes_both_endpoints(n: int, k: int) -> None:
    indices = uniform_indices(n, k)
    assert indices[0] == 0
    assert indices[-1] == n - 1


@given(n=st.integers(min_value=1, max_value=5000), k=counts)
def test_uniform_matches_linspace_round_half_up_when_not_oversampling(n: int, k: int) -> None:
    k = min(k, n)
    expected = np.floor(np.linspace(0, n - 1, k) + 0.5).astype(int).tolist() if k > 1 else [0]
    assert uniform_indices(n, k) == expected


def test_uniform_rounds_half_up_so_spacing_stays_even() -> None:
    # linspace(0, 5, 3) = [0, 2.5, 5]: round-half-to-even would pick 2, leaning on the start; half-up
    # rounds every .5 the same way (1.5 -> 2 and 2.5 -> 3), so no index depends on its parity.
    assert uniform_indices(6, 3) == [0, 3, 5]
    assert uniform_indices(4, 3) == [0, 2, 3]


def test_uniform_edge_cases() -> None:
    assert uniform_indices(0, 8) == []
    assert uniform_indices(5, 8) == [0, 1, 2, 3, 4]
    assert uniform_indices(100, 1) == [0]
    assert uniform_indices(32, 8) == [0, 4, 9, 13, 18, 22, 27, 31]
    with pytest.raises(ValueError):
        uniform_indices(10, 0)
    with pytest.raises(ValueError):
        uniform_indices(10, -3)


@given(n=totals, native=rates, target=rates)
def test_fps_is_well_formed_and_starts_at_zero(n: int, native: float, target: float) -> None:
    indices = fps_indices(n, native, target)
    _well_formed(indices, n)
    if n:
        assert indices[0] == 0


@given(n=st.integers(min_value=1, max_value=5000), native=rates, target=rates)
def test_fps_spacing_follows_the_target_rate(n: int, native: float, target: float) -> None:
    indices = fps_indices(n, native, target)
    step = native / target
    if step <= 1:
        assert indices == list(range(n))  # at or above the native rate: every frame
        return
    gaps = np.diff(indices)
    # Each sample is the frame nearest to k/target seconds: gaps are floor/ceil of the ideal step.
    assert all(np.floor(step) <= g <= np.ceil(step) for g in gaps)
    # ... and the whole clip is covered: the next sample time would fall past the last frame.
    assert indices[-1] + step > n - 1 - 0.5


@given(n=totals, native=rates, target=rates, cap=st.integers(min_value=1, max_value=64))
def test_fps_cap_falls_back_to_uniform_over_fps_samples(
    n: int, native: float, target: float, cap: int
) -> None:
    full = fps_indices(n, native, target)
    capped = fps_indices(n, native, target, max_frames=cap)
    _well_formed(capped, n)
    assert len(capped) == min(cap, len(full))
    assert set(capped) <= set(full)
    if len(capped) >= 2:
        assert capped[0] == full[0] and capped[-1] == full[-1]


def test_fps_examples_and_errors() -> None:
    assert fps_indices(32, 8.0, 2.0) == [0, 4, 8, 12, 16, 20, 24, 28]
    assert fps_indices(10, 30.0, 60.0) == list(range(10))
    assert fps_indices(0, 30.0, 1.0) == []
    assert fps_indices(300, 30.0, 1.0, max_frames=4) == [0, 90, 180, 270]
    for bad in [(10, 30.0, 0.0), (10, 0.0, 1.0), (10, 30.0, float("nan")), (10, 30.0, 1.0, 0)]:
        with pytest.raises(ValueError):
            fps_indices(*bad)


def test_sample_indices_dispatch() -> None:
    assert set(SAMPLERS) >= {"uniform", "fps"}
    assert sample_indices(32, 8.0, num_frames=8, fps=None) == uniform_indices(32, 8)
    assert sample_indices(32, 8.0, num_frames=None, fps=2.0) == fps_indices(32, 8.0, 2.0)
    assert sample_indices(32, 8.0, num_frames=3, fps=2.0) == fps_indices(32, 8.0, 2.0, max_frames=3)
    with pytest.raises(ValueError):
        sample_indices(32, 8.0, num_frames=None, fps=None)
