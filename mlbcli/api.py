"""The library API: one function per subcommand. The CLI (`mlbcli.cli`) is a thin layer over these.

Each function takes sources (files, folders, manifests, "-"), runs the batch with bounded decode
prefetch, writes one row per item through an atomic, resumable `ResultWriter`, and returns a
`RunSummary`. Nothing here prints: progress goes to an optional `Reporter`, details to `logging`.

    >>> from mlbcli import api
    >>> api.answer(["videos/"], question="What is the person doing?", method="fastv", keep=0.25,
    ...            out="answers.parquet")
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TextIO

from mlbcli import __version__
from mlbcli.errors import MlbError, UsageError
from mlbcli.progress import NullReporter, Reporter
from mlbcli.sources import Item, fingerprint, iter_items

if TYPE_CHECKING:
    from mlbcli.runner import EncodedVideo, Pipeline, TokenStats
    from mlbcli.video import Frames

log = logging.getLogger(__name__)

DEFAULT_SUMMARY_PROMPT = "Describe what happens in this video in a few sentences."
DEFAULT_COMPRESS_PROMPT = DEFAULT_SUMMARY_PROMPT  # query-aware methods need some prompt to score against
SAMPLE_DEFAULT_FRAMES = 32


@dataclass
class RunSummary:
    """What a batch did. `failed > 0` maps to exit code 1 in the CLI."""

    kind: str
    total: int = 0  # items found in the sources
    skipped: int = 0  # already done (resume)
    ok: int = 0
    failed: int = 0
    graded: int = 0  # items with ground truth
    correct: int = 0
    keep_sum: float = 0.0
    out: str | None = None
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)  # first few error messages, for the final table

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.graded if self.graded else None

    @property
    def mean_keep(self) -> float | None:
        return self.keep_sum / self.ok if self.ok else None

    def record(self, row: dict[str, Any]) -> None:
        if row.get("error"):
            self.failed += 1
            if len(self.errors) < 5:
                self.errors.append(f"{row.get('video_id')}: {row['error']}")
            return
        self.ok += 1
        if row.get("keep_realized") is not None:
            self.keep_sum += float(row["keep_realized"])
        if row.get("correct") is not None:
            self.graded += 1
            self.correct += int(bool(row["correct"]))


@dataclass(frozen=True)
class RunOptions:
    """Options shared by every batch command."""

    out: str | None = None  # output path, "-" for JSON lines on stdout; None = <kind>.parquet
    fmt: str | None = None  # parquet | jsonl | csv; None = from the suffix
    resume: bool = True
    overwrite: bool = False
    fail_fast: bool = False
    workers: int = 2  # background decode processes (0 = decode inline)
    prefetch: int = 4  # decoded videos buffered ahead of the model
    decode_timeout_s: float = 120.0


def _provenance(options: dict[str, Any]) -> dict[str, Any]:
    import importlib.metadata as md

    def version(name: str) -> str | None:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    return {
        "mlb_version": __version__,
        "torch_version": version("torch"),
        "transformers_version": version("transformers"),
        "options_json": json.dumps(options, sort_keys=True, default=str),
        "started_at_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _error_text(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text if isinstance(error, MlbError) else f"{type(error).__name__}: {text}"


def _decode_group(group: list[Item], num_frames: int | None, fps: float | None) -> Frames:
    """Worker-side decode of one video (top level, so decode processes can pickle it)."""
    from mlbcli.video import decode_frames

    return decode_frames(group[0].video_path, num_frames=num_frames, fps=fps)


def _open_writer(
    kind: str,
    schema: Any,
    run: RunOptions,
    skip_key: Sequence[str],
    unique_key: Sequence[str] | None,
    metadata: dict[str, str],
):
    from mlbcli.writers import ResultWriter

    out = run.out or f"{kind}.parquet"
    return ResultWriter(
        out,
        schema=schema,
        kind=kind,
        fmt=run.fmt,
        resume=run.resume,
        overwrite=run.overwrite,
        skip_key=skip_key,
        unique_key=unique_key,
        metadata=metadata,
    )


def _decoded(
    groups: list[list[Item]], run: RunOptions, num_frames: int | None, fps: float | None
) -> Iterator[tuple[list[Item], Any, float]]:
    """(group, Frames or exception, seconds waited) in input order, decoded ahead in the background."""
    from mlbcli.prefetch import prefetch

    decode = functools.partial(_decode_group, num_frames=num_frames, fps=fps)
    waited = time.perf_counter()
    for group, result in prefetch(
        groups, decode, workers=run.workers, depth=run.prefetch, timeout_s=run.decode_timeout_s
    ):
        yield group, result, time.perf_counter() - waited
        waited = time.perf_counter()


def _pending(items: list[Item], done: set[tuple], key: Callable[[Item], tuple]) -> list[Item]:
    return [item for item in items if key(item) not in done]


def _base_row(item: Item) -> dict[str, Any]:
    return {"video_id": item.video_id, "video_path": item.video_path, "origin": item.origin}


def _token_columns(
    pipe: Pipeline, stats: TokenStats, frames: Frames, video: EncodedVideo, decode_s: float, prefill_s: float
) -> dict[str, Any]:
    return {
        "model": pipe.adapter.model_id,
        "method": pipe.method.name,
        "keep_requested": pipe.method.options.keep,
        "frames": len(frames.indices),
        "frame_timestamps_s": [float(t) for t in frames.timestamps_s],
        **stats.as_row(),
        "segments": json.dumps(stats.info, default=str) if stats.info else None,
        "decode_warning": getattr(frames, "warning", None),
        "decode_s": decode_s,
        "encode_s": video.encode_s,
        "prefill_s": prefill_s,
    }


def _run_model_batch(
    kind: str,
    items: list[Item],
    pipe_factory: Callable[[], Pipeline],
    writer: Any,
    run: RunOptions,
    frames: int | None,
    fps: float | None,
    summary: RunSummary,
    reporter: Reporter,
    handle: Callable[..., dict[str, Any]],
    provenance: dict[str, Any],
    identity: Callable[[Item], dict[str, Any]],
    tokens_dir: str | None = None,
) -> None:
    """Shared loop of answer/compress/summarize: decode ahead, encode once per video, one row per item.

    `identity` gives the key columns of an item's row; error rows carry them too, so that a resumed run
    recognises (and retries) them instead of adding a second row.
    """
    broken = [item for item in items if item.error]
    for item in broken:  # broken manifest lines: an error row each, the batch goes on
        row = {**_base_row(item), **identity(item), "error": item.error, **provenance}
        writer.write(row)
        summary.record(row)
        reporter.advance(row)
    good = [item for item in items if not item.error]
    if not good:
        return
    pipe = pipe_factory()
    num_frames = frames if frames is not None or fps is not None else pipe.default_frames
    # All questions about one video form one group, even when a manifest interleaves videos: every
    # video is decoded and encoded once. Groups keep the order of each video's first appearance.
    by_video: dict[str, list[Item]] = {}
    for item in good:
        by_video.setdefault(item.video_path, []).append(item)
    groups = list(by_video.values())
    saved_groups: list[tuple[list[Item], Any]] = []
    if tokens_dir:  # videos whose tokens `compress --save-tokens` stored skip decoding and encoding
        from mlbcli.tokens_io import load_video_tokens

        remaining = []
        for group in groups:
            saved = load_video_tokens(tokens_dir, group[0], pipe.adapter.model_id)
            (saved_groups.append((group, saved)) if saved is not None else remaining.append(group))
        groups = remaining

    def emit(item: Item, row: dict[str, Any]) -> None:
        writer.write(row)
        summary.record(row)
        reporter.advance(row)
        if run.fail_fast and row.get("error"):
            raise MlbError(f"--fail-fast: {item.video_id}: {row['error']}")

    def run_group(
        group: list[Item],
        decoded: Any,
        video: Any,
        error: BaseException | None,
        decode_s: float,
        override: Any = None,
    ) -> None:
        for item in group:
            base = {**_base_row(item), **identity(item)}
            if error is not None:
                row = {**base, "error": _error_text(error), "decode_s": decode_s, **provenance}
            else:
                try:
                    row = {**base, **handle(pipe, item, decoded, video, decode_s, override), **provenance}
                except Exception as exc:
                    log.debug("%s failed for %s", kind, item.video_path, exc_info=True)
                    row = {**base, "error": _error_text(exc), **provenance}
            emit(item, row)

    for group, saved in saved_groups:
        from mlbcli.runner import EncodedVideo

        override, error = None, None
        if saved.reduced:
            override = saved.stored_reduction()
            if pipe.method.name != "none":
                error = UsageError(
                    f"{saved.path.name} holds tokens already reduced by {saved.method_name!r}; "
                    "use --method none with them, or save unreduced tokens (compress --method none)"
                )
        stand_in = _SavedFrames(list(range(len(saved.timestamps_s))), saved.timestamps_s)
        run_group(group, stand_in, EncodedVideo(saved.tokens, 0.0), error, 0.0, override)

    for group, decoded, decode_s in _decoded(groups, run, num_frames, fps):
        video = None
        error: BaseException | None = decoded if isinstance(decoded, BaseException) else None
        if error is None:
            try:
                video = pipe.encode(decoded)
            except Exception as exc:  # one bad video never stops the batch
                log.debug("encode failed for %s", group[0].video_path, exc_info=True)
                error = exc
        run_group(group, decoded, video, error, decode_s)


@dataclass
class _SavedFrames:
    """Frame bookkeeping of a video whose tokens were loaded from `--tokens` (nothing decoded)."""

    indices: list[int]
    timestamps_s: list[float]


def _pipeline_factory(model: str, method: str, device: str, dtype: str, method_kwargs: dict[str, Any]):
    def build() -> Pipeline:
        from mlbcli.runner import Pipeline

        return Pipeline(model, method=method, device=device, dtype=dtype, **method_kwargs)

    return build


def _method_kwargs(
    keep: float,
    layer: int,
    query: str,
    seed: int,
    debias: Sequence[str] | str | None,
    params: dict[str, Any] | None,
) -> dict[str, Any]:
    from mlbcli.selection import MethodOptions

    if isinstance(debias, str):
        debias = tuple(part.strip() for part in debias.split(",") if part.strip())
    kwargs = {
        "keep": keep,
        "layer": layer,
        "query": query,
        "seed": seed,
        "debias": tuple(debias) if debias is not None else None,
        "params": dict(params or {}),
    }
    MethodOptions(**kwargs)  # validate before any work (UsageError on bad values)
    return kwargs


def _validate_sampling(frames: int | None, fps: float | None) -> None:
    if frames is not None and frames < 1:
        raise UsageError(f"--frames must be >= 1, got {frames}")
    if fps is not None and fps <= 0:
        raise UsageError(f"--fps must be > 0, got {fps}")


def _seed_everything(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def answer(
    sources: Sequence[str],
    *,
    question: str | None = None,
    model: str,
    method: str = "none",
    keep: float = 1.0,
    layer: int = 2,
    query: str = "question",
    debias: Sequence[str] | str | None = None,
    params: dict[str, Any] | None = None,
    frames: int | None = None,
    fps: float | None = None,
    max_new_tokens: int = 32,
    device: str = "auto",
    dtype: str = "auto",
    seed: int = 0,
    tokens: str | None = None,
    run: RunOptions | None = None,
    reporter: Reporter | None = None,
    stdin: TextIO | None = None,
) -> RunSummary:
    """Answer every (video, question) item of `sources`; one row per item (see schema.ANSWER).

    `tokens`: a folder written by `compress --save-tokens`; videos found there are not decoded or
    encoded again (a stale file, whose video changed since, is ignored).
    """
    from mlbcli import schema
    from mlbcli.prompting import format_question, grade, parse_choice

    run = run or RunOptions()
    reporter = reporter or NullReporter()
    _validate_sampling(frames, fps)
    if max_new_tokens < 1:
        raise UsageError("--max-new-tokens must be >= 1")
    method_kwargs = _method_kwargs(keep, layer, query, seed, debias, params)
    options = {
        "kind": "answer",
        "model": model,
        "method": method,
        **method_kwargs,
        "frames": frames,
        "fps": fps,
        "max_new_tokens": max_new_tokens,
        "device": device,
        "dtype": dtype,
        "tokens": tokens,
        **asdict(run),
    }
    items = list(iter_items(sources, default_question=question, stdin=stdin, require_question=True))
    summary = RunSummary("answer", total=len(items))
    started = time.perf_counter()
    provenance = _provenance(options)

    def key(item: Item) -> tuple:
        return (item.video_id, item.question_id)

    def identity(item: Item) -> dict[str, Any]:
        return {
            "question_id": item.question_id,
            "question": item.question,
            "options": list(item.options) if item.options else None,
            "ground_truth": item.answer,
        }

    with _open_writer(
        "answer",
        schema.ANSWER,
        run,
        ("video_id", "question_id"),
        None,
        {"options": provenance["options_json"]},
    ) as writer:
        summary.out = str(writer.out) if hasattr(writer, "out") else run.out
        pending = _pending(items, writer.done_keys(), key)
        summary.skipped = len(items) - len(pending)
        reporter.start("answer", total=len(pending), skipped=summary.skipped)
        _seed_everything(seed)

        def handle(
            pipe: Pipeline,
            item: Item,
            decoded: Frames,
            video: EncodedVideo,
            decode_s: float,
            override: Any = None,
        ):
            prompt = format_question(item.question or "", item.options)
            result = pipe.answer(video, prompt, max_new_tokens=max_new_tokens, method=override)
            choice = parse_choice(result.text, item.options) if item.options else None
            return {
                "answer": result.text,
                "choice": choice,
                "correct": grade(result.text, choice, item.answer, item.options),
                **_token_columns(pipe, result.stats, decoded, video, decode_s, result.prefill_s),
                **(
                    {
                        "method": f"stored:{override.saved.method_name}",
                        "keep_requested": override.options.keep,
                    }
                    if override is not None
                    else {}
                ),
                "generate_s": result.generate_s,
                "generated_tokens": len(result.token_ids),
            }

        try:
            _run_model_batch(
                "answer",
                pending,
                _pipeline_factory(model, method, device, dtype, method_kwargs),
                writer,
                run,
                frames,
                fps,
                summary,
                reporter,
                handle,
                provenance,
                identity,
                tokens_dir=tokens,
            )
        finally:
            summary.seconds = time.perf_counter() - started
            reporter.finish(summary)
    return summary


def compress(
    sources: Sequence[str],
    *,
    question: str | None = None,
    model: str,
    method: str = "none",
    keep: float = 1.0,
    layer: int = 2,
    query: str = "question",
    debias: Sequence[str] | str | None = None,
    params: dict[str, Any] | None = None,
    frames: int | None = None,
    fps: float | None = None,
    device: str = "auto",
    dtype: str = "auto",
    seed: int = 0,
    save_tokens: str | None = None,
    bias_report: str | None = None,
    run: RunOptions | None = None,
    reporter: Reporter | None = None,
    stdin: TextIO | None = None,
) -> RunSummary:
    """Encode + token reduction + per-video token statistics, no generation (see schema.COMPRESS).

    Query-aware methods score tokens against the item's question, `question`, or a generic prompt.
    `save_tokens` stores the encoded visual tokens per video (safetensors) for `answer --tokens`.
    """
    from mlbcli import schema

    run = run or RunOptions()
    reporter = reporter or NullReporter()
    _validate_sampling(frames, fps)
    method_kwargs = _method_kwargs(keep, layer, query, seed, debias, params)
    options = {
        "kind": "compress",
        "model": model,
        "method": method,
        **method_kwargs,
        "frames": frames,
        "fps": fps,
        "device": device,
        "dtype": dtype,
        "save_tokens": save_tokens,
        **asdict(run),
    }
    items = list(iter_items(sources, default_question=question, stdin=stdin, require_question=False))
    summary = RunSummary("compress", total=len(items))
    started = time.perf_counter()
    provenance = _provenance(options)

    def key(item: Item) -> tuple:
        return (item.video_id, item.question_id)

    def identity(item: Item) -> dict[str, Any]:
        return {"question_id": item.question_id, "question": item.question}

    with _open_writer(
        "compress",
        schema.COMPRESS,
        run,
        ("video_id", "question_id"),
        None,
        {"options": provenance["options_json"]},
    ) as writer:
        pending = _pending(items, writer.done_keys(), key)
        summary.skipped = len(items) - len(pending)
        reporter.start("compress", total=len(pending), skipped=summary.skipped)
        _seed_everything(seed)

        def handle(
            pipe: Pipeline,
            item: Item,
            decoded: Frames,
            video: EncodedVideo,
            decode_s: float,
            override: Any = None,
        ):
            from mlbcli.prompting import format_question

            prompt = (
                format_question(item.question, item.options) if item.question else DEFAULT_COMPRESS_PROMPT
            )
            stats, state = pipe.reduce(video, prompt)
            tokens_file = None
            if save_tokens:
                from mlbcli.tokens_io import save_video_tokens

                tokens_file = str(save_video_tokens(save_tokens, item, video, decoded, pipe))
            if bias_report:
                from mlbcli.report import write_bias_report

                write_bias_report(bias_report, item, video, state, stats)
            return {
                **_token_columns(pipe, stats, decoded, video, decode_s, state.seconds),
                "tokens_file": tokens_file,
            }

        try:
            _run_model_batch(
                "compress",
                pending,
                _pipeline_factory(model, method, device, dtype, method_kwargs),
                writer,
                run,
                frames,
                fps,
                summary,
                reporter,
                handle,
                provenance,
                identity,
            )
        finally:
            summary.seconds = time.perf_counter() - started
            reporter.finish(summary)
    return summary


def summarize(
    sources: Sequence[str],
    *,
    prompt: str = DEFAULT_SUMMARY_PROMPT,
    model: str,
    method: str = "none",
    keep: float = 1.0,
    layer: int = 2,
    query: str = "question",
    debias: Sequence[str] | str | None = None,
    params: dict[str, Any] | None = None,
    frames: int | None = None,
    fps: float | None = None,
    max_new_tokens: int = 96,
    device: str = "auto",
    dtype: str = "auto",
    seed: int = 0,
    run: RunOptions | None = None,
    reporter: Reporter | None = None,
    stdin: TextIO | None = None,
) -> RunSummary:
    """Summarise every video not yet summarised, or changed since (size/mtime), for nightly cron runs.

    One row per video (see schema.SUMMARIZE); a changed video's new row replaces its old one.
    """
    from mlbcli import schema

    run = run or RunOptions()
    reporter = reporter or NullReporter()
    _validate_sampling(frames, fps)
    if not prompt.strip():
        raise UsageError("--prompt must not be empty")
    method_kwargs = _method_kwargs(keep, layer, query, seed, debias, params)
    options = {
        "kind": "summarize",
        "model": model,
        "method": method,
        **method_kwargs,
        "frames": frames,
        "fps": fps,
        "prompt": prompt,
        "max_new_tokens": max_new_tokens,
        "device": device,
        "dtype": dtype,
        **asdict(run),
    }
    items = [item for item in iter_items(sources, stdin=stdin, require_question=False)]
    # One row per video: a manifest listing a video twice (several questions) is summarised once.
    seen: set[str] = set()
    items = [i for i in items if not (i.video_id in seen or seen.add(i.video_id))]
    prints = {item.video_path: (fingerprint(item.video_path) if not item.error else "") for item in items}
    summary = RunSummary("summarize", total=len(items))
    started = time.perf_counter()
    provenance = _provenance(options)

    def key(item: Item) -> tuple:
        return (item.video_id, prints[item.video_path])

    def identity(item: Item) -> dict[str, Any]:
        return {"fingerprint": prints[item.video_path] or None, "prompt": prompt}

    with _open_writer(
        "summarize",
        schema.SUMMARIZE,
        run,
        ("video_id", "fingerprint"),
        ("video_id",),
        {"options": provenance["options_json"]},
    ) as writer:
        pending = _pending(items, writer.done_keys(), key)
        summary.skipped = len(items) - len(pending)
        reporter.start("summarize", total=len(pending), skipped=summary.skipped)
        _seed_everything(seed)

        def handle(
            pipe: Pipeline,
            item: Item,
            decoded: Frames,
            video: EncodedVideo,
            decode_s: float,
            override: Any = None,
        ):
            result = pipe.answer(video, prompt, max_new_tokens=max_new_tokens)
            return {
                "summary": result.text,
                **_token_columns(pipe, result.stats, decoded, video, decode_s, result.prefill_s),
                "generate_s": result.generate_s,
                "generated_tokens": len(result.token_ids),
            }

        try:
            _run_model_batch(
                "summarize",
                pending,
                _pipeline_factory(model, method, device, dtype, method_kwargs),
                writer,
                run,
                frames,
                fps,
                summary,
                reporter,
                handle,
                provenance,
                identity,
            )
        finally:
            summary.seconds = time.perf_counter() - started
            reporter.finish(summary)
    return summary


def sample(
    sources: Sequence[str],
    *,
    frames: int | None = None,
    fps: float | None = None,
    contact_sheet: str | None = None,
    run: RunOptions | None = None,
    reporter: Reporter | None = None,
    stdin: TextIO | None = None,
) -> RunSummary:
    """Decode and sample frames of every video; one row per video (see schema.SAMPLE). No model."""
    from pathlib import Path

    from mlbcli import schema

    run = run or RunOptions()
    reporter = reporter or NullReporter()
    _validate_sampling(frames, fps)
    num_frames = frames if frames is not None or fps is not None else SAMPLE_DEFAULT_FRAMES
    options = {
        "kind": "sample",
        "frames": num_frames,
        "fps": fps,
        "contact_sheet": contact_sheet,
        **asdict(run),
    }
    items = list(iter_items(sources, stdin=stdin, require_question=False))
    seen: set[str] = set()
    items = [i for i in items if not (i.video_id in seen or seen.add(i.video_id))]
    summary = RunSummary("sample", total=len(items))
    started = time.perf_counter()
    provenance = _provenance(options)
    with _open_writer(
        "sample", schema.SAMPLE, run, ("video_id",), None, {"options": provenance["options_json"]}
    ) as writer:
        pending = _pending(items, writer.done_keys(), lambda item: (item.video_id,))
        summary.skipped = len(items) - len(pending)
        reporter.start("sample", total=len(pending), skipped=summary.skipped)
        try:
            for item in (i for i in pending if i.error):
                row = {**_base_row(item), "error": item.error, **provenance}
                writer.write(row)
                summary.record(row)
                reporter.advance(row)
            good = [[i] for i in pending if not i.error]
            for group, decoded, decode_s in _decoded(good, run, num_frames, fps):
                item = group[0]
                row = {**_base_row(item), "decode_s": decode_s, **provenance}
                if isinstance(decoded, BaseException):
                    row["error"] = _error_text(decoded)
                else:
                    info = decoded.info
                    row.update(
                        num_frames_total=info.num_frames_total,
                        fps=info.fps,
                        duration_s=info.duration_s,
                        width=info.width,
                        height=info.height,
                        codec=info.codec,
                        backend=decoded.backend,
                        frame_indices=[int(i) for i in decoded.indices],
                        timestamps_s=[float(t) for t in decoded.timestamps_s],
                        decode_warning=decoded.warning,
                    )
                    if contact_sheet:
                        from mlbcli.video import contact_sheet as write_sheet

                        target = Path(contact_sheet) / (_safe_name(item.video_id) + ".jpg")
                        target.parent.mkdir(parents=True, exist_ok=True)
                        try:
                            write_sheet(decoded, target)
                            row["contact_sheet"] = str(target)
                        except Exception as exc:
                            row["error"] = f"contact sheet: {_error_text(exc)}"
                writer.write(row)
                summary.record(row)
                reporter.advance(row)
                if run.fail_fast and row.get("error"):
                    raise MlbError(f"--fail-fast: {item.video_id}: {row['error']}")
        finally:
            summary.seconds = time.perf_counter() - started
            reporter.finish(summary)
    return summary


def _safe_name(video_id: str) -> str:
    """A file name for `video_id` (which may hold folders): readable and collision-free."""
    import hashlib
    import re

    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", video_id).strip("_")[:80] or "video"
    return f"{readable}-{hashlib.sha1(video_id.encode()).hexdigest()[:8]}"


def iter_rows(path: str) -> Iterable[dict[str, Any]]:
    """Read back any mlb output file as dict rows (convenience for notebooks)."""
    from mlbcli.writers import read_results

    return read_results(path).to_pylist()


@dataclass
class FlopsPlan:
    """`mlb flops`: visual-token FLOPs of a method from the model config alone (no weights)."""

    model: str
    family: str
    method: str
    frames: int
    visual_tokens: int
    tokens_per_layer: list[int]
    flops: float
    flops_vanilla: float

    @property
    def ratio(self) -> float:
        return self.flops / self.flops_vanilla if self.flops_vanilla else 1.0


def flops(
    *,
    model: str,
    method: str = "none",
    keep: float = 1.0,
    layer: int = 2,
    frames: int | None = None,
    debias: Sequence[str] | str | None = None,
    params: dict[str, Any] | None = None,
) -> FlopsPlan:
    """Plan the visual-token LLM FLOPs of `method` (algorithms.md §2) from the checkpoint config."""
    from mlbcli.flops import LLMDims, tokens_per_layer, visual_flops
    from mlbcli.models import _load_config, adapter_class_for
    from mlbcli.selection import MethodOptions, get_method

    config = _load_config(model)
    adapter_cls = adapter_class_for(config)
    frames = frames or adapter_cls.default_frames
    if frames < 1:
        raise UsageError(f"--frames must be >= 1, got {frames}")
    dims = LLMDims.from_config(config.text_config if hasattr(config, "text_config") else config)
    if layer >= dims.num_layers:
        raise UsageError(f"--layer {layer} does not exist: the model has {dims.num_layers} decoder layers")
    n = frames * adapter_cls.tokens_per_frame(config)
    chosen = get_method(method, MethodOptions(**_method_kwargs(keep, layer, "question", 0, debias, params)))
    schedule = tokens_per_layer(n, chosen.nominal_schedule(n), dims.num_layers)
    return FlopsPlan(
        model=model,
        family=adapter_cls.family,
        method=method,
        frames=frames,
        visual_tokens=n,
        tokens_per_layer=schedule,
        flops=visual_flops(schedule, dims),
        flops_vanilla=visual_flops([n] * dims.num_layers, dims),
    )
