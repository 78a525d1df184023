"""Manifests (JSONL, CSV, Parquet): one row per (video, question), read into `Item`s row by row.

A problem with the whole manifest (unreadable, no ``video`` column) is a ``UsageError``; a problem with
one row (bad JSON, bytes that are not UTF-8, options that are not a list, more cells than columns) makes
that row an error item keyed by its line, and the other rows go on. Unknown columns are warned about
once per manifest, with the column they probably meant (``choices`` -> ``options``), because a misspelt
column is otherwise ignored silently. Parquet is read in bounded batches, and pyarrow only when a
Parquet manifest is given (this module is on the CLI's fast path).
"""

from __future__ import annotations

import csv
import difflib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from mlbcli.errors import UsageError
from mlbcli.io.items import Item, LineError, as_given, broken_line, clean_text, printable, resolve

__all__ = ["MANIFEST_COLUMNS", "MANIFEST_EXTENSIONS", "manifest_items"]

logger = logging.getLogger(__name__)

MANIFEST_EXTENSIONS = frozenset({".jsonl", ".csv", ".parquet"})

MANIFEST_COLUMNS = ("video", "video_id", "question_id", "question", "options", "answer", "category")

# Names people use for a manifest column that difflib cannot guess (no letters in common).
_COLUMN_ALIASES = {
    "choices": "options",
    "candidates": "options",
    "path": "video",
    "file": "video",
    "filename": "video",
    "video_path": "video",
    "prompt": "question",
    "label": "answer",
    "gt": "answer",
    "ground_truth": "answer",
    "task_type": "category",
    "subtask": "category",
    "question_category": "category",
}

# One letter each in the prompt, A to Z (as mlbcli.eval.prompting.LETTERS; io may not import eval).
MAX_OPTIONS = 26

_PARQUET_BATCH_ROWS = 1024  # rows per pyarrow batch: bounded memory for huge manifests

_Rows = list[tuple[int, "dict[str, Any] | LineError"]]


def manifest_items(text: str, path: Path) -> Iterator[Item]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        columns, rows = _jsonl_rows(text, path)
    elif suffix == ".csv":
        columns, rows = _csv_rows(text, path)
    else:
        columns, rows = _parquet_rows(text, path)
    if columns:  # None: no line is a JSON object (all broken); []: an empty file. Nothing to check.
        _require_video_column(text, columns)
        _warn_unknown_columns(text, columns)
    if not rows:
        logger.warning("%s: the manifest is empty (no rows)", printable(text))
        return
    base = path.resolve().parent
    text_options = suffix != ".jsonl"  # CSV cells (and string Parquet columns) hold options as text
    for lineno, row in rows:
        origin = f"{printable(text)}:{lineno}"
        yield _row_item(
            row,
            base=base,
            origin=origin,
            fallback_id=f"{printable(path.name)}:{lineno}",
            text_options=text_options,
        )


def _jsonl_rows(text: str, path: Path) -> tuple[list[str] | None, _Rows]:
    """(the keys used by any line, in order of appearance; rows). Columns are None if no line is an object."""
    columns: dict[str, None] | None = None
    rows: _Rows = []
    with _open_text(text, path) as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            bad_at = _undecodable_at(line)
            if bad_at is not None:
                rows.append((lineno, LineError(_not_utf8(line, f"at column {bad_at + 1}"))))
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                rows.append((lineno, LineError(f"invalid JSON ({exc.msg} at column {exc.colno})")))
                continue
            if not isinstance(row, dict):
                rows.append((lineno, LineError(f"expected a JSON object, got {type(row).__name__}")))
                continue
            columns = columns if columns is not None else {}
            columns.update(dict.fromkeys(row))
            rows.append((lineno, row))
    return (list(columns) if columns is not None else None), rows


