"""mlb: batch video question answering with Video LLMs and attention-debiased visual-token pruning.

The public API lives in `mlbcli.api` (imported lazily so that `mlb --help` never imports torch).
"""

from __future__ import annotations

__version__ = "0.1.0.dev0"

__all__ = ["__version__", "replay_kv", "select_tokens"]

_LAZY = {"select_tokens", "replay_kv", "Selection"}


def __getattr__(name: str) -> object:
    """`select_tokens` / `replay_kv` (`mlbcli.selection.standalone`), imported on first use (torch)."""
    if name in _LAZY:
        from mlbcli.selection import standalone

        return getattr(standalone, name)
    raise AttributeError(f"module 'mlbcli' has no attribute {name!r}")
