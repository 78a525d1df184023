"""CLI sources -> work items: folders, manifests (jsonl/csv/parquet), stdin, errors, stable ids."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlbcli.errors import UsageError
from mlbcli.sources import Item, fingerprint, group_by_video, iter_items, question_id_for


def _touch(path: Path) -> Path:
    """Sources never open videos, so empty files with video names are enough here."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00")
    return path


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """videos/ with nested, hidden and non-video files; the working folder is tmp_path."""
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "videos"
    for rel in ["b.mp4", "a.MKV", "sub/c.webm", "sub/deeper/d.mov", "z/e.gif"]:
        _touch(root / rel)
    for rel in ["notes.txt", "sub/readme.md", ".hidden.mp4", ".cache/x.mp4", "sub/.git/y.mp4"]:
        _touch(root / rel)
    return tmp_path


def _items(sources: list[str], **kwargs) -> list[Item]:
    kwargs.setdefault("require_question", False)
    return list(iter_items(sources, **kwargs))


# --------------------------------------------------------------------------------------------------
# Folders, files, stdin
# --------------------------------------------------------------------------------------------------


def test_folder_is_recursive_filtered_sorted_and_skips_hidden(tree: Path) -> None:
    items = _items(["videos"])
    assert [i.video_id for i in items] == ["a.MKV", "b.mp4", "sub/c.webm", "sub/deeper/d.mov", "z/e.gif"]
    assert all(i.origin == "videos" and i.error is None for i in items)
    assert items[2].video_path == str((tree / "videos/sub/c.webm").resolve())
    assert all(os.path.isabs(i.video_path) for i in items)
    assert all(i.question is None and i.question_id is None and i.options is None for i in items)


def test_video_file_ids_are_the_normalised_path_as_given(tree: Path) -> None:
    items = _items(["./videos//sub/c.webm", str(tree / "videos" / "b.mp4")])
    assert items[0].video_id == "videos/sub/c.webm"
    assert items[0].origin == "./videos//sub/c.webm"
    assert items[1].video_id == (tree / "videos" / "b.mp4").as_posix()


def test_stdin_paths(tree: Path) -> None:
    stdin = io.StringIO("videos/b.mp4\n\n   \nvideos/sub/c.webm\n")
    items = _items(["-"], stdin=stdin)
    assert [(i.video_id, i.origin) for i in items] == [
        ("videos/b.mp4", "stdin:1"),
        ("videos/sub/c.webm", "stdin:4"),
    ]
    assert items[1].video_path == str((tree / "videos/sub/c.webm").resolve())


def test_stdin_only_once(tree: Path) -> None:
    with pytest.raises(UsageError, match="only once"):
        _items(["-", "videos", "-"], stdin=io.StringIO(""))


def test_mixed_sources_keep_source_order(tree: Path) -> None:
    manifest = tree / "m.jsonl"
    manifest.write_text(json.dumps({"video": "videos/b.mp4", "question": "Q?"}) + "\n")
    items = _items(["videos/z", "-", str(manifest), "videos/a.MKV"], stdin=io.StringIO("videos/sub/c.webm\n"))
    assert [i.video_id for i in items] == ["e.gif", "videos/sub/c.webm", "videos/b.mp4", "videos/a.MKV"]
    assert [i.origin for i in items] == ["videos/z", "stdin:1", f"{manifest}:1", "videos/a.MKV"]


def test_bad_sources_are_usage_errors_before_any_item(tree: Path) -> None:
    (tree / "notes.txt").write_text("x")
    bad = [
        (["videos", "missing.mp4"], "not found"),
        (["videos", "notes.txt"], "not a video or a manifest"),
        ([], "no sources"),
    ]
    for sources, message in bad:
        it = iter_items(sources, require_question=False)
        with pytest.raises(UsageError, match=message):
            next(it)  # checked up front: the good first source yields nothing before the error


# --------------------------------------------------------------------------------------------------
# Manifests
# --------------------------------------------------------------------------------------------------


