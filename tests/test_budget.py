"""Faithful methods and an honest budget (issue 9): tests that fail when a method's meaning breaks.

- the budget contract: every method x family meets --keep up to per-frame rounding on 1/3/8/32-frame
  clips, or says why in `keep_note`; `--strict-keep` turns that into an error; --keep 1.0 prunes nothing;
- one rule for options a method does not use (library, ModelSpec, CLI, `mlb flops`);
- AdaTP: relevance weighting (direction and size), dedup against the last kept token, backfill;
- peer variants (DyCoke, VisionZip, SlowFast) on hand-computed cases, contiguous positions;
- uniform pooling's kept position (the cell's centre token), `mlb flops` validation, diagnostics.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from mlbcli.engine.pipeline import Pipeline
from mlbcli.errors import MlbError, UsageError
from mlbcli.models.base import Prompt, VideoTokens
from mlbcli.selection import METHODS, MethodOptions, get_method, method_option_rules
from mlbcli.selection.ops import debias as D
from mlbcli.selection.ops.dycoke import dycoke_dropped, dycoke_frame_counts, dycoke_references, dycoke_select
from mlbcli.selection.ops.slowfast import slow_frame_indices
from mlbcli.selection.plan import LayerContext

QUESTION = "What is happening in the video?"
BUDGET_METHODS = ["uniform", "random", "fastv", "adatp", "mlb", "visionzip", "dycoke"]


# -- fixtures --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def families(tmp_path_factory, tiny_adapter):
    from mlbcli.models import load_adapter
    from mlbcli.testing.tiny import build_tiny_llava_next, build_tiny_qwen2_vl

    built = {
        "qwen2_vl": build_tiny_qwen2_vl(tmp_path_factory.mktemp("b-q2"), version="2"),
        "qwen2_5_vl": build_tiny_qwen2_vl(tmp_path_factory.mktemp("b-q25"), version="2.5"),
        "llava_next": build_tiny_llava_next(tmp_path_factory.mktemp("b-next")),
    }
    loaded = {name: load_adapter(str(path), device="cpu") for name, path in built.items()}
    return {"llava_onevision": tiny_adapter, **loaded}


def _clip(frames: int, seed: int = 0, static: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if static:
        return np.repeat(rng.integers(0, 255, (1, 56, 56, 3), dtype=np.uint8), frames, axis=0)
    return rng.integers(0, 255, (frames, 56, 56, 3), dtype=np.uint8)


# -- the budget contract ---------------------------------------------------------------------------------
@pytest.mark.parametrize("frames", [1, 3, 8, 32])
@pytest.mark.parametrize("family", ["llava_onevision", "qwen2_vl", "qwen2_5_vl", "llava_next"])
def test_budget_met_or_explained_for_every_method(families, family, frames):
    """Every method meets its budget up to per-frame rounding, or the row says why (keep_note)."""
    adapter = families[family]
    encoded = Pipeline(adapter).encode(_clip(frames, seed=frames))
    video = encoded.tokens
    T, n = video.num_frames, video.num_visual
    explained = {}
    budget = math.floor(n * 0.25 + 0.5)
    for name in BUDGET_METHODS:
        if name == "mlb" and budget <= T and not families[family].renumber_input_positions:
            # MLB-lite: a budget that cannot hold one summary token per frame is refused (clear error)
            with pytest.raises(UsageError, match="summary tail"):
                Pipeline(adapter, method=name, keep=0.25).reduce(encoded, QUESTION)
            continue
        stats, _ = Pipeline(adapter, method=name, keep=0.25).reduce(encoded, QUESTION)
        if stats.keep_note is None:
            assert 2 * abs(stats.visual_tokens_kept - budget) <= max(1, T), (name, stats.visual_tokens_kept)
        else:
            explained[name] = stats.keep_note
            assert f"budget {budget}" in stats.keep_note and ":" in stats.keep_note
    # Only DyCoke may miss (its window heads are kept whole: >= 1/4 of the frames, all of a 1-frame clip).
    assert set(explained) <= {"dycoke"}, explained
    if T == 1:
        assert "dycoke" in explained and "reference frame" in explained["dycoke"]
    # fixed layout: no budget, so no note (and no keep_requested)
    stats, _ = Pipeline(adapter, method="slowfast").reduce(encoded, QUESTION)
    assert stats.keep_note is None and get_method("slowfast").keep_requested is None


def test_adatp_meets_keep_on_a_static_clip(tiny_adapter):
    """B3: dedup removed all but frame 0 of a static clip; the budget is now backfilled."""
    encoded = Pipeline(tiny_adapter).encode(_clip(8, static=True))
    n = encoded.tokens.num_visual
    for keep in (0.25, 0.5, 0.99):
        stats, _ = Pipeline(tiny_adapter, method="adatp", keep=keep).reduce(encoded, QUESTION)
        assert stats.visual_tokens_kept == math.floor(n * keep + 0.5), keep
        assert stats.keep_note is None
        info = stats.info["0"]
        assert info["dedup_restored"] > 0  # the duplicates really were removed, then kept back


def test_strict_keep_turns_a_note_into_an_error(tiny_adapter):
    encoded = Pipeline(tiny_adapter).encode(_clip(1))
    stats, _ = Pipeline(tiny_adapter, method="dycoke", keep=0.25).reduce(encoded, QUESTION)
    assert stats.keep_note is not None and stats.keep_realized == 1.0  # the closest thing: all of frame 0
    strict = Pipeline(tiny_adapter, method="dycoke", keep=0.25, strict_keep=True)
    with pytest.raises(MlbError, match="--strict-keep"):
        strict.reduce(encoded, QUESTION)
    with pytest.raises(MlbError, match="--strict-keep"):
        strict.answer(encoded, QUESTION, max_new_tokens=2)  # refused before decoding
    # a met budget passes
    Pipeline(tiny_adapter, method="uniform", keep=0.25, strict_keep=True).answer(
        encoded, QUESTION, max_new_tokens=2
    )


def test_strict_keep_from_the_cli(tiny_model_dir, clips_dir, tmp_path):
    from mlbcli.cli.app import app
    from mlbcli.io.writers import read_results

    out = tmp_path / "s.parquet"
    args = ["compress", str(clips_dir / "a.mp4"), "--model", str(tiny_model_dir), "--method", "dycoke"]
    args += ["--keep", "0.1", "--frames", "4", "--workers", "0", "-q", "--question", QUESTION]
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    (row,) = read_results(str(out)).to_pylist()
    assert row["error"] is None and row["keep_note"] and row["keep_realized"] == pytest.approx(0.25)
    strict = tmp_path / "strict.parquet"
    result = CliRunner().invoke(app, [*args, "--strict-keep", "--out", str(strict)])
    (row,) = read_results(str(strict)).to_pylist()
    assert row["error"].startswith("--strict-keep: kept")


@pytest.mark.parametrize("method", ["uniform", "random", "fastv", "adatp", "mlb", "visionzip", "dycoke"])
def test_keep_one_is_no_pruning_even_on_a_static_clip(tiny_adapter, method):
    """--keep 1.0 prunes nothing (a static clip: adatp's dedup would otherwise remove 7/8 frames)."""
    encoded = Pipeline(tiny_adapter).encode(_clip(8, static=True))
    ref = Pipeline(tiny_adapter).answer(encoded, QUESTION, max_new_tokens=4)
    ours = Pipeline(tiny_adapter, method=method, keep=1.0).answer(encoded, QUESTION, max_new_tokens=4)
    assert ours.token_ids == ref.token_ids and ours.stats.keep_realized == 1.0
    assert ours.stats.flops_ratio == 1.0 and ours.stats.keep_note is None


# -- one rule for options a method does not use ------------------------------------------------------------
UNUSED = [
    ("uniform", {"layer": 3}, "--layer"),
    ("visionzip", {"query": "last"}, "--query"),
    ("dycoke", {"debias": ("local",)}, "--debias"),
    ("slowfast", {"keep": 0.5}, "--keep"),
    ("none", {"keep": 0.5}, "--keep"),
    ("fastv", {"variant": "official"}, "--variant"),
    ("fastv", {"positions": "contiguous"}, "--positions"),
    ("visionzip", {"variant": "bogus"}, "--variant"),
]


@pytest.mark.parametrize(("method", "given", "flag"), UNUSED)
def test_unused_option_is_the_same_error_everywhere(tiny_model_dir, clips_dir, method, given, flag):
    from mlbcli import api
    from mlbcli.cli.app import app

    with pytest.raises(UsageError) as library:
        get_method(method, MethodOptions(**given))
    assert flag in str(library.value)
    with pytest.raises(UsageError) as spec:
        api.ModelSpec(model="m", method=method, **given)
    with pytest.raises(UsageError) as planned:
        api.flops(model=str(tiny_model_dir), method=method, frames=4, **given)
    assert str(library.value) == str(spec.value) == str(planned.value)
    cli_args = []
    for key, value in given.items():
        cli_args += [f"--{key}", ",".join(value) if isinstance(value, tuple) else str(value)]
    result = CliRunner().invoke(
        app, ["answer", str(clips_dir / "a.mp4"), "--question", "q", "--model", str(tiny_model_dir),
              "--method", method, *cli_args]
    )  # fmt: skip
    assert result.exit_code == 2 and str(library.value) in result.output


def test_other_refusals():
    with pytest.raises(UsageError, match="--keep does not apply to --method mlb --variant paper"):
        get_method("mlb", MethodOptions(keep=0.5, variant="paper"))
    with pytest.raises(UsageError, match="merge_ratio"):
        get_method("dycoke", MethodOptions(keep=0.5, params={"merge_ratio": 0.7}))
    get_method("dycoke", MethodOptions(params={"merge_ratio": 0.7}))  # K alone is fine


def test_method_rows_match_option_rules():
    """`describe_methods` (`mlb methods`, the README table) states the classes' options and variants."""
    from mlbcli.selection import describe_methods

    for info in describe_methods():
        name = info.name
        cls = METHODS[name]
        assert frozenset(info.options) == cls.options_used, name
        assert info.variants == cls.variants, name
        if "query" in cls.options_used:
            assert info.default_query == cls.default_query, name


def test_fastv_defaults_to_the_last_token_query():
    assert get_method("fastv").query == "last"
    assert get_method("fastv", MethodOptions(query="question")).query == "question"
    assert get_method("adatp").query == get_method("mlb").query == "question"
    video = VideoTokens(torch.randn(2, 16, 8), (4, 4), None, None)
    prompt = Prompt(torch.zeros(1, 40, dtype=torch.long), 2, 32, 0, torch.tensor([36, 37]), "")
    assert get_method("fastv", MethodOptions(keep=0.5)).plan(video, prompt).query == "last"
    assert (
        get_method("fastv", MethodOptions(keep=0.5, query="question")).plan(video, prompt).query == "question"
    )


def test_resume_refuses_another_keep_or_variant(tiny_model_dir, clips_dir, tmp_path):
    """M3b: --keep (and the new --variant) are result options: resuming with another value is refused."""
    from mlbcli.cli.app import app

    out = tmp_path / "r.parquet"
    base = ["compress", str(clips_dir / "a.mp4"), "--model", str(tiny_model_dir), "--frames", "4"]
    base += ["--workers", "0", "-q", "--out", str(out), "--method", "visionzip"]
    assert CliRunner().invoke(app, [*base, "--keep", "0.5"]).exit_code == 0
    again = CliRunner().invoke(app, [*base, "--keep", "0.25"])
    assert again.exit_code == 2 and "keep 0.5 -> 0.25" in again.output
    other = CliRunner().invoke(app, [*base, "--keep", "0.5", "--variant", "official"])
    assert other.exit_code == 2 and "variant" in other.output
    assert CliRunner().invoke(app, [*base, "--keep", "0.5"]).exit_code == 0  # same options: resumes


# -- AdaTP global debiasing: relevance weighting -----------------------------------------------------------
def _budgets(relevance, total=627, lengths=(16, 16), temperature=0.05):
    segments = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    caps = [n * 196 for n in lengths]
    return D.segment_budgets(
        total, segments, torch.tensor(relevance), min_fraction=0.25, temperature=temperature, capacities=caps
    )


def test_segment_budgets_follow_the_size_of_relevance_differences():
    """B1: a 1e-5 difference is noise (even split), a large one moves the budget, a larger one more."""
    tiny, small, large = _budgets([0.05, 0.05001]), _budgets([0.05, 0.06]), _budgets([0.05, 0.5])
    assert abs(tiny[0] - tiny[1]) <= 2
    assert small[1] > small[0] + 40  # exp(0.01 / 0.05) = 1.22 on the share above the floors
    assert large[1] > small[1] and large[0] == math.floor(0.25 * 627 / 2)  # the floor holds
    assert _budgets([0.05, 0.05001, 0.05, 0.05], lengths=(8, 8, 8, 8)) in (
        [157, 157, 157, 156],
        [157, 157, 156, 157],
        [156, 157, 157, 157],
        [157, 156, 157, 157],
    )


@settings(max_examples=150, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 8), min_size=2, max_size=6),
    data=st.data(),
)
def test_segment_budgets_are_monotone_and_stable(lengths, data):
    """More relevant never gets less (catches an inverted weighting, M1a); tiny perturbations move at
    most one token per segment (rounding), whatever the relevance."""
    k = len(lengths)
    if data.draw(st.booleans()):
        relevance = data.draw(st.lists(st.floats(-0.2, 0.2), min_size=k, max_size=k))
    else:  # nearly equal relevance: differences at the noise level of the cosine
        relevance = [0.05 + d for d in data.draw(st.lists(st.floats(-1e-5, 1e-5), min_size=k, max_size=k))]
    total = data.draw(st.integers(k, sum(lengths) * 20))
    base = _budgets(relevance, total=total, lengths=tuple(lengths))
    j = data.draw(st.integers(0, k - 1))
    raised = list(relevance)
    raised[j] += data.draw(st.floats(0.0, 0.3))
    assert _budgets(raised, total=total, lengths=tuple(lengths))[j] >= base[j]
    eps = [r + data.draw(st.floats(-1e-6, 1e-6)) for r in relevance]
    shaken = _budgets(eps, total=total, lengths=tuple(lengths))
    assert max(abs(a - b) for a, b in zip(base, shaken, strict=True)) <= 1


