"""Debiasers of the attention methods (`--debias global,local`), as classes in a registry.

A debiaser changes how an attention method (fastv, adatp, mlb) spends its budget: `global` splits it
over video segments, `local` drops same-position duplicates before the LLM, `grid` spreads a frame's
budget over spatial cells, `tail` appends a pooled summary of every frame. They compose (any subset,
applied in the canonical order of `debiaser_names`); each declares the hyperparameters it reads as a
frozen `Params` dataclass, and a method that always uses one (the two-stage mlb reads `grid` and
`tail`) composes its `Params` by inheritance.

A debiaser carries its behaviour: the attention selection (`selection.ops.attention`) knows no
debiaser by name, it calls the hooks of `Debiaser` on each chosen one (an instance holding the
resolved parameters) at fixed points of the plan: `observe` and `prepare` (once per request),
`drop_before_llm`, `read_before_llm` and `append_before_llm` (the layer-0 step), `selection_options`
(the top-k before layer K). This module is torch-free so that the CLI can list and check debiasers
at start-up; the hooks import their tensor work (`selection.ops.debias`) when called.

Debiasers register under the entry-point group `mlb.debiasers` like methods do under `mlb.methods`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from mlbcli.errors import UsageError
from mlbcli.plugins import PluginError, Registry
from mlbcli.selection.parameters import NoParams, param

if TYPE_CHECKING:
    import torch

    from mlbcli.models.base import Prompt, VideoTokens
    from mlbcli.selection.plan import LayerContext


@dataclass
class DebiasJob:
    """One request's selection, as the debiasers' hooks see and shape it (`ops.attention` builds it)."""

    name: str  # the method, for messages
    video: VideoTokens
    prompt: Prompt | None
    frame_vec: torch.Tensor  # [T, D] global frame vectors (vision tower's, else mean visual token)
    budget: int = 0  # visual tokens past layer K, appended ones included (set when pruning)
    tail_tokens: int = 0  # appended before the LLM, counted in `budget`
    segments: torch.Tensor | None = None  # [T] segment ids, when a debiaser cuts the video
    observed: dict[str, Any] = field(default_factory=dict)  # diagnostics of the probe-only plan too
    state: dict[str, Any] = field(default_factory=dict)  # from the layer-0 step to layer K


class Debiaser:
    """A named, composable change to attention top-k selection, with its own hyperparameters.

    Every hook does nothing by default; a debiaser overrides those it needs. Hooks run over the chosen
    debiasers in application order.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    Params: ClassVar[type] = NoParams
    #: True when it removes tokens before the LLM (the probe at layer K-1 then sees fewer than all).
    drops_before_llm: ClassVar[bool] = False

    def __init__(self, params: Mapping[str, Any]):
        self.params = params  # the method's resolved hyperparameters (this debiaser's among them)

    def tail_size(self) -> int:
        """Side of the s x s summary appended per frame before the LLM (0: none)."""
        return 0

    def observe(self, job: DebiasJob) -> None:
        """Always, even at --keep 1.0: diagnostics into `job.observed` (also the probe-only plan's)."""

    def prepare(self, job: DebiasJob) -> None:
        """When pruning, before any step: e.g. cut the video into `job.segments`."""

    def drop_before_llm(self, job: DebiasJob, keep: torch.Tensor, info: dict[str, Any]) -> torch.Tensor:
        """Layer 0: the flat visual ids still kept, `keep` [k] ascending -> a subset of it."""
        return keep

    def read_before_llm(self, job: DebiasJob, ctx: LayerContext, info: dict[str, Any]) -> None:
        """Layer 0: read the LLM's input states (e.g. question relevance into `job.state`)."""

    def append_before_llm(
        self, job: DebiasJob, ctx: LayerContext, info: dict[str, Any]
    ) -> torch.Tensor | None:
        """Layer 0: [m, D] tokens appended after the visual block (counted in `job.tail_tokens`)."""
        return None

    def selection_options(self, job: DebiasJob) -> dict[str, Any]:
        """Keyword arguments of `ops.attention.attention_select` (budget groups, grid selection)."""
        return {}


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

    def observe(self, job: DebiasJob) -> None:
        from mlbcli.selection.ops import debias as D

        job.observed["frame_similarity"] = [round(c, 6) for c in D.adjacent_similarity(job.frame_vec)]

    def prepare(self, job: DebiasJob) -> None:
        from mlbcli.selection.ops import debias as D

        if job.prompt is None:  # the segment budgets follow the question
            raise ValueError(f"--method {job.name}: the 'global' debiaser needs the request's prompt")
        job.segments = D.segment_frames(job.frame_vec, self.params["segment_threshold"])  # [T]

    def read_before_llm(self, job: DebiasJob, ctx: LayerContext, info: dict[str, Any]) -> None:
        from mlbcli.selection.ops import debias as D

        assert job.prompt is not None and job.segments is not None  # `prepare`
        question_index = job.prompt.question_index.to(ctx.visual_slots.device)  # [q] question positions
        question = ctx.hidden[0, question_index].float().mean(0)  # [D]
        job.state["relevance"] = D.segment_relevance(question, job.video.features, job.segments)
        info["frame_similarity"] = job.observed["frame_similarity"]  # what segment_threshold is compared with

    def selection_options(self, job: DebiasJob) -> dict[str, Any]:
        return {
            "segments": job.segments,
            "relevance": job.state.get("relevance"),
            "min_segment_budget": self.params["min_segment_budget"],
            "relevance_temperature": self.params["relevance_temperature"],
        }


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
    drops_before_llm = True

    def drop_before_llm(self, job: DebiasJob, keep: torch.Tensor, info: dict[str, Any]) -> torch.Tensor:
        import torch

        from mlbcli.selection.ops import debias as D

        T = job.video.num_frames
        segments = job.segments if job.segments is not None else torch.zeros(T, dtype=torch.long)
        # at least the grid budget survives dedup, so layer K can spend all of it
        mask, restored = D.dedup_keep(
            job.video.features,
            segments,
            self.params["dedup_threshold"],
            min_keep=job.budget - job.tail_tokens,
        )  # [T, N]
        survivors = keep[mask.flatten()[keep]]
        info["deduplicated"] = int(T * job.video.tokens_per_frame - survivors.numel())
        info["dedup_restored"] = restored
        info["kept_after_dedup_per_frame"] = mask.sum(1).tolist()
        return survivors


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

    def selection_options(self, job: DebiasJob) -> dict[str, Any]:
        return {
            "use_grid": True,
            "cells_per_side": self.params["grid"],
            "pool_temperature": self.params["pool_temperature"],
        }


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

    def tail_size(self) -> int:
        return int(self.params["tail_size"])

    def append_before_llm(
        self, job: DebiasJob, ctx: LayerContext, info: dict[str, Any]
    ) -> torch.Tensor | None:
        from mlbcli.selection.ops import debias as D

        size = self.tail_size()
        if not size:
            return None
        info["tail_tokens"] = job.video.num_frames * size * size
        return D.summary_tail(job.video.features, job.video.grid, size).to(ctx.visual_slots.device)


