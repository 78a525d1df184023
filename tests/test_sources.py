"""CLI sources -> work items: folders, manifests (jsonl/csv/parquet), stdin, errors, stable ids."""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlbcli.errors import UsageError
from mlbcli.io.sources import Item, fingerprint, group_by_video, iter_items, printable, question_id_for


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
    # With several sources, a folder's videos are named as given directly (folder + path inside it).
    assert [i.video_id for i in items] == [
        "videos/z/e.gif",
        "videos/sub/c.webm",
        "videos/b.mp4",
        "videos/a.MKV",
    ]
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
    # One rule for every format: JSONL lines that never name a video used to become error rows each.
    (tree / "bad.jsonl").write_text(
        json.dumps({"path": "videos/b.mp4"}) + "\n" + json.dumps({"path": "x"}) + "\n"
    )
    for name in ["bad.csv", "bad.parquet", "bad.jsonl"]:
        with pytest.raises(
            UsageError, match=rf"{name}: manifest has no 'video' column.*did you mean 'video'"
        ):
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


# --------------------------------------------------------------------------------------------------
# Distinct inputs, distinct keys (a batch must never lose a row to a shared key)
# --------------------------------------------------------------------------------------------------


def _keys(items: list[Item]) -> list[tuple]:
    return [(i.video_id, i.question_id) for i in items]


def test_two_folders_with_the_same_file_names_give_distinct_ids(tree: Path) -> None:
    gate, yard = _touch(tree / "cams/gate/x.mp4"), _touch(tree / "cams/yard/x.mp4")
    items = _items(["cams/gate", "./cams/yard/"])
    assert [i.video_id for i in items] == ["cams/gate/x.mp4", "cams/yard/x.mp4"]
    assert [i.video_path for i in items] == [str(gate.resolve()), str(yard.resolve())]
    assert [i.origin for i in items] == ["cams/gate", "./cams/yard/"]
    # A folder that is the only source keeps the ids it always had (paths inside it), on every run.
    assert [i.video_id for i in _items(["cams/gate"])] == ["x.mp4"]
    assert [i.video_id for i in _items(["cams/gate"])] == ["x.mp4"]


def test_file_and_folder_sources_cannot_share_an_id(tree: Path) -> None:
    here, there = _touch(tree / "x.mp4"), _touch(tree / "cams/gate/x.mp4")
    items = _items(["x.mp4", "cams/gate"])
    assert [(i.video_id, i.video_path) for i in items] == [
        ("x.mp4", str(here.resolve())),
        ("cams/gate/x.mp4", str(there.resolve())),
    ]
    # The same file reached twice (directly and through its folder, or one folder twice) is one item.
    assert [i.video_id for i in _items(["cams/gate/x.mp4", "cams/gate"])] == ["cams/gate/x.mp4"]
    assert [i.video_id for i in _items(["cams/gate", "cams/gate"])] == ["cams/gate/x.mp4"]


