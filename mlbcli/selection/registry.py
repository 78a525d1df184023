"""Methods by name: the built-ins and `mlb.methods` plugins through one `mlbcli.plugins.Registry`.

A method is a `Method` subclass; the built-ins are a table `name -> "module:Class"` below, a plugin
declares the same in its package (`[project.entry-points."mlb.methods"]`), and a notebook may
`register_method` a class. Names are known without importing any method (completion, name checks);
a method's module is imported when it is used. The method modules are torch-free (their tensor work
is in `selection.ops`, imported when a plan is built), so listing methods and their parameters for
the CLI (`describe_methods`, `parameter_declarations`) imports no torch either; a plugin may.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from mlbcli.errors import UsageError
from mlbcli.plugins import PluginError, Registry
from mlbcli.selection.base import OPTION_FLAGS, Method, MethodOptions, check_method_options
from mlbcli.selection.debiasers import (
    NONE_DESCRIPTION,
    ORDER,
    Debiaser,
    debiaser_names,
    debiaser_origin,
    load_debiaser,
)
from mlbcli.selection.parameters import (
    ParameterInfo,
    UnusedParameter,
    default_text,
    merged_fields,
    normalize_name,
    suggest,
)

log = logging.getLogger(__name__)

_M = "mlbcli.selection.methods"
BUILTIN_METHODS: dict[str, str] = {
    "none": f"{_M}.baselines:NoPruning",
    "uniform": f"{_M}.baselines:UniformPooling",
    "random": f"{_M}.baselines:RandomSelection",
    "fastv": f"{_M}.attention:FastV",
    "adatp": f"{_M}.attention:AdaTP",
    "mlb": f"{_M}.mlb:LlavaMLB",
    "visionzip": f"{_M}.visionzip:VisionZipStar",
    "dycoke": f"{_M}.dycoke:DyCokeTTM",
    "evs": f"{_M}.evs:EVS",
    "vidcom2": f"{_M}.vidcom2:VidCom2",
    "fastvid": f"{_M}.fastvid:FastVID",
    "holitom": f"{_M}.holitom:HoliTom",
    "prunevid": f"{_M}.prunevid:PruneVid",
    "slowfast": f"{_M}.slowfast:SlowFast",
    "flashvid": f"{_M}.flashvid:FlashVID",
    "framefusion": f"{_M}.framefusion:FrameFusion",
}
METHOD_REGISTRY: Registry[type[Method]] = Registry("mlb.methods", BUILTIN_METHODS)


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available by `cls.name` in this process (`get_method`, CLI)."""
    METHOD_REGISTRY.register(cls.name, cls)
    return cls


def method_names() -> list[str]:
    """Every method name that `get_method` accepts (no imports): the built-ins in the order of their
    table (`BUILTIN_METHODS`: baselines, attention methods, peers), then plugins and registered
    methods by name. `mlb methods`, the README table and messages list them in this order."""
    names = METHOD_REGISTRY.names()
    return [
        *(name for name in BUILTIN_METHODS if name in names),
        *(n for n in names if n not in BUILTIN_METHODS),
    ]


def canonical_method_name(name: str) -> str:
    """`name` as registered. Case does not matter (`FastV` is `fastv`); an unknown name is a
    `UsageError` that suggests the closest known name. Imports nothing, so the CLI checks early."""
    names = method_names()
    if name in names:
        return name
    folded = {known.lower(): known for known in names}
    key = name.strip().lower()
    if key in folded:
        return folded[key]
    close = difflib.get_close_matches(key, list(folded), n=1, cutoff=0.6)
    hint = f"; did you mean {folded[close[0]]!r}?" if close else ";"
    raise UsageError(f"unknown method {name!r}{hint} available: {', '.join(names)}")


def load_method(name: str) -> type[Method]:
    """The class of the method called `name` (any case); a broken plugin is a `UsageError` naming it."""
    name = canonical_method_name(name)
    try:
        cls = METHOD_REGISTRY.load(name)
    except PluginError as error:
        raise UsageError(str(error)) from error
    if not (isinstance(cls, type) and issubclass(cls, Method)) or cls.name != name:
        origin = METHOD_REGISTRY.origin(name)
        raise UsageError(f"{origin} method {name!r} is not a Method subclass named {name!r}: {cls!r}")
    return cls


def _loaded_methods() -> dict[str, type[Method]]:
    """Every usable method class, in `method_names` order: a broken plugin, or one whose parameters
    clash with those declared before it (`_declarations`), is skipped with a warning (listing must work)."""
    return _declarations().methods


