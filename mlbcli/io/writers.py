"""Result files: atomic, resumable and safe against two runs writing the same output.

`ResultWriter` is the public face; the files it keeps next to the output (parts, lock, sidecar) and how
each is written atomically are in `mlbcli.io.parts`, the formats (Parquet, JSONL, CSV) in
`mlbcli.io.formats`. Layout on disk for an output ``results.parquet``::

    results.parquet              the final file, only ever replaced whole (tmp + os.replace)
    results.parquet.parts/       committed batches of the current (or a killed) run, always Parquet
    .results.parquet.lock        flock target, removed when the run ends (a killed run's stays, harmless)
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

import contextlib
import difflib
import logging
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import pyarrow as pa
import pyarrow.parquet as pq

from mlbcli.errors import MlbError, UsageError
from mlbcli.io import parts
from mlbcli.io.formats import (
    FORMATS,
    decode_metadata,
    dumps,
    infer_format,
    read_results,
    schema_metadata,
    write_sidecar,
    write_table_file,
)
from mlbcli.io.merging import ERROR_COLUMN, KEY_KIND, KEY_SCHEMA_VERSION, SCHEMA_VERSION, ResultSchema

__all__ = [
    "ERROR_COLUMN",
    "FORMATS",
    "KEY_KIND",
    "KEY_SCHEMA_VERSION",
    "SCHEMA_VERSION",
    "ResultWriter",
    "infer_format",
    "read_results",
    "schema_metadata",
]

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _reading_existing(path: Path) -> Iterator[None]:
    """An existing output that cannot be read is a UsageError (before any work) offering --overwrite."""
    try:
        yield
    except Exception as exc:
        raise UsageError(
            f"cannot read the existing output {path} ({exc}); pass --overwrite to replace it"
        ) from exc


class ResultWriter:
    """Buffered, resumable writer of result rows (see the module docstring for the on-disk protocol).

    Use as a context manager; `close()` (also run when the body raises, KeyboardInterrupt included)
    merges the previous final file, all committed parts and the buffer into a new final file.
    `flush_seconds` is checked at each `write()` (no background thread): a row is never committed
    later than the next write after the deadline, or `close()`.
    """

    path: Path | None  # the final file (a symlink's target); None when streaming to stdout
    _stream: TextIO | None  # stdout when the output is "-"

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
        self._result_schema = ResultSchema(
            schema, kind=kind, skip_key=skip_key, unique_key=unique_key, metadata=metadata
        )
        self.kind = kind
        self.skip_key = self._result_schema.skip_key
        self.unique_key = self._result_schema.unique_key
        self.metadata: dict[str, str] = self._result_schema.metadata
        self.schema = self._result_schema.schema
        self._flush_every = flush_every
        self._flush_seconds = flush_seconds
        self._resume = resume
        self._overwrite = overwrite
        self._init_run_state()
        if str(out) == "-":
            if fmt not in (None, "jsonl"):
                raise UsageError("output '-' streams JSON lines; it cannot be written as " + str(fmt))
            self.fmt = "jsonl"
            self._stream = stdout if stdout is not None else sys.stdout
            return
        self._open_file(out, fmt)

    def _init_run_state(self) -> None:
        """What this run has buffered, committed and found on disk (filled by `_scan_existing`)."""
        self._buffer: list[pa.RecordBatch] = []
        self._written = 0
        self._committed = 0
        self._done: set[tuple] = set()
        self._failed: set[tuple] = set()  # keys whose last row is an error row
        self._closed = False
        self._total_rows: int | None = None
        self._last_flush = time.monotonic()
        self._write_error: MlbError | None = None
        self._stream = None
        self.path = None
        self._lock: parts.OutputLock | None = None
        # The output's existing final file and parts, and this run's own parts.
        self._base_exists = False
        self._base_superseded = False
        self._old_parts: list[Path] = []
        self._stale_parts: list[Path] = []
        self._my_parts: list[Path] = []
        self._run_id = 0
        self._seq = 0
        # (what, metadata) of each existing file whose rows close() will merge (see existing_metadata).
        self._merged_sources: list[tuple[str, dict[str, str]]] = []

    def _open_file(self, out: str | os.PathLike[str], fmt: str | None) -> None:
        """Lock the output, check it can be written, and read what earlier runs left (before any work)."""
        self._given = str(out)
        self.fmt = infer_format(out, fmt)  # the name the user gave decides (and must agree with fmt)
        path = self.path = parts.follow_symlinks(Path(out))
        if path.is_dir():
            raise UsageError(f"output {path} is a directory; give a file name")
        parts.make_folder(path)
        self._parts = parts.parts_dir(path)
        # Lock before looking at anything: a second run must fail before doing any work.
        self._lock = parts.OutputLock(path)
        self._lock.acquire()
        try:
            parts.probe_writable(path)
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

    @property
    def write_failed(self) -> bool:
        """Whether writing failed (disk full...): the final file was then left as it was, without the
        rows this run committed in parts (the next run merges them)."""
        return self._write_error is not None

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

    def failed_keys(self) -> set[tuple]:
        """`skip_key` tuples whose last row is an error row (what `summarize` remembers as failed)."""
        return set(self._failed)

    def write(self, row: Mapping[str, Any]) -> None:
        """Add one result row; missing columns are null, unknown columns raise ValueError."""
        if self._closed:
            raise RuntimeError("write() on a closed ResultWriter")
        if self._write_error is not None:
            raise self._write_error
        if not isinstance(row, Mapping):
            raise TypeError(f"a result row must be a mapping, got {type(row).__name__}")
        unknown = [k for k in row if k not in self._result_schema.names]
        if unknown:
            hints = [
                f"{k!r} (did you mean {m[0]!r}?)"
                if (m := difflib.get_close_matches(str(k), self._result_schema.names, 1))
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
            self._stream.write(dumps(batch.to_pylist()[0]) + "\n")
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
        final = self._parts / parts.part_name(self._run_id, self._seq)
        try:
            self._parts.mkdir(exist_ok=True)
            if self._overwrite and not self._my_parts:
                # A resumed run reads this marker and ignores the old final file and older parts.
                parts.write_overwrite_marker(self._parts, self._run_id)
            parts.commit_part(table, final)
        except OSError as exc:  # disk full, folder gone read-only...: one clear line, parts kept
            raise self._failed_to_write(exc, final) from exc
        # Any other exception (Ctrl-C) keeps the buffer, so close() can try again.
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
            f"cannot write {target} ({parts.reason(exc)}); {saved}; {self.path.name} {previous}. "
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

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()

    # ------------------------------------------------------------------ existing output

    def _scan_existing(self) -> None:
        """Count the rows earlier runs left (final file, parts of a killed run) as done, after checks."""
        assert self.path is not None
        self._base_exists = self.path.exists()
        found = parts.list_parts(self._parts)
        superseded_before = parts.read_overwrite_marker(self._parts)
        orders = [parts.part_order(p)[0] for p in found] + [superseded_before or 0]
        # Part names sort by run start: this run's parts always sort after those it found on disk.
        self._run_id = max(time.time_ns(), max(orders) + 1)
        if (self._base_exists or found) and not self._resume and not self._overwrite:
            what = "already exists" if self._base_exists else "has unfinished parts from an interrupted run"
            raise UsageError(
                f"output {self.path} {what}; pass --resume to complete it or --overwrite to replace it"
            )
        if self._overwrite:
            # Start empty. The old file stays untouched until close() replaces it; parts of an
            # interrupted run are not merged, and are deleted at close.
            self._stale_parts = found
            return
        if superseded_before is not None:
            # An interrupted --overwrite run committed parts: the old final file and anything older than
            # that run are superseded, exactly as if the overwrite had completed.
            self._base_superseded = True
            self._stale_parts = [p for p in found if parts.part_order(p)[0] < superseded_before]
            found = [p for p in found if parts.part_order(p)[0] >= superseded_before]
        if self._base_exists and not self._base_superseded:
            self._scan_final_file(self.path)
        for part in found:
            self._scan_part(part)
        if self._old_parts:
            logger.info(
                "resuming %s: found %d part file(s) of an interrupted run", self.path, len(self._old_parts)
            )

    def _scan_final_file(self, path: Path) -> None:
        with _reading_existing(path):
            meta = schema_metadata(path, self.fmt)
        self._result_schema.check_compatible(meta, path)
        self._account_done(self._read_keys(path))
        self._merged_sources.append((str(path), meta))

    def _scan_part(self, part: Path) -> None:
        try:
            part_schema = pq.read_schema(part)
            present = [c for c in self._result_schema.key_columns() if c in part_schema.names]
            # Parts of a run with an older schema are checked in full now (see _read_keys).
            differ = self._result_schema.types_differ(part_schema)
            keys = pq.read_table(part, columns=None if differ else present)
        except Exception as exc:  # parts are complete by construction; this takes disk corruption
            logger.warning("skipping unreadable part %s (%s); its rows will be redone", part, exc)
            parts.set_aside_corrupt(part)
            return
        part_meta = decode_metadata(part_schema.metadata)
        self._result_schema.check_compatible(part_meta, part)
        if differ:
            self._result_schema.conform(keys, part)
        self._account_done(self._result_schema.conform(keys, part, subset=True))
        self._old_parts.append(part)
        self._merged_sources.append(
            (f"the unfinished parts of an interrupted run in {self._parts}", part_meta)
        )

    def _read_keys(self, path: Path) -> pa.Table:
        """The key and error columns of the existing final file, after checking it can be merged.

        A file whose column types differ from ours (an older schema version) is conformed in full
        now, so that an impossible merge fails before any work rather than at close().
        """
        with _reading_existing(path):
            if self.fmt == "parquet":
                file_schema = pq.read_schema(path)
                if self._result_schema.types_differ(file_schema):
                    table = pq.read_table(path)
                else:
                    present = file_schema.names
                    table = pq.read_table(
                        path, columns=[c for c in self._result_schema.key_columns() if c in present]
                    )
            else:
                table = read_results(path, self.fmt)
        if set(self._result_schema.key_columns()) != set(table.column_names):
            self._result_schema.conform(table, path)
        return self._result_schema.conform(table, path, subset=True)

    def _note_done(self, row: Mapping[str, Any]) -> None:
        key = tuple(row.get(k) for k in self.skip_key)
        if self._result_schema.has_error and row.get(ERROR_COLUMN) is not None:
            self._done.discard(key)  # the last row for a key decides, as in the merge
            self._failed.add(key)
        else:
            self._done.add(key)
            self._failed.discard(key)

    def _account_done(self, table: pa.Table) -> None:
        for row in table.to_pylist():
            self._note_done(row)

    # ------------------------------------------------------------------ merge

    def _merge(self) -> None:
        assert self.path is not None
        merging = self._old_parts + self._my_parts
        use_base = self._base_exists and not self._overwrite and not self._base_superseded
        if use_base and not merging:
            # Nothing new: leave the final file byte-for-byte as it is.
            self._total_rows = None
            parts.cleanup(self.path, merging)
            return
        tables: list[pa.Table] = []
        if use_base:
            tables.append(self._result_schema.conform(read_results(self.path, self.fmt), self.path))
        tables.extend(self._result_schema.conform(pq.read_table(p), p) for p in merging)
        merged = pa.concat_tables(tables) if tables else self.schema.empty_table()
        merged = self._result_schema.dedup(merged).replace_schema_metadata(self.schema.metadata)
        self._replace_final(merged, self.path)
        self._total_rows = merged.num_rows
        logger.info("wrote %s: %d row(s), %d new this run", self.path, merged.num_rows, self._written)
        parts.cleanup(self.path, merging + self._stale_parts)

    def _replace_final(self, merged: pa.Table, path: Path) -> None:
        """Write the merged table under a temporary name and rename it over the final file."""
        tmp = parts.sibling(path, f".tmp-{os.getpid()}")
        try:
            if self.fmt != "parquet":
                # Sidecar first: if we die between the two renames, the old data is read with the new
                # schema (missing columns become null), never new data with an old schema (lost columns).
                write_sidecar(path, self.schema, self.metadata)
            write_table_file(merged, tmp, self.fmt)
            os.replace(tmp, path)
        except OSError as exc:  # disk full: the old final file and every part stay for the next run
            parts.unlink_quietly(tmp)
            raise self._failed_to_write(exc, path) from exc
        except BaseException:
            parts.unlink_quietly(tmp)
            raise
        parts.fsync_dir(path.parent)
