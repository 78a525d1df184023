"""The request-level inference API: `Pipeline.run(requests) -> results`.

A request is one encoded video x one prompt. `Pipeline` loads a model once and runs batches of
requests: each is planned (its method's keep schedule), then the batch is prefilled together (every row
with its own keep set, see `engine`), and decoded together. The batch harness of `mlbcli.runners` (local
and Ray) calls `run`; notebooks may use the one-request helpers `answer` and `reduce`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mlbcli.engine import batch as engine
from mlbcli.engine.flops import LLMDims
from mlbcli.engine.stats import TokenStats, decode_kv_ratio, token_stats
from mlbcli.errors import MlbError, UsageError
from mlbcli.models import saliency as tower_saliency
from mlbcli.models.base import sampled_fps
from mlbcli.selection import Method, MethodOptions, get_method
from mlbcli.selection.base import PlanContext

if TYPE_CHECKING:
    from mlbcli.io.sampling import FrameRule
    from mlbcli.io.video import Frames
    from mlbcli.models.base import VideoTokens
    from mlbcli.models.contract import Adapter

log = logging.getLogger(__name__)


@dataclass
class Request:
    """One question about one encoded video."""

    video: EncodedVideo
    prompt: str  # the full text prompt (question, options and post-prompt already formatted)
    max_new_tokens: int = 32
    generate: bool = True  # False: stop after the last pruning step (`compress`: statistics only)
    method: Method | None = None  # overrides the pipeline's method (replayed saved reductions)


@dataclass
class Result:
    """What `Pipeline.run` returns for one request: an answer and its statistics, or the error."""

    text: str | None = None
    token_ids: list[int] = field(default_factory=list)
    stats: TokenStats | None = None
    prefill_s: float = 0.0  # this request's share of the batch's prefill time
    generate_s: float = 0.0  # its share of each decode step it took part in
    state: engine.PrefillResult | None = None  # the prefill (bias reports read its scores)
    error: Exception | None = None


@dataclass
class Answer:
    text: str
    token_ids: list[int]
    stats: TokenStats
    prefill_s: float
    generate_s: float


@dataclass
class EncodedVideo:
    tokens: VideoTokens
    encode_s: float


@dataclass
class _Planned:
    """A request after planning: its prompt, keep schedule and model inputs."""

    index: int
    request: Request
    method: Method
    prompt: Any
    context: PlanContext
    plan: engine.PrunePlan
    inputs: engine.ModelInputs


@dataclass
class _Prefix:
    """A prefilled system prompt + visual block, kept for the next questions about the same video."""

    key: tuple[int, int, tuple[int, ...]]  # (id of the video tokens, id of the method, prefix token ids)
    video: VideoTokens  # held so that the id in `key` cannot be reused by another object
    batch: engine.Batch  # one row


class Pipeline:
    """A loaded model plus a token-reduction method. Reuse one per process.

    >>> pipe = Pipeline("llava-hf/llava-onevision-qwen2-0.5b-ov-hf", method=get_method("fastv", opts))
    >>> video = pipe.encode(decode_frames("clip.mp4", num_frames=pipe.default_frames))
    >>> [r.text for r in pipe.run([Request(video, "What is the person doing?")])]
    """

    def __init__(
        self,
        model: str | Adapter,
        *,
        method: str | Method = "none",
        device: str = "auto",
        dtype: str = "auto",
        adapter_options: dict[str, Any] | None = None,
        share_prefix: bool = True,
        strict_keep: bool = False,
        **method_options: Any,
    ):
        from mlbcli.models import load_adapter

        self.adapter: Adapter
        if isinstance(model, str):
            self.adapter = load_adapter(model, device=device, dtype=dtype, **(adapter_options or {}))
        else:
            if device != "auto" or dtype != "auto" or adapter_options:
                raise UsageError("device, dtype and adapter_options apply when loading a model by name")
            self.adapter = model
        if isinstance(method, Method):
            if method_options:
                raise UsageError(
                    f"method options ({', '.join(sorted(method_options))}) given with a Method object: "
                    "set them in its MethodOptions instead"
                )
            self.method = method
        else:
            self.method = get_method(method, MethodOptions(**method_options))
        text = self.adapter.text_config
        self.dims = LLMDims.from_config(
            text,
            self.adapter.layer_kinds(text),
            [self.adapter.kv_source(i) for i in range(len(self.adapter.layers))],  # shared KV: no K/V cost
        )
        self.share_prefix = share_prefix
        # A row whose method missed its budget (a `keep_note`) becomes an error row, before decoding.
        self.strict_keep = strict_keep
        self._prefix: _Prefix | None = None  # the last video's prefilled prefix (one at a time)
        self.method.check_layer(self.dims.num_layers)

    @property
    def default_frames(self) -> int:
        return self.adapter.default_frames

    @property
    def frame_rule(self) -> FrameRule:
        """The family's frame-count rule, which the decoder applies to `--frames` / `--fps`."""
        return self.adapter.frame_rule

    # -- vision ------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode(self, frames: Frames | np.ndarray) -> EncodedVideo:
        """Vision tower + projector + pooling, once per video (reused by every question)."""
        return self.encode_many([frames])[0]

    @torch.inference_mode()
    def encode_many(self, videos: Sequence[Frames | np.ndarray]) -> list[EncodedVideo]:
        """Encode several videos in one vision-tower call (`Adapter.encode_batch`).

        `encode_s` of each is its share of the call, proportional to its frames.
        """
        arrays = [frames if isinstance(frames, np.ndarray) else frames.array for frames in videos]
        started = time.perf_counter()
        inputs = [self.adapter.preprocess(array) for array in arrays]
        # the tower's attention only for a method that reads it (`--saliency tower`, its default)
        with tower_saliency.requested(self.method.saliency == "tower"):
            tokens = self.adapter.encode_batch(inputs)
        seconds = time.perf_counter() - started
        total = sum(len(array) for array in arrays) or 1
        encoded = []
        for frames, array, video in zip(videos, arrays, tokens, strict=True):
            if not isinstance(frames, np.ndarray):
                video.timestamps_s = list(frames.timestamps_s)
                video.frame_indices = [int(i) for i in frames.indices]
                video.native_fps = float(frames.info.fps)
                video.sampled_fps = sampled_fps(
                    len(frames.indices), frames.info.num_frames_total, frames.info.fps
                )
            # the family's rules, for the row's `input_note`: the decoder's (frame count), then the adapter's
            notes = (getattr(frames, "note", None), self.adapter.input_note(*array.shape[:3]))
            video.input_note = "; ".join(note for note in notes if note) or None
            encoded.append(EncodedVideo(video, seconds * len(array) / total))
        return encoded

    # -- planning ------------------------------------------------------------------------------------------
    def plan_context(
        self, prompt_text: str, prompt: Any, *, diagnostics: bool = False, mrope: bool = False
    ) -> PlanContext:
        """The `PlanContext` of one request: family limits, and probe passes with the same question."""
        adapter = self.adapter

        def probe(subset: VideoTokens, layer: int, query: str) -> torch.Tensor:
            sub_prompt = adapter.build_prompt(prompt_text, subset)
            step_layer = int(layer)

            def keep_all(ctx: engine.LayerContext) -> engine.LayerKeep:
                return engine.LayerKeep(
                    keep=torch.arange(ctx.visual_slots.numel(), device=ctx.visual_slots.device)
                )

            plan = engine.PrunePlan(
                steps={step_layer: keep_all}, needs_scores=frozenset({step_layer}), query=query
            )
            batch, errors = engine.prefill_batch(
                adapter,
                [adapter.model_inputs(sub_prompt, subset)],  # all of the row, DeepStack residuals too
                [plan],
                stop_after_pruning=True,
                stop_before_layer=step_layer,
            )
            if errors:
                raise errors[0]
            scores = batch.rows[0].scores  # {the layer read: scores}: K - 1, or a hybrid's full layer
            return scores[max(scores)]

        return PlanContext(
            image_llm=bool(adapter.renumber_input_positions),
            context_limit=adapter.context_limit,
            text_tokens=prompt.length - prompt.num_visual,
            probe_fn=probe,
            diagnostics=diagnostics,
            mrope=mrope,
        )

    def _plan(self, index: int, request: Request) -> _Planned:
        """Prompt, keep schedule and model inputs of one request; probe passes, if any, run here."""
        method = request.method or self.method
        video = request.video.tokens
        self.adapter.check_prompt_text(request.prompt)  # cheap bound before tokenising megabytes
        prompt = self.adapter.build_prompt(request.prompt, video)
        inputs = self.adapter.model_inputs(prompt, video)
        context = self.plan_context(
            request.prompt,
            prompt,
            diagnostics=not request.generate,  # `compress`: attention methods probe even at keep 1.0
            mrope=inputs.position_ids.dim() == 3,
        )
        plan = method.plan_with_context(method.saliency_view(video), prompt, context)
        return _Planned(index, request, method, prompt, context, plan, inputs)

    def _prefix_split(self, planned: _Planned) -> int | None:
        """Where a request's prompt splits into a cacheable prefix, or None when it cannot share one.

        Several questions about one video share everything up to the end of the visual block. When the
        keep schedule cannot depend on the question (no pruning at all, or a question-agnostic method
        that only prunes before the LLM), that prefix is prefilled once per video and each question only
        runs its own tokens on top of the cached KV (`engine.extend_batch`). Attention methods pick
        tokens by the question's attention, so each of their questions runs the whole prefill.
        The prefix ends one token after the visual block (template text such as "\n" or
        <|vision_end|>), so that tokens a method appends after the block get that token's original
        position, exactly as in an unsplit prefill.
        """
        plan, prompt = planned.plan, planned.prompt
        if not self.share_prefix or not planned.request.generate or planned.context.probe_passes:
            return None
        if planned.inputs.token_inputs is not None:  # per-token layer inputs: the suffix would need them
            return None
        if plan.contiguous_positions:  # the suffix would continue the original numbering
            return None
        if plan.steps and (planned.method.query_aware or set(plan.steps) != {0} or plan.needs_scores):
            return None
        split = prompt.visual_start + prompt.num_visual + prompt.num_extra + 1
        return split if split < prompt.length else None

    # -- running -------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def run(self, requests: Sequence[Request]) -> list[Result]:
        """Run a batch of requests; one `Result` per request, in order (failures carry `error`).

        The batch is prefilled and decoded together; every row gets the tokens it gets alone (fp32).
        A request that fails (too long for the context, a method error) fails alone.
        """
        results = [Result() for _ in requests]
        planned: list[_Planned] = []
        for index, request in enumerate(requests):
            try:
                planned.append(self._plan(index, request))
            except Exception as exc:
                log.debug("planning failed", exc_info=True)
                results[index].error = exc
        reduce_only = [p for p in planned if not p.request.generate]
        shared = {p.index: split for p in planned if (split := self._prefix_split(p)) is not None}
        full = [p for p in planned if p.request.generate and p.index not in shared]
        by_index = {p.index: p for p in planned}

        if reduce_only:
            batch, errors = engine.prefill_batch(
                self.adapter,
                [p.inputs for p in reduce_only],
                [p.plan for p in reduce_only],
                stop_after_pruning=True,
            )
            self._collect(results, reduce_only, batch, errors)
        batches = []
        if full:
            batch, errors = engine.prefill_batch(
                self.adapter,
                [p.inputs for p in full],
                [p.plan for p in full],
                reserve_tokens=[p.request.max_new_tokens for p in full],
            )
            self._record_errors(results, full, errors)
            batch.index = [full[i].index for i in batch.index]
            batches.append(batch)
        if shared:
            batch, errors = self._extend_shared([by_index[i] for i in shared], shared)
            for index, error in errors.items():
                results[index].error = error
            batches.append(batch)
        decoding = engine.concat_batches(batches) if batches else None
        if decoding is not None and len(decoding) and self.strict_keep:
            decoding = self._strict(results, by_index, decoding)
        if decoding is not None and len(decoding):
            generations = engine.greedy_decode_batch(
                self.adapter,
                decoding,
                max_new_tokens=[by_index[i].request.max_new_tokens for i in decoding.index],
            )
            for index, state, generation in zip(decoding.index, decoding.rows, generations, strict=True):
                p = by_index[index]
                self._finish(results[index], p, state)
                results[index].text = self.adapter.decode_text(generation.token_ids)
                results[index].token_ids = generation.token_ids
                results[index].generate_s = generation.seconds
                results[index].stats.decode_kv_ratio = decode_kv_ratio(state, generation, self.dims)  # type: ignore[union-attr]
        return results

    def _finish(self, result: Result, p: _Planned, state: engine.PrefillResult) -> None:
        state.probe_passes = list(p.context.probe_passes)
        result.state = state
        result.stats = token_stats(state, p.request.video.tokens, self.dims, p.method)
        result.prefill_s = state.seconds
        if self.strict_keep and result.stats.keep_note:
            result.error = MlbError(f"--strict-keep: {result.stats.keep_note}")

    def _strict(
        self, results: list[Result], by_index: dict[int, _Planned], batch: engine.Batch
    ) -> engine.Batch:
        """`--strict-keep`: rows that missed their budget become errors before any decoding."""
        passing = []
        for row, (index, state) in enumerate(zip(batch.index, batch.rows, strict=True)):
            p = by_index[index]
            stats = token_stats(state, p.request.video.tokens, self.dims, p.method)
            if stats.keep_note:
                results[index].error = MlbError(f"--strict-keep: {stats.keep_note}")
            else:
                passing.append(row)
        return batch if len(passing) == len(batch) else batch.select(passing)

    def _record_errors(
        self, results: list[Result], rows: list[_Planned], errors: dict[int, Exception]
    ) -> None:
        for position, error in errors.items():
            results[rows[position].index].error = error

    def _collect(
        self, results: list[Result], rows: list[_Planned], batch: engine.Batch, errors: dict[int, Exception]
    ) -> None:
        self._record_errors(results, rows, errors)
        for position, state in zip(batch.index, batch.rows, strict=True):
            self._finish(results[rows[position].index], rows[position], state)

    def _extend_shared(
        self, rows: list[_Planned], splits: dict[int, int]
    ) -> tuple[engine.Batch, dict[int, Exception]]:
        """Prefill each distinct prefix once (one batch), fan it out to its questions, extend them."""
        adapter = self.adapter
        groups: dict[tuple[int, int, tuple[int, ...]], list[_Planned]] = {}
        for p in rows:
            split = splits[p.index]
            key = (id(p.request.video.tokens), id(p.method), tuple(p.prompt.input_ids[0, :split].tolist()))
            groups.setdefault(key, []).append(p)
        cached = self._prefix if self._prefix is not None and self._prefix.key in groups else None
        to_compute = [key for key in groups if cached is None or key != cached.key]
        errors: dict[int, Exception] = {}
        parts: list[engine.Batch] = []
        keys: list[tuple[int, int, tuple[int, ...]]] = []
        if cached is not None:
            parts.append(cached.batch)
            keys.append(cached.key)
        if to_compute:
            computed = self._prefill_prefixes([groups[key] for key in to_compute], splits, errors)
            parts.append(computed)
            keys.extend(to_compute[position] for position in computed.index)
        prefixes = engine.concat_batches(parts) if len(parts) > 1 else parts[0]
        if not len(prefixes):
            return prefixes, errors
        row_of = {key: row for row, key in enumerate(keys)}
        fan_out, suffixes, members = [], [], []
        for key, group in groups.items():
            if key not in row_of:
                continue
            row = row_of[key]
            share = (
                0.0 if cached is not None and key == cached.key else prefixes.rows[row].seconds / len(group)
            )
            for p in group:
                split = splits[p.index]
                prefix = prefixes.rows[row]
                fan_out.append(row)
                members.append((p, share))
                suffixes.append(
                    (
                        p.inputs.embeds[:, split:],
                        adapter.suffix_positions(
                            prefix.position_ids, p.inputs.position_ids[..., split:], prefix.appended
                        ),
                    )
                )
        last_key = list(groups)[-1]  # the video most likely to continue in the next call
        if last_key in row_of:
            self._prefix = _Prefix(
                last_key, groups[last_key][0].request.video.tokens, prefixes.select([row_of[last_key]])
            )
        expanded = prefixes.select(fan_out)
        for position, (_, share) in enumerate(members):
            expanded.rows[position] = dataclasses.replace(expanded.rows[position], seconds=share)
        expanded.index = [p.index for p, _ in members]
        extended, failed = engine.extend_batch(
            adapter, expanded, suffixes, reserve_tokens=[p.request.max_new_tokens for p, _ in members]
        )
        errors.update(failed)
        return extended, errors

    def _prefill_prefixes(
        self, groups: list[list[_Planned]], splits: dict[int, int], errors: dict[int, Exception]
    ) -> engine.Batch:
        """One batch of the prefixes of `groups` (questions sharing a video and prefix), each row cut
        after its visual block; a prefix that fails becomes the error of each of its questions."""
        prefix_inputs = []
        for group in groups:
            first = group[0]
            split = splits[first.index]
            inputs = first.inputs
            prefix_inputs.append(
                dataclasses.replace(  # the same row, cut after the visual block (residuals included)
                    inputs,
                    embeds=inputs.embeds[:, :split],
                    position_ids=inputs.position_ids[..., :split],
                    query_slots=torch.zeros(0, dtype=torch.long),
                )
            )
        computed, failed = engine.prefill_batch(
            self.adapter, prefix_inputs, [group[0].plan for group in groups]
        )
        for position, error in failed.items():  # the prefix cannot run: none of its questions can
            for p in groups[position]:
                errors[p.index] = error
        return computed

    # -- one request -------------------------------------------------------------------------------------
    def answer(
        self, video: EncodedVideo, prompt_text: str, *, max_new_tokens: int = 32, method: Method | None = None
    ) -> Answer:
        """Answer one prompt about an encoded video (`method` overrides the pipeline's for this call).

        Questions about the same `EncodedVideo` asked one after the other share the prefill of the
        system prompt and visual block when the method allows it; the `prefill_s` of those later
        questions then excludes the shared part. Raises the request's error.
        """
        result = self.run([Request(video, prompt_text, max_new_tokens, method=method)])[0]
        if result.error is not None:
            raise result.error
        assert result.stats is not None and result.text is not None
        return Answer(result.text, result.token_ids, result.stats, result.prefill_s, result.generate_s)

    def reduce(self, video: EncodedVideo, prompt_text: str) -> tuple[TokenStats, engine.PrefillResult]:
        """Run only up to the last pruning step: token statistics without generation (`compress`)."""
        result = self.run([Request(video, prompt_text, generate=False)])[0]
        if result.error is not None:
            raise result.error
        assert result.stats is not None and result.state is not None
        return result.stats, result.state