def _csv_rows(text: str, path: Path) -> tuple[list[str], _Rows]:
    rows: _Rows = []
    with _open_text(text, path, newline="") as fh:
        reader = csv.DictReader(fh)
        try:
            fields = [f.strip() for f in (reader.fieldnames or [])]
        except csv.Error as exc:
            raise UsageError(f"{printable(text)}: cannot read the CSV header ({exc})") from exc
        if not fields:  # an empty file: no header, no rows
            return [], rows
        reader.fieldnames = fields
        line_end = reader.line_num  # end of the header
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:  # e.g. a field over the csv module's size limit: this row only
                rows.append((line_end + 1, LineError(f"unreadable CSV row ({exc})")))
                line_end = reader.line_num
                continue
            # A quoted cell may span lines: report the row's first line, as an editor shows it.
            lineno, line_end = line_end + 1, reader.line_num
            if None in row:  # more cells than header columns
                rows.append(
                    (lineno, LineError(f"{len(fields) + len(row[None])} cells but {len(fields)} columns"))
                )
                continue
            bad = next((k for k, v in row.items() if v is not None and _undecodable_at(v) is not None), None)
            if bad is not None:
                rows.append((lineno, LineError(_not_utf8(row[bad], f"in column {printable(bad)!r}"))))
                continue
            rows.append((lineno, {k: (v if v != "" else None) for k, v in row.items()}))
    return fields, rows


def _parquet_rows(text: str, path: Path) -> tuple[list[str], _Rows]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:
        raise UsageError(f"{printable(text)}: cannot read Parquet manifest ({exc})") from exc
    columns = list(pf.schema_arrow.names)
    _require_video_column(text, columns)  # before reading the rows: a wrong file fails fast
    rows: _Rows = []
    for batch in pf.iter_batches(batch_size=_PARQUET_BATCH_ROWS):
        rows.extend(enumerate(batch.to_pylist(), start=len(rows) + 1))
    return columns, rows


def _open_text(text: str, path: Path, newline: str | None = None) -> Any:
    try:
        # utf-8-sig: spreadsheet tools write a BOM that would otherwise glue itself to the first column name.
        # surrogateescape: a line with bytes that are not UTF-8 is reported as that line's error, not a crash.
        return open(path, encoding="utf-8-sig", errors="surrogateescape", newline=newline)  # noqa: SIM115
    except OSError as exc:
        raise UsageError(f"{printable(text)}: cannot read manifest ({exc.strerror or exc})") from exc


