"""Methods own their parameters: declarations, validation, both spellings, variants, and the generated
`mlb methods` rows and README table."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

import pytest

from mlbcli.errors import UsageError
from mlbcli.selection import (
    Method,
    MethodOptions,
    describe_methods,
    get_method,
    method_names,
    methods_markdown,
    param,
    parameter_declarations,
    register_method,
)
from mlbcli.selection.parameters import default_text, parse_assignments


def test_both_spellings_and_cli_strings_are_accepted():
    dashed = get_method("adatp", MethodOptions(keep=0.5, params={"dedup-threshold": "0.8"}))
    underscored = get_method("adatp", MethodOptions(keep=0.5, params={"dedup_threshold": 0.8}))
    assert dashed.params["dedup_threshold"] == underscored.params["dedup_threshold"] == 0.8
    assert dashed.params["segment_threshold"] == 0.9  # the others keep their defaults
    assert parse_assignments(["dedup-threshold=0.8", "dycoke_kv=false", "x=text"]) == {
        "dedup_threshold": 0.8,
        "dycoke_kv": False,
        "x": "text",
    }
    with pytest.raises(UsageError, match="NAME=VALUE"):
        parse_assignments(["dedup_threshold"])


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        (
            "adatp",
            {"segment_treshold": 0.8},
            "unknown parameter 'segment_treshold'; did you mean 'segment_threshold'",
        ),
        ("adatp", {"dedup_threshold": 1.5}, r"dedup_threshold=1.5 outside \[-1.0, 1.0\]"),
        ("holitom", {"holitom_layer": 2.5}, "holitom_layer must be int"),
        ("holitom", {"holitom_beta": "high"}, "holitom_beta must be float"),
        ("dycoke", {"tail_size": 2}, r"not used by dycoke .*it applies to: tail, mlb"),
        ("fastv", {"dedup_threshold": 0.8}, "it applies to: local, adatp"),  # fastv has no local debiaser
    ],
)
def test_bad_parameters_are_usage_errors(method, params, message):
    with pytest.raises(UsageError, match=message):
        get_method(method, MethodOptions(params=params))


def test_debiasers_bring_their_parameters():
    method = get_method("fastv", MethodOptions(keep=0.5, debias=("local",), params={"dedup_threshold": 0.7}))
    assert method.params == {"dedup_threshold": 0.7}
    mlb = get_method("mlb", MethodOptions(keep=0.5))  # grid + tail, and its own `segments`
    assert set(mlb.params) == {"grid", "pool_temperature", "tail_size", "segments"}


def test_declarations_say_who_reads_each_parameter():
    declared = parameter_declarations()
    assert declared["segment_threshold"].methods == ("global", "adatp")
    assert declared["grid"].methods == ("grid", "mlb")
    assert declared["dominant_ratio"].methods == ("visionzip",)
    assert declared["dominant_ratio"].default == 54 / 64 and declared["merge_ratio"].default is None
    assert declared["dycoke_kv"].type is bool and default_text(declared["dycoke_kv"]) == "on"
    assert default_text(declared["merge_ratio"]) == "derived"
    assert declared["holitom_layer"].type is int and declared["holitom_layer"].minimum == 0
    for info in declared.values():
        assert info.help.startswith(f"{info.methods[0]}: ") and len(info.help) > 20, info.name


def test_method_rows_and_readme_table():
    rows = {row.name: row for row in describe_methods()}
    assert set(rows) == set(method_names())
    assert rows["adatp"].default_debias == ("global", "local") and rows["adatp"].takes_debias
    assert rows["fastv"].default_query == "last" and rows["evs"].default_query is None
    assert rows["mlb"].variants == ("budget", "paper") and rows["dycoke"].origin == "built-in"
    assert [p.name for p in rows["visionzip"].parameters] == ["dominant_ratio"]
    table = methods_markdown()
    assert table.startswith("| method |") and table.count("\n") == len(rows) + 2
    assert "| `dycoke` | before the LLM |" in table and "`merge_ratio` derived" in table


@dataclass(frozen=True)
class _StrideParams:
    stride: int = param(2, "keep every stride-th token.", 1)


class _Stride(Method):
    """A test method whose `official` variant sets a parameter (before the user's value)."""

    Params = _StrideParams
    name = "test-stride"
    description = "Every stride-th token (a test method)."
    options_used = frozenset({"keep", "variant"})
    variants = ("paper", "official")
    variant_params = {"official": {"stride": 4}}

    def plan(self, video, prompt):  # pragma: no cover - never planned here
        raise NotImplementedError


@pytest.fixture()
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """A registry of the built-ins only, so that registering a test method does not leak into others."""
    from mlbcli.plugins import Registry
    from mlbcli.selection import registry

    monkeypatch.setattr(registry, "METHOD_REGISTRY", Registry("mlb.methods", registry.BUILTIN_METHODS))


def test_variant_values_and_registered_methods(fresh_registry):
    assert register_method(_Stride) is _Stride
    assert "test-stride" in method_names()
    assert get_method("test-stride").params == {"stride": 2}
    assert get_method("test-stride", MethodOptions(variant="official")).params == {"stride": 4}
    given = MethodOptions(variant="official", params={"stride": "3"})
    assert get_method("test-stride", given).params == {"stride": 3}  # the user's value wins
    assert parameter_declarations()["stride"].methods == ("test-stride",)


@dataclass(frozen=True)
class _ClashingParams:
    dedup_threshold: float = param(0.5, "the built-in adatp reads it with default 0.9.", 0.0, 1.0)


class _Clashing(Method):
    """A plugin-like method whose parameter `dedup_threshold` clashes with the built-in's."""

    Params = _ClashingParams
    name = "test-clash"
    description = "Declares dedup_threshold with another default (a test method)."

    def plan(self, video, prompt):  # pragma: no cover - never planned here
        raise NotImplementedError


def test_a_clashing_plugin_is_skipped_not_fatal(fresh_registry, caplog):
    """One bad plugin must not break every command: it is left out with a warning naming it and the
    clash; the built-in's declaration wins and listing, --help and the other methods still work."""
    register_method(_Clashing)
    with caplog.at_level("WARNING"):
        declared = parameter_declarations()
        rows = [row.name for row in describe_methods()]
    assert (
        declared["dedup_threshold"].default == 0.9 and "test-clash" not in declared["dedup_threshold"].methods
    )
    assert "test-clash" not in rows and "adatp" in rows
    assert "method 'test-clash' skipped" in caplog.text and "'dedup_threshold'" in caplog.text
    assert get_method("adatp").params["dedup_threshold"] == 0.9
    with pytest.raises(UsageError, match="test-clash"):
        get_method("test-clash")
    assert "test-clash" not in methods_markdown()


def test_methods_are_listed_built_ins_in_table_order_then_plugins_by_name(fresh_registry):
    from mlbcli.selection.registry import BUILTIN_METHODS

    register_method(_Stride)
    builtins = list(BUILTIN_METHODS)
    assert builtins[:6] == ["none", "uniform", "random", "fastv", "adatp", "mlb"]
    assert [row.name for row in describe_methods()] == [*builtins, "test-stride"]
    assert method_names() == [*builtins, "test-stride"]


def test_listing_and_parameters_need_no_torch():
    code = (
        "import sys\nfrom mlbcli.selection import describe_methods, parameter_declarations, get_method\n"
        "describe_methods(); parameter_declarations(); get_method('adatp')\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_readme_tables_are_generated_from_the_declarations():
    """The README's method and hyperparameter tables are what the classes declare (`make readme`)."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "docs" / "update_readme.py"
    spec = importlib.util.spec_from_file_location("update_readme", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = module.README.read_text(encoding="utf-8")
    assert module.render(text) == text, "README.md tables are out of date: run `make readme`"
    # and they say what the code says, e.g. the relevance temperature's default
    default = parameter_declarations()["relevance_temperature"].default
    assert f"| `--relevance-temperature` | {default:g} |" in text


def test_a_clashing_debiaser_plugin_is_skipped_not_fatal(monkeypatch, caplog):
    from mlbcli.plugins import Registry
    from mlbcli.selection import debiasers
    from mlbcli.selection.registry import describe_debiasers

    class _Dedup(debiasers.Debiaser):
        Params = _ClashingParams
        name = "test-dedup"
        description = "declares dedup_threshold with another default (a test debiaser)"

    fresh = Registry("mlb.debiasers", dict(debiasers.DEBIASERS._builtins))
    monkeypatch.setattr(debiasers, "DEBIASERS", fresh)
    fresh.register("test-dedup", _Dedup)
    with caplog.at_level("WARNING"):
        names = [name for name, _, _ in describe_debiasers()]
        declared = parameter_declarations()
    assert names == ["global", "local", "grid", "tail", "none"]
    assert declared["dedup_threshold"].default == 0.9
    assert "debiaser 'test-dedup' skipped" in caplog.text
