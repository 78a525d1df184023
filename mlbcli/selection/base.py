"""The token-selection contract: a `Method` turns one request into a keep schedule (`PrunePlan`).

Methods are found by name through `mlbcli.selection.registry` (built-ins and `mlb.methods` plugins
alike). A method declares its hyperparameters as a frozen `Params` dataclass (`selection.parameters`),
resolved once at construction into `self.params`. A method decides *where* it prunes (before the LLM, or before decoder layer K with
attention scores from layer K-1) and *what* it keeps; the engine does the bookkeeping (order, original
position ids, KV cache, statistics), so a method is a small pure function of tensors.
"""

from __future__ import annotations

import abc
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from mlbcli.errors import UsageError
from mlbcli.selection.parameters import NoParams, normalize_name, resolve

if TYPE_CHECKING:
    import torch

    from mlbcli.models.base import Prompt, VideoTokens
    from mlbcli.selection.plan import DecodePolicy, PrunePlan

#: Text tokens assumed around the visual block when planning without a tokenizer (`mlb flops`).
NOMINAL_TEXT_TOKENS = 64


@dataclass
class PlanContext:
    """What a method may use beyond (video, prompt): the model family's limits and probe passes.

    Built by `Pipeline._prefill` for every request (and, without `probe_fn`, by `mlb flops`). Methods
    receive it as the optional third argument of `plan` / `nominal_schedule` (see `accepts_context`).
    """

    image_llm: bool = False  # adapter.renumber_input_positions: an image LLM driven on video (LLaVA-NeXT)
    context_limit: int | None = None  # max_position_embeddings of the LLM (None: unlimited)
    text_tokens: int = NOMINAL_TEXT_TOKENS  # prompt tokens outside the visual block
    grid: tuple[int, int] | None = None  # token grid of one frame, when known without a video
    # probe_fn(video_subset, K, query) -> [n_subset] attention the query rows give each visual token
    # at decoder layer K-1 (mean over heads and rows), running only layers 0..K-1.
    probe_fn: Callable[[VideoTokens, int, str], torch.Tensor] | None = None
    probe_passes: list[tuple[int, int]] = field(default_factory=list)  # (visual tokens, layers) per probe
    # Statistics only (`compress`): attention methods at --keep 1.0 still read the raw attention field
    # (a probe that keeps every token), so it can be plotted and thresholds calibrated.
    diagnostics: bool = False
    mrope: bool = False  # 3-axis (M-RoPE) positions: nothing to re-sequence them to (Qwen-VL families)

    def probe(self, video: VideoTokens, layer: int, query: str = "question") -> torch.Tensor:
        """Score `video` (e.g. one segment) with the request's prompt through layers 0..layer-1."""
        if self.probe_fn is None:
            raise RuntimeError("this PlanContext cannot run probe passes (planning without a model)")
        scores = self.probe_fn(video, layer, query)
        self.probe_passes.append((video.num_visual, int(layer)))
        return scores


def accepts_context(function: Callable[..., Any]) -> bool:
    """Whether `plan`/`nominal_schedule` takes the optional `context` argument (older methods do not)."""
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
    return "context" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


#: The options every method is asked about, with the flag that sets each (errors name the flag).
OPTION_FLAGS: dict[str, str] = {
    "keep": "--keep",
    "layer": "--layer",
    "query": "--query",
    "debias": "--debias",
    "variant": "--variant",
    "positions": "--positions",
    "saliency": "--saliency",
}
QUERIES = ("question", "last")
POSITIONS = ("original", "contiguous")
SALIENCIES = ("tower", "proxy")  # the vision tower's attention, or the pseudo-[CLS] proxy