def test_more_relevant_segment_gets_more_tokens_through_the_method(tiny_adapter):
    """End to end: the segment whose visual mean is aligned with the question gets the larger budget."""
    encoded = Pipeline(tiny_adapter).encode(_clip(8, seed=5))
    stats = Pipeline(
        tiny_adapter, method="adatp", keep=0.5, params={"segment_threshold": 1.0, "min_segment_budget": 0.0}
    ).reduce(encoded, QUESTION)[0]
    info = stats.info["2"]
    relevance, budgets = info["relevance"], info["budgets"]
    assert len(budgets) == 8  # threshold 1.0: every frame its own segment
    order = sorted(range(8), key=lambda j: relevance[j])
    assert budgets[order[-1]] >= budgets[order[0]]  # most vs least relevant
    assert len(stats.info["0"]["frame_similarity"]) == 7  # what the threshold is compared with


# -- AdaTP local debiasing ---------------------------------------------------------------------------------
def test_slow_drift_survives_dedup():
    """B2: adjacent frames are near-identical (cos >= 0.998) but the scene drifts far (cos < 0 end to end):
    a token survives every time it has moved away from the last kept one by the threshold."""
    T, N = 32, 4
    angle = torch.arange(T) * 0.06  # radians per frame
    base = torch.stack([torch.cos(angle), torch.sin(angle)], dim=-1)  # [T, 2] unit vectors
    features = torch.cat([base[:, None].expand(T, N, 2), torch.zeros(T, N, 6)], dim=-1)
    features = features + 1e-4 * torch.randn(T, N, 8, generator=torch.Generator().manual_seed(0))
    x = F.normalize(features, dim=-1)
    assert float((x[1:] * x[:-1]).sum(-1).min()) >= 0.998 and float((x[0] * x[-1]).sum(-1).max()) < 0.2
    keep, _ = D.dedup_keep(features, torch.zeros(T, dtype=torch.long), 0.9)
    frames_kept = keep.any(dim=1).nonzero().squeeze(1).tolist()
    # cos < 0.9 after > 0.451 rad, i.e. every 8th frame: 0, 8, 16, 24
    assert frames_kept == [0, 8, 16, 24]
    assert keep[frames_kept].all()


