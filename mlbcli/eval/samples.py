"""`mlb score --lmms-eval-samples DIR`: rows as lmms-eval's saved samples (``*_samples_<task>.jsonl``).

The layout is what lmms-eval 0.7.3's `EvaluationTracker.save_results_samples` writes for a generate-until
task (one request per doc): ``doc_id`` (counted per task), ``target`` (as the task stores it, as a string:
a letter, a 0-based index, MVBench's option text), ``filtered_resps`` (the reply itself: one request and
one response are unwrapped), ``resps`` only where it differs (never here: no filter changes the reply),
``token_counts``, ``doc_hash`` (SHA-256 of the doc's indented JSON), ``input`` (the prompt) and the task's
metric key with its per-sample record (``pred_answer`` and ``score`` are lmms-eval's verdict). ``doc`` is
kept beside them (lmms-eval drops it on save) so `mlb score` can read the ids and options back.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["sample_record", "task_of", "write_lmms_eval_samples"]


def task_of(row: dict[str, Any]) -> str:
    """lmms-eval's task name for a row (MVBench: one task per subtask)."""
    from mlbcli.eval.benchmarks import BENCHMARKS
    from mlbcli.eval.grading import mlb_benchmark

    bench = BENCHMARKS.get(mlb_benchmark(row.get("benchmark")) or "")
    if bench is None:
        return "mlb_answer"
    if bench.name == "mvbench" and row.get("category"):
        return f"mvbench_{row['category']}"
    return bench.lmms_eval_task


def sample_record(doc_id: int, row: dict[str, Any]) -> dict[str, Any]:
    """One row as an lmms-eval saved-samples line (module docstring)."""
    from mlbcli.eval.benchmarks import BENCHMARKS
    from mlbcli.eval.grading import mlb_benchmark

    doc = {
        "video_id": row.get("video_id"),
        "question_id": row.get("question_id"),
        "question": row.get("question"),
        "options": row.get("options"),
        "answer": row.get("ground_truth"),
        "category": row.get("category"),
    }
    bench = BENCHMARKS.get(mlb_benchmark(row.get("benchmark")) or "")
    lmms = row.get("correct_lmms_eval")
    correct = lmms if lmms is not None else row.get("correct")
    metric = {
        "question_id": row.get("question_id"),
        "videoID": row.get("video_id"),
        "category": row.get("category"),
        "pred_answer": row.get("choice_lmms_eval") if lmms is not None else row.get("choice"),
        "answer": row.get("ground_truth"),
        "score": None if correct is None else float(bool(correct)),
        "parse_failed": row.get("parse_failed_lmms_eval") if lmms is not None else row.get("parse_failed"),
        "mlb_pred_answer": row.get("choice_mlb"),
        "mlb_score": None if row.get("correct_mlb") is None else float(bool(row["correct_mlb"])),
    }
    return {
        "doc_id": doc_id,
        "doc": doc,
        "target": str(row.get("ground_truth")),
        "filtered_resps": row.get("answer") or "",
        "token_counts": [None],
        "doc_hash": hashlib.sha256(json.dumps(doc, indent=2, ensure_ascii=False).encode("utf-8")).hexdigest(),
        "input": row.get("prompt"),
        bench.lmms_eval_metric if bench else "mlb_accuracy": metric,
    }


def write_lmms_eval_samples(scores: Sequence[Any], folder: str) -> list[Path]:
    """`<folder>/<results stem>_samples_<task>.jsonl` per file and task; error rows (no reply) left out, as
    lmms-eval has no sample without a response."""
    out_dir = Path(folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for score in scores:
        by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in score.rows:
            if not row.get("error"):
                task = task_of(row)
                by_task[task].append(sample_record(len(by_task[task]), row))
        for task, samples in by_task.items():
            target = out_dir / f"{Path(score.file).stem}_samples_{task}.jsonl"
            tmp = target.with_name(target.name + ".tmp")
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.writelines(json.dumps(s, ensure_ascii=False, default=str) + "\n" for s in samples)
            tmp.replace(target)
            written.append(target)
    return written
