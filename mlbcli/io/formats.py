"""Result tables to and from Parquet, JSON lines and CSV, with the schema and metadata kept exact.

Parquet stores its Arrow schema and the mlb metadata inside the file. JSONL and CSV cannot, so a
``.meta.json`` sidecar next to them holds the exact Arrow schema (base64 IPC) and the metadata, and
reading decodes with it: CSV's JSON-encoded list columns come back as lists, timestamps as timestamps.
Without a sidecar (a file from elsewhere) the types are inferred.

This module must not import torch/transformers: it is on the fast start path of the CLI.
"""

from __future__ import annotations

import base64
import datetime as _dt
import decimal
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from mlbcli.errors import UsageError
from mlbcli.io.parts import atomic_write_text, fsync_path, sidecar_path

__all__ = ["FORMATS", "infer_format", "read_results", "schema_metadata", "write_table_file"]

FORMATS = ("parquet", "jsonl", "csv")
_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}


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


def dumps(value: Any) -> str:
    """One JSON text for a result value or row (UTF-8 kept as is, Arrow/numpy values converted)."""
    return json.dumps(value, ensure_ascii=False, default=_json_default)


def metadata_bytes(meta: Mapping[str, str]) -> dict[bytes, bytes]:
    return {k.encode(): v.encode() for k, v in meta.items()}


def decode_metadata(raw: Mapping[bytes, bytes] | None) -> dict[str, str]:
    """Schema metadata as text, without Arrow's and pandas' own bookkeeping (not ours to report)."""
    if not raw:
        return {}
    out = {}
    for key, value in raw.items():
        name = key.decode("utf-8", "replace")
        if name.startswith("ARROW:") or name == "pandas":
            continue
        out[name] = value.decode("utf-8", "replace")
    return out


# ------------------------------------------------------------------------------------------ sidecar


def _read_sidecar(path: Path) -> dict[str, Any] | None:
    sidecar = sidecar_path(path)
    if not sidecar.exists():
        return None
    return json.loads(sidecar.read_text(encoding="utf-8"))


def _sidecar_schema(side: Mapping[str, Any] | None) -> pa.Schema | None:
    if not side or "arrow_schema" not in side:
        return None
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(side["arrow_schema"])))


def write_sidecar(path: Path, schema: pa.Schema, metadata: Mapping[str, str]) -> None:
    """Replace the `.meta.json` of a JSONL/CSV output: the exact Arrow schema and the mlb metadata."""
    arrow_schema = schema.remove_metadata().serialize().to_pybytes()
    side = {
        "metadata": dict(metadata),
        "columns": {f.name: str(f.type) for f in schema},
        "arrow_schema": base64.b64encode(arrow_schema).decode("ascii"),
    }
    atomic_write_text(sidecar_path(path), json.dumps(side, indent=1, sort_keys=True) + "\n")


# --------------------------------------------------------------------------------------------- read


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
        table = table.replace_schema_metadata(metadata_bytes(side["metadata"]))
    return table


def schema_metadata(path: str | os.PathLike[str], fmt: str | None = None) -> dict[str, str]:
    """The metadata stored with a result file (`mlb.schema_version`, `mlb.kind`, the caller's keys)."""
    path = Path(path)
    fmt = infer_format(path, fmt)
    if fmt == "parquet":
        return decode_metadata(pq.read_schema(path).metadata)
    side = _read_sidecar(path)
    return dict(side.get("metadata", {})) if side else {}


# -------------------------------------------------------------------------------------------- write


def _jsonify_nested(table: pa.Table) -> pa.Table:
    """CSV cannot hold lists or structs: encode those columns as JSON text."""
    columns, fields = [], []
    for field, col in zip(table.schema, table.columns, strict=True):
        if pa.types.is_nested(field.type):
            col = pa.array([None if v is None else dumps(v) for v in col.to_pylist()], type=pa.string())
            field = pa.field(field.name, pa.string())
        columns.append(col)
        fields.append(field)
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def write_table_file(table: pa.Table, path: Path, fmt: str) -> None:
    """Write `table` to `path` in `fmt` and fsync it (the caller renames it into place)."""
    if fmt == "parquet":
        pq.write_table(table, path, compression="zstd")
    elif fmt == "jsonl":
        with open(path, "w", encoding="utf-8") as fh:
            for batch in table.to_batches(max_chunksize=4096):
                fh.writelines(dumps(row) + "\n" for row in batch.to_pylist())
    else:
        pa_csv.write_csv(_jsonify_nested(table), path)
    fsync_path(path)
