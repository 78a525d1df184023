"""Read result files and reduce them to what the report shows: a run summary and accuracy with intervals.

Why a separate module: the HTML code should only format; everything numeric (means, Wilson intervals,
the grouping by benchmark and category) lives here and is testable without a page. Only the columns the
report uses are converted to Python objects, so a 10k-row file costs milliseconds, not seconds; columns a
file lacks (older schema versions, ``sample`` files, JSONL without a sidecar) are simply absent.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Accuracy", "Run", "RunSummary", "load_run", "wilson"]

Z95 = 1.959963984540054

# Columns the report reads when present; anything else in the file is ignored.
COLUMNS = (
    "video_id",
    "video_path",
    "question_id",
    "question",
    "options",
    "ground_truth",
    "answer",
    "summary",
    "choice",
    "correct",
    "correct_lmms_eval",
    "category",
    "benchmark",
    "model",
    "method",
    "keep_requested",
    "keep_realized",
    "flops_ratio",
    "frames",
    "frame_timestamps_s",
    "timestamps_s",
    "frame_indices",
    "kept_tokens",
    "attention_per_frame",
    "attention_per_frame_debiased",
    "error",
    "decode_s",
    "encode_s",
    "prefill_s",
    "generate_s",
    "options_json",
)
TIME_COLUMNS = ("decode_s", "encode_s", "prefill_s", "generate_s")


@dataclass
class Accuracy:
    """Share of rows graded correct among the graded ones, with Wilson's 95% score interval."""

    correct: int
    n: int

    @property
    def value(self) -> float:
        return self.correct / self.n if self.n else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.correct, self.n)


@dataclass
class RunSummary:
    """One input file at a glance (the report's summary table)."""

    model: str | None = None
    family: str | None = None
    method: str | None = None
    variant: str | None = None
    keep_requested: list[float] = field(default_factory=list)
    keep_realized: float | None = None
    flops_ratio: float | None = None
    frames: list[int] = field(default_factory=list)
    ok: int = 0
    failed: int = 0
    wall_s: float | None = None


@dataclass
class Run:
    """A result file: its rows (only the report's columns), metadata and derived numbers."""

    path: str
    label: str
    rows: list[dict[str, Any]]
    options: dict[str, Any]
    summary: RunSummary
    # grader -> group ("all", "benchmark: x", "category: y") -> Accuracy
    accuracy: dict[str, dict[str, Accuracy]]
    error: str | None = None


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval for ``k`` successes in ``n`` trials; (0, 1) when n is 0."""
    if n <= 0:
        return (0.0, 1.0)
    p = k / n
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(max(p * (1 - p) / n + z * z / (4 * n * n), 0.0))
    return (max(0.0, center - half), min(1.0, center + half))


def _read_table(path: str) -> tuple[Any, dict[str, str]]:
    """(pyarrow table, metadata) of a result file; mlb's own reader when present (JSONL/CSV sidecars)."""
    try:
        from mlbcli.io.writers import read_results, schema_metadata

        return read_results(path), schema_metadata(path)
    except ImportError:  # pragma: no cover - the package is being restructured; read Parquet directly
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        raw = table.schema.metadata or {}
        return table, {k.decode(errors="replace"): v.decode(errors="replace") for k, v in raw.items()}


def _options_of(rows: list[dict[str, Any]], meta: dict[str, str]) -> dict[str, Any]:
    """The run's options: the file metadata's ``options``, completed by the first row's ``options_json``."""
    merged: dict[str, Any] = {}
    for text in [meta.get("options")] + [r.get("options_json") for r in rows[:1]]:
        if not text:
            continue
        try:
            loaded = json.loads(text)
        except (TypeError, ValueError):
            continue
        if isinstance(loaded, dict):
            for key, value in loaded.items():
                merged.setdefault(key, value)
    return merged


def _mean(values: Iterable[Any]) -> float | None:
    nums = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(float(v))]
    return sum(nums) / len(nums) if nums else None


