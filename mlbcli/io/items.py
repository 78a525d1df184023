"""The unit of work (`Item`) and the rules every source shares: ids, storable text, resolved paths.

`mlbcli.io.sources` turns sources into items and `mlbcli.io.manifests` reads manifest rows; both build
items with the helpers here, so an id or a path means the same whatever the source. A problem with one
input is a `LineError`, turned into an error item (`broken_line`) by the caller, never raised out.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePath
from typing import Any

__all__ = [
    "Item",
    "LineError",
    "as_given",
    "broken_line",
    "clean_text",
    "fingerprint",
    "group_by_video",
    "printable",
    "question_id_for",
    "resolve",
    "storable",
]


@dataclass(frozen=True)
class Item:
    """One (video, question) unit of work."""

    video_id: str  # valid UTF-8 text (undecodable name bytes escaped as \xNN: see printable)
    video_path: str  # absolute, resolved; the real name (may hold surrogate escapes: see printable)
    question_id: str | None  # a broken manifest line: its origin ("m.jsonl:4")
    question: str | None
    options: tuple[str, ...] | None
    answer: str | None  # ground truth: option letter or text
    origin: str  # where it came from: "manifest.jsonl:12", "stdin:3", a folder or file path
    error: str | None = None  # the input itself is broken; the item becomes an error row
    category: str | None = None  # manifest `category` (benchmark subtask, task type...): per-category scores


class LineError(ValueError):
    """An input (manifest line, path) that cannot become a valid item (an error Item, never raised out)."""


def question_id_for(question: str, options: Sequence[str] | None) -> str:
    """Stable id of a question (+ options) so reruns and resume match the same rows."""
    payload = question + "\x1f" + "\x1f".join(options or ())
    return "q-" + hashlib.sha1(payload.encode("utf-8")).hexdigest()[:10]


def printable(text: str) -> str:
    """``text`` as valid UTF-8 (what Parquet and JSON need), one to one: undecodable bytes become escapes.

    Python smuggles a file name's undecodable bytes as lone surrogates (U+DC80..U+DCFF, "surrogateescape");
    they come back as ``\\xNN`` (byte 0xff -> ``\\xff``). Other lone surrogates become ``\\uNNNN``. So
    that no real name reads like an escape (a name holding the four characters ``\\xff`` next to one
    holding the byte 0xff), a backslash followed by ``\\``, ``x`` or ``u`` (after escaping) is doubled.
    Every other text comes back unchanged, a lone backslash included: ids of such names stay as they
    were. Read left to right, ``\\\\`` is a backslash and ``\\x``/``\\u`` start an escape, so two
    different texts never print alike (ids derived from names are distinct whenever the names are).
    """
    if "\\" not in text:
        try:
            text.encode("utf-8")
            return text
        except UnicodeEncodeError:
            pass
    pieces = [_escape_char(char) for char in text]
    for i, piece in enumerate(pieces[:-1]):
        if piece == "\\" and pieces[i + 1][0] in "\\xu":
            pieces[i] = "\\\\"
    return "".join(pieces)


def _escape_char(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"
    if 0xD800 <= code <= 0xDFFF:
        return f"\\u{code:04x}"
    return char


def storable(text: str) -> bool:
    """Whether ``text`` is valid Unicode text as it is (no lone surrogate): what a row can hold."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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


def as_given(text: str) -> str:
    """The path as the user wrote it, normalised ("./a//b.mp4" -> "a/b.mp4"), POSIX separators."""
    return PurePath(os.path.normpath(text)).as_posix()


def resolve(path: Path) -> str:
    """The absolute real path, or ``LineError`` saying why it has none (never an exception out)."""
    if "\x00" in str(path):
        raise LineError("path contains a NUL byte")
    try:
        return str(path.resolve())
    except RuntimeError as exc:  # Python < 3.13: "Symlink loop from ..."
        raise LineError("path is a symbolic link loop") from exc
    except (OSError, ValueError) as exc:
        raise LineError(f"cannot resolve path ({getattr(exc, 'strerror', None) or exc})") from exc


def clean_text(value: Any) -> str | None:
    """Scalar cell -> stripped text; empty/None -> None. Numbers are accepted (ids like 17, answer 2)."""
    if value is None or (isinstance(value, float) and value != value):  # NaN: pandas' empty cell
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise LineError(f"expected text, got {type(value).__name__} {value!r:.40}")
    text = str(value).strip()
    if not storable(text):  # a lone surrogate from a JSON "\ud800" escape: not storable text
        raise LineError(f"not valid Unicode text: {printable(text)!r:.60}")
    return text or None


def broken_line(item: Item, problem: str) -> Item:
    """The error item of a manifest line; keyed by its origin so each broken line keeps its own row."""
    return replace(
        item,
        question_id=item.origin,
        question=None,
        options=None,
        answer=None,
        error=f"{item.origin}: {problem}",
    )