@pytest.mark.parametrize(
    ("lines", "clash"),
    [
        (
            [{"video": "videos/b.mp4", "video_id": "same"}, {"video": "videos/a.MKV", "video_id": "same"}],
            r"video_id 'same' names two videos \(m\.jsonl:1: .*b\.mp4; m\.jsonl:2: .*a\.MKV\)",
        ),
        (
            [
                {"video": "videos/b.mp4", "question_id": "k", "question": "Who?"},
                {"video": "videos/b.mp4", "question_id": "k", "question": "Where?"},
            ],
            r"question_id 'k' of video 'videos/b\.mp4' is used for different questions \(m\.jsonl:1 and m\.jsonl:2",
        ),
        (  # the same question twice with two different ground truths: one of the two rows would be kept
            [
                {"video": "videos/b.mp4", "question": "Q", "answer": "A"},
                {"video": "videos/b.mp4", "question": "Q"},
            ],
            r"m\.jsonl:1 and m\.jsonl:2: answer differ",
        ),
    ],
)
def test_an_id_reused_for_different_inputs_is_a_usage_error_before_any_item(tree: Path, lines, clash) -> None:
    (tree / "m.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    it = iter_items(["m.jsonl"], require_question=False)
    with pytest.raises(UsageError, match=clash):
        next(it)


def test_a_manifest_id_that_names_another_sources_video_is_a_usage_error(tree: Path) -> None:
    (tree / "lists").mkdir()
    _touch(tree / "lists/b.mp4")
    (tree / "lists/m.jsonl").write_text(json.dumps({"video": "b.mp4"}) + "\n")  # lists/b.mp4, id "b.mp4"
    _touch(tree / "b.mp4")
    with pytest.raises(
        UsageError, match=r"video_id 'b\.mp4' names two videos \(lists/m\.jsonl:1: .*; b\.mp4: "
    ):
        _items(["lists/m.jsonl", "b.mp4"])


def test_exact_repeats_are_one_item(tree: Path, caplog: pytest.LogCaptureFixture) -> None:
    row = {"video": "videos/b.mp4", "question": "Q?", "options": ["a", "b"], "answer": "A"}
    other = {**row, "question": "Other?"}
    (tree / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [row, row, other, row]))
    items = _items(["m.jsonl"])
    assert [(i.question, i.origin) for i in items] == [("Q?", "m.jsonl:1"), ("Other?", "m.jsonl:3")]
    assert "2 exact repeat(s) done once (e.g. m.jsonl:2 repeats m.jsonl:1)" in caplog.text


def test_each_broken_line_is_its_own_key(tree: Path) -> None:
    (tree / "m.jsonl").write_text(
        "\n".join(
            [
                # A string where JSONL needs a list, then an option that is not text.
                json.dumps({"video": "videos/b.mp4", "question": "Q?", "options": "A|B"}),
                json.dumps({"video": "videos/b.mp4", "question": "Q2?", "options": [["x"]]}),
                json.dumps({"video": "videos/b.mp4", "question": "Q3?"}),
                "{broken",
                "[1]",
            ]
        )
    )
    items = _items(["m.jsonl"])
    assert [bool(i.error) for i in items] == [True, True, False, True, True]
    assert len(set(_keys(items))) == 5
    broken = [i for i in items if i.error]
    assert [i.question_id for i in broken] == ["m.jsonl:1", "m.jsonl:2", "m.jsonl:4", "m.jsonl:5"]
    assert [i.video_id for i in broken] == ["videos/b.mp4", "videos/b.mp4", "m.jsonl:4", "m.jsonl:5"]


# --------------------------------------------------------------------------------------------------
# Hostile names and lines: error items (or processed), never a crash; rows get valid UTF-8 text
# --------------------------------------------------------------------------------------------------


def _utf8(item: Item) -> None:
    for text in (item.video_id, item.origin, item.error or "", printable(item.video_path)):
        text.encode("utf-8")  # what Parquet needs; raises on a surrogate escape


def test_undecodable_file_names_from_a_folder_and_stdin_are_kept_and_openable(tree: Path) -> None:
    raw = os.fsencode(tree / "videos") + b"/bad\xff\xfename.mp4"
    try:
        os.close(os.open(raw, os.O_CREAT | os.O_WRONLY))
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    folder = _items(["videos"])
    bad = [i for i in folder if i.video_id.startswith("bad")]
    assert [i.video_id for i in bad] == ["bad\\xff\\xfename.mp4"]  # visible, valid UTF-8
    assert os.path.exists(bad[0].video_path)  # the real name still opens the file
    assert printable(bad[0].video_path).endswith("videos/bad\\xff\\xfename.mp4")

    stdin = io.TextIOWrapper(io.BytesIO(b"videos/b.mp4\nvideos/bad\xff\xfename.mp4\nvideos/a.MKV\n"), "utf-8")
    items = _items(["-"], stdin=stdin)
    assert [i.video_id for i in items] == ["videos/b.mp4", "videos/bad\\xff\\xfename.mp4", "videos/a.MKV"]
    assert all(i.error is None and os.path.exists(i.video_path) for i in items)
    for item in folder + items:
        _utf8(item)