def test_dedup_backfill_restores_the_least_similar_duplicates():
    T, N = 4, 3
    features = torch.zeros(T, N, 2)
    features[..., 0] = 1.0
    features[1, 2, 1] = 0.3  # cos 0.958 with frame 0: a duplicate, but the least similar one
    keep, restored = D.dedup_keep(features, torch.zeros(T, dtype=torch.long), 0.9, min_keep=N + 1)
    assert restored == 1 and keep.sum() == N + 1 and bool(keep[1, 2])


# -- peer variants on hand-computed cases ------------------------------------------------------------------
def test_dycoke_reference_pairs_paper_and_official():
    paper = dycoke_references(8, 4, "paper")
    assert paper == [None, (0, 1), (0, 2), (2, 3), None, (4, 5), (4, 6), (6, 7)]
    official = dycoke_references(8, 4, "official")
    # dd746349: frame i+1 vs frame i; frame a+2 vs frame a, but the last window's frame 6 stays whole
    assert official == [None, (0, 1), (0, 2), (2, 3), None, (4, 5), None, (6, 7)]
    # an odd T: the code's loops stop at T-1, so the last frame is dropped (paper: a window head);
    # with T = 9 the window at 4 is not the last one (range(0, T-4, 4)), so frame 6 is compared
    assert dycoke_dropped(9, "official") == [8] and dycoke_dropped(9, "paper") == []
    _, official_counts, _ = dycoke_frame_counts(9, 4, 1.0, 4, 0.5, "official")
    _, paper_counts, _ = dycoke_frame_counts(9, 4, 1.0, 4, 0.5, "paper")
    assert official_counts == [4, 2, 2, 2, 4, 2, 2, 2, 0] and paper_counts == [4, 2, 2, 2, 4, 2, 2, 2, 4]


