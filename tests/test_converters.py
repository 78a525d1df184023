"""`mlb manifest`: each benchmark's annotation layout -> mlb's manifest, videos resolved, ground truths kept
as the benchmark stores them (so both graders read them right), missing videos named."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mlbcli.cli.app import app
from mlbcli.errors import UsageError
from mlbcli.eval.converters import convert, docs_path
from mlbcli.eval.grading import grade_reply


def run(args: list[Any]):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"not a real video")


def manifest_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def videomme_rows() -> list[dict[str, Any]]:
    base = {"duration": "short", "domain": "Knowledge", "sub_category": "Astronomy", "url": "u",
            "task_type": "Counting Problem"}  # fmt: skip
    return [
        {**base, "video_id": "001", "videoID": "fFjv93ACGo8", "question_id": "001-1", "question": "How many?",
         "options": ["A. One.", "B. Two.", "C. Three.", "D. Four."], "answer": "C"},
        {**base, "video_id": "002", "videoID": "JxC2Iiq0Xxs", "question_id": "002-1", "question": "Which?",
         "options": ["A. Red.", "B. Blue.", "C. Green.", "D. Pink."], "answer": "A", "duration": "long"},
    ]  # fmt: skip


def test_videomme_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ann = tmp_path / "videomme" / "test-00000-of-00001.parquet"
    ann.parent.mkdir()
    pq.write_table(pa.Table.from_pylist(videomme_rows()), ann)
    videos = tmp_path / "videomme"
    touch(videos, "data/fFjv93ACGo8.mp4", "data/JxC2Iiq0Xxs.MP4")  # lmms-eval also tries .MP4
    out = tmp_path / "out" / "vm.jsonl"
    result = run(["manifest", "videomme", ann, "--videos", videos, "--out", out])
    assert result.exit_code == 0, result.output
    rows = manifest_rows(out)
    assert [r["question_id"] for r in rows] == ["001-1", "002-1"]
    assert (out.parent / rows[1]["video"]).resolve() == (videos / "data/JxC2Iiq0Xxs.MP4").resolve()
    assert rows[0]["options"][0] == "A. One." and rows[0]["answer"] == "C"  # as the dataset writes them
    assert [r["category"] for r in rows] == ["short", "long"]
    docs = manifest_rows(docs_path(out))
    assert docs[0]["doc"]["task_type"] == "Counting Problem" and docs[0]["question_id"] == "001-1"
    graded = grade_reply("C", question=rows[0]["question"], options=rows[0]["options"],
                         ground_truth=rows[0]["answer"], benchmark="videomme")  # fmt: skip
    assert graded["correct_mlb"] is True and graded["correct_lmms_eval"] is True


def test_missing_videos_are_counted_and_named(tmp_path: Path) -> None:
    ann = write_json(tmp_path / "vm.json", videomme_rows())
    touch(tmp_path / "v", "data/fFjv93ACGo8.mp4")
    with pytest.raises(UsageError, match=r"1 of 2 videos not found under .*data/JxC2Iiq0Xxs\.mp4"):
        convert("videomme", str(ann), videos=str(tmp_path / "v"), out=str(tmp_path / "m.jsonl"))
    assert not (tmp_path / "m.jsonl").exists()
    done = convert(
        "videomme", str(ann), videos=str(tmp_path / "v"), out=str(tmp_path / "m.jsonl"), allow_missing=True
    )
    assert done.rows == 1 and done.missing == ["data/JxC2Iiq0Xxs.mp4"]
    result = run(["manifest", "videomme", ann, "--videos", tmp_path / "empty"])
    assert result.exit_code == 2 and "no such folder" in result.output


def test_mlvu_release_json_per_task(tmp_path: Path) -> None:
    folder = tmp_path / "MLVU" / "json"
    write_json(folder / "1_plotQA.json", [
        {"video": "movie101_66.mp4", "duration": 246, "question": "What colour is the car?",
         "candidates": ["red", "blue", "green", "white"], "answer": "blue", "question_type": "plotQA"},
    ])  # fmt: skip
    write_json(folder / "4_count.json", [
        {"video": "count_1.mp4", "duration": 100, "question": "How many?\n(A) 1\n(B) 2\n(C) 3\n(D) 4",
         "answer": "D", "task_type": "count"},
    ])  # fmt: skip
    touch(tmp_path / "MLVU" / "video", "1_plotQA/movie101_66.mp4", "4_count/count_1.mp4")
    out = tmp_path / "mlvu.jsonl"
    convert("mlvu", str(folder), videos=str(tmp_path / "MLVU" / "video"), out=str(out))
    plot, count = manifest_rows(out)
    assert (plot["answer"], plot["category"], plot["options"][1]) == ("B", "plotQA", "blue")  # text -> letter
    assert (count["answer"], count["category"], count["options"]) == ("D", "count", ["1", "2", "3", "4"])
    assert "(B) blue" in manifest_rows(docs_path(out))[0]["doc"]["question"]  # as lmms-eval's question


def test_mvbench_option_text_truth_and_subtask_folders(tmp_path: Path) -> None:
    ann = write_json(tmp_path / "json" / "action_count.json", [
        {"video": "clip_7.mp4", "question": "How many times?", "candidates": ["3", "5", "2"], "answer": "2"},
    ])  # fmt: skip
    touch(tmp_path / "video", "perception/videos/clip_7.mp4", "other/clip_7.mp4")
    out = tmp_path / "mv.jsonl"
    convert("mvbench", str(ann), videos=str(tmp_path / "video"), out=str(out))
    (row,) = manifest_rows(out)
    assert row["video"].endswith("perception/videos/clip_7.mp4")  # lmms-eval's folder for the subtask
    assert (row["answer"], row["category"]) == ("2", "action_count")  # the text, not index 2
    graded = grade_reply("(C) 2", question=row["question"], options=row["options"], ground_truth=row["answer"],
                         benchmark="mvbench")  # fmt: skip
    assert graded["choice_lmms_eval"] == "C" and graded["correct_lmms_eval"] and graded["correct_mlb"]
    bad = write_json(
        tmp_path / "bad" / "action_count.json", [{**json.loads(ann.read_text())[0], "answer": "9"}]
    )
    with pytest.raises(UsageError, match="not one of its candidates"):
        convert("mvbench", str(bad), videos=str(tmp_path / "video"), out=str(tmp_path / "b.jsonl"))


def test_egoschema_questions_and_subset_answers(tmp_path: Path) -> None:
    questions = [
        {"q_uid": f"uid-{i}", "google_drive_id": "x", "question": f"What does C do {i}?",
         **{f"option {j}": f"C does thing {j}" for j in range(5)}}
        for i in range(3)
    ]  # fmt: skip
    ann = write_json(tmp_path / "questions.json", questions)
    write_json(tmp_path / "subset_answers.json", {"uid-0": 2, "uid-2": 0})
    touch(tmp_path / "videos", "uid-0.mp4", "uid-2.mp4")
    out = tmp_path / "ego.jsonl"
    convert("egoschema", str(ann), videos=str(tmp_path / "videos"), out=str(out))
    rows = manifest_rows(out)
    assert [(r["video_id"], r["answer"]) for r in rows] == [("uid-0", "2"), ("uid-2", "0")]  # the subset
    graded = grade_reply("C", question=rows[0]["question"], options=rows[0]["options"], ground_truth="2",
                         benchmark="egoschema")  # fmt: skip
    assert graded["correct_lmms_eval"] and graded["correct_mlb"]  # index 2 is C, not B
    assert manifest_rows(docs_path(out))[0]["doc"]["option"][2] == "C. C does thing 2"
    with pytest.raises(UsageError, match="egoschema only"):
        convert("videomme", str(ann), videos=str(tmp_path), out=str(out), answers=str(ann))


def test_nextqa_csv_with_the_video_map(tmp_path: Path) -> None:
    ann = tmp_path / "test.csv"
    fields = ["video", "frame_count", "width", "height", "question", "answer", "qid", "type",
              "a0", "a1", "a2", "a3", "a4"]  # fmt: skip
    with open(ann, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fields)
        writer.writeheader()
        writer.writerow(dict(zip(fields, [4010069381, 300, 640, 480, "why did the boy run", 3, 6, "CW",
                                          "fall", "eat", "play", "chase dog", "sleep"], strict=True)))  # fmt: skip
        writer.writerow(dict(zip(fields, [5555, 300, 640, 480, "what next", 0, 1, "TN",
                                          "a", "b", "c", "d", "e"], strict=True)))  # fmt: skip
    videos = tmp_path / "NExTVideo"
    write_json(videos / "map_vid_vidorid.json", {"4010069381": "1164/4010069381"})
    touch(videos, "1164/4010069381.mp4", "5555.mp4")  # mapped, and lmms-eval's flat <video>.mp4
    out = tmp_path / "nq.jsonl"
    convert("nextqa", str(ann), videos=str(videos), out=str(out))
    first, second = manifest_rows(out)
    assert first["video"].endswith("1164/4010069381.mp4") and second["video"].endswith("5555.mp4")
    assert (first["answer"], first["category"], first["question_id"]) == ("3", "CW", "4010069381_6")
    assert manifest_rows(docs_path(out))[0]["doc"]["answer"] == 3  # lmms-eval's OPTIONS[doc["answer"]]


def test_longvideobench_val_json(tmp_path: Path) -> None:
    ann = write_json(tmp_path / "lvb_val.json", [
        {"id": "86CxyhFV9MI_0", "video_id": "86CxyhFV9MI", "video_path": "86CxyhFV9MI.mp4", "question": "Q?",
         "candidates": ["w", "x", "y", "z"], "correct_choice": 1, "duration_group": 600,
         "question_category": "TOS", "duration": 500.0},
    ])  # fmt: skip
    touch(tmp_path / "lvb" / "videos", "86CxyhFV9MI.mp4")
    out = tmp_path / "lvb.jsonl"
    result = run(["manifest", "longvideobench", ann, "--videos", tmp_path / "lvb", "--out", out])
    assert result.exit_code == 0, result.output
    (row,) = manifest_rows(out)
    assert (row["answer"], row["category"], row["question_id"]) == ("1", "TOS", "86CxyhFV9MI_0")
    doc = manifest_rows(docs_path(out))[0]["doc"]
    assert doc["option4"] == "N/A" and doc["correct_choice"] == 1  # lmms-eval's padded layout


def test_answer_reads_a_converted_manifest(tiny_model_dir: Path, clips_dir: Path, tmp_path: Path) -> None:
    """End to end: `mlb manifest` -> `mlb answer --benchmark videomme` on a tiny model, graded both ways."""
    import pyarrow.parquet as pq

    data = tmp_path / "vm" / "data"
    data.mkdir(parents=True)
    for row in videomme_rows():
        (data / f"{row['videoID']}.mp4").write_bytes((clips_dir / "a.mp4").read_bytes())
    ann = write_json(tmp_path / "vm.json", videomme_rows())
    out = tmp_path / "vm.jsonl"
    assert run(["manifest", "videomme", ann, "--videos", tmp_path / "vm", "--out", out]).exit_code == 0
    answers = tmp_path / "answers.parquet"
    result = run(["answer", out, "--benchmark", "videomme", "--model", tiny_model_dir, "--out", answers,
                  "--workers", "0", "--frames", "4", "--max-new-tokens", "2", "-q"])  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = pq.read_table(answers).to_pylist()
    assert [r["question_id"] for r in rows] == ["001-1", "002-1"]
    assert all(r["error"] is None and r["ground_truth"] in "CA" for r in rows)
    assert all(isinstance(r["correct_lmms_eval"], bool) and isinstance(r["correct_mlb"], bool) for r in rows)
    assert all("A. One." in r["prompt"] or "A. Red." in r["prompt"] for r in rows)
