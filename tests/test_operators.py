"""Operator defects of issue 22: error rows, lock files, injective ids, disk-full and stop counts,
manifest messages."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from mlbcli import api
from mlbcli.io.writers import read_results


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