def _unescape(text: str) -> str:
    """The inverse of `printable`, read left to right (the proof that it is one to one)."""
    out, i = [], 0
    while i < len(text):
        if text.startswith("\\\\", i):
            out.append("\\")
            i += 2
        elif text.startswith("\\x", i):
            out.append(chr(0xDC00 + int(text[i + 2 : i + 4], 16)))
            i += 4
        elif text.startswith("\\u", i):
            out.append(chr(int(text[i + 2 : i + 6], 16)))
            i += 6
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def test_printable_is_one_to_one_and_keeps_ordinary_names() -> None:
    # Issue 22: the byte 0xff and the four characters "\xff" both printed as "\xff" (one id, exit 2).
    assert printable("bad\udcff.mp4") == "bad\\xff.mp4"
    assert printable("bad\\xff.mp4") == "bad\\\\xff.mp4"
    # Names written before keep their ids (resume finds their rows): no backslash, or a lone one.
    for name in ("a/b c.mp4", "caf\u00e9.mp4", "a\\b.mp4", "a\\", "x\\.mp4", "\\ab\\c"):
        assert printable(name) == name
    import random

    rng = random.Random(22)
    alphabet = ["a", "x", "u", "f", "0", "\\", "\udcff", "\udc80", "\ud800", "\u00e9"]
    seen: dict[str, str] = {}
    for _ in range(20000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6)))
        shown = printable(text)
        shown.encode("utf-8")
        assert _unescape(shown) == text
        assert seen.setdefault(shown, text) == text


def test_a_byte_name_and_its_escaped_spelling_get_their_own_items(tree: Path) -> None:
    raw = os.fsencode(tree / "videos") + b"/n\xff.mp4"
    try:
        os.close(os.open(raw, os.O_CREAT | os.O_WRONLY))
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    (tree / "videos" / "n\\xff.mp4").write_bytes(b"")  # the four characters \xff
    first = [i for i in _items(["videos"]) if i.video_id.startswith("n")]
    assert [i.video_id for i in first] == ["n\\\\xff.mp4", "n\\xff.mp4"]
    assert len({i.video_path for i in first}) == 2
    again = [i for i in _items(["videos"]) if i.video_id.startswith("n")]
    assert [i.video_id for i in again] == [i.video_id for i in first]  # stable across runs
    manifest = tree / "n.jsonl"
    manifest.write_text(json.dumps({"video": "videos/n\\xff.mp4", "question": "Q?"}) + "\n")
    (named,) = _items([str(manifest)])
    assert named.video_id == "videos/n\\\\xff.mp4"  # as the same path given directly is named
    for item in first:
        _utf8(item)


def test_symlink_loops_become_error_items_and_the_rest_goes_on(tree: Path) -> None:
    os.symlink("loop.mp4", tree / "videos/loop.mp4")
    folder = {i.video_id: i for i in _items(["videos"])}
    assert "link loop" in folder["loop.mp4"].error
    assert folder["loop.mp4"].video_path == str(tree / "videos/loop.mp4")
    assert sum(i.error is None for i in folder.values()) == 5

    stdin = _items(["-"], stdin=io.StringIO("videos/loop.mp4\nvideos/b.mp4\n"))
    assert ["link loop" in (i.error or "") for i in stdin] == [True, False]

    (tree / "m.jsonl").write_text(
        json.dumps({"video": "videos/loop.mp4", "question": "Q"})
        + "\n"
        + json.dumps({"video": "videos/b.mp4"})
    )
    lines = _items(["m.jsonl"])
    assert lines[0].error == "m.jsonl:1: path is a symbolic link loop" and lines[1].error is None

    with pytest.raises(UsageError, match="source not found: videos/loop.mp4 .*link loop"):
        _items(["videos/loop.mp4"])


