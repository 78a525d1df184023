"""Debiasers of the attention methods (`--debias global,local`), as classes in a registry.

A debiaser changes how an attention method (fastv, adatp, mlb) spends its budget: `global` splits it
over video segments, `local` drops same-position duplicates before the LLM, `grid` spreads a frame's
budget over spatial cells, `tail` appends a pooled summary of every frame. They compose (any subset,
applied in the canonical order of `ORDER`); each declares the hyperparameters it reads as a frozen
`Params` dataclass, and a method that always uses one (the two-stage mlb reads `grid` and `tail`)
composes its `Params` by inheritance. The tensor work is in `mlbcli.selection.ops` (torch); this
module is torch-free so that the CLI can list and check debiasers at start-up.

The set is closed: the attention selection (`selection.ops.attention`) implements exactly these four,
so there is no plugin group for debiasers, and `--debias` with any other name is a `UsageError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from mlbcli.errors import UsageError
from mlbcli.selection.parameters import NoParams, param


class Debiaser:
    """A named, composable change to attention top-k selection, with its own hyperparameters."""

    name: ClassVar[str]
    description: ClassVar[str]
    Params: ClassVar[type] = NoParams


class GlobalSegments(Debiaser):
    """AdaTP global debiasing: segment budgets by adjacent-frame similarity, length and relevance."""

    @dataclass(frozen=True)
    class Params:
        segment_threshold: float = param(
            0.9,
            "a new segment starts between adjacent frames whose global features have cosine < this "
            "(AdaTP tau_s).",
            -1.0,
            1.0,
        )
        min_segment_budget: float = param(
            0.25,
            "each segment keeps at least this fraction of its even (length-proportional) share of the "
            "budget (AdaTP b_min).",
            0.0,
            1.0,
        )
        relevance_temperature: float = param(
            0.05,
            "segment weight = length * exp((r - max r) / this), r = cosine between the mean "
            "question-token input embedding and the segment's mean visual token (in cosine units, the "
            "spec's T_r). Smaller = sharper; relevance differences far below it leave the split even.",
            1e-6,
        )

    name = "global"
    description = "AdaTP: segment budgets by adjacent-frame similarity, segment length and question relevance"


class LocalDedup(Debiaser):
    """AdaTP local debiasing: same-position deduplication inside a segment, before the LLM."""

    @dataclass(frozen=True)
    class Params:
        dedup_threshold: float = param(
            0.9,
            "inside a segment, drop a token whose cosine with the last kept token at the same grid "
            "position is >= this (keep-first; before the LLM; the least similar are kept back when "
            "needed to meet --keep).",
            -1.0,
            1.0,
        )

    name = "local"
    description = (
        "AdaTP: drop same-position near-duplicates of the last kept token inside a segment (pre-LLM)"
    )


class GridCells(Debiaser):
    """LLaVA-MLB GAPool: every frame's budget spread over spatial cells."""

    @dataclass(frozen=True)
    class Params:
        grid: int = param(
            0,
            "cells per frame side (g x g cells, each keeping its most attended tokens); 0 = one cell per "
            "kept token of the frame (finest balanced grid). Two-stage mlb on image LLMs (LLaVA-NeXT) "
            "with --variant paper: g x g tokens per frame, 0 = ceil(side/3) (8 at 24x24).",
            0,
        )
        pool_temperature: float = param(
            0.0,
            "GAPool mode. 0 = select (each cell keeps its most attended token(s), at their own "
            "positions); > 0 = pool (spec §3.3): each cell becomes one token, the softmax(a / (this * "
            "std a))-weighted mean of its tokens, at the cell's centre token's position (1 = the spec's).",
            0.0,
        )

    name = "grid"
    description = (
        "LLaVA-MLB GAPool (select): every frame's budget spread over spatial cells, top token per cell"
    )


class SummaryTail(Debiaser):
    """LLaVA-MLB VSTail: a pooled summary of every frame appended after the visual block."""

    @dataclass(frozen=True)
    class Params:
        tail_size: int = param(
            1,
            "each frame is average-pooled to s x s summary tokens appended after the visual block "
            "(counted in --keep). Two-stage mlb on image LLMs: unset = max(1, round(side/12)) (2 at 24x24).",
            1,
        )

    name = "tail"
    description = "LLaVA-MLB VSTail: s x s pooled summary of every frame appended after the visual block"


#: The debiasers the attention selection implements, in the order they are applied and listed.
DEBIASERS: dict[str, type[Debiaser]] = {
    cls.name: cls for cls in (GlobalSegments, LocalDedup, GridCells, SummaryTail)
}
ORDER = tuple(DEBIASERS)
#: `--debias none`: no debiasing (plain global top-k by attention).
NONE_DESCRIPTION = "no debiasing (plain global top-k by attention)"


def debiaser_names() -> list[str]:
    """The debiasers in application order (a closed set: no plugins)."""
    return list(ORDER)


def parse_debias(debias: Sequence[str] | None, default: tuple[str, ...]) -> tuple[str, ...]:
    """Validated debiaser names in application order; () for none. None -> the method's default."""
    if debias is None:
        return default
    names = [d.strip().lower() for d in debias if d.strip()]
    known = debiaser_names()
    unknown = [d for d in names if d not in known and d != "none"]
    if unknown:
        raise UsageError(
            f"unknown debiaser(s) {', '.join(unknown)}: the attention methods implement "
            f"{', '.join([*known, 'none'])}"
        )
    if "none" in names and len(set(names)) > 1:
        raise UsageError("--debias none cannot be combined with other debiasers")
    return tuple(d for d in known if d in names)


def debiaser_params(names: Sequence[str]) -> tuple[type, ...]:
    """The `Params` classes of the debiasers `names`."""
    return tuple(DEBIASERS[name].Params for name in names)
