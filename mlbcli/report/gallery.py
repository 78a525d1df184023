"""The gallery: for a deterministic sample of videos, what each run kept and answered, aligned per question.

Why this shape: the question a researcher asks is "on this video, what did method A keep and say, and
what did method B?". So the same (video_id, question_id) from every input file is one comparison
table, one line per file, frames aligned vertically so a patch kept by one method and dropped by the
other lines up. Sampling is by a hash of the video id (stable whatever the file order, spread over the
dataset); ``focus="wrong"`` puts videos with wrong answers (in any file) first. Only sampled rows are
decoded, which is what keeps a 10k-row report fast and small.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

import numpy as np

from mlbcli.io.kept_tokens import decode_kept, decode_merged
from mlbcli.report.frames import FrameStrip, Thumbs, decode_thumbs, render_strip
from mlbcli.report.load import Run
from mlbcli.report.svg import PALETTE, attention_bars

__all__ = ["GalleryOptions", "pick_videos", "render_gallery"]

QUESTIONS_PER_VIDEO = 4  # more questions of one video are counted, not shown


@dataclass
class GalleryOptions:
    videos: int = 24
    focus: str = "all"
    thumb_px: int = 96
    max_frames: int = 16
    cache: dict[tuple[Any, ...], Thumbs] = field(default_factory=dict)


Key = tuple[str, str | None]


def _key(row: dict[str, Any]) -> Key:
    return (str(row.get("video_id") or row.get("video_path") or ""), row.get("question_id"))


def _stable(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


def index_runs(runs: Sequence[Run]) -> list[dict[Key, dict[str, Any]]]:
    """Per run, (video_id, question_id) -> its first row."""
    out = []
    for run in runs:
        table: dict[Key, dict[str, Any]] = {}
        for row in run.rows:
            table.setdefault(_key(row), row)
        out.append(table)
    return out


def pick_videos(indexes: Sequence[dict[Key, dict[str, Any]]], videos: int, focus: str) -> list[list[Key]]:
    """The sampled videos, each as its question keys in first-seen order."""
    by_video: dict[str, list[Key]] = {}
    wrong: dict[str, int] = {}
    failed: dict[str, int] = {}
    for table in indexes:
        for key, row in table.items():
            keys = by_video.setdefault(key[0], [])
            if key not in keys:
                keys.append(key)
            wrong[key[0]] = wrong.get(key[0], 0) + (row.get("correct") is False)
            failed[key[0]] = failed.get(key[0], 0) + bool(row.get("error"))
    order = sorted(by_video, key=_stable)
    if focus == "wrong":
        order.sort(key=lambda v: (-wrong[v], -failed[v]))
    return [by_video[v] for v in order[: max(videos, 0)]]


def _strip_html(strip: FrameStrip) -> str:
    parts = []
    if strip.error:
        parts.append(f'<div class="placeholder">{escape(strip.error)}</div>')
    if strip.uri:
        labels = "".join(f'<span style="width:{strip.tile_w}px">{escape(x)}</span>' for x in strip.labels)
        parts.append(
            f'<div class="strip"><img src="{strip.uri}" width="{strip.width}" height="{strip.height}" '
            f'alt="sampled frames"><div class="labels">{labels}</div></div>'
        )
    return "".join(parts)


def _masks(row: dict[str, Any]) -> tuple[np.ndarray | None, np.ndarray | None, str | None]:
    record = row.get("kept_tokens")
    if not record:
        return None, None, None
    try:
        kept = decode_kept(record)
        merged = decode_merged(record)
    except Exception as exc:  # noqa: BLE001 - a bad record is reported, the frames still show
        return None, None, f"kept_tokens unreadable ({type(exc).__name__}: {exc})"
    return kept, None if merged is None else merged >= 0, None


def _numbers(value: Any) -> list[float] | None:
    """A list column's numbers; CSV stores lists as JSON text. None when absent or not all finite."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if not isinstance(value, (list, tuple)) or not value:
        return None
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in value):
        return None
    return list(value)


def _frames_html(row: dict[str, Any], opts: GalleryOptions) -> str:
    if row.get("error") and not row.get("frame_timestamps_s"):
        return f'<div class="placeholder">item failed: {escape(str(row["error"]))}</div>'
    times = _numbers(row.get("frame_timestamps_s")) or _numbers(row.get("timestamps_s"))
    indices = None if times else [int(i) for i in _numbers(row.get("frame_indices")) or []] or None
    path = str(row.get("video_path") or "")
    cache_key = (path, tuple(times or ()), tuple(indices or ()), int(row.get("frames") or 0))
    frames = len(times or indices or []) or int(row.get("frames") or 0)
    if cache_key not in opts.cache:
        opts.cache[cache_key] = decode_thumbs(
            path, times=times, indices=indices, width=opts.thumb_px, count=frames
        )
    thumbs = opts.cache[cache_key]
    kept, merged, problem = _masks(row)
    strip = render_strip(
        thumbs, kept=kept, merged=merged, frames=frames, thumb_px=opts.thumb_px, max_frames=opts.max_frames
    )
    notes = [thumbs.note] if thumbs.note else []
    if len(strip.labels) < len(thumbs.images):
        notes.append(f"showing {len(strip.labels)} of {len(thumbs.images)} frames")
    if kept is None:
        notes.append(problem or "no kept-token record: plain frames")
    else:
        notes.append(
            f"kept {int(kept.sum())} of {kept.size} tokens ({kept.shape[0]}x{kept.shape[1]}x{kept.shape[2]})"
        )
    html = _strip_html(strip) + f'<div class="note">{escape("; ".join(notes))}</div>'
    series: list[tuple[str, Sequence[float]]] = [
        (name, values)
        for name, col in (("raw", "attention_per_frame"), ("debiased", "attention_per_frame_debiased"))
        if (values := _numbers(row.get(col)))
    ]
    return html + (attention_bars(series) if series else "")


