"""Results on screen: `mlb show FILE` and the answers table after a short run on a terminal.

Reads result files with `mlbcli.io.writers.read_results` (parquet, jsonl, csv) and prints them with rich.
No torch: `mlb show` starts as fast as `mlb --help`.
"""

from __future__ import annotations

import difflib
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from mlbcli.errors import UsageError
from mlbcli.runners.progress import error_reason

#: Columns `mlb show` prints by default, per kind (`mlb.kind` in the file's metadata).
DEFAULT_COLUMNS: dict[str, tuple[str, ...]] = {
    "answer": ("video_id", "question", "answer", "choice", "correct", "keep_realized", "error"),
    "summarize": ("video_id", "summary", "keep_realized", "error"),
    "compress": ("video_id", "method", "visual_tokens_in", "visual_tokens_kept", "flops_ratio", "error"),
    "sample": ("video_id", "frames", "duration_s", "width", "height", "contact_sheet", "error"),
}
#: The generated text of each kind (the column the answers table after a run shows).
TEXT_COLUMN = {"answer": "answer", "summarize": "summary"}
#: Row count up to which `answer`/`summarize` print their results on a terminal after the run.
SHOW_AFTER_RUN_MAX_ROWS = 20
DEFAULT_TABLE_ROWS = 20
#: Columns of free text: they take the room left (and wrap), down to `WIDE_MIN` characters.
WIDE_COLUMNS = frozenset({"answer", "summary", "question", "error", "segments", "options_json", "prompt"})
WIDE_MIN = 12


class CollectingReporter:
    """A reporter that forwards to `inner` and keeps the first `limit + 1` rows of the run (one more
    than shown, to know whether there were more), so a short run can show its answers."""

    def __init__(self, inner: Any, limit: int = SHOW_AFTER_RUN_MAX_ROWS):
        self.inner, self.limit = inner, limit
        self.rows: list[dict[str, Any]] = []

    def status(self, text: str) -> None:
        from mlbcli.runners.progress import report_status

        report_status(self.inner, text)

    def start(self, kind: str, *, total: int, skipped: int) -> None:
        self.inner.start(kind, total=total, skipped=skipped)

    def advance(self, row: dict[str, Any]) -> None:
        if len(self.rows) <= self.limit:
            self.rows.append(row)
        self.inner.advance(row)

    def finish(self, summary: Any) -> None:
        self.inner.finish(summary)