def _rows() -> list[dict]:
    return [
        {
            "video": "../videos/b.mp4",
            "question": "What colour is the disc?",
            "options": ["red", "yellow"],
            "answer": "B",
        },
        {"video": "../videos/sub/c.webm", "video_id": "clip-c", "question_id": "q7", "question": "Where?"},
        {"video": "../videos/a.MKV"},
    ]


def _check_manifest_items(items: list[Item], manifest: Path, tree: Path) -> None:
    assert [i.video_id for i in items] == ["../videos/b.mp4", "clip-c", "../videos/a.MKV"]
    # Relative video paths resolve against the manifest's folder, not the working folder.
    assert items[0].video_path == str((tree / "videos/b.mp4").resolve())
    assert items[0].options == ("red", "yellow") and items[0].answer == "B"
    assert items[0].question_id == question_id_for("What colour is the disc?", ["red", "yellow"])
    assert items[1].question_id == "q7" and items[1].options is None
    assert items[2].question == "Describe." and items[2].question_id == question_id_for("Describe.", None)
    assert all(i.error is None for i in items)


def test_jsonl_manifest(tree: Path) -> None:
    manifest = tree / "lists" / "m.jsonl"
    manifest.parent.mkdir()
    manifest.write_text("\n".join(json.dumps(r) for r in _rows()) + "\n\n")
    items = _items([str(manifest)], default_question="Describe.")
    _check_manifest_items(items, manifest, tree)
    assert [i.origin for i in items] == [f"{manifest}:{n}" for n in (1, 2, 3)]


def test_csv_manifest_with_json_and_pipe_options(tree: Path) -> None:
    manifest = tree / "lists" / "m.csv"
    manifest.parent.mkdir()
    manifest.write_text(
        "\ufeffvideo,video_id,question_id,question,options,answer\n"  # a BOM, as spreadsheets write
        '../videos/b.mp4,,,What colour is the disc?,"[""red"", ""yellow""]",B\n'
        "../videos/sub/c.webm,clip-c,q7,Where?,,\n"
        "../videos/a.MKV,,,,,\n"
        "../videos/z/e.gif,,,Which?, up | down ,\n"
    )
    items = _items([str(manifest)], default_question="Describe.")
    _check_manifest_items(items[:3], manifest, tree)
    assert items[3].options == ("up", "down")
    assert [i.origin.rsplit(":", 1)[1] for i in items] == ["2", "3", "4", "5"]  # file line numbers


def test_parquet_manifest(tree: Path) -> None:
    manifest = tree / "lists" / "m.parquet"
    manifest.parent.mkdir()
    rows = _rows()
    table = pa.table(
        {
            "video": [r["video"] for r in rows],
            "video_id": [r.get("video_id") for r in rows],
            "question_id": [r.get("question_id") for r in rows],
            "question": [r.get("question") for r in rows],
            "options": pa.array([r.get("options") for r in rows], type=pa.list_(pa.string())),
            "answer": [r.get("answer") for r in rows],
        }
    )
    pq.write_table(table, manifest)
    items = _items([str(manifest)], default_question="Describe.")
    _check_manifest_items(items, manifest, tree)


def test_manifest_without_video_column_is_a_usage_error(tree: Path) -> None:
    csv_manifest = tree / "bad.csv"
    csv_manifest.write_text("path,question\nvideos/b.mp4,Q?\n")
    pq.write_table(pa.table({"path": ["videos/b.mp4"]}), tree / "bad.parquet")
    for name in ["bad.csv", "bad.parquet"]:
        with pytest.raises(UsageError, match=rf"{name}: manifest has no 'video' column"):
            _items([name])


