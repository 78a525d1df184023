"""The hyperparameters of every method and debiaser, for the CLI and docs (torch-free).

Each method declares its own parameters (`Method.Params`, `selection.parameters.param`); this module
is the one place the CLI reads them from:

    from mlbcli.selection.params import ParameterInfo, default_text, parameter_declarations

`HYPERPARAMETERS` (the old global table) is kept, computed from the declarations on access, until
the CLI reads `parameter_declarations()` itself.
"""

from __future__ import annotations

from typing import Any

from mlbcli.selection.parameters import ParameterInfo, default_text, parse_assignments
from mlbcli.selection.registry import parameter_declarations

__all__ = ["ParameterInfo", "default_text", "parameter_declarations", "parse_assignments"]


def __getattr__(name: str) -> Any:
    if name == "HYPERPARAMETERS":  # compatibility: {name: ParameterInfo} of every declared parameter
        return parameter_declarations()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
