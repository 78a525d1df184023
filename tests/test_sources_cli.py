"""End-to-end: every input becomes exactly one row, whatever its name or its manifest line holds."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlbcli.cli.app import app
from mlbcli.io.writers import read_results

SAMPLE = ["--frames", "4", "--workers", "0", "-q"]


def run(args: list, input: bytes | str | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], input=input, catch_exceptions=False)


def rows(path: Path) -> list[dict]:
    return read_results(path).to_pylist()


@pytest.fixture()
def clip(clips_dir: Path) -> Path:
    return clips_dir / "a.mp4"


def test_two_folders_with_the_same_file_names_keep_both_rows(clip: Path, tmp_path: Path) -> None:
    for cam in ("gate", "yard"):
        (tmp_path / "cams" / cam).mkdir(parents=True)
        shutil.copy(clip, tmp_path / "cams" / cam / "2026-11-20.mp4")
    out = tmp_path / "s.parquet"
    assert run(["sample", "cams/gate", "cams/yard", "--out", out, *SAMPLE]).exit_code == 0
    assert sorted(r["video_id"] for r in rows(out)) == [
        "cams/gate/2026-11-20.mp4",
        "cams/yard/2026-11-20.mp4",
    ]


def test_undecodable_names_and_link_loops_are_rows_and_the_batch_goes_on(clip: Path, tmp_path: Path) -> None:
    folder = tmp_path / "nu"
    folder.mkdir()
    shutil.copy(clip, folder / "aa_ok.mp4")
    shutil.copy(clip, folder / "zz_ok.mp4")
    try:
        shutil.copy(clip, os.fsencode(folder) + b"/bad\xff\xfename.mp4")
        Path(os.fsdecode(os.fsencode(folder) + b"/broken\xff.mp4")).write_bytes(b"not a video")
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    os.symlink("selfloop.mp4", folder / "selfloop.mp4")
    out = tmp_path / "nu.parquet"
    assert run(["sample", "nu", "--out", out, *SAMPLE]).exit_code == 1  # two items failed, none crashed
    by_id = {r["video_id"]: r for r in rows(out)}
    assert sorted(by_id) == [
        "aa_ok.mp4",
        "bad\\xff\\xfename.mp4",
        "broken\\xff.mp4",
        "selfloop.mp4",
        "zz_ok.mp4",
    ]
    assert by_id["bad\\xff\\xfename.mp4"]["error"] is None  # opened by its real name
    assert by_id["bad\\xff\\xfename.mp4"]["video_path"].endswith("nu/bad\\xff\\xfename.mp4")
    assert "broken\\xff.mp4" in by_id["broken\\xff.mp4"]["error"]  # the decoder's message, escaped
    assert by_id["selfloop.mp4"]["error"] == "path is a symbolic link loop"

    piped = tmp_path / "piped.parquet"
    lines = b"nu/aa_ok.mp4\nnu/bad\xff\xfename.mp4\nnu/selfloop.mp4\nnu/zz_ok.mp4\n"
    assert run(["sample", "-", "--out", piped, *SAMPLE], input=lines).exit_code == 1
    assert [(r["video_id"], r["error"] is None) for r in sorted(rows(piped), key=lambda r: r["origin"])] == [
        ("nu/aa_ok.mp4", True),
        ("nu/bad\\xff\\xfename.mp4", True),
        ("nu/selfloop.mp4", False),
        ("nu/zz_ok.mp4", True),
    ]


def _manifest_with_broken_lines(folder: Path, clip: Path) -> Path:
    shutil.copy(clip, folder / "v.mp4")
    manifest = folder / "m.jsonl"
    manifest.write_bytes(
        b'{"video": "v.mp4", "question": "Q1?", "options": "A|B"}\n'  # JSONL options must be a list
        b'{"video": "v.mp4", "question": "Q2?"}\n'
        b'{"video": "v.mp4", "question": "Q3?", "options": [["x"]]}\n'
        b'{"video": "v\xff.mp4", "question": "Q4?"}\n'
        b'{"video": "v.mp4\\u0000", "question": "Q5?"}\n'
    )
    return manifest


def test_answer_gives_each_broken_manifest_line_its_own_row(
    tiny_model_dir, clip: Path, tmp_path: Path
) -> None:
    manifest = _manifest_with_broken_lines(tmp_path, clip)
    out = tmp_path / "a.parquet"
    args = ["answer", manifest, "--model", tiny_model_dir, "--out", out, "--max-new-tokens", "2", *SAMPLE]
    assert run(args).exit_code == 1
    table = sorted(rows(out), key=lambda r: r["origin"])
    assert [r["origin"].rsplit(":", 1)[1] for r in table] == ["1", "2", "3", "4", "5"]
    assert [r["error"] is None for r in table] == [False, True, False, False, False]


def test_sample_gives_each_broken_manifest_line_its_own_row(clip: Path, tmp_path: Path) -> None:
    _manifest_with_broken_lines(tmp_path, clip)
    out = tmp_path / "s.parquet"
    assert run(["sample", "m.jsonl", "--out", out, *SAMPLE]).exit_code == 1  # the working folder is tmp_path
    table = sorted(rows(out), key=lambda r: r["origin"])
    # One row per video (v.mp4, from line 2) and one per broken line, keyed by the line.
    assert [(r["video_id"], r["error"] is None) for r in table] == [
        ("m.jsonl:1", False),
        ("v.mp4", True),
        ("m.jsonl:3", False),
        ("m.jsonl:4", False),
        ("m.jsonl:5", False),
    ]


def test_an_empty_manifest_is_reported_as_empty(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "m.jsonl").write_text("")
    result = run(["sample", "m.jsonl", "--out", tmp_path / "s.parquet", *SAMPLE])
    assert result.exit_code == 2
    assert "m.jsonl: the manifest is empty (no rows)" in caplog.text


def test_a_jsonl_manifest_without_video_column_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "m.jsonl").write_text(json.dumps({"path": "a.mp4", "question": "Q?"}) + "\n")
    result = run(["sample", "m.jsonl", "--out", tmp_path / "s.parquet", *SAMPLE])
    assert result.exit_code == 2 and "manifest has no 'video' column" in result.output
    assert not (tmp_path / "s.parquet").exists()
