"""Gemma 4 through the pipeline and the CLI (tiny checkpoint, offline): a batch of four against the stock
model's own left-padded batch, `--keep 1.0` equal to no pruning, every registered method with its budget,
the FLOPs of sliding-window and KV-shared layers, and `mlb answer` on a synthetic video.

The tiny model must be sensitive to its input for these to mean anything: `test_output_depends_on_the_input`
guards it (a degenerate model repeating one token would make every parity test pass vacuously)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers_engine import no_eos, stock_generate

from mlbcli.engine.pipeline import Pipeline, Request
from mlbcli.selection.registry import method_names

QUESTIONS = [
    "What is happening in the video?",
    "Which colour is the large square in the middle of the first frames?",
    "How many?",
    "Describe the scene.",
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    from mlbcli.testing.tiny import build_tiny

    return str(build_tiny("gemma4", tmp_path_factory.mktemp("gemma-4-tiny-it")))


@pytest.fixture(scope="module")
def adapter(model_dir):
    from mlbcli.models import load_adapter

    return load_adapter(model_dir, device="cpu")


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    shapes = [(3, 90, 120), (4, 72, 96), (2, 90, 120), (3, 64, 64)]  # lengths and token grids differ
    return [rng.integers(0, 255, (*shape, 3), dtype=np.uint8) for shape in shapes]


def _stock_batch(adapter, clips, prompts, max_new_tokens):
    """Stock `generate()` on the prompts left-padded into one batch (the way transformers batches)."""
    width = max(p.length for p in prompts)
    ids = torch.full((len(prompts), width), adapter.text_config.pad_token_id)
    mask = torch.zeros(len(prompts), width, dtype=torch.long)
    for i, prompt in enumerate(prompts):
        ids[i, width - prompt.length :] = prompt.input_ids[0]
        mask[i, width - prompt.length :] = 1
    pixels = [adapter.preprocess(clip) for clip in clips]
    out = stock_generate(
        adapter,
        max_new_tokens,
        input_ids=ids,
        attention_mask=mask,
        pixel_values_videos=torch.cat([p["pixel_values_videos"] for p in pixels]),
        video_position_ids=torch.cat([p["video_position_ids"] for p in pixels]),
        num_frames_per_video=torch.tensor([len(clip) for clip in clips]),
    )
    return [out.sequences[i, width:].tolist() for i in range(len(prompts))]


def test_output_depends_on_the_input(adapter, clips):
    """Guards the tiny model: other videos and other questions give other replies, and no reply is one
    token repeated (the degenerate random model the embedding scale of `build_tiny_gemma4` avoids)."""
    pipe = Pipeline(adapter)
    with no_eos(adapter):
        replies = [pipe.answer(pipe.encode(clip), QUESTIONS[0], max_new_tokens=6).token_ids for clip in clips]
        flat = pipe.answer(pipe.encode(np.full_like(clips[0], 200)), QUESTIONS[0], max_new_tokens=6).token_ids
        asked = pipe.answer(pipe.encode(clips[0]), QUESTIONS[2], max_new_tokens=6).token_ids
    assert len({tuple(r) for r in [*replies, flat]}) == len(clips) + 1
    assert asked != replies[0]
    assert all(len(set(r)) > 1 for r in replies)


def test_batch_of_four_reproduces_the_stock_left_padded_batch(adapter, clips):
    """Four prompts of different lengths: our right-packed batch gives, row for row, the tokens
    of the stock model's left-padded batch (sliding windows, shared KV, per-layer inputs, soft-capping)."""
    pipe = Pipeline(adapter)
    videos = [pipe.encode(clip) for clip in clips]
    requests = [Request(v, q, 6) for v, q in zip(videos, QUESTIONS, strict=True)]
    with no_eos(adapter):
        ours = pipe.run(requests)
    prompts = [adapter.build_prompt(q, v.tokens) for v, q in zip(videos, QUESTIONS, strict=True)]
    stock = _stock_batch(adapter, clips, prompts, 6)
    assert [r.error for r in ours] == [None] * 4
    assert [r.token_ids for r in ours] == stock
    assert len({tuple(s) for s in stock}) == 4  # four different replies: the comparison is not vacuous
    fastv = Pipeline(adapter, method="fastv", keep=1.0)
    with no_eos(adapter):
        kept = fastv.run([Request(r.video, r.prompt, 6) for r in requests])
    assert [r.token_ids for r in kept] == stock  # --method fastv --keep 1.0 == --method none, batched


@pytest.mark.parametrize("method", method_names())
def test_every_method_runs_and_meets_its_budget_or_says_why(adapter, clips, method):
    from mlbcli.selection import method_option_rules

    keep = {"keep": 0.5} if "keep" in method_option_rules(method)[0] else {}
    pipe = Pipeline(adapter, method=method, **keep)
    encoded = pipe.encode(clips[1])
    result = pipe.answer(encoded, QUESTIONS[0], max_new_tokens=3)
    stats, video = result.stats, encoded.tokens
    assert 1 <= len(result.token_ids) <= 3
    assert stats.visual_tokens_kept == stats.tokens_per_layer[-1]
    assert sum(stats.kept_per_frame) + stats.appended_tokens == stats.visual_tokens_kept
    if method == "none":
        assert stats.flops_ratio == 1.0
    if keep and stats.keep_note is None:
        budget = math.floor(video.num_visual * 0.5 + 0.5)
        assert 2 * abs(stats.visual_tokens_kept - budget) <= max(1, video.num_frames), stats
    elif keep:
        assert "budget" in stats.keep_note or "cost" in stats.keep_note, stats.keep_note
    # Nothing pruned between a shared cache's writer (3, 4) and its readers (5, 6).
    assert stats.tokens_per_layer[3] == stats.tokens_per_layer[-1]


