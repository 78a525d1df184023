"""Operator defects of issue 22: error rows, lock files, injective ids, disk-full and stop counts,
manifest messages."""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import signal
from pathlib import Path

import pytest
from helpers_process import SummaryCollector

import mlbcli.io.writers as writers
from mlbcli import api
from mlbcli.errors import MlbError
from mlbcli.io.video import make_test_video
from mlbcli.io.writers import ResultWriter, read_results
from mlbcli.runners.progress import TqdmReporter, summary_text
from mlbcli.runners.signals import Interrupted
from mlbcli.runners.summary import stopped_text, summary_of


@pytest.fixture()
def clips(clips_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(clips_dir, tmp_path / "clips"))


def test_error_rows_of_videos_never_decoded_have_null_frames(tiny_model_dir, clips, tmp_path):
    # Issue 22: the error row of an undecodable video said frames=4 (the request), not null.
    (clips / "broken.mp4").write_bytes(b"not a video")
    out = tmp_path / "a.parquet"
    run = api.RunOptions(out=str(out), workers=0)
    api.answer([str(clips)], question="What?", model=str(tiny_model_dir), frames=4, run=run)
    rows = {r["video_id"]: r for r in read_results(out).to_pylist()}
    assert rows["broken.mp4"]["error"] and rows["broken.mp4"]["frames"] is None
    assert rows["a.mp4"]["error"] is None and rows["a.mp4"]["frames"] == 4


def test_a_byte_name_and_its_escaped_spelling_each_get_a_row(clips, tmp_path):
    # Issue 22: both names mapped to the id "n\xff.mp4" and the whole batch was refused (exit 2).
    raw = os.fsencode(clips) + b"/n\xff.mp4"
    try:
        shutil.copy(clips / "a.mp4", raw)
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    shutil.copy(clips / "b.mp4", clips / "n\\xff.mp4")  # the four characters \xff
    out = tmp_path / "s.parquet"
    run = api.RunOptions(out=str(out), workers=0)
    first = api.sample([str(clips)], frames=4, run=run)
    assert (first.ok, first.failed) == (5, 0)
    again = api.sample([str(clips)], frames=4, run=run)  # ids are stable: both resume
    assert again.skipped == 5 and again.ok == 0
    ids = sorted(r["video_id"] for r in read_results(out).to_pylist() if r["video_id"].startswith("n"))
    assert ids == ["n\\\\xff.mp4", "n\\xff.mp4"]


def _manifest(folder: Path, count: int, name: str) -> str:
    lines = [
        {"video": f"c{i}.mp4", "question": "Q?", "options": ["a", "b"], "answer": "A"} for i in range(count)
    ]
    path = folder / name
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return str(path)


def test_counts_after_a_disk_full_stop_are_the_committed_rows(tiny_model_dir, tmp_path, monkeypatch):
    # Issue 22: after the disk filled, `graded` (and the accuracy) were the OLD file's (3 rows), next to
    # "ok 2" for this run's committed rows.
    for i in range(6):
        make_test_video(tmp_path / f"c{i}.mp4", num_frames=8, seed=i)
    out = tmp_path / "a.parquet"
    run = api.RunOptions(out=str(out), workers=0)
    first = api.answer([_manifest(tmp_path, 3, "m3.jsonl")], model=str(tiny_model_dir), run=run)
    assert first.graded == 3
    real_init = ResultWriter.__init__
    monkeypatch.setattr(
        ResultWriter, "__init__", lambda self, *a, **k: real_init(self, *a, **{**k, "flush_every": 1})
    )
    real_write, calls = writers.pq.write_table, [0]

    def write_table(*args, **kwargs):
        calls[0] += 1
        if calls[0] >= 3:  # two parts of one row commit, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(*args, **kwargs)

    monkeypatch.setattr(writers.pq, "write_table", write_table)
    reporter = SummaryCollector()
    with pytest.raises(MlbError, match=r"2 row\(s\) of this run are committed"):
        api.answer(
            [_manifest(tmp_path, 6, "m6.jsonl")], model=str(tiny_model_dir), run=run, reporter=reporter
        )
    (summary,) = reporter.finished
    assert (summary.total, summary.skipped, summary.ok, summary.failed) == (6, 3, 2, 0)
    assert summary.graded == 2 and summary.file_score is None


