"""The CLI as a real process: stop signals commit finished rows, and no decoder outlives its run.

Each test runs `python -m mlbcli sample` (no model needed) on a few tiny clips plus one clip whose decode
hangs in C code (an ffconcat list naming a FIFO), so "mid-run" is a state the test can observe, not a
moment it has to guess: the FIFO has a reader exactly when a decoder is stuck on that clip.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path

import pytest
from helpers_process import (
    children_of,
    cmdline,
    is_gone,
    make_hanging_clip,
    mlb_process,
    open_fifo_writer_once_read,
    wait_until,
)

from mlbcli.io.video import make_test_video
from mlbcli.io.writers import read_results

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses mkfifo and /proc")


def _rows(path: Path) -> list[dict]:
    return read_results(path).to_pylist()


def _clips(folder: Path, count: int, prefix: str = "c") -> list[Path]:
    return [make_test_video(folder / f"{prefix}{i}.mp4", num_frames=12, seed=i) for i in range(count)]


@pytest.mark.parametrize(
    ("signum", "code", "reason"),
    [
        (signal.SIGTERM, 143, "terminated (SIGTERM)"),
        (signal.SIGHUP, 129, "hung up (SIGHUP)"),
        (signal.SIGINT, 130, "interrupted"),
    ],
)
def test_stop_signal_commits_finished_rows_and_exits_128_plus_signal(
    tmp_path: Path, signum: int, code: int, reason: str
) -> None:
    good = _clips(tmp_path, 2)
    hang, fifo = make_hanging_clip(tmp_path)
    out, sheets = tmp_path / "s.parquet", tmp_path / "sheets"
    proc = mlb_process(
        "sample", *good, hang, "--frames", "4", "--decode-timeout", "600",
        "--contact-sheet", sheets, "--out", out, cwd=tmp_path,
    )  # fmt: skip
    writer_fd = None
    try:
        # Mid-run, observably: both good clips are through the consumer (their contact sheets are
        # written just before their rows) and a decoder is stuck on the third. Two rows are only in the
        # writer's buffer (parts are committed every 16 rows), which a signal used to throw away.
        wait_until(lambda: len(list(sheets.glob("*.jpg"))) == len(good), "the good clips' sheets", proc)
        writer_fd = wait_until(lambda: open_fifo_writer_once_read(fifo), "a decoder stuck on the FIFO", proc)
        for _ in range(3):  # repeated signals while the run commits must not print a traceback
            os.kill(proc.pid, signum)
        _stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if writer_fd is not None:
            os.close(writer_fd)

    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    reported_ok = int(re.search(r"sample finished: items 3, ok (\d+)", stderr).group(1))
    # issue 22: the last line says how many items were committed and how many were not done
    counts = f"{reported_ok} item(s) committed, {3 - reported_ok} not done"
    assert f"mlb: {reason}; {counts}; finished rows are saved, rerun to resume" in stderr
    # issue 22: and what was not done (the next run does it)
    assert f"skipped (resume) 0, not done {3 - reported_ok}," in stderr
    rows = _rows(out)
    # Every row the run reported finished is in the final file; the second sheet proves at least the
    # first row was finished before the signal (the second may or may not have been emitted).
    assert len(rows) == reported_ok >= len(good) - 1
    assert [r["video_id"] for r in rows] == [str(p) for p in good[:reported_ok]]
    assert all(r["error"] is None for r in rows)
    assert not (tmp_path / "s.parquet.parts").exists()  # merged, not left as parts

    if signum == signal.SIGTERM:  # the rerun resumes: nothing redone, nothing twice
        extra = _clips(tmp_path, 1, prefix="new")
        again = mlb_process("sample", *good, *extra, "--frames", "4", "--out", out, cwd=tmp_path)
        _stdout, stderr = again.communicate(timeout=120)
        assert again.returncode == 0, stderr
        assert f"({reported_ok} already done, skipped)" in stderr
        ids = [r["video_id"] for r in _rows(out)]
        assert sorted(ids) == sorted(str(p) for p in [*good, *extra])
        assert len(ids) == len(set(ids))


def test_a_hung_decoder_dies_with_a_sigkilled_run(tmp_path: Path) -> None:
    """Finding R10: the spawn worker stuck in C code and the resource tracker outlived `kill -9`."""
    hang, fifo = make_hanging_clip(tmp_path)
    proc = mlb_process(
        "sample", hang, "--frames", "4", "--decode-timeout", "600", "--out", tmp_path / "k.parquet", "-q",
        cwd=tmp_path,
    )  # fmt: skip
    writer_fd = None
    helpers: list[int] = []
    try:
        writer_fd = wait_until(lambda: open_fifo_writer_once_read(fifo), "a decoder stuck on the FIFO", proc)
        helpers = children_of(proc.pid)
        assert any("spawn_main" in cmdline(pid) for pid in helpers), [cmdline(p) for p in helpers]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        wait_until(lambda: all(is_gone(pid) for pid in helpers), "the decode worker and tracker to exit")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in helpers:  # on failure, do not leave our own orphans behind
            if not is_gone(pid):
                os.kill(pid, signal.SIGKILL)
        if writer_fd is not None:
            os.close(writer_fd)


def test_workers_0_still_honours_the_decode_timeout(tmp_path: Path) -> None:
    """Finding R11: with --workers 0 a hung file stalled the batch forever and no row was written."""
    (good,) = _clips(tmp_path, 1)
    hang, _fifo = make_hanging_clip(tmp_path)
    out = tmp_path / "w0.parquet"
    proc = mlb_process(
        "sample", hang, good, "--frames", "4", "--workers", "0", "--decode-timeout", "1", "--out", out,
        cwd=tmp_path,
    )  # fmt: skip
    try:
        _stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, stderr  # one item failed, the batch went on
    rows = {r["video_id"]: r for r in _rows(out)}
    assert "took longer than 1s" in rows[str(hang)]["error"]
    assert rows[str(good)]["error"] is None and rows[str(good)]["frame_indices"]
    assert "sample finished: items 2, ok 1, failed 1" in stderr  # stderr is not left silenced


@pytest.mark.parametrize(
    "bad",
    [{"workers": -1}, {"prefetch": 0}, {"decode_timeout_s": 0}, {"decode_timeout_s": float("nan")}, {"decode_timeout_s": float("inf")}],
)  # fmt: skip
def test_run_options_refuse_what_prefetch_cannot_run(bad: dict) -> None:
    """Library callers get a one-line usage error up front, not a ValueError (or an OverflowError for
    an infinite timeout) from inside the decode pool after the output was opened."""
    from mlbcli.api import RunOptions
    from mlbcli.errors import UsageError

    with pytest.raises(UsageError):
        RunOptions(**bad)
    assert RunOptions(workers=0, decode_timeout_s=None).decode_timeout_s is None  # library: no limit
