"""Small inline SVG charts drawn by hand: the accuracy-vs-FLOPs scatter and per-frame attention bars.

Why by hand: the report must be one self-contained file that opens offline, and a plotting library
would add a heavy dependency for two simple charts. SVG text comes from data (file labels), so every
string is escaped here like the rest of the page.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

__all__ = ["PALETTE", "Point", "attention_bars", "scatter"]

# Colour-blind-safe (Okabe-Ito); file k is drawn in PALETTE[k % len].
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")


@dataclass
class Point:
    """One file in the scatter: mean FLOPs ratio, accuracy and its interval."""

    label: str
    x: float
    y: float
    low: float
    high: float
    color: str


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    return [lo + (hi - lo) * i / (n - 1) for i in range(n)]


def scatter(points: Sequence[Point], *, width: int = 520, height: int = 300) -> str:
    """Accuracy (y, with 95% interval whiskers) against visual FLOPs ratio (x, 0..max(1, data))."""
    left, right, top, bottom = 52, 16, 14, 40
    pw, ph = width - left - right, height - top - bottom
    x_hi = max([1.0] + [p.x for p in points if math.isfinite(p.x)])
    y_lo = min([0.0] + [p.low for p in points])

    def sx(v: float) -> float:
        return left + pw * v / x_hi

    def sy(v: float) -> float:
        return top + ph * (1 - (v - y_lo) / (1 - y_lo or 1))

    parts = [
        f'<svg class="chart" role="img" aria-label="accuracy versus FLOPs ratio" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#ccc"/>',
    ]
    for v in _ticks(0, x_hi):
        parts.append(f'<line x1="{sx(v):.1f}" y1="{top}" x2="{sx(v):.1f}" y2="{top + ph}" stroke="#eee"/>')
        parts.append(
            f'<text x="{sx(v):.1f}" y="{top + ph + 14}" class="tick" text-anchor="middle">{v:.2f}</text>'
        )
    for v in _ticks(y_lo, 1.0):
        parts.append(f'<line x1="{left}" y1="{sy(v):.1f}" x2="{left + pw}" y2="{sy(v):.1f}" stroke="#eee"/>')
        parts.append(
            f'<text x="{left - 6}" y="{sy(v) + 4:.1f}" class="tick" text-anchor="end">{v:.0%}</text>'
        )
    parts.append(
        f'<text x="{left + pw / 2}" y="{height - 6}" class="axis" text-anchor="middle">'
        "visual FLOPs ratio (mean)</text>"
        f'<text x="14" y="{top + ph / 2}" class="axis" text-anchor="middle" '
        f'transform="rotate(-90 14 {top + ph / 2})">accuracy</text>'
    )
    for p in points:
        if not (math.isfinite(p.x) and math.isfinite(p.y)):
            continue
        x, color = sx(p.x), escape(p.color)
        parts.append(
            f"<g><title>{escape(p.label)}: {p.y:.1%} [{p.low:.1%}, {p.high:.1%}] at {p.x:.3f}</title>"
            f'<line x1="{x:.1f}" y1="{sy(p.low):.1f}" x2="{x:.1f}" y2="{sy(p.high):.1f}" '
            f'stroke="{color}" stroke-width="2"/>'
            f'<circle cx="{x:.1f}" cy="{sy(p.y):.1f}" r="5" fill="{color}"/>'
            f'<text x="{x + 8:.1f}" y="{sy(p.y) - 6:.1f}" class="pt">{escape(p.label[:40])}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def attention_bars(
    series: Sequence[tuple[str, Sequence[float]]], *, width: int = 260, height: int = 64
) -> str:
    """Grouped bars of attention mass per frame, one colour per series (e.g. raw and debiased)."""
    series = [(name, [float(v) for v in vals if v is not None]) for name, vals in series if vals]
    if not series:
        return ""
    n = max(len(vals) for _, vals in series)
    peak = max((v for _, vals in series for v in vals if math.isfinite(v)), default=0.0) or 1.0
    colors = ("#0072B2", "#E69F00")
    top, bottom = 4, 14
    slot = width / n
    bar = max(1.0, (slot - 1) / len(series))
    parts = [
        f'<svg class="attn" role="img" aria-label="attention per frame" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">'
    ]
    for s, (name, vals) in enumerate(series):
        for i, v in enumerate(vals):
            if not math.isfinite(v):
                continue
            h = (height - top - bottom) * max(v, 0.0) / peak
            x = i * slot + s * bar
            parts.append(
                f'<rect x="{x:.1f}" y="{height - bottom - h:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{colors[s % 2]}"><title>{escape(name)} frame {i + 1}: {v:.3f}</title></rect>'
            )
    legend = " ".join(
        f'<tspan fill="{colors[s % 2]}">&#9632; {escape(name)}</tspan>' for s, (name, _) in enumerate(series)
    )
    parts.append(f'<text x="0" y="{height - 2}" class="tick">{legend}</text></svg>')
    return "".join(parts)
