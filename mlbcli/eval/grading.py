"""Both graders of one reply: `mlb` (mlb's parser, `benchmarks.judge`) and `lmms-eval` (what lmms-eval's task
extracts and counts, `lmms_eval_grading`), and which of the two the headline `choice` / `correct` follow.

Rows of `mlb answer` and rows that `mlb score` grades get the same columns:

- ``choice_mlb`` / ``correct_mlb``: mlb's reading of the reply (a benchmark's policy for unreadable replies
  applied, e.g. a seeded guess on EgoSchema);
- ``choice_lmms_eval`` / ``correct_lmms_eval``: lmms-eval's reading (null without an lmms-eval benchmark);
  where lmms-eval draws a random option, the reply is recorded unreadable and ``choice_lmms_eval`` is a
  guess seeded by (seed, video id, question id), so a rerun gives the same number;
- ``choice`` / ``correct`` / ``parse_failed``: the chosen grader's (`--grader`; default ``lmms-eval`` when
  the benchmark is an lmms-eval task, so the headline compares with published numbers, else ``mlb``);
- ``grade_error``: why the row could not be graded (a ground truth that is neither the benchmark's index nor
  a letter nor, where the benchmark stores text, an option's text); such rows are error rows in `mlb score`.

The ground truth is read once, as the benchmark stores it (`lmms_eval_grading.truth_letter`: index-style on
EgoSchema, NExT-QA and LongVideoBench, '2' meaning C), and both graders compare against that letter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mlbcli.errors import UsageError

__all__ = [
    "GRADERS",
    "GRADE_COLUMNS",
    "choose",
    "default_grader",
    "grade_reply",
    "lmms_eval_task",
    "resolve_grader",
]

GRADERS = ("lmms-eval", "mlb")
#: The columns `grade_reply` fills (besides choice / correct / parse_failed).
GRADE_COLUMNS = (
    "choice_mlb",
    "correct_mlb",
    "parse_failed_mlb",
    "choice_lmms_eval",
    "correct_lmms_eval",
    "parse_failed_lmms_eval",
    "grader",
    "grade_error",
)


def lmms_eval_task(benchmark: str | None) -> str | None:
    """lmms-eval's task for an mlb (or lmms-eval) benchmark name, None when lmms-eval has no grader for it."""
    from mlbcli.eval.lmms_eval_grading import canonical_benchmark

    if not benchmark:
        return None
    name = str(benchmark).strip().lower()
    if name.startswith("mvbench_"):  # lmms-eval's per-subtask MVBench tasks
        name = "mvbench"
    try:
        return canonical_benchmark(name)
    except ValueError:
        return None


def mlb_benchmark(benchmark: str | None) -> str | None:
    """mlb's name (`benchmarks.BENCHMARKS`) for an mlb or lmms-eval benchmark name; None for others."""
    from mlbcli.eval.benchmarks import BENCHMARKS

    task = lmms_eval_task(benchmark)
    if task is None:
        return None
    if task.startswith("mlvu"):
        return "mlvu"
    return task if task in BENCHMARKS else None


def default_grader(benchmark: str | None) -> str:
    """``lmms-eval`` when `benchmark` is an lmms-eval task (the headline then compares with papers), else mlb."""
    return "lmms-eval" if lmms_eval_task(benchmark) else "mlb"


def resolve_grader(grader: str | None, benchmark: str | None) -> str:
    """The grader a run uses; UsageError for an unknown one, or ``lmms-eval`` without an lmms-eval benchmark."""
    if grader is None:
        return default_grader(benchmark)
    value = grader.strip().lower().replace("_", "-")
    if value == "lmmseval":
        value = "lmms-eval"
    if value not in GRADERS:
        raise UsageError(f"--grader {grader!r}: choose from {', '.join(GRADERS)}")
    if value == "lmms-eval" and not lmms_eval_task(benchmark):
        raise UsageError(
            "--grader lmms-eval needs --benchmark naming an lmms-eval task "
            "(videomme, mvbench, mlvu, egoschema, nextqa, longvideobench)"
        )
    return value