def test_dycoke_official_counts_with_the_codes_float_arithmetic():
    # (1 - 0.9) * 30 = 2.9999999999999996: the code's int() gives 2, the paper's floor((1-K)N) 3
    _, official, _ = dycoke_frame_counts(8, 30, 1.0, 4, 0.9, "official")
    _, paper, _ = dycoke_frame_counts(8, 30, 1.0, 4, 0.9, "paper")
    assert official[1] == 2 and paper[1] == 3


def test_dycoke_official_keeps_other_tokens_in_its_own_order():
    T, N = 8, 4
    features = torch.zeros(T, N, 3)
    features[:, :, 0] = 1.0
    features[1, 3] = torch.tensor([0.0, 1.0, 0.0])  # cosine 0 with frame 0 at position 3
    features[1, 1] = torch.tensor([1.0, 0.5, 0.0])  # cosine 0.89 at position 1
    features[6, 2] = torch.tensor([0.0, 0.0, 1.0])  # frame 6 differs from frame 4 at position 2
    picked = {}
    for variant in ("paper", "official"):  # K = 0.5: 2 of 4 tokens per compared frame
        refs, counts, _ = dycoke_frame_counts(T, N, 1.0, 4, 0.5, variant)
        picked[variant] = dycoke_select(features, counts, refs, variant)
    paper, official = picked["paper"], picked["official"]
    assert paper[1].tolist() == official[1].tolist() == [3, 1]  # ascending similarity, not position
    assert paper[6].tolist() == [2, 0]  # paper compares the last window's frame 2 (ties: lower index)
    assert official[6].tolist() == list(range(N))  # the code keeps it whole


