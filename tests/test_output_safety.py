"""Output-side data safety through the API and the CLI (issue 13): resume checks, naming, saved tokens,
unwritable outputs and disk-full reporting."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from helpers_process import SummaryCollector
from typer.testing import CliRunner

import mlbcli.io.writers as writers
from mlbcli import api
from mlbcli.cli.app import app
from mlbcli.errors import MlbError, UsageError
from mlbcli.io.naming import safe_name
from mlbcli.io.writers import ResultWriter, read_results

FAST = ["--workers", "0", "-q"]


def run(args: list) -> object:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture()
def clips(clips_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(clips_dir, tmp_path / "clips"))


def frames_per_row(path: Path, fmt: str | None = None) -> list[int]:
    return sorted(len(r["frame_indices"]) for r in read_results(path, fmt).to_pylist())


def _parts_every(monkeypatch: pytest.MonkeyPatch, rows: int) -> None:
    """Commit a part every `rows` rows (the CLI commits every 16, more than these tests have)."""
    real_init = ResultWriter.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **{**kwargs, "flush_every": rows})

    monkeypatch.setattr(ResultWriter, "__init__", init)


# ------------------------------------------------------------------------------- resume configuration


def test_resume_after_a_killed_overwrite_checks_the_overwrite_runs_options(clips, tmp_path, monkeypatch):
    # R4: the config check read the superseded final file, so resuming with the OLD options was accepted
    # and merged old-option rows onto the overwrite run's parts.
    out = tmp_path / "s.parquet"
    api.sample([str(clips)], frames=4, run=api.RunOptions(out=str(out), workers=0))
    with monkeypatch.context() as m:
        _parts_every(m, 1)

        def killed(self, *exc_info):  # like SIGKILL: committed parts stay, no merge; the kernel drops flock
            self._closed = True
            self._release_lock()

        m.setattr(ResultWriter, "__exit__", killed)
        api.sample([str(clips)], frames=6, run=api.RunOptions(out=str(out), workers=0, overwrite=True))
    assert frames_per_row(out) == [4, 4, 4]  # the old file is still there, superseded by the parts
    with pytest.raises(UsageError, match=r"unfinished parts .* \(frames 6 -> 4\)"):
        api.sample([str(clips)], frames=4, run=api.RunOptions(out=str(out), workers=0))
    summary = api.sample([str(clips)], frames=6, run=api.RunOptions(out=str(out), workers=0))
    assert summary.skipped == 3 and frames_per_row(out) == [6, 6, 6]


def test_unknown_suffix_with_format_keeps_the_config_check_and_resumes(clips, tmp_path):
    # R5: with no suffix the check silently passed (mixed 4- and 8-frame rows); with .txt the resume
    # failed with "cannot tell the output format" although --format was given.
    res = tmp_path / "res"
    assert (
        run(["sample", clips / "a.mp4", "--frames", 4, "--out", res, "--format", "csv", *FAST]).exit_code == 0
    )
    mixed = run(["sample", clips, "--frames", 8, "--out", res, "--format", "csv", *FAST])
    assert mixed.exit_code == 2 and "frames 4 -> 8" in mixed.output
    assert frames_per_row(res, "csv") == [4]

    txt = tmp_path / "res.txt"
    first = ["sample", clips, "--frames", 4, "--out", txt, "--format", "jsonl", *FAST]
    assert run(first).exit_code == 0
    again = run(first)
    assert again.exit_code == 0, again.output
    assert frames_per_row(txt, "jsonl") == [4, 4, 4]


def test_format_contradicting_the_suffix_is_exit_2(clips, tmp_path):
    # F4: `--out results.csv --format parquet` wrote Parquet named .csv.
    out = tmp_path / "results.csv"
    result = run(["sample", clips / "a.mp4", "--out", out, "--format", "parquet", *FAST])
    assert result.exit_code == 2 and "contradicts" in result.output
    assert not out.exists()


# ------------------------------------------------------------------------------------------- naming


def _old_name(video_id: str) -> str:
    """The rule before mlbcli.io.naming: 80 readable characters + 8 hex digits (32 bits)."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", video_id).strip("_")[:80] or "video"
    return f"{readable}-{hashlib.sha1(video_id.encode()).hexdigest()[:8]}"


def _colliding_ids() -> tuple[str, str]:
    """Two ids sharing a long folder prefix whose old names collide (a birthday search, ~0.2 s)."""
    prefix = "site-berlin/camera-0042/" + "archive/" * 9
    seen: dict[str, str] = {}
    for n in range(1_000_000):
        video_id = f"{prefix}clip-{n:07d}.mp4"
        name = _old_name(video_id)
        if name in seen:
            return seen[name], video_id
        seen[name] = video_id
    raise AssertionError("no collision found")  # pragma: no cover - 1e6 draws of 2**32 make one certain


