"""Frame-index samplers: properties every decoder relies on (sorted, unique, in range, exact length)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlbcli.io.sampling import (
    GENERIC,
    SAMPLERS,
    FrameRule,
    fps_indices,
    plan_frames,
    sample_indices,
    uniform_indices,
)
from mlbcli.models.qwen2_vl import QWEN_FRAME_RULE

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
def test_fps_count_comes_from_the_duration_and_frames_spread_over_the_clip(
    n: int, native: float, target: float
) -> None:
    """duration x fps frames (at least 1, at most all), evenly spread with both ends included: the
    reference samplers' layout, so a cap never leaves irregular gaps."""
    indices = fps_indices(n, native, target)
    count = min(n, max(1, int(np.floor(n / native * target))))
    assert len(indices) == count
    assert indices == uniform_indices(n, count)
    if count >= 2:
        ideal = (n - 1) / (count - 1)
        assert all(np.floor(ideal) <= g <= np.ceil(ideal) for g in np.diff(indices))


@given(n=totals, native=rates, target=rates, cap=st.integers(min_value=1, max_value=64))
def test_fps_cap_spreads_the_capped_count_over_the_whole_clip(
    n: int, native: float, target: float, cap: int
) -> None:
    full = fps_indices(n, native, target)
    capped = fps_indices(n, native, target, max_frames=cap)
    _well_formed(capped, n)
    assert len(capped) == min(cap, len(full))
    assert capped == uniform_indices(n, len(capped)) if n else capped == []
    if len(capped) >= 2:
        assert capped[0] == 0 and capped[-1] == n - 1


def test_fps_examples_and_errors() -> None:
    assert fps_indices(32, 8.0, 2.0) == [0, 4, 9, 13, 18, 22, 27, 31]  # 4 s x 2 fps = 8 frames
    assert fps_indices(95, 25.0, 1.0) == [0, 47, 94]  # 3.8 s -> 3 frames (HF's count, int(3.8))
    assert fps_indices(10, 30.0, 60.0) == list(range(10))
    assert fps_indices(0, 30.0, 1.0) == []
    assert fps_indices(3, 30.0, 1.0) == [0]  # 0.1 s: one frame, not none
    assert fps_indices(300, 30.0, 1.0, max_frames=4) == [0, 100, 199, 299]
    for bad in [(10, 30.0, 0.0), (10, 0.0, 1.0), (10, 30.0, float("nan")), (10, 30.0, 1.0, 0)]:
        with pytest.raises(ValueError):
            fps_indices(*bad)


# -- family rules (qwen-vl-utils 0.0.14 `smart_nframes`, computed by hand) ---------------------------------

QWEN = QWEN_FRAME_RULE  # what the Qwen2-VL, Qwen2.5-VL and Qwen3-VL adapters give the decoder


def test_qwen_rule_is_qwen_vl_utils_constants() -> None:
    from mlbcli.models.qwen3_vl import Qwen3VLAdapter

    assert (QWEN.multiple, QWEN.fps_min_frames, QWEN.fps_max_frames) == (2, 4, 768)
    assert Qwen3VLAdapter.frame_rule is QWEN
    assert FrameRule() == GENERIC


@pytest.mark.parametrize(
    ("asked", "count"), [(7, 8), (5, 4), (9, 8), (11, 12), (3, 4), (1, 2), (8, 8), (32, 32)]
)
def test_qwen_rounds_frame_counts_to_pairs_half_to_even(asked: int, count: int) -> None:
    plan = plan_frames(900, 30.0, num_frames=asked, fps=None, rule=QWEN)
    assert len(plan.indices) == count
    assert plan.indices == uniform_indices(900, count)
    assert (plan.note is None) == (asked == count)
    if plan.note:
        assert f"--frames {asked} -> {count}" in plan.note


