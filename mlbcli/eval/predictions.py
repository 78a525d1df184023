"""The rows `mlb score` grades: `mlb answer` files, any predictions file, lmms-eval samples files.

A predictions file (JSONL, CSV or Parquet) has one row per question with ``answer`` (the model's reply
text) and ``ground_truth`` (as the benchmark stores it: a letter, a 0-based index on EgoSchema, NExT-QA and
LongVideoBench, MVBench's option text), and optionally ``benchmark``, ``question``, ``options`` (a list; in
CSV a JSON list), ``category``, ``video_id``, ``question_id``. Every row is graded by both graders
(`mlbcli.eval.grading`). `mlb answer` files of older versions (no ``correct_mlb``) are graded again the
same way, with the seed their run recorded.

An lmms-eval samples file (``*_samples_<task>.jsonl``: ``doc_id``, ``doc``, ``target``, ``filtered_resps``)
becomes rows too: the reply is ``filtered_resps[0]``, the ground truth ``target``, the ids and options are
read from the task's doc (Video-MME ``videoID``/``question_id``/``options``, NExT-QA ``a0``..``a4``, ...).
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

from mlbcli.errors import UsageError
from mlbcli.eval.grading import GRADE_COLUMNS, choose, grade_reply

__all__ = ["SCORE_COLUMNS", "read_rows", "write_rows"]

# Columns `mlb score` reads from an `mlb answer` file (missing ones, in files of older versions, read null).
SCORE_COLUMNS = (
    "video_id",
    "question_id",
    "question",
    "options",
    "ground_truth",
    "category",
    "benchmark",
    "prompt",
    "answer",
    "choice",
    "correct",
    "parse_failed",
    *GRADE_COLUMNS,
    "method",
    "keep_requested",
    "keep_realized",
    "flops_ratio",
    "model",
    "error",
)
_SAMPLES_NAME = re.compile(r"_samples_(?P<task>[A-Za-z0-9_]+)\.jsonl$")


def _load_records(path: Path, fmt: str) -> list[dict[str, Any]]:
    """A foreign file's records as written (JSON types kept: an index stays an int)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if fmt == "csv":
        with open(path, newline="", encoding="utf-8") as fh:
            return [dict(row) for row in csv.DictReader(fh)]
    records = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise UsageError(f"{path}:{number}: not a JSON line ({error.msg})") from None
    return records


def _options(value: Any) -> list[str] | None:
    """A row's options: a list, or (CSV) a JSON list; None when there are none."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise UsageError(f"options {value[:60]!r} are not a list (in CSV: a JSON list)") from None
    if not isinstance(value, (list, tuple)):
        raise UsageError(f"options {value!r} are not a list")
    return [str(option) for option in value]


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _doc_options(doc: dict[str, Any]) -> list[str] | None:
    """The options of an lmms-eval doc, in each task's field names."""
    for key in ("options", "candidates", "option", "choices"):
        if isinstance(doc.get(key), list):
            return [str(option) for option in doc[key]]
    for prefix in ("a", "option", "candidate"):  # NExT-QA a0..a4, EgoSchema option 0..4, LVB candidates
        numbered = [doc[f"{prefix}{i}"] for i in range(26) if f"{prefix}{i}" in doc]
        if len(numbered) >= 2:
            return [str(option) for option in numbered]
    return None


def _first_reply(value: Any) -> str:
    while isinstance(value, list):
        value = value[0] if value else ""
    return "" if value is None else str(value)


def _from_sample(record: dict[str, Any], task: str | None) -> dict[str, Any]:
    """One lmms-eval samples record as a predictions row."""
    # lmms-eval 0.7.3 drops `doc` when it saves; its per-sample metric record carries the ids instead.
    doc = dict(record.get("doc") or {})
    for value in record.values():
        if isinstance(value, dict) and ("videoID" in value or "question_id" in value) and value is not doc:
            doc = {**value, **doc}
    video = doc.get("videoID") or doc.get("video_id") or doc.get("video_name") or doc.get("video")
    question_id = doc.get("question_id") or doc.get("qid") or doc.get("id")
    return {
        "video_id": str(video if video is not None else record.get("doc_id")),
        "question_id": str(question_id if question_id is not None else record.get("doc_id")),
        "question": doc.get("question"),
        "options": _doc_options(doc),
        "answer": _first_reply(record.get("filtered_resps", record.get("resps"))),
        "ground_truth": record.get("target"),
        "category": doc.get("category") or doc.get("task_type") or doc.get("question_category"),
        "benchmark": task,
    }


