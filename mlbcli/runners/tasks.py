"""What the model commands do with one item, as plain objects that every runner shares.

A `Task` (answer, compress, summarize) turns an item and its encoded video into a `runner.Request`,
and the `runner.Result` back into the row's result columns. A `ModelWorker` owns a loaded `Pipeline`
and runs decoded videos in batches: frames of several videos through the vision tower together, then
their requests through `Pipeline.run` together, splitting a batch that runs out of GPU memory. The
local runner (`runners.local`) feeds it from background decode processes; the Ray runner calls the same
worker inside its actors. Nothing here knows about writers, resume or progress.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from mlbcli.errors import MlbError

if TYPE_CHECKING:
    from mlbcli.engine.pipeline import EncodedVideo, Pipeline, Request, Result
    from mlbcli.io.sources import Item
    from mlbcli.selection import Method

log = logging.getLogger(__name__)

#: The largest batch `--batch-size auto` tries on a GPU before halving on out-of-memory.
AUTO_BATCH_CUDA = 16


def error_text(error: BaseException) -> str:
    """One line for an error row: our own errors as they are, others with their type."""
    from mlbcli.io.sources import printable

    text = str(error).strip() or type(error).__name__
    text = text if isinstance(error, MlbError) else f"{type(error).__name__}: {text}"
    return printable(text)


@dataclass
class DecodedVideo:
    """One video's items after decoding (or loading saved tokens), on its way to the model.

    `frames` has `indices`, `timestamps_s` and `warning` (a `video.Frames`, or `SavedFrames`); `video`
    is set when the tokens are already encoded (saved by `compress --save-tokens`), and `override` is
    then the replayed reduction of those tokens. `error` (decode failure) makes every item an error row.
    """

    items: list[Item]
    frames: Any = None
    error: BaseException | None = None
    decode_s: float = 0.0
    video: EncodedVideo | None = None
    override: Method | None = None


@dataclass
class SavedFrames:
    """Frame bookkeeping of a video whose tokens were loaded from `--tokens` (nothing decoded)."""

    indices: list[int]
    timestamps_s: list[float]
    warning: str | None = None


class Task(Protocol):
    """Per-item logic of one model command."""

    def request(self, pipe: Pipeline, item: Item, video: EncodedVideo, override: Method | None) -> Request:
        """The model request of `item` about its encoded `video`."""
        ...

    def row(
        self, pipe: Pipeline, item: Item, decoded: DecodedVideo, video: EncodedVideo, result: Result
    ) -> dict[str, Any]:
        """The row's result columns from a successful `result`."""
        ...


def token_columns(
    pipe: Pipeline, decoded: DecodedVideo, video: EncodedVideo, result: Result
) -> dict[str, Any]:
    """Columns every model command writes: what ran, on which frames, the token statistics, timings."""
    assert result.stats is not None
    override, frames = decoded.override, decoded.frames
    method = override or pipe.method
    stored = getattr(override, "saved", None)
    return {
        "model": pipe.adapter.model_id,
        "method": f"stored:{stored.method_name}" if stored is not None else method.name,
        "keep_requested": method.keep_requested,
        "frames": len(frames.indices),
        "frame_timestamps_s": [float(t) for t in frames.timestamps_s],
        "input_note": video.tokens.input_note,
        **result.stats.as_row(),
        "segments": json.dumps(result.stats.info, default=str) if result.stats.info else None,
        "decode_warning": frames.warning,
        "encode_s": video.encode_s,
        "prefill_s": result.prefill_s,
    }


def benchmark_profile(adapter: Any) -> str | None:
    """The lmms-eval prompt profile the adapter's family is evaluated with (`Benchmark.prompt`), None for
    each task's default. The one place outside `models/` that asks an adapter (class or instance) for it."""
    profile = adapter.prompt_profile
    return None if profile == "default" else profile


@dataclass
class AnswerTask:
    """`mlb answer`: the item's question (multiple choice formatted and graded when it has options).

    `benchmark` (a `benchmarks.Benchmark`) renders the prompt as lmms-eval does for that benchmark and
    grades an unparsable reply by its policy (`seed` seeds its random guesses); None is the generic
    layout, an unparsable reply counting wrong. Rows record the exact text prompt and `parse_failed`.
    """

    max_new_tokens: int = 32
    benchmark: Any = None
    seed: int = 0
    grader: str | None = None  # "lmms-eval" / "mlb" (`mlbcli.eval.grading`); None: the benchmark's default

    def prompt(self, pipe: Pipeline, item: Item) -> str:
        """The text given to the model (inside the family's chat template)."""
        from mlbcli.eval.prompting import format_question

        if self.benchmark is not None:
            return self.benchmark.prompt(item.question or "", item.options, benchmark_profile(pipe.adapter))
        return format_question(item.question or "", item.options, pipe.adapter.mc_post_prompt)

    def request(self, pipe: Pipeline, item: Item, video: EncodedVideo, override: Method | None) -> Request:
        from mlbcli.engine.pipeline import Request

        return Request(video, self.prompt(pipe, item), self.max_new_tokens, method=override)

    def row(
        self, pipe: Pipeline, item: Item, decoded: DecodedVideo, video: EncodedVideo, result: Result
    ) -> dict[str, Any]:
        from mlbcli.eval.grading import grade_reply

        text = result.text or ""
        graded = grade_reply(
            text,
            question=item.question,
            options=item.options,
            ground_truth=item.answer,
            benchmark=self.benchmark.name if self.benchmark is not None else None,
            grader=self.grader,
            seed=self.seed,
            video_id=item.video_id,
            question_id=item.question_id,
        )
        return {
            "answer": text,
            **graded,
            "prompt": self.prompt(pipe, item),
            **token_columns(pipe, decoded, video, result),
            "generate_s": result.generate_s,
            "generated_tokens": len(result.token_ids),
        }