#: The built-in debiasers, in the order they are applied and listed (plugins follow, by name).
ORDER = ("global", "local", "grid", "tail")
DEBIASERS: Registry[type[Debiaser]] = Registry(
    "mlb.debiasers",
    {
        "global": "mlbcli.selection.debiasers:GlobalSegments",
        "local": "mlbcli.selection.debiasers:LocalDedup",
        "grid": "mlbcli.selection.debiasers:GridCells",
        "tail": "mlbcli.selection.debiasers:SummaryTail",
    },
)
#: `--debias none`: no debiasing (plain global top-k by attention).
NONE_DESCRIPTION = "no debiasing (plain global top-k by attention)"


def debiaser_names() -> list[str]:
    """The debiasers in application order: the built-ins, then plugins by name."""
    return [*ORDER, *(name for name in DEBIASERS.names() if name not in ORDER)]


def debiaser_origin(name: str) -> str:
    """ "built-in", "registered" or "plugin <distribution>"."""
    return DEBIASERS.origin(name)


def load_debiaser(name: str) -> type[Debiaser]:
    """The class of debiaser `name`; a broken plugin, or one that is no `Debiaser`, is a `UsageError`."""
    try:
        cls = DEBIASERS.load(name)
    except PluginError as error:
        raise UsageError(str(error)) from error
    if not (isinstance(cls, type) and issubclass(cls, Debiaser)) or cls.name != name:
        origin = DEBIASERS.origin(name)
        raise UsageError(f"{origin} debiaser {name!r} is not a Debiaser subclass named {name!r}: {cls!r}")
    return cls


def parse_debias(debias: Sequence[str] | None, default: tuple[str, ...]) -> tuple[str, ...]:
    """Validated debiaser names in application order; () for none. None -> the method's default."""
    if debias is None:
        return default
    names = [d.strip().lower() for d in debias if d.strip()]
    known = debiaser_names()
    unknown = [d for d in names if d not in known and d != "none"]
    if unknown:
        raise UsageError(
            f"unknown debiaser(s) {', '.join(unknown)}; choose from {', '.join([*known, 'none'])}"
        )
    if "none" in names and len(set(names)) > 1:
        raise UsageError("--debias none cannot be combined with other debiasers")
    return tuple(d for d in known if d in names)


def debiaser_params(names: Sequence[str]) -> tuple[type, ...]:
    """The `Params` classes of the debiasers `names`."""
    return tuple(load_debiaser(name).Params for name in names)


def make_debiasers(names: Sequence[str], params: Mapping[str, Any]) -> tuple[Debiaser, ...]:
    """The debiasers `names` (application order), each holding the method's resolved `params`."""
    return tuple(load_debiaser(name)(params) for name in names)
