"""One request = one encoded video x one prompt: prune, prefill, decode, and measure.

`Pipeline` is the notebook-facing object (load a model once, ask about many videos); the batch
functions in `mlbcli.api` drive it over sources and writers.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mlbcli import engine
from mlbcli.errors import UsageError
from mlbcli.flops import LLMDims, layer_flops, visual_flops
from mlbcli.selection import Method, MethodOptions, get_method
from mlbcli.selection.base import PlanContext

if TYPE_CHECKING:
    from mlbcli.models.base import ModelAdapter, VideoTokens
    from mlbcli.video import Frames

log = logging.getLogger(__name__)


@dataclass
class TokenStats:
    """Per-request token statistics; every number is measured from the engine's actual schedule."""

    visual_tokens_in: int
    visual_tokens_kept: int  # visual tokens entering the last decoder layer (appended summary included)
    keep_realized: float  # kept / in
    flops_ratio: float  # visual-token LLM FLOPs vs the unpruned run (algorithms.md §2)
    tokens_per_layer: list[int]
    kept_per_frame: list[int]  # surviving original tokens of each frame (appended tokens not included)
    appended_tokens: int
    attention_per_frame: list[float] | None  # probe attention mass per frame (first probe layer)
    info: dict[str, Any] = field(default_factory=dict)  # method diagnostics (segments, budgets...)
    # (final pass + the method's probe passes) / vanilla; None = no probe passes (= flops_ratio)
    flops_probe_ratio: float | None = None

    def as_row(self) -> dict[str, Any]:
        return {
            "visual_tokens_in": self.visual_tokens_in,
            "visual_tokens_kept": self.visual_tokens_kept,
            "keep_realized": self.keep_realized,
            "flops_ratio": self.flops_ratio,
            "flops_probe_ratio": (
                self.flops_ratio if self.flops_probe_ratio is None else self.flops_probe_ratio
            ),
            "tokens_per_layer": self.tokens_per_layer,
            "kept_per_frame": self.kept_per_frame,
            "appended_tokens": self.appended_tokens,
            "attention_per_frame": self.attention_per_frame,
        }


