"""The token-selection contract: a `Method` turns one request into a keep schedule (`PrunePlan`).

Methods are registered by name (`@register_method`) so that the CLI, the library API and plugins see
the same list. A method decides *where* it prunes (before the LLM, or before decoder layer K with
attention scores from layer K-1) and *what* it keeps; the engine does the bookkeeping (order, original
position ids, KV cache, statistics), so a method is a small pure function of tensors.
"""

from __future__ import annotations

import abc
import difflib
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from mlbcli.errors import UsageError

if TYPE_CHECKING:
    import torch

    from mlbcli.engine import PrunePlan
    from mlbcli.models.base import Prompt, VideoTokens

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


@dataclass(frozen=True)
class MethodOptions:
    """Options every method understands; method-specific hyperparameters go in `params`."""

    keep: float = 1.0  # fraction of visual tokens that continue past the pruning point, 0 < keep <= 1
    layer: int = 2  # attention methods: prune before decoder layer K, scored by layer K-1's attention
    query: str = "question"  # probe query rows: "question" (all question tokens) or "last" (FastV)
    seed: int = 0  # for stochastic methods (random)
    debias: tuple[str, ...] | None = None  # debiaser list; None = the method's own default
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (0.0 < self.keep <= 1.0):
            raise UsageError(f"--keep must be in (0, 1], got {self.keep}")
        if self.layer < 0:
            raise UsageError(f"--layer must be >= 0, got {self.layer}")
        if self.query not in ("question", "last"):
            raise UsageError(f"--query must be 'question' or 'last', got {self.query!r}")


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

    def __init__(self, options: MethodOptions | None = None):
        self.options = options or MethodOptions()

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

    def nominal_schedule(self, num_visual: int, num_frames: int = 1) -> dict[int, int]:
        """Visual tokens from each pruning layer on, as planned (`flops.tokens_per_layer` format).

        Content-dependent methods (deduplication, merging by similarity) may realise a different
        count; the measured one is in every output row.
        """
        if self.prune_point is None or self.options.keep >= 1.0:
            return {}
        layer = 0 if self.prune_point == "input" else self.options.layer
        return {layer: token_budget(num_visual, self.options.keep)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options})"


METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available by `cls.name` (CLI `--method`, `get_method`)."""
    if cls.name in METHODS and METHODS[cls.name] is not cls:
        raise ValueError(f"a method named {cls.name!r} is already registered")
    METHODS[cls.name] = cls
    return cls


def load_builtin_methods() -> None:
    """Register the built-in methods (they import torch, so this happens on first use)."""
    from mlbcli.selection import (  # noqa: F401
        baselines,
        evs,
        fastvid,
        holitom,
        presets,
        prunevid,
        slowfast,
        vidcom2,
    )


def method_names() -> list[str]:
    """Every method name that `get_method` accepts: the built-ins and any registered plugin (no torch)."""
    from mlbcli.selection.catalog import BUILTIN_METHODS

    return sorted(set(METHODS) | set(BUILTIN_METHODS))


def canonical_method_name(name: str) -> str:
    """`name` as registered. Case does not matter (`FastV` is `fastv`); an unknown name is a
    `UsageError` that suggests the closest known name. Needs no torch, so the CLI checks early."""
    names = method_names()
    if name in names:
        return name
    folded = {known.lower(): known for known in names}
    key = name.strip().lower()
    if key in folded:
        return folded[key]
    close = difflib.get_close_matches(key, list(folded), n=1, cutoff=0.6)
    hint = f"; did you mean {folded[close[0]]!r}?" if close else ";"
    raise UsageError(f"unknown method {name!r}{hint} available: {', '.join(names)}")


def get_method(name: str, options: MethodOptions | None = None) -> Method:
    """An instance of the method called `name` (case-insensitive) with `options`."""
    load_builtin_methods()
    return METHODS[canonical_method_name(name)](options)


def available_methods() -> dict[str, str]:
    load_builtin_methods()
    return {name: cls.description for name, cls in sorted(METHODS.items())}
