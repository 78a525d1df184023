"""``mlb report``'s engine: one self-contained HTML page from one or more result files.

Why one file: a report is mailed, attached to an issue or opened on a laptop without the data, so it
must carry everything (thumbnails as base64 JPEG, the stylesheet, SVG charts) and load nothing. A
Content-Security-Policy in the page forbids scripts and every external request, so even a value that
slipped past escaping could not run or phone home; every string from data is escaped regardless.

Sections: a run summary per file, accuracy per file / benchmark / category with Wilson 95% intervals
(both graders where rows carry ``correct_lmms_eval``), accuracy against the visual FLOPs ratio, and the
gallery (``mlbcli.report.gallery``). Unreadable files and videos are shown as such, never a crash.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path

from mlbcli.report.gallery import GalleryOptions, render_gallery
from mlbcli.report.load import Accuracy, Run, load_run
from mlbcli.report.style import CSP, CSS
from mlbcli.report.svg import PALETTE, Point, scatter

__all__ = ["FOCUS", "ReportSummary", "build_page", "render_report"]

FOCUS = ("all", "wrong")
GRADER_NAMES = {"correct": "mlb", "correct_lmms_eval": "lmms-eval"}


@dataclass(frozen=True)
class ReportSummary:
    """What ``render_report`` wrote: rows read (all files), videos in the gallery, file size, seconds."""

    rows: int
    videos_shown: int
    bytes: int
    seconds: float


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "–" if value is None or not math.isfinite(value) else format(value, spec)


def _swatch(k: int) -> str:
    return f'<span class="swatch" style="background:{PALETTE[k % len(PALETTE)]}"></span>'


def _summary_table(runs: Sequence[Run]) -> str:
    heads = ["file", "model", "family", "method", "variant", "keep", "realised", "FLOPs ratio"]
    heads += ["frames", "ok", "failed", "wall time"]
    body = []
    for k, run in enumerate(runs):
        s = run.summary
        if run.error:
            body.append(
                f"<tr><td>{_swatch(k)}<span class=mono>{escape(run.label)}</span></td>"
                f'<td colspan="{len(heads) - 1}" class="bad">unreadable: {escape(run.error)}</td></tr>'
            )
            continue
        wall = "–" if s.wall_s is None else f"{s.wall_s:.1f} s"
        cells = [
            escape(s.model or "–"),
            escape(s.family or "–"),
            escape(s.method or "–"),
            escape(str(s.variant or "–")),
            escape(", ".join(_fmt(v, ".2f") for v in s.keep_requested) or "–"),
        ]
        nums = [
            _fmt(s.keep_realized, ".1%"),
            _fmt(s.flops_ratio),
            escape(", ".join(map(str, s.frames)) or "–"),
        ]
        nums += [str(s.ok), f'<span class="{"bad" if s.failed else ""}">{s.failed}</span>', wall]
        body.append(
            f'<tr><td>{_swatch(k)}<span class="mono" title="{escape(run.path)}">{escape(run.label)}</span></td>'
            + "".join(f"<td>{c}</td>" for c in cells)
            + "".join(f'<td class="num">{c}</td>' for c in nums)
            + "</tr>"
        )
    head = "".join(f'<th class="{"num" if i > 4 else ""}">{h}</th>' for i, h in enumerate(heads))
    table = f"<table class=runs><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    return f'<div class="scroll">{table}</div>'


def _acc_cell(acc: Accuracy | None) -> str:
    if acc is None or not acc.n:
        return "–"
    low, high = acc.interval
    return f'{acc.value:.1%} <span class="ci">[{low:.1%}, {high:.1%}] n={acc.n}</span>'


def _group_order(runs: Sequence[Run]) -> list[str]:
    groups = {g for run in runs for acc in run.accuracy.values() for g in acc}
    rest = sorted(groups - {"all"}, key=lambda g: (not g.startswith("benchmark"), g))
    return (["all"] if "all" in groups else []) + rest


def _accuracy_table(runs: Sequence[Run]) -> str:
    graded = [(k, run) for k, run in enumerate(runs) if run.accuracy]
    if not graded:
        return '<p class="note">No row carries a grade (<span class="mono">correct</span>).</p>'
    columns = [(k, run, g) for k, run in graded for g in run.accuracy]
    head = "".join(
        f'<th class="num">{_swatch(k)}{escape(run.label)}'
        + (f"<br><span class=note>{GRADER_NAMES.get(g, g)} grader</span>" if len(run.accuracy) > 1 else "")
        + "</th>"
        for k, run, g in columns
    )
    body = []
    for group in _group_order(runs):
        cells = "".join(
            f'<td class="num">{_acc_cell(run.accuracy[g].get(group))}</td>' for _, run, g in columns
        )
        name = "<b>all graded</b>" if group == "all" else escape(group)
        body.append(f"<tr><td>{name}</td>{cells}</tr>")
    return f"<table><thead><tr><th>group</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _scatter(runs: Sequence[Run]) -> str:
    points = []
    for k, run in enumerate(runs):
        acc = run.accuracy.get("correct", {}).get("all")
        if acc is None or run.summary.flops_ratio is None:
            continue
        low, high = acc.interval
        label = f"{run.summary.method or '?'} · {run.label}"
        points.append(Point(label, run.summary.flops_ratio, acc.value, low, high, PALETTE[k % len(PALETTE)]))
    if not points:
        return '<p class="note">No file has both graded rows and a FLOPs ratio.</p>'
    return scatter(points)


def _errors(runs: Sequence[Run], limit: int = 20) -> str:
    parts = []
    for run in runs:
        failed = [r for r in run.rows if r.get("error")]
        if not failed:
            continue
        rows = "".join(
            f'<tr><td class="mono">{escape(str(r.get("video_id") or ""))}</td>'
            f'<td class="mono">{escape(str(r.get("question_id") or ""))}</td>'
            f"<td>{escape(str(r['error']))}</td></tr>"
            for r in failed[:limit]
        )
        more = f" (first {limit})" if len(failed) > limit else ""
        parts.append(
            f"<details><summary>{escape(run.label)}: {len(failed)} failed item(s){more}</summary>"
            f"<table><tr><th>video</th><th>question</th><th>error</th></tr>{rows}</table></details>"
        )
    return "".join(parts)


LEGEND = (
    '<div class="legend">Frames are re-decoded from each row\'s video at its recorded timestamps. Patches:'
    '<i style="background:#c9d3dc"></i>kept (full brightness)'
    '<i style="background:#2c2f33"></i>pruned (dimmed)'
    '<i style="background:#4a6d8f"></i>merged into a kept token (tinted)</div>'
)


def build_page(runs: Sequence[Run], opts: GalleryOptions) -> tuple[str, int]:
    """The whole HTML document and the number of gallery videos."""
    gallery, shown = render_gallery(runs, opts)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rows = sum(len(r.rows) for r in runs)
    focus = "wrong answers first" if opts.focus == "wrong" else "sampled by video id"
    title = "mlb report: " + ", ".join(r.label for r in runs)
    html = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title[:200])}</title><style>{CSS}</style></head><body>"
        f'<h1>mlb report</h1><p class="sub">{len(runs)} file(s), {rows} row(s) · generated {stamp}</p>'
        f"<h2>Runs</h2>{_summary_table(runs)}{_errors(runs)}"
        f"<h2>Accuracy</h2>{_accuracy_table(runs)}"
        '<p class="note">Wilson 95% score intervals over graded rows; "both graders" columns where rows '
        "carry <span class=mono>correct_lmms_eval</span>.</p>"
        f"<h2>Accuracy vs visual FLOPs</h2>{_scatter(runs)}"
        f'<h2>Gallery</h2><p class="sub">{shown} video(s), {focus}.</p>{LEGEND}{gallery}'
        "</body></html>"
    )
    return html, shown


def render_report(
    results: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    videos: int = 24,
    focus: str = "all",
    thumb_px: int = 96,
    max_frames: int = 16,
) -> ReportSummary:
    """Write one self-contained HTML report of ``results`` (Parquet, JSONL or CSV result files) to ``out``.

    ``videos``: how many videos the gallery shows; ``focus="wrong"`` puts wrong answers first;
    ``thumb_px``: thumbnail width; ``max_frames``: frames shown per row (evenly spread). The page is
    written atomically (a temporary file renamed into place).
    """
    if focus not in FOCUS:
        raise ValueError(f"focus must be one of {', '.join(FOCUS)}, got {focus!r}")
    if not results:
        raise ValueError("render_report needs at least one result file")
    if thumb_px < 16 or max_frames < 1 or videos < 0:
        raise ValueError("thumb_px must be >= 16, max_frames >= 1 and videos >= 0")
    start = time.perf_counter()
    taken: set[str] = set()
    runs = [load_run(path, taken) for path in results]
    html, shown = build_page(runs, GalleryOptions(videos, focus, thumb_px, max_frames))
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    data = html.encode("utf-8", "replace")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    return ReportSummary(
        rows=sum(len(r.rows) for r in runs),
        videos_shown=shown,
        bytes=len(data),
        seconds=time.perf_counter() - start,
    )
