"""Turn CLI sources (video files, folders, manifests, ``-`` for stdin) into a stream of work items.

A *source* problem (path does not exist, unknown file type, manifest without a ``video`` column, ``-``
twice, two different inputs under one id) is a ``UsageError``: nothing should run. A problem with one
*input* (a manifest line with bad JSON, no video, options not a list, no question while the other lines
have one; a path that cannot be resolved: symlink loop, NUL byte) only spoils that input: it becomes an
``Item`` with ``error`` set, which the runner writes as an error row, and the other inputs go on. Videos
are not opened here (a missing video file named by a manifest is reported later by the decoder, per
item).

IDs are what resume keys on, so they are derived deterministically from the inputs, never from run
state, and two different inputs never share one (that would silently keep only one of their rows):

- ``video_id`` is the path as the user wrote it: a video file or stdin line as given; a manifest's
  ``video_id``, else its ``video`` value. A video found in a folder is named by its path inside that
  folder (``x.mp4``) when the folder is the command's only source, so a nightly ``mlb summarize /data/cams``
  keeps the same ids wherever the folder is mounted; with several sources it is named as if given
  directly (``cams/gate/x.mp4``: the folder as given joined with the path inside), so two folders with
  the same file names, or a folder and a file, cannot collide.
- ``question_id`` is the manifest's ``question_id``, else a hash of the question text and options. A
  broken manifest line has no usable question: its ``question_id`` is its origin (``m.jsonl:4``), so each
  broken line is its own error row.
- Exact repeats (same video, question, options and answer) are one item. A ``video_id`` that names two
  different videos, or a ``question_id`` used for different questions of one video, is a ``UsageError``.

Everything that lands in a row is valid UTF-8 text: undecodable bytes of a file name (a folder walk, stdin,
argv) appear as ``\\xNN`` in ``video_id`` and ``origin``, while ``Item.video_path`` keeps the real name so
the file can still be opened (``printable`` escapes it for storage).
"""

from __future__ import annotations

import csv
import difflib
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
from mlbcli.io.video import VIDEO_EXTENSIONS

__all__ = [
    "MANIFEST_COLUMNS",
    "MANIFEST_EXTENSIONS",
    "Item",
    "fingerprint",
    "group_by_video",
    "iter_items",
    "printable",
    "question_id_for",
]

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
_PARQUET_BATCH_ROWS = 1024  # rows per pyarrow batch: bounded memory for huge manifests
_MAX_CLASHES_SHOWN = 3


@dataclass(frozen=True)
class Item:
    """One (video, question) unit of work."""

    video_id: str  # valid UTF-8 text (undecodable name bytes escaped as \xNN)
    video_path: str  # absolute, resolved; the real name (may hold surrogate escapes: see printable)
    question_id: str | None  # a broken manifest line: its origin ("m.jsonl:4")
    question: str | None
    options: tuple[str, ...] | None
    answer: str | None  # ground truth: option letter or text
    origin: str  # where it came from: "manifest.jsonl:12", "stdin:3", a folder or file path
    error: str | None = None  # the input itself is broken; the item becomes an error row
    category: str | None = None  # manifest `category` (benchmark subtask, task type...): per-category scores


class _LineError(ValueError):
    """An input (manifest line, path) that cannot become a valid item (an error Item, never raised out)."""


def question_id_for(question: str, options: Sequence[str] | None) -> str:
    """Stable id of a question (+ options) so reruns and resume match the same rows."""
    payload = question + "\x1f" + "\x1f".join(options or ())
    return "q-" + hashlib.sha1(payload.encode("utf-8")).hexdigest()[:10]


