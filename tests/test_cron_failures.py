"""Cron memory: `summarize` skips a video that failed and has not changed since; --retry-failed retries.

The memory is the output file itself: a video's last row is an error row with its fingerprint (size and
mtime), so an unchanged broken video is skipped, and an edited or replaced one gets a new key and runs.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlbcli import api
from mlbcli.cli.app import app
from mlbcli.io.writers import read_results


@pytest.fixture
def camera(clips_dir: Path, tmp_path: Path) -> Path:
    """A folder with one good clip and one truncated (undecodable) one."""
    folder = tmp_path / "camera"
    folder.mkdir()
    shutil.copy(clips_dir / "a.mp4", folder / "good.mp4")
    (folder / "broken.mp4").write_bytes((clips_dir / "b.mp4").read_bytes()[:400])
    return folder


def summarize(camera: Path, model: Path, *extra: str):
    args = ["summarize", camera, "--model", model, "-o", camera.parent / "s.parquet", "-q", *extra]
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def error_rows(camera: Path) -> list[dict]:
    rows = read_results(camera.parent / "s.parquet").to_pylist()
    return [row for row in rows if row["error"]]


def test_an_unchanged_failure_is_skipped_and_counted(camera, tiny_model_dir):
    first = summarize(camera, tiny_model_dir)
    assert first.exit_code == 1 and "broken.mp4" in first.stderr
    [failed] = error_rows(camera)
    second = summarize(camera, tiny_model_dir)
    assert second.exit_code == 0, second.stderr
    assert "error:" not in second.stderr  # not tried again
    assert "skipped (failed before, unchanged; --retry-failed) 1" in second.stderr
    assert error_rows(camera) == [failed]  # the remembered row stays, unchanged


def test_retry_failed_tries_again_and_a_changed_video_is_tried_anyway(camera, tiny_model_dir):
    summarize(camera, tiny_model_dir)
    retried = summarize(camera, tiny_model_dir, "--retry-failed")
    assert retried.exit_code == 1 and "error: broken.mp4" in retried.stderr
    assert "failed before" not in retried.stderr
    broken = camera / "broken.mp4"
    stat = broken.stat()
    os.utime(broken, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # edited: a new fingerprint
    changed = summarize(camera, tiny_model_dir)
    assert changed.exit_code == 1 and "error: broken.mp4" in changed.stderr
    assert len(error_rows(camera)) == 1  # the new failure replaced the old row


def test_the_library_counts_skipped_failures(camera, tiny_model_dir):
    run = api.RunOptions(out=str(camera.parent / "lib.parquet"))
    first = api.summarize([str(camera)], model=str(tiny_model_dir), run=run, progress=False)
    assert (first.ok, first.failed, first.skipped_failed) == (1, 1, 0)
    again = api.summarize([str(camera)], model=str(tiny_model_dir), run=run, progress=False)
    assert (again.ok, again.failed, again.skipped, again.skipped_failed, again.not_done) == (0, 0, 1, 1, 0)
    retry = api.summarize(
        [str(camera)], model=str(tiny_model_dir), run=run, progress=False, retry_failed=True
    )
    assert (retry.failed, retry.skipped_failed) == (1, 0)
