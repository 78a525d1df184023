"""Turn CLI sources (video files, folders, manifests, ``-`` for stdin) into a stream of work items.

A *source* problem (path does not exist, unknown file type, manifest without a ``video`` column, ``-``
twice) is a ``UsageError``: nothing should run. A problem with one manifest *line* (bad JSON, no video,
options not a list) only spoils that line: it becomes an ``Item`` with ``error`` set, which the runner
writes as an error row, and the other lines go on. Videos are not opened here (a missing video file
named by a manifest is reported later by the decoder, per item).

IDs are what resume keys on, so they are derived deterministically from the inputs, never from run
state: ``video_id`` from the path as the user wrote it, ``question_id`` from a hash of the question
text and options.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePath
from typing import Any, TextIO

from mlbcli.errors import UsageError
from mlbcli.video import VIDEO_EXTENSIONS

__all__ = [
    "MANIFEST_EXTENSIONS",
    "Item",
    "fingerprint",
    "group_by_video",
    "iter_items",
    "question_id_for",
]

logger = logging.getLogger(__name__)

MANIFEST_EXTENSIONS = frozenset({".jsonl", ".csv", ".parquet"})
_PARQUET_BATCH_ROWS = 1024  # rows per pyarrow batch: bounded memory for huge manifests


@dataclass(frozen=True)
class Item:
    """One (video, question) unit of work."""

    video_id: str
    video_path: str  # absolute, resolved
    question_id: str | None
    question: str | None
    options: tuple[str, ...] | None
    answer: str | None  # ground truth: option letter or text
    origin: str  # where it came from: "manifest.jsonl:12", "stdin:3", a folder or file path
    error: str | None = None  # the source line itself is broken; the item becomes an error row


class _LineError(ValueError):
    """A manifest line that cannot become a valid item (turned into an error Item, never raised out)."""


def question_id_for(question: str, options: Sequence[str] | None) -> str:
    """Stable id of a question (+ options) so reruns and resume match the same rows."""
    payload = question + "\x1f" + "\x1f".join(options or ())
    return "q-" + hashlib.sha1(payload.encode("utf-8")).hexdigest()[:10]


def fingerprint(path: str | os.PathLike[str]) -> str:
    """``"{size}-{mtime_ns}"``: changes when a video is replaced or edited; ``"missing"`` if it is gone.

    Missing files do not raise, because the item still has to flow to the decoder and become an error row.
    """
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    return f"{st.st_size}-{st.st_mtime_ns}"


def group_by_video(items: Iterable[Item]) -> Iterator[list[Item]]:
    """Group *consecutive* items of the same video, so each video is decoded and encoded once.

    Only consecutive items are grouped, so the stream stays lazy and output order follows input order.
    """
    for _, group in itertools.groupby(items, key=lambda item: item.video_path):
        yield list(group)


# --------------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    text: str  # as the user wrote it
    kind: str  # "stdin" | "folder" | "video" | "manifest"
    path: Path | None


def _classify(sources: Sequence[str]) -> list[_Source]:
    """Check every source up front so a typo in the last one fails before any work starts."""
    classified: list[_Source] = []
    seen_stdin = False
    for text in sources:
        if text == "-":
            if seen_stdin:
                raise UsageError("'-' (read video paths from stdin) can be given only once")
            seen_stdin = True
            classified.append(_Source(text, "stdin", None))
            continue
        path = Path(text)
        if not path.exists():
            raise UsageError(f"source not found: {text}")
        if path.is_dir():
            classified.append(_Source(text, "folder", path))
            continue
        suffix = path.suffix.lower()
        if suffix in MANIFEST_EXTENSIONS:
            classified.append(_Source(text, "manifest", path))
        elif suffix in VIDEO_EXTENSIONS:
            classified.append(_Source(text, "video", path))
        else:
            known = ", ".join(sorted(VIDEO_EXTENSIONS | MANIFEST_EXTENSIONS))
            raise UsageError(
                f"{text}: not a video or a manifest (expected one of: {known}; or a folder, or -)"
            )
    if not classified:
        raise UsageError("no sources given: pass video files, folders, manifests (.jsonl/.csv/.parquet) or -")
    return classified


def iter_items(
    sources: Sequence[str],
    *,
    default_question: str | None = None,
    stdin: TextIO | None = None,
    require_question: bool = True,
) -> Iterator[Item]:
    """Yield items for every source, in source order (folders in sorted path order).

    All sources are checked before the first item is yielded. Items are otherwise streamed, so the
    "no question" ``UsageError`` (when ``require_question``) is raised at the first item that lacks one
    and has no ``default_question`` to fall back on; callers that must fail before any work should
    materialise the iterator first (``list(iter_items(...))``). Items with ``error`` set never raise.
    """
    default = _clean_text(default_question)
    for source in _classify(sources):
        for item in _items_of(source, stdin):
            yield _finish(item, default, require_question)


def _items_of(source: _Source, stdin: TextIO | None) -> Iterator[Item]:
    if source.kind == "stdin":
        return _stdin_items(stdin if stdin is not None else sys.stdin)
    assert source.path is not None
    if source.kind == "folder":
        return _folder_items(source.text, source.path)
    if source.kind == "video":
        return iter([_video_item(source.text, source.path, source.text)])
    return _manifest_items(source.text, source.path)


def _finish(item: Item, default: str | None, require_question: bool) -> Item:
    """Apply the default question, check it is there, and derive the question id."""
    if item.error is not None:
        return item
    question = item.question if item.question is not None else default
    if question is None:
        if require_question:
            raise UsageError(
                f"{item.origin}: video {item.video_id!r} has no question. "
                "Pass --question TEXT, or add a 'question' column to the manifest."
            )
        return item
    qid = item.question_id or question_id_for(question, item.options)
    return replace(item, question=question, question_id=qid)


def _as_given(text: str) -> str:
    """The path as the user wrote it, normalised ("./a//b.mp4" -> "a/b.mp4"), POSIX separators."""
    return PurePath(os.path.normpath(text)).as_posix()


def _video_item(text: str, path: Path, origin: str, video_id: str | None = None) -> Item:
    return Item(
        video_id=video_id or _as_given(text),
        video_path=str(path.resolve()),
        question_id=None,
        question=None,
        options=None,
        answer=None,
        origin=origin,
    )


def _stdin_items(stream: TextIO) -> Iterator[Item]:
    """One video path per line; blank lines ignored. Relative paths are relative to the working folder."""
    for lineno, line in enumerate(stream, start=1):
        text = line.strip()
        if text:
            yield _video_item(text, Path(text), f"stdin:{lineno}")


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _folder_items(text: str, folder: Path) -> Iterator[Item]:
    """Videos under ``folder`` (recursive), hidden files and folders skipped, sorted by relative path."""
    found: list[str] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not _is_hidden(d)]  # prune in place: os.walk won't descend
        rel_root = Path(root).relative_to(folder)
        for name in files:
            if not _is_hidden(name) and Path(name).suffix.lower() in VIDEO_EXTENSIONS:
                found.append((rel_root / name).as_posix())
    if not found:
        logger.warning("%s: no video files found (extensions: %s)", text, ", ".join(sorted(VIDEO_EXTENSIONS)))
    for rel in sorted(found):
        yield _video_item(rel, folder / rel, text, video_id=rel)


# --------------------------------------------------------------------------------------------------
# Manifests
# --------------------------------------------------------------------------------------------------


def _manifest_items(text: str, path: Path) -> Iterator[Item]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = _jsonl_rows(text, path)
    elif suffix == ".csv":
        rows = _csv_rows(text, path)
    else:
        rows = _parquet_rows(text, path)
    base = path.resolve().parent
    text_options = suffix != ".jsonl"  # CSV cells (and string Parquet columns) hold options as text
    for lineno, row in rows:
        origin = f"{text}:{lineno}"
        yield _row_item(
            row, base=base, origin=origin, fallback_id=f"{path.name}:{lineno}", text_options=text_options
        )


def _jsonl_rows(text: str, path: Path) -> Iterator[tuple[int, dict[str, Any] | _LineError]]:
    with _open_text(text, path) as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                yield lineno, _LineError(f"invalid JSON ({exc.msg} at column {exc.colno})")
                continue
            if not isinstance(row, dict):
                yield lineno, _LineError(f"expected a JSON object, got {type(row).__name__}")
                continue
            yield lineno, row


def _csv_rows(text: str, path: Path) -> Iterator[tuple[int, dict[str, Any] | _LineError]]:
    with _open_text(text, path, newline="") as fh:
        reader = csv.DictReader(fh)
        fields = [f.strip() for f in (reader.fieldnames or [])]
        _require_video_column(text, fields)
        reader.fieldnames = fields
        line_end = reader.line_num  # end of the header
        for row in reader:
            # A quoted cell may span lines: report the row's first line, as an editor shows it.
            lineno, line_end = line_end + 1, reader.line_num
            if None in row:  # more cells than header columns
                yield lineno, _LineError(f"{len(fields) + len(row[None])} cells but {len(fields)} columns")
                continue
            yield lineno, {k: (v if v != "" else None) for k, v in row.items()}


def _parquet_rows(text: str, path: Path) -> Iterator[tuple[int, dict[str, Any] | _LineError]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:
        raise UsageError(f"{text}: cannot read Parquet manifest ({exc})") from exc
    _require_video_column(text, pf.schema_arrow.names)
    row_number = 0
    for batch in pf.iter_batches(batch_size=_PARQUET_BATCH_ROWS):
        for row in batch.to_pylist():
            row_number += 1
            yield row_number, row


def _open_text(text: str, path: Path, newline: str | None = None) -> Any:
    try:
        # utf-8-sig: spreadsheet tools write a BOM that would otherwise glue itself to the first column name
        return open(path, encoding="utf-8-sig", newline=newline)  # noqa: SIM115 - returned to a with
    except OSError as exc:
        raise UsageError(f"{text}: cannot read manifest ({exc.strerror or exc})") from exc


def _require_video_column(text: str, columns: Sequence[str]) -> None:
    if "video" not in columns:
        have = ", ".join(columns) if columns else "none"
        raise UsageError(f"{text}: manifest has no 'video' column (columns: {have})")


def _row_item(
    row: dict[str, Any] | _LineError, *, base: Path, origin: str, fallback_id: str, text_options: bool
) -> Item:
    """Build an item from one manifest row; any problem becomes an error item instead of an exception.

    The error item keeps whatever identity could be recovered (video id and path) so the error row is
    attributable; otherwise its id is ``"<manifest name>:<line>"``.
    """
    video_id = fallback_id
    video_path = ""
    try:
        if isinstance(row, _LineError):
            raise row
        explicit_id = _clean_text(row.get("video_id"))
        video_id = explicit_id or video_id
        video = _clean_text(row.get("video"))
        if video is None:
            raise _LineError("no 'video' value")
        video_id = explicit_id or _as_given(video)
        video_path = str((base / Path(video).expanduser()).resolve())
        return Item(
            video_id=video_id,
            video_path=video_path,
            question_id=_clean_text(row.get("question_id")),
            question=_clean_text(row.get("question")),
            options=_parse_options(row.get("options"), text_options=text_options),
            answer=_clean_text(row.get("answer")),
            origin=origin,
        )
    except _LineError as exc:
        return Item(video_id, video_path, None, None, None, None, origin=origin, error=f"{origin}: {exc}")


def _clean_text(value: Any) -> str | None:
    """Scalar cell -> stripped text; empty/None -> None. Numbers are accepted (ids like 17, answer 2)."""
    if value is None or (isinstance(value, float) and value != value):  # NaN: pandas' empty cell
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _LineError(f"expected text, got {type(value).__name__} {value!r:.40}")
    text = str(value).strip()
    return text or None


def _parse_options(value: Any, *, text_options: bool) -> tuple[str, ...] | None:
    """A list of option texts; in CSV cells (``text_options``) also a JSON list string or ``A|B|C``."""
    if value is None:
        return None
    if isinstance(value, str) and text_options:
        value = _options_from_string(value)
        if value is None:
            return None
    if not isinstance(value, list | tuple):
        raise _LineError(f"'options' must be a list of strings, got {type(value).__name__}")
    options = []
    for opt in value:
        text = _clean_text(opt) if not isinstance(opt, list | dict | tuple) else None
        if text is None:
            raise _LineError(f"'options' must be a list of non-empty strings, got {opt!r:.40}")
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
            raise _LineError(f"'options' is not a valid JSON list ({exc.msg})") from exc
    if "|" in text:
        return [part for part in (p.strip() for p in text.split("|"))]
    raise _LineError("'options' must be a JSON list or '|'-separated text")
