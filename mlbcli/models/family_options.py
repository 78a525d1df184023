"""Settings that only some families have (`--min-pixels`, `--temporal-spacing`...), declared by the
adapters that take them, so that the CLI and the library spec can offer them without naming a family.

An adapter lists its settings in `ModelAdapter.family_options` (with their defaults in
`option_defaults`); `mlbcli.models.registry.family_options()` gathers those of every known adapter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FamilyOption:
    """One family setting: `load_adapter(..., name=value)`, on the command line `--name-with-dashes`."""

    name: str  # the Python name (a keyword of `load_adapter`, a field of `ModelSpec`)
    kind: type  # int or str: the type of its value
    help: str  # one line for `--help`, naming the families it applies to
    metavar: str = "N"
    choices: tuple[str, ...] = ()  # allowed values, when the setting is one of a few words

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any) -> None:
        """UsageError for a value outside `choices` (None means not given and always passes)."""
        from mlbcli.errors import UsageError

        if value is not None and self.choices and value not in self.choices:
            raise UsageError(f"{self.flag} must be one of {', '.join(self.choices)}, got {value!r}")