def test_visionzip_official_order_and_merge():
    """One frame, hand-computed: budget 4 = 2 dominant + 2 contextual over 6 tokens."""
    x = torch.tensor(
        [[5.0, 0, 0], [0, 1, 0], [0, 0, 1], [4.0, 0, 0], [0, 1, 0.1], [0, 0.1, 1]]
    )  # tokens 0 and 3 dominate the pseudo-CLS (aligned with the mean, large norm)
    keep_p, states_p = D.visionzip_frame(x, 4, 0.5, "paper")
    keep_o, states_o = D.visionzip_frame(x, 4, 0.5, "official")
    # rest = [1, 2, 4, 5]; paper targets int(i*4/2) -> slots 0, 2 = tokens 1, 4; official
    # arange(0, 4, 2) -> the same slots here; members: 2 -> cos with 1: 0, with 4: ~0.1 -> 4; 5 -> 4
    assert keep_p.tolist() == [0, 1, 3, 4]  # position order
    assert keep_o.tolist() == [0, 3, 1, 4]  # dominant (position order), then contextual
    torch.testing.assert_close(states_p[1], x[1])  # a target without members stays itself
    torch.testing.assert_close(states_p[3], (x[4] + x[2] + x[5]) / 3)  # paper: mean of target + members
    torch.testing.assert_close(states_o[3], x[4] + (x[2] + x[5]) / 2)  # official: target + mean(members)


def test_slowfast_slow_frames_paper_and_official():
    assert slow_frame_indices(50, 10) == [0, 5, 11, 16, 22, 27, 33, 38, 44, 49]
    assert slow_frame_indices(50, 10, "official") == [0, 5, 10, 15, 20, 25, 30, 35, 40, 45]
    assert slow_frame_indices(4, 10, "official") == [0, 1, 2, 3]


def test_official_variants_resequence_positions(tiny_adapter, families):
    encoded = Pipeline(tiny_adapter).encode(_clip(8))
    for method in ("visionzip", "dycoke"):
        _, state = Pipeline(tiny_adapter, method=method, keep=0.5, variant="official").reduce(
            encoded, QUESTION
        )
        assert torch.equal(state.position_ids[0], torch.arange(state.position_ids.shape[-1]))
        _, paper = Pipeline(tiny_adapter, method=method, keep=0.5, variant="paper").reduce(encoded, QUESTION)
        assert not torch.equal(paper.position_ids[0], torch.arange(paper.position_ids.shape[-1]))
    # --positions contiguous on any pre-LLM method; M-RoPE families refuse it (no 1-D renumbering)
    _, state = Pipeline(tiny_adapter, method="uniform", keep=0.5, positions="contiguous").reduce(
        encoded, QUESTION
    )
    assert torch.equal(state.position_ids[0], torch.arange(state.position_ids.shape[-1]))
    qwen = families["qwen2_5_vl"]
    clip = Pipeline(qwen).encode(_clip(4))
    with pytest.raises(UsageError, match="M-RoPE"):
        Pipeline(qwen, method="uniform", keep=0.5, positions="contiguous").reduce(clip, QUESTION)
    stats, _ = Pipeline(qwen, method="visionzip", keep=0.5, variant="official").reduce(clip, QUESTION)
    assert stats.keep_note is None  # official on M-RoPE: original positions, same tokens


