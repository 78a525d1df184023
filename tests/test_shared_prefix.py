"""Several questions about one video share the prefill of the system prompt + visual block."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlbcli import engine
from mlbcli.runner import Pipeline

QUESTIONS = ["What is happening in the video?", "Which colour is the square?", "How many objects are there?"]


@pytest.fixture(scope="module")
def qwen_adapter(tmp_path_factory):
    from mlbcli.models import load_adapter
    from mlbcli.tiny import build_tiny_qwen2_vl

    return load_adapter(
        str(build_tiny_qwen2_vl(tmp_path_factory.mktemp("qwen"), version="2.5")), device="cpu"
    )


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return np.random.default_rng(5).integers(0, 255, (6, 90, 120, 3), dtype=np.uint8)


def _answers(pipe: Pipeline, frames: np.ndarray) -> list:
    video = pipe.encode(frames)
    return [pipe.answer(video, question, max_new_tokens=6) for question in QUESTIONS]


@pytest.mark.parametrize("family", ["llava_onevision", "qwen2_5_vl"])
@pytest.mark.parametrize(
    ("method", "keep"),
    [("none", 1.0), ("uniform", 0.5), ("random", 0.3), ("visionzip", 0.5), ("slowfast", 1.0)],
)
def test_shared_prefix_matches_full_prefill(
    tiny_adapter, qwen_adapter, frames, family, method, keep, monkeypatch
):
    adapter = tiny_adapter if family == "llava_onevision" else qwen_adapter
    calls = {"prefill": 0, "extend": 0}
    prefill, extend = engine.prefill, engine.extend

    def counting(name, function):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(engine, "prefill", counting("prefill", prefill))
    monkeypatch.setattr(engine, "extend", counting("extend", extend))
    shared = _answers(Pipeline(adapter, method=method, keep=keep), frames)
    assert calls == {"prefill": 1, "extend": 3}  # one prefix for the video, then only the questions
    full = _answers(Pipeline(adapter, method=method, keep=keep, share_prefix=False), frames)
    for a, b in zip(shared, full, strict=True):
        assert a.token_ids == b.token_ids
        assert a.stats.as_row() == b.stats.as_row()


def test_attention_methods_do_not_share(tiny_adapter, frames, monkeypatch):
    calls = []
    prefill = engine.prefill
    monkeypatch.setattr(engine, "prefill", lambda *a, **k: calls.append(1) or prefill(*a, **k))
    _answers(Pipeline(tiny_adapter, method="fastv", keep=0.5), frames)
    assert len(calls) == 3  # the selection depends on each question


def test_first_logits_close_to_the_unsplit_prefill(tiny_adapter, frames):
    """The split prefill is the same computation in two chunks (float rounding may differ, not more)."""
    pipe = Pipeline(tiny_adapter)
    video = pipe.encode(frames)
    planned = pipe._plan(video.tokens, QUESTIONS[0], pipe.method)
    split = pipe._shared_prefix_prefill(video.tokens, pipe.method, planned, 4)
    full = pipe._prefill(video.tokens, QUESTIONS[0], stop_after_pruning=False)
    torch.testing.assert_close(split.logits, full.logits, rtol=1e-4, atol=1e-4)
    assert torch.equal(split.position_ids, full.position_ids)
