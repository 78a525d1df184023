"""`mlb score`: accuracy with confidence intervals, paired comparisons and lmms-eval samples from answer files.

Everything here works on the rows of `mlb answer` output files (any format) and imports no torch.

Statistics (clustered standard errors, Wilson and Agresti–Coull intervals, exact McNemar): see
`mlbcli.eval.stats`.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlbcli.errors import UsageError
from mlbcli.eval.stats import Z95, clustered_stderr, effective_n, mcnemar_exact, wilson_interval

__all__ = [
    "FileScore",
    "Paired",
    "Stats",
    "clustered_stderr",
    "mcnemar_exact",
    "nothing_to_score",
    "score_file",
    "score_files",
    "wilson_interval",
]

# Columns `mlb score` reads (missing ones, in files of older versions, read as null).
_COLUMNS = (
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
    "method",
    "keep_requested",
    "keep_realized",
    "flops_ratio",
    "model",
    "error",
)


# -- results -------------------------------------------------------------------------------------------------
@dataclass
class Stats:
    """Accuracy and cost of one set of rows (a file, or one category of it)."""

    n: int = 0  # graded rows
    correct: int = 0
    accuracy: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    se: float | None = None  # clustered standard error (micro), or of the macro mean
    videos: int = 0  # distinct videos among the graded rows (the clusters)
    parse_failures: int = 0  # replies that named no single option (graded or not, per the policy)
    excluded: int = 0  # parse failures the benchmark's policy leaves out of the accuracy
    errors: int = 0  # rows that failed (no answer)
    keep: float | None = None  # mean realised keep over answered rows
    flops_ratio: float | None = None  # mean FLOPs ratio over answered rows
    aggregation: str = "micro"  # or "macro over K categories"


@dataclass
class Paired:
    """This file against a baseline on their shared graded (video_id, question_id) rows."""

    n: int = 0
    delta: float | None = None  # accuracy here minus the baseline's, on the shared rows
    delta_ci_low: float | None = None
    delta_ci_high: float | None = None
    p_value: float | None = None  # exact McNemar
    flipped_to_correct: int = 0  # wrong in the baseline, right here
    flipped_to_wrong: int = 0  # right in the baseline, wrong here


@dataclass
class FileScore(Stats):
    """`Stats` of a whole file, what produced it, its categories and the paired comparison."""

    file: str = ""
    benchmark: str | None = None
    method: str | None = None
    keep_requested: float | None = None
    groups: dict[str, Stats] = field(default_factory=dict)  # --by value -> its stats
    paired: Paired | None = None
    group_paired: dict[str, Paired] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list, repr=False)


def read_answer_rows(path: str, fmt: str | None = None) -> list[dict[str, Any]]:
    """The rows of an `mlb answer` output file (only the columns scoring needs)."""
    from mlbcli.io.writers import KEY_KIND, read_results, schema_metadata

    if not Path(path).is_file():
        raise UsageError(f"{path}: no such results file")
    kind = schema_metadata(path, fmt).get(KEY_KIND)
    if kind not in (None, "answer"):
        raise UsageError(f"{path} holds `mlb {kind}` results; `mlb score` reads `mlb answer` files")
    table = read_results(path, fmt)
    if "correct" not in table.column_names:
        raise UsageError(f"{path} has no 'correct' column: not an `mlb answer` results file")
    names = [name for name in _COLUMNS if name in table.column_names]
    rows = table.select(names).to_pylist()
    for row in rows:
        for name in _COLUMNS:
            row.setdefault(name, None)
    return rows


def _mean(values: Iterable[Any]) -> float | None:
    numbers = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(numbers) / len(numbers) if numbers else None


def _micro(rows: list[dict[str, Any]]) -> Stats:
    answered = [row for row in rows if not row.get("error")]
    graded = [row for row in answered if row.get("correct") is not None]
    values = [1.0 if row["correct"] else 0.0 for row in graded]
    videos = [row.get("video_id") for row in graded]
    stats = Stats(
        n=len(graded),
        correct=int(sum(values)),
        videos=len(set(videos)),
        parse_failures=sum(1 for row in answered if row.get("parse_failed")),
        excluded=sum(
            1
            for row in answered
            if row.get("parse_failed") and row.get("correct") is None and row.get("ground_truth") is not None
        ),
        errors=len(rows) - len(answered),
        keep=_mean(row.get("keep_realized") for row in answered),
        flops_ratio=_mean(row.get("flops_ratio") for row in answered),
    )
    if graded:
        stats.accuracy = stats.correct / stats.n
        stats.se = clustered_stderr(values, videos)
        stats.ci_low, stats.ci_high = wilson_interval(stats.accuracy, effective_n(values, videos))
    return stats


def _macro(rows: list[dict[str, Any]], key: str) -> Stats:
    """The mean of per-category accuracies (categories with graded rows), with its interval."""
    stats = _micro(rows)
    groups = _group(rows, key)
    if len(groups) < 2 or None in groups:
        return stats  # no categories (or rows without one): micro
    accuracies, variance = [], 0.0
    for group in groups.values():
        graded = [row for row in group if not row.get("error") and row.get("correct") is not None]
        if not graded:
            continue
        values = [1.0 if row["correct"] else 0.0 for row in graded]
        accuracy = sum(values) / len(values)
        n_eff = effective_n(values, [row.get("video_id") for row in graded])
        adjusted = (accuracy * n_eff + Z95 * Z95 / 2) / (n_eff + Z95 * Z95)
        variance += adjusted * (1 - adjusted) / (n_eff + Z95 * Z95)
        accuracies.append(accuracy)
    k = len(accuracies)
    if not k:
        return stats
    stats.accuracy = sum(accuracies) / k
    stats.se = math.sqrt(variance) / k
    stats.ci_low = max(0.0, stats.accuracy - Z95 * stats.se)
    stats.ci_high = min(1.0, stats.accuracy + Z95 * stats.se)
    stats.aggregation = f"macro over {k} {key} values"
    return stats


def _group(rows: list[dict[str, Any]], key: str) -> dict[Any, list[dict[str, Any]]]:
    groups: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        value = row.get(key)
        groups[value if value is None else str(value)].append(row)
    return dict(groups)


def _only(values: Iterable[Any]) -> Any:
    found = {v for v in values if v is not None}
    return found.pop() if len(found) == 1 else None


def summarize(rows: list[dict[str, Any]], benchmark: str | None = None) -> Stats:
    """The accuracy of `rows` as `benchmark` aggregates it (macro over `category`, or micro)."""
    from mlbcli.eval.benchmarks import BENCHMARKS

    bench = BENCHMARKS.get(benchmark or "")
    if bench is not None and bench.aggregation == "macro":
        return _macro(rows, "category")
    return _micro(rows)


def paired(rows: list[dict[str, Any]], baseline: list[dict[str, Any]]) -> Paired:
    """Paired comparison of `rows` against `baseline` on their shared graded (video_id, question_id)."""

    def graded(table: list[dict[str, Any]]) -> dict[tuple[Any, Any], bool]:
        return {
            (row.get("video_id"), row.get("question_id")): bool(row["correct"])
            for row in table
            if not row.get("error") and row.get("correct") is not None
        }

    here, there = graded(rows), graded(baseline)
    shared = [key for key in here if key in there]
    result = Paired(n=len(shared))
    if not shared:
        return result
    diffs = [float(here[key]) - float(there[key]) for key in shared]
    result.flipped_to_correct = sum(1 for d in diffs if d > 0)
    result.flipped_to_wrong = sum(1 for d in diffs if d < 0)
    result.delta = sum(diffs) / len(diffs)
    se = clustered_stderr(diffs, [video for video, _ in shared])
    if se is not None:
        result.delta_ci_low, result.delta_ci_high = result.delta - Z95 * se, result.delta + Z95 * se
    result.p_value = mcnemar_exact(result.flipped_to_correct, result.flipped_to_wrong)
    return result


def score_rows(
    rows: list[dict[str, Any]],
    *,
    file: str = "",
    by: str | None = None,
    baseline: list[dict[str, Any]] | None = None,
) -> FileScore:
    """Score answer rows (see `score_file`)."""
    benchmark = _only(row.get("benchmark") for row in rows)
    overall = summarize(rows, benchmark)
    score = FileScore(
        **asdict(overall),
        file=file,
        benchmark=benchmark,
        method=_only(row.get("method") for row in rows if not row.get("error")),
        keep_requested=_only(row.get("keep_requested") for row in rows),
        rows=rows,
    )
    if by is not None:
        if rows and all(by not in row for row in rows):
            raise UsageError(f"--by {by}: {file or 'the results'} has no column {by!r}")
        for value, group in sorted(_group(rows, by).items(), key=lambda kv: (kv[0] is None, str(kv[0]))):
            name = "(none)" if value is None else value
            score.groups[name] = _micro(group)
            if baseline is not None:
                score.group_paired[name] = paired(group, baseline)
    if baseline is not None:
        score.paired = paired(rows, baseline)
    return score


def score_file(
    path: str, *, fmt: str | None = None, by: str | None = None, against: str | None = None
) -> FileScore:
    """Score one `mlb answer` results file, optionally per `by` column and against a baseline file."""
    baseline = read_answer_rows(against) if against else None
    return score_rows(read_answer_rows(path, fmt), file=str(path), by=by, baseline=baseline)


def score_files(
    paths: Sequence[str], *, by: str | None = None, against: str | None = None
) -> list[FileScore]:
    baseline = read_answer_rows(against) if against else None
    return [score_rows(read_answer_rows(path), file=str(path), by=by, baseline=baseline) for path in paths]


def nothing_to_score(score: FileScore) -> str | None:
    """Why `score` has no accuracy at all (no rows, every row failed, or no row with a ground truth),
    as one line naming the file; None when something was graded or held out by the benchmark's policy."""
    if score.n or score.excluded:
        return None
    rows, file = score.rows, score.file or "the results"
    if not rows:
        return f"{file}: nothing to score: the file has no rows"
    answered = [row for row in rows if not row.get("error")]
    if not answered:
        return f"{file}: nothing to score: all {len(rows)} rows failed (see `mlb show {file} --failed`)"
    return (
        f"{file}: nothing to score: none of its {len(answered)} answered rows has a ground truth (the "
        "`ground_truth` column is empty: the manifest gave no `answer` values); `mlb show` prints the answers"
    )


