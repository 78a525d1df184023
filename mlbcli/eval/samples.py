"""`mlb score --lmms-eval-samples DIR`: rows as lmms-eval's saved samples (``*_samples_<task>.jsonl``).

The layout is what lmms-eval 0.7.3's `EvaluationTracker.save_results_samples` writes for a generate-until
task (one request per doc): ``doc_id`` (counted per task), ``target`` (as the task stores it, as a string:
a letter, a 0-based index, MVBench's option text), ``filtered_resps`` (the reply itself: one request and
one response are unwrapped), ``resps`` only where it differs (never here: no filter changes the reply),
``token_counts``, ``doc_hash`` (SHA-256 of the doc's indented JSON), ``input`` (the prompt) and the task's
metric key with its per-sample record exactly as the task's ``process_results`` returns it (Video-MME's
duration/category/sub_category/task_category, MVBench's raw reply, EgoSchema's option index, ...; the verdict
is the lmms-eval grader's), so the task's aggregation function reads the file. ``doc`` is the question's
lmms-eval doc: the one `mlb manifest` wrote beside the manifest the rows came from (found through each row's
``origin``), else rebuilt from the row (then Video-MME's domain and task type are unknown, and lmms-eval's
Video-MME aggregation cannot read the file: a warning says so). lmms-eval drops ``doc`` on save; it is kept
here, with mlb's ids, so `mlb score` reads a sample back as the same row.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["load_docs", "sample_record", "task_of", "write_lmms_eval_samples"]

logger = logging.getLogger(__name__)


def task_of(row: dict[str, Any]) -> str:
    """lmms-eval's task name for a row (MVBench: one task per subtask)."""
    from mlbcli.eval.benchmarks import BENCHMARKS
    from mlbcli.eval.grading import lmms_eval_task, mlb_benchmark

    bench = BENCHMARKS.get(mlb_benchmark(row.get("benchmark")) or "")
    if bench is None:
        return "mlb_answer"
    if bench.name == "mvbench" and row.get("category"):
        return f"mvbench_{row['category']}"
    if lmms_eval_task(row.get("benchmark")) == "mlvu_test":  # mlb's "mlvu" is the dev split
        return "mlvu_test"
    return bench.lmms_eval_task


def _letter_index(letter: str | None) -> int:
    return "ABCDEFGHIJKLMNOPQRSTUVWXYZ".index(letter) if letter else -1


def _truth(row: dict[str, Any]) -> str | None:
    """The ground truth as a letter (lmms-eval's gt letter), None when it cannot be read."""
    from mlbcli.eval.grading import lmms_eval_task
    from mlbcli.eval.lmms_eval_grading import truth_letter

    task = lmms_eval_task(row.get("benchmark"))
    try:
        return truth_letter(task or "videomme", row.get("ground_truth"), row.get("options") or [])
    except ValueError:
        return None


def _lmms_letter(row: dict[str, Any]) -> str:
    """The letter lmms-eval's extractor read ("" when it read none: Video-MME and MLVU count that wrong)."""
    return "" if row.get("parse_failed_lmms_eval") else str(row.get("choice_lmms_eval") or "")


def _metric(name: str, row: dict[str, Any], doc: dict[str, Any]) -> Any:
    """The per-sample value of the task's metric, as its ``process_results`` returns it (lmms-eval 0.7.3).

    The verdict is the lmms-eval grader's (`lmms_eval_grading`; its seeded guess where the task draws one);
    the other fields come from the task's doc, so the task's aggregation function reads these records.
    """
    correct = bool(row.get("correct_lmms_eval"))
    if name == "videomme":  # videomme_process_results
        return {"question_id": doc.get("question_id"), "duration": doc.get("duration"),
                "category": doc.get("domain"), "sub_category": doc.get("sub_category"),
                "task_category": doc.get("task_type"), "pred_answer": _lmms_letter(row),
                "answer": doc.get("answer"), "score": float(correct), "videoID": doc.get("videoID")}  # fmt: skip
    if name == "mvbench":  # mvbench_process_results: the raw reply (empty ones are left out of the mean)
        return {"pred_answer": row.get("answer") or "", "gt_answer": _truth(row), "score": int(correct)}
    if name == "mlvu":  # mlvu_process_results
        return {"question_id": doc.get("question"), "task_type": doc.get("task_type"),
                "pred_answer": _lmms_letter(row), "answer": doc.get("answer")}  # fmt: skip
    if name == "egoschema":  # egoschema_process_results_generation: letter -> index, -1 for none
        return {"pred": _letter_index(row.get("choice_lmms_eval")), "ground_truth": doc.get("answer")}
    if name == "nextqa":  # nextqa_mc_process_results: parsed == OPTIONS[answer]
        return correct
    if name == "longvideobench":  # longvideobench_process_results
        return {"id": doc.get("id"), "duration_group": doc.get("duration_group"),
                "question_category": doc.get("question_category"), "answer": _truth(row),
                "parsed_pred": row.get("choice_lmms_eval")}  # fmt: skip
    raise ValueError(name)


