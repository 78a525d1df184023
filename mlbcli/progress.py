"""Progress reporting: a rich bar on a terminal, plain periodic log lines otherwise (cron, CI).

The library calls `Reporter.start/advance/finish`; the CLI picks the implementation. Output goes to
stderr so that stdout stays machine-readable (`--out -`).
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any, Protocol, TextIO

if TYPE_CHECKING:
    from mlbcli.api import RunSummary


class Reporter(Protocol):
    def start(self, kind: str, *, total: int, skipped: int) -> None: ...

    def advance(self, row: dict[str, Any]) -> None: ...

    def finish(self, summary: RunSummary) -> None: ...


class NullReporter:
    """The library default: report nothing."""

    def start(self, kind: str, *, total: int, skipped: int) -> None:
        pass

    def advance(self, row: dict[str, Any]) -> None:
        pass

    def finish(self, summary: RunSummary) -> None:
        pass


def _rate_eta(done: int, total: int, elapsed: float) -> tuple[float, float | None]:
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = (total - done) / rate if rate > 0 else None
    return rate, eta


class PlainReporter:
    """One log line every `every_s` seconds and at the end: friendly to cron mail and log files."""

    def __init__(self, stream: TextIO | None = None, every_s: float = 30.0, quiet: bool = False):
        self.stream = stream or sys.stderr
        self.every_s = every_s
        self.quiet = quiet
        self.total = self.done = self.failed = 0
        self.kind = ""
        self.started = self.last = 0.0

    def _line(self, text: str) -> None:
        if not self.quiet:
            print(f"[mlb {time.strftime('%H:%M:%S')}] {text}", file=self.stream, flush=True)

    def start(self, kind: str, *, total: int, skipped: int) -> None:
        self.kind, self.total = kind, total
        self.started = self.last = time.monotonic()
        extra = f" ({skipped} already done, skipped)" if skipped else ""
        self._line(f"{kind}: {total} items to process{extra}")

    def advance(self, row: dict[str, Any]) -> None:
        self.done += 1
        self.failed += int(bool(row.get("error")))
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            rate, eta = _rate_eta(self.done, self.total, now - self.started)
            eta_text = f", ETA {eta:.0f}s" if eta is not None else ""
            self._line(
                f"{self.kind}: {self.done}/{self.total} done, {self.failed} failed, {rate:.2f}/s{eta_text}"
            )

    def finish(self, summary: RunSummary) -> None:
        self._line(summary_text(summary))


class RichReporter:
    """A rich progress bar (videos done, rate, ETA, failures) and a final summary table, on stderr."""

    def __init__(self, quiet: bool = False):
        from rich.console import Console

        self.console = Console(stderr=True)
        self.quiet = quiet
        self.progress: Any = None
        self.task: Any = None
        self.failed = 0

    def start(self, kind: str, *, total: int, skipped: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        if self.quiet:
            return
        if skipped:
            self.console.print(f"[dim]{skipped} items already done (resume), skipped[/dim]")
        self.progress = Progress(
            TextColumn(f"[bold]{kind}[/bold]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("[red]{task.fields[failed]}[/red]"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task(kind, total=total, rate="", failed="")
        self.started = time.monotonic()

    def advance(self, row: dict[str, Any]) -> None:
        if self.progress is None:
            return
        self.failed += int(bool(row.get("error")))
        done = self.progress.tasks[0].completed + 1
        rate, _ = _rate_eta(
            int(done), int(self.progress.tasks[0].total or 0), time.monotonic() - self.started
        )
        self.progress.update(
            self.task,
            advance=1,
            rate=f"{rate:.2f} items/s",
            failed=f"{self.failed} failed" if self.failed else "",
        )

    def finish(self, summary: RunSummary) -> None:
        from rich.table import Table

        if self.progress is not None:
            self.progress.stop()
        if self.quiet:
            return
        table = Table(title=f"mlb {summary.kind}", show_header=False)
        for label, value in summary_fields(summary):
            table.add_row(label, value)
        self.console.print(table)
        for error in summary.errors:
            self.console.print(f"[red]error[/red] {error}", highlight=False)


def summary_fields(summary: RunSummary) -> list[tuple[str, str]]:
    fields = [
        ("items", str(summary.total)),
        ("ok", str(summary.ok)),
        ("failed", str(summary.failed)),
        ("skipped (resume)", str(summary.skipped)),
    ]
    if summary.mean_keep is not None:
        fields.append(("mean keep (realized)", f"{summary.mean_keep:.3f}"))
    if summary.accuracy is not None:
        fields.append(("accuracy", f"{summary.accuracy:.1%} ({summary.correct}/{summary.graded})"))
    fields.append(("time", f"{summary.seconds:.1f}s"))
    if summary.out:
        fields.append(("output", summary.out))
    return fields


def summary_text(summary: RunSummary) -> str:
    return f"{summary.kind} finished: " + ", ".join(f"{k} {v}" for k, v in summary_fields(summary))