def token_stats(state: engine.PrefillResult, video: VideoTokens, dims: LLMDims) -> TokenStats:
    n_in = state.visual_in
    per_layer = state.visual_per_layer
    kept = per_layer[-1] if per_layer else n_in
    frames = torch.bincount(state.kept_ids.cpu() // video.tokens_per_frame, minlength=video.num_frames)
    attention = None
    if state.scores:
        first = state.scores[min(state.scores)].cpu()
        attention = torch.nan_to_num(first).view(video.num_frames, -1).sum(dim=1).tolist()
    full = visual_flops([n_in] * dims.num_layers, dims)
    final = visual_flops(per_layer, dims)
    probes = sum(layers * layer_flops(n, dims) for n, layers in state.probe_passes)
    return TokenStats(
        visual_tokens_in=n_in,
        visual_tokens_kept=kept,
        keep_realized=kept / n_in if n_in else 1.0,
        flops_ratio=final / full if full else 1.0,
        flops_probe_ratio=((final + probes) / full if full else 1.0) if state.probe_passes else None,
        tokens_per_layer=list(per_layer),
        kept_per_frame=frames.tolist(),
        appended_tokens=state.appended,
        attention_per_frame=attention,
        info={str(k): v for k, v in state.infos.items() if v},
    )


@dataclass
class Answer:
    text: str
    token_ids: list[int]
    stats: TokenStats
    prefill_s: float
    generate_s: float


@dataclass
class _SharedPrefix:
    """A prefilled system prompt + visual block, reused by the next questions about the same video."""

    video: VideoTokens
    method: Method
    ids: tuple[int, ...]
    state: engine.PrefillResult
    lengths: list[int]  # cached tokens per layer at the end of the prefix


@dataclass
class EncodedVideo:
    tokens: VideoTokens
    encode_s: float


class Pipeline:
    """A loaded model plus a token-reduction method. Reuse one per process.

    >>> pipe = Pipeline("llava-hf/llava-onevision-qwen2-0.5b-ov-hf", method="fastv", keep=0.25)
    >>> frames = decode_frames("clip.mp4", num_frames=pipe.default_frames)
    >>> pipe.answer(pipe.encode(frames), "What is the person doing?").text
    """

    def __init__(
        self,
        model: str | ModelAdapter,
        *,
        method: str | Method = "none",
        device: str = "auto",
        dtype: str = "auto",
        adapter_options: dict[str, Any] | None = None,
        share_prefix: bool = True,
        **method_options: Any,
    ):
        from mlbcli.models import load_adapter

        if isinstance(model, str):
            self.adapter = load_adapter(model, device=device, dtype=dtype, **(adapter_options or {}))
        else:
            self.adapter = model
        self.method = (
            method if isinstance(method, Method) else get_method(method, MethodOptions(**method_options))
        )
        self.dims = LLMDims.from_config(self.adapter.text_config)
        self.share_prefix = share_prefix
        self._prefix: _SharedPrefix | None = None  # the last video's prefilled prefix (one at a time)
        layer, num_layers = self.method.options.layer, self.dims.num_layers
        if self.method.prune_point == "layer" and not 1 <= layer < num_layers:
            raise UsageError(
                f"--layer {layer}: {self.method.name} prunes before decoder layer K using the "
                f"attention of layer K-1; this model has {num_layers} layers, choose "
                f"1..{num_layers - 1}"
            )

    @property
    def default_frames(self) -> int:
        return self.adapter.default_frames

    @torch.inference_mode()
    def encode(self, frames: Frames | np.ndarray) -> EncodedVideo:
        """Vision tower + projector + pooling, once per video (reused by every question)."""
        array = frames if isinstance(frames, np.ndarray) else frames.array
        started = time.perf_counter()
        tokens = self.adapter.encode(self.adapter.preprocess(array))
        if not isinstance(frames, np.ndarray):
            tokens.timestamps_s = list(frames.timestamps_s)
        return EncodedVideo(tokens, time.perf_counter() - started)

    def _prefill(
        self,
        video: VideoTokens,
        prompt_text: str,
        *,
        stop_after_pruning: bool,
        method: Method | None = None,
        reserve_tokens: int = 0,
        planned: tuple[Any, PlanContext, engine.PrunePlan] | None = None,
    ) -> engine.PrefillResult:
        adapter = self.adapter
        prompt, context, plan = planned or self._plan(video, prompt_text, method or self.method)
        embeds = adapter.embed(prompt, video)
        positions = adapter.position_ids(prompt, video)
        state = engine.prefill(
            adapter,
            embeds,
            positions,
            prompt.visual_slots(),
            prompt.question_index,
            plan,
            stop_after_pruning=stop_after_pruning,
            reserve_tokens=reserve_tokens,
        )
        state.probe_passes = list(context.probe_passes)
        return state

    def plan_context(self, prompt_text: str, prompt: Any) -> PlanContext:
        """The `PlanContext` of one request: family limits, and probe passes with the same question."""
        adapter = self.adapter

        def probe(subset: VideoTokens, layer: int, query: str) -> torch.Tensor:
            sub_prompt = adapter.build_prompt(prompt_text, subset)
            step_layer = int(layer)

            def keep_all(ctx: engine.LayerContext) -> engine.LayerKeep:
                return engine.LayerKeep(
                    keep=torch.arange(ctx.visual_slots.numel(), device=ctx.visual_slots.device)
                )

            state = engine.prefill(
                adapter,
                adapter.embed(sub_prompt, subset),
                adapter.position_ids(sub_prompt, subset),
                sub_prompt.visual_slots(),
                sub_prompt.question_index,
                engine.PrunePlan(
                    steps={step_layer: keep_all}, needs_scores=frozenset({step_layer}), query=query
                ),
                stop_after_pruning=True,
                stop_before_layer=step_layer,
            )
            return state.scores[step_layer - 1]

        return PlanContext(
            image_llm=bool(adapter.renumber_input_positions),
            context_limit=adapter.context_limit,
            text_tokens=prompt.length - prompt.num_visual,
            probe_fn=probe,
        )

    def _plan(
        self, video: VideoTokens, prompt_text: str, method: Method
    ) -> tuple[Any, PlanContext, engine.PrunePlan]:
        """(prompt, context, keep schedule) of one request; probe passes, if any, run here."""
        prompt = self.adapter.build_prompt(prompt_text, video)
        context = self.plan_context(prompt_text, prompt)
        return prompt, context, method.plan_with_context(video, prompt, context)

    def _shared_prefix_prefill(
        self,
        video: VideoTokens,
        method: Method,
        planned: tuple[Any, PlanContext, engine.PrunePlan],
        reserve_tokens: int,
    ) -> engine.PrefillResult | None:
        """Prefill through a cached (system prompt + visual block) prefix, or None when it cannot apply.

        Several questions about one video share everything up to the end of the visual block. When the
        keep schedule cannot depend on the question (no pruning at all, or a question-agnostic method
        that only prunes before the LLM), that prefix is prefilled once per video and each question only
        runs its own tokens on top of the cached KV (`engine.extend`). Attention methods pick tokens by
        the question's attention, so each of their questions runs the whole prefill.
        """
        adapter = self.adapter
        prompt, context, plan = planned
        if plan.steps and (method.query_aware or set(plan.steps) != {0} or plan.needs_scores):
            return None
        # The prefix ends one token after the visual block (template text such as "\n" or
        # <|vision_end|>), so that tokens a method appends after the block get that token's original
        # position, exactly as in an unsplit prefill. A question whose first token differs there just
        # misses the cache.
        split = prompt.visual_start + prompt.num_visual + prompt.num_extra + 1
        if split >= prompt.length or context.probe_passes:
            return None
        prefix_ids = tuple(prompt.input_ids[0, :split].tolist())
        embeds = adapter.embed(prompt, video)  # [1, L, D]
        positions = adapter.position_ids(prompt, video)  # [..., 1, L]
        cached = self._prefix
        prefix_seconds = 0.0
        if (
            cached is None
            or cached.video is not video
            or cached.method is not method
            or cached.ids != prefix_ids
        ):
            state = engine.prefill(
                adapter,
                embeds[:, :split],
                positions[..., :split],
                prompt.visual_slots(),
                torch.zeros(0, dtype=torch.long),
                plan,
                reserve_tokens=prompt.length - split + reserve_tokens,
            )
            cached = self._prefix = _SharedPrefix(
                video, method, prefix_ids, state, engine.cache_lengths(state.cache)
            )
            prefix_seconds = state.seconds
        else:
            engine.truncate_cache(cached.state.cache, cached.lengths)  # drop the previous question
        prefix = cached.state
        if adapter.renumber_input_positions and positions.dim() == 2:  # contiguous after the cut
            start = prefix.position_ids.shape[-1]
            suffix_positions = torch.arange(start, start + prompt.length - split, device=positions.device)[
                None
            ]
        else:  # original positions, shifted past tokens appended after the visual block (a summary tail)
            suffix_positions = positions[..., split:] + prefix.appended
        state = engine.extend(
            adapter, prefix, embeds[:, split:], suffix_positions, reserve_tokens=reserve_tokens
        )
        state.seconds += prefix_seconds
        return state

    @torch.inference_mode()
    def answer(
        self, video: EncodedVideo, prompt_text: str, *, max_new_tokens: int = 32, method: Method | None = None
    ) -> Answer:
        """Answer one prompt about an encoded video (`method` overrides the pipeline's for this call).

        Questions about the same `EncodedVideo` asked one after the other share the prefill of the
        system prompt and visual block when the method allows it (see `_shared_prefix_prefill`); the
        `prefill_s` of those later questions then excludes the shared part.
        """
        method = method or self.method
        planned = self._plan(video.tokens, prompt_text, method)
        state = None
        if self.share_prefix:
            state = self._shared_prefix_prefill(video.tokens, method, planned, max_new_tokens)
        if state is None:
            state = self._prefill(
                video.tokens,
                prompt_text,
                stop_after_pruning=False,
                method=method,
                reserve_tokens=max_new_tokens,
                planned=planned,
            )
        generation = engine.greedy_decode(self.adapter, state, max_new_tokens=max_new_tokens)
        return Answer(
            text=self.adapter.decode_text(generation.token_ids),
            token_ids=generation.token_ids,
            stats=token_stats(state, video.tokens, self.dims),
            prefill_s=state.seconds,
            generate_s=generation.seconds,
        )

    @torch.inference_mode()
    def reduce(self, video: EncodedVideo, prompt_text: str) -> tuple[TokenStats, engine.PrefillResult]:
        """Run only up to the last pruning step: token statistics without generation (`compress`)."""
        state = self._prefill(video.tokens, prompt_text, stop_after_pruning=True)
        return token_stats(state, video.tokens, self.dims), state