@dataclass(frozen=True)
class MethodOptions:
    """Options every method may understand; method-specific hyperparameters go in `params`.

    `None` means "not given": the method resolves it to its own default (`Method.keep`, `.layer`,
    `.query`, `.variant`, `.positions`). An option given to a method that does not use it is a
    `UsageError` (`check_method_options`: one rule for the library, the CLI and `mlb flops`).
    """

    keep: float | None = None  # fraction of visual tokens that continue past the pruning point, (0, 1]
    layer: int | None = None  # attention methods: prune before decoder layer K (default 2), scored by K-1
    query: str | None = None  # probe query rows: "question" (all question tokens) or "last" (FastV)
    seed: int = 0  # for stochastic methods (random); also seeds the run, so every method accepts it
    debias: tuple[str, ...] | None = None  # debiaser list; None = the method's own default
    params: Mapping[str, Any] = field(default_factory=dict)
    variant: str | None = None  # "paper" / "official" reading of a peer method (see `Method.variants`)
    positions: str | None = None  # "original" / "contiguous" position ids for the surviving tokens
    saliency: str | None = None  # "tower" / "proxy": what methods that read saliency read

    def __post_init__(self) -> None:
        if self.keep is not None and not (0.0 < self.keep <= 1.0):
            raise UsageError(f"--keep must be in (0, 1], got {self.keep}")
        if self.layer is not None and self.layer < 0:
            raise UsageError(f"--layer must be >= 0, got {self.layer}")
        if self.query is not None and self.query not in QUERIES:
            raise UsageError(f"--query must be 'question' or 'last', got {self.query!r}")
        if self.positions is not None and self.positions not in POSITIONS:
            raise UsageError(f"--positions must be 'original' or 'contiguous', got {self.positions!r}")
        if self.saliency is not None and self.saliency not in SALIENCIES:
            raise UsageError(f"--saliency must be 'tower' or 'proxy', got {self.saliency!r}")

    def given(self) -> list[str]:
        """The options (of `OPTION_FLAGS`) set by the caller, in flag order."""
        return [name for name in OPTION_FLAGS if getattr(self, name) is not None]


def check_method_options(
    method: str, options: MethodOptions, used: frozenset[str], variants: tuple[str, ...]
) -> None:
    """THE rule for options a method does not use: an error, never silently ignored.

    `used` is the method's `options_used` (a subset of `OPTION_FLAGS`), `variants` its `variants`
    (the first is the default). Hyperparameters (`params`) follow the same rule in `parameters.resolve`.
    """
    unused = [OPTION_FLAGS[name] for name in options.given() if name not in used]
    if unused:
        uses = ", ".join(OPTION_FLAGS[name] for name in OPTION_FLAGS if name in used) or "no options"
        raise UsageError(
            f"{' and '.join(unused)} {'does' if len(unused) == 1 else 'do'} not apply to --method "
            f"{method} (it uses: {uses})"
        )
    if options.variant is not None and options.variant not in variants:
        raise UsageError(
            f"--variant {options.variant!r} is not a variant of --method {method}; "
            f"choose from {', '.join(variants)} (default {variants[0]})"
        )


def keep_note(
    kept: int, num_visual: int, target: int | None, num_frames: int, reason: str | None = None
) -> str | None:
    """The `keep_note` column: None when `kept` meets `target` up to rounding, else why not.

    "Up to rounding": per-frame integer budgets may differ from token_budget(T*N, keep) by half a
    token per frame, so |kept - target| <= max(1, T) / 2 is a met budget. `reason` is the method's
    own explanation (a `keep_note` entry in a step's diagnostics), when it knows one.
    """
    if target is None or 2 * abs(kept - target) <= max(1, num_frames):
        return None
    share = kept / num_visual if num_visual else 1.0
    asked = target / num_visual if num_visual else 1.0
    why = reason or "the method could not meet the budget"
    return f"kept {kept} of {num_visual} visual tokens ({share:.3f}), budget {target} ({asked:.3f}): {why}"


def keep_everything() -> PrunePlan:
    """The plan that prunes nothing (e.g. every budget method at --keep 1.0)."""
    from mlbcli.selection.plan import PrunePlan

    return PrunePlan()


def token_budget(num_tokens: int, keep: float) -> int:
    """Tokens kept out of `num_tokens` at ratio `keep`: round half up, at least one token."""
    if num_tokens <= 0:
        return 0
    return max(1, min(num_tokens, math.floor(num_tokens * keep + 0.5)))