def _undecodable_at(text: str) -> int | None:
    """Index of the first byte that was not UTF-8 (read as a surrogate escape), or None.

    Text read with "surrogateescape" holds no other lone surrogates, so the first character that cannot
    be encoded is that byte (encode runs at C speed: this is called on every manifest line).
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def _not_utf8(text: str, where: str) -> str:
    """``text`` holds an undecodable byte: say which byte, and ``where`` ("at column 12")."""
    byte = ord(text[_undecodable_at(text) or 0]) - 0xDC00
    return f"not valid UTF-8 text (byte 0x{byte:02x} {where})"


def _require_video_column(text: str, columns: Sequence[str]) -> None:
    if "video" not in columns:
        have = ", ".join(printable(str(c)) for c in columns) if columns else "none"
        hint = next(
            (f"; did you mean 'video' for {c!r}?" for c in columns if _suggest(str(c)) == "video"), ""
        )
        raise UsageError(f"{printable(text)}: manifest has no 'video' column (columns: {have}{hint})")


def _warn_unknown_columns(text: str, columns: Sequence[str]) -> None:
    """Once per manifest: a misspelt column (``choices`` for ``options``) is otherwise ignored silently."""
    unknown = [str(c) for c in columns if c not in MANIFEST_COLUMNS]
    if not unknown:
        return
    named = [
        repr(printable(c)) + (f" (did you mean {hint!r}?)" if (hint := _suggest(c)) else "") for c in unknown
    ]
    logger.warning(
        "%s: ignoring unknown column(s) %s; a manifest's columns are: %s",
        printable(text),
        ", ".join(named),
        ", ".join(MANIFEST_COLUMNS),
    )


def _suggest(column: str) -> str | None:
    """The manifest column a misspelt or differently named column probably meant, or None."""
    key = column.strip().lower()
    if key in MANIFEST_COLUMNS:
        return key
    if key in _COLUMN_ALIASES:
        return _COLUMN_ALIASES[key]
    close = difflib.get_close_matches(key, MANIFEST_COLUMNS, n=1)
    return close[0] if close else None


def _row_item(
    row: dict[str, Any] | LineError, *, base: Path, origin: str, fallback_id: str, text_options: bool
) -> Item:
    """Build an item from one manifest row; any problem becomes an error item instead of an exception.

    The error item keeps whatever identity could be recovered (video id and path) so the error row is
    attributable; otherwise its id is ``"<manifest name>:<line>"``. Its question_id is its origin.
    """
    video_id = fallback_id
    video_path = ""
    try:
        if isinstance(row, LineError):
            raise row
        explicit_id = _text(row, "video_id")
        video_id = explicit_id or video_id
        video = _text(row, "video")
        if video is None:
            raise LineError("no 'video' value")
        video_id = explicit_id or printable(as_given(video))  # escaped as a path given directly is
        if "\x00" in video:
            raise LineError("'video' contains a NUL byte")
        video_path = os.path.abspath(base / video)
        video_path = resolve(base / Path(video).expanduser())
        return Item(
            video_id=video_id,
            video_path=video_path,
            question_id=_text(row, "question_id"),
            question=_text(row, "question"),
            options=_parse_options(row.get("options"), text_options=text_options),
            answer=_text(row, "answer"),
            origin=origin,
            category=_text(row, "category"),
        )
    except LineError as exc:
        return broken_line(Item(video_id, video_path, None, None, None, None, origin), str(exc))


def _text(row: dict[str, Any], column: str) -> str | None:
    """The text of one cell; a value that is not text is the line's error, naming the column."""
    try:
        return clean_text(row.get(column))
    except LineError as exc:
        raise LineError(f"{column!r}: {exc}") from None


def _described(value: Any) -> str:
    """A cell value as the manifest's author wrote it: null, an empty text, a list, an object."""
    if value is None or (isinstance(value, float) and value != value):
        return "null"
    if isinstance(value, str):
        return f"the text {value.strip()!r:.40}" if value.strip() else "an empty text"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"{type(value).__name__} {value!r:.40}"


def _parse_options(value: Any, *, text_options: bool) -> tuple[str, ...] | None:
    """A list of option texts; in CSV cells (``text_options``) also a JSON list string or ``A|B|C``.

    A problem names the entry and what was expected ("'options' entry 2 of 4 is null; expected a
    non-empty text"): the caller prefixes the line (``m.jsonl:7``).
    """
    if value is None:
        return None
    if isinstance(value, str) and text_options:
        value = _options_from_string(value)
        if value is None:
            return None
    if not isinstance(value, list | tuple):
        raise LineError(f"'options' must be a list of option texts, got {_described(value)}")
    if len(value) > MAX_OPTIONS:
        raise LineError(
            f"'options' has {len(value)} entries; expected at most {MAX_OPTIONS} (one letter each, A to Z)"
        )
    options = []
    for number, opt in enumerate(value, start=1):
        where = f"'options' entry {number} of {len(value)}"
        try:
            text = clean_text(opt) if not isinstance(opt, list | dict | tuple) else None
        except LineError as exc:
            raise LineError(f"{where}: {exc}") from None
        if text is None:
            raise LineError(f"{where} is {_described(opt)}; expected a non-empty text")
        options.append(text)
    return tuple(options) or None


def _options_from_string(value: str) -> Any:
    text = value.strip()
    if not text:
        return None
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise LineError(f"'options' is not a valid JSON list ({exc.msg})") from exc
    if "|" in text:
        return [part for part in (p.strip() for p in text.split("|"))]
    raise LineError("'options' must be a JSON list or '|'-separated text")