class _StopAfter(SummaryCollector):
    """Stops the run like SIGTERM once `rows` rows were handed to the writer."""

    def __init__(self, rows: int) -> None:
        super().__init__()
        self.rows = rows

    def advance(self, row) -> None:
        self.rows -= 1
        if self.rows == 0:
            raise Interrupted(signal.SIGTERM)


def test_a_stopped_run_says_how_many_items_were_committed_and_how_many_not_done(clips, tmp_path):
    # Issue 22: the last line on SIGTERM said nothing of what was committed, nor of what was not done.
    out = tmp_path / "s.parquet"
    run = api.RunOptions(out=str(out), workers=0)
    reporter = _StopAfter(1)
    with pytest.raises(KeyboardInterrupt) as caught:
        api.sample([str(clips)], frames=4, run=run, reporter=reporter)
    summary = summary_of(caught.value)
    assert summary is not None and summary is reporter.finished[0]
    assert (summary.committed, summary.not_done) == (1, 2) and len(read_results(out)) == 1
    text = stopped_text(caught.value)
    assert text == "1 item(s) committed, 2 not done; finished rows are saved, rerun to resume"
    assert summary_text(summary).endswith(
        f"skipped (resume) 0, not done 2, time {summary.seconds:.1f}s, output {out}"
    )
    resumed = _StopAfter(1)  # the next run skips the committed row and stops after one more
    with pytest.raises(KeyboardInterrupt) as caught:
        api.sample([str(clips)], frames=4, run=run, reporter=resumed)
    assert stopped_text(caught.value).startswith("1 item(s) committed, 1 not done;")
    done = api.sample([str(clips)], frames=4, run=run)
    assert (done.skipped, done.ok, done.not_done) == (2, 1, 0) and len(read_results(out)) == 3
    assert "not done" not in summary_text(done)
    assert stopped_text(KeyboardInterrupt()) == "finished rows are saved, rerun to resume"


def test_tqdm_reporter_shows_library_runs(clips, tmp_path):
    # Issue 22: library calls showed no progress; tqdm was a declared dependency nothing used.
    (clips / "broken.mp4").write_bytes(b"not a video")
    stream = io.StringIO()
    run = api.RunOptions(out=str(tmp_path / "s.parquet"), workers=0)
    reporter = TqdmReporter(file=stream)
    summary = api.sample([str(clips)], frames=4, run=run, reporter=reporter)
    assert (summary.ok, summary.failed) == (3, 1) and reporter.bar is None  # closed
    text = stream.getvalue()
    assert "sample" in text and "4/4" in text and "1 failed" in text
    assert "error: broken.mp4 (" in text
    again = io.StringIO()
    api.sample([str(clips)], frames=4, run=run, reporter=TqdmReporter(file=again))
    assert "1/1" in again.getvalue() and "3 already done, skipped" in again.getvalue()


def test_library_runs_show_a_tqdm_bar_unless_progress_is_off(clips, tmp_path, capsys):
    # Issue 22: a notebook's `api.sample(...)` showed no progress; the CLI passes its own reporter.
    api.sample([str(clips)], frames=4, run=api.RunOptions(out=str(tmp_path / "a.parquet"), workers=0))
    assert "sample" in capsys.readouterr().err  # the bar, on stderr
    api.sample(
        [str(clips)], frames=4, run=api.RunOptions(out=str(tmp_path / "b.parquet"), workers=0), progress=False
    )
    assert capsys.readouterr().err == ""
