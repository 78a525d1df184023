"""The hyperparameters of every method and debiaser, for the CLI and docs (torch-free).

Each method declares its own parameters (`Method.Params`, `selection.parameters.param`); this module
is the one place the CLI reads them from:

    from mlbcli.selection.params import ParameterInfo, default_text, parameter_declarations
"""

from __future__ import annotations

from mlbcli.selection.parameters import ParameterInfo, default_text, parse_assignments
from mlbcli.selection.registry import parameter_declarations

__all__ = ["ParameterInfo", "default_text", "parameter_declarations", "parse_assignments"]