def test_official_visionzip_reaches_the_llm_in_its_order(tiny_adapter):
    """The r-th kept slot holds the r-th token of VisionZip's own order (dominant, then contextual)."""
    video = VideoTokens(torch.randn(2, 16, 8, generator=torch.Generator().manual_seed(1)), (4, 4), None, None)
    prompt = Prompt(torch.zeros(1, 40, dtype=torch.long), 2, 32, 0, torch.tensor([36, 37]), "")
    plan = get_method("visionzip", MethodOptions(keep=0.25, variant="official")).plan(video, prompt)
    assert plan.contiguous_positions
    hidden = torch.zeros(1, 40, 8)
    hidden[0, 2:34] = video.features.reshape(32, 8)
    decision = plan.steps[0](LayerContext(0, hidden, torch.arange(2, 34), torch.arange(32), None))
    order, states = [], []
    for t in range(2):
        ids, st = D.visionzip_frame(video.features[t], 4, 54 / 64, "official")
        order.append(ids + 16 * t)
        states.append(st)
    assert decision.keep.tolist() == sorted(torch.cat(order).tolist())
    torch.testing.assert_close(decision.replace, torch.cat(states))


# -- uniform pooling: the pooled token's position ----------------------------------------------------------
def test_uniform_pooled_token_sits_at_the_cell_centre():
    """M9: a 4x4 frame at keep 0.25 -> 4 cells of 2x2 ([0,1,4,5], ...); each pooled token takes the
    position of the cell's centre token ((len-1)//2 in raster order: 1, 3, 9, 11), its state the mean."""
    features = torch.randn(2, 16, 8, generator=torch.Generator().manual_seed(0))
    video = VideoTokens(features, (4, 4), None, None)
    prompt = Prompt(torch.zeros(1, 40, dtype=torch.long), 2, 32, 0, torch.tensor([36, 37]), "")
    plan = get_method("uniform", MethodOptions(keep=0.25)).plan(video, prompt)
    hidden = torch.zeros(1, 40, 8)
    hidden[0, 2:34] = features.reshape(32, 8)
    decision = plan.steps[0](LayerContext(0, hidden, torch.arange(2, 34), torch.arange(32), None))
    assert decision.keep.tolist() == [1, 3, 9, 11, 17, 19, 25, 27]
    cells = [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]
    expected = torch.stack([features[t, cell].mean(0) for t in range(2) for cell in cells])
    torch.testing.assert_close(decision.replace, expected)


# -- mlb flops validates like a run ------------------------------------------------------------------------
def test_flops_validates_like_a_run(tiny_model_dir, tmp_path):
    from mlbcli.api import flops
    from mlbcli.testing.tiny import build_tiny_llava_next

    model = str(tiny_model_dir)
    with pytest.raises(UsageError, match="--frames"):
        flops(model=model, method="uniform", keep=0.5, frames=0)
    with pytest.raises(UsageError, match="--layer 0"):
        flops(model=model, method="fastv", keep=0.5, layer=0)
    with pytest.raises(UsageError, match="summary tail"):
        flops(model=model, method="mlb", keep=0.05, frames=8)  # budget below the 8-token tail
    plan = flops(model=model, method="adatp", keep=0.25, frames=8, query="last")
    assert plan.tokens_per_layer[-1] == math.floor(plan.visual_tokens * 0.25 + 0.5)  # backfilled: exact
    small = build_tiny_llava_next(tmp_path / "next", max_position_embeddings=160)
    with pytest.raises(UsageError, match="context"):
        flops(model=str(small), method="uniform", keep=0.9, frames=12)  # 173 visual tokens > 160
    assert flops(model=str(small), method="uniform", keep=0.25, frames=12).tokens_per_layer[0] == 48


def test_flops_dycoke_matches_a_run(tiny_adapter, tiny_model_dir):
    from mlbcli.api import flops

    encoded = Pipeline(tiny_adapter).encode(_clip(6))
    for keep in (0.5, 0.1):
        stats, _ = Pipeline(tiny_adapter, method="dycoke", keep=keep).reduce(encoded, QUESTION)
        plan = flops(model=str(tiny_model_dir), method="dycoke", keep=keep, frames=6)
        assert plan.tokens_per_layer[0] == stats.visual_tokens_kept


