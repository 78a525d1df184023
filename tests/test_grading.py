"""Both graders on every row (`mlbcli.eval.grading`), `mlb score` on predictions files and lmms-eval samples,
macro aggregation with uncategorised and error rows, intervals that contain their estimate."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mlbcli.cli.app import app
from mlbcli.errors import UsageError
from mlbcli.eval.grading import grade_reply
from mlbcli.eval.lmms_eval_grading import grade_lmms_eval
from mlbcli.eval.score import paired, score_rows

OPTS = ["cooks", "reads", "paints", "sleeps", "runs"]


def run(args: list) -> object:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def grade(reply: str, truth: object, benchmark: str | None, **kw: object) -> dict:
    return grade_reply(
        reply, question="Q?", options=kw.pop("options", OPTS), ground_truth=truth, benchmark=benchmark, **kw
    )


# -- one reply, both graders ---------------------------------------------------------------------------------
def test_the_headline_follows_lmms_eval_on_its_tasks_and_mlb_elsewhere() -> None:
    # "Answer: b": mlb reads B; lmms-eval's Video-MME extractor is case-sensitive and reads the A of "Answer".
    row = grade("Answer: b", "B", "videomme", options=OPTS[:4])
    assert (row["choice_mlb"], row["correct_mlb"]) == ("B", True)
    assert (row["choice_lmms_eval"], row["correct_lmms_eval"]) == ("A", False)
    assert (row["grader"], row["choice"], row["correct"], row["parse_failed"]) == (
        "lmms-eval",
        "A",
        False,
        False,
    )
    row = grade("b", "B", "videomme", options=OPTS[:4])  # no capital letter: lmms-eval reads nothing
    assert (row["choice_lmms_eval"], row["correct_lmms_eval"], row["parse_failed_lmms_eval"]) == (
        None,
        False,
        True,
    )
    mlb = grade("Answer: b", "B", "videomme", options=OPTS[:4], grader="mlb")
    assert (mlb["grader"], mlb["choice"], mlb["correct"]) == ("mlb", "B", True)
    generic = grade("Answer: b", "B", None)
    assert generic["grader"] == "mlb" and generic["correct"] is True and generic["correct_lmms_eval"] is None
    with pytest.raises(UsageError, match="needs --benchmark"):
        grade("B", "B", None, grader="lmms-eval")


@pytest.mark.parametrize("benchmark", ["egoschema", "nextqa", "longvideobench"])
def test_an_index_ground_truth_means_the_same_letter_to_both_graders(benchmark: str) -> None:
    row = grade("C", "2", benchmark)
    assert row["correct_mlb"] is True and row["correct_lmms_eval"] is True
    assert grade("B", 2, benchmark)["correct_mlb"] is False


@pytest.mark.parametrize(
    ("benchmark", "truth", "message"),
    [("videomme", "2", "is not a letter"), ("egoschema", "9", "out of range"), (None, "a cat", "neither")],
)
def test_an_unreadable_ground_truth_is_an_error_not_a_wrong_answer(benchmark, truth, message) -> None:
    row = grade("B", truth, benchmark, options=OPTS[:4])
    assert message in row["grade_error"]
    assert row["correct"] is None and row["correct_mlb"] is None and row["correct_lmms_eval"] is None


def test_where_lmms_eval_guesses_the_row_says_unreadable_and_the_guess_is_seeded() -> None:
    first = grade("no idea", "0", "egoschema", video_id="v", question_id="q", seed=3)
    again = grade("no idea", "0", "egoschema", video_id="v", question_id="q", seed=3)
    assert first["parse_failed_lmms_eval"] and first["choice_lmms_eval"] == again["choice_lmms_eval"]
    # The guess is lmms-eval's grader's own (seeded by seed, video and question), reply by reply.
    direct = grade_lmms_eval("egoschema", "no idea", OPTS, "0", rng_seed_key="3:v:q")
    assert first["choice_lmms_eval"] == direct.guess and first["correct_lmms_eval"] == direct.correct


def test_mvbench_empty_reply_is_left_out_by_lmms_eval() -> None:
    row = grade("", "reads", "mvbench", options=OPTS[:4])
    assert row["correct_lmms_eval"] is None and row["parse_failed_lmms_eval"] is True


# -- mlb score on predictions files --------------------------------------------------------------------------
def _predictions() -> list[dict]:
    rows = []
    for i in range(12):
        reply = ["C", "Answer: b", "The answer is C.", "I cannot tell"][i % 4]
        rows.append(
            {"benchmark": "egoschema", "question": "What does C do?", "options": OPTS, "answer": reply,
             "ground_truth": 2, "video_id": f"v{i}", "question_id": "0", "duration": ["short", "long"][i % 2]}
        )  # fmt: skip
    rows.append({**rows[0], "video_id": "bad", "ground_truth": "seven"})  # unreadable ground truth
    return rows


def test_score_grades_a_foreign_jsonl_and_writes_the_rows(tmp_path: Path) -> None:
    path = tmp_path / "preds.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in _predictions()))
    out = tmp_path / "graded.parquet"
    result = run(["score", path, "--rows", out, "--json", "--by", "duration"])
    assert result.exit_code == 0, result.output
    whole = json.loads(result.stdout)[0]
    graded = pq.read_table(out).to_pylist()
    for name in ("choice_lmms_eval", "correct_lmms_eval", "choice_mlb", "correct_mlb"):
        assert name in graded[0]
    bad = [row for row in graded if row["video_id"] == "bad"][0]
    assert "seven" in bad["grade_error"] and whole["errors"] == 1 and whole["n"] == 12
    good = [row for row in graded if row["video_id"] != "bad"]
    # Each accuracy is what its own column says; they differ ("Answer: b" is B to mlb, A... to lmms-eval).
    assert whole["accuracy_mlb"] == pytest.approx(sum(r["correct_mlb"] for r in good) / 12)
    assert whole["accuracy_lmms_eval"] == pytest.approx(sum(r["correct_lmms_eval"] for r in good) / 12)
    assert whole["accuracy"] == whole["accuracy_lmms_eval"]  # the default headline on an lmms-eval task
    groups = {r["group"] for r in json.loads(result.stdout)[1:]}
    assert groups == {"short", "long"}  # --by a column only the predictions file has


def test_score_reads_csv_predictions_with_a_json_options_list(tmp_path: Path) -> None:
    path = tmp_path / "preds.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["benchmark", "question", "options", "answer", "ground_truth"])
        writer.writeheader()
        writer.writerow({"benchmark": "videomme", "question": "Q", "options": json.dumps(OPTS[:4]),
                         "answer": "B", "ground_truth": "B"})  # fmt: skip
        writer.writerow({"benchmark": "videomme", "question": "Q", "options": json.dumps(OPTS[:4]),
                         "answer": "b", "ground_truth": "B"})  # fmt: skip
    result = run(["score", path, "--json"])
    assert result.exit_code == 0, result.output
    whole = json.loads(result.stdout)[0]
    assert (whole["accuracy_mlb"], whole["accuracy_lmms_eval"]) == (1.0, 0.5)
    mlb = json.loads(run(["score", path, "--json", "--grader", "mlb"]).stdout)[0]
    assert mlb["accuracy"] == 1.0


def test_a_predictions_file_without_replies_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"question": "Q", "ground_truth": "A"}) + "\n")
    result = run(["score", path])
    assert result.exit_code == 2 and "no column 'answer'" in result.output


# -- aggregation -----------------------------------------------------------------------------------------------
def _mlvu_rows() -> list[dict]:
    rows = [{"correct": True, "category": "count", "video_id": f"c{i}"} for i in range(9)]
    rows += [{"correct": False, "category": "count", "video_id": "c9"}]
    rows += [{"correct": i < 1, "category": "ego", "video_id": f"e{i}"} for i in range(4)]
    return [{**row, "benchmark": "mlvu", "question_id": "q"} for row in rows]


def test_an_uncategorised_row_does_not_turn_macro_into_micro() -> None:
    rows = _mlvu_rows()
    macro = score_rows(rows).accuracy
    assert macro == pytest.approx((0.9 + 0.25) / 2)
    more = [
        *rows,
        {"correct": False, "category": None, "video_id": "x", "benchmark": "mlvu", "question_id": "q"},
    ]
    more += [{"error": "DecodeError", "video_id": "y", "benchmark": "mlvu", "question_id": "q"}]
    score = score_rows(more)
    assert score.accuracy == pytest.approx(macro) and score.aggregation.startswith("macro")
    assert any("1 graded rows without a category" in note for note in score.notes)
    assert score.groups["(no category)"].n == 1 and score.groups["(errors)"].errors == 1 and score.errors == 1


def test_lmms_eval_accuracy_is_the_tasks_own_aggregation() -> None:
    """MLVU: lmms-eval averages over all seven dev task types, an absent one counting 0 (its number, as it
    would print it); mlb's macro mean is over the types present. Both are shown, the difference said."""
    rows = [
        {**row, "correct_mlb": row["correct"], "correct_lmms_eval": row["correct"]} for row in _mlvu_rows()
    ]
    score = score_rows(rows)
    assert score.accuracy_mlb == pytest.approx((0.9 + 0.25) / 2)
    assert score.accuracy_lmms_eval == pytest.approx((0.9 + 0.25) / 7)
    assert any("5 absent task types" in note for note in score.notes)
    # with every type present the two agree
    full = [
        {"correct": True, "correct_mlb": True, "correct_lmms_eval": i % 2 == 0, "category": kind,
         "video_id": f"{kind}{i}", "benchmark": "mlvu", "question_id": "q"}
        for kind in ("anomaly_reco", "count", "ego", "needle", "order", "plotQA", "topic_reasoning")
        for i in range(2)
    ]  # fmt: skip
    every = score_rows(full)
    assert every.accuracy_lmms_eval == pytest.approx(0.5) and not any("absent" in n for n in every.notes)


