"""Token selection: methods registered by name. Importing this package registers the built-ins."""

from mlbcli.selection import baselines as _baselines  # noqa: F401  (registers none/uniform/random)
from mlbcli.selection.base import (
    METHODS,
    Method,
    MethodOptions,
    available_methods,
    get_method,
    register_method,
    token_budget,
)

__all__ = ["METHODS", "Method", "MethodOptions", "available_methods", "get_method", "register_method",
           "token_budget"]
