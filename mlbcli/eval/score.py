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
    accuracy_mlb: float | None = None  # mlb's grader, the same aggregation (null: rows lack the column)
    accuracy_lmms_eval: float | None = None  # lmms-eval's grader, the same aggregation
    unreliable: str | None = None  # why the interval cannot be trusted (too few videos, one cluster)
    notes: list[str] = field(default_factory=list)  # rows left out of a macro mean, and why


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
    aggregation: str = "micro"  # the benchmark's averaging the delta is in
    note: str | None = None  # e.g. no row flipped: no interval to give


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


def read_answer_rows(path: str, fmt: str | None = None, extra: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The graded rows of a results, predictions or lmms-eval samples file (`mlbcli.eval.predictions`)."""
    from mlbcli.eval.predictions import read_rows

    return read_rows(path, fmt, extra)


def _mean(values: Iterable[Any]) -> float | None:
    numbers = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(numbers) / len(numbers) if numbers else None


#: Below this many videos an interval from a normal or Wilson approximation undercovers (simulated).
MIN_VIDEOS = 10


def _failed(row: dict[str, Any]) -> bool:
    """An error row: the item failed (no reply) or could not be graded (unreadable ground truth)."""
    return bool(row.get("error") or row.get("grade_error"))


def _graded(rows: list[dict[str, Any]], column: str = "correct") -> list[dict[str, Any]]:
    return [row for row in rows if not _failed(row) and row.get(column) is not None]


def _unreliable(videos: int) -> str | None:
    if videos <= 1:
        return "one video (cluster): the interval is unreliable"
    if videos < MIN_VIDEOS:
        return f"{videos} videos (< {MIN_VIDEOS}): the interval is unreliable"
    return None


def _accuracy(rows: list[dict[str, Any]], column: str) -> float | None:
    graded = _graded(rows, column)
    return sum(bool(row[column]) for row in graded) / len(graded) if graded else None


def _micro(rows: list[dict[str, Any]]) -> Stats:
    answered = [row for row in rows if not _failed(row)]
    graded = _graded(rows)
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
        accuracy_mlb=_accuracy(rows, "correct_mlb"),
        accuracy_lmms_eval=_accuracy(rows, "correct_lmms_eval"),
    )
    if graded:
        stats.accuracy = stats.correct / stats.n
        stats.se = clustered_stderr(values, videos)
        stats.ci_low, stats.ci_high = wilson_interval(stats.accuracy, effective_n(values, videos))
        stats.unreliable = _unreliable(stats.videos)
    return stats


def _category_accuracies(rows: list[dict[str, Any]], key: str, column: str) -> dict[str, list[float]]:
    """category -> the 0/1 outcomes of its graded rows (rows without a category left out)."""
    out: dict[str, list[float]] = {}
    for row in _graded(rows, column):
        if row.get(key) is not None:
            out.setdefault(str(row[key]), []).append(1.0 if row[column] else 0.0)
    return out


def _macro_of(rows: list[dict[str, Any]], key: str, column: str) -> float | None:
    groups = _category_accuracies(rows, key, column)
    return sum(sum(v) / len(v) for v in groups.values()) / len(groups) if groups else None


def _macro(rows: list[dict[str, Any]], key: str) -> Stats:
    """The mean of per-category accuracies over the categorised rows, with its interval; uncategorised
    rows are left out of the mean (a note says how many), never turning it into a micro accuracy."""
    stats = _micro(rows)
    uncategorised = [row for row in _graded(rows) if row.get(key) is None]
    categorised = [row for row in rows if row.get(key) is not None]
    if uncategorised:
        stats.notes.append(
            f"{len(uncategorised)} graded rows without a {key} are left out of the macro mean "
            "(shown as the group '(no category)')"
        )
    if stats.errors:
        stats.notes.append(f"{stats.errors} error rows are not in any accuracy (column 'errors')")
    accuracies, variance = [], 0.0
    for name in sorted(_category_accuracies(categorised, key, "correct")):
        graded = [row for row in _graded(categorised) if str(row.get(key)) == name]
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
    stats.ci_low = max(0.0, min(stats.accuracy, stats.accuracy - Z95 * stats.se))
    stats.ci_high = min(1.0, max(stats.accuracy, stats.accuracy + Z95 * stats.se))
    stats.accuracy_mlb = _macro_of(categorised, key, "correct_mlb")
    stats.accuracy_lmms_eval = _macro_of(categorised, key, "correct_lmms_eval")
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


def _is_macro(benchmark: str | None) -> bool:
    from mlbcli.eval.benchmarks import BENCHMARKS
    from mlbcli.eval.grading import mlb_benchmark

    bench = BENCHMARKS.get(mlb_benchmark(benchmark) or "")
    return bench is not None and bench.aggregation == "macro"


def summarize(rows: list[dict[str, Any]], benchmark: str | None = None) -> Stats:
    """The accuracy of `rows` as `benchmark` aggregates it (macro over `category`, or micro); the
    lmms-eval grader's accuracy as lmms-eval itself aggregates the task (`grading.lmms_eval_accuracy`)."""
    from mlbcli.eval.grading import lmms_eval_accuracy

    stats = _macro(rows, "category") if _is_macro(benchmark) else _micro(rows)
    accuracy, notes = lmms_eval_accuracy(_graded(rows), benchmark)
    stats.accuracy_lmms_eval = stats.accuracy_lmms_eval if accuracy is None else accuracy
    stats.notes += notes
    return stats


def _outcomes(table: list[dict[str, Any]]) -> dict[tuple[Any, Any], tuple[bool, Any]]:
    return {
        (row.get("video_id"), row.get("question_id")): (bool(row["correct"]), row.get("category"))
        for row in _graded(table)
    }


def paired(rows: list[dict[str, Any]], baseline: list[dict[str, Any]], *, macro: bool = False) -> Paired:
    """Paired comparison of `rows` against `baseline` on their shared graded (video_id, question_id); with
    `macro`, the delta is the mean over categories of the per-category deltas (the benchmark's averaging)."""
    here, there = _outcomes(rows), _outcomes(baseline)
    shared = [key for key in here if key in there and (not macro or here[key][1] is not None)]
    result = Paired(n=len(shared))
    if not shared:
        return result
    diffs = [float(here[key][0]) - float(there[key][0]) for key in shared]
    result.flipped_to_correct = sum(1 for d in diffs if d > 0)
    result.flipped_to_wrong = sum(1 for d in diffs if d < 0)
    result.p_value = mcnemar_exact(result.flipped_to_correct, result.flipped_to_wrong)
    if macro:
        by_category: dict[Any, list[tuple[float, Any]]] = defaultdict(list)
        for key, d in zip(shared, diffs, strict=True):
            by_category[here[key][1]].append((d, key[0]))
        deltas = [sum(d for d, _ in pairs) / len(pairs) for pairs in by_category.values()]
        ses = [clustered_stderr([d for d, _ in p], [v for _, v in p]) for p in by_category.values()]
        result.delta = sum(deltas) / len(deltas)
        se = math.sqrt(sum((x or 0.0) ** 2 for x in ses)) / len(deltas)
        result.aggregation = f"macro over {len(deltas)} category values"
    else:
        result.delta = sum(diffs) / len(diffs)
        se = clustered_stderr(diffs, [video for video, _ in shared]) or 0.0
    if not (result.flipped_to_correct or result.flipped_to_wrong):
        result.note = "no row flipped: the files agree on every shared row, so there is no interval"
    elif se > 0:
        result.delta_ci_low, result.delta_ci_high = result.delta - Z95 * se, result.delta + Z95 * se
    return result


def score_rows(
    rows: list[dict[str, Any]],
    *,
    file: str = "",
    by: str | None = None,
    baseline: list[dict[str, Any]] | None = None,
) -> FileScore:
    """Score answer rows (see `score_file`)."""
    from mlbcli.eval.grading import mlb_benchmark

    benchmark = _only(mlb_benchmark(row.get("benchmark")) or row.get("benchmark") for row in rows)
    macro = _is_macro(benchmark)
    # the rows' own name for lmms-eval's aggregation: mlvu_test is not mlvu_dev (both are mlb's "mlvu")
    overall = summarize(rows, _only(row.get("benchmark") for row in rows) or benchmark)
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
    elif macro:  # what the macro mean leaves out, as groups of their own
        left_out = {
            "(no category)": [row for row in rows if not _failed(row) and row.get("category") is None],
            "(errors)": [row for row in rows if _failed(row)],
        }
        score.groups.update({name: _micro(group) for name, group in left_out.items() if group})
    if baseline is not None:
        score.paired = paired(rows, baseline, macro=macro)
    return score


def score_file(
    path: str,
    *,
    fmt: str | None = None,
    by: str | None = None,
    against: str | None = None,
    grader: str | None = None,
) -> FileScore:
    """Score one results (or predictions, or lmms-eval samples) file, optionally per `by` column, against a
    baseline file, and with the headline of `grader` (None: as the rows were graded)."""
    return score_files([path], by=by, against=against, grader=grader, fmt=fmt)[0]


def score_files(
    paths: Sequence[str],
    *,
    by: str | None = None,
    against: str | None = None,
    grader: str | None = None,
    fmt: str | None = None,
) -> list[FileScore]:
    from mlbcli.eval.predictions import apply_grader

    extra = (by,) if by else ()
    baseline = apply_grader(read_answer_rows(against), grader) if against else None
    return [
        score_rows(
            apply_grader(read_answer_rows(path, fmt, extra), grader), file=str(path), by=by, baseline=baseline
        )
        for path in paths
    ]


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
    "accuracy_mlb",
    "accuracy_lmms_eval",
    "unreliable",
    "notes",
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


def _accuracy_cells(stats: Stats) -> list[str]:
    """n, acc %, mlb %, lmms-eval %, 95% CI (†: unreliable), unparsed, errors, keep, FLOPs."""
    macro = "ᵐ" if stats.aggregation.startswith("macro") else ""
    interval = "-" if stats.ci_low is None else f"{_pct(stats.ci_low)}–{_pct(stats.ci_high)}"
    return [
        str(stats.n),
        _pct(stats.accuracy) + macro,
        _pct(stats.accuracy_mlb),
        _pct(stats.accuracy_lmms_eval),
        interval + ("†" if stats.unreliable and stats.ci_low is not None else ""),
        str(stats.parse_failures),
        str(stats.errors),
        "-" if stats.keep is None else f"{stats.keep:.3f}",
        "-" if stats.flops_ratio is None else f"{stats.flops_ratio:.3f}",
    ]


def _paired_cells(pair: Paired | None) -> list[str]:
    if pair is None or pair.delta is None or pair.p_value is None:
        return ["0", "-", "-", "-", "-"]
    low, high = pair.delta_ci_low, pair.delta_ci_high
    interval = (
        "no flips"
        if pair.note
        else "-"
        if low is None or high is None
        else f"{100 * low:+.1f} … {100 * high:+.1f}"
    )
    return [
        str(pair.n),
        f"{100 * pair.delta:+.1f}" + ("ᵐ" if pair.aggregation.startswith("macro") else ""),
        interval,
        f"{pair.p_value:.3g}",
        f"{pair.flipped_to_correct}/{pair.flipped_to_wrong}",
    ]


def _captions(scores: Sequence[FileScore]) -> list[str]:
    captions = [
        "acc %: the headline grader's (each row's `grader`); mlb %: mlb's grader in the benchmark's averaging; "
        "lmms-eval %: lmms-eval's grader as its task aggregates (MLVU: over all task types). 95% CI: Wilson, clustered by video; unparsed: replies naming no single option; errors: "
        "rows that failed or whose ground truth cannot be read (in no accuracy)"
    ]
    notes = sorted({s.aggregation for s in scores if s.aggregation.startswith("macro")})
    if notes:
        captions.append("ᵐ " + "; ".join(notes) + " (the benchmark's aggregation)")
    for s in scores:
        captions += [f"{s.file}: {note}" for note in s.notes]
        if s.unreliable:
            captions.append(f"† {s.file}: {s.unreliable}")
    return captions


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

    columns = ["n", "acc %", "mlb %", "lmms-eval %", "95% CI", "unparsed", "errors", "keep", "FLOPs"]
    accuracy = new_table(columns)
    paired_table = new_table(["n paired", "Δ pts", "Δ 95% CI", "McNemar p", "+/−"]) if against else None
    for score in scores:
        entries: list[tuple[str, Stats, Paired | None]] = [(score.file, score, score.paired)]
        entries += [
            (f"  {name}", stats, score.group_paired.get(name)) for name, stats in score.groups.items()
        ]
        for label, stats, pair in entries:
            accuracy.add_row(label, *_accuracy_cells(stats))
            if paired_table is not None:
                paired_table.add_row(label, *_paired_cells(pair))
    accuracy.caption = "\n".join(_captions(scores))
    if paired_table is None:
        return [accuracy]
    paired_table.title = f"against {against} (shared video_id, question_id)"
    paired_table.caption = (
        "Δ: accuracy minus the baseline's (ᵐ: the benchmark's macro averaging); +/−: rows flipped to correct / "
        "to wrong; no flips: the files agree on every shared row"
    )
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
        # (clamped: an interval always contains its estimate, rounding must not make an error bar negative)
        low = max(0.0, accuracy - (s.ci_low if s.ci_low is not None else accuracy))
        high = max(0.0, (s.ci_high if s.ci_high is not None else accuracy) - accuracy)
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


def write_lmms_eval_samples(scores: Sequence[FileScore], folder: str) -> list[Path]:
    """lmms-eval saved-samples files of `scores` (`mlbcli.eval.samples`)."""
    from mlbcli.eval.samples import write_lmms_eval_samples as write

    return write(scores, folder)


def letter_distribution(rows: Iterable[dict[str, Any]]) -> Counter:
    """How often each letter was chosen (a model that always says "A" shows here)."""
    return Counter(row.get("choice") for row in rows if not row.get("error") and row.get("choice"))