# -- output --------------------------------------------------------------------------------------------------
_STATS_KEYS = (
    "n",
    "correct",
    "accuracy",
    "ci_low",
    "ci_high",
    "se",
    "videos",
    "parse_failures",
    "excluded",
    "errors",
    "keep",
    "flops_ratio",
    "aggregation",
)


def _record(
    score: FileScore, stats: Stats, pair: Paired | None, by: str | None, group: Any
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "file": score.file,
        "by": by,
        "group": group,
        "benchmark": score.benchmark,
        "method": score.method,
        "keep_requested": score.keep_requested,
    }
    record.update({key: getattr(stats, key) for key in _STATS_KEYS})
    if pair is not None:  # the paired columns, its `n` as `n_paired`
        paired_columns = asdict(pair)
        record["n_paired"] = paired_columns.pop("n")
        record.update(paired_columns)
    return record


def records(
    scores: Sequence[FileScore], by: str | None = None, against: str | None = None
) -> list[dict[str, Any]]:
    """One JSON-ready record per file (group null), then one per `by` value of it."""
    out = []
    for score in scores:
        record = _record(score, score, score.paired, by, None)
        record["letters"] = dict(sorted(letter_distribution(score.rows).items()))
        if against:
            record["baseline"] = against
        out.append(record)
        for name, stats in score.groups.items():
            record = _record(score, stats, score.group_paired.get(name), by, name)
            if against:
                record["baseline"] = against
            out.append(record)
    return out


