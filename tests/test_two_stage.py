"""Two-stage LLaVA-MLB on an image LLM (tiny LLaVA-NeXT) and the SlowFast-LLaVA baseline."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mlbcli.engine import batch as engine
from mlbcli.engine.flops import LLMDims, layer_flops, visual_flops
from mlbcli.engine.pipeline import Pipeline
from mlbcli.errors import UsageError
from mlbcli.selection import MethodOptions, get_method
from mlbcli.selection.ops.slowfast import fast_pool, slow_pool

QUESTION = "What is happening in the video?"
CONTEXT = 160  # 12 frames x 16 tokens + text do not fit; one 6-frame segment (96 + text) does
T = 12


@pytest.fixture(scope="module")
def next_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    from mlbcli.testing.tiny import build_tiny_llava_next

    return str(build_tiny_llava_next(tmp_path_factory.mktemp("next-small"), max_position_embeddings=CONTEXT))


@pytest.fixture(scope="module")
def adapter(next_dir):
    from mlbcli.models import load_adapter

    return load_adapter(next_dir, device="cpu")


@pytest.fixture(scope="module")
def video(adapter):
    frames = np.random.default_rng(0).integers(0, 255, (T, 64, 64, 3), dtype=np.uint8)
    return Pipeline(adapter).encode(frames)


def _text_tokens(adapter, video) -> int:
    prompt = adapter.build_prompt(QUESTION, video.tokens)
    return prompt.length - prompt.num_visual


@pytest.fixture()
def count_probes(monkeypatch):
    calls: list[int] = []
    real = engine.prefill_batch

    def counting(adapter, inputs, *args, **kwargs):
        if kwargs.get("stop_before_layer") is not None:  # a probe pass: one row, its visual tokens
            calls.extend(int(row.visual_slots.numel()) for row in inputs)
        return real(adapter, inputs, *args, **kwargs)

    monkeypatch.setattr(engine, "prefill_batch", counting)
    return calls


# -- two-stage mlb ----------------------------------------------------------------------------------------


def test_whole_video_does_not_fit_unpruned(adapter, video):
    with pytest.raises(UsageError, match="context"):
        Pipeline(adapter).answer(video, QUESTION, max_new_tokens=2)


def test_two_stage_token_accounting_and_probe_flops(adapter, video, count_probes):
    pipe = Pipeline(adapter, method="mlb", variant="paper")
    result = pipe.answer(video, QUESTION, max_new_tokens=3)
    stats = result.stats
    text = _text_tokens(adapter, video)
    fit = (CONTEXT - text) // 16
    segments = math.ceil(T / fit)
    assert segments >= 2  # the test geometry really needs segmenting
    info = stats.info["0"]
    assert info["variant"] == "two-stage paper" and len(info["segments"]) == segments
    assert [b - a for a, b in info["segments"]] == [T // segments] * segments
    assert info["probe_tokens"] == [T // segments * 16] * segments
    assert count_probes == info["probe_tokens"]  # one probe pass per segment, of that segment's tokens
    # 4x4 grid: default g = ceil(4/3) = 2 (2x2 one-token cells), s = max(1, round(4/12)) = 1
    g, s = 2, 1
    assert stats.visual_tokens_kept == T * g * g + T * s * s
    assert stats.kept_per_frame == [g * g] * T
    assert stats.appended_tokens == T * s * s
    assert stats.tokens_per_layer == [T * (g * g + s * s)] * 4
    dims = LLMDims.from_config(adapter.text_config)
    K = 2
    final = visual_flops([T * (g * g + s * s)] * dims.num_layers, dims)
    probes = sum(K * layer_flops(n, dims) for n in info["probe_tokens"])
    vanilla = visual_flops([T * 16] * dims.num_layers, dims)
    assert stats.flops_ratio == pytest.approx(final / vanilla)
    assert stats.flops_probe_ratio == pytest.approx((final + probes) / vanilla)
    assert stats.flops_probe_ratio > stats.flops_ratio
    assert stats.as_row()["flops_probe_ratio"] == stats.flops_probe_ratio
    assert 1 <= len(result.token_ids) <= 3
    assert stats.keep_note is None  # a fixed layout has no budget to miss
    # the probes' raw attention per frame (U6): normalised inside each segment
    assert len(stats.attention_per_frame) == T
    assert sum(stats.attention_per_frame) == pytest.approx(segments)


def test_two_stage_keep_one_is_no_pruning(adapter, video):
    """--keep 1.0 (or no --keep) means no pruning for mlb too; the paper layout is its own switch."""
    pipe = Pipeline(adapter, method="mlb")
    sub = engine_subset(video.tokens, 0, 6)
    from mlbcli.engine.pipeline import EncodedVideo

    short = EncodedVideo(sub, 0.0)
    ref = Pipeline(adapter).answer(short, QUESTION, max_new_tokens=3)
    ours = pipe.answer(short, QUESTION, max_new_tokens=3)
    assert ours.token_ids == ref.token_ids and ours.stats.keep_realized == 1.0
    assert ours.stats.flops_probe_ratio is None  # no probe passes either
    # compress (statistics only) still probes the segments for the raw attention field, keeping all
    stats, _ = pipe.reduce(short, QUESTION)
    assert stats.keep_realized == 1.0 and stats.info["0"]["probe_only"]
    assert len(stats.attention_per_frame) == 6
    with pytest.raises(UsageError, match="--keep does not apply"):
        Pipeline(adapter, method="mlb", variant="paper", keep=0.5)


def test_two_stage_keeps_the_most_attended_token_of_each_cell(adapter, video):
    pipe = Pipeline(adapter, method="mlb", variant="paper", params={"segments": 2, "grid": 1, "tail_size": 1})
    stats, _ = pipe.reduce(video, QUESTION)
    context = pipe.plan_context(QUESTION, adapter.build_prompt(QUESTION, video.tokens))
    kept = []
    for a, b in stats.info["0"]["segments"]:
        sub = engine_subset(video.tokens, a, b)
        scores = context.probe(sub, 2, "question").view(b - a, 16)
        kept += (scores.argmax(1) + torch.arange(a, b) * 16).tolist()  # grid 1: one cell per frame
    assert context.probe_passes == [(96, 2), (96, 2)]
    _, state = pipe.reduce(video, QUESTION)
    assert state.kept_ids.tolist() == kept
    assert stats.kept_per_frame == [1] * T and stats.appended_tokens == T


def engine_subset(tokens, a, b):
    from mlbcli.models.base import VideoTokens

    return VideoTokens(tokens.features[a:b], tokens.grid, tokens.extra, None)


def test_probe_scores_match_a_full_attention_run(adapter, video):
    """The probe (layers 0..K-1 only) reads the same layer-(K-1) attention as a full FastV-style run."""
    sub = engine_subset(video.tokens, 0, 6)
    pipe = Pipeline(adapter, method="mlb")
    probe = pipe.plan_context(QUESTION, adapter.build_prompt(QUESTION, sub)).probe(sub, 2, "question")
    plan = get_method("fastv", MethodOptions(keep=0.5, query="question")).plan(
        sub, adapter.build_prompt(QUESTION, sub)
    )
    prompt = adapter.build_prompt(QUESTION, sub)
    state = engine.prefill(
        adapter,
        adapter.embed(prompt, sub),
        adapter.position_ids(prompt, sub),
        torch.arange(prompt.visual_start, prompt.visual_start + prompt.num_visual),
        prompt.question_index,
        plan,
    )
    torch.testing.assert_close(probe, state.scores[1])


def test_two_stage_keep_sets_a_per_frame_budget_including_the_tail(adapter, video):
    stats = Pipeline(adapter, method="mlb", keep=0.5, params={"segments": 3}).reduce(video, QUESTION)[0]
    assert len(stats.info["0"]["segments"]) == 3 and stats.info["0"]["probe_tokens"] == [64] * 3
    assert stats.kept_per_frame == [7] * T  # 8 per frame, 1 of them the 1x1 tail
    assert stats.visual_tokens_kept == T * 8 and stats.keep_realized == pytest.approx(0.5)
    with pytest.raises(UsageError, match="segments"):
        Pipeline(adapter, method="mlb", variant="paper", params={"segments": 1}).reduce(video, QUESTION)
    with pytest.raises(UsageError, match="tail"):
        Pipeline(adapter, method="mlb", keep=0.1, params={"tail_size": 2}).reduce(video, QUESTION)
    with pytest.raises(UsageError, match="GAPool"):
        Pipeline(adapter, method="mlb", debias=("tail",)).reduce(video, QUESTION)


def test_mlb_stays_lite_on_video_llms(tiny_adapter):
    frames = np.random.default_rng(2).integers(0, 255, (4, 64, 64, 3), dtype=np.uint8)
    pipe = Pipeline(tiny_adapter, method="mlb", keep=0.3)
    stats = pipe.answer(pipe.encode(frames), QUESTION, max_new_tokens=2).stats
    assert stats.flops_probe_ratio is None and stats.as_row()["flops_probe_ratio"] == stats.flops_ratio
    assert "variant" not in json.dumps(stats.info)
    with pytest.raises(UsageError, match="segments"):
        Pipeline(tiny_adapter, method="mlb", keep=0.3, params={"segments": 2}).reduce(
            pipe.encode(frames), QUESTION
        )


def test_flops_plan_counts_probe_passes(next_dir):
    from mlbcli.api import flops

    plan = flops(model=next_dir, method="mlb", variant="paper", frames=T)
    assert plan.tokens_per_layer == [T * 5] * 4
    assert len(plan.probe_passes) >= 2 and all(layers == 2 for _, layers in plan.probe_passes)
    assert plan.flops_probes > 0 and plan.probe_ratio > plan.ratio
    assert flops(model=next_dir, method="uniform", keep=0.5, frames=T).probe_passes == []
    from mlbcli.cli.app import app

    args = ["flops", "--model", next_dir, "--method", "mlb", "--variant", "paper", "--frames", str(T)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "probe passes" in result.output and "flops_probe_ratio" in result.output


def test_cli_answers_with_two_stage_mlb(next_dir, tmp_path):
    from mlbcli.cli.app import app
    from mlbcli.io.video import make_test_video
    from mlbcli.io.writers import read_results

    clip = make_test_video(tmp_path / "clip.mp4", num_frames=24, seed=4)
    out = tmp_path / "x.parquet"
    args = [
        "answer",
        str(clip),
        "--model",
        next_dir,
        "--method",
        "mlb",
        "--variant",
        "paper",
        "--frames",
        str(T),
    ]
    args += ["--question", QUESTION, "--workers", "0", "--max-new-tokens", "3", "--out", str(out)]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (row,) = read_results(str(out)).to_pylist()
    assert row["error"] is None and row["generated_tokens"] >= 1
    assert row["visual_tokens_kept"] == T * 5 and row["flops_probe_ratio"] > row["flops_ratio"]
    assert json.loads(row["segments"])["0"]["variant"] == "two-stage paper"
    assert row["keep_requested"] is None and row["keep_note"] is None


# -- slowfast -----------------------------------------------------------------------------------------------


def test_slowfast_layout_on_llava_next(adapter, video):
    params = {"slow_frames": 4, "slow_pool": 3, "fast_size": 2}
    pipe = Pipeline(adapter, method="slowfast", params=params)
    captured = {}

    def grab(module, args, kwargs):
        captured.setdefault("hidden", args[0] if args else kwargs["hidden_states"])

    hook = adapter.layers[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        result = pipe.answer(video, QUESTION, max_new_tokens=2)
    finally:
        hook.remove()
    stats, feats = result.stats, video.tokens.features
    slow = [0, 4, 7, 11]
    n_slow = 4 * 4 * math.ceil(4 / 3)  # ragged: windows of 3 and 1 columns
    assert stats.visual_tokens_kept == n_slow + T * 4 and stats.appended_tokens == T * 4
    assert stats.info["0"]["slow_frames"] == slow
    assert [stats.kept_per_frame[t] for t in slow] == [8] * 4 and sum(stats.kept_per_frame) == n_slow
    # fast tokens come right after the slow ones, before the question
    start = adapter.build_prompt(QUESTION, video.tokens).visual_start
    hidden = captured["hidden"][0]
    expected_slow, _ = slow_pool(feats[slow], (4, 4), 3)
    torch.testing.assert_close(hidden[start : start + n_slow], expected_slow.reshape(-1, feats.shape[-1]))
    torch.testing.assert_close(hidden[start + n_slow : start + n_slow + T * 4], fast_pool(feats, (4, 4), 2))
    assert stats.flops_probe_ratio is None and stats.flops_ratio < 1
    # defaults: 10 slow frames of 4 x 2 + 12 frames of 4 x 4 (capped at the 4 x 4 grid)
    assert get_method("slowfast").nominal_schedule(T * 16, T) == {0: 10 * 8 + T * 16}


def test_slowfast_on_onevision(tiny_adapter):
    frames = np.random.default_rng(3).integers(0, 255, (6, 64, 64, 3), dtype=np.uint8)
    method = get_method("slowfast", MethodOptions(params={"slow_frames": 2, "fast_size": 2}))
    pipe = Pipeline(tiny_adapter, method=method)
    encoded = pipe.encode(frames)
    h, w = encoded.tokens.grid
    result = pipe.answer(encoded, QUESTION, max_new_tokens=2)
    expected = 2 * h * math.ceil(w / 2) + 6 * 4
    assert result.stats.visual_tokens_kept == expected and result.token_ids
    n = encoded.tokens.num_visual
    assert method.nominal_schedule(n, 6) == {0: expected}
    with pytest.raises(UsageError):
        get_method("slowfast", MethodOptions(params={"grid": 2}))