def _labelled(options: list[str]) -> list[str]:
    """EgoSchema's options as its dataset stores them ("A. text"): its parser matches option text with them."""
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return [o if o.startswith(f"{x}.") else f"{x}. {o}" for x, o in zip(letters, options, strict=False)]


def _doc_from_row(name: str, row: dict[str, Any]) -> dict[str, Any]:
    """The task's doc rebuilt from a row, where no lmms-eval docs file was found (`mlb manifest` writes one):
    the fields a row does not carry (Video-MME's domain, sub-category, task type) are null."""
    options = list(row.get("options") or [])
    truth = row.get("ground_truth")
    index = int(truth) if isinstance(truth, str) and truth.isdigit() else truth
    if name == "videomme":
        return {"videoID": row.get("video_id"), "question_id": row.get("question_id"), "duration": row.get("category"),
                "domain": None, "sub_category": None, "task_type": None, "question": row.get("question"),
                "options": options, "answer": truth}  # fmt: skip
    if name == "mvbench":
        return {
            "video": row.get("video_id"),
            "question": row.get("question"),
            "candidates": options,
            "answer": truth,
        }
    if name == "mlvu":
        return {"video_name": row.get("video_id"), "question": row.get("question"), "answer": truth,
                "task_type": row.get("category"), "candidates": options}  # fmt: skip
    if name == "egoschema":
        return {
            "video_idx": row.get("video_id"),
            "question": row.get("question"),
            "option": _labelled(options),
            "answer": truth,
        }
    if name == "nextqa":
        return {"video": row.get("video_id"), "question": row.get("question"), "answer": index,
                "type": row.get("category"), **{f"a{i}": o for i, o in enumerate(options)}}  # fmt: skip
    padded = options + ["N/A"] * (5 - len(options))
    return {"id": row.get("question_id"), "video_id": row.get("video_id"), "question": row.get("question"),
            "correct_choice": index, "question_category": row.get("category"), "duration_group": None,
            **{f"option{i}": o for i, o in enumerate(padded)}}  # fmt: skip


def sample_record(doc_id: int, row: dict[str, Any], doc: dict[str, Any] | None = None) -> dict[str, Any]:
    """One row as an lmms-eval saved-samples line (module docstring); `doc`: the question's lmms-eval doc
    (from `mlb manifest`'s docs file), else rebuilt from the row."""
    from mlbcli.eval.benchmarks import BENCHMARKS
    from mlbcli.eval.grading import mlb_benchmark

    bench = BENCHMARKS.get(mlb_benchmark(row.get("benchmark")) or "")
    if bench is None:
        return _generic_record(doc_id, row)
    doc = dict(doc) if doc is not None else _doc_from_row(bench.name, row)
    # mlb's ids and category beside the task's fields, so `mlb score` reads a sample back as the same row.
    for key, column in (("video_id", "video_id"), ("question_id", "question_id"), ("category", "category")):
        doc.setdefault(key, row.get(column))
    return {
        "doc_id": doc_id,
        "doc": doc,
        "target": str(row.get("ground_truth")),
        "arguments": [row.get("prompt")],
        "filtered_resps": row.get("answer") or "",
        "token_counts": [None],
        "doc_hash": _doc_hash(doc),
        "input": row.get("prompt"),
        bench.lmms_eval_metric: _metric(bench.name, row, doc),
        "mlb": {"pred_answer": row.get("choice_mlb"), "correct": row.get("correct_mlb")},
    }


