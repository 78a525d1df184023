"""``mlb report``: see what each run kept and answered, as one self-contained HTML page.

The compact per-row ``kept_tokens`` record is `mlbcli.io.kept_tokens` (written by every run); ``html``
renders result files into a page (imports pyarrow/PyAV/Pillow lazily where it can).
"""

from __future__ import annotations

from mlbcli.io.kept_tokens import arrow_type, decode_kept, decode_merged, encode_kept

__all__ = ["ReportSummary", "arrow_type", "decode_kept", "decode_merged", "encode_kept", "render_report"]


def __getattr__(name: str) -> object:
    """``render_report``/``ReportSummary`` on first use: the page code is not needed to write records."""
    if name in ("render_report", "ReportSummary"):
        from mlbcli.report import html

        return getattr(html, name)
    raise AttributeError(name)
