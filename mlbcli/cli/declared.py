"""Typer commands built from the option table (`mlbcli.options.table.OPTIONS`).

A command's options are not written out as Python parameters: `declared_command` gives the command
function a signature made from the table's entries for that subcommand, so an option declared once
appears in every command that takes it, with one help text. The command body receives one dict of the
parsed values.

Method hyperparameters (`--dedup-threshold`...) belong to the methods; reading them may import the
method classes, so `MethodCommand` adds their options only when a command that takes them is parsed or
its `--help` is shown: `mlb --help` stays free of torch.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.markup import escape

from mlbcli.options.lookup import options_of
from mlbcli.options.option import HYPER, Option, Owner

#: Where `MethodCommand` leaves the given hyperparameter values (None = not given) for the body.
METHOD_PARAMS = "mlb.method_params"


def _plain_help_names(params: list[Any]) -> list[Any]:
    """Help that reads like other tools': `SOURCE...` rather than typer's `{sources}...` in the usage
    line and `sources... <list[str]>` in the table, and no `<bool>` after flags."""
    for param in params:
        if isinstance(param, typer.core.TyperArgument) and param.metavar:
            usage = param.metavar if param.required else f"[{param.metavar}]"
            setattr(param, "_usage_display_name", lambda usage=usage: usage)  # noqa: B010 (typer private)
            setattr(param, "display_type_rich", lambda ctx: None)  # noqa: B010
        elif getattr(param, "is_flag", False):
            setattr(param, "display_type_rich", lambda ctx: None)  # noqa: B010
    return params


class Command(typer.core.TyperCommand):
    """A command with plain names in its help (`_plain_help_names`) and its docstring's paragraphs
    reflowed (typer's rich help would keep the source's line breaks)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.help:
            paragraphs = inspect.cleandoc(self.help).split("\n\n")
            self.help = "\n\n".join(" ".join(p.split("\n")) for p in paragraphs)

    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_help_names(super().get_params(ctx))


class Group(typer.core.TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_help_names(super().get_params(ctx))


# -- method hyperparameters: data access in two functions, options made on first use ---------------------


def _parameter_declarations() -> dict[str, Any]:
    """name -> declaration of every method hyperparameter (fields name, type, default, help, methods,
    minimum, maximum): the one place the CLI reads them."""
    from mlbcli.selection.params import parameter_declarations

    return parameter_declarations()


def _default_text(info: Any) -> str:
    """A hyperparameter's default as `--help` and `mlb methods` show it (0.9, on, derived)."""
    from mlbcli.selection.params import default_text

    return default_text(info)


def hyperparameter_parameters() -> list[inspect.Parameter]:
    """One keyword parameter per method hyperparameter, with its typer option (`--dedup-threshold`;
    a switch for a bool: `--dycoke-kv/--no-dycoke-kv`); None = not given."""
    parameters = []
    for name, info in _parameter_declarations().items():
        text = info.help.removeprefix(f"{info.methods[0]}: ")  # "[visionzip] visionzip: ..." says it twice
        flag = f"--{name.replace('_', '-')}"
        option = typer.Option(
            f"{flag}/--no-{flag[2:]}" if info.type is bool else flag,
            metavar=info.type.__name__.upper(),
            show_default=False,
            help=escape(f"[{', '.join(info.methods)}] {text} [default: {_default_text(info)}]"),
            rich_help_panel=HYPER,
        )
        annotation = Annotated[info.type | None, option]  # type: ignore[name-defined]
        parameters.append(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)
        )
    return parameters


def _click_params(parameters: list[inspect.Parameter]) -> list[Any]:
    """The click parameters typer makes of `parameters` (as for a function with that signature)."""

    def carrier() -> None:
        """(only its signature is read)"""

    carrier.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    params, _ = typer.main._get_params_name_from_function(carrier)  # typer's own conversion
    return list(params)


class MethodCommand(Command):
    """A command that also takes every method hyperparameter as an option of its own, made when the
    command is parsed or its help shown (not when `mlb --help` lists it). Their values reach the body
    as one dict (`METHOD_PARAMS` in the context's meta), not as parameters typer knows."""

    @functools.cached_property
    def hyperparameter_options(self) -> list[Any]:
        return _click_params(hyperparameter_parameters())

    def get_params(self, ctx: Any) -> list[Any]:
        return [*super().get_params(ctx), *_plain_help_names(self.hyperparameter_options)]

    def invoke(self, ctx: Any) -> Any:
        names = [param.name for param in self.hyperparameter_options]
        ctx.meta[METHOD_PARAMS] = {name: ctx.params.pop(name) for name in names if name in ctx.params}
        return super().invoke(ctx)


# -- commands from the table --------------------------------------------------------------------------------


@functools.cache
def _completers() -> dict[str, Callable[[str], list[str]]]:
    """Shell completion of the options whose `complete` names one (no torch)."""
    from mlbcli.eval.benchmarks import BENCHMARKS

    def method(incomplete: str) -> list[str]:
        from mlbcli.selection import method_names

        return [name for name in method_names() if name.startswith(incomplete.lower())]

    def benchmark(incomplete: str) -> list[str]:
        return [name for name in BENCHMARKS if name.startswith(incomplete.lower())]

    return {"method": method, "benchmark": benchmark}


def _help_text(option: Option, command: str) -> str:
    """The option's help for `command`, escaped for rich markup ("[default: 32; ...]" and
    "pip install 'mlbcli[ray]'" would otherwise vanish as style tags)."""
    from mlbcli.eval.benchmarks import BENCHMARKS

    text = option.help.replace("{command}", command).replace("{benchmarks}", ", ".join(BENCHMARKS))
    return escape(text)


def typer_parameter(option: Option, command: str) -> inspect.Parameter:
    """The keyword parameter (type + typer option or argument) of `option` in `command`."""
    help_text = _help_text(option, command)
    if option.argument:
        info: Any = typer.Argument(help=help_text, show_default=option.show_default, metavar=option.metavar)
        default: Any = inspect.Parameter.empty
    else:
        info = typer.Option(
            *(option.flags or (option.flag,)),
            metavar=option.metavar,
            help=help_text,
            show_default=option.show_default,
            envvar=option.envvar,
            rich_help_panel=option.panel,
            autocompletion=_completers().get(option.complete or ""),
        )
        default = option.default
    annotation = Annotated[option.type, info]  # type: ignore[name-defined]
    return inspect.Parameter(
        option.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
    )


def declared_command(command: str, body: Callable[[dict[str, Any]], None], doc: str) -> Callable[..., None]:
    """A typer command function for subcommand `command`: its options are the table's for `command`,
    and `body` receives their values as one dict, with the method hyperparameters given (None = not
    given) under "method_params"."""

    def callback(ctx: typer.Context, **values: Any) -> None:
        body({**values, "method_params": ctx.meta.get(METHOD_PARAMS, {})})

    context = inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)
    parameters = [typer_parameter(option, command) for option in options_of(command)]
    callback.__signature__ = inspect.Signature([context, *parameters])  # type: ignore[attr-defined]
    callback.__annotations__ = {}  # typer reads the signature, not the (string) annotations
    callback.__name__ = callback.__qualname__ = command
    callback.__doc__ = doc
    return callback


def values_for(command: str, owner: Owner, values: dict[str, Any]) -> dict[str, Any]:
    """The parsed `values` of `command`'s options that go to `owner` ("spec": `ModelSpec`, "run":
    `RunOptions`, "call": the API function's keywords), by the field or keyword each fills."""
    return {option.field_name: values[option.name] for option in options_of(command) if option.owner == owner}