def _importable_methods() -> dict[str, type[Method]]:
    out = {}
    for name in method_names():
        try:
            out[name] = load_method(name)
        except UsageError as error:
            log.warning("%s", error)
    return out


_warned: set[str] = set()  # a skipped plugin is reported once per process, not at every listing


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning("%s", message)


@dataclass
class _Declared:
    """The usable debiasers and methods, and every parameter they declare with its readers."""

    debiasers: dict[str, type[Debiaser]] = field(default_factory=dict)
    methods: dict[str, type[Method]] = field(default_factory=dict)
    infos: dict[str, ParameterInfo] = field(default_factory=dict)
    readers: dict[str, list[str]] = field(default_factory=dict)

    def admit(self, kind: str, name: str, sources: tuple[type, ...], builtin: bool, origin: str) -> bool:
        """Declare `name`'s parameters unless one clashes with a known one (another type or default):
        then a plugin is skipped with a warning naming the clash (False); a built-in's clash is a bug."""
        fields = merged_fields(sources)
        known = self.infos
        clash = next(
            (p for p, i in fields.items() if p in known and _signature(known[p]) != _signature(i)), None
        )
        if clash is not None:
            message = (
                f"{name} declares parameter {clash!r} as {_signature(fields[clash])}, unlike "
                f"{self.readers[clash][0]} ({_signature(known[clash])})"
            )
            if builtin:
                raise UsageError(message)
            _warn_once(f"{origin} {kind} {name!r} skipped: {message}")
            return False
        for p, info in fields.items():
            known.setdefault(p, info)
            self.readers.setdefault(p, []).append(name)
        return True


def _declarations() -> _Declared:
    """The debiasers', then each method's parameters in `method_names` order, so built-ins come first
    and win; a broken plugin or one whose parameters clash is left out with a warning (`_Declared.admit`)."""
    out = _Declared()
    for name in debiaser_names():
        try:
            cls = load_debiaser(name)
        except UsageError as error:
            _warn_once(str(error))
            continue
        if out.admit("debiaser", name, (cls.Params,), name in ORDER, debiaser_origin(name)):
            out.debiasers[name] = cls
    for name, method in _importable_methods().items():
        builtin, origin = name in BUILTIN_METHODS, METHOD_REGISTRY.origin(name)
        if out.admit("method", name, method.declared_parameter_sources(), builtin, origin):
            out.methods[name] = method
    return out


def _signature(info: ParameterInfo) -> str:
    return f"{info.type.__name__} = {info.default!r}"


class _MethodTable(Mapping[str, type[Method]]):
    """`METHODS[name]`: the method classes by name, each imported on first access."""

    def __getitem__(self, name: str) -> type[Method]:
        if name not in METHOD_REGISTRY:
            raise KeyError(name)
        return load_method(name)

    def __iter__(self) -> Iterator[str]:
        return iter(method_names())

    def __len__(self) -> int:
        return len(method_names())


METHODS: Mapping[str, type[Method]] = _MethodTable()


def parameter_declarations() -> dict[str, ParameterInfo]:
    """Every hyperparameter of the debiasers and usable methods, with who reads it (debiasers first)."""
    declared = _declarations()
    infos, readers = declared.infos, declared.readers
    return {
        name: ParameterInfo(
            name=name,
            type=info.type,
            default=info.default,
            help=f"{readers[name][0]}: {info.help}",
            methods=tuple(readers[name]),
            minimum=info.minimum,
            maximum=info.maximum,
        )
        for name, info in infos.items()
    }


def _check_known_parameters(options: MethodOptions) -> None:
    known = parameter_declarations()
    for raw, value in options.params.items():
        if value is not None and normalize_name(raw) not in known:
            hint = suggest(raw, known) or f"; known: {', '.join(sorted(known))}"
            raise UsageError(f"unknown parameter {raw!r}{hint}")


def get_method(name: str, options: MethodOptions | None = None) -> Method:
    """An instance of the method called `name` (case-insensitive) with `options`; bad options are
    `UsageError`s before any work."""
    cls = load_method(name)
    if cls.name not in _loaded_methods():  # a plugin skipped for a parameter clash (warned)
        raise UsageError(f"method {cls.name!r} is unusable: its parameters clash with a built-in's")
    options = options or MethodOptions()
    if options.params:
        _check_known_parameters(options)
    try:
        return cls(options)
    except UnusedParameter as error:
        readers = parameter_declarations()[error.name].methods
        raise UsageError(
            f"parameter {error.name!r} is not used by {error.user} with these options "
            f"(it applies to: {', '.join(readers)})"
        ) from error