def test_hostile_manifest_lines_become_error_items_and_good_lines_are_kept(tree: Path) -> None:
    (tree / "m.jsonl").write_bytes(
        b'\xef\xbb\xbf{"video": "videos/b.mp4", "question": "ok 1"}\n'
        b'{"video": "videos/b.mp4\\u0000x", "question": "NUL"}\n'
        b'{"video": "videos/b\xff.mp4", "question": "not UTF-8"}\n'
        b'{"video": "videos/b.mp4", "question": "lone \\ud800 surrogate"}\n'
        b'{"video": "videos/a.MKV", "question": "ok 2"}\n'
    )
    items = _items(["m.jsonl"])
    assert [i.question for i in items if i.error is None] == ["ok 1", "ok 2"]
    errors = [i.error for i in items if i.error]
    assert errors == [
        "m.jsonl:2: 'video' contains a NUL byte",
        "m.jsonl:3: not valid UTF-8 text (byte 0xff at column 20)",
        "m.jsonl:4: 'question': not valid Unicode text: 'lone \\\\ud800 surrogate'",
    ]
    (tree / "m.csv").write_bytes(b"video,question\nvideos/b.mp4,ok\nvideos/a.MKV,caf\xe9\n")
    csv_items = _items(["m.csv"])
    assert csv_items[0].error is None
    assert csv_items[1].error == "m.csv:3: not valid UTF-8 text (byte 0xe9 in column 'question')"
    for item in items + csv_items:
        _utf8(item)


# --------------------------------------------------------------------------------------------------
# Folders: symlinked sub-folders and folders named like videos are never skipped silently
# --------------------------------------------------------------------------------------------------


def test_symlinked_sub_folders_are_followed_once_and_loops_end(
    tree: Path, caplog: pytest.LogCaptureFixture
) -> None:
    elsewhere = tree / "elsewhere"
    _touch(elsewhere / "cam1.mp4")
    os.symlink(elsewhere, tree / "videos/linked_cam")  # outside the folder: followed
    os.symlink(elsewhere, tree / "videos/linked_again")  # the same real folder: searched once
    os.symlink(".", elsewhere / "back_up")  # a loop: the linked folder links to itself
    os.symlink("sub", tree / "videos/shortcut")  # inside: found by its real path
    items = _items(["videos"])
    assert [i.video_id for i in items] == [
        "a.MKV",
        "b.mp4",
        "linked_again/cam1.mp4",
        "sub/c.webm",
        "sub/deeper/d.mov",
        "z/e.gif",
    ]
    assert items[2].video_path == str((elsewhere / "cam1.mp4").resolve())
    assert "videos/linked_cam: skipped, a folder already searched" in caplog.text
    assert "videos/shortcut: skipped, a link to" in caplog.text
    assert "linked_again/back_up: skipped, a folder already searched" in caplog.text


