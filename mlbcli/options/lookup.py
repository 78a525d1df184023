"""Questions asked of the options table (`table.OPTIONS`): which options a subcommand takes, which fill a
spec dataclass, and whether a value is one an option allows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlbcli.errors import UsageError
from mlbcli.options.option import Option, Owner
from mlbcli.options.table import OPTIONS


def options_of(command: str) -> list[Option]:
    """The options of subcommand `command`, in table order, as that command takes them."""
    return [option.for_command(command) for option in OPTIONS if command in option.commands]


def fields_of(owner: Owner) -> dict[str, Option]:
    """Field name -> option, for the options that fill a `ModelSpec` ("spec") or `RunOptions` ("run")."""
    return {option.field_name: option for option in OPTIONS if option.owner == owner}


def check_choices(owner: Owner, values: Mapping[str, Any]) -> None:
    """A one-line `UsageError` for a value outside an option's `choices` (None is always allowed)."""
    for name, option in fields_of(owner).items():
        value = values.get(name)
        if option.choices and value is not None and value not in option.choices:
            raise UsageError(f"{option.flag} must be one of {', '.join(option.choices)}, got {value!r}")