def available_methods() -> dict[str, str]:
    """{name: description} of every method that loads."""
    return {name: cls.description for name, cls in _loaded_methods().items()}


def method_option_rules(name: str) -> tuple[frozenset[str], tuple[str, ...]]:
    """(options used, variants) of the method `name`: its class's `options_used` and `variants`."""
    cls = load_method(name)
    return cls.options_used, cls.variants


def resolved_method_options(name: str, options: MethodOptions) -> dict[str, object]:
    """keep/layer/query as the method `name` runs with `options` (`Method.resolved_options`, the one
    rule): given, else the method's default, None where it does not read the option."""
    return load_method(name).resolved_options(options)


def method_defaults(name: str) -> dict[str, object]:
    """What keep/layer/query resolve to when not given, for the method `name` (`Method.option_defaults`,
    which `Method.resolved_options` applies)."""
    return load_method(name).option_defaults()


def validate_method_options(name: str, options: MethodOptions) -> None:
    """`check_method_options` for a method given by (canonical) name, before any model loads."""
    used, variants = method_option_rules(name)
    check_method_options(name, options, used, variants)


@dataclass(frozen=True)
class MethodRow:
    """One method as `mlb methods` and the README table show it."""

    name: str
    origin: str  # "built-in", "registered" or "plugin <distribution>"
    description: str
    prune_point: str | None  # "input" (before the LLM), "layer" (before decoder layer --layer), None
    options: tuple[str, ...]  # the options of `OPTION_FLAGS` it uses, in flag order
    variants: tuple[str, ...]  # the default first
    default_query: str | None  # the probe rows without --query (methods that take --query)
    takes_debias: bool  # --debias may change the debiasers
    default_debias: tuple[str, ...]
    parameters: tuple[ParameterInfo, ...]  # with the options' defaults (debiasers' included)


def describe_methods() -> list[MethodRow]:
    """Every usable method: the built-ins in their table's order, then plugins by name."""
    declared = parameter_declarations()
    rows = []
    for name, cls in _loaded_methods().items():
        options = cls.options_used
        rows.append(
            MethodRow(
                name=name,
                origin=METHOD_REGISTRY.origin(name),
                description=cls.description,
                prune_point=cls.prune_point,
                options=tuple(flag for flag in OPTION_FLAGS if flag in options),
                variants=cls.variants,
                default_query=cls.default_query if "query" in options else None,
                takes_debias="debias" in options,
                default_debias=tuple(getattr(cls, "default_debias", ())),
                parameters=tuple(declared[p] for p in merged_fields(cls.declared_parameter_sources())),
            )
        )
    return rows


def describe_debiasers() -> list[tuple[str, str, tuple[ParameterInfo, ...]]]:
    """(name, description, parameters) of every debiaser, then `none`."""
    declared = parameter_declarations()
    rows = []
    for name, cls in _declarations().debiasers.items():
        rows.append((name, cls.description, tuple(declared[p] for p in merged_fields((cls.Params,)))))
    return [*rows, ("none", NONE_DESCRIPTION, ())]


def methods_markdown() -> str:
    """The README's method table: one row per method, its options and its parameters with defaults."""
    where = {"input": "before the LLM", "layer": "inside the LLM (--layer)", None: "never"}
    lines = [
        "| method | prunes | options | parameters (default) | description |",
        "|---|---|---|---|---|",
    ]
    for row in describe_methods():
        options = ", ".join(f"`--{o}`" for o in row.options) or "none"
        if row.variants:
            options += f" ({' / '.join(row.variants)})"
        params = ", ".join(f"`{p.name}` {default_text(p)}" for p in row.parameters) or "none"
        lines.append(
            f"| `{row.name}` | {where[row.prune_point]} | {options} | {params} | {row.description} |"
        )
    return "\n".join(lines) + "\n"


def parameters_markdown() -> str:
    """The README's hyperparameter table: each option, its default, who reads it and what it means."""
    lines = ["| option | default | read by | meaning |", "|---|---|---|---|"]
    for info in sorted(parameter_declarations().values(), key=lambda p: (p.methods[0], p.name)):
        meaning = info.help.removeprefix(f"{info.methods[0]}: ").replace("|", "\\|")
        flag = f"--{info.name.replace('_', '-')}"
        lines.append(f"| `{flag}` | {default_text(info)} | {', '.join(info.methods)} | {meaning} |")
    return "\n".join(lines) + "\n"
