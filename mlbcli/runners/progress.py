"""Progress reporting: a rich bar on a terminal, plain periodic log lines otherwise (cron, CI), and a
`tqdm.auto` bar for library runs (a widget in Jupyter, a line on a terminal).

The library calls `Reporter.status/start/advance/finish`; the CLI picks the implementation. Output
goes to stderr so that stdout stays machine-readable (`--out -`). Whatever the mode, a failed item is
named (id, path, reason) as it happens and the run ends with its summary: `quiet` (`-q`) drops only
the progress and status lines, so cron mail shows what went wrong and nothing else.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from rich.markup import escape

if TYPE_CHECKING:
    from mlbcli.runners.summary import RunSummary


class Reporter(Protocol):
    def status(self, text: str) -> None: ...  # e.g. "loading model ..." before `start` (optional)

    def start(self, kind: str, *, total: int, skipped: int) -> None: ...

    def advance(self, row: dict[str, Any]) -> None: ...

    def finish(self, summary: RunSummary) -> None: ...


class NullReporter:
    """The library default: report nothing."""

    def status(self, text: str) -> None:
        pass

    def start(self, kind: str, *, total: int, skipped: int) -> None:
        pass

    def advance(self, row: dict[str, Any]) -> None:
        pass

    def finish(self, summary: RunSummary) -> None:
        pass


def report_status(reporter: Any, text: str) -> None:
    """`reporter.status(text)` for reporters that have it (`status` came later than the protocol's
    other methods, so a library user's own reporter may lack it)."""
    status = getattr(reporter, "status", None)
    if status is not None:
        status(text)


def model_loading_text(model: str, device: str, dtype: str) -> str:
    """'loading model <id> (<family>) on <device>/<dtype> ...': what the first seconds of a run do.

    The family comes from the checkpoint's config when it is already local (no network here: an
    unreadable config is `load_adapter`'s to report, with its own message).
    """
    from mlbcli.models import adapter_class_for, resolve_device, resolve_dtype

    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model, trust_remote_code=False, local_files_only=True)
        family = f" ({adapter_class_for(config).family})"
    except Exception:  # noqa: BLE001 (not cached, unsupported...: the load itself says why)
        family = ""
    try:
        where = resolve_device(device)
        precision = str(resolve_dtype(dtype, where)).removeprefix("torch.")
    except Exception:  # noqa: BLE001 (an unknown dtype: the load itself says why)
        where, precision = device, dtype
    return f"loading model {model}{family} on {where}/{precision} ..."


def error_reason(row: dict[str, Any]) -> str:
    """A failed row's `error` without the leading "<path>: " that decoder messages carry (the path
    is shown next to it, or equals the id for paths read from stdin: it would be said twice)."""
    reason = str(row.get("error") or "").strip()
    for prefix in dict.fromkeys(p for p in (row.get("video_path"), row.get("video_id")) if p):
        if reason.startswith(f"{prefix}: "):
            return reason[len(prefix) + 2 :]
    return reason


def failure_text(row: dict[str, Any]) -> str:
    """'<id> (<path>): <reason>' for a failed row, naming the file once."""
    video_id, path = row.get("video_id") or "?", row.get("video_path")
    where = f"{video_id} ({path})" if path and path != video_id else video_id
    return f"{where}: {error_reason(row)}"


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

    def _line(self, text: str, *, always: bool = False) -> None:
        """One timestamped line; progress lines (`always=False`) are dropped in quiet mode."""
        if always or not self.quiet:
            print(f"[mlb {time.strftime('%H:%M:%S')}] {text}", file=self.stream, flush=True)

    def status(self, text: str) -> None:
        self._line(text)

    def start(self, kind: str, *, total: int, skipped: int) -> None:
        self.kind, self.total = kind, total
        self.started = self.last = time.monotonic()
        extra = f" ({skipped} already done, skipped)" if skipped else ""
        self._line(f"{kind}: {total} items to process{extra}")

    def advance(self, row: dict[str, Any]) -> None:
        self.done += 1
        if row.get("error"):
            self.failed += 1
            self._line(f"error: {failure_text(row)}", always=True)
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            rate, eta = _rate_eta(self.done, self.total, now - self.started)
            eta_text = f", ETA {eta:.0f}s" if eta is not None else ""
            self._line(
                f"{self.kind}: {self.done}/{self.total} done, {self.failed} failed, {rate:.2f}/s{eta_text}"
            )

    def finish(self, summary: RunSummary) -> None:
        self._line(summary_text(summary), always=True)


