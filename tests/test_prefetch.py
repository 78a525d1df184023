"""Background decode: input order, bounded look-ahead, errors as values, timeouts and crashed workers."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import pytest
from helpers_video import clip_factory, decode_clip, scripted_decode

from mlbcli.errors import DecodeTimeout, VideoDecodeError
from mlbcli.prefetch import prefetch


def _run(tasks, **kwargs) -> list:
    return list(prefetch(tasks, scripted_decode, **kwargs))


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_results_come_in_input_order(workers: int) -> None:
    # "slow" items first: with 2 workers later items finish earlier but must wait their turn.
    tasks = [("slow" if i < 3 else "ok", i, None) for i in range(10)]
    out = _run(tasks, workers=workers, depth=4)
    assert [group for group, _ in out] == tasks
    assert [result for _, result in out] == [2 * i for i in range(10)]


@pytest.mark.parametrize("workers", [0, 2])
def test_errors_are_yielded_not_raised(workers: int) -> None:
    tasks = [("ok", 1, None), ("raise", 2, None), ("unpicklable_error", 3, None), ("ok", 4, None)]
    out = [result for _, result in _run(tasks, workers=workers)]
    assert out[0] == 2 and out[3] == 8
    assert isinstance(out[1], ValueError) and "bad item 2" in str(out[1])
    assert isinstance(out[2], Exception) and "a-b" in str(out[2])


def test_look_ahead_is_bounded(tmp_path: Path) -> None:
    depth, workers = 3, 2
    tasks = [("ok", i, str(tmp_path)) for i in range(12)]
    gen = prefetch(tasks, scripted_decode, workers=workers, depth=depth)
    first = next(gen)
    assert first[1] == 0
    time.sleep(1.0)  # the consumer is "busy": workers may only run ahead by the window
    started = len(list(tmp_path.glob("started-*")))
    assert started <= 1 + depth  # the one taken plus at most `depth` queued ahead
    assert started <= depth + workers
    assert started >= 2  # ... but they did work ahead in the background
    rest = [result for _, result in gen]
    assert rest == [2 * i for i in range(1, 12)]


def test_background_decoding_overlaps_the_consumer(tmp_path: Path) -> None:
    tasks = [("slow", i, None) for i in range(8)]  # 50 ms each
    gen = prefetch(tasks, scripted_decode, workers=2, depth=8)
    next(gen)  # workers are up
    time.sleep(0.5)  # consumer busy long enough for everything to decode
    started = time.perf_counter()
    rest = [result for _, result in gen]
    assert rest == [2 * i for i in range(1, 8)]
    assert time.perf_counter() - started < 0.2  # nothing left to wait for


def test_a_hung_decode_times_out_and_the_rest_complete() -> None:
    tasks = [("ok", 1, None), ("hang", 2, None), ("ok", 3, None), ("ok", 4, None)]
    started = time.perf_counter()
    out = [result for _, result in _run(tasks, workers=2, depth=4, timeout_s=1.0)]
    assert time.perf_counter() - started < 10
    assert out[0] == 2 and out[2] == 6 and out[3] == 8
    assert isinstance(out[1], DecodeTimeout)
    assert isinstance(out[1], VideoDecodeError)  # callers can treat every decode failure alike


@pytest.mark.parametrize("action", ["segfault", "exit"])
def test_a_crashing_decoder_costs_one_item(action: str) -> None:
    tasks = [("ok", 1, None), (action, 2, None), ("ok", 3, None), (action, 4, None), ("ok", 5, None)]
    out = [result for _, result in _run(tasks, workers=1, depth=2, timeout_s=30)]
    assert out[0] == 2 and out[2] == 6 and out[4] == 10
    for crashed in (out[1], out[3]):
        assert isinstance(crashed, VideoDecodeError)
        assert "crashed" in str(crashed)
    expected = "SIGSEGV" if action == "segfault" else "exit code 7"
    assert expected in str(out[1])


def test_closing_early_stops_the_workers() -> None:
    tasks = [("hang", i, None) for i in range(4)]
    gen = prefetch([("ok", 0, None), *tasks], scripted_decode, workers=2, depth=4, timeout_s=None)
    assert next(gen)[1] == 0
    started = time.perf_counter()
    gen.close()  # hung workers are killed, not waited for
    assert time.perf_counter() - started < 5


def test_consumer_exception_cleans_up() -> None:
    gen = prefetch([("ok", i, None) for i in range(6)], scripted_decode, workers=2, depth=2)
    with pytest.raises(RuntimeError, match="model broke"):
        for _group, _result in gen:
            raise RuntimeError("model broke")


def test_input_errors_surface_in_the_consumer() -> None:
    def tasks():
        yield ("ok", 1, None)
        raise LookupError("bad source")

    gen = prefetch(tasks(), scripted_decode, workers=1, depth=4)
    with pytest.raises(LookupError, match="bad source"):
        list(gen)


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        prefetch([], scripted_decode, workers=-1)
    with pytest.raises(ValueError):
        prefetch([], scripted_decode, depth=0)
    with pytest.raises(ValueError):
        prefetch([], scripted_decode, timeout_s=0)
    with pytest.raises(TypeError, match="picklable"):
        prefetch([1], lambda x: x, workers=1)
    assert list(prefetch([], scripted_decode, workers=2)) == []
    # Inline mode accepts anything callable.
    assert list(prefetch([1, 2], lambda x: x + 1, workers=0)) == [(1, 2), (2, 3)]


def test_inline_mode_runs_in_the_calling_thread() -> None:
    import threading

    seen: list[str] = []

    def decode(x: int) -> int:
        seen.append(threading.current_thread().name)
        return x

    assert [r for _, r in prefetch(range(3), decode, workers=0)] == [0, 1, 2]
    assert set(seen) == {threading.current_thread().name}


def test_real_clips_through_worker_processes(tmp_path: Path) -> None:
    make = clip_factory(tmp_path)
    paths = [str(make(f"c{i}.mp4", num_frames=12, seed=i)) for i in range(3)]
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    tasks = [paths[0], str(bad), paths[1], paths[2]]
    out = list(prefetch(tasks, functools.partial(decode_clip), workers=2, depth=2))
    assert [group for group, _ in out] == tasks
    assert isinstance(out[1][1], VideoDecodeError) and "bad.mp4" in str(out[1][1])
    for _, frames in (out[0], out[2], out[3]):
        assert frames.array.shape == (8, 120, 160, 3)
        assert frames.backend == "decord"