def _doc_hash(doc: dict[str, Any]) -> str:
    return hashlib.sha256(
        json.dumps(doc, indent=2, ensure_ascii=False, default=str).encode("utf-8")
    ).hexdigest()


def _generic_record(doc_id: int, row: dict[str, Any]) -> dict[str, Any]:
    """A row of no lmms-eval benchmark: the samples layout, with mlb's verdict as the metric."""
    doc = {
        "video_id": row.get("video_id"),
        "question_id": row.get("question_id"),
        "question": row.get("question"),
        "options": row.get("options"),
        "answer": row.get("ground_truth"),
        "category": row.get("category"),
    }
    correct = row.get("correct")
    metric = {
        "question_id": row.get("question_id"),
        "videoID": row.get("video_id"),
        "category": row.get("category"),
        "pred_answer": row.get("choice"),
        "answer": row.get("ground_truth"),
        "score": None if correct is None else float(bool(correct)),
        "parse_failed": row.get("parse_failed"),
    }
    return {
        "doc_id": doc_id,
        "doc": doc,
        "target": str(row.get("ground_truth")),
        "filtered_resps": row.get("answer") or "",
        "token_counts": [None],
        "doc_hash": _doc_hash(doc),
        "input": row.get("prompt"),
        "mlb_accuracy": metric,
    }


def _origins(results_file: str) -> list[Any]:
    """The ``origin`` column of an `mlb answer` results file ([] for other files)."""
    from mlbcli.io.formats import read_results

    try:
        table = read_results(results_file)
    except Exception:  # a predictions or samples file that is not in mlb's result formats: no origins
        return []
    return table.column("origin").to_pylist() if "origin" in table.column_names else []


def load_docs(rows: Sequence[dict[str, Any]], results_file: str | None = None) -> dict[str, dict[str, Any]]:
    """question id -> lmms-eval doc, from the docs file `mlb manifest` wrote beside each manifest the rows
    came from (a row's ``origin`` is ``<manifest>:<line>``; a relative manifest path is tried from here and
    from the results file's folder). {} when there is none."""
    from mlbcli.eval.converters import docs_path

    origins = [row.get("origin") for row in rows]
    if results_file and not any(origins):  # `mlb score` reads only the columns it scores: origin is apart
        origins = _origins(results_file)
    manifests = {str(origin).rsplit(":", 1)[0] for origin in origins if origin and ":" in str(origin)}
    bases = [Path.cwd()] + ([Path(results_file).resolve().parent] if results_file else [])
    docs: dict[str, dict[str, Any]] = {}
    for manifest in sorted(manifests):
        found = next((p for base in bases if (p := docs_path(base / manifest)).is_file()), None)
        if found is None:
            continue
        with open(found, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    record = json.loads(line)
                    docs[str(record["question_id"])] = record["doc"]
    return docs


def write_lmms_eval_samples(scores: Sequence[Any], folder: str) -> list[Path]:
    """`<folder>/<results stem>_samples_<task>.jsonl` per file and task; error rows (no reply) left out, as
    lmms-eval has no sample without a response."""
    out_dir = Path(folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for score in scores:
        by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
        docs = load_docs(score.rows, score.file)
        missing_docs = 0
        for row in score.rows:
            if not row.get("error"):
                task = task_of(row)
                doc = docs.get(str(row.get("question_id")))
                missing_docs += doc is None and task == "videomme"
                by_task[task].append(sample_record(len(by_task[task]), row, doc))
        if missing_docs:
            logger.warning(
                "%s: %d Video-MME rows have no lmms-eval doc (write the manifest with `mlb manifest videomme`): "
                "their samples lack domain, sub_category and task_type, which videomme_aggregate_results needs",
                score.file,
                missing_docs,
            )
        for task, samples in by_task.items():
            target = out_dir / f"{Path(score.file).stem}_samples_{task}.jsonl"
            tmp = target.with_name(target.name + ".tmp")
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.writelines(json.dumps(s, ensure_ascii=False, default=str) + "\n" for s in samples)
            tmp.replace(target)
            written.append(target)
    return written