#: The prompt query-aware methods score against when `compress` has no question.
DEFAULT_SUMMARY_PROMPT = "Describe what happens in this video in a few sentences."
DEFAULT_COMPRESS_PROMPT = DEFAULT_SUMMARY_PROMPT


@dataclass
class CompressTask:
    """`mlb compress`: token reduction and statistics only; optionally saves tokens and bias reports."""

    save_tokens: str | None = None
    bias_report: str | None = None

    def request(self, pipe: Pipeline, item: Item, video: EncodedVideo, override: Method | None) -> Request:
        from mlbcli.engine.pipeline import Request
        from mlbcli.eval.prompting import format_question

        prompt = (
            format_question(item.question, item.options, pipe.adapter.mc_post_prompt)
            if item.question
            else DEFAULT_COMPRESS_PROMPT
        )
        return Request(video, prompt, generate=False, method=override)

    def row(
        self, pipe: Pipeline, item: Item, decoded: DecodedVideo, video: EncodedVideo, result: Result
    ) -> dict[str, Any]:
        tokens_file = None
        if self.save_tokens:
            from mlbcli.engine.saved_tokens import save_video_tokens

            tokens_file = str(save_video_tokens(self.save_tokens, item, video, decoded.frames, pipe))
        if self.bias_report:
            from mlbcli.io.bias_report import write_bias_report

            assert result.state is not None and result.stats is not None
            write_bias_report(self.bias_report, item, video, result.state, result.stats)
        return {**token_columns(pipe, decoded, video, result), "tokens_file": tokens_file}


@dataclass
class SummarizeTask:
    """`mlb summarize`: one free-text summary per video."""

    prompt: str = DEFAULT_SUMMARY_PROMPT
    max_new_tokens: int = 96

    def request(self, pipe: Pipeline, item: Item, video: EncodedVideo, override: Method | None) -> Request:
        from mlbcli.engine.pipeline import Request

        return Request(video, self.prompt, self.max_new_tokens, method=override)

    def row(
        self, pipe: Pipeline, item: Item, decoded: DecodedVideo, video: EncodedVideo, result: Result
    ) -> dict[str, Any]:
        return {
            "summary": result.text or "",
            **token_columns(pipe, decoded, video, result),
            "generate_s": result.generate_s,
            "generated_tokens": len(result.token_ids),
        }


def is_out_of_memory(error: BaseException) -> bool:
    """A GPU (or other accelerator) out-of-memory error: worth retrying with a smaller batch."""
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return isinstance(error, oom) or (isinstance(error, RuntimeError) and "out of memory" in str(error))


def _release_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


OUT_OF_MEMORY_ADVICE = (
    "out of memory on a single item: lower --frames (or --max-pixels where the family takes it), prune before the LLM "
    "(--keep with a pre-LLM method), or use --dtype bf16"
)