def test_mlvu_test_rows_are_aggregated_as_mlvu_test() -> None:
    """mlb names both MLVU splits "mlvu"; lmms-eval's aggregation must still be the test split's (nine task
    types, needleQA and sportsQA among them), not the dev split's (which has no needleQA)."""
    rows = [
        {"correct": True, "correct_mlb": True, "correct_lmms_eval": True, "category": kind,
         "video_id": f"{kind}{i}", "benchmark": "mlvu_test", "question_id": "q"}
        for kind in ("needleQA", "sportsQA")
        for i in range(2)
    ]  # fmt: skip
    score = score_rows(rows)
    assert score.accuracy_lmms_eval == pytest.approx(2 / 9)
    assert any("7 absent task types" in note for note in score.notes)
    assert not any("cannot read" in note for note in score.notes)


def test_paired_difference_in_the_benchmarks_own_averaging() -> None:
    here = _mlvu_rows()
    there = [{**row, "correct": True} for row in here]
    pair = paired(here, there, macro=True)
    # count: 9/10 - 10/10 = -0.1; ego: 1/4 - 4/4 = -0.75; macro mean -0.425 (micro would be -4/14).
    assert pair.delta == pytest.approx(-0.425) and pair.aggregation.startswith("macro")
    same = paired(here, here, macro=True)
    assert same.delta == 0 and same.delta_ci_low is None and "no row flipped" in (same.note or "")


