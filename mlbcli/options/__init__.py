"""The options of a run, each declared once (`table.OPTIONS`), and the library's spec dataclasses built
from them (`ModelSpec`: model, method, sampling; `RunOptions`: how the batch runs). The CLI derives its
flags from the same table, so an option added there appears in every command that takes it.
"""

from mlbcli.options.lookup import options_of
from mlbcli.options.option import Option
from mlbcli.options.spec import (
    REQUIRED_ON_RESUME,
    RESULT_OPTIONS,
    UNUSED_WHEN_NONE,
    ModelSpec,
    RunOptions,
    _inputs_version,
    _model_spec,
    _validate_sampling,
)
from mlbcli.options.table import OPTIONS

__all__ = [
    "OPTIONS",
    "REQUIRED_ON_RESUME",
    "RESULT_OPTIONS",
    "UNUSED_WHEN_NONE",
    "ModelSpec",
    "Option",
    "RunOptions",
    "_inputs_version",
    "_model_spec",
    "_validate_sampling",
    "options_of",
]