def _truth(benchmark: str | None, ground_truth: Any, options: Sequence[str]) -> tuple[str | None, str | None]:
    """(the ground truth's letter, None) or (None, why it cannot be read)."""
    from mlbcli.eval.lmms_eval_grading import truth_letter
    from mlbcli.eval.prompting import answer_letter

    task = lmms_eval_task(benchmark)
    if task is not None:
        try:
            return truth_letter(task, ground_truth, options), None
        except ValueError as error:
            return None, str(error)
    letter = answer_letter(str(ground_truth), options)
    if letter is None:
        return None, (
            f"ground truth {ground_truth!r} is neither an option letter (A-{'ABCDEFGHIJKLMNOPQRSTUVWXYZ'[len(options) - 1]}) "
            "nor one option's text"
        )
    return letter, None


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def grade_reply(
    reply: str | None,
    *,
    question: str | None,
    options: Sequence[str] | None,
    ground_truth: Any,
    benchmark: str | None,
    grader: str | None = None,
    seed: int = 0,
    video_id: str = "",
    question_id: str | None = None,
) -> dict[str, Any]:
    """The grading columns of one row (`choice`, `correct`, `parse_failed` and `GRADE_COLUMNS`).

    `benchmark` is mlb's or lmms-eval's name (None: the generic layout, mlb's grader only); `grader` None is
    `default_grader(benchmark)`. Open-ended items (no options) are graded by mlb only.
    """
    from mlbcli.eval.benchmarks import BENCHMARKS, judge, options_for
    from mlbcli.eval.lmms_eval_grading import grade_lmms_eval
    from mlbcli.eval.prompting import grade

    chosen = resolve_grader(grader, benchmark)
    bench = BENCHMARKS.get(mlb_benchmark(benchmark) or "")
    text = reply or ""
    opts = options_for(bench, question, options)
    out: dict[str, Any] = dict.fromkeys(("choice", "correct", "parse_failed", *GRADE_COLUMNS))
    out["grader"] = chosen
    if not opts:
        out["correct"] = out["correct_mlb"] = grade(text, None, ground_truth, None)
        return out
    truth: str | None = None
    if not _empty(ground_truth):
        truth, out["grade_error"] = _truth(benchmark, ground_truth, opts)
    verdict = judge(text, opts, truth, bench, seed=seed, video_id=video_id, question_id=question_id)
    out["choice_mlb"] = verdict.choice
    out["correct_mlb"] = verdict.correct if truth is not None else None
    out["parse_failed_mlb"] = verdict.parse_failed
    task = lmms_eval_task(benchmark)
    if task is not None and out["grade_error"] is None:
        # Without a ground truth lmms-eval's reading is still recorded (graded against a stand-in, unused).
        verdict_lmms = grade_lmms_eval(
            task, text, opts, truth or "A", rng_seed_key=f"{seed}:{video_id}:{question_id}"
        )
        out["choice_lmms_eval"] = verdict_lmms.choice or verdict_lmms.guess
        counted = truth is not None and verdict_lmms.counted
        out["correct_lmms_eval"] = verdict_lmms.correct if counted else None
        out["parse_failed_lmms_eval"] = verdict_lmms.unreadable
    return choose(out, chosen)


def choose(row: dict[str, Any], grader: str) -> dict[str, Any]:
    """`row` with `choice` / `correct` / `parse_failed` taken from `grader`'s columns (in place)."""
    suffix = "lmms_eval" if grader == "lmms-eval" else "mlb"
    for name in ("choice", "correct", "parse_failed"):
        row[name] = row.get(f"{name}_{suffix}")
    row["grader"] = grader
    return row


def lmms_eval_accuracy(graded: list[dict[str, Any]], benchmark: str | None) -> tuple[float | None, list[str]]:
    """The lmms-eval grader's accuracy of `graded` rows as the task's own aggregation prints it (MLVU: the
    mean over ALL its task types, an absent one counting 0; MVBench: empty replies left out), and notes
    for the score table; (None, []) where lmms-eval has no such task or no row carries its verdict."""
    from mlbcli.eval.lmms_eval_grading import MLVU_DEV_TASK_TYPES, MLVU_TEST_TASK_TYPES, aggregate_lmms_eval

    task = lmms_eval_task(benchmark)
    per_category = task is not None and task.startswith(("mlvu", "mvbench"))
    rows = [
        r
        for r in graded
        if r.get("correct_lmms_eval") is not None and (r.get("category") or not per_category)
    ]
    if task is None or not rows:
        return None, []
    records = [{**r, "correct": r["correct_lmms_eval"], "counted": r.get("answer") != ""} for r in rows]
    try:
        accuracy = aggregate_lmms_eval(task, records)
    except ValueError as error:  # a category lmms-eval does not know: the per-row mean stands
        return None, [f"lmms-eval's aggregation cannot read these rows ({error})"]
    notes = []
    if task.startswith("mlvu"):
        types = MLVU_DEV_TASK_TYPES if task == "mlvu_dev" else MLVU_TEST_TASK_TYPES
        absent = len(set(types) - {r["category"] for r in rows})
        if absent:
            notes.append(f"lmms-eval's MLVU mean counts the {absent} absent task types as 0")
    return accuracy, notes