# -- intervals -------------------------------------------------------------------------------------------------
def test_intervals_contain_the_estimate_and_say_when_they_are_unreliable(tmp_path: Path) -> None:
    zero = score_rows([{"correct": False, "video_id": f"v{i}", "question_id": "q"} for i in range(30)])
    assert zero.accuracy == 0.0 and zero.ci_low == 0.0 <= zero.accuracy <= zero.ci_high
    assert zero.unreliable is None
    few = score_rows([{"correct": i % 2 == 0, "video_id": f"v{i}", "question_id": "q"} for i in range(5)])
    assert "5 videos" in few.unreliable
    one = score_rows([{"correct": i % 2 == 0, "video_id": "v", "question_id": f"q{i}"} for i in range(40)])
    assert "one video" in one.unreliable


def test_plot_of_a_zero_accuracy_file(tmp_path: Path) -> None:
    """Before: a Wilson bound of 2.8e-17 above an accuracy of 0 made matplotlib refuse a negative yerr."""
    pytest.importorskip("matplotlib")
    path = tmp_path / "zero.jsonl"
    rows = [
        {"answer": "A", "ground_truth": "B", "options": ["x", "y"], "video_id": f"v{i}", "flops_ratio": 0.3}
        for i in range(12)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run(["score", path, "--plot", tmp_path / "p.png", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["accuracy"] == 0.0
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


# -- lmms-eval samples, both ways ----------------------------------------------------------------------------
def test_samples_written_by_mlb_score_read_back_as_a_baseline(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in _predictions()[:12]))
    result = run(["score", path, "--lmms-eval-samples", tmp_path / "samples"])
    assert result.exit_code == 0, result.output
    (samples,) = sorted((tmp_path / "samples").iterdir())
    assert samples.name == "run_samples_egoschema_subset.jsonl"
    first = json.loads(samples.read_text().splitlines()[0])
    assert first["target"] == "2" and first["filtered_resps"] == "C"  # index-style, as EgoSchema stores it
    paired_run = run(["score", path, "--against", samples, "--json"])
    assert paired_run.exit_code == 0, paired_run.output
    whole = json.loads(paired_run.stdout)[0]
    assert whole["n_paired"] == 12 and whole["delta"] == 0.0 and "no row flipped" in whole["note"]


# -- `mlb answer` records both graders --------------------------------------------------------------------------
def test_answer_rows_carry_both_graders(tiny_model_dir, clips_dir, tmp_path: Path) -> None:
    from mlbcli import api

    manifest = tmp_path / "ego.jsonl"
    items = [
        {"video": str(clips_dir / name), "question": "What does C do?", "options": OPTS, "answer": truth}
        for name, truth in (("a.mp4", "2"), ("b.mp4", "seven"))
    ]
    manifest.write_text("".join(json.dumps(item) + "\n" for item in items))
    out = tmp_path / "answers.parquet"
    options = {"model": str(tiny_model_dir), "frames": 2, "max_new_tokens": 3}
    api.answer([str(manifest)], benchmark="egoschema", run=api.RunOptions(out=str(out), workers=0), **options)
    rows = {Path(r["video_path"]).name: r for r in pq.read_table(out).to_pylist()}
    good, bad = rows["a.mp4"], rows["b.mp4"]
    assert good["grader"] == "lmms-eval" and good["correct"] == good["correct_lmms_eval"]
    # A random model's reply: each grader's verdict is its own letter against C (index 2).
    assert good["correct_mlb"] == (good["choice_mlb"] == "C")
    assert good["correct_lmms_eval"] == (good["choice_lmms_eval"] == "C")
    expected = grade("" if good["answer"] is None else good["answer"], "2", "egoschema", seed=0,
                     video_id=good["video_id"], question_id=good["question_id"])  # fmt: skip
    assert {k: good[k] for k in expected} == expected
    assert "seven" in bad["grade_error"] and bad["correct"] is None
    with pytest.raises(UsageError, match="needs --benchmark"):
        api.answer(
            [str(manifest)],
            grader="lmms-eval",
            run=api.RunOptions(out=str(tmp_path / "x.parquet")),
            **options,
        )
