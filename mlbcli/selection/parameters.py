"""Hyperparameters declared next to the code that reads them: a frozen dataclass per method/debiaser.

A method (or debiaser) declares its knobs as a frozen dataclass, each field made with `param` (its
default, a one-line doc and the valid range):

    @dataclass(frozen=True)
    class Params:
        dedup_threshold: float = param(0.9, "cosine at or above which a token is a duplicate", -1, 1)

This module turns such classes into `ParameterInfo` rows (for `--param`, the CLI's per-parameter
options, `mlb methods` and the README table) and resolves user-given values against them: unknown
names, wrong types, out-of-range values and names the chosen method does not read are `UsageError`s
(a typo must not silently run the default). Both spellings, `dedup-threshold` and `dedup_threshold`,
are accepted. Torch-free: the CLI reads the declarations at start-up.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlbcli.errors import UsageError


@dataclass(frozen=True)
class ParameterInfo:
    """One hyperparameter as people and the CLI see it."""

    name: str
    type: type  # int, float (a float parameter accepts ints), bool (a switch: --name/--no-name)
    default: Any  # None: derived from other options (see help)
    help: str  # "<first reader>: <doc>"
    methods: tuple[str, ...]  # the debiasers and methods that read it (declaring owners first)
    minimum: float | None = None
    maximum: float | None = None


def param(default: Any, doc: str, minimum: float | None = None, maximum: float | None = None) -> Any:
    """A `Params` field: its default, a one-line doc and the closed range [minimum, maximum]."""
    return field(default=default, metadata={"doc": doc, "minimum": minimum, "maximum": maximum})


@dataclass(frozen=True)
class NoParams:
    """The `Params` of a method without hyperparameters."""


class UnusedParameter(UsageError):
    """A parameter given to a method that does not read it (the registry adds who does)."""

    def __init__(self, name: str, user: str, reads: Sequence[str]):
        self.name, self.user, self.reads = name, user, tuple(reads)
        reads_text = ", ".join(reads) or "no parameters"
        super().__init__(f"parameter {name!r} is not used by {user} (it reads: {reads_text})")


def normalize_name(name: str) -> str:
    """`dedup-threshold`, ` dedup_threshold ` -> `dedup_threshold`."""
    return name.strip().replace("-", "_")


def _value_type(annotation: Any) -> type:
    """`float`, `float | None`, `Optional[int]` -> float / int (the type a value is coerced to)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    is_union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    return args[0] if is_union and len(args) == 1 else annotation


@functools.cache
def fields_of(params_class: type) -> dict[str, ParameterInfo]:
    """The fields of one `Params` dataclass as `ParameterInfo` rows (methods left empty), in order."""
    hints = typing.get_type_hints(params_class)
    out = {}
    for item in dataclasses.fields(params_class):
        meta = item.metadata
        out[item.name] = ParameterInfo(
            name=item.name,
            type=_value_type(hints[item.name]),
            default=item.default,
            help=meta.get("doc", ""),
            methods=(),
            minimum=meta.get("minimum"),
            maximum=meta.get("maximum"),
        )
    return out


def merged_fields(sources: Iterable[type]) -> dict[str, ParameterInfo]:
    """The fields of several `Params` classes; a name declared twice must be declared alike."""
    out: dict[str, ParameterInfo] = {}
    for source in sources:
        for name, info in fields_of(source).items():
            known = out.get(name)
            if known is not None and (known.type, known.default) != (info.type, info.default):
                raise TypeError(f"parameter {name!r} is declared twice with different types or defaults")
            out.setdefault(name, info)
    return out


def coerce(info: ParameterInfo, value: Any) -> Any:
    """`value` (a CLI string, a JSON number, a bool) as `info.type`, range-checked; else UsageError."""
    if info.type is bool:  # a switch: --name/--no-name, or --param name=true|false
        text = str(value).strip().lower()
        if isinstance(value, bool) or text in ("true", "false", "1", "0", "on", "off"):
            return value if isinstance(value, bool) else text in ("true", "1", "on")
        raise UsageError(f"parameter {info.name} must be true or false, got {value!r}")
    wrong = isinstance(value, bool) or (
        info.type is int and isinstance(value, float) and not value.is_integer()
    )
    try:
        out = None if wrong else info.type(value)
    except (TypeError, ValueError):
        out = None
    if out is None:
        raise UsageError(f"parameter {info.name} must be {info.type.__name__}, got {value!r}")
    low, high = info.minimum, info.maximum
    if (low is not None and out < low) or (high is not None and out > high):
        raise UsageError(f"parameter {info.name}={out} outside [{low}, {high}]")
    return out


def resolve(
    sources: Sequence[type],
    given: Mapping[str, Any],
    user: str,
    preset: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Every parameter of `sources` (Params classes): default, then `preset` (a variant's values),
    then `given` (None = not given). A name none of them declares is an `UnusedParameter`."""
    applicable = merged_fields(sources)
    out = {name: info.default for name, info in applicable.items()}
    out.update(preset or {})
    for raw, value in given.items():
        if value is None:
            continue
        name = normalize_name(raw)
        if name not in applicable:
            raise UnusedParameter(name, user, list(applicable))
        out[name] = coerce(applicable[name], value)
    for source in sources:  # the dataclass itself may check relations between fields
        source(**{name: out[name] for name in fields_of(source)})
    return out


def suggest(name: str, known: Iterable[str]) -> str:
    """ "; did you mean 'x'?" for the closest of `known`, or ""."""
    close = difflib.get_close_matches(normalize_name(name), list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def parse_assignments(values: Iterable[str]) -> dict[str, Any]:
    """Repeatable `--param NAME=VALUE` -> {name: value}; VALUE is JSON when it parses (0.8, true, 3),
    else the text. Names are normalised (`dedup-threshold` = `dedup_threshold`)."""
    out: dict[str, Any] = {}
    for value in values:
        name, sep, raw = value.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--param expects NAME=VALUE, got {value!r}")
        try:
            out[normalize_name(name)] = json.loads(raw)
        except json.JSONDecodeError:
            out[normalize_name(name)] = raw
    return out


def default_text(info: ParameterInfo) -> str:
    """A default as shown to people: 0.84375, 4, on, or 'derived' (from other options)."""
    if isinstance(info.default, bool):
        return "on" if info.default else "off"
    return "derived" if info.default is None else f"{info.default:g}"