def test_names_of_ids_sharing_a_long_prefix_never_collide():
    from mlbcli.io.bias_report import report_name
    from mlbcli.io.tokens import tokens_path

    first, second = _colliding_ids()
    assert safe_name(first) != safe_name(second)
    assert report_name(first) != report_name(second)  # --bias-report
    assert tokens_path("t", first) != tokens_path("t", second)  # --save-tokens
    assert report_name("a#1") != report_name("a", "1")
    name = safe_name(first, ".jpg")
    assert name.endswith(f"-{hashlib.sha1(first.encode()).hexdigest()}.jpg")  # the FULL digest
    assert name.startswith("site-berlin_camera-0042_archive_")  # and a readable prefix
    assert safe_name("a#1") != safe_name("a", question_id="1")
    for hostile in ("../../dir/pwned", "/etc/x", "..", "-rf", "x" * 5000, "bad\udcff\udcfename.mp4"):
        name = safe_name(hostile, ".png")
        assert "/" not in name and not name.startswith((".", "-")) and len(name) < 200


def test_contact_sheets_of_colliding_ids_are_distinct_files(clips, tmp_path):
    # R9: both rows pointed to one JPEG, which showed the second video.
    first, second = _colliding_ids()
    root = tmp_path / "deep"
    for video_id, clip in ((first, "a.mp4"), (second, "b.mp4")):
        (root / video_id).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(clips / clip, root / video_id)
    sheets, out = tmp_path / "sheets", tmp_path / "s.parquet"
    result = run(["sample", root, "--frames", 4, "--contact-sheet", sheets, "--out", out, *FAST])
    assert result.exit_code == 0, result.output
    rows = read_results(out).to_pylist()
    assert len({r["contact_sheet"] for r in rows}) == 2 and len(list(sheets.iterdir())) == 2


# ------------------------------------------------------------------------------------- saved tokens


def _fake_tokens_file(path: Path, video_id: str, video_path: Path, model: str) -> None:
    import torch
    from safetensors.torch import save_file

    from mlbcli.io.sources import fingerprint

    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "format_version": "1",
        "model": model,
        "video_id": video_id,
        "video_path": str(video_path),
        "fingerprint": fingerprint(video_path),
        "shape": "[1, 4, 8]",
        "grid": "[2, 2]",
        "frames": "1",
        "timestamps_s": "[0.0]",
        "reduced": "false",
        "method": "none",
        "keep": "1.0",
    }
    save_file({"features": torch.zeros(1, 4, 8)}, str(path), metadata=metadata)


def test_saved_tokens_of_another_video_are_never_used(clips, tmp_path, caplog):
    # R9: two videos sharing a file name (a collision, or a copy), with equal size and mtime: the loader
    # never compared the stored video_id, so video B was answered with video A's tokens.
    from mlbcli.engine.saved_tokens import load_video_tokens
    from mlbcli.io.sources import Item
    from mlbcli.io.tokens import tokens_path

    folder = tmp_path / "tok"
    twin = clips / "twin.mp4"
    shutil.copy2(clips / "a.mp4", twin)  # same size and mtime: same fingerprint
    item = Item("twin.mp4", str(twin), None, None, None, None, "test")
    _fake_tokens_file(tokens_path(folder, "twin.mp4"), "a.mp4", twin, "m")
    with caplog.at_level("WARNING"):
        assert load_video_tokens(folder, item, "m") is None
    assert "holds the tokens of video 'a.mp4'" in caplog.text
    _fake_tokens_file(tokens_path(folder, "twin.mp4"), "twin.mp4", twin, "m")
    assert load_video_tokens(folder, item, "m") is not None  # its own file is used
    assert load_video_tokens(folder, item, "other-model") is None  # the model check stays


def test_token_folders_of_an_older_mlb_still_load(clips, tmp_path):
    # Files named by the old rule (32-bit hash) are still found; the video_id check makes that safe.
    from mlbcli.engine.saved_tokens import load_video_tokens
    from mlbcli.io.sources import Item

    video = clips / "a.mp4"
    item = Item("a.mp4", str(video), None, None, None, None, "test")
    _fake_tokens_file(tmp_path / "tok" / f"{_old_name('a.mp4')}.safetensors", "a.mp4", video, "m")
    saved = load_video_tokens(tmp_path / "tok", item, "m")
    assert saved is not None and saved.metadata["video_id"] == "a.mp4"


