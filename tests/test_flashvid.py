"""FlashVID (`--method flashvid`): the official code's selections on golden fixtures, the budget it
keeps, and end-to-end runs on every tiny family (CLI, batching, --keep 1.0)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mlbcli import select_tokens
from mlbcli.engine.pipeline import Pipeline, Request
from mlbcli.selection import MethodOptions, get_method
from mlbcli.testing.tiny import TINY_FAMILIES, build_tiny

GOLDEN = Path(__file__).parent / "golden" / "methods" / "flashvid_official.pt"
QUESTION = "What is happening in the video?"


def golden() -> dict:
    return torch.load(GOLDEN, weights_only=True)


def test_golden_fixtures_record_their_provenance():
    meta = golden()["meta"]
    assert meta["repository"] == "Fanziyang-v/FlashVID"
    assert meta["commit"] == "1d37422c5afcaa15ee46b5355f5ba798fa93290a"
    kinds = {case["kind"] for case in golden()["cases"]}
    assert kinds == {"random", "static", "drifting", "cut"}


@pytest.mark.parametrize("index", range(25))
def test_official_variant_equals_the_official_code(index):
    """Vision side: the same ids in the same (sorted) order and states within 1e-5; the in-LLM step on
    the given attention: the same survivors and states."""
    case = golden()["cases"][index]
    params = golden()["meta"]["params"]
    args = (case["features"],)
    kwargs = dict(keep=case["keep"], variant="official", saliency=case["saliency"], **params)
    vision = select_tokens("flashvid", *args, **kwargs)
    assert torch.equal(vision.ids, case["ids"])
    torch.testing.assert_close(vision.states, case["states"], atol=1e-5, rtol=0)
    assert torch.equal(vision.positions, torch.arange(len(vision)))  # concatenated, as the LLaVA code
    inner = select_tokens("flashvid", *args, attention=case["attention"], **kwargs)
    assert torch.equal(inner.ids, case["inner_ids"])
    torch.testing.assert_close(inner.states, case["inner_states"], atol=1e-5, rtol=0)


def test_budget_is_the_expanded_share_then_the_llm_retention():
    x = torch.randn(8, 25, 16, generator=torch.Generator().manual_seed(3)) + 1.0
    sel = select_tokens("flashvid", x, keep=0.2)
    assert len(sel) <= 8 * 7  # ceil(25 * 0.2 * 1.25) = 7 a frame; TSTM may merge below it
    assert len(sel) >= 8 * 5  # ceil(7 * 0.7) = 5 ADTS tokens a frame always stay
    attention = torch.rand(len(sel), generator=torch.Generator().manual_seed(4))
    inner = select_tokens("flashvid", x, keep=0.2, attention=attention)
    count = -(-len(sel) * 3 // 10)  # ceil(0.3 n)
    assert set(inner.ids.tolist()) == set(sel.ids[attention.topk(count).indices].tolist())
    assert inner.keep_note is not None and "layer average" in inner.keep_note


def test_pruning_layer_scales_with_depth_and_follows_layer():
    method = get_method("flashvid", MethodOptions(keep=0.25))
    assert method.layer == 20
    method.check_layer(4)
    assert method.layer == 3  # round(20 / 28 * 4)
    assert get_method("flashvid", MethodOptions(keep=0.25, layer=2)).layer == 2


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
    pipe = Pipeline(adapters[family], method="flashvid", keep=0.25)
    requests = [Request(pipe.encode(_clip(n, n)), QUESTION, 3) for n in (4, 6)]
    batched = pipe.run(requests)
    alone = [Pipeline(adapters[family], method="flashvid", keep=0.25).run([r])[0] for r in requests]
    for a, b, request in zip(batched, alone, requests, strict=True):
        assert a.error is None and b.error is None, (a.error, b.error)
        assert a.token_ids == b.token_ids
        assert a.stats.tokens_per_layer == b.stats.tokens_per_layer
        video = request.video.tokens
        assert a.stats.visual_tokens_kept < video.num_visual
        if a.stats.keep_note is not None:
            assert "layer average" in a.stats.keep_note


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_keep_one_is_method_none(adapters, family):
    video = Pipeline(adapters[family]).encode(_clip(4, 9))
    full = Pipeline(adapters[family], method="flashvid", keep=1.0).answer(video, QUESTION, max_new_tokens=4)
    none = Pipeline(adapters[family]).answer(video, QUESTION, max_new_tokens=4)
    assert full.token_ids == none.token_ids
    assert full.stats.visual_tokens_kept == none.stats.visual_tokens_kept


def test_mlb_answer_runs_flashvid(tiny_model_dir, clips_dir, tmp_path):
    from typer.testing import CliRunner

    from mlbcli.cli.app import app

    out = tmp_path / "flashvid.parquet"
    args = [str(clips_dir / "a.mp4"), "--question", "What moves?", "--model", str(tiny_model_dir)]
    args += ["--method", "flashvid", "--keep", "0.25", "--out", str(out), "--workers", "0", "--frames", "4"]
    result = CliRunner().invoke(app, ["answer", *args, "--max-new-tokens", "3", "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    import pyarrow.parquet as pq

    row = pq.read_table(out).to_pylist()[0]
    assert row["method"] == "flashvid" and row["error"] is None
    assert 0 < row["visual_tokens_kept"] < row["visual_tokens_in"]
