"""Token selection: which visual tokens a Video LLM keeps, and where.

- `base`: the `Method` contract (options, budgets, the plan a method returns);
- `parameters`: hyperparameters as frozen `Params` dataclasses, declared where they are read;
- `debiasers`: the composable debiasers of the attention methods (`--debias`);
- `methods/`: one module per method (torch-free declarations: options, parameters, variants);
- `ops/`: the tensor work (torch), imported when a method builds a plan;
- `registry`: methods by name, built-ins and `mlb.methods` plugins alike.

Importing this package imports no torch (the CLI lists and checks methods at start-up).
"""

from mlbcli.selection.base import Method, MethodOptions, PlanContext, keep_note, token_budget
from mlbcli.selection.parameters import ParameterInfo, param
from mlbcli.selection.registry import (
    METHODS,
    available_methods,
    canonical_method_name,
    describe_methods,
    get_method,
    method_defaults,
    method_names,
    method_option_rules,
    methods_markdown,
    parameter_declarations,
    register_method,
    resolved_method_options,
    validate_method_options,
)

__all__ = [
    "METHODS",
    "Method",
    "MethodOptions",
    "ParameterInfo",
    "PlanContext",
    "available_methods",
    "canonical_method_name",
    "describe_methods",
    "get_method",
    "keep_note",
    "method_defaults",
    "method_names",
    "method_option_rules",
    "methods_markdown",
    "param",
    "parameter_declarations",
    "register_method",
    "resolved_method_options",
    "token_budget",
    "validate_method_options",
]
