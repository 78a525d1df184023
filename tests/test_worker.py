"""`ModelWorker`: batching of decoded videos, error isolation and the out-of-memory split."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from mlbcli.engine.pipeline import Result
from mlbcli.io.sources import Item
from mlbcli.runners.tasks import DecodedVideo, ModelWorker


class FakeStats:
    def as_row(self):
        return {}


class FakePipe:
    """Runs requests instantly; raises OOM for batches above `fits`, and always for prompt "huge"."""

    def __init__(self, fits: int):
        self.fits = fits
        self.adapter = SimpleNamespace(device=torch.device("cpu"), model_id="fake")
        self.batches: list[list[str]] = []

    def encode_many(self, frames):
        return [SimpleNamespace(tokens=f, encode_s=0.0) for f in frames]

    def encode(self, frames):
        return self.encode_many([frames])[0]

    def run(self, requests):
        prompts = [r.prompt for r in requests]
        if len(requests) > self.fits:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        self.batches.append(prompts)
        return [
            Result(error=torch.OutOfMemoryError("CUDA out of memory"))
            if p == "huge"
            else Result(text=p.upper())
            for p in prompts
        ]


class EchoTask:
    def request(self, pipe, item, video, override):
        return SimpleNamespace(prompt=item.question)

    def row(self, pipe, item, decoded, video, result):
        return {"answer": result.text}


def _videos(questions: list[list[str]]) -> list[DecodedVideo]:
    return [
        DecodedVideo(
            [Item(f"v{v}", f"v{v}.mp4", str(i), q, None, None, "test") for i, q in enumerate(qs)],
            frames=f"frames{v}",
        )
        for v, qs in enumerate(questions)
    ]


def _process(worker: ModelWorker, videos: list[DecodedVideo]):
    return [(item.question, row) for batch in worker.batches(videos) for item, row in worker.process(batch)]


def test_out_of_memory_halves_the_batch_and_loses_nothing():
    pipe = FakePipe(fits=2)
    worker = ModelWorker(pipe, EchoTask(), {"model": "fake"}, batch_size=8)
    questions = [["a", "b", "c"], ["d"], ["e", "f", "g", "h"]]
    rows = _process(worker, _videos(questions))
    assert [q for q, _ in rows] == list("abcdefgh")  # every item once, in order
    assert [row["answer"] for _, row in rows] == list("ABCDEFGH")
    assert worker.batch_size == 2  # the size that fit is kept
    assert all(len(batch) <= 2 for batch in pipe.batches)


def test_a_single_item_that_does_not_fit_is_an_error_row_with_advice():
    pipe = FakePipe(fits=4)
    worker = ModelWorker(pipe, EchoTask(), {"model": "fake"}, batch_size=4)
    rows = dict(_process(worker, _videos([["a", "huge", "b"]])))
    assert rows["a"]["answer"] == "A" and rows["b"]["answer"] == "B"
    assert "out of memory on a single item" in rows["huge"]["error"]
    assert "--frames" in rows["huge"]["error"]
    assert rows["huge"]["model"] == "fake"  # what was asked is kept on failed rows


def test_decode_errors_and_batches_in_input_order():
    pipe = FakePipe(fits=100)
    worker = ModelWorker(pipe, EchoTask(), {}, batch_size=3)
    videos = _videos([["a"], ["b", "c"], ["d"], ["e"]])
    videos[1].error = ValueError("cannot decode")
    assert [len(batch) for batch in worker.batches(videos)] == [2, 2]  # >= 3 items per batch (last: rest)
    rows = _process(worker, videos)
    assert [q for q, _ in rows] == list("abcde")
    assert "cannot decode" in dict(rows)["b"]["error"] and "cannot decode" in dict(rows)["c"]["error"]
    assert pipe.batches == [["a"], ["d", "e"]]


def test_auto_batch_size_is_one_on_cpu():
    assert ModelWorker(FakePipe(fits=1), EchoTask(), {}, batch_size=None).batch_size == 1