@pytest.fixture(scope="module")
def saved_tokens(tiny_model_dir: Path, clips_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tokens of a.mp4 saved by `compress --frames 6 --save-tokens`, under umask 022."""
    folder = tmp_path_factory.mktemp("saved") / "tok"
    old_umask = os.umask(0o022)
    try:
        result = run(
            ["compress", clips_dir / "a.mp4", "--frames", 6, "--save-tokens", folder]
            + ["--out", folder.parent / "c.parquet", "--model", tiny_model_dir, *FAST]
        )
    finally:
        os.umask(old_umask)
    assert result.exit_code == 0, result.output
    return folder


def test_saved_token_files_get_normal_permissions(saved_tokens):
    # F11/R15: token files were mode 0600, so a shared --tokens folder was unreadable for others.
    (saved,) = saved_tokens.iterdir()
    assert saved.stat().st_mode & 0o777 == 0o644


def _answer_with_tokens(model: Path, clips: Path, tokens: Path, out: Path, *extra) -> dict:
    args = ["answer", clips / "a.mp4", "--question", "q", "--max-new-tokens", 2, "--tokens", tokens]
    result = run([*args, "--out", out, "--model", model, *extra, *FAST])
    assert result.exit_code in (0, 1), result.output
    (row,) = read_results(out).to_pylist()
    return row


def test_frames_that_disagree_with_saved_tokens_are_an_error_row(
    tiny_model_dir, clips_dir, saved_tokens, tmp_path
):
    # U10: `--frames 4` was silently replaced by the 6 saved frames (row: frames 6, options_json frames 4).
    same = _answer_with_tokens(
        tiny_model_dir, clips_dir, saved_tokens, tmp_path / "same.parquet", "--frames", 6
    )
    assert same["error"] is None and same["encode_s"] == 0.0 and same["frames"] == 6
    default = _answer_with_tokens(tiny_model_dir, clips_dir, saved_tokens, tmp_path / "default.parquet")
    assert default["error"] is None and default["encode_s"] == 0.0  # no --frames: saved frames are used
    other = _answer_with_tokens(
        tiny_model_dir, clips_dir, saved_tokens, tmp_path / "o.parquet", "--frames", 4
    )
    assert other["error"] and "--frames 4" in other["error"] and "6 frame(s)" in other["error"]
    # issue 22: the model got no frames (the request is in options_json)
    assert json.loads(other["options_json"])["frames"] == 4 and other["frames"] is None


def test_missing_tokens_folder_is_exit_2(tiny_model_dir, clips_dir, tmp_path):
    # U10: a mistyped --tokens folder was silently ignored (everything decoded, exit 0).
    missing = run(
        ["answer", clips_dir / "a.mp4", "--question", "q", "--tokens", tmp_path / "nosuchdir"]
        + ["--out", tmp_path / "m.parquet", "--model", tiny_model_dir, *FAST]
    )
    assert missing.exit_code == 2 and "--tokens" in missing.output and "does not exist" in missing.output
    assert not (tmp_path / "m.parquet").exists()


# --------------------------------------------------------------------------- unwritable, disk full


def test_output_under_a_regular_file_is_exit_2(clips, tmp_path):
    # U3: was a FileExistsError traceback and exit 1.
    (tmp_path / "afile").write_text("x")
    result = run(["sample", clips / "a.mp4", "--out", tmp_path / "afile" / "x.parquet", *FAST])
    assert result.exit_code == 2
    assert result.output.startswith("mlb: error: cannot write the output") and "is a file" in result.output


def test_summary_counts_only_committed_rows_when_the_disk_fills(clips, tmp_path, monkeypatch):
    # R8: "ok 31" was reported while only 16 rows reached disk, then a traceback.
    _parts_every(monkeypatch, 2)
    real = writers.pq.write_table
    calls = [0]

    def write_table(*args, **kwargs):
        calls[0] += 1
        if calls[0] >= 2:  # the first part (2 rows) commits, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, **kwargs)

    monkeypatch.setattr(writers.pq, "write_table", write_table)
    out = tmp_path / "s.parquet"
    reporter = SummaryCollector()
    with pytest.raises(MlbError, match=r"No space left on device.*2 row\(s\) of this run are committed"):
        api.sample([str(clips)], frames=4, run=api.RunOptions(out=str(out), workers=0), reporter=reporter)
    (summary,) = reporter.finished
    assert (summary.ok, summary.failed, summary.total) == (2, 0, 3)

    calls[0] = 0
    result = run(["sample", clips, "--frames", 4, "--out", tmp_path / "cli.parquet", "--workers", "0"])
    assert result.exit_code == 1
    assert "ok 2" in result.output and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1].startswith("mlb: error: cannot write")
