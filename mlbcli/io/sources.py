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
the file can still be opened (``printable`` escapes it for storage). The escaping is one to one: a name
holding the characters ``\\xff`` gets ``\\\\xff``, so it never shares an id with the byte 0xff.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePath
from typing import TextIO

from mlbcli.errors import UsageError
from mlbcli.io.items import (
    Item,
    LineError,
    as_given,
    broken_line,
    clean_text,
    fingerprint,
    group_by_video,
    printable,
    question_id_for,
    resolve,
)
from mlbcli.io.manifests import MANIFEST_COLUMNS, MANIFEST_EXTENSIONS, manifest_items
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

_MAX_CLASHES_SHOWN = 3


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
        default = clean_text(default_question)
    except LineError as exc:
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
    return manifest_items(source.text, source.path)


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
                yield broken_line(item, "no question on this line (pass --question to give a default)")
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


# --------------------------------------------------------------------------------------------------
# Paths: a video file, a stdin line
# --------------------------------------------------------------------------------------------------


def _path_item(name: str, path: Path, origin: str) -> Item:
    """The item of one video path (a file source, a stdin line, a file found in a folder).

    ``name`` is the path as the user would write it (the id); ``path`` is where the file is.
    """
    video_id = printable(as_given(name))
    try:
        video_path = resolve(path)
    except LineError as exc:
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


# --------------------------------------------------------------------------------------------------
# Folders
# --------------------------------------------------------------------------------------------------


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
