"""Per-video attention-bias report (`mlb compress --bias-report DIR`): one PNG, drawn with Pillow only.

Panels, top to bottom:
1. attention mass per frame of the probe (layer K-1, query rows), before debiasing (all candidate
   tokens) and after (the kept tokens only), each normalised to sum 1 — the global / positional bias
   (AdaTP: both ends high; LLaVA-MLB: rising toward late frames) and what the selection did about it;
2. h x w histogram of the grid positions of the top-10% tokens by probe attention, pooled over frames —
   the local bias (a few positions winning in every frame);
3. the kept-token map: one small h x w grid per sampled frame, kept tokens filled.
Methods without a probe (uniform, visionzip, dycoke...) get panel 3 and the note "no attention probe".
Two-stage mlb probes its segments outside the final pass: panel 1 shows that raw field (per segment
normalised), without a position histogram. AdaTP's probe sees only the tokens that survived dedup;
its raw field before dedup is the probe-only run (`compress --keep 1.0`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import torch

from mlbcli.io.naming import safe_name

# What the report reads from the engine's objects, typed by shape so that io imports no higher layer
# (`engine.pipeline.EncodedVideo`, `engine.batch.PrefillResult`, `engine.stats.TokenStats` fit).


class _VideoTokens(Protocol):
    @property
    def num_frames(self) -> int: ...

    @property
    def grid(self) -> tuple[int, int]: ...  # (h, w) token grid of one frame


class EncodedVideoLike(Protocol):
    @property
    def tokens(self) -> _VideoTokens: ...


class PrefillLike(Protocol):
    @property
    def kept_ids(self) -> torch.Tensor: ...  # [k] visual ids alive after the last pruning step

    @property
    def scores(self) -> Mapping[int, torch.Tensor]: ...  # probe layer -> [T*N] scores (NaN = dropped)

    @property
    def infos(self) -> Mapping[int, Mapping[str, Any]]: ...  # layer -> pruner diagnostics


class TokenStatsLike(Protocol):
    @property
    def visual_tokens_in(self) -> int: ...

    @property
    def visual_tokens_kept(self) -> int: ...

    @property
    def keep_realized(self) -> float: ...

    @property
    def flops_ratio(self) -> float: ...

    @property
    def appended_tokens(self) -> int: ...


_BG, _FG, _GRID = (255, 255, 255), (30, 30, 30), (210, 210, 210)
_BEFORE, _AFTER, _KEPT = (120, 144, 200), (222, 110, 60), (40, 120, 60)
_WIDTH = 960


def report_name(video_id: str, question_id: str | None = None) -> str:
    """The PNG file name for one (video, question): readable, and distinct for distinct pairs."""
    return safe_name(video_id, ".png", question_id=question_id)


def frame_mass(scores: torch.Tensor, num_frames: int) -> list[float]:
    """[T*N] scores (NaN = already dropped) -> attention mass per frame, normalised to sum 1."""
    mass = torch.nan_to_num(scores.float().cpu()).view(num_frames, -1).sum(dim=1)
    total = float(mass.sum())
    return (mass / total).tolist() if total > 0 else mass.tolist()


def top_position_histogram(scores: torch.Tensor, num_frames: int, fraction: float = 0.1) -> torch.Tensor:
    """[T*N] scores -> [N] count of each grid position among the top `fraction` tokens (NaN ignored)."""
    s = scores.float().cpu()
    N = s.numel() // num_frames
    valid = (~s.isnan()).nonzero().squeeze(1)
    k = max(1, round(fraction * valid.numel()))
    top = valid[s[valid].topk(min(k, valid.numel())).indices]
    return torch.bincount(top % N, minlength=N)


def _debiased_mass(state: PrefillLike, scores: torch.Tensor, num_frames: int) -> list[float]:
    for info in state.infos.values():
        if "attention_per_frame_debiased" in info:
            return list(info["attention_per_frame_debiased"])
    kept = torch.full_like(scores.float().cpu(), float("nan"))
    ids = state.kept_ids.cpu()
    kept[ids] = scores.float().cpu()[ids]
    return frame_mass(kept, num_frames)


def _text(draw: Any, xy: tuple[int, int], text: str) -> None:
    draw.text(xy, text, fill=_FG)


def _bars(draw: Any, box: tuple[int, int, int, int], before: list[float], after: list[float] | None) -> None:
    x0, y0, x1, y1 = box
    draw.rectangle(box, outline=_GRID)
    T = len(before)
    top = max(before + (after or [])) or 1.0
    slot = (x1 - x0 - 10) / max(T, 1)
    bar = max(1.0, slot / (2 if after is not None else 1) - 1)
    for t in range(T):
        left = x0 + 5 + t * slot
        for j, (series, colour) in enumerate(((before, _BEFORE), (after, _AFTER))):
            if series is None:
                continue
            height = (y1 - y0 - 20) * series[t] / top
            draw.rectangle((left + j * bar, y1 - 5 - height, left + j * bar + bar - 1, y1 - 5), fill=colour)
    _text(draw, (x0 + 5, y0 + 3), f"max {top:.3f}")


def _heatmap(
    draw: Any, origin: tuple[int, int], counts: torch.Tensor, grid: tuple[int, int], cell: int
) -> None:
    h, w = grid
    peak = max(1, int(counts.max()))
    for r in range(h):
        for c in range(w):
            v = int(counts[r * w + c]) / peak
            shade = int(255 * (1 - v))
            x, y = origin[0] + c * cell, origin[1] + r * cell
            draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=(255, shade, shade), outline=_GRID)


def _kept_maps(
    draw: Any,
    origin: tuple[int, int],
    kept: torch.Tensor,
    T: int,
    grid: tuple[int, int],
    cell: int,
    per_row: int,
) -> int:
    """Draw T small grids; returns the height used."""
    h, w = grid
    mask = torch.zeros(T * h * w, dtype=torch.bool)
    mask[kept.cpu()] = True
    mask = mask.view(T, h, w)
    gap = 6
    rows = (T + per_row - 1) // per_row
    for t in range(T):
        gx = origin[0] + (t % per_row) * (w * cell + gap)
        gy = origin[1] + (t // per_row) * (h * cell + gap + 12)
        _text(draw, (gx, gy), str(t))
        for r in range(h):
            for c in range(w):
                x, y = gx + c * cell, gy + 12 + r * cell
                draw.rectangle(
                    (x, y, x + cell - 1, y + cell - 1),
                    fill=_KEPT if mask[t, r, c] else _BG,
                    outline=_GRID if cell > 3 else None,
                )
    return rows * (h * cell + gap + 12)


def render_bias_report(
    title: str,
    scores: torch.Tensor | None,
    debiased: list[float] | None,
    kept_ids: torch.Tensor,
    num_frames: int,
    grid: tuple[int, int],
    subtitle: str = "",
    raw_mass: list[float] | None = None,
):
    """The report image (PIL.Image) from plain tensors (scores [T*N] by visual id, or None).

    `raw_mass` [T]: the attention mass per frame of probe passes outside the final pass (two-stage
    mlb), drawn in panel 1 when there are no final-pass `scores`.
    """
    from PIL import Image, ImageDraw

    T, (h, w) = num_frames, grid
    per_row = max(1, min(T, (_WIDTH - 20) // (w * 4 + 6)))
    cell = max(2, min(8, (_WIDTH - 20) // per_row // w - 1))
    map_rows = (T + per_row - 1) // per_row
    map_height = map_rows * (h * cell + 6 + 12)
    heat_cell = max(6, min(16, 224 // max(h, w)))
    height = 40 + (190 + max(h * heat_cell, 30) + 50 if scores is not None else 30) + map_height + 40
    if scores is None and raw_mass is not None:
        height += 190
    image = Image.new("RGB", (_WIDTH, height), _BG)
    draw = ImageDraw.Draw(image)
    _text(draw, (10, 8), title)
    _text(draw, (10, 22), subtitle)
    y = 40
    if scores is None and raw_mass is not None:
        _text(
            draw, (10, y), "(1) raw attention mass per frame of the segment probes (each segment sums to 1)"
        )
        _bars(draw, (10, y + 15, _WIDTH - 10, y + 175), list(raw_mass), None)
        y += 190
    elif scores is None:
        _text(
            draw, (10, y), "no attention probe: this method does not read LLM attention (kept-token map only)"
        )
        y += 30
    else:
        before = frame_mass(scores, T)
        _text(
            draw,
            (10, y),
            "(1) attention mass per frame: blue = before debiasing (all candidates), orange = kept tokens",
        )
        _bars(draw, (10, y + 15, _WIDTH - 10, y + 175), before, debiased)
        y += 190
        _text(
            draw,
            (10, y),
            f"(2) grid positions of the top-10% tokens by attention ({h}x{w}, pooled over frames)",
        )
        _heatmap(draw, (10, y + 15), top_position_histogram(scores, T), grid, heat_cell)
        y += 15 + max(h * heat_cell, 30) + 35
    _text(draw, (10, y), f"(3) kept tokens per frame ({kept_ids.numel()} of {T * h * w}); green = kept")
    _kept_maps(draw, (10, y + 15), kept_ids, T, grid, cell, per_row)
    return image


def write_bias_report(
    folder: str, item: Any, video: EncodedVideoLike, state: PrefillLike, stats: TokenStatsLike
) -> Path:
    """Write `<folder>/<safe video id>-<hash>.png` atomically (tmp file + os.replace); return its path."""
    tokens = video.tokens
    T = tokens.num_frames
    scores = state.scores[min(state.scores)] if state.scores else None
    debiased = _debiased_mass(state, scores, T) if scores is not None else None
    subtitle = (
        f"visual tokens {stats.visual_tokens_in} -> {stats.visual_tokens_kept} "
        f"(keep {stats.keep_realized:.3f}, FLOPs ratio {stats.flops_ratio:.3f}, "
        f"appended {stats.appended_tokens})"
    )
    if state.scores:
        k = min(state.scores)
        subtitle += f"; attention probe at layer {k} (pruning before layer {k + 1})"
    if any("deduplicated" in info for info in state.infos.values()):
        subtitle += "; blue = tokens left after dedup (raw field: compress --keep 1.0)"
    raw = [i["attention_per_frame_raw"] for i in state.infos.values() if "attention_per_frame_raw" in i]
    image = render_bias_report(
        f"video {item.video_id}",
        scores,
        debiased,
        state.kept_ids,
        T,
        tokens.grid,
        subtitle,
        raw_mass=raw[0] if raw and scores is None else None,
    )
    out_dir = Path(folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / report_name(item.video_id, getattr(item, "question_id", None))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        image.save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