def to_json(scores: Sequence[FileScore], by: str | None = None, against: str | None = None) -> str:
    return json.dumps(records(scores, by, against), indent=2, allow_nan=False, default=str)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def render_tables(
    scores: Sequence[FileScore], by: str | None = None, against: str | None = None
) -> list[Any]:
    """Rich tables, percent units: accuracy per file (and per `by` value); with `against`, a second table
    of the paired comparisons."""
    from rich import box
    from rich.table import Table

    def new_table(columns: list[str]) -> Table:
        table = Table(box=box.SIMPLE_HEAD, title_justify="left", caption_justify="left")
        table.add_column("file" if by is None else f"file / {by}", overflow="fold", ratio=1)
        for name in columns:
            table.add_column(name, justify="right", no_wrap=True)
        return table

    accuracy = new_table(["n", "acc %", "95% CI", "unparsed", "keep", "FLOPs"])
    paired_table = new_table(["n paired", "Δ pts", "Δ 95% CI", "McNemar p", "+/−"]) if against else None

    def add(label: str, stats: Stats, pair: Paired | None) -> None:
        accuracy.add_row(
            label,
            str(stats.n),
            _pct(stats.accuracy) + ("ᵐ" if stats.aggregation.startswith("macro") else ""),
            "-" if stats.ci_low is None else f"{_pct(stats.ci_low)}–{_pct(stats.ci_high)}",
            str(stats.parse_failures),
            "-" if stats.keep is None else f"{stats.keep:.3f}",
            "-" if stats.flops_ratio is None else f"{stats.flops_ratio:.3f}",
        )
        if paired_table is None:
            return
        if pair is None or pair.delta is None or pair.p_value is None:
            paired_table.add_row(label, "0", "-", "-", "-", "-")
            return
        low, high = pair.delta_ci_low, pair.delta_ci_high
        paired_table.add_row(
            label,
            str(pair.n),
            f"{100 * pair.delta:+.1f}",
            "-" if low is None or high is None else f"{100 * low:+.1f} … {100 * high:+.1f}",
            f"{pair.p_value:.3g}",
            f"{pair.flipped_to_correct}/{pair.flipped_to_wrong}",
        )

    for score in scores:
        add(score.file, score, score.paired)
        for name, stats in score.groups.items():
            add(f"  {name}", stats, score.group_paired.get(name))
    notes = sorted({s.aggregation for s in scores if s.aggregation.startswith("macro")})
    captions = ["95% CI: Wilson, clustered by video; unparsed: replies naming no single option"]
    if notes:
        captions.append("ᵐ " + "; ".join(notes) + " (the benchmark's aggregation)")
    accuracy.caption = "\n".join(captions)
    if paired_table is None:
        return [accuracy]
    paired_table.title = f"against {against} (shared video_id, question_id)"
    paired_table.caption = "Δ: accuracy minus the baseline's; +/−: rows flipped to correct / to wrong"
    return [accuracy, paired_table]