def test_qwen_fps_counts_follow_qwen_vl_utils() -> None:
    # 95 frames at 25 fps, 1 fps: 3.8 -> at least 4 -> [0, 31, 63, 94] (linspace(0, 94, 4).round())
    plan = plan_frames(95, 25.0, num_frames=None, fps=1.0, rule=QWEN)
    assert plan.indices == [0, 31, 63, 94]
    assert plan.note is not None and "at least 4" in plan.note
    # 900 frames at 30 fps, 1 fps: 30 frames, no note
    plan = plan_frames(900, 30.0, num_frames=None, fps=1.0, rule=QWEN)
    assert plan.indices == uniform_indices(900, 30) and plan.note is None
    # 7200 frames at 24 fps, 2 fps: 600 frames (under 768)
    assert len(plan_frames(7200, 24.0, num_frames=None, fps=2.0, rule=QWEN).indices) == 600
    # a 20-minute clip at 2 fps would be 2400 frames: capped at 768, and the row says so
    plan = plan_frames(36000, 30.0, num_frames=None, fps=2.0, rule=QWEN)
    assert len(plan.indices) == 768 and plan.note is not None and "at most 768" in plan.note
    # --frames caps --fps (qwen-vl-utils' max_frames), floored to a pair (noted); an even cap is not
    plan = plan_frames(36000, 30.0, num_frames=33, fps=2.0, rule=QWEN)
    assert len(plan.indices) == 32 and plan.note is not None and "groups of 2" in plan.note
    plan = plan_frames(36000, 30.0, num_frames=32, fps=2.0, rule=QWEN)
    assert len(plan.indices) == 32 and plan.note is None
    # 2.5 fps of 95 frames at 25 fps = 9.5 -> floor to a pair: 8
    assert len(plan_frames(95, 25.0, num_frames=None, fps=2.5, rule=QWEN).indices) == 8
    # a 3-frame clip: [0, 2] (qwen-vl-utils: min(4, floor_even(3)) = 2); a single frame stays one
    assert plan_frames(3, 30.0, num_frames=None, fps=1.0, rule=QWEN).indices == [0, 2]
    assert plan_frames(1, 30.0, num_frames=None, fps=1.0, rule=QWEN).indices == [0]


@given(
    n=st.integers(min_value=1, max_value=5000),
    native=rates,
    target=rates,
    cap=st.one_of(st.none(), st.integers(min_value=1, max_value=900)),
)
def test_qwen_fps_plans_are_pairs_within_bounds(
    n: int, native: float, target: float, cap: int | None
) -> None:
    indices = plan_frames(n, native, num_frames=cap, fps=target, rule=QWEN).indices
    _well_formed(indices, n)
    assert indices == uniform_indices(n, len(indices))
    ceiling = min(n, 768, cap or n)
    if ceiling >= 2:
        assert len(indices) % 2 == 0
        assert len(indices) <= ceiling
        assert len(indices) >= min(4, ceiling // 2 * 2)


def test_generic_rule_is_the_plain_samplers() -> None:
    assert plan_frames(900, 30.0, num_frames=7, fps=None).indices == uniform_indices(900, 7)
    assert plan_frames(900, 30.0, num_frames=None, fps=1.0).indices == fps_indices(900, 30.0, 1.0)
    assert plan_frames(900, 30.0, num_frames=7, fps=None).note is None


def test_sample_indices_dispatch() -> None:
    assert set(SAMPLERS) >= {"uniform", "fps"}
    assert sample_indices(32, 8.0, num_frames=8, fps=None) == uniform_indices(32, 8)
    assert sample_indices(32, 8.0, num_frames=None, fps=2.0) == fps_indices(32, 8.0, 2.0)
    assert sample_indices(32, 8.0, num_frames=3, fps=2.0) == fps_indices(32, 8.0, 2.0, max_frames=3)
    with pytest.raises(ValueError):
        sample_indices(32, 8.0, num_frames=None, fps=None)


@pytest.mark.parametrize(
    ("n", "native", "frames", "fps", "count", "reason"),
    [
        (900, 30.0, 7, None, 8, "groups of 2"),  # --frames 7 -> 8
        (900, 30.0, 8, None, 8, None),
        (5, 30.0, 7, None, 5, None),  # the clip has 5 frames: what a plain family takes too
        (1, 30.0, 1, None, 1, None),  # a 1-frame clip stays 1 frame (padded by the adapter), no "-> 2"
        (95, 25.0, None, 1.0, 4, "at least 4 frames"),  # 3.8 s -> 4
        (36000, 30.0, None, 2.0, 768, "at most 768 frames"),
        (36000, 30.0, 33, 2.0, 32, "groups of 2"),  # the user's cap, floored to a pair
        (9000, 30.0, 3, 2.0, 2, "groups of 2"),  # not "at least 4": the user capped it at 3
        (3, 30.0, None, 1.0, 2, "groups of 2"),  # 0.1 s: 1 frame asked, the family takes a pair
        (900, 30.0, None, 1.0, 30, None),
    ],
)
def test_qwen_notes_name_the_rule_that_set_the_count(n, native, frames, fps, count, reason) -> None:
    """The row's `input_note` must agree with the count it reports and name the binding rule."""
    plan = plan_frames(n, native, num_frames=frames, fps=fps, rule=QWEN)
    assert len(plan.indices) == count
    if reason is None:
        assert plan.note is None
    else:
        assert plan.note is not None and reason in plan.note and f"-> {count} frames" in plan.note
