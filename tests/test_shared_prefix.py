"""Several questions about one video share the prefill of the system prompt + visual block."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlbcli.engine import batch as engine
from mlbcli.engine.pipeline import Pipeline, Request

QUESTIONS = ["What is happening in the video?", "Which colour is the square?", "How many objects are there?"]


@pytest.fixture(scope="module")
def qwen_adapter(tmp_path_factory):
    from mlbcli.models import load_adapter
    from mlbcli.testing.tiny import build_tiny_qwen2_vl

    return load_adapter(
        str(build_tiny_qwen2_vl(tmp_path_factory.mktemp("qwen"), version="2.5")), device="cpu"
    )


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return np.random.default_rng(5).integers(0, 255, (6, 90, 120, 3), dtype=np.uint8)


def _answers(pipe: Pipeline, frames: np.ndarray) -> list:
    video = pipe.encode(frames)
    return [pipe.answer(video, question, max_new_tokens=6) for question in QUESTIONS]


def _counting(monkeypatch) -> dict[str, list[int]]:
    """Rows of every `engine.prefill_batch` / `engine.extend_batch` call, by function."""
    calls: dict[str, list[int]] = {"prefill": [], "extend": []}
    prefill, extend = engine.prefill_batch, engine.extend_batch

    def prefill_rows(adapter, inputs, *args, **kwargs):
        calls["prefill"].append(len(inputs))
        return prefill(adapter, inputs, *args, **kwargs)

    def extend_rows(adapter, batch, suffixes, **kwargs):
        calls["extend"].append(len(suffixes))
        return extend(adapter, batch, suffixes, **kwargs)

    monkeypatch.setattr(engine, "prefill_batch", prefill_rows)
    monkeypatch.setattr(engine, "extend_batch", extend_rows)
    return calls


@pytest.mark.parametrize("family", ["llava_onevision", "qwen2_5_vl"])
@pytest.mark.parametrize(
    ("method", "keep", "variant"),
    [
        ("none", None, None),
        ("uniform", 0.5, None),
        ("random", 0.3, None),
        ("visionzip", 0.5, "paper"),  # official re-sequences positions: no shared prefix (below)
        ("slowfast", None, None),
    ],
)
def test_shared_prefix_matches_full_prefill(
    tiny_adapter, qwen_adapter, frames, family, method, keep, variant, monkeypatch
):
    adapter = tiny_adapter if family == "llava_onevision" else qwen_adapter
    calls = _counting(monkeypatch)
    shared = _answers(Pipeline(adapter, method=method, keep=keep, variant=variant), frames)
    # one prefix for the video (one row), then only each question's own tokens
    assert calls == {"prefill": [1], "extend": [1, 1, 1]}
    full = _answers(Pipeline(adapter, method=method, keep=keep, variant=variant, share_prefix=False), frames)
    for a, b in zip(shared, full, strict=True):
        assert a.token_ids == b.token_ids
        assert a.stats.as_row() == b.stats.as_row()


def test_shared_prefix_inside_one_batch(tiny_adapter, frames, monkeypatch):
    """Questions of one video in one batch: one prefix row fanned out to all of them."""
    pipe = Pipeline(tiny_adapter, method="uniform", keep=0.5)
    video = pipe.encode(frames)
    calls = _counting(monkeypatch)
    batched = pipe.run([Request(video, question, 6) for question in QUESTIONS])
    assert calls == {"prefill": [1], "extend": [3]}
    alone = _answers(Pipeline(tiny_adapter, method="uniform", keep=0.5, share_prefix=False), frames)
    for a, b in zip(batched, alone, strict=True):
        assert a.token_ids == b.token_ids
        assert a.stats.as_row() == b.stats.as_row()


def test_contiguous_positions_do_not_share(tiny_adapter, frames, monkeypatch):
    """Official VisionZip re-sequences positions: a question's suffix cannot continue a cached prefix's
    original numbering, so every question runs its own prefill (and still answers as alone)."""
    calls = _counting(monkeypatch)
    shared = _answers(Pipeline(tiny_adapter, method="visionzip", keep=0.5), frames)
    assert calls == {"prefill": [1, 1, 1], "extend": []}
    full = _answers(Pipeline(tiny_adapter, method="visionzip", keep=0.5, share_prefix=False), frames)
    assert [a.token_ids for a in shared] == [b.token_ids for b in full]


def test_attention_methods_do_not_share(tiny_adapter, frames, monkeypatch):
    calls = _counting(monkeypatch)
    _answers(Pipeline(tiny_adapter, method="fastv", keep=0.5), frames)
    assert calls == {"prefill": [1, 1, 1], "extend": []}  # the selection depends on each question


def test_first_logits_close_to_the_unsplit_prefill(tiny_adapter, frames):
    """The split prefill is the same computation in two chunks (float rounding may differ, not more)."""
    video = Pipeline(tiny_adapter).encode(frames)
    split = Pipeline(tiny_adapter).run([Request(video, QUESTIONS[0], 4)])[0].state
    full = Pipeline(tiny_adapter, share_prefix=False).run([Request(video, QUESTIONS[0], 4)])[0].state
    torch.testing.assert_close(split.logits, full.logits, rtol=1e-4, atol=1e-4)
    assert torch.equal(split.position_ids, full.position_ids)
