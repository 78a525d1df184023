"""The one registry of method hyperparameters (`MethodOptions.params`), for the CLI, docs and validation.

Every tunable number of the attention-debiased methods has a name, a type, a documented default and
the methods / debiasers it applies to. `resolve_params` turns user-given values into a complete,
typed dict; unknown names, wrong types and names that the chosen method does not use are
`UsageError`s (a typo must not silently run the default). `None` values count as "not given", so a
CLI can pass every option it knows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mlbcli.errors import UsageError


@dataclass(frozen=True)
class Hyperparameter:
    name: str
    type: type  # int, float (a float parameter accepts ints), bool (a switch: --name/--no-name)
    default: Any  # None: derived from other options (see help)
    help: str
    methods: tuple[str, ...]  # method presets and/or debiasers that read it
    minimum: float | None = None
    maximum: float | None = None


def _hp(*args: Any, **kwargs: Any) -> tuple[str, Hyperparameter]:
    hp = Hyperparameter(*args, **kwargs)
    return hp.name, hp


HYPERPARAMETERS: dict[str, Hyperparameter] = dict(
    [
        _hp(
            "segment_threshold",
            float,
            0.9,
            "global: a new segment starts between adjacent frames whose global features have cosine < this "
            "(AdaTP tau_s).",
            ("global", "adatp"),
            -1.0,
            1.0,
        ),
        _hp(
            "min_segment_budget",
            float,
            0.25,
            "global: each segment keeps at least this fraction of its even (length-proportional) share of "
            "the budget (AdaTP b_min).",
            ("global", "adatp"),
            0.0,
            1.0,
        ),
        _hp(
            "relevance_temperature",
            float,
            0.05,
            "global: segment weight = length * exp((r - max r) / this), r = cosine between the mean "
            "question-token input embedding and the segment's mean visual token (in cosine units, the "
            "spec's T_r). Smaller = sharper; relevance differences far below it leave the split even.",
            ("global", "adatp"),
            1e-6,
            None,
        ),
        _hp(
            "dedup_threshold",
            float,
            0.9,
            "local: inside a segment, drop a token whose cosine with the last kept token at the same grid "
            "position is >= this (keep-first; before the LLM; the least similar are kept back when "
            "needed to meet --keep).",
            ("local", "adatp"),
            -1.0,
            1.0,
        ),
        _hp(
            "grid",
            int,
            0,
            "grid: cells per frame side (g x g cells, each keeping its most attended tokens); 0 = one cell "
            "per kept token of the frame (finest balanced grid). Two-stage mlb on image LLMs (LLaVA-NeXT) "
            "with --variant paper: g x g tokens per frame, 0 = ceil(side/3) (8 at 24x24).",
            ("grid", "mlb"),
            0,
            None,
        ),
        _hp(
            "pool_temperature",
            float,
            0.0,
            "grid: GAPool mode. 0 = select (each cell keeps its most attended token(s), at their own "
            "positions); > 0 = pool (spec §3.3): each cell becomes one token, the softmax(a / (this * "
            "std a))-weighted mean of its tokens, at the cell's centre token's position (1 = the spec's).",
            ("grid", "mlb"),
            0.0,
            None,
        ),
        _hp(
            "tail_size",
            int,
            1,
            "tail: each frame is average-pooled to s x s summary tokens appended after the visual block "
            "(counted in --keep). Two-stage mlb on image LLMs: unset = max(1, round(side/12)) (2 at 24x24).",
            ("tail", "mlb"),
            1,
            None,
        ),
        _hp(
            "dominant_ratio",
            float,
            54 / 64,
            "visionzip: fraction of each frame's budget kept as dominant tokens; the rest are merged "
            "contextual tokens (VisionZip 54:10).",
            ("visionzip",),
            0.0,
            1.0,
        ),
        _hp(
            "merge_window",
            int,
            4,
            "dycoke: frames per temporal-merging window (DyCoke TTM uses 4).",
            ("dycoke",),
            2,
            None,
        ),
        _hp(
            "merge_ratio",
            float,
            None,
            "dycoke: DyCoke's pruning ratio K in [0, 1]: every compared frame keeps floor((1-K)N) tokens "
            "(then --keep does not apply); unset = --keep is the budget, the window heads kept whole.",
            ("dycoke",),
            0.0,
            1.0,
        ),
        _hp(
            "segments",
            int,
            0,
            "mlb on image LLMs (two-stage, LLaVA-NeXT): consecutive frame segments probed separately "
            "(stage 1); 0 = the fewest that fit the context (T_s*N + text <= max_position_embeddings).",
            ("mlb",),
            0,
            None,
        ),
        _hp(
            "slow_frames",
            int,
            10,
            "slowfast: frames of the slow path, uniformly spaced (capped at the sampled frames).",
            ("slowfast",),
            1,
            None,
        ),
        _hp(
            "slow_pool",
            int,
            2,
            "slowfast: horizontal 1-D max-pool width of the slow path (24x24 -> 24x12 with 2, SF-LLaVA); "
            "1 = no pooling.",
            ("slowfast",),
            1,
            None,
        ),
        _hp(
            "fast_size",
            int,
            4,
            "slowfast: every frame adaptively average-pooled to f x f fast tokens, appended after the slow "
            "tokens (capped at the frame grid).",
            ("slowfast",),
            1,
            None,
        ),
        # -- published video baselines (mlbcli/selection/{fastvid,prunevid,holitom}.py, dycoke decode) --
        _hp(
            "fastvid_segments",
            int,
            8,
            "fastvid: DySeg c; a segment boundary after each of the c-1 least similar adjacent frame pairs.",
            ("fastvid",),
            1,
            None,
        ),
        _hp(
            "fastvid_threshold",
            float,
            0.9,
            "fastvid: DySeg tau; also a boundary wherever adjacent global frame features have cosine < this.",
            ("fastvid",),
            -1.0,
            1.0,
        ),
        _hp(
            "fastvid_contextual",
            float,
            0.4,
            "fastvid: STPrune d, the share of each segment's budget spent on density-peak anchors that "
            "merge the rest (the other 1-d: salient tokens by attention).",
            ("fastvid",),
            0.0,
            1.0,
        ),
        _hp(
            "fastvid_anchor_every",
            int,
            4,
            "fastvid: DTM p; one anchor frame per p frames of a segment.",
            ("fastvid",),
            1,
            None,
        ),
        _hp(
            "fastvid_beta",
            float,
            0.6,
            "fastvid: DTM beta; an anchor keeps weight max(beta, 1/(members+1)) against its members' mean.",
            ("fastvid",),
            0.0,
            1.0,
        ),
        _hp(
            "prunevid_segment_ratio",
            float,
            0.25,
            "prunevid: temporal clusters of frames = int(T * this) (DPC-kNN on frame means).",
            ("prunevid",),
            1e-6,
            1.0,
        ),
        _hp(
            "prunevid_threshold",
            float,
            0.8,
            "prunevid: tau; a position is static in a segment when its mean pairwise cosine across the "
            "segment's frames is > this.",
            ("prunevid",),
            -1.0,
            1.0,
        ),
        _hp(
            "prunevid_cluster_ratio",
            float,
            0.5,
            "prunevid: each static/dynamic group of > 14 tokens is merged by DPC-kNN into size * this tokens.",
            ("prunevid",),
            1e-6,
            1.0,
        ),
        _hp(
            "prunevid_alpha",
            float,
            None,
            "prunevid: keep int(size * alpha) of every group at layer K (PruneVid uses 0.4); unset = "
            "derived from --keep (exact budget, groups in proportion to their sizes).",
            ("prunevid",),
            0.0,
            1.0,
        ),
        _hp(
            "holitom_threshold",
            float,
            0.8,
            "holitom: tau; a position is static in a window when every adjacent pair is more similar (cosine).",
            ("holitom",),
            -1.0,
            1.0,
        ),
        _hp(
            "holitom_max_window",
            int,
            1024,
            "holitom: longest static window (frames) the segmentation DP considers.",
            ("holitom",),
            1,
            None,
        ),
        _hp(
            "holitom_beta",
            float,
            0.6,
            "holitom: a merged centre is beta * centre + (1 - beta) * mean(members).",
            ("holitom",),
            0.0,
            1.0,
        ),
        _hp(
            "holitom_contextual",
            float,
            0.0,
            "holitom: D, the share of each frame's dynamic budget merged by density peaks instead of kept "
            "by attention (HoliTom's default 0).",
            ("holitom",),
            0.0,
            1.0,
        ),
        _hp(
            "holitom_layer",
            int,
            0,
            "holitom: inner-LLM merge before this decoder layer (HoliTom's full rows use 18 on 28-layer "
            "Qwen2); 0 = off (the paper's 'w/o M').",
            ("holitom",),
            0,
            None,
        ),
        _hp(
            "holitom_merge_ratio",
            float,
            0.5,
            "holitom: r; the inner merge keeps (1 - r) of the visual tokens (the rest are averaged into them).",
            ("holitom",),
            0.0,
            1.0,
        ),
        _hp(
            "dycoke_kv",
            bool,
            True,
            "dycoke: stage 2, dynamic KV-cache pruning while decoding (--no-dycoke-kv: TTM only).",
            ("dycoke",),
        ),
        _hp(
            "dycoke_kv_layer",
            int,
            3,
            "dycoke: decode steps read the new token's attention at layer L-1 and prune the visual keys of "
            "layers >= L (DyCoke's L = 3).",
            ("dycoke",),
            1,
            None,
        ),
        _hp(
            "dycoke_kv_ratio",
            float,
            0.7,
            "dycoke: P, the share of the visual KV entries hidden at each decode step (DyCoke's README: 0.7).",
            ("dycoke",),
            0.0,
            1.0,
        ),
        _hp(
            "dycoke_kv_threshold",
            float,
            0.9,
            "dycoke: a decode step re-chooses the kept video keys when the cosine between its video "
            "attention and the previous step's is < this (DyCoke: 0.9).",
            ("dycoke",),
            -1.0,
            1.0,
        ),
    ]
)


def _coerce(hp: Hyperparameter, value: Any) -> Any:
    if hp.type is bool:  # a switch: --name/--no-name, or --param name=true|false
        text = str(value).strip().lower()
        if isinstance(value, bool) or text in ("true", "false", "1", "0", "on", "off"):
            return value if isinstance(value, bool) else text in ("true", "1", "on")
        raise UsageError(f"parameter {hp.name} must be true or false, got {value!r}")
    if isinstance(value, bool) or (hp.type is int and isinstance(value, float) and not value.is_integer()):
        raise UsageError(f"parameter {hp.name} must be {hp.type.__name__}, got {value!r}")
    try:
        out = hp.type(value)
    except (TypeError, ValueError):
        raise UsageError(f"parameter {hp.name} must be {hp.type.__name__}, got {value!r}") from None
    if (hp.minimum is not None and out < hp.minimum) or (hp.maximum is not None and out > hp.maximum):
        raise UsageError(f"parameter {hp.name}={out} outside [{hp.minimum}, {hp.maximum}]")
    return out


def resolve_params(given: Mapping[str, Any], used_by: Iterable[str]) -> dict[str, Any]:
    """Defaults of every parameter read by `used_by` (method and debiaser names), overridden by `given`."""
    users = set(used_by)
    applicable = {name: hp for name, hp in HYPERPARAMETERS.items() if users & set(hp.methods)}
    out = {name: hp.default for name, hp in applicable.items()}
    for name, value in given.items():
        if value is None:
            continue
        if name not in HYPERPARAMETERS:
            raise UsageError(f"unknown parameter {name!r}; known: {', '.join(sorted(HYPERPARAMETERS))}")
        if name not in applicable:
            raise UsageError(
                f"parameter {name!r} is not used by {'+'.join(sorted(users)) or 'this method'} "
                f"(it applies to: {', '.join(HYPERPARAMETERS[name].methods)})"
            )
        out[name] = _coerce(applicable[name], value)
    return out