def test_a_step_inside_a_shared_kv_span_runs_before_it(adapter, clips):
    """FlashVID's default layer scales with the depth to 5 here, where layer 5 reads layer 3's KV: the step
    runs before layer 3 (the row says so), reading the attention of global layer 1."""
    pipe = Pipeline(adapter, method="flashvid", keep=0.5)
    result = pipe.answer(pipe.encode(clips[0]), QUESTIONS[0], max_new_tokens=2)
    per_layer = result.stats.tokens_per_layer
    assert per_layer[2] > per_layer[3] == per_layer[-1]
    assert result.stats.info["3"]["moved_from_layer"] == 5
    assert result.stats.attention_layers == [1]


# -- flops ------------------------------------------------------------------------------------------------
def test_flops_follow_sliding_and_shared_layers(model_dir, adapter):
    """Sliding layers cost O(n * window), global layers O(n^2); KV-shared layers compute no K/V; global
    layers their own (wider) heads. `mlb flops` and the row count with the same dims."""
    from mlbcli.api import flops
    from mlbcli.engine.flops import LLMDims, layer_flops, visual_flops
    from mlbcli.models import load_config

    text = load_config(model_dir).text_config
    kinds = adapter.layer_kinds(text)
    assert kinds == ("sliding", "full", "sliding", "sliding", "full", "sliding", "full")
    dims = LLMDims.from_config(text, kinds, adapter.kv_sources(text))
    assert dims.window == 16 and dims.layer_head_dims == (16, 32, 16, 16, 32, 16, 32)
    assert dims.kv_projections == (2, 2, 2, 2, 2, 0, 0)
    # beyond the window a sliding layer grows linearly, a global one quadratically
    assert layer_flops(2000, dims, layer=0) == pytest.approx(2 * layer_flops(1000, dims, layer=0))
    assert layer_flops(2000, dims, layer=1) > 2 * layer_flops(1000, dims, layer=1)
    # a shared layer (5 reads 3's KV) costs its source minus the K and V projections
    kv = 2 * 1000 * 64 * 2 * 16  # 2 projections x n x D x (h_kv x d)
    assert layer_flops(1000, dims, layer=3) - layer_flops(1000, dims, layer=5) == pytest.approx(kv)
    plan = flops(model=model_dir, method="uniform", keep=0.5, frames=4)
    n = plan.visual_tokens
    assert plan.flops_vanilla == pytest.approx(visual_flops([n] * 7, dims))
    dense = LLMDims(num_layers=7, hidden=64, intermediate=128, num_heads=4, num_kv_heads=2, head_dim=16)
    assert plan.flops_vanilla != pytest.approx(visual_flops([n] * 7, dense))
    # the schedule `mlb flops` prints is the one that runs: FlashVID's layer 5 moves to 3
    moved = flops(model=model_dir, method="flashvid", keep=0.5, frames=4)
    assert moved.tokens_per_layer[2] > moved.tokens_per_layer[3] == moved.tokens_per_layer[-1]


def test_row_flops_ratio_follows_the_layers(adapter, clips):
    from mlbcli.engine.flops import LLMDims, visual_flops

    pipe = Pipeline(adapter, method="fastv", keep=0.5)
    stats = pipe.answer(pipe.encode(clips[0]), QUESTIONS[0], max_new_tokens=2).stats
    text = adapter.text_config
    dims = LLMDims.from_config(text, adapter.layer_kinds(text), adapter.kv_sources(text))
    n = stats.visual_tokens_in
    assert stats.flops_ratio == pytest.approx(
        visual_flops(stats.tokens_per_layer, dims) / visual_flops([n] * 7, dims)
    )
    # a count that ignored the kinds (every layer global, own K/V) would give another ratio
    flat = LLMDims.from_config(text)
    assert stats.flops_ratio != pytest.approx(
        visual_flops(stats.tokens_per_layer, flat) / visual_flops([n] * 7, flat)
    )


# -- the CLI ----------------------------------------------------------------------------------------------
def test_cli_answer_with_the_checkpoint(model_dir, clips_dir, tmp_path):
    """`mlb answer ... --model <Gemma 4 checkpoint>`: decode -> per-frame prompt -> prune -> Parquet; the
    row says that --frames departs from the processor's 32."""
    from typer.testing import CliRunner

    from mlbcli.cli.app import app
    from mlbcli.io.writers import read_results

    out = tmp_path / "answers.parquet"
    args = ["answer", str(clips_dir / "a.mp4"), "--question", QUESTIONS[0], "--model", model_dir]
    args += [
        "--method",
        "fastv",
        "--keep",
        "0.5",
        "--frames",
        "4",
        "--max-new-tokens",
        "3",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(app, [*args, "--workers", "0", "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (row,) = read_results(out).to_pylist()
    assert row["error"] is None and row["answer"] is not None
    assert len(row["kept_per_frame"]) == 4
    assert row["visual_tokens_kept"] < row["visual_tokens_in"]
    assert row["attention_layers"] == [1]  # FastV's K - 1 = 1 is global: read as it is
    assert "32 frames" in row["input_note"]