def _cell(value: Any, width: int | None = None) -> str:
    """A table cell: lists and dicts as compact JSON, floats to 4 significant digits, None empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        text = json.dumps(value, default=str, separators=(",", ":"))
    else:  # (generated text may hold control characters: they would move the terminal's cursor)
        text = "".join(c if c.isprintable() or c == "\n" else "\ufffd" for c in str(value))
    if width is not None and len(text) > width:
        text = text[: width - 1] + "…"
    return text


def _console(stream: TextIO | None) -> Any:
    from rich.console import Console

    return Console(file=stream or sys.stdout, highlight=False, soft_wrap=False)


def print_table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    *,
    title: str | None = None,
    caption: str | None = None,
    stream: TextIO | None = None,
) -> None:
    """`rows` as a rich table of `columns` fitted to the terminal: long text wraps inside its column; when
    the columns cannot all fit side by side, one block per row (name, then the value wrapped), so no
    column is cropped."""
    from rich.table import Table

    console = _console(stream)
    cells = [
        [_cell(row.get(name), None if name in TEXT_COLUMN.values() else 400) for name in columns]
        for row in rows
    ]
    narrowest = [WIDE_MIN if name in WIDE_COLUMNS else len(name) for name in columns]
    if len(columns) > 1 and sum(narrowest) + 3 * len(columns) + 1 > console.width:
        _print_records(console, columns, cells, title=title, caption=caption)
        return
    table = Table(title=title, caption=caption, show_lines=len(rows) > 1)
    for name, width in zip(columns, narrowest, strict=True):
        table.add_column(name, overflow="fold", ratio=3 if name in WIDE_COLUMNS else 1, min_width=width)
    for values in cells:
        table.add_row(*values)
    console.print(table)


def _print_records(
    console: Any,
    columns: Sequence[str],
    cells: Sequence[Sequence[str]],
    *,
    title: str | None,
    caption: str | None,
) -> None:
    """A table too wide for the terminal, one block per row: column names on the left, values wrapped."""
    from rich.table import Table

    table = Table(title=title, caption=caption, show_header=False, expand=True)
    table.add_column("column", no_wrap=True, style="bold", width=max(map(len, columns)))
    table.add_column("value", overflow="fold", ratio=1)
    for values in cells:
        for index, (name, value) in enumerate(zip(columns, values, strict=True)):
            table.add_row(name, value, end_section=index == len(columns) - 1)
    console.print(table)


def print_run_results(kind: str, rows: Sequence[dict[str, Any]], stream: TextIO | None = None) -> bool:
    """After a short `answer`/`summarize` run: video, question and answer (or the summary) of each row.

    Prints nothing (and returns False) for other kinds, for no rows, or for more than
    `SHOW_AFTER_RUN_MAX_ROWS` rows (read the output file with `mlb show`). Failed rows are left out:
    the reporter has named them on stderr.
    """
    text = TEXT_COLUMN.get(kind)
    shown = [row for row in rows if not row.get("error")]
    if text is None or not shown or len(rows) > SHOW_AFTER_RUN_MAX_ROWS:
        return False
    columns = ["video_id", "question", text] if kind == "answer" else ["video_id", text]
    if any(row.get("correct") is not None for row in shown):
        columns += ["choice", "correct"]
    print_table(shown, columns, stream=stream)
    return True


def show_file(
    path: str,
    *,
    limit: int | None = None,
    columns: Sequence[str] | None = None,
    as_json: bool = False,
    failed_only: bool = False,
    stream: TextIO | None = None,
) -> None:
    """`mlb show`: a result file as a table (or JSON lines with `as_json`).

    `columns` None = the kind's usual columns (every column with `as_json`); `limit` None = the first
    `DEFAULT_TABLE_ROWS` rows in a table, all rows as JSON; 0 = all rows.
    """
    from mlbcli.io.writers import read_results, schema_metadata

    file = Path(path)
    if not file.exists():
        raise UsageError(f"{path}: no such file")
    if file.is_dir():
        raise UsageError(f"{path} is a directory; give a result file (.parquet, .jsonl or .csv)")
    if limit is not None and limit < 0:
        raise UsageError(f"--limit must be >= 0, got {limit}")
    try:
        table = read_results(file)
        kind = schema_metadata(file).get("mlb.kind")
    except UsageError:
        raise
    except Exception as error:  # noqa: BLE001 (pyarrow and json raise many types for a bad file)
        raise UsageError(
            f"cannot read {path}: {str(error).splitlines()[0] if str(error) else error!r}"
        ) from None
    names = table.column_names
    if columns:
        unknown = [name for name in columns if name not in names]
        if unknown:
            hints = [difflib.get_close_matches(name, names, n=1) for name in unknown]
            guess = [
                f"{name!r} (did you mean {hint[0]!r}?)" if hint else repr(name)
                for name, hint in zip(unknown, hints, strict=True)
            ]
            raise UsageError(f"{path} has no column {', '.join(guess)}; columns: {', '.join(names)}")
        selected = list(columns)
    elif as_json:
        selected = names
    else:
        selected = [name for name in DEFAULT_COLUMNS.get(kind or "", ()) if name in names] or names[:8]
    if failed_only:
        if "error" not in names:
            raise UsageError(f"{path} has no 'error' column")
        table = table.filter(table["error"].is_valid())
    total = table.num_rows
    count = total if (limit == 0 or (limit is None and as_json)) else min(total, limit or DEFAULT_TABLE_ROWS)
    out = stream or sys.stdout
    if as_json:  # the stored values, unchanged
        for row in table.slice(0, count).select(selected).to_pylist():
            out.write(json.dumps(row, default=str, ensure_ascii=False) + "\n")
        return
    rows = table.slice(0, count).to_pylist()
    for row in rows:
        if row.get("error"):
            row["error"] = error_reason(row)
    if not columns:  # the usual columns, less those empty in every row shown (choice of open questions)
        selected = [name for name in selected if any(row.get(name) is not None for row in rows)] or selected
    more = f"; {total - count} more (--limit 0 for all)" if total > count else ""
    what = f"{kind} results" if kind else "rows"
    print_table(
        rows,
        selected,
        title=f"{file.name}: {total} {what}{' (failed)' if failed_only else ''}",
        caption=f"{count} shown{more}" if more else None,
        stream=out,
    )