class RichReporter:
    """A rich progress bar (videos done, rate, ETA, failures) and a final summary table, on stderr.

    Failed items are printed above the bar as they happen. Quiet mode prints no bar and no table,
    only those lines and the one-line summary (as `PlainReporter` does).
    """

    def __init__(self, quiet: bool = False):
        from rich.console import Console

        self.console = Console(stderr=True)
        self.quiet = quiet
        self.progress: Any = None
        self.task: Any = None
        self.failed = 0

    def status(self, text: str) -> None:
        if not self.quiet:
            self.console.print(f"[dim]{escape(text)}[/dim]", highlight=False)

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
        if row.get("error"):
            self.failed += 1
            # (above the live bar when there is one: rich keeps the bar at the bottom)
            self.console.print(f"[red]error[/red] {escape(failure_text(row))}", highlight=False)
        if self.progress is None:
            return
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
            self.console.print(escape(summary_text(summary)), highlight=False)
            return
        table = Table(title=f"mlb {summary.kind}", show_header=False)
        for label, value in summary_fields(summary):
            table.add_row(label, value)
        self.console.print(table)
        if summary.failed:
            where = f": `mlb show {summary.out} --failed`" if summary.out and summary.out != "-" else ""
            self.console.print(
                f"[red]{summary.failed} failed[/red] "
                + escape(f"(named above; their rows carry `error`{where})"),
                highlight=False,
            )


class TqdmReporter:
    """A `tqdm.auto` bar for library runs (notebooks, scripts): a widget in Jupyter, a line elsewhere.

    Failed items are written above the bar as they happen (id, path, reason), and the bar's postfix
    counts them; the summary is the `RunSummary` the call returns, so nothing else is printed. Goes to
    stderr unless `file` is given. The CLI keeps Rich (`RichReporter`).
    """

    def __init__(self, file: TextIO | None = None, *, leave: bool = True) -> None:
        self.file = file
        self.leave = leave
        self.bar: Any = None
        self.failed = 0

    def _write(self, text: str) -> None:
        from tqdm.auto import tqdm  # type: ignore[import-untyped]

        tqdm.write(text, file=self.file if self.file is not None else sys.stderr)

    def status(self, text: str) -> None:
        self._write(text)

    def start(self, kind: str, *, total: int, skipped: int) -> None:
        options = {"total": total, "desc": kind, "unit": "item", "leave": self.leave, "file": self.file}
        try:
            from tqdm.auto import tqdm

            self.bar = tqdm(**options)
        except ImportError:  # Jupyter without ipywidgets: tqdm.auto cannot draw its widget
            from tqdm.std import tqdm as plain  # type: ignore[import-untyped]

            self.bar = plain(**options)
        if skipped:
            self.bar.set_postfix_str(f"{skipped} already done, skipped")

    def advance(self, row: dict[str, Any]) -> None:
        if row.get("error"):
            self.failed += 1
            self._write(f"error: {failure_text(row)}")
        if self.bar is not None:
            if row.get("error"):
                self.bar.set_postfix_str(f"{self.failed} failed", refresh=False)
            self.bar.update(1)

    def finish(self, summary: RunSummary) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def summary_fields(summary: RunSummary) -> list[tuple[str, str]]:
    fields = [
        ("items", str(summary.total)),
        ("ok", str(summary.ok)),
        ("failed", str(summary.failed)),
        ("skipped (resume)", str(summary.skipped)),
    ]
    if summary.skipped_failed:  # remembered failures (cron): said on the last line, even with -q
        fields.append(("skipped (failed before, unchanged; --retry-failed)", str(summary.skipped_failed)))
    if summary.not_done:  # a stopped run (signal, disk full): what the next run does
        fields.append(("not done", str(summary.not_done)))
    # keep_realized > 0 on every row that has it (at least one token is kept), so keep_sum == 0 means
    # no row had one (`sample`): no mean to show, rather than a misleading 0.000.
    if summary.mean_keep is not None and summary.keep_sum > 0:
        fields.append(("mean keep (realized)", f"{summary.mean_keep:.3f}"))
    if summary.accuracy is not None:
        fields.append(("accuracy", f"{summary.accuracy:.1%} ({summary.correct}/{summary.graded})"))
    fields.append(("time", f"{summary.seconds:.1f}s"))
    if summary.out:
        fields.append(("output", summary.out))
    return fields


def summary_text(summary: RunSummary) -> str:
    return f"{summary.kind} finished: " + ", ".join(f"{k} {v}" for k, v in summary_fields(summary))