def _distinct(values: Iterable[Any]) -> list[Any]:
    return sorted({v for v in values if v is not None}, key=str)


def _first(values: Iterable[Any]) -> Any:
    return next((v for v in values if v not in (None, "")), None)


def _family_of(model: str | None, options: dict[str, Any]) -> str | None:
    """The model family as recorded, else as `mlbcli.models` reads it from a local checkpoint folder's
    config (never the network: a report must render offline and at once); None otherwise."""
    if options.get("family"):
        return str(options["family"])
    if not model or not Path(model).is_dir():
        return None
    try:
        from mlbcli.models import adapter_class_for, load_config

        return str(adapter_class_for(load_config(model)).family)
    except Exception:  # noqa: BLE001 - a label only: an unreadable or unknown checkpoint shows no family
        return None


def summarize_run(rows: list[dict[str, Any]], options: dict[str, Any]) -> RunSummary:
    """The summary-table numbers of one file (means over rows that carry the value)."""
    model = _first(r.get("model") for r in rows) or options.get("model")
    failed = sum(1 for r in rows if r.get("error"))
    times = [sum(r.get(c) or 0.0 for c in TIME_COLUMNS) for r in rows]
    has_time = any(c in rows[0] for c in TIME_COLUMNS) if rows else False
    return RunSummary(
        model=model,
        family=_family_of(model, options),
        method=_first(r.get("method") for r in rows) or options.get("method"),
        variant=options.get("variant"),
        keep_requested=_distinct(r.get("keep_requested") for r in rows),
        keep_realized=_mean(r.get("keep_realized") for r in rows),
        flops_ratio=_mean(r.get("flops_ratio") for r in rows),
        frames=_distinct(r.get("frames") for r in rows),
        ok=len(rows) - failed,
        failed=failed,
        wall_s=sum(times) if has_time else None,
    )


def accuracy_by_group(rows: list[dict[str, Any]], column: str) -> dict[str, Accuracy]:
    """Accuracy of the rows graded in ``column`` (null = not graded), overall and per benchmark/category."""
    groups: dict[str, Accuracy] = defaultdict(lambda: Accuracy(0, 0))
    for row in rows:
        value = row.get(column)
        if value is None:
            continue
        keys = ["all"]
        if row.get("benchmark"):
            keys.append(f"benchmark: {row['benchmark']}")
        if row.get("category"):
            keys.append(f"category: {row['category']}")
        for key in keys:
            groups[key].n += 1
            groups[key].correct += bool(value)
    return dict(groups)


def _label_for(path: str, taken: set[str]) -> str:
    """A short unique label: the file name, with its folder when two inputs share a name."""
    p = Path(path)
    label = p.name
    if label in taken:
        label = str(Path(p.parent.name) / p.name)
    base, k = label, 2
    while label in taken:
        label, k = f"{base} ({k})", k + 1
    taken.add(label)
    return label


def load_run(path: str | os.PathLike[str], taken: set[str] | None = None) -> Run:
    """Read one result file; a file that cannot be read becomes a ``Run`` with ``error`` set, not a crash."""
    name = str(path)
    label = _label_for(name, taken if taken is not None else set())
    try:
        table, meta = _read_table(name)
    except Exception as exc:  # noqa: BLE001 - any reader failure is shown in the page
        return Run(name, label, [], {}, RunSummary(), {}, error=f"{type(exc).__name__}: {exc}")
    present = [c for c in COLUMNS if c in table.column_names]
    rows = table.select(present).to_pylist()
    options = _options_of(rows, meta)
    graders: list[str] = [c for c in ("correct", "correct_lmms_eval") if c in present]
    accuracy: dict[str, dict[str, Accuracy]] = {}
    for grader in graders:
        groups = accuracy_by_group(rows, grader)
        if groups:
            accuracy[grader] = groups
    return Run(name, label, rows, options, summarize_run(rows, options), accuracy)