def _foreign_rows(path: Path, fmt: str) -> list[dict[str, Any]]:
    records = _load_records(path, fmt)
    if records and "doc_id" in records[0] and ("filtered_resps" in records[0] or "resps" in records[0]):
        match = _SAMPLES_NAME.search(path.name)
        task = match.group("task") if match else None
        return [_from_sample(record, task) for record in records]
    missing = [name for name in ("answer", "ground_truth") if records and name not in records[0]]
    if missing:
        raise UsageError(
            f"{path} is not a predictions file: no column {', '.join(map(repr, missing))} (a predictions "
            "file has answer (the reply), ground_truth and optionally benchmark, question, options, category, "
            "video_id, question_id)"
        )
    rows = []
    for number, record in enumerate(records):
        rows.append(
            {
                **record,  # other columns stay (`--by` any of them; `--rows` keeps them)
                "video_id": _text(record.get("video_id")) or str(number),
                "question_id": _text(record.get("question_id")) or str(number),
                "question": _text(record.get("question")),
                "options": _options(record.get("options")),
                "answer": "" if record.get("answer") is None else str(record["answer"]),
                "ground_truth": record.get("ground_truth"),
                "category": _text(record.get("category")),
                "benchmark": _text(record.get("benchmark")),
            }
        )
    return rows


def _regrade(rows: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    for row in rows:
        truth = row.get("ground_truth")
        bench = str(row.get("benchmark") or "")
        if bench.startswith("mvbench_") and not row.get("category"):  # lmms-eval's per-subtask tasks
            row["category"] = bench.removeprefix("mvbench_")
        try:
            graded = grade_reply(
                row.get("answer"),
                question=row.get("question"),
                options=row.get("options"),
                ground_truth=truth,
                benchmark=row.get("benchmark"),
                seed=seed,
                video_id=str(row.get("video_id") or ""),
                question_id=row.get("question_id"),
            )
        except (ValueError, UsageError) as error:  # e.g. more options than letters
            graded = {"grade_error": str(error), "correct": None}
        row.update(graded)
        if isinstance(truth, int) and not isinstance(truth, bool):
            row["ground_truth"] = str(truth)  # (a string column, as `mlb answer` writes it)
    return rows


def _run_seed(rows: list[dict[str, Any]], options_json: Any) -> int:
    try:
        return int(json.loads(options_json or "{}").get("seed") or 0)
    except (TypeError, ValueError):
        return 0


def read_rows(path: str, fmt: str | None = None, extra: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The graded rows of `path`: an `mlb answer` file as written, anything else graded here (module doc).

    `extra`: further columns to keep (`--by`); one that the file lacks is a UsageError.
    """
    from mlbcli.io.formats import infer_format
    from mlbcli.io.writers import KEY_KIND, read_results, schema_metadata

    file = Path(path)
    if not file.is_file():
        raise UsageError(f"{path}: no such results file")
    kind = schema_metadata(path, fmt).get(KEY_KIND)
    if kind not in (None, "answer"):
        raise UsageError(f"{path} holds `mlb {kind}` results; `mlb score` reads `mlb answer` files")
    table = read_results(path, fmt) if kind is not None or infer_format(file, fmt) == "parquet" else None
    if table is None or "correct" not in table.column_names:  # not written by `mlb answer`
        rows = _regrade(_foreign_rows(file, infer_format(file, fmt)), 0)
        names = set(rows[0]) if rows else set()
    else:
        names = set(table.column_names)
        wanted = [name for name in (*SCORE_COLUMNS, *extra, "options_json") if name in names]
        rows = table.select(list(dict.fromkeys(wanted))).to_pylist()
        # rows written before both graders (no column, or null where a ground truth exists): grade again
        stale = [
            row
            for row in rows
            if not row.get("error")
            and row.get("correct_mlb") is None
            and (("correct_mlb" not in names) or row.get("ground_truth") not in (None, ""))
        ]
        if stale:
            _regrade(stale, _run_seed(rows, rows[0].get("options_json") if rows else None))
        names |= set(GRADE_COLUMNS)
    for name in extra:
        if rows and name not in names:
            raise UsageError(f"--by {name}: {path} has no column {name!r}")
    for row in rows:
        row.pop("options_json", None)
        for name in SCORE_COLUMNS:
            row.setdefault(name, None)
    return rows


def apply_grader(rows: list[dict[str, Any]], grader: str | None) -> list[dict[str, Any]]:
    """`rows` with the headline `choice` / `correct` of `grader` (None: as the rows were graded)."""
    if grader is None:
        return rows
    from mlbcli.eval.grading import resolve_grader

    for row in rows:
        if not row.get("error") and row.get("options"):
            choose(row, resolve_grader(grader, row.get("benchmark")))
    return rows


def write_rows(rows: list[dict[str, Any]], path: str) -> Path:
    """The graded rows as a Parquet file (`--rows`): the predictions' columns and both graders'."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    names = list(dict.fromkeys(name for row in rows for name in row))
    table = pa.Table.from_pylist([{name: row.get(name) for name in names} for row in rows])
    tmp = out.with_name(out.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(out)
    return out
