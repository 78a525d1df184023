"""FrameFusion (`--method framefusion`): the official code's merges and pruning on golden fixtures,
the cost formula, and end-to-end runs on every tiny family (CLI, batching, --keep 1.0)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mlbcli import select_tokens
from mlbcli.engine.pipeline import Pipeline, Request
from mlbcli.selection.ops.framefusion import (
    FusionSettings,
    FusionState,
    merge_step,
    prune_step,
    pruning_ratio,
)
from mlbcli.testing.tiny import TINY_FAMILIES, build_tiny

GOLDEN = Path(__file__).parent / "golden" / "methods" / "framefusion_official.pt"
QUESTION = "What is happening in the video?"


def golden() -> dict:
    return torch.load(GOLDEN, weights_only=True)


def test_golden_fixtures_record_their_provenance():
    meta = golden()["meta"]
    assert meta["repository"] == "thu-nics/FrameFusion"
    assert meta["commit"] == "fbec1d2e6bd383361c2c87ca13e73f80a8c1a9e9"
    cases = golden()["cases"]
    assert {case["kind"] for case in cases} == {"random", "static", "drifting", "cut"}
    assert any(len(case["sparsity"]) > 1 for case in cases)  # merging over several layers is covered


@pytest.mark.parametrize("index", range(36))
def test_official_variant_equals_the_official_code(index):
    """Merging layer after layer, then pruning by the given attention: the same survivors in order, at
    their original positions, with the merged states within 1e-5."""
    case = golden()["cases"][index]
    sel = select_tokens("framefusion", case["features"], keep=case["keep"], attention=case["attention"])
    assert torch.equal(sel.ids, case["ids"])
    assert torch.equal(sel.positions, case["ids"])
    torch.testing.assert_close(sel.states, case["states"], atol=1e-5, rtol=0)


def test_cost_is_the_average_share_over_the_layers():
    for sparsity in ([], [0.0], [0.5, 0.05]):
        for cost in (0.1, 0.3, 0.6):
            ratio = pruning_ratio(sparsity, cost, 28)
            assert ratio is not None
            shares, s = [], 1.0
            for value in sparsity:
                s *= 1 - value
                shares.append(s)
            shares += [s * (1 - ratio)] * (28 - len(sparsity))
            if ratio > 0:
                assert sum(shares) / 28 == pytest.approx(cost)
    assert pruning_ratio([0.0, 0.0], 0.01, 28) is None  # two full layers already cost more than 1%


def test_when_merges_spent_the_cost_the_next_step_prunes_to_one_token():
    """Two layers with nothing merged already cost more than 1% of 28 layers: the next merging call
    merges nothing and leaves the pruning to the step after it, which keeps one token and says why."""
    settings = FusionSettings(0.01, 0.6, 0.1, 28, 16, 4, target=1)
    state = FusionState(sparsity=[0.0, 0.0])
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    kept, states, info = merge_step(x, torch.arange(64), state, settings)
    assert kept.numel() == 64 and info["merged"] == 0 and torch.equal(states, x)
    assert state.merging_done and not state.pruning_done
    kept, info = prune_step(torch.rand(64), state, settings)
    assert kept.numel() == 1 and state.pruning_done


def test_a_static_video_merges_into_its_first_frame():
    base = torch.randn(1, 16, 8, generator=torch.Generator().manual_seed(0))
    x = base.repeat(6, 1, 1)
    sel = select_tokens("framefusion", x, keep=0.25)
    assert sel.layers == [0]
    # the upper bound 1 - 28 * 0.25 / 28 = 0.75 of the 96 tokens merge, most similar first
    assert len(sel) == 96 - int(0.75 * 96)
    assert set(range(16)) <= set(sel.ids.tolist())  # first-frame tokens are the merge targets


# -- the engine, every family ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    from mlbcli.models import load_adapter

    out = {}
    for family in TINY_FAMILIES:
        folder = tmp_path_factory.mktemp("LLaVA-Video" if family == "llava_video" else family)
        out[family] = load_adapter(str(build_tiny(family, folder)), device="cpu")
    return out


def _clip(frames: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (frames, 64, 64, 3), dtype=np.uint8)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_every_family_meets_the_budget_or_says_why(adapters, family):
    pipe = Pipeline(adapters[family], method="framefusion", keep=0.25)
    still = np.repeat(_clip(1, 5), 4, axis=0)
    requests = [Request(pipe.encode(clip), QUESTION, 3) for clip in (_clip(4, 4), still, _clip(6, 6))]
    batched = pipe.run(requests)
    alone = [Pipeline(adapters[family], method="framefusion", keep=0.25).run([r])[0] for r in requests]
    for a, b, request in zip(batched, alone, requests, strict=True):
        assert a.error is None and b.error is None, (a.error, b.error)
        assert a.token_ids == b.token_ids
        assert a.stats.tokens_per_layer == b.stats.tokens_per_layer
        assert a.stats.visual_tokens_kept < request.video.tokens.num_visual
        if a.stats.keep_note is not None:
            assert "FrameFusion" in a.stats.keep_note


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_keep_one_is_method_none(adapters, family):
    video = Pipeline(adapters[family]).encode(_clip(4, 9))
    full = Pipeline(adapters[family], method="framefusion", keep=1.0).answer(
        video, QUESTION, max_new_tokens=4
    )
    none = Pipeline(adapters[family]).answer(video, QUESTION, max_new_tokens=4)
    assert full.token_ids == none.token_ids
    assert full.stats.visual_tokens_kept == none.stats.visual_tokens_kept


def test_mlb_answer_runs_framefusion(tiny_model_dir, clips_dir, tmp_path):
    from typer.testing import CliRunner

    from mlbcli.cli.app import app

    out = tmp_path / "framefusion.parquet"
    args = [str(clips_dir / "a.mp4"), "--question", "What moves?", "--model", str(tiny_model_dir)]
    args += [
        "--method",
        "framefusion",
        "--keep",
        "0.25",
        "--out",
        str(out),
        "--workers",
        "0",
        "--frames",
        "4",
    ]
    result = CliRunner().invoke(app, ["answer", *args, "--max-new-tokens", "3", "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    import pyarrow.parquet as pq

    row = pq.read_table(out).to_pylist()[0]
    assert row["method"] == "framefusion" and row["error"] is None
    assert 0 < row["visual_tokens_kept"] < row["visual_tokens_in"]
