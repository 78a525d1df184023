"""Options declared once (issue 18): the table in `mlbcli.options.table` is what the CLI commands, the
library's `ModelSpec` / `RunOptions`, the recorded options and the resume comparison are made of."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from mlbcli.cli.app import app
from mlbcli.errors import UsageError
from mlbcli.options import (
    OPTIONS,
    REQUIRED_ON_RESUME,
    RESULT_OPTIONS,
    UNUSED_WHEN_NONE,
    ModelSpec,
    RunOptions,
    options_of,
)
from mlbcli.options.lookup import fields_of

COMMANDS = ("answer", "compress", "summarize", "sample", "flops", "doctor")


def _defaults(cls: type) -> dict[str, object]:
    return {
        f.name: f.default
        for f in dataclasses.fields(cls)
        if f.default is not dataclasses.MISSING  # (default_factory fields: params, inputs)
    }


@pytest.mark.parametrize(("cls", "owner"), [(ModelSpec, "spec"), (RunOptions, "run")])
def test_spec_dataclasses_have_exactly_the_tables_fields_and_defaults(cls, owner):
    table = fields_of(owner)
    assert {f.name for f in dataclasses.fields(cls)} == set(table)
    for name, default in _defaults(cls).items():
        option = table[name]
        if option.commands:  # what the CLI parses: its default means the same as the library's
            parsed = {"batch_size": "auto"}.get(name, default)
            assert option.default == parsed, name


def test_recorded_options_come_from_the_table():
    assert set(RESULT_OPTIONS) == {
        *("model", "method", "keep", "layer", "query", "debias", "params", "variant", "positions"),
        *("saliency", "strict_keep", "seed", "frames", "fps", "max_new_tokens", "prompt", "benchmark"),
        *("min_pixels", "max_pixels", "temporal_spacing", "inputs", "dtype"),
        "grader",
    }
    assert REQUIRED_ON_RESUME == ("inputs",)
    assert UNUSED_WHEN_NONE == ("keep", "layer", "query")
    recorded = ModelSpec(model="m", method="fastv").recorded()
    assert set(RESULT_OPTIONS) - {"max_new_tokens", "prompt", "benchmark", "grader"} <= set(recorded)


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_takes_exactly_its_declared_options(command):
    """An option added to the table appears in every command that lists it, and in no other."""
    import click

    click_command = typer_command(command)
    ctx = click.Context(click_command)
    names = {param.name for param in click_command.get_params(ctx)}
    declared = {option.name for option in options_of(command)}
    assert declared <= names
    extra = names - declared - {"help"}
    if command in ("answer", "compress", "summarize", "flops"):
        from mlbcli.cli.declared import _parameter_declarations

        assert extra == set(_parameter_declarations())  # the methods' hyperparameters
    else:
        assert not extra


def typer_command(name: str):
    import typer

    group = typer.main.get_command(app)
    return group.commands[name]  # type: ignore[attr-defined]


def test_default_model_is_the_librarys():
    from mlbcli.models import DEFAULT_MODEL

    assert next(o for o in OPTIONS if o.name == "model").default == DEFAULT_MODEL


def test_help_keeps_square_brackets():
    """Issue 22: rich read "[ray]" and "[default: 32; ...]" as style tags and dropped them."""
    runner = CliRunner()
    text = runner.invoke(app, ["answer", "--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"}).stdout
    flat = " ".join(text.replace("│", " ").split())
    assert "pip install 'mlbcli[ray]'" in flat
    assert "Generation limit per answer [default: 32; with --benchmark, the benchmark's]" in flat


def test_options_name_no_model_family():
    """Family knowledge lives behind the adapter: the options speak of what a family does."""
    for option in OPTIONS:
        for family in ("qwen", "llava", "onevision"):
            assert family not in option.help.lower(), option.name
    text = CliRunner().invoke(app, ["answer", "--help"], env={"COLUMNS": "200"}).stdout
    assert "Families with dynamic resolution" in " ".join(text.replace("│", " ").split())


def test_temporal_spacing_values_are_checked_by_the_declaration():
    with pytest.raises(UsageError, match="--temporal-spacing must be one of reference, exact, got 'real'"):
        ModelSpec(model="m", temporal_spacing="real")
    assert ModelSpec(model="m", temporal_spacing="exact").adapter_options()["temporal_spacing"] == "exact"
    with pytest.raises(UsageError, match="--format must be one of parquet, jsonl, csv"):
        RunOptions(fmt="xlsx")


def test_method_options_are_built_once_and_keep_defaults_in_one_rule():
    spec = ModelSpec(model="m", method="fastv", keep=0.25)
    assert spec.method_options() is spec.method_options()
    assert spec.method_options().keep == 0.25
    assert ModelSpec(model="m", method="fastv").keep_requested() == 1.0  # the method's default
    assert ModelSpec(model="m", method="none").keep_requested() is None  # no budget
    recorded = ModelSpec(model="m", method="fastv").recorded()
    assert (recorded["keep"], recorded["layer"], recorded["query"]) == (1.0, 2, "last")
    assert ModelSpec(model="m", method="uniform").recorded()["layer"] is None  # not used: None


def test_cli_builds_the_same_spec_as_the_library():
    from mlbcli.cli.run_commands import model_spec, run_options

    values = {option.name: option.default for option in options_of("answer")}
    values.update(sources=["v.mp4"], method="FastV", keep=0.5, debias="global,local", method_params={})
    values.update(param=["dedup_threshold=0.8"])
    spec = model_spec("answer", values)
    assert spec == ModelSpec(
        model=values["model"],
        method="fastv",
        keep=0.5,
        debias=("global", "local"),
        params={"dedup_threshold": 0.8},
    )
    assert run_options("answer", values) == RunOptions()
    assert run_options("sample", {o.name: o.default for o in options_of("sample")}) == RunOptions()


def test_spec_records_parameter_names_as_the_method_spells_them():
    """`api.answer(params={"dedup-threshold": ...})` and the CLI's `--dedup-threshold` are one run:
    the same `recorded()` options, so resuming either's file with the other is allowed."""
    from mlbcli.cli.run_commands import model_spec

    values = {option.name: option.default for option in options_of("answer")}
    values.update(sources=["v.mp4"], method="adatp", keep=0.5, method_params={"dedup_threshold": 0.8})
    cli = model_spec("answer", values)
    typed = ModelSpec(model=values["model"], method="adatp", keep=0.5, params={"dedup-threshold": 0.8})
    assert typed.params == cli.params == {"dedup_threshold": 0.8}
    assert typed.recorded() == cli.recorded()
    spaced = ModelSpec(model="m", method="adatp", params={" dedup-threshold ": 0.8, "grid": None})
    assert spaced.params == {"dedup_threshold": 0.8}  # None = not given, as the method reads it
    with pytest.raises(UsageError, match="given twice"):
        ModelSpec(model="m", method="adatp", params={"dedup-threshold": 0.8, "dedup_threshold": 0.7})


