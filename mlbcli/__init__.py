"""mlb: batch video question answering with Video LLMs and attention-debiased visual-token pruning.

The public API lives in `mlbcli.api` (imported lazily so that `mlb --help` never imports torch).
"""

from __future__ import annotations

__version__ = "0.1.0.dev0"

__all__ = ["__version__"]