# -- plot ----------------------------------------------------------------------------------------------------
def _label(score: FileScore) -> str:
    keep = score.keep_requested
    method = score.method or Path(score.file).stem
    return method if keep is None or keep >= 1.0 else f"{method} {keep:g}"


def plot(scores: Sequence[FileScore], path: str, baseline: FileScore | None = None) -> Path:
    """Accuracy (with 95% intervals) against the FLOPs ratio, one labelled point per file (PNG)."""
    import importlib

    try:  # (an optional dependency: imported by name, so type checking does not need it installed)
        importlib.import_module("matplotlib").use("Agg")
        plt = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        raise UsageError("--plot needs matplotlib, which is not installed (pip install matplotlib)") from None
    points = [s for s in [*scores, *([baseline] if baseline else [])] if s.accuracy is not None]
    if not points:
        raise UsageError("--plot: no file has graded rows")
    figure, axes = plt.subplots(figsize=(6, 4.5), dpi=120)
    for s in points:
        accuracy, flops = s.accuracy, s.flops_ratio
        if accuracy is None or flops is None:
            raise UsageError(f"--plot: {s.file} has no flops_ratio (no answered rows)")
        low = accuracy - (s.ci_low if s.ci_low is not None else accuracy)
        high = (s.ci_high if s.ci_high is not None else accuracy) - accuracy
        style = {"marker": "s", "color": "black"} if s is baseline else {"marker": "o"}
        axes.errorbar([flops], [100 * accuracy], yerr=[[100 * low], [100 * high]], capsize=3, **style)
        label = _label(s) + (" (baseline)" if s is baseline else "")
        axes.annotate(label, (flops, 100 * accuracy), textcoords="offset points", xytext=(5, 5))
    axes.set_xlabel("FLOPs ratio (visual tokens, vs unpruned)")
    axes.set_ylabel("accuracy % (95% CI)")
    benchmarks = sorted({s.benchmark for s in points if s.benchmark})
    axes.set_title(", ".join(benchmarks) or "accuracy vs compute")
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out)
    plt.close(figure)
    return out


