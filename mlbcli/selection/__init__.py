"""Token selection: methods registered by name.

The built-in methods (none, uniform, random in `baselines`; fastv, adatp, mlb, visionzip, dycoke in
`presets`) need torch, so they are imported on first use of `get_method`/`available_methods`: this
package itself stays cheap to import (the CLI reads the hyperparameter registry at start-up).
"""

from mlbcli.selection.base import (
    METHODS,
    Method,
    MethodOptions,
    available_methods,
    canonical_method_name,
    get_method,
    method_names,
    register_method,
    token_budget,
)

__all__ = [
    "METHODS",
    "Method",
    "MethodOptions",
    "available_methods",
    "canonical_method_name",
    "get_method",
    "method_names",
    "register_method",
    "token_budget",
]