class Method(abc.ABC):
    """A token-reduction method. Subclasses set `name`, `description` and implement `plan`."""

    name: ClassVar[str]
    description: ClassVar[str]
    #: True when the method's selection depends on the question (so `compress` needs a prompt).
    query_aware: ClassVar[bool] = False
    #: Where the method cuts tokens: "input" (before the LLM), "layer" (before decoder layer
    #: `options.layer`), or None (never). Used by `mlb flops` to plan without running the model.
    prune_point: ClassVar[str | None] = "input"
    #: The options of `OPTION_FLAGS` this method reads; any other one given is a `UsageError`.
    options_used: ClassVar[frozenset[str]] = frozenset({"keep"})
    #: Named readings of the method ("paper", "official"...); the first is the default. () = none.
    variants: ClassVar[tuple[str, ...]] = ()
    default_layer: ClassVar[int] = 2
    default_query: ClassVar[str] = "question"
    #: The method's hyperparameters: a frozen dataclass of `parameters.param` fields.
    Params: ClassVar[type] = NoParams
    #: Parameter values a variant sets (before the user's): {"official": {"name": value}}.
    variant_params: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    def __init__(self, options: MethodOptions | None = None):
        self.options = options or MethodOptions()
        check_method_options(self.name, self.options, self.options_used, self.variants)
        if self.options.saliency is not None and not self.reads_saliency():
            raise UsageError(
                f"--saliency does not apply to --method {self.name} --variant {self.variant}: "
                "this reading ranks tokens by its own proxy, not by the vision tower's attention"
            )
        #: The parameters the caller gave (names normalised, None dropped): "given" vs "default".
        self.given_params = {normalize_name(k): v for k, v in self.options.params.items() if v is not None}
        preset = self.variant_params.get(self.variant or "", {})
        # UsageError at construction, before any work: unknown, mistyped or unused parameters
        self.params: dict[str, Any] = resolve(self.parameter_sources(), self.given_params, self.name, preset)

    def parameter_sources(self) -> tuple[type, ...]:
        """The `Params` classes this instance reads: its own (attention methods add their debiasers')."""
        return (self.Params,)

    @classmethod
    def declared_parameter_sources(cls) -> tuple[type, ...]:
        """The `Params` classes the method reads with its default options (`mlb methods`, the docs)."""
        return (cls.Params,)

    # -- options resolved to this method's defaults --------------------------------------------------------
    @classmethod
    def reads_option(cls, name: str, options: MethodOptions) -> bool:
        """Whether the method runs with option `name` (keep/layer/query) given `options`: it is in
        `options_used`; a method whose variant has no budget (mlb's paper layout) says so here."""
        return name in cls.options_used

    @classmethod
    def option_defaults(cls) -> dict[str, Any]:
        """keep/layer/query when not given: keep 1.0 (no pruning), `default_layer`, `default_query`."""
        return {"keep": 1.0, "layer": cls.default_layer, "query": cls.default_query}

    @classmethod
    def resolved_options(cls, options: MethodOptions) -> dict[str, Any]:
        """THE rule for keep/layer/query: the given value, else the method's default (keep 1.0 = no
        pruning, `default_layer`, `default_query`), and None where the method does not read it. The
        method's own properties, the `keep_requested` column (ok and error rows) and the recorded
        `options_json` all come from here."""
        defaults = cls.option_defaults()
        kinds: dict[str, Callable[[Any], Any]] = {"keep": float, "layer": int, "query": str}
        resolved: dict[str, Any] = {}
        for name, default in defaults.items():
            given = getattr(options, name)
            value = default if given is None else kinds[name](given)
            resolved[name] = value if cls.reads_option(name, options) else None
        return resolved

    @property
    def keep(self) -> float:
        """The fraction kept; 1.0 (keep everything) for a method or variant without a budget."""
        keep = self.resolved_options(self.options)["keep"]
        return 1.0 if keep is None else float(keep)

    @property
    def layer(self) -> int:
        return self.default_layer if self.options.layer is None else int(self.options.layer)

    @property
    def query(self) -> str:
        return self.default_query if self.options.query is None else self.options.query

    @property
    def variant(self) -> str | None:
        return self.options.variant or (self.variants[0] if self.variants else None)

    @property
    def saliency(self) -> str | None:
        """What a method that reads saliency reads: "tower" (the default: the vision tower's attention,
        where the family captures it) or "proxy" (`--saliency proxy`); None for other methods."""
        if not self.reads_saliency():
            return None
        return self.options.saliency or "tower"

    def reads_saliency(self) -> bool:
        """Whether the method, in its variant, reads `VideoTokens.saliency` (VisionZip's paper reading
        never does: it ranks by the proxy); `--saliency` given to one that does not is a `UsageError`."""
        return "saliency" in self.options_used

    def saliency_used(self, video: VideoTokens) -> str | None:
        """The row's `saliency` column: "tower" when the method read the tower's attention of `video`,
        "proxy" when it fell back (asked for, or nothing captured), None for methods that read none."""
        if self.saliency is None:
            return None
        return "tower" if self.saliency == "tower" and video.saliency is not None else "proxy"

    def saliency_view(self, video: VideoTokens) -> VideoTokens:
        """`video` as the method may read it: without the tower's saliency under `--saliency proxy`."""
        if self.saliency == "proxy" and video.saliency is not None:
            import dataclasses

            return dataclasses.replace(video, saliency=None)
        return video

    @property
    def positions(self) -> str:
        """Position ids of the tokens that survive pre-LLM pruning: "original" unless asked (or the
        official variant of a peer that re-sequences them)."""
        return self.options.positions or "original"

    def position_policy(self, plan: PrunePlan, context: PlanContext | None = None) -> PrunePlan:
        """`plan` with the method's position policy (`PrunePlan.contiguous_positions`).

        Image LLMs driven on video (LLaVA-NeXT) always re-sequence (`image_llm`), so asking for
        original positions there is an error rather than a silent no-op.
        """
        if self.options.positions == "original" and context is not None and context.image_llm:
            raise UsageError(
                "--positions original: this model family always re-sequences visual tokens after "
                "pruning (an image LLM driven on video); use --positions contiguous or leave it unset"
            )
        contiguous = self.positions == "contiguous"
        if contiguous and context is not None and context.mrope:
            if self.options.positions == "contiguous":
                raise UsageError(
                    "--positions contiguous: this family uses 3-axis M-RoPE positions, which have no "
                    "contiguous renumbering; leave --positions unset"
                )
            contiguous = False  # an official variant's default: M-RoPE keeps the original positions
        if plan.steps and contiguous:
            plan.contiguous_positions = True
        return plan

    @property
    def keep_requested(self) -> float | None:
        """The `keep_requested` column: the fraction asked for, None for methods without --keep."""
        keep: float | None = self.resolved_options(self.options)["keep"]
        return keep

    def target_tokens(self, num_visual: int, num_frames: int = 1) -> int | None:
        """Visual tokens (appended ones included) that should enter the last layer: the budget the
        row is checked against (`keep_note`). None = the method has no budget (fixed layout, none)."""
        if self.keep_requested is None or self.prune_point is None:
            return None
        return num_visual if self.keep >= 1.0 else token_budget(num_visual, self.keep)

    @abc.abstractmethod
    def plan(self, video: VideoTokens, prompt: Prompt | None) -> PrunePlan:
        """The keep schedule for one (video, prompt) request.

        `prompt` is None only for a query-agnostic method (`query_aware` False) planned without a
        question: `compress --save-tokens` stores such a reduction once, for every later question.

        A method may declare a third parameter `context: PlanContext | None = None`: it then receives
        the family's limits and can run probe passes (`context.probe`), e.g. two-stage LLaVA-MLB.
        """

    def plan_with_context(self, video: VideoTokens, prompt: Prompt, context: PlanContext | None) -> PrunePlan:
        """`plan`, passing `context` only to methods that accept it."""
        if context is not None and accepts_context(self.plan):
            return self.plan(video, prompt, context=context)  # type: ignore[call-arg]
        return self.plan(video, prompt)

    def nominal_with_context(
        self, num_visual: int, num_frames: int, context: PlanContext | None
    ) -> tuple[dict[int, int], list[tuple[int, int]]]:
        """(`nominal_schedule`, planned probe passes) for `mlb flops`; context only where accepted."""
        if context is not None and accepts_context(self.nominal_schedule):
            schedule = self.nominal_schedule(num_visual, num_frames, context=context)  # type: ignore[call-arg]
            return schedule, list(context.probe_passes)
        return self.nominal_schedule(num_visual, num_frames), []

    def decode_policy(self) -> DecodePolicy | None:
        """The per-step KV policy the method runs while decoding (`PrunePlan.decode_policy`), None for
        methods without one; `replay_kv` replays it on recorded attention without a model."""
        return None

    def check_layer(self, num_layers: int) -> None:
        """`--layer K` must name a decoder layer with one before it (scores come from layer K-1):
        the same check for a run (`Pipeline`) and a plan (`mlb flops`)."""
        if self.prune_point == "layer" and not 1 <= self.layer < num_layers:
            raise UsageError(
                f"--layer {self.layer}: {self.name} prunes before decoder layer K using the attention of "
                f"layer K-1; this model has {num_layers} layers, choose 1..{num_layers - 1}"
            )

    def nominal_schedule(self, num_visual: int, num_frames: int = 1) -> dict[int, int]:
        """Visual tokens from each pruning layer on, as planned (`flops.tokens_per_layer` format).

        Content-dependent methods (deduplication, merging by similarity) may realise a different
        count; the measured one is in every output row.
        """
        if self.prune_point is None or self.keep >= 1.0:
            return {}
        layer = 0 if self.prune_point == "input" else self.layer
        return {layer: token_budget(num_visual, self.keep)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options})"
