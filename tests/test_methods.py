"""Debiased methods: identity at keep 1.0, engine-level invariants, and properties of the pure selectors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers_engine import prefill
from hypothesis import given, settings
from hypothesis import strategies as st

from mlbcli.engine.pipeline import Pipeline
from mlbcli.errors import UsageError
from mlbcli.models.base import VideoTokens
from mlbcli.selection import MethodOptions, get_method
from mlbcli.selection.debiasers import Debiaser, GlobalSegments, GridCells, SummaryTail, parse_debias
from mlbcli.selection.ops import debias as D
from mlbcli.selection.ops.attention import attention_select
from mlbcli.selection.ops.dycoke import dycoke_keep, dycoke_ratio
from mlbcli.selection.parameters import resolve
from mlbcli.selection.params import parameter_declarations

QUESTION = "What is happening in the video?"
PRESETS = ["fastv", "adatp", "mlb", "visionzip", "dycoke"]


@pytest.fixture(scope="module")
def encoded(tiny_adapter):
    frames = np.random.default_rng(7).integers(0, 255, (8, 90, 120, 3), dtype=np.uint8)
    return Pipeline(tiny_adapter).encode(frames)


def _prefill(adapter, video, method):
    prompt = adapter.build_prompt(QUESTION, video)
    return prompt, prefill(adapter, prompt, video, method.plan(video, prompt))


# -- identity at keep 1.0 -------------------------------------------------------------------------------
@pytest.mark.parametrize("method", PRESETS + ["fastv:local", "fastv:global,grid"])
def test_keep_one_reproduces_none(tiny_adapter, encoded, method):
    name, _, debias = method.partition(":")
    options = MethodOptions(keep=1.0, debias=tuple(debias.split(",")) if debias else None)
    _, ref = _prefill(tiny_adapter, encoded.tokens, get_method("none"))
    _, same = _prefill(tiny_adapter, encoded.tokens, get_method(name, options))
    assert torch.equal(same.logits, ref.logits)
    assert torch.equal(same.position_ids, ref.position_ids)
    none = Pipeline(tiny_adapter, method="none").answer(encoded, QUESTION, max_new_tokens=6)
    ours = Pipeline(tiny_adapter, method=name, keep=1.0).answer(encoded, QUESTION, max_new_tokens=6)
    assert ours.token_ids == none.token_ids and ours.stats.flops_ratio == 1.0


class _FirstFrameOnly(Debiaser):
    """A test debiaser (as a plugin would write one): before the LLM, keep the first frame only."""

    name = "test-first-frame"
    description = "keep the first frame's tokens (a test debiaser)"
    drops_before_llm = True

    def drop_before_llm(self, job, keep, info):
        info["first_frame_only"] = True
        return keep[keep < job.video.tokens_per_frame]


def test_a_registered_debiaser_acts_through_its_hooks(tiny_adapter, encoded, monkeypatch):
    """The attention selection knows no debiaser by name: a new one passes --debias and does what its
    hooks say (here: only frame 0 reaches the probe, so only frame 0 can be kept), alone or composed."""
    from mlbcli.plugins import Registry
    from mlbcli.selection import debiasers

    fresh = Registry("mlb.debiasers", dict(debiasers.DEBIASERS._builtins))
    monkeypatch.setattr(debiasers, "DEBIASERS", fresh)
    fresh.register("test-first-frame", _FirstFrameOnly)
    video = encoded.tokens
    N = video.tokens_per_frame
    for debias in (("test-first-frame",), ("grid", "test-first-frame")):
        method = get_method("fastv", MethodOptions(keep=0.05, debias=debias))
        assert method.debiasers() == (*debias[:-1], "test-first-frame")  # built-ins first, then plugins
        _, state = _prefill(tiny_adapter, video, method)
        assert state.infos[0]["first_frame_only"] is True
        assert state.kept_ids.numel() > 0 and bool((state.kept_ids < N).all())
        assert "attention_per_frame_raw" not in state.infos[method.layer]


# -- engine-level invariants ----------------------------------------------------------------------------
@pytest.mark.parametrize("method", PRESETS + ["fastv:local", "adatp:global,grid,tail"])
@pytest.mark.parametrize("keep", [0.5, 0.25])
def test_text_kept_and_positions_preserved(tiny_adapter, encoded, method, keep):
    name, _, debias = method.partition(":")
    variant = "paper" if name == "visionzip" else None  # original positions (official re-sequences)
    options = MethodOptions(keep=keep, debias=tuple(debias.split(",")) if debias else None, variant=variant)
    video = encoded.tokens
    prompt, state = _prefill(tiny_adapter, video, get_method(name, options))
    n, start = video.num_visual, prompt.visual_start
    m = state.appended
    kept_pos = start + state.kept_ids
    tail_pos = torch.arange(start + n, start + n + m)  # appended tokens start right after the visual block
    after = torch.arange(start + n, prompt.length) + m  # text (and image_newline) after, shifted by the tail
    expected = torch.cat([torch.arange(start), kept_pos, tail_pos, after])
    assert torch.equal(state.position_ids[0], expected)
    assert bool((state.kept_ids[1:] > state.kept_ids[:-1]).all())  # order preserved
    kept = state.visual_per_layer[-1]
    if name in ("fastv", "mlb", "visionzip") or "tail" in debias:
        assert kept == round(n * keep)  # exact budget, tail included
    assert torch.isfinite(state.logits).all()


def test_mlb_tail_is_appended_and_counted(tiny_adapter, encoded):
    video = encoded.tokens
    _, state = _prefill(
        tiny_adapter, video, get_method("mlb", MethodOptions(keep=0.5, params={"tail_size": 2}))
    )
    T = video.num_frames
    assert state.appended == T * 4
    assert state.visual_per_layer[0] == video.num_visual + T * 4
    assert state.visual_per_layer[-1] == video.num_visual // 2
    assert state.kept_ids.numel() == video.num_visual // 2 - T * 4


def test_pipeline_info_has_segments_and_attention(tiny_adapter, encoded):
    stats = (
        Pipeline(tiny_adapter, method="adatp", keep=0.25).answer(encoded, QUESTION, max_new_tokens=2).stats
    )
    info = stats.info["2"]
    assert sum(info["budgets"]) == info["budget"] == stats.visual_tokens_kept
    assert len(info["segments"]) == len(info["budgets"])
    assert math.isclose(sum(info["attention_per_frame_debiased"]), 1.0, rel_tol=1e-6)


# -- usage errors ---------------------------------------------------------------------------------------
def _plan(name, **kw):
    video = VideoTokens(torch.randn(4, 16, 8), (4, 4), None, torch.randn(4, 6))
    from mlbcli.models.base import Prompt

    prompt = Prompt(torch.zeros(1, 70, dtype=torch.long), 2, 64, 0, torch.tensor([66, 67]), "")
    return get_method(name, MethodOptions(**kw)).plan(video, prompt)


@pytest.mark.parametrize(
    "kw",
    [
        {"debias": ("grid",)},  # visionzip/dycoke take no debiasers
        {"params": {"nope": 1}},
        {"params": {"tail_size": 1}},  # not used by dycoke
    ],
)
def test_prellm_usage_errors(kw):
    with pytest.raises(UsageError):
        _plan("dycoke", keep=0.5, **kw)


@pytest.mark.parametrize(
    "kw",
    [
        {"debias": ("bogus",)},
        {"debias": ("none", "grid")},
        {"layer": 0},
        {"params": {"dedup_threshold": 0.9}},  # fastv has no local debiaser
        {"params": {"grid": 1.5}},
        {"keep": 0.1, "debias": ("tail",), "params": {"tail_size": 2}},  # tail alone exceeds the budget
    ],
)
def test_attention_usage_errors(kw):
    with pytest.raises(UsageError):
        _plan("fastv", **{"keep": 0.5, **kw})


def test_params_registry():
    assert resolve((GlobalSegments.Params,), {}, "global")["segment_threshold"] == 0.9
    assert resolve((GridCells.Params, SummaryTail.Params), {"tail_size": "2", "grid": None}, "mlb") == {
        "grid": 0,
        "pool_temperature": 0.0,
        "tail_size": 2,
    }
    for hp in parameter_declarations().values():
        assert hp.help and hp.methods
    assert parse_debias(("none",), ("grid",)) == ()
    assert parse_debias(None, ("grid",)) == ("grid",)
    assert parse_debias(["tail", "Global"], ()) == ("global", "tail")


# -- properties of the pure selectors -------------------------------------------------------------------
@st.composite
def score_fields(draw):
    T = draw(st.integers(1, 8))
    h, w = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    N = h * w
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    alive = torch.rand(T * N, generator=g) < draw(st.sampled_from([1.0, 0.8, 0.5]))
    ids = alive.nonzero().squeeze(1)
    if ids.numel() == 0:
        ids = torch.tensor([0])
    scores = torch.rand(ids.numel(), generator=g)
    if draw(st.booleans()):
        scores = scores.round(decimals=1)  # ties
    cuts = torch.rand(T, generator=g) < 0.4
    cuts[0] = False
    segments = cuts.long().cumsum(0)
    relevance = torch.randn(int(segments.max()) + 1, generator=g)
    budget = draw(st.integers(0, ids.numel() + 3))
    return T, (h, w), ids, scores, segments, relevance, budget


@settings(max_examples=120, deadline=None)
@given(
    field=score_fields(),
    use_global=st.booleans(),
    use_grid=st.booleans(),
    floor=st.sampled_from([0.0, 0.25, 1.0]),
    cells=st.sampled_from([0, 1, 2]),
)
def test_selection_exact_sorted_unique(field, use_global, use_grid, floor, cells):
    T, grid, ids, scores, segments, relevance, budget = field
    keep, info = attention_select(
        scores,
        ids,
        num_frames=T,
        grid=grid,
        budget=budget,
        segments=segments if use_global else None,
        relevance=relevance,
        use_grid=use_grid,
        min_segment_budget=floor,
        cells_per_side=cells,
    )
    assert keep.numel() == min(budget, ids.numel())  # exact budget
    assert bool((keep[1:] > keep[:-1]).all())  # ascending, unique: original order preserved
    assert keep.numel() == 0 or (int(keep.min()) >= 0 and int(keep.max()) < ids.numel())
    if use_global:
        assert sum(info["budgets"]) == keep.numel()


@settings(max_examples=120, deadline=None)
@given(lengths=st.lists(st.integers(1, 12), min_size=1, max_size=10), data=st.data())
def test_global_floors_and_exact_sum(lengths, data):
    T = sum(lengths)
    segments = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    total = data.draw(st.integers(0, T * 10))
    frac = data.draw(st.sampled_from([0.0, 0.25, 0.5, 1.0]))
    relevance = torch.tensor(
        data.draw(st.lists(st.floats(-1, 1), min_size=len(lengths), max_size=len(lengths)))
    )
    caps = [n * 10 for n in lengths]  # 10 tokens per frame, nothing deduplicated
    budgets = D.segment_budgets(
        total, segments, relevance, min_fraction=frac, temperature=0.5, capacities=caps
    )
    assert sum(budgets) == total
    for b, n, c in zip(budgets, lengths, caps, strict=True):
        assert math.floor(frac * total * n / T) <= b <= c


@settings(max_examples=60, deadline=None)
@given(
    T=st.integers(1, 6),
    N=st.integers(1, 12),
    seed=st.integers(0, 999),
    threshold=st.sampled_from([0.0, 0.5, 0.9, 0.99]),
)
def test_local_dedup_property(T, N, seed, threshold):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(1, N, 8, generator=g)
    features = base + 0.5 * torch.randn(T, N, 8, generator=g) * (torch.rand(T, N, 1, generator=g) < 0.5)
    segments = (torch.rand(T, generator=g) < 0.3).long().cumsum(0)
    keep, restored = D.dedup_keep(features, segments, threshold)
    assert restored == 0
    assert keep[0].all()  # keep-first
    x = F.normalize(features, dim=-1)
    last = x[0].clone()  # the last kept token at each position
    for t in range(1, T):
        if segments[t] != segments[t - 1]:
            assert keep[t].all()  # segments start fresh
            last = x[t].clone()
            continue
        sim = (x[t] * last).sum(-1)
        # dropped exactly when close to the last KEPT token at the position (not the previous frame)
        assert torch.equal(keep[t], sim < threshold)
        last[keep[t]] = x[t, keep[t]]


@settings(max_examples=80, deadline=None)
@given(field=score_fields(), cells=st.sampled_from([0, 2]))
def test_grid_keeps_every_frame(field, cells):
    T, grid, ids, scores, segments, relevance, _ = field
    frames = ids // (grid[0] * grid[1])
    present = torch.unique(frames)
    budget = present.numel() * 2  # at least one per frame that has candidates
    keep, info = attention_select(
        scores, ids, num_frames=T, grid=grid, budget=budget, use_grid=True, cells_per_side=cells
    )
    assert keep.numel() == min(budget, ids.numel())
    assert set(frames[keep].tolist()) == set(present.tolist())
    counts = torch.bincount(frames[keep], minlength=T)
    caps = torch.bincount(frames, minlength=T)
    # Even split up to capacity: a frame gets fewer than another only when it has no more candidates.
    for a in range(T):
        for b in range(T):
            assert counts[a] >= counts[b] - 1 or counts[a] == caps[a]


@settings(max_examples=30, deadline=None)
@given(T=st.integers(1, 6), h=st.integers(1, 6), w=st.integers(1, 6), s=st.integers(1, 3))
def test_tail_shape_and_mean(T, h, w, s):
    features = torch.randn(T, h * w, 4)
    tail = D.summary_tail(features, (h, w), s)
    assert tail.shape == (T * s * s, 4)
    if s == 1:
        torch.testing.assert_close(tail, features.mean(dim=1))


@settings(max_examples=40, deadline=None)
@given(
    N=st.integers(1, 30),
    budget=st.integers(0, 30),
    ratio=st.sampled_from([0.0, 54 / 64, 1.0]),
    seed=st.integers(0, 99),
)
def test_visionzip_frame_budget(N, budget, ratio, seed):
    x = torch.randn(N, 6, generator=torch.Generator().manual_seed(seed))
    keep, states = D.visionzip_frame(x, budget, ratio)
    assert keep.numel() == states.shape[0] == min(budget, N)
    assert bool((keep[1:] > keep[:-1]).all())
    if budget >= N:  # nothing to merge: the tokens themselves
        torch.testing.assert_close(states, x)


@pytest.mark.parametrize("T", [4, 7, 8])
@pytest.mark.parametrize("keep", [0.25, 0.5, 1.0])
def test_dycoke_retention(T, keep):
    N = 16
    mask = dycoke_keep(torch.randn(T, N, 8), dycoke_ratio(keep, 4), 4)
    per_frame = mask.sum(1)
    assert bool(per_frame[::4].eq(N).all())  # window heads kept whole
    if T % 4 == 0:
        assert abs(mask.float().mean().item() - keep) <= 1 / N + 1e-6


# -- bias report ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["adatp", "visionzip"])
def test_bias_report_png(tiny_adapter, encoded, tmp_path, method):
    from types import SimpleNamespace

    from PIL import Image

    from mlbcli.io.bias_report import write_bias_report

    stats, state = Pipeline(tiny_adapter, method=method, keep=0.25).reduce(encoded, QUESTION)
    item = SimpleNamespace(video_id="dir/clip one.mp4", question_id="q:1")
    path = write_bias_report(str(tmp_path / "report"), item, encoded, state, stats)
    assert path.parent == tmp_path / "report" and "/" not in path.name and " " not in path.name
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 100
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind


@settings(max_examples=80, deadline=None)
@given(n=st.integers(0, 40), G=st.integers(1, 5), seed=st.integers(0, 999), data=st.data())
def test_select_grouped_matches_reference(n, G, seed, data):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 5, (n,), generator=g).float()  # many ties
    groups = torch.randint(0, G, (n,), generator=g)
    budgets = data.draw(st.lists(st.integers(0, 10), min_size=G, max_size=G))
    expected = []
    for k in range(G):
        members = [i for i in range(n) if groups[i] == k]
        members.sort(key=lambda i: (-float(scores[i]), i))
        expected += members[: budgets[k]]
    assert D.select_grouped(scores, groups, budgets).tolist() == sorted(expected)


def test_bad_params_fail_at_construction():
    """A typo must stop the run before any video is processed (UsageError from get_method)."""
    with pytest.raises(UsageError):
        get_method("adatp", MethodOptions(params={"segment_treshold": 0.8}))
    with pytest.raises(UsageError):
        get_method("visionzip", MethodOptions(debias=("local",)))
    get_method("fastv", MethodOptions(debias=("local",), params={"dedup_threshold": 0.8}))  # valid ablation


@pytest.mark.parametrize("keep", [0.5, 0.25, 0.1])
def test_dycoke_nominal_schedule_close_to_measured(tiny_adapter, encoded, keep):
    method = get_method("dycoke", MethodOptions(keep=keep))
    _, state = _prefill(tiny_adapter, encoded.tokens, method)
    n = encoded.tokens.num_visual
    (count,) = method.nominal_schedule(n, encoded.tokens.num_frames).values()
    assert count == state.visual_per_layer[0]  # the plan is the run's own per-frame counts


def test_bench_prefill_smoke(capsys, monkeypatch):
    """bench/bench_prefill.py still runs against the engine (tiny shapes, one round)."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "bench_prefill.py"
    spec = importlib.util.spec_from_file_location("bench_prefill", path)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_prefill", bench)  # dataclasses look their module up
    spec.loader.exec_module(bench)
    assert (
        bench.main(
            [
                "--frames",
                "4",
                "--grid",
                "4",
                "--repeats",
                "1",
                "--probe-repeats",
                "1",
                "--methods",
                "fastv,adatp,mlb,dycoke",
                "--keeps",
                "1.0,0.5",
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "| mlb | 0.50 | 0.500 |" in table and "Probe overhead" in table