# -- diagnostics -------------------------------------------------------------------------------------------
def test_compress_at_keep_one_probes_the_raw_attention(tiny_adapter):
    """The probe-only mode: compress with an attention method at --keep 1.0 reads the attention field,
    keeping every token; answer at --keep 1.0 runs no probe at all."""
    encoded = Pipeline(tiny_adapter).encode(_clip(8, static=True))
    stats, state = Pipeline(tiny_adapter, method="adatp").reduce(encoded, QUESTION)
    assert stats.keep_realized == 1.0 and stats.flops_ratio == 1.0
    info = stats.info["2"]
    assert info["probe_only"] and len(info["attention_per_frame_raw"]) == 8
    assert all(a > 0 for a in info["attention_per_frame_raw"])  # undeduplicated: every frame is seen
    assert len(info["frame_similarity"]) == 7
    assert stats.attention_per_frame is not None and len(stats.attention_per_frame) == 8
    answered = Pipeline(tiny_adapter, method="fastv").answer(encoded, QUESTION, max_new_tokens=2)
    assert answered.stats.attention_per_frame is None and answered.stats.info == {}


def test_rows_carry_keep_note_and_diagnostics(tiny_model_dir, clips_dir, tmp_path):
    from mlbcli.cli.app import app
    from mlbcli.io.writers import read_results

    out = tmp_path / "d.parquet"
    args = ["compress", str(clips_dir / "b.mp4"), "--model", str(tiny_model_dir), "--method", "adatp"]
    args += ["--keep", "0.25", "--frames", "8", "--workers", "0", "-q", "--question", QUESTION]
    assert CliRunner().invoke(app, [*args, "--out", str(out)]).exit_code == 0
    (row,) = read_results(str(out)).to_pylist()
    assert row["keep_note"] is None and row["keep_realized"] == pytest.approx(0.25)
    diagnostics = json.loads(row["segments"])
    assert len(diagnostics["0"]["frame_similarity"]) == 7


# -- the option registry rule is visible without torch --------------------------------------------------
def test_option_rules_need_no_torch():
    """The CLI refuses an unused option before importing torch (the catalog states the rules)."""
    import os
    import subprocess
    import sys

    code = (
        "import sys\nfrom mlbcli.api import ModelSpec\nfrom mlbcli.errors import UsageError\n"
        "try:\n    ModelSpec(model='m', method='SlowFast', keep=0.5)\nexcept UsageError as e:\n    print(e)\n"
        "assert 'torch' not in sys.modules"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={**os.environ}
    )
    assert "--keep does not apply to --method slowfast" in out.stdout
    assert method_option_rules("slowfast")[0] == frozenset({"variant", "positions"})


# -- M5a: the last "(X)" of a response counts ---------------------------------------------------------------
def test_parse_choice_last_parenthesised_letter_wins():
    from mlbcli.eval.prompting import parse_choice

    assert parse_choice("It shows (B) at first, but the right one is (C).", ["a", "b", "c", "d"]) == "C"


