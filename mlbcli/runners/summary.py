"""`RunSummary`: what one batch did, counted from the rows that reached the output file.

The harness (`runners.batch`) fills it, reporters (`runners.progress`) show it, the library
(`mlbcli.api`) returns it and the CLI turns `failed` into its exit code. A run stopped by a signal
(Ctrl-C, SIGTERM, SIGHUP) returns nothing: its `KeyboardInterrupt` carries the summary instead
(`summary_of`), and `stopped_text` says what was committed and what was not done.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunSummary:
    """What a batch did. `failed > 0` maps to exit code 1 in the CLI."""

    kind: str
    total: int = 0  # items found in the sources
    skipped: int = 0  # already done (resume)
    skipped_failed: int = 0  # failed before and unchanged since (`summarize` without --retry-failed)
    ok: int = 0
    failed: int = 0
    graded: int = 0  # items with ground truth
    correct: int = 0
    keep_sum: float = 0.0
    out: str | None = None
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)  # first few error messages, for the final table
    # `answer` into a file: the whole file's score (resumed rows included), as `mlb score` computes it;
    # `graded`/`correct` then count the whole file too. None: this run's rows only (e.g. --out -).
    file_score: Any = None

    @property
    def accuracy(self) -> float | None:
        """Accuracy of the output file (the benchmark's aggregation), else of this run's graded rows."""
        if self.file_score is not None:
            return self.file_score.accuracy
        return self.correct / self.graded if self.graded else None

    @property
    def committed(self) -> int:
        """Rows this run committed to the output (results and error rows)."""
        return self.ok + self.failed

    @property
    def not_done(self) -> int:
        """Items this run should have done but did not commit (a stop, a disk-full error): the next run
        does them."""
        return max(0, self.total - self.skipped - self.skipped_failed - self.committed)

    @property
    def mean_keep(self) -> float | None:
        return self.keep_sum / self.ok if self.ok else None

    def record(self, row: dict[str, Any]) -> None:
        """Count one committed row (an error row, or a result that may be graded)."""
        if row.get("error"):
            self.failed += 1
            if len(self.errors) < 5:
                self.errors.append(f"{row.get('video_id')}: {row['error']}")
            return
        self.ok += 1
        if row.get("keep_realized") is not None:
            self.keep_sum += float(row["keep_realized"])
        if row.get("correct") is not None:
            self.graded += 1
            self.correct += int(bool(row["correct"]))


def attach(interrupt: BaseException, summary: RunSummary) -> None:
    """Give a stopping run's `KeyboardInterrupt` its summary (see `summary_of`)."""
    interrupt.mlb_summary = summary  # type: ignore[attr-defined]


def summary_of(interrupt: BaseException) -> RunSummary | None:
    """The summary of the run that `interrupt` stopped; None when it stopped before items were counted."""
    summary = getattr(interrupt, "mlb_summary", None)
    return summary if isinstance(summary, RunSummary) else None


def stopped_text(interrupt: BaseException) -> str:
    """What a stopped run saved, for the CLI's last line after "mlb: terminated (SIGTERM); ":
    "2 item(s) committed, 1 not done; finished rows are saved, rerun to resume"."""
    saved = "finished rows are saved, rerun to resume"
    summary = summary_of(interrupt)
    if summary is None:
        return saved
    return f"{summary.committed} item(s) committed, {summary.not_done} not done; {saved}"
