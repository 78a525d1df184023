"""What an option is (`Option`), the help panels and command groups it names, and the questions asked
of the table (`options_of`, `fields_of`, `check_choices`). The table itself is `mlbcli.options.table`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

Owner = Literal["spec", "run", "call", "cli"]

# -- help panels (`answer --help` groups its options under these titles) ----------------------------------
INPUT, MODEL, PRUNING, HYPER, OUTPUT, RUN = (
    "Input",
    "Model",
    "Pruning",
    "Method hyperparameters (see `mlb methods`)",
    "Output",
    "Run",
)

# -- which subcommands take an option ----------------------------------------------------------------------
MODEL_COMMANDS = frozenset({"answer", "compress", "summarize"})  # load a model, run a method
BATCH_COMMANDS = MODEL_COMMANDS | {"sample"}  # read sources, write a results file
PRUNE_COMMANDS = MODEL_COMMANDS | {"flops"}  # take a method and its options


@dataclass(frozen=True)
class Option:
    """One option. `owner` says where the parsed value goes: a `ModelSpec` field ("spec"), a
    `RunOptions` field ("run"), a keyword of the API function ("call", left out when None so the
    API's default applies) or the CLI only ("cli": logging, the pieces of a composite value)."""

    name: str  # the Python name; the flag is --name with dashes unless `flags` says otherwise
    type: Any  # the value's type as the CLI parses it (e.g. `float | None`)
    default: Any
    help: str = ""  # plain text; the CLI escapes it for rich ("[default: ...]" shows as written)
    panel: str | None = None
    commands: frozenset[str] = frozenset()  # subcommands with this option; empty = library only
    owner: Owner = "call"
    attribute: str | None = None  # the ModelSpec / RunOptions field it fills, when not `name`
    flags: tuple[str, ...] = ()  # the declarations ("--resume/--no-resume", "-q"); () = --name
    metavar: str | None = None
    show_default: bool = True
    envvar: str | None = None
    complete: str | None = None  # a completer the CLI knows by this name ("method", "benchmark")
    choices: tuple[str, ...] = ()  # allowed values besides None (checked before any work)
    argument: bool = False  # a positional argument (SOURCE...)
    recorded: bool = False  # changes what a row contains: resume refuses another value
    required_on_resume: bool = False  # a file that lacks it predates it, so differs
    method_default: bool = False  # None resolves to the method's own default (unused: None)
    adapter: bool = False  # a family setting, passed to the model adapter (`ModelSpec.adapter_options`)
    # Per-subcommand differences (e.g. `sample --frames` says its own default): field -> value.
    per_command: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def field_name(self) -> str:
        return self.attribute or self.name

    @property
    def flag(self) -> str:
        """The long flag, as errors name it (`--decode-timeout`)."""
        return f"--{self.name.replace('_', '-')}"

    def for_command(self, command: str) -> Option:
        """This option as `command` takes it (its `per_command` differences applied)."""
        changes = self.per_command.get(command)
        return replace(self, per_command={}, **changes) if changes else self
