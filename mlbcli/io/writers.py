"""Result files: atomic, resumable and safe against two runs writing the same output.

Layout on disk for an output ``results.parquet`` (a symlinked output means its target: everything
below lives next to the target, so two runs through different links still share one lock)::

    results.parquet              the final file, only ever replaced whole (tmp + os.replace)
    results.parquet.parts/       committed batches of the current (or a killed) run, always Parquet
        part-<run>-<pid>-<seq>.parquet
    results.parquet.lock         flock target; harmless when left behind
    results.jsonl.meta.json      schema + metadata sidecar (JSONL/CSV only; Parquet keeps it inside)

Why parts: a long batch run may be killed at any moment (OOM, SLURM preemption, Ctrl-C twice). Rows are
committed every few rows as small Parquet part files, each written under a temporary name, fsync'd and
then renamed, so a part file either exists complete or not at all. The final file is rewritten only at
`close()`, again via a temporary file and an atomic rename. A killed run therefore leaves the previous
final file intact plus complete parts; the next run (with resume) counts those rows as done, and its
`close()` merges everything, keeping the last row written for each key, so no row is ever duplicated.

Failures to write are reported, not crashed on: an output that cannot be written at all (read-only or
missing folder, a path under a regular file) is a `UsageError` when the writer opens, before any work;
an OSError while committing a part or the final file (disk full) is one `MlbError` line that names the
path and how many rows of this run are committed. The previous final file and the committed parts are
kept either way, so freeing space and rerunning resumes. `committed` tells callers how many rows reached
disk (a summary must not count rows that never did).

This module must not import torch/transformers: it is on the fast start path of the CLI.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as _dt
import decimal
import difflib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from mlbcli.errors import MlbError, OutputLockedError, UsageError

try:  # POSIX only; elsewhere we run without the cross-process lock (with a warning).
    import fcntl
except ImportError:  # pragma: no cover - not exercised on Linux CI
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "ERROR_COLUMN",
    "FORMATS",
    "SCHEMA_VERSION",
    "ResultWriter",
    "infer_format",
    "read_results",
    "schema_metadata",
]

logger = logging.getLogger(__name__)

# Bump when a result column changes meaning or type in a way old files cannot be cast to.
SCHEMA_VERSION = "1"
KEY_SCHEMA_VERSION = "mlb.schema_version"
KEY_KIND = "mlb.kind"
# Rows whose `error` is non-null failed and are retried by a resumed run.
ERROR_COLUMN = "error"
FORMATS = ("parquet", "jsonl", "csv")
_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
_PART_RE = re.compile(r"^part-(\d+)-(\d+)-(\d+)\.parquet$")
_ROW_INDEX = "__mlb_row__"
# Written into the parts folder by an --overwrite run once it commits rows (see _scan_existing).
_OVERWRITE_MARKER = "OVERWRITE"


# --------------------------------------------------------------------------------------------- paths


def infer_format(out: str | os.PathLike[str], fmt: str | None = None) -> str:
    """The file format for `out`: `fmt` when given, else from the suffix (no suffix means Parquet).

    A `fmt` that contradicts a known suffix (`x.csv` as Parquet) is a UsageError: such a file confuses
    every later reader, including the next run on it.
    """
    if fmt is not None:
        fmt = fmt.lower()
        if fmt not in FORMATS:
            raise UsageError(f"unknown output format {fmt!r}; choose one of {', '.join(FORMATS)}")
        implied = _SUFFIXES.get(Path(out).suffix.lower()) if str(out) != "-" else None
        if implied is not None and implied != fmt:
            raise UsageError(
                f"--format {fmt} contradicts the suffix of {out} (a {implied} name); "
                f"drop --format, or give the output a .{fmt} name"
            )
        return fmt
    if str(out) == "-":
        return "jsonl"
    suffix = Path(out).suffix.lower()
    if not suffix:
        return "parquet"
    if suffix not in _SUFFIXES:
        raise UsageError(
            f"cannot tell the output format of {out} from its suffix {suffix!r}; "
            f"use .parquet, .jsonl or .csv, or pass the format explicitly"
        )
    return _SUFFIXES[suffix]


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _sidecar_path(path: Path) -> Path:
    return _sibling(path, ".meta.json")


def _parts_dir(path: Path) -> Path:
    return _sibling(path, ".parts")


def _lock_path(path: Path) -> Path:
    # Hidden: the lock file outlives the run (flock semantics make removing it racy) and is noise.
    return path.with_name(f".{path.name}.lock")


def _follow_symlinks(path: Path) -> Path:
    """The file a symlinked output points to (the last component, link after link; may not exist yet).

    Writing through the link keeps it a link (os.replace on the link itself would replace it with a
    regular file), and the parts and the lock live next to the target, so a run on the target and a run
    on the link exclude each other.
    """
    for _ in range(40):  # the kernel's own limit on link chains
        if not path.is_symlink():
            return path
        target = Path(os.readlink(path))
        path = target if target.is_absolute() else path.parent / target
    raise UsageError(f"output {path} is a symlink loop")


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    # Makes a rename durable; some filesystems refuse fsync on directories, which is fine to ignore.
    with contextlib.suppress(OSError):
        _fsync_path(path)


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


# ------------------------------------------------------------------------------------ encode / decode


def _json_default(obj: Any) -> Any:
    """JSON for values Arrow hands back (datetimes, decimals, bytes) and numpy scalars/arrays."""
    if isinstance(obj, (_dt.datetime, _dt.date, _dt.time)):
        return obj.isoformat()
    if isinstance(obj, decimal.Decimal):
        return str(obj)
    if isinstance(obj, (bytes, bytearray)):
        return base64.b64encode(bytes(obj)).decode("ascii")
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, without importing numpy
        return obj.tolist()
    raise TypeError(f"cannot write a value of type {type(obj).__name__} to a result file")


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=_json_default)


def _metadata_bytes(meta: Mapping[str, str]) -> dict[bytes, bytes]:
    return {k.encode(): v.encode() for k, v in meta.items()}


def _decode_metadata(raw: Mapping[bytes, bytes] | None) -> dict[str, str]:
    if not raw:
        return {}
    out = {}
    for key, value in raw.items():
        name = key.decode("utf-8", "replace")
        # Arrow and pandas put their own bookkeeping here; it is not ours to report.
        if name.startswith("ARROW:") or name == "pandas":
            continue
        out[name] = value.decode("utf-8", "replace")
    return out


def _schema_to_b64(schema: pa.Schema) -> str:
    return base64.b64encode(schema.serialize().to_pybytes()).decode("ascii")


def _schema_from_b64(text: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


def _read_sidecar(path: Path) -> dict[str, Any] | None:
    sidecar = _sidecar_path(path)
    if not sidecar.exists():
        return None
    return json.loads(sidecar.read_text(encoding="utf-8"))


def _sidecar_schema(side: Mapping[str, Any] | None) -> pa.Schema | None:
    if not side or "arrow_schema" not in side:
        return None
    return _schema_from_b64(side["arrow_schema"])


def _json_safe_schema(schema: pa.Schema) -> pa.Schema:
    # Temporal values travel through JSON as ISO strings: parse them as strings, then cast.
    fields = [
        pa.field(f.name, pa.string()) if pa.types.is_temporal(f.type) else f.remove_metadata() for f in schema
    ]
    return pa.schema(fields)


def _read_jsonl(path: Path, schema: pa.Schema | None) -> pa.Table:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not a JSON line ({exc})") from exc
    if schema is None:
        return pa.Table.from_pylist(rows)
    table = pa.Table.from_pylist(rows, schema=_json_safe_schema(schema))
    return table.cast(schema.remove_metadata())


def _read_csv(path: Path, schema: pa.Schema | None) -> pa.Table:
    if path.stat().st_size == 0:
        return (schema or pa.schema([])).empty_table()
    if schema is None:
        return pa_csv.read_csv(path)
    column_types = {f.name: pa.string() if pa.types.is_nested(f.type) else f.type for f in schema}
    table = pa_csv.read_csv(
        path,
        convert_options=pa_csv.ConvertOptions(
            column_types=column_types,
            # Only an unquoted empty cell is null; "" is the empty string and "nan" a float NaN.
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )
    columns, fields = [], []
    for field in schema:
        if field.name not in table.column_names:
            continue  # an older file: the caller fills missing columns
        col = table.column(field.name)
        if pa.types.is_nested(field.type):
            col = pa.array([None if s is None else json.loads(s) for s in col.to_pylist()], type=field.type)
        columns.append(col)
        fields.append(field.remove_metadata())
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def _jsonify_nested(table: pa.Table) -> pa.Table:
    """CSV cannot hold lists or structs: encode those columns as JSON text."""
    columns, fields = [], []
    for field, col in zip(table.schema, table.columns, strict=True):
        if pa.types.is_nested(field.type):
            col = pa.array([None if v is None else _dumps(v) for v in col.to_pylist()], type=pa.string())
            field = pa.field(field.name, pa.string())
        columns.append(col)
        fields.append(field)
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def read_results(path: str | os.PathLike[str], fmt: str | None = None) -> pa.Table:
    """Read a result file of any supported format; the schema carries the mlb metadata.

    JSONL and CSV are decoded with the exact Arrow schema stored in the `.meta.json` sidecar when it
    exists (so CSV's JSON-encoded list columns come back as lists); without it types are inferred.
    """
    path = Path(path)
    fmt = infer_format(path, fmt)
    if fmt == "parquet":
        return pq.read_table(path)
    side = _read_sidecar(path)
    schema = _sidecar_schema(side)
    table = _read_jsonl(path, schema) if fmt == "jsonl" else _read_csv(path, schema)
    if side and side.get("metadata"):
        table = table.replace_schema_metadata(_metadata_bytes(side["metadata"]))
    return table


def schema_metadata(path: str | os.PathLike[str], fmt: str | None = None) -> dict[str, str]:
    """The metadata stored with a result file (`mlb.schema_version`, `mlb.kind`, the caller's keys)."""
    path = Path(path)
    fmt = infer_format(path, fmt)
    if fmt == "parquet":
        return _decode_metadata(pq.read_schema(path).metadata)
    side = _read_sidecar(path)
    return dict(side.get("metadata", {})) if side else {}


def _write_file(table: pa.Table, path: Path, fmt: str) -> None:
    """Write `table` to `path` in `fmt` and fsync it (the caller renames it into place)."""
    if fmt == "parquet":
        pq.write_table(table, path, compression="zstd")
    elif fmt == "jsonl":
        with open(path, "w", encoding="utf-8") as fh:
            for batch in table.to_batches(max_chunksize=4096):
                fh.writelines(_dumps(row) + "\n" for row in batch.to_pylist())
    else:
        pa_csv.write_csv(_jsonify_nested(table), path)
    _fsync_path(path)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = _sibling(path, f".tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise


# ----------------------------------------------------------------------------------------- the writer


class ResultWriter:
    """Buffered, resumable writer of result rows (see the module docstring for the on-disk protocol).

    Use as a context manager; `close()` (also run when the body raises, KeyboardInterrupt included)
    merges the previous final file, all committed parts and the buffer into a new final file.
    `flush_seconds` is checked at each `write()` (no background thread): a row is never committed
    later than the next write after the deadline, or `close()`.
    """

    def __init__(
        self,
        out: str | os.PathLike[str],
        *,
        schema: pa.Schema,
        kind: str,
        fmt: str | None = None,
        resume: bool = True,
        overwrite: bool = False,
        skip_key: Sequence[str],
        unique_key: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        flush_every: int = 16,
        flush_seconds: float = 30.0,
        stdout: TextIO | None = None,
    ) -> None:
        if not kind:
            raise ValueError("kind must be a non-empty string")
        if flush_every < 1:
            raise ValueError(f"flush_every must be >= 1, got {flush_every}")
        if flush_seconds < 0:
            raise ValueError(f"flush_seconds must be >= 0, got {flush_seconds}")
        self.kind = kind
        self._names = list(schema.names)
        self.skip_key = tuple(skip_key)
        self.unique_key = tuple(unique_key) if unique_key is not None else self.skip_key
        for label, keys in (("skip_key", self.skip_key), ("unique_key", self.unique_key)):
            if not keys:
                raise ValueError(f"{label} must name at least one column")
            for key in keys:
                if key not in self._names:
                    raise ValueError(f"{label} column {key!r} is not in the schema")
                if pa.types.is_nested(schema.field(key).type):
                    raise ValueError(f"{label} column {key!r} must be a scalar column, not a list/struct")
        self._has_error = ERROR_COLUMN in self._names

        meta = {KEY_SCHEMA_VERSION: SCHEMA_VERSION, KEY_KIND: kind}
        for key, value in (metadata or {}).items():
            if key in meta:
                raise ValueError(f"metadata key {key!r} is reserved")
            meta[str(key)] = value if isinstance(value, str) else _dumps(value)
        self.metadata: dict[str, str] = meta
        self.schema = pa.schema(list(schema), metadata=_metadata_bytes(meta))

        self._flush_every = flush_every
        self._flush_seconds = flush_seconds
        self._resume = resume
        self._overwrite = overwrite
        self._buffer: list[pa.RecordBatch] = []
        self._written = 0
        self._done: set[tuple] = set()
        self._closed = False
        self._total_rows: int | None = None
        self._last_flush = time.monotonic()
        self._lock_fd: int | None = None
        self._base_exists = False
        self._old_parts: list[Path] = []
        self._stale_parts: list[Path] = []
        self._base_superseded = False
        self._run_id = 0
        self._my_parts: list[Path] = []
        self._seq = 0
        self._warned_extra: set[str] = set()
        self._committed = 0
        self._write_error: MlbError | None = None
        # (what, metadata) of each existing file whose rows close() will merge (see existing_metadata).
        self._merged_sources: list[tuple[str, dict[str, str]]] = []

        self._stream: TextIO | None = None
        if str(out) == "-":
            if fmt not in (None, "jsonl"):
                raise UsageError("output '-' streams JSON lines; it cannot be written as " + str(fmt))
            self.path: Path | None = None
            self.fmt = "jsonl"
            self._stream = stdout if stdout is not None else sys.stdout
            return

        self._given = str(out)
        self.fmt = infer_format(out, fmt)  # the name the user gave decides (and must agree with fmt)
        self.path = _follow_symlinks(Path(out))
        if self.path.is_dir():
            raise UsageError(f"output {self.path} is a directory; give a file name")
        self._make_folder()
        self._parts = _parts_dir(self.path)
        # Lock before looking at anything: a second run must fail before doing any work.
        self._acquire_lock()
        try:
            self._probe_writable()
            self._scan_existing()
        except BaseException:
            self._release_lock()
            raise

    # ------------------------------------------------------------------ public API

    @property
    def out(self) -> str:
        """The output as given: a file path (a symlink stays as named), or "-" for stdout."""
        return "-" if self.path is None else self._given

    @property
    def written(self) -> int:
        """Rows written by this run (including rows still buffered)."""
        return self._written

    @property
    def committed(self) -> int:
        """Rows of this run that reached disk (committed parts, hence the final file) or stdout.

        Commits keep write order, so these are the first `committed` rows passed to `write()`. After a
        write error, rows beyond them are lost and will be redone by the next run.
        """
        return self._committed

    def existing_metadata(self) -> list[tuple[str, dict[str, str]]]:
        """(description, metadata) of every existing file whose rows `close()` will merge with ours.

        That is the final file unless an (interrupted) `--overwrite` superseded it, and the parts of an
        interrupted run; nothing with `overwrite`. Callers compare their run options against these, not
        against the final file, which may be about to be replaced.
        """
        return list(self._merged_sources)

    @property
    def total_rows(self) -> int | None:
        """Rows in the final file after `close()` (None before, or for stdout)."""
        return self._total_rows

    def done_keys(self) -> set[tuple]:
        """`skip_key` tuples of rows already present without an error (previous runs and this one).

        Failed rows are not done: a resumed run retries them, and the new row replaces the old one.
        """
        return set(self._done)

    def write(self, row: Mapping[str, Any]) -> None:
        """Add one result row; missing columns are null, unknown columns raise ValueError."""
        if self._closed:
            raise RuntimeError("write() on a closed ResultWriter")
        if self._write_error is not None:
            raise self._write_error
        if not isinstance(row, Mapping):
            raise TypeError(f"a result row must be a mapping, got {type(row).__name__}")
        unknown = [k for k in row if k not in self._names]
        if unknown:
            hints = [
                f"{k!r} (did you mean {m[0]!r}?)"
                if (m := difflib.get_close_matches(str(k), self._names, 1))
                else repr(k)
                for k in unknown
            ]
            raise ValueError(f"unknown result column(s): {', '.join(hints)}")
        try:
            # Converting per row reports a bad value at the write() that caused it, not at a later flush.
            batch = pa.RecordBatch.from_pylist([dict(row)], schema=self.schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
            raise ValueError(f"result row does not fit the schema: {exc}") from exc
        self._written += 1
        if self._stream is not None:
            # Arrow-normalised values (numpy scalars become numbers), one flushed line per row.
            self._stream.write(_dumps(batch.to_pylist()[0]) + "\n")
            self._stream.flush()
            self._committed += 1
            return
        self._buffer.append(batch)
        self._note_done(dict(row))
        if (
            len(self._buffer) >= self._flush_every
            or time.monotonic() - self._last_flush >= self._flush_seconds
        ):
            self.flush()

    def flush(self) -> None:
        """Commit buffered rows as a part file (durable: a kill after this loses none of them)."""
        if self._stream is not None:
            self._stream.flush()
            return
        if not self._buffer:
            self._last_flush = time.monotonic()
            return
        assert self.path is not None
        if self._write_error is not None:
            raise self._write_error
        table = pa.Table.from_batches(self._buffer, schema=self.schema)
        name = f"part-{self._run_id}-{os.getpid()}-{self._seq:06d}.parquet"
        final = self._parts / name
        tmp = self._parts / f".{name}.tmp"
        try:
            self._parts.mkdir(exist_ok=True)
            if self._overwrite and not self._my_parts:
                # From now on a killed run must not resurrect the old rows: a resumed run reads this
                # marker and ignores the old final file and older parts.
                _atomic_write_text(self._parts / _OVERWRITE_MARKER, f"{self._run_id}\n")
                _fsync_dir(self._parts)
            pq.write_table(table, tmp, compression="zstd")
            _fsync_path(tmp)
            os.replace(tmp, final)
        except OSError as exc:  # disk full, folder gone read-only...: one clear line, parts kept
            _unlink_quietly(tmp)
            raise self._failed_to_write(exc, final) from exc
        except BaseException:
            _unlink_quietly(tmp)
            raise  # the buffer is kept, so close() can try again
        _fsync_dir(self._parts)
        self._my_parts.append(final)
        self._seq += 1
        self._committed += table.num_rows
        self._buffer.clear()
        self._last_flush = time.monotonic()

    def _failed_to_write(self, exc: OSError, target: Path) -> MlbError:
        """The one-line error for an OSError while committing; the writer writes nothing after it."""
        assert self.path is not None
        if self._committed:
            saved = (
                f"{self._committed} row(s) of this run are committed in {self._parts.name}/ "
                "for the next run to merge"
            )
        else:
            saved = "no row of this run was committed"
        previous = "is unchanged" if self._base_exists else "was not created"
        self._write_error = MlbError(
            f"cannot write {target} ({_reason(exc)}); {saved}; {self.path.name} {previous}. "
            "Free space (or fix the folder) and rerun to resume"
        )
        return self._write_error

    def close(self) -> None:
        """Merge everything into the final file atomically, then drop the parts and the lock."""
        self._close(failed=False)

    def _close(self, *, failed: bool) -> None:
        if self._closed:
            return
        self._closed = True
        if self._stream is not None:
            self._stream.flush()
            return
        try:
            if failed and not self._written:
                # A run that died before producing anything (bad model, Ctrl-C at start) must neither
                # replace the user's old file with an empty one nor leave a new empty file behind.
                logger.info("run failed before writing any row; %s left untouched", self.path)
                return
            if self._write_error is not None:
                # Writing already failed (and was reported): retrying would most likely fail again with
                # a second, different error. The committed parts stay for the next run to merge.
                return
            self.flush()
            self._merge()
        finally:
            self._release_lock()

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        # Also on errors and Ctrl-C: rows finished before the failure must reach the final file.
        self._close(failed=exc_type is not None)

    # ------------------------------------------------------------------ locking

    def _acquire_lock(self) -> None:
        assert self.path is not None
        if fcntl is None:  # pragma: no cover
            logger.warning("no fcntl on this platform: concurrent runs on %s are not detected", self.path)
            return
        lock = _lock_path(self.path)
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UsageError(
                f"cannot write the output {self.path}: cannot create {lock} ({_reason(exc)})"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            # flock is advisory, so the holder's pid can still be read for the message.
            pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise OutputLockedError(f"another mlb run is writing {self.path} (pid {pid})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _make_folder(self) -> None:
        """Create the output's folder; an impossible one (under a regular file...) is a UsageError."""
        assert self.path is not None
        parent = self.path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            blocker = next((p for p in (parent, *parent.parents) if p.exists() and not p.is_dir()), None)
            why = f"{blocker} is a file, not a folder" if blocker is not None else _reason(exc)
            raise UsageError(f"cannot write the output {self.path}: {why}") from None

    def _probe_writable(self) -> None:
        """Create and remove a file next to the output, so an unwritable folder fails before any work.

        The lock file alone does not prove it: it may be left over from a run before the folder became
        read-only. (Permission bits are not enough either: ACLs, immutable flags, read-only mounts.)
        """
        assert self.path is not None
        probe = self.path.with_name(f".{self.path.name}.probe-{os.getpid()}")
        try:
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT, 0o644))
            os.unlink(probe)  # also proves renames/removals work there (merge and cleanup need them)
        except OSError as exc:
            raise UsageError(
                f"cannot write the output {self.path}: {_reason(exc)} in {self.path.parent}"
            ) from None

    def _release_lock(self) -> None:
        # The lock file stays: deleting it would race with a process that just opened it.
        if self._lock_fd is not None:
            fd, self._lock_fd = self._lock_fd, None
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # ------------------------------------------------------------------ existing output

    @staticmethod
    def _part_order(path: Path) -> tuple[int, int, int]:
        match = _PART_RE.match(path.name)
        assert match is not None
        return int(match.group(1)), int(match.group(3)), int(match.group(2))

    def _list_parts(self) -> list[Path]:
        if not self._parts.is_dir():
            return []
        parts = []
        for entry in self._parts.iterdir():
            if _PART_RE.match(entry.name):
                parts.append(entry)
            elif (
                not entry.name.startswith(".")
                and not entry.name.endswith(".corrupt")
                and not entry.name.startswith(_OVERWRITE_MARKER)
            ):
                logger.warning("ignoring unexpected file %s in %s", entry.name, self._parts)
        return sorted(parts, key=self._part_order)

    def _scan_existing(self) -> None:
        assert self.path is not None
        self._base_exists = self.path.exists()
        parts = self._list_parts()
        marker = self._parts / _OVERWRITE_MARKER
        superseded_before: int | None = None
        if marker.exists():
            with contextlib.suppress(ValueError, OSError):
                superseded_before = int(marker.read_text().strip())
        orders = [self._part_order(p)[0] for p in parts] + [superseded_before or 0]
        # Part names sort by run start: this run's parts always sort after those it found on disk.
        self._run_id = max(time.time_ns(), max(orders) + 1)
        if (self._base_exists or parts) and not self._resume and not self._overwrite:
            what = "already exists" if self._base_exists else "has unfinished parts from an interrupted run"
            raise UsageError(
                f"output {self.path} {what}; pass --resume to complete it or --overwrite to replace it"
            )
        if self._overwrite:
            # Start empty. The old file stays untouched until close() replaces it; parts of an
            # interrupted run are not merged, and are deleted at close.
            self._stale_parts = parts
            return
        if superseded_before is not None:
            # An interrupted --overwrite run committed parts: the old final file and anything older than
            # that run are superseded, exactly as if the overwrite had completed.
            self._base_superseded = True
            self._stale_parts = [p for p in parts if self._part_order(p)[0] < superseded_before]
            parts = [p for p in parts if self._part_order(p)[0] >= superseded_before]
        if self._base_exists and not self._base_superseded:
            try:
                meta = schema_metadata(self.path, self.fmt)
            except Exception as exc:
                raise UsageError(
                    f"cannot read the existing output {self.path} ({exc}); pass --overwrite to replace it"
                ) from exc
            self._check_compatible(meta, self.path)
            self._account_done(self._read_keys(self.path))
            self._merged_sources.append((str(self.path), meta))
        for part in parts:
            try:
                part_schema = pq.read_schema(part)
                present = [c for c in self._key_columns() if c in part_schema.names]
                # Parts of a run with an older schema are checked in full now (see _read_keys).
                differ = self._types_differ(part_schema)
                keys = pq.read_table(part, columns=None if differ else present)
            except Exception as exc:  # parts are complete by construction; this takes disk corruption
                logger.warning("skipping unreadable part %s (%s); its rows will be redone", part, exc)
                with contextlib.suppress(OSError):
                    os.replace(part, _sibling(part, ".corrupt"))
                continue
            part_meta = _decode_metadata(part_schema.metadata)
            self._check_compatible(part_meta, part)
            if differ:
                self._conform(keys, part)
            self._account_done(self._conform(keys, part, subset=True))
            self._old_parts.append(part)
            self._merged_sources.append(
                (f"the unfinished parts of an interrupted run in {self._parts}", part_meta)
            )
        if self._old_parts:
            logger.info(
                "resuming %s: found %d part file(s) of an interrupted run", self.path, len(self._old_parts)
            )

    def _key_columns(self) -> list[str]:
        return list(dict.fromkeys(self.skip_key + ((ERROR_COLUMN,) if self._has_error else ())))

    def _types_differ(self, schema: pa.Schema) -> bool:
        names = set(schema.names)
        return any(f.name in names and schema.field(f.name).type != f.type for f in self.schema)

    def _read_keys(self, path: Path) -> pa.Table:
        """The key and error columns of the existing final file, after checking it can be merged.

        A file whose column types differ from ours (an older schema version) is conformed in full
        now, so that an impossible merge fails before any work rather than at close().
        """
        try:
            if self.fmt == "parquet":
                file_schema = pq.read_schema(path)
                if self._types_differ(file_schema):
                    table = pq.read_table(path)
                else:
                    present = file_schema.names
                    table = pq.read_table(path, columns=[c for c in self._key_columns() if c in present])
            else:
                table = read_results(path, self.fmt)
        except Exception as exc:
            raise UsageError(
                f"cannot read the existing output {path} ({exc}); pass --overwrite to replace it"
            ) from exc
        if set(self._key_columns()) != set(table.column_names):
            self._conform(table, path)
        return self._conform(table, path, subset=True)

    def _check_compatible(self, meta: Mapping[str, str], source: Path) -> None:
        version = meta.get(KEY_SCHEMA_VERSION)
        kind = meta.get(KEY_KIND)
        if version is None or kind is None:
            raise UsageError(
                f"{source} was not written by mlb (no {KEY_SCHEMA_VERSION} metadata); "
                f"choose another output or pass --overwrite to replace it"
            )
        if kind != self.kind:
            raise UsageError(
                f"{source} holds mlb {kind!r} results, not {self.kind!r}; "
                f"choose another output or pass --overwrite to replace it"
            )
        if version == SCHEMA_VERSION:
            return
        try:
            newer = int(version) > int(SCHEMA_VERSION)
        except ValueError:
            newer = True
        if newer:
            raise UsageError(
                f"{source} was written with result schema version {version}, newer than this mlb's "
                f"{SCHEMA_VERSION}; upgrade mlb, choose another output, or pass --overwrite"
            )
        # An older version is merged column by column in _conform, which fails loudly if it cannot.

    def _conform(self, table: pa.Table, source: Path, *, subset: bool = False) -> pa.Table:
        """Reorder/cast `table` to our schema; absent columns become null (schema evolution).

        With `subset`, only the key/error columns are produced (for done-key accounting).
        """
        fields = [self.schema.field(c) for c in self._key_columns()] if subset else list(self.schema)
        for key in self.skip_key if subset else self.skip_key + self.unique_key:
            if key not in table.column_names and table.num_rows:
                raise UsageError(
                    f"{source} has no {key!r} column, so its rows cannot be matched with new ones; "
                    f"choose another output or pass --overwrite"
                )
        columns = []
        for field in fields:
            if field.name not in table.column_names:
                columns.append(pa.nulls(table.num_rows, field.type))
                continue
            col = table.column(field.name)
            if col.type != field.type:
                try:
                    col = col.cast(field.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
                    raise UsageError(
                        f"cannot merge {source}: its column {field.name!r} has type {col.type}, "
                        f"which does not convert to {field.type} (result schema version {SCHEMA_VERSION}); "
                        f"choose another output or pass --overwrite"
                    ) from exc
            columns.append(col)
        if not subset:
            extra = [c for c in table.column_names if c not in self._names and c not in self._warned_extra]
            if extra:
                self._warned_extra.update(extra)
                logger.warning(
                    "dropping column(s) %s of %s that the current schema no longer has", extra, source
                )
        return pa.Table.from_arrays(columns, schema=pa.schema(fields))

    def _note_done(self, row: Mapping[str, Any]) -> None:
        key = tuple(row.get(k) for k in self.skip_key)
        if self._has_error and row.get(ERROR_COLUMN) is not None:
            self._done.discard(key)  # the last row for a key decides, as in the merge
        else:
            self._done.add(key)

    def _account_done(self, table: pa.Table) -> None:
        for row in table.to_pylist():
            self._note_done(row)

    # ------------------------------------------------------------------ merge

    def _merge(self) -> None:
        assert self.path is not None
        parts = self._old_parts + self._my_parts
        use_base = self._base_exists and not self._overwrite and not self._base_superseded
        if use_base and not parts:
            # Nothing new: leave the final file byte-for-byte as it is.
            self._total_rows = None
            self._cleanup(parts)
            return
        tables: list[pa.Table] = []
        if use_base:
            tables.append(self._conform(read_results(self.path, self.fmt), self.path))
        tables.extend(self._conform(pq.read_table(p), p) for p in parts)
        merged = pa.concat_tables(tables) if tables else self.schema.empty_table()
        merged = self._dedup(merged).replace_schema_metadata(self.schema.metadata)

        tmp = _sibling(self.path, f".tmp-{os.getpid()}")
        try:
            if self.fmt != "parquet":
                # Sidecar first: if we die between the two renames, the old data is read with the new
                # schema (missing columns become null), never new data with an old schema (lost columns).
                side = {
                    "metadata": self.metadata,
                    "columns": {f.name: str(f.type) for f in self.schema},
                    "arrow_schema": _schema_to_b64(self.schema.remove_metadata()),
                }
                _atomic_write_text(
                    _sidecar_path(self.path), json.dumps(side, indent=1, sort_keys=True) + "\n"
                )
            _write_file(merged, tmp, self.fmt)
            os.replace(tmp, self.path)
        except OSError as exc:  # disk full: the old final file and every part stay for the next run
            _unlink_quietly(tmp)
            raise self._failed_to_write(exc, self.path) from exc
        except BaseException:
            _unlink_quietly(tmp)
            raise
        _fsync_dir(self.path.parent)
        self._total_rows = merged.num_rows
        logger.info("wrote %s: %d row(s), %d new this run", self.path, merged.num_rows, self._written)
        self._cleanup(parts + self._stale_parts)

    def _dedup(self, table: pa.Table) -> pa.Table:
        """Keep the last row for each unique key, in order of those last rows."""
        if table.num_rows == 0:
            return table
        keyed = table.select(list(self.unique_key)).append_column(
            _ROW_INDEX, pa.array(range(table.num_rows), type=pa.int64())
        )
        last = keyed.group_by(list(self.unique_key), use_threads=False).aggregate([(_ROW_INDEX, "max")])
        winners = sorted(last.column(f"{_ROW_INDEX}_max").to_pylist())
        if len(winners) == table.num_rows:
            return table
        return table.take(pa.array(winners, type=pa.int64()))

    def _cleanup(self, parts: Iterable[Path]) -> None:
        """Drop merged parts and temporaries of killed runs (safe: we hold the lock)."""
        assert self.path is not None
        for part in parts:
            _unlink_quietly(part)
        if self._parts.is_dir():
            for entry in self._parts.iterdir():
                ours = entry.name.startswith((_OVERWRITE_MARKER, ".part-"))
                if ours and not _PART_RE.match(entry.name):
                    _unlink_quietly(entry)
            with contextlib.suppress(OSError):
                self._parts.rmdir()  # only succeeds when empty (corrupt parts are kept for inspection)
        # Temporaries of killed runs next to the output: the final file's and the sidecar's.
        stale_tmp = re.compile(re.escape(self.path.name) + r"\.tmp-\d+$")
        side_tmp = _sidecar_path(self.path).name + ".tmp-"
        probe = f".{self.path.name}.probe-"  # of a run killed inside _probe_writable
        for entry in self.path.parent.iterdir():
            if stale_tmp.match(entry.name) or entry.name.startswith((side_tmp, probe)):
                _unlink_quietly(entry)