def test_broken_manifest_lines_become_error_items_and_the_rest_continues(tree: Path) -> None:
    manifest = tree / "m.jsonl"
    manifest.write_text(
        "\n".join(
            [
                json.dumps({"video": "videos/b.mp4", "question": "ok 1"}),
                '{"video": "videos/a.MKV", "question": ',  # bad JSON
                json.dumps({"video_id": "lost", "question": "where is the video?"}),  # no video
                json.dumps({"video": "videos/z/e.gif", "options": "not a list"}),  # options must be a list
                json.dumps(["not", "an", "object"]),
                json.dumps({"video": "videos/sub/c.webm", "options": ["a", {"b": 1}]}),
                json.dumps({"video": "videos/b.mp4", "question": "ok 2"}),
            ]
        )
        + "\n"
    )
    items = list(iter_items([str(manifest)], default_question="Describe."))
    assert len(items) == 7
    good = [i for i in items if i.error is None]
    assert [i.question for i in good] == ["ok 1", "ok 2"]
    errors = {i.origin.rsplit(":", 1)[1]: i for i in items if i.error}
    assert set(errors) == {"2", "3", "4", "5", "6"}
    assert "invalid JSON" in errors["2"].error and errors["2"].video_id == "m.jsonl:2"
    assert "no 'video'" in errors["3"].error and errors["3"].video_id == "lost"  # id recovered
    assert "options" in errors["4"].error and errors["4"].video_id == "videos/z/e.gif"
    assert "JSON object" in errors["5"].error
    assert "options" in errors["6"].error
    assert all(i.error.startswith(f"{manifest}:") for i in errors.values())


def test_csv_row_with_too_many_cells_is_an_error_item(tree: Path) -> None:
    manifest = tree / "m.csv"
    manifest.write_text("video,question\nvideos/b.mp4,Q1\nvideos/a.MKV,Q2,extra\n")
    items = _items([str(manifest)])
    assert items[0].error is None and items[1].error and "cells" in items[1].error


# --------------------------------------------------------------------------------------------------
# Questions and ids
# --------------------------------------------------------------------------------------------------


def test_missing_question_is_a_usage_error_that_says_how_to_fix_it(tree: Path) -> None:
    with pytest.raises(UsageError) as info:
        list(iter_items(["videos"]))
    message = str(info.value)
    assert "a.MKV" in message and "--question" in message and "question' column" in message


def test_default_question_fills_only_missing_questions(tree: Path) -> None:
    manifest = tree / "m.jsonl"
    manifest.write_text(
        json.dumps({"video": "videos/b.mp4", "question": "Own?"})
        + "\n"
        + json.dumps({"video": "videos/a.MKV"})
    )
    items = list(iter_items([str(manifest), "videos/z"], default_question="  Default?  "))
    assert [i.question for i in items] == ["Own?", "Default?", "Default?"]


def test_question_ids_are_stable_and_depend_on_options() -> None:
    qid = question_id_for("What happens?", ["a", "b"])
    assert qid == question_id_for("What happens?", ("a", "b"))
    assert qid.startswith("q-") and len(qid) == 12
    assert qid != question_id_for("What happens?", ["b", "a"])
    assert qid != question_id_for("What happens?", None)
    # Pinned values (sha1 of question + "\x1f" + "\x1f".join(options)): resume across versions relies on them.
    assert question_id_for("What happens?", None) == "q-1b03f2a0c7"
    assert qid == "q-f40bf8f531"


def test_same_question_same_id_across_runs(tree: Path) -> None:
    first = [i.question_id for i in iter_items(["videos"], default_question="Q?")]
    second = [i.question_id for i in iter_items(["videos"], default_question="Q?")]
    assert first == second and len(set(first)) == 1


# --------------------------------------------------------------------------------------------------
# Fingerprints and grouping
# --------------------------------------------------------------------------------------------------


def test_fingerprint(tree: Path) -> None:
    path = tree / "videos" / "b.mp4"
    before = fingerprint(path)
    st = path.stat()
    assert before == f"{st.st_size}-{st.st_mtime_ns}"
    path.write_bytes(b"longer content")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert fingerprint(path) != before
    assert fingerprint(tree / "gone.mp4") == "missing"


def test_group_by_video_groups_consecutive_items_only() -> None:
    def item(path: str, q: str) -> Item:
        return Item(path, path, q, q, None, None, "test")

    items = [item("/a", "1"), item("/a", "2"), item("/b", "1"), item("/a", "3")]
    groups = list(group_by_video(items))
    assert [[i.question for i in g] for g in groups] == [["1", "2"], ["1"], ["3"]]
    assert list(group_by_video([])) == []