# -- GAPool pool mode --------------------------------------------------------------------------------------
def test_gapool_pool_mode_hand_computed():
    """One 2x4 frame, budget 2 -> cells [0,1,4,5] and [2,3,6,7]; each becomes the softmax(a / (tau*std))
    weighted mean of its tokens, at the cell's centre token's position (1 and 3)."""
    scores = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    ids = torch.arange(8)
    keep, members, owners, weights = D.pool_grid(scores, ids // 8, ids % 8, (2, 4), [2], 0, 1.0)
    assert keep.tolist() == [1, 3]
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    pooled = D.pooled_states(x, 2, members, owners, weights)
    for j, cell in enumerate([[0, 1, 4, 5], [2, 3, 6, 7]]):
        a = scores[cell]
        w = torch.softmax(a / a.std(), dim=0)
        torch.testing.assert_close(pooled[j], (w[:, None] * x[cell]).sum(0))


def test_mlb_lite_pool_mode_end_to_end(tiny_adapter):
    encoded = Pipeline(tiny_adapter).encode(_clip(4, seed=9))
    n = encoded.tokens.num_visual
    select, s_state = Pipeline(tiny_adapter, method="mlb", keep=0.5).reduce(encoded, QUESTION)
    pool, p_state = Pipeline(tiny_adapter, method="mlb", keep=0.5, params={"pool_temperature": 1.0}).reduce(
        encoded, QUESTION
    )
    assert pool.visual_tokens_kept == select.visual_tokens_kept == math.floor(n * 0.5 + 0.5)
    assert pool.keep_note is None and pool.info["2"]["gapool"] == "pool"
    assert not torch.equal(p_state.kept_ids, s_state.kept_ids)  # centres, not the most attended tokens
    # kept_tokens.merged_into: every pruned token names the cell centre it was pooled into, in its frame;
    # selection (no pooling) records no merge targets
    from mlbcli.io.kept_tokens import decode_merged

    assert select.kept_tokens is not None and decode_merged(select.kept_tokens) is None
    assert pool.kept_tokens is not None
    targets = decode_merged(pool.kept_tokens)  # [frames, grid_h, grid_w]: flat id merged into, -1
    assert targets is not None and targets.size == n
    kept = set(p_state.kept_ids.tolist())
    N = encoded.tokens.tokens_per_frame
    for token, target in enumerate(targets.ravel().tolist()):
        if token in kept:
            assert target == -1
        else:
            assert target in kept and target // N == token // N


def test_two_stage_bias_report_draws_the_probe_field(families, tmp_path):
    from types import SimpleNamespace

    from PIL import Image

    from mlbcli.io.bias_report import write_bias_report

    adapter = families["llava_next"]
    encoded = Pipeline(adapter).encode(_clip(4))
    stats, state = Pipeline(adapter, method="mlb", variant="paper").reduce(encoded, QUESTION)
    assert stats.attention_per_frame is not None and len(stats.attention_per_frame) == 4
    item = SimpleNamespace(video_id="v.mp4", question_id=None)
    path = write_bias_report(str(tmp_path), item, encoded, state, stats)
    fixed, _ = Pipeline(adapter, method="uniform", keep=0.5).reduce(encoded, QUESTION)
    other = write_bias_report(
        str(tmp_path / "u"),
        item,
        encoded,
        Pipeline(adapter, method="uniform", keep=0.5).reduce(encoded, QUESTION)[1],
        fixed,
    )
    with Image.open(path) as with_probe, Image.open(other) as without:
        assert with_probe.height > without.height  # panel 1: the segment probes' raw field


def test_two_stage_pool_mode(families):
    adapter = families["llava_next"]
    encoded = Pipeline(adapter).encode(_clip(4, seed=3))
    select, s_state = Pipeline(adapter, method="mlb", keep=0.5).reduce(encoded, QUESTION)
    pool, p_state = Pipeline(adapter, method="mlb", keep=0.5, params={"pool_temperature": 1.0}).reduce(
        encoded, QUESTION
    )
    assert pool.info["0"]["gapool"] == "pool" and select.info["0"]["gapool"] == "select"
    assert pool.kept_per_frame == select.kept_per_frame and pool.keep_note is None


@pytest.mark.parametrize(
    "method, options, keep",
    [
        ("mlb", {"variant": "paper"}, None),  # a fixed layout: no budget, on ok and error rows alike
        ("none", {}, None),
        ("slowfast", {}, None),
        ("fastv", {"keep": 0.25}, 0.25),
        ("fastv", {}, 1.0),  # the method's default
    ],
)
def test_keep_requested_is_one_rule_for_ok_rows_error_rows_and_options(
    method, options, keep, next_model_dir, clips_dir, tmp_path
):
    """`Method.resolved_options` decides `keep_requested` for rows the model answered, rows of videos
    that failed, and the `keep` recorded in `options_json` (issue 18 review)."""
    from mlbcli import api
    from mlbcli.io.writers import read_results
    from mlbcli.options import RunOptions

    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "a.mp4").symlink_to(clips_dir / "a.mp4")
    (folder / "broken.mp4").write_bytes(b"")
    out = tmp_path / "rows.jsonl"
    api.answer(
        [str(folder)], question="What happens?", model=next_model_dir, method=method, frames=4,
        max_new_tokens=1, run=RunOptions(out=str(out), workers=0), **options,
    )  # fmt: skip
    rows = {row["video_id"]: row for row in read_results(out).to_pylist()}
    assert rows["a.mp4"]["error"] is None and rows["broken.mp4"]["error"]
    assert rows["a.mp4"]["keep_requested"] == rows["broken.mp4"]["keep_requested"] == keep
    for row in rows.values():
        assert json.loads(row["options_json"])["keep"] == keep


@pytest.fixture(scope="module")
def next_model_dir(tmp_path_factory) -> str:
    from mlbcli.testing.tiny import build_tiny_llava_next

    return str(build_tiny_llava_next(tmp_path_factory.mktemp("keep-next")))