class ModelWorker:
    """Runs decoded videos through a loaded pipeline in batches of up to `batch_size` items.

    `batch_size=None` means auto: 1 on CPU; on CUDA start at `AUTO_BATCH_CUDA` and halve whenever a
    batch runs out of memory (the size that fit is kept for the rest of the run). A batch that runs out
    of memory is split in two and retried; one item that still does not fit becomes an error row.
    """

    def __init__(self, pipe: Pipeline, task: Task, asked: dict[str, Any], batch_size: int | None = None):
        self.pipe = pipe
        self.task = task
        self.asked = asked  # what was asked, also on failed rows (so failures group by configuration)
        if batch_size is None:
            batch_size = AUTO_BATCH_CUDA if pipe.adapter.device.type == "cuda" else 1
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.batch_size = batch_size

    def batches(self, decoded: Iterable[DecodedVideo]) -> Iterator[list[DecodedVideo]]:
        """Group videos in input order until they hold at least `batch_size` items."""
        pending: list[DecodedVideo] = []
        for video in decoded:
            pending.append(video)
            if sum(len(v.items) for v in pending) >= self.batch_size:
                yield pending
                pending = []
        if pending:
            yield pending

    def process(self, videos: Sequence[DecodedVideo]) -> Iterator[tuple[Item, dict[str, Any]]]:
        """(item, row columns) for every item of `videos`, in order; never raises for one item."""
        encoded = self._encode([v for v in videos if v.error is None and v.video is None])
        work: list[tuple[Item, DecodedVideo, EncodedVideo]] = []
        failed: dict[int, dict[str, Any]] = {}  # id(item) -> error row
        for video in videos:
            error = video.error
            enc = video.video if video.video is not None else encoded.get(id(video))
            if isinstance(enc, BaseException):
                error = enc
            for item in video.items:
                if error is not None:
                    failed[id(item)] = self._failed(video, error)
                else:
                    assert enc is not None
                    work.append((item, video, enc))
        rows = self._run(work)
        for video in videos:
            for item in video.items:
                yield item, failed[id(item)] if id(item) in failed else rows[id(item)]

    def _failed(self, video: DecodedVideo, error: BaseException) -> dict[str, Any]:
        """The error row of an item of `video`: what was asked, and the frames it really got.

        `frames` counts the frames the model got: null for a video that was never decoded, or whose
        saved tokens were refused (not the requested `--frames`, which would claim frames no model saw).
        """
        indices = None if video.error is not None else getattr(video.frames, "indices", None)
        frames = None if indices is None else len(indices)
        return {**self.asked, "frames": frames, "error": error_text(error), "decode_s": video.decode_s}

    def _encode(self, videos: list[DecodedVideo]) -> dict[int, Any]:
        """id(video) -> EncodedVideo or the exception; together when possible, alone to isolate errors."""
        out: dict[int, Any] = {}
        for start in range(0, len(videos), max(1, self.batch_size)):
            chunk = videos[start : start + self.batch_size]
            try:
                for video, enc in zip(chunk, self.pipe.encode_many([v.frames for v in chunk]), strict=True):
                    out[id(video)] = enc
                continue
            except Exception as exc:
                if is_out_of_memory(exc):
                    _release_memory()
                log.debug("batched encode failed, encoding one by one", exc_info=True)
            for video in chunk:
                try:
                    out[id(video)] = self.pipe.encode(video.frames)
                except Exception as exc:
                    if is_out_of_memory(exc):
                        _release_memory()
                        exc = MlbError(OUT_OF_MEMORY_ADVICE + f" ({error_text(exc)})")
                    log.debug("encode failed for %s", video.items[0].video_path, exc_info=True)
                    out[id(video)] = exc
        return out

    def _run(self, work: list[tuple[Item, DecodedVideo, EncodedVideo]]) -> dict[int, dict[str, Any]]:
        rows: dict[int, dict[str, Any]] = {}
        requests: list[Any] = []
        for item, video, enc in work:
            try:
                requests.append(self.task.request(self.pipe, item, enc, video.override))
            except Exception as exc:
                rows[id(item)] = self._failed(video, exc)
                requests.append(None)
        todo = [i for i, request in enumerate(requests) if request is not None]
        results: dict[int, Any] = {}
        start = 0
        while start < len(todo):
            chunk = todo[start : start + self.batch_size]
            start += len(chunk)
            self._run_chunk(chunk, requests, results)
        for i in todo:
            item, video, enc = work[i]
            result = results[i]
            if result.error is None:
                try:
                    rows[id(item)] = {
                        **self.task.row(self.pipe, item, video, enc, result),
                        "decode_s": video.decode_s,
                    }
                    continue
                except Exception as exc:  # e.g. a bias report that cannot be written
                    result.error = exc
            log.debug("failed on %s", item.video_path, exc_info=(type(result.error), result.error, None))
            rows[id(item)] = self._failed(video, result.error)
        return rows

    def _run_chunk(self, chunk: list[int], requests: list[Any], results: dict[int, Any]) -> None:
        """Run requests `chunk` together; on out-of-memory, halve the batch size and retry in halves."""
        oom: BaseException
        try:
            out = self.pipe.run([requests[i] for i in chunk])
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            oom = exc
        else:
            oom_rows = [r.error for r in out if r.error is not None and is_out_of_memory(r.error)]
            if not oom_rows or len(chunk) == 1:
                for i, result in zip(chunk, out, strict=True):
                    if result.error is not None and is_out_of_memory(result.error):
                        result.error = MlbError(OUT_OF_MEMORY_ADVICE + f" ({error_text(result.error)})")
                    results[i] = result
                return
            oom = oom_rows[0]
        _release_memory()
        if len(chunk) == 1:
            from mlbcli.engine.pipeline import Result

            results[chunk[0]] = Result(error=MlbError(OUT_OF_MEMORY_ADVICE + f" ({error_text(oom)})"))
            return
        half = len(chunk) // 2
        self.batch_size = max(1, min(self.batch_size, half))
        log.warning("out of memory with a batch of %d; retrying in batches of %d", len(chunk), half)
        self._run_chunk(chunk[:half], requests, results)
        self._run_chunk(chunk[half:], requests, results)
