"""What the built-in methods and debiasers are, as plain data: no torch, so `mlb methods`,
`--method` name lookup and shell completion stay instant.

The method classes (which import torch) stay the source of truth for behaviour; a test checks that
this table matches the registry (names, descriptions, default debiasers), so the two cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlbcli.selection.params import HYPERPARAMETERS, Hyperparameter


@dataclass(frozen=True)
class MethodInfo:
    name: str
    description: str  # = the class's `description`
    prune_point: str | None  # "input" (before the LLM), "layer" (before decoder layer --layer), None
    default_debias: tuple[str, ...] = ()  # = the class's `default_debias` (attention presets)
    takes_debias: bool = False  # --debias may change the debiasers (attention presets only)
    options: tuple[str, ...] = ()  # = the class's `options_used` (--keep, --layer... it accepts)
    variants: tuple[str, ...] = ()  # = the class's `variants`, the default first
    default_query: str | None = None  # attention presets: the probe rows without --query


ATTENTION = ("keep", "layer", "query", "debias")
PRE_LLM = ("keep", "positions")
PEER = ("keep", "variant", "positions")


BUILTIN_METHODS: dict[str, MethodInfo] = {
    info.name: info
    for info in (
        MethodInfo("none", "Keep every visual token (the reference).", None),
        MethodInfo(
            "uniform",
            "Per-frame spatial average pooling of the token grid to meet --keep (before the LLM).",
            "input",
            options=PRE_LLM,
        ),
        MethodInfo(
            "random",
            "A seeded uniformly random subset of the visual tokens (the sanity floor).",
            "input",
            options=PRE_LLM,
        ),
        MethodInfo(
            "fastv",
            "FastV: prune at layer K to the top --keep visual tokens by layer K-1 attention.",
            "layer",
            (),
            True,
            ATTENTION,
            default_query="last",
        ),
        MethodInfo(
            "adatp",
            "AdaTP (reconstruction): segment budgets + same-position dedup, then attention top-k.",
            "layer",
            ("global", "local"),
            True,
            ATTENTION,
            default_query="question",
        ),
        MethodInfo(
            "mlb",
            "LLaVA-MLB: two-stage segment probes + GAPool + summary tail on image LLMs (LLaVA-NeXT); "
            "MLB-lite (gridded attention selection per frame + pooled summary tail) on video LLMs.",
            "layer",
            ("grid", "tail"),
            True,
            (*ATTENTION, "variant"),
            ("budget", "paper"),
            default_query="question",
        ),
        MethodInfo(
            "visionzip",
            "VisionZip* (after pooling, before the LLM): dominant tokens + merged contextual tokens.",
            "input",
            options=PEER,
            variants=("paper", "official"),
        ),
        MethodInfo(
            "dycoke",
            "DyCoke: TTM drops tokens similar to the same position in a window's reference frame; then "
            "decode-time KV pruning by attention (--no-dycoke-kv: TTM only).",
            "input",
            options=PEER,
            variants=("paper", "official"),
        ),
        MethodInfo(
            "evs",
            "EVS (vLLM --video-pruning-rate q = 1 - --keep): drop the tokens most similar to the same "
            "position in the previous frame; first frame kept.",
            "input",
            options=PRE_LLM,
        ),
        MethodInfo(
            "vidcom2",
            "VidCom2: per-frame budgets by frame uniqueness, then the least redundant tokens of each "
            "frame (Gaussian similarity to video and frame centres); no attention.",
            "input",
            options=PRE_LLM,
        ),
        MethodInfo(
            "fastvid",
            "FastVID: dynamic temporal segmentation, then per segment salient tokens + density-peak "
            "anchors that merge the rest (before the LLM).",
            "input",
            options=PRE_LLM,
        ),
        MethodInfo(
            "holitom",
            "HoliTom: global static-window segmentation (DP), static tokens merged by density peaks, "
            "dynamic tokens by attention (before the LLM); optional inner-LLM merge at holitom_layer.",
            "input",
            options=PRE_LLM,
        ),
        MethodInfo(
            "prunevid",
            "PruneVid: static/dynamic DPC-kNN token merging per temporal segment before the LLM, then "
            "question-guided selection at layer K (decode sees only the kept tokens).",
            "layer",
            options=("keep", "layer", "query", "positions"),
            default_query="question",
        ),
        MethodInfo(
            "slowfast",
            "SlowFast-LLaVA: few frames lightly pooled (slow) + all frames pooled to 4x4 (fast, after).",
            "input",
            options=("variant", "positions"),
            variants=("paper", "official"),
        ),
    )
}

#: = `mlbcli.selection.presets.DEBIASERS` (checked by a test).
DEBIASERS: dict[str, str] = {
    "global": "AdaTP: segment budgets by adjacent-frame similarity, segment length and question relevance",
    "local": "AdaTP: drop same-position near-duplicates of the last kept token inside a segment (pre-LLM)",
    "grid": "LLaVA-MLB GAPool (select): every frame's budget spread over spatial cells, top token per cell",
    "tail": "LLaVA-MLB VSTail: s x s pooled summary of every frame appended after the visual block",
    "none": "no debiasing (plain global top-k by attention)",
}


def hyperparameters_of(name: str) -> list[Hyperparameter]:
    """The hyperparameters that a method or debiaser reads, in registry order."""
    return [hp for hp in HYPERPARAMETERS.values() if name in hp.methods]


def default_text(hp: Hyperparameter) -> str:
    """A hyperparameter's default as shown to people: 0.84375, 4, on, or 'derived' (from other options)."""
    if isinstance(hp.default, bool):
        return "on" if hp.default else "off"
    return "derived" if hp.default is None else f"{hp.default:g}"