# -- lmms-eval samples ---------------------------------------------------------------------------------------
def _task_of(row: dict[str, Any]) -> str:
    from mlbcli.eval.benchmarks import BENCHMARKS

    bench = BENCHMARKS.get(row.get("benchmark") or "")
    if bench is None:
        return "mlb_answer"
    if bench.name == "mvbench" and row.get("category"):  # lmms-eval has one task per MVBench subtask
        return f"mvbench_{row['category']}"
    return bench.lmms_eval_task


def _sample(doc_id: int, row: dict[str, Any]) -> dict[str, Any]:
    """One row as an lmms-eval per-sample record (`{date}_samples_{task}.jsonl` line)."""
    import hashlib

    from mlbcli.eval.benchmarks import BENCHMARKS
    from mlbcli.eval.prompting import answer_letter

    doc = {
        "video_id": row.get("video_id"),
        "question_id": row.get("question_id"),
        "question": row.get("question"),
        "options": row.get("options"),
        "answer": row.get("ground_truth"),
        "category": row.get("category"),
    }
    bench = BENCHMARKS.get(row.get("benchmark") or "")
    options = row.get("options")
    truth = row.get("ground_truth")
    target = answer_letter(truth, options) if options and truth else truth
    reply = row.get("answer") or ""
    correct = row.get("correct")
    metric = {
        "question_id": row.get("question_id"),
        "videoID": row.get("video_id"),
        "category": row.get("category"),
        "pred_answer": row.get("choice"),
        "answer": target,
        "score": None if correct is None else float(bool(correct)),
        "parse_failed": row.get("parse_failed"),
    }
    gen_kwargs: dict[str, Any] = {"temperature": 0, "do_sample": False}
    if bench is not None and bench.max_new_tokens:
        gen_kwargs["max_new_tokens"] = bench.max_new_tokens
    return {
        "doc_id": doc_id,
        "doc": doc,
        "target": target,
        "arguments": [row.get("prompt"), gen_kwargs],
        "resps": [[reply]],
        "filtered_resps": [reply],
        "doc_hash": hashlib.sha256(json.dumps(doc, indent=2, ensure_ascii=False).encode("utf-8")).hexdigest(),
        "input": row.get("prompt"),
        bench.lmms_eval_metric if bench else "mlb_accuracy": metric,
    }


def write_lmms_eval_samples(scores: Sequence[FileScore], folder: str) -> list[Path]:
    """`<folder>/<results stem>_samples_<task>.jsonl` per file and task, in lmms-eval's samples format.

    Error rows (no reply) are left out, as lmms-eval has no sample without a response.
    """
    out_dir = Path(folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for score in scores:
        by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
        answered = [row for row in score.rows if not row.get("error")]
        for doc_id, row in enumerate(answered):
            by_task[_task_of(row)].append(_sample(doc_id, row))
        for task, samples in by_task.items():
            target = out_dir / f"{Path(score.file).stem}_samples_{task}.jsonl"
            tmp = target.with_name(target.name + ".tmp")
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.writelines(json.dumps(s, ensure_ascii=False, default=str) + "\n" for s in samples)
            tmp.replace(target)
            written.append(target)
    return written


def letter_distribution(rows: Iterable[dict[str, Any]]) -> Counter:
    """How often each letter was chosen (a model that always says "A" shows here)."""
    return Counter(row.get("choice") for row in rows if not row.get("error") and row.get("choice"))