def printable(text: str) -> str:
    """``text`` as valid UTF-8 (what Parquet and JSON need): undecodable bytes become visible escapes.

    Python smuggles a file name's undecodable bytes as lone surrogates (U+DC80..U+DCFF, "surrogateescape");
    they come back as ``\\xNN`` (byte 0xff -> ``\\xff``). Other lone surrogates become ``\\uNNNN``.
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    out = []
    for char in text:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def fingerprint(path: str | os.PathLike[str]) -> str:
    """``"{size}-{mtime_ns}"``: changes when a video is replaced or edited; ``"missing"`` if it is gone.

    Missing files do not raise, because the item still has to flow to the decoder and become an error row.
    """
    try:
        st = os.stat(path)
    except (OSError, ValueError):  # ValueError: a NUL byte in the path
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
        if not _exists(path):
            why = " (a symbolic link to a missing file, or a link loop)" if _is_link(path) else ""
            raise UsageError(f"source not found: {printable(text)}{why}")
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
                f"{printable(text)}: not a video or a manifest (expected one of: {known}; or a folder, or -)"
            )
    if not classified:
        raise UsageError("no sources given: pass video files, folders, manifests (.jsonl/.csv/.parquet) or -")
    return classified


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):  # ValueError: a NUL byte (possible from Python callers)
        return False


def _is_link(path: Path) -> bool:
    try:
        return path.is_symlink()
    except (OSError, ValueError):
        return False


def iter_items(
    sources: Sequence[str],
    *,
    default_question: str | None = None,
    stdin: TextIO | None = None,
    require_question: bool = True,
) -> Iterator[Item]:
    """Yield items for every source, in source order (folders in sorted path order).

    All sources are read and checked before the first item is yielded, so every ``UsageError`` (a bad
    source, two inputs under one id, "no question" when ``require_question`` and there is no
    ``default_question`` to fall back on) comes before any work. Exact repeats are yielded once. Items
    with ``error`` set never raise.
    """
    classified = _classify(sources)
    try:
        default = _clean_text(default_question)
    except _LineError as exc:
        raise UsageError(f"--question: {exc}") from exc
    # A folder's videos are named inside it only when nothing else can share those names.
    qualify = not (len(classified) == 1 and classified[0].kind == "folder")
    items: list[Item] = []
    for source in classified:
        source_items = list(_items_of(source, stdin, qualify=qualify))
        items.extend(_finish_source(source, source_items, default, require_question))
    items = _collapse_repeats(items)
    _check_distinct_keys(items)
    yield from items


def _items_of(source: _Source, stdin: TextIO | None, *, qualify: bool) -> Iterator[Item]:
    if source.kind == "stdin":
        return _stdin_items(stdin if stdin is not None else sys.stdin)
    assert source.path is not None
    if source.kind == "folder":
        return _folder_items(source.text, source.path, qualify=qualify)
    if source.kind == "video":
        return iter([_path_item(source.text, source.path, printable(source.text))])
    return _manifest_items(source.text, source.path)


def _finish_source(
    source: _Source, items: list[Item], default: str | None, require_question: bool
) -> Iterator[Item]:
    """Apply the default question, check it is there, and derive the question ids of one source.

    A manifest line without a question, in a manifest whose other lines have one, is a broken line (an
    error item); a source with no question at all is a ``UsageError`` (``--question`` was forgotten).
    """
    gives_questions = source.kind == "manifest" and any(i.question for i in items if i.error is None)
    for item in items:
        if item.error is None and item.question is None and default is None and require_question:
            if gives_questions:
                yield _broken_line(item, "no question on this line (pass --question to give a default)")
                continue
            raise UsageError(
                f"{item.origin}: video {item.video_id!r} has no question. "
                "Pass --question TEXT, or add a 'question' column to the manifest."
            )
        yield _finish(item, default)


def _finish(item: Item, default: str | None) -> Item:
    if item.error is not None:
        return item
    question = item.question if item.question is not None else default
    if question is None:
        return item
    qid = item.question_id or question_id_for(question, item.options)
    return replace(item, question=question, question_id=qid)


def _broken_line(item: Item, problem: str) -> Item:
    """The error item of a manifest line; keyed by its origin so each broken line keeps its own row."""
    return replace(
        item,
        question_id=item.origin,
        question=None,
        options=None,
        answer=None,
        error=f"{item.origin}: {problem}",
    )


def _collapse_repeats(items: list[Item]) -> list[Item]:
    """Exact repeats of an input (same id, video, question, options, answer, error) are one item."""
    first_origin: dict[tuple, str] = {}
    unique: list[Item] = []
    repeats: list[tuple[str, str]] = []  # (origin of the repeat, origin of the first)
    for item in items:
        content = (
            item.video_id,
            item.video_path,
            item.question_id,
            item.question,
            item.options,
            item.answer,
            item.category,
            item.error,
        )
        if content in first_origin:
            repeats.append((item.origin, first_origin[content]))
            continue
        first_origin[content] = item.origin
        unique.append(item)
    if repeats:
        logger.warning(
            "%d exact repeat(s) done once (e.g. %s repeats %s)", len(repeats), repeats[0][0], repeats[0][1]
        )
    return unique


def _check_distinct_keys(items: list[Item]) -> None:
    """Two different inputs under one key would keep only one row, silently: refuse before any work.

    Error items are keyed by their own line or path and cannot clash.
    """
    video_of: dict[str, Item] = {}
    question_of: dict[tuple[str, str], Item] = {}
    clashes: list[str] = []
    for item in items:
        if item.error is not None:
            continue
        first = video_of.setdefault(item.video_id, item)
        if first.video_path != item.video_path:
            clashes.append(
                f"video_id {item.video_id!r} names two videos ({first.origin}: {printable(first.video_path)}; "
                f"{item.origin}: {printable(item.video_path)})"
            )
            continue
        if item.question_id is None:
            continue
        first = question_of.setdefault((item.video_id, item.question_id), item)
        if first is not item:  # not an exact repeat (collapsed before), so the question differs
            differ = [
                f
                for f in ("question", "options", "answer", "category")
                if getattr(first, f) != getattr(item, f)
            ]
            clashes.append(
                f"question_id {item.question_id!r} of video {item.video_id!r} is used for different "
                f"questions ({first.origin} and {item.origin}: {', '.join(differ)} differ)"
            )
    if clashes:
        more = len(clashes) - _MAX_CLASHES_SHOWN
        raise UsageError(
            "two different inputs share one id, so one of their results would be lost: "
            + "; ".join(clashes[:_MAX_CLASHES_SHOWN])
            + (f"; and {more} more" if more > 0 else "")
            + ". Give each video its own video_id and each question of a video its own question_id."
        )


def _as_given(text: str) -> str:
    """The path as the user wrote it, normalised ("./a//b.mp4" -> "a/b.mp4"), POSIX separators."""
    return PurePath(os.path.normpath(text)).as_posix()


def _resolve(path: Path) -> str:
    """The absolute real path, or ``_LineError`` saying why it has none (never an exception out)."""
    if "\x00" in str(path):
        raise _LineError("path contains a NUL byte")
    try:
        return str(path.resolve())
    except RuntimeError as exc:  # Python < 3.13: "Symlink loop from ..."
        raise _LineError("path is a symbolic link loop") from exc
    except (OSError, ValueError) as exc:
        raise _LineError(f"cannot resolve path ({getattr(exc, 'strerror', None) or exc})") from exc


def _path_item(name: str, path: Path, origin: str) -> Item:
    """The item of one video path (a file source, a stdin line, a file found in a folder).

    ``name`` is the path as the user would write it (the id); ``path`` is where the file is.
    """
    video_id = printable(_as_given(name))
    try:
        video_path = _resolve(path)
    except _LineError as exc:
        return Item(video_id, os.path.abspath(path), None, None, None, None, origin, error=str(exc))
    return Item(video_id, video_path, None, None, None, None, origin)


def _stdin_items(stream: TextIO) -> Iterator[Item]:
    """One video path per line; blank lines ignored. Relative paths are relative to the working folder."""
    for lineno, line in enumerate(_path_lines(stream), start=1):
        text = line.strip()
        if text:
            yield _path_item(text, Path(text), f"stdin:{lineno}")


def _path_lines(stream: TextIO) -> Iterator[str]:
    """Lines of paths; read as bytes where possible, so a name that is not UTF-8 is still a file name."""
    raw = getattr(stream, "buffer", None)
    if raw is None:  # an in-memory text stream: already text
        yield from stream
        return
    for line in raw:
        yield os.fsdecode(line)  # undecodable bytes -> surrogate escapes, as os.listdir names


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _is_video_name(name: str) -> bool:
    return PurePath(name).suffix.lower() in VIDEO_EXTENSIONS


def _folder_items(text: str, folder: Path, *, qualify: bool) -> Iterator[Item]:
    """Videos under ``folder`` (see ``_video_files``), sorted by relative path.

    The id is the path inside the folder, or with ``qualify`` the folder as given joined with it.
    """
    origin = printable(text)
    for rel in _video_files(text, folder):
        yield _path_item(os.path.join(text, rel) if qualify else rel, folder / rel, origin)


def _video_files(text: str, folder: Path) -> list[str]:
    """Relative POSIX paths of the video files under ``folder``: recursive, hidden names skipped.

    Symlinked sub-folders are followed when they lead outside ``folder`` (one inside it is searched by
    its real path), each real folder once (by device and inode), so a link loop ends. Every folder not
    searched is logged as a warning (a link inside, a second link to one folder, one that cannot be
    read), and so is a folder named like a video (searched as a folder): nothing is skipped silently.
    """
    found: list[str] = []
    top = _real(folder)
    searched = {_folder_key(folder)}

    def unreadable(exc: OSError) -> None:
        logger.warning("%s: cannot read folder (%s)", printable(str(exc.filename)), exc.strerror or exc)

    for root, dirs, files in os.walk(folder, onerror=unreadable, followlinks=True):
        rel_root = Path(root).relative_to(folder)
        descend = []
        for name in sorted(dirs):  # sorted: which of two links to one folder wins is stable
            if _is_hidden(name):
                continue
            sub = Path(root, name)
            shown = printable(str(sub))
            try:
                key = _folder_key(sub)
                real = _real(sub) if sub.is_symlink() else None
            except OSError as exc:
                logger.warning("%s: cannot read folder (%s)", shown, exc.strerror or exc)
                continue
            if real is not None and (real == top or top in real.parents):
                logger.warning(
                    "%s: skipped, a link to %s, searched by its real path", shown, printable(str(real))
                )
                continue
            if key in searched:
                logger.warning("%s: skipped, a folder already searched (reached again through a link)", shown)
                continue
            if _is_video_name(name):
                logger.warning("%s: a folder named like a video; searched as a folder", shown)
            searched.add(key)
            descend.append(name)
        dirs[:] = descend  # in place: os.walk descends into exactly these, in this order
        for name in files:
            if not _is_hidden(name) and _is_video_name(name):
                found.append((rel_root / name).as_posix())
    if not found:
        logger.warning(
            "%s: no video files found (extensions: %s)", printable(text), ", ".join(sorted(VIDEO_EXTENSIONS))
        )
    return sorted(found)


def _real(path: Path) -> Path:
    """Resolved path of a folder that exists (os.walk listed it); OSError if it cannot be resolved."""
    try:
        return path.resolve(strict=True)
    except RuntimeError as exc:  # Python < 3.13 reports a loop this way
        raise OSError(f"symbolic link loop: {path}") from exc


def _folder_key(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


# --------------------------------------------------------------------------------------------------
# Manifests
# --------------------------------------------------------------------------------------------------

_Rows = list[tuple[int, "dict[str, Any] | _LineError"]]


def _manifest_items(text: str, path: Path) -> Iterator[Item]:
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
                rows.append((lineno, _LineError(_not_utf8(line, f"at column {bad_at + 1}"))))
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                rows.append((lineno, _LineError(f"invalid JSON ({exc.msg} at column {exc.colno})")))
                continue
            if not isinstance(row, dict):
                rows.append((lineno, _LineError(f"expected a JSON object, got {type(row).__name__}")))
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
                rows.append((line_end + 1, _LineError(f"unreadable CSV row ({exc})")))
                line_end = reader.line_num
                continue
            # A quoted cell may span lines: report the row's first line, as an editor shows it.
            lineno, line_end = line_end + 1, reader.line_num
            if None in row:  # more cells than header columns
                rows.append(
                    (lineno, _LineError(f"{len(fields) + len(row[None])} cells but {len(fields)} columns"))
                )
                continue
            bad = next((k for k, v in row.items() if v is not None and _undecodable_at(v) is not None), None)
            if bad is not None:
                rows.append((lineno, _LineError(_not_utf8(row[bad], f"in column {printable(bad)!r}"))))
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
    row: dict[str, Any] | _LineError, *, base: Path, origin: str, fallback_id: str, text_options: bool
) -> Item:
    """Build an item from one manifest row; any problem becomes an error item instead of an exception.

    The error item keeps whatever identity could be recovered (video id and path) so the error row is
    attributable; otherwise its id is ``"<manifest name>:<line>"``. Its question_id is its origin.
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
        if "\x00" in video:
            raise _LineError("'video' contains a NUL byte")
        video_path = os.path.abspath(base / video)
        video_path = _resolve(base / Path(video).expanduser())
        return Item(
            video_id=video_id,
            video_path=video_path,
            question_id=_clean_text(row.get("question_id")),
            question=_clean_text(row.get("question")),
            options=_parse_options(row.get("options"), text_options=text_options),
            answer=_clean_text(row.get("answer")),
            origin=origin,
            category=_clean_text(row.get("category")),
        )
    except _LineError as exc:
        return _broken_line(Item(video_id, video_path, None, None, None, None, origin), str(exc))


def _clean_text(value: Any) -> str | None:
    """Scalar cell -> stripped text; empty/None -> None. Numbers are accepted (ids like 17, answer 2)."""
    if value is None or (isinstance(value, float) and value != value):  # NaN: pandas' empty cell
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _LineError(f"expected text, got {type(value).__name__} {value!r:.40}")
    text = str(value).strip()
    if printable(text) != text:  # a lone surrogate from a JSON "\ud800" escape: not storable text
        raise _LineError(f"not valid Unicode text: {printable(text)!r:.60}")
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