def test_param_accepts_both_spellings():
    from mlbcli.cli.common import method_params

    given = method_params(["dedup-threshold=0.8", "merge_window=3"], {"segment_threshold": 0.5, "grid": None})
    assert given == {"dedup_threshold": 0.8, "merge_window": 3, "segment_threshold": 0.5}


def test_hyperparameter_options_are_made_only_for_the_commands_that_take_them():
    """`mlb --help` lists the commands without reading the methods' parameters (those may import the
    method classes); `answer --help` shows them."""
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom mlbcli.cli.app import app\n"
        "r = CliRunner().invoke(app, ['--help'])\nassert r.exit_code == 0\n"
        "print('mlbcli.selection.params' in sys.modules)\n"
        "r = CliRunner().invoke(app, ['answer', '--help'], env={'COLUMNS': '200'})\n"
        "print('mlbcli.selection.params' in sys.modules, '--dedup-threshold' in r.stdout)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True", "True"]


def test_hyperparameter_option_reaches_the_method(tiny_model_dir):
    """`--dedup-threshold` (an option made lazily) reaches the method: one that the method does not
    read is refused like a `--param` would be, one that it reads is taken."""
    base = ["flops", "--model", str(tiny_model_dir), "--frames", "4", "--keep", "0.5"]
    refused = CliRunner().invoke(app, [*base, "--method", "uniform", "--dedup-threshold", "0.5"])
    assert refused.exit_code == 2 and "dedup_threshold" in refused.output
    taken = CliRunner().invoke(app, [*base, "--method", "adatp", "--dedup-threshold", "0.5"])
    assert taken.exit_code == 0, taken.output
    assert "method         adatp, keep 0.5" in taken.output
