"""Compatibility view for `mlb methods` until the CLI reads `registry.describe_methods()`: the same
names as before (BUILTIN_METHODS, DEBIASERS, hyperparameters_of, default_text), all derived from the
method classes (nothing is kept by hand here). Torch-free."""

from __future__ import annotations

from typing import Any

from mlbcli.selection.parameters import ParameterInfo, default_text
from mlbcli.selection.registry import describe_debiasers, describe_methods

__all__ = ["default_text", "hyperparameters_of"]  # and, computed on access: BUILTIN_METHODS, DEBIASERS


def hyperparameters_of(name: str) -> list[ParameterInfo]:
    """The hyperparameters that a method or debiaser reads (with its default options)."""
    for row in describe_methods():
        if row.name == name:
            return list(row.parameters)
    for debiaser, _, parameters in describe_debiasers():
        if debiaser == name:
            return list(parameters)
    return []


def __getattr__(name: str) -> Any:
    if name == "BUILTIN_METHODS":  # {name: MethodRow} of every method, plugins included
        return {row.name: row for row in describe_methods()}
    if name == "DEBIASERS":  # {name: description}, `none` last
        return {debiaser: description for debiaser, description, _ in describe_debiasers()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
