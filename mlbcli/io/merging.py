"""The result schema a writer merges into: which columns key a row, and how older files' rows fit it.

A resumed run merges the rows of earlier runs (the final file, the parts of a killed run) with its
own. That is only right when those files were written by mlb for the same kind of result, and when
their columns can be brought to the current schema: a column added since becomes null, a column
dropped since is dropped (with a warning), a type that cannot be converted is a `UsageError` offering
`--overwrite`. The merge keeps the last row of each `unique_key` (a redone row replaces the old one).

This module must not import torch/transformers: it is on the fast start path of the CLI.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from mlbcli.errors import UsageError
from mlbcli.io.formats import dumps, metadata_bytes

__all__ = ["ERROR_COLUMN", "KEY_KIND", "KEY_SCHEMA_VERSION", "SCHEMA_VERSION", "ResultSchema"]

logger = logging.getLogger(__name__)

# Bump when a result column changes meaning or type in a way old files cannot be cast to.
SCHEMA_VERSION = "1"
KEY_SCHEMA_VERSION = "mlb.schema_version"
KEY_KIND = "mlb.kind"
# Rows whose `error` is non-null failed and are retried by a resumed run.
ERROR_COLUMN = "error"
_ROW_INDEX = "__mlb_row__"


def _stamped_metadata(kind: str, metadata: Mapping[str, Any] | None) -> dict[str, str]:
    """The file's metadata: the schema version and kind, then the caller's keys (non-text as JSON)."""
    meta = {KEY_SCHEMA_VERSION: SCHEMA_VERSION, KEY_KIND: kind}
    for key, value in (metadata or {}).items():
        if key in meta:
            raise ValueError(f"metadata key {key!r} is reserved")
        meta[str(key)] = value if isinstance(value, str) else dumps(value)
    return meta


class ResultSchema:
    """A writer's columns (`schema`, with the mlb metadata inside) and its keys.

    `skip_key` says which rows are done (a resumed run skips them); `unique_key` which rows are the same
    result (the merge keeps the last). Both must name scalar columns.
    """

    def __init__(
        self,
        schema: pa.Schema,
        *,
        kind: str,
        skip_key: Sequence[str],
        unique_key: Sequence[str] | None,
        metadata: Mapping[str, Any] | None,
    ) -> None:
        self.kind = kind
        self.names = list(schema.names)
        self.skip_key = tuple(skip_key)
        self.unique_key = tuple(unique_key) if unique_key is not None else self.skip_key
        self._check_keys(schema)
        self.has_error = ERROR_COLUMN in self.names
        self.metadata: dict[str, str] = _stamped_metadata(kind, metadata)
        self.schema = pa.schema(list(schema), metadata=metadata_bytes(self.metadata))
        self._warned_extra: set[str] = set()

    def _check_keys(self, schema: pa.Schema) -> None:
        """`skip_key` and `unique_key` must name scalar columns of the schema (rows are matched on them)."""
        for label, keys in (("skip_key", self.skip_key), ("unique_key", self.unique_key)):
            if not keys:
                raise ValueError(f"{label} must name at least one column")
            for key in keys:
                if key not in self.names:
                    raise ValueError(f"{label} column {key!r} is not in the schema")
                if pa.types.is_nested(schema.field(key).type):
                    raise ValueError(f"{label} column {key!r} must be a scalar column, not a list/struct")

    def key_columns(self) -> list[str]:
        """The columns read to tell which rows are done: the skip key, and `error` when there is one."""
        return list(dict.fromkeys(self.skip_key + ((ERROR_COLUMN,) if self.has_error else ())))

    def types_differ(self, schema: pa.Schema) -> bool:
        """True when a column shared with `schema` has another type there (a file of an older version)."""
        names = set(schema.names)
        return any(f.name in names and schema.field(f.name).type != f.type for f in self.schema)

    def check_compatible(self, meta: Mapping[str, str], source: Path) -> None:
        """UsageError unless `source` holds mlb results of this kind, of this or an older schema version."""
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
        # An older version is merged column by column in conform, which fails loudly if it cannot.

    def conform(self, table: pa.Table, source: Path, *, subset: bool = False) -> pa.Table:
        """Reorder/cast `table` to our schema; absent columns become null (schema evolution).

        With `subset`, only the key/error columns are produced (for done-key accounting).
        """
        fields = [self.schema.field(c) for c in self.key_columns()] if subset else list(self.schema)
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
            extra = [c for c in table.column_names if c not in self.names and c not in self._warned_extra]
            if extra:
                self._warned_extra.update(extra)
                logger.warning(
                    "dropping column(s) %s of %s that the current schema no longer has", extra, source
                )
        return pa.Table.from_arrays(columns, schema=pa.schema(fields))

    def dedup(self, table: pa.Table) -> pa.Table:
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