def test_a_folder_named_like_a_video_is_searched_and_reported(
    tree: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _touch(tree / "videos/clip.mp4/inner.mp4")
    items = _items(["videos"])
    assert "clip.mp4/inner.mp4" in [i.video_id for i in items]
    assert "videos/clip.mp4: a folder named like a video; searched as a folder" in caplog.text


# --------------------------------------------------------------------------------------------------
# Manifest columns and shapes
# --------------------------------------------------------------------------------------------------


def test_a_line_without_a_question_in_a_manifest_with_questions_is_an_error_item(tree: Path) -> None:
    (tree / "m.csv").write_text("video,question\nvideos/b.mp4,Q1\nvideos/a.MKV,\nvideos/z/e.gif,Q3\n")
    items = list(iter_items(["m.csv"]))  # require_question: answer's setting
    assert [i.question for i in items] == ["Q1", None, "Q3"]
    assert items[1].error == "m.csv:3: no question on this line (pass --question to give a default)"
    assert items[1].question_id == "m.csv:3" and items[1].video_id == "videos/a.MKV"
    # A manifest with no question at all: --question was forgotten, nothing should run.
    (tree / "none.csv").write_text("video,question\nvideos/b.mp4,\n")
    with pytest.raises(UsageError, match="has no question"):
        list(iter_items(["none.csv"]))


def test_unknown_columns_are_warned_once_per_manifest_with_a_suggestion(
    tree: Path, caplog: pytest.LogCaptureFixture
) -> None:
    row = {"video": "videos/b.mp4", "Question": "Q?", "choices": ["a", "b"], "answer": "A", "notes": "x"}
    (tree / "m.jsonl").write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n")
    (tree / "m.csv").write_text("video,question,choices\nvideos/b.mp4,Q?,a|b\n")
    with caplog.at_level(logging.WARNING, logger="mlbcli.io.manifests"):
        _items(["m.jsonl"])
        _items(["m.csv"])
    unknown = [r.getMessage() for r in caplog.records if "unknown column" in r.getMessage()]
    assert unknown == [
        "m.jsonl: ignoring unknown column(s) 'Question' (did you mean 'question'?), "
        "'choices' (did you mean 'options'?), 'notes'; a manifest's columns are: "
        "video, video_id, question_id, question, options, answer, category",
        "m.csv: ignoring unknown column(s) 'choices' (did you mean 'options'?); a manifest's columns are: "
        "video, video_id, question_id, question, options, answer, category",
    ]


def test_an_empty_manifest_says_it_is_empty(tree: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tree / "blank.jsonl").write_text("\n\n")
    (tree / "empty.csv").write_text("")
    (tree / "header.csv").write_text("video,question\n")
    pq.write_table(pa.table({"video": pa.array([], pa.string())}), tree / "none.parquet")
    for name in ["blank.jsonl", "empty.csv", "header.csv", "none.parquet"]:
        caplog.clear()
        assert _items([name]) == []
        assert f"{name}: the manifest is empty (no rows)" in caplog.text


def test_a_question_that_is_not_valid_text_is_a_usage_error(tree: Path) -> None:
    # argv bytes that are not UTF-8 reach Python as surrogate escapes; they cannot be stored in a row.
    with pytest.raises(UsageError, match="--question: not valid Unicode text"):
        _items(["videos"], default_question="caf\udce9?")


def test_manifest_messages_name_the_line_the_field_and_what_was_expected(tree: Path) -> None:
    # Issue 22: `"options": [1, null]` said "got None"; 200 options failed later with a Python ValueError.
    manifest = tree / "m.jsonl"
    lines = [
        {"video": "videos/b.mp4", "question": "Q1?", "options": [1, None]},
        {"video": "videos/b.mp4", "question": "Q2?", "options": [f"o{n}" for n in range(200)]},
        {"video": "videos/b.mp4", "question": "Q3?", "options": ["a", " "]},
        {"video": "videos/b.mp4", "question": "Q4?", "options": "a|b"},
        {"video": "videos/b.mp4", "question": ["Q5?"]},
        {"video": "videos/b.mp4", "question": "Q6?", "options": [1, "two", 3.5]},
        {"video": "videos/b.mp4", "question": "Q7?", "options": [f"o{n}" for n in range(26)]},
    ]
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    items = _items([str(manifest)])
    errors = [i.error for i in items]
    assert errors[:5] == [
        f"{manifest}:1: 'options' entry 2 of 2 is null; expected a non-empty text",
        f"{manifest}:2: 'options' has 200 entries; expected at most 26 (one letter each, A to Z)",
        f"{manifest}:3: 'options' entry 2 of 2 is an empty text; expected a non-empty text",
        f"{manifest}:4: 'options' must be a list of option texts, got the text 'a|b'",
        f"{manifest}:5: 'question': expected text, got list ['Q5?']",
    ]
    assert errors[5:] == [None, None]
    assert items[5].options == ("1", "two", "3.5") and len(items[6].options or ()) == 26