def _verdict(row: dict[str, Any]) -> str:
    parts = []
    for col, name in (("correct", ""), ("correct_lmms_eval", "lmms-eval ")):
        if col in row and row[col] is not None:
            cls, word = ("ok", "correct") if row[col] else ("bad", "wrong")
            parts.append(f'<span class="badge {cls}">{name}{word}</span>')
    return " ".join(parts)


def _reply_html(row: dict[str, Any]) -> str:
    if row.get("error"):
        return f'<span class="badge bad">failed</span> <span class="bad">{escape(str(row["error"]))}</span>'
    reply = row.get("answer") if row.get("answer") is not None else row.get("summary")
    choice = f" <b>{escape(str(row['choice']))}</b>" if row.get("choice") else ""
    stats = []
    if row.get("keep_realized") is not None:
        stats.append(f"kept {row['keep_realized']:.1%}")
    if row.get("flops_ratio") is not None:
        stats.append(f"FLOPs {row['flops_ratio']:.3f}")
    return (
        f"{_verdict(row)}{choice}"
        f'<span class="text">{escape("" if reply is None else str(reply))}</span>'
        f'<div class="note">{escape(", ".join(stats))}</div>'
    )


def _options_html(options: Sequence[Any], truth: Any) -> str:
    """Options as listed, lettered A, B, ... when they carry no letter; the ground truth's in bold."""
    out = []
    for k, option in enumerate(options):
        text = str(option).strip()
        letter = chr(ord("A") + k) if k < 26 else str(k + 1)
        lettered = len(text) > 1 and text[0].isalpha() and text[1] in ".):" and text[0].isupper()
        if lettered:
            letter = text[0]
        label = text if lettered else f"{letter}. {text}"
        gt = truth is not None and str(truth).strip() in (letter, text)
        out.append(f"<li{' class=gt' if gt else ''}>{escape(label)}</li>")
    return "".join(out)


def _who(run: Run, k: int) -> str:
    method = run.summary.method or "?"
    variant = f" ({run.summary.variant})" if run.summary.variant else ""
    return (
        f'<span class="swatch" style="background:{PALETTE[k % len(PALETTE)]}"></span>'
        f'<b>{escape(method + variant)}</b><br><span class="note mono">{escape(run.label)}</span>'
    )


def _question_html(
    key: Key, runs: Sequence[Run], indexes: Sequence[dict[Key, Any]], opts: GalleryOptions
) -> str:
    rows = [table.get(key) for table in indexes]
    first = next(r for r in rows if r is not None)
    truth = first.get("ground_truth")
    options = first.get("options") or []
    if isinstance(options, str):  # CSV: JSON text
        try:
            options = json.loads(options)
        except ValueError:
            options = [options]
    opts_html = _options_html(options if isinstance(options, list) else [options], truth)
    head = f'<div class="q">{escape(str(first.get("question") or first.get("prompt") or ""))}</div>'
    if opts_html:
        head += f'<ul class="opts">{opts_html}</ul>'
    if truth is not None:
        head += f'<div class="gt-line">ground truth: <b>{escape(str(truth))}</b></div>'
    body = []
    for k, (run, row) in enumerate(zip(runs, rows, strict=True)):
        cells = (
            f'<td class="frames">{_frames_html(row, opts)}</td><td class="reply">{_reply_html(row)}</td>'
            if row is not None
            else '<td class="frames note" colspan="2">not in this file</td>'
        )
        body.append(f'<tr><td class="who">{_who(run, k)}</td>{cells}</tr>')
    qid = "" if key[1] is None else f'<span class="note mono">{escape(str(key[1]))}</span>'
    return f'<div class="item">{qid}{head}<table class="cmp">{"".join(body)}</table></div>'


def render_gallery(runs: Sequence[Run], opts: GalleryOptions) -> tuple[str, int]:
    """The gallery section's HTML and the number of videos shown."""
    indexes = index_runs(runs)
    picked = pick_videos(indexes, opts.videos, opts.focus)
    cards = []
    for keys in picked:
        first = next(t[keys[0]] for t in indexes if keys[0] in t)
        shown = keys[:QUESTIONS_PER_VIDEO]
        more = len(keys) - len(shown)
        items = "".join(_question_html(key, runs, indexes, opts) for key in shown)
        extra = f'<div class="note">{more} more question(s) of this video not shown</div>' if more else ""
        cards.append(
            f'<section class="video"><header><h3 class="mono">{escape(keys[0][0])}</h3>'
            f'<span class="path mono">{escape(str(first.get("video_path") or ""))}</span></header>'
            f"{items}{extra}</section>"
        )
    return "".join(cards), len(picked)
