"""The library API: one function per subcommand. The CLI (`mlbcli.cli.app`) is a thin layer over these.

Each function takes sources (files, folders, manifests, "-"), runs the batch with bounded decode
prefetch, writes one row per item through an atomic, resumable `ResultWriter`, and returns a
`RunSummary`. Nothing here prints: progress goes to an optional `Reporter`, details to `logging`.

    >>> from mlbcli import api
    >>> api.answer(["videos/"], question="What is the person doing?", method="fastv", keep=0.25,
    ...            out="answers.parquet")
"""

from __future__ import annotations

import collections
import functools
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TextIO

from mlbcli import __version__
from mlbcli.errors import MlbError, UsageError
from mlbcli.io.sources import Item, fingerprint, iter_items, printable
from mlbcli.options import (
    REQUIRED_ON_RESUME,
    RESULT_OPTIONS,
    UNUSED_WHEN_NONE,
    ModelSpec,
    RunOptions,
    _inputs_version,
    _model_spec,
    _validate_sampling,
)
from mlbcli.runners.progress import NullReporter, Reporter, model_loading_text, report_status
from mlbcli.runners.tasks import DEFAULT_SUMMARY_PROMPT  # the one definition (tasks imports no torch)

if TYPE_CHECKING:
    from mlbcli.engine.pipeline import Pipeline
    from mlbcli.io.sampling import FrameRule
    from mlbcli.io.video import Frames
    from mlbcli.runners.tasks import DecodedVideo, Task

log = logging.getLogger(__name__)

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
    # `answer` into a file: the whole file's score (resumed rows included), as `mlb score` computes it;
    # `graded`/`correct` then count the whole file too. None: this run's rows only (e.g. --out -).
    file_score: Any = None

    @property
    def accuracy(self) -> float | None:
        """Accuracy of the output file (the benchmark's aggregation), else of this run's graded rows."""
        if self.file_score is not None:
            return self.file_score.accuracy
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


def shard_of(video_id: str, num_shards: int) -> int:
    """The shard a video belongs to: a stable hash of its id, so that every run (and every question
    of one video) agrees, whatever the order or number of sources."""
    import hashlib

    return int.from_bytes(hashlib.sha1(video_id.encode()).digest()[:8], "big") % num_shards


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
    from mlbcli.runners.tasks import error_text

    return error_text(error)


def _decode_group(
    group: list[Item], num_frames: int | None, fps: float | None, rule: FrameRule | None = None
) -> Frames:
    """Worker-side decode of one video (top level, so decode processes can pickle it)."""
    from mlbcli.io.sampling import GENERIC
    from mlbcli.io.video import decode_frames

    return decode_frames(group[0].video_path, num_frames=num_frames, fps=fps, rule=rule or GENERIC)


def _open_writer(
    kind: str,
    schema: Any,
    run: RunOptions,
    skip_key: Sequence[str],
    unique_key: Sequence[str] | None,
    metadata: dict[str, str],
):
    from mlbcli.io.writers import ResultWriter

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
    groups: list[list[Item]],
    run: RunOptions,
    num_frames: int | None,
    fps: float | None,
    rule: FrameRule | None = None,
) -> Iterator[tuple[list[Item], Any, float]]:
    """(group, Frames or exception, seconds waited) in input order, decoded ahead in the background.

    `rule` is the model family's frame rule (`ModelAdapter.frame_rule`); none for `mlb sample`."""
    from mlbcli.io.prefetch import prefetch

    decode = functools.partial(_decode_group, num_frames=num_frames, fps=fps, rule=rule)
    waited = time.perf_counter()
    for group, result in prefetch(
        groups, decode, workers=run.workers, depth=run.prefetch, timeout_s=run.decode_timeout_s
    ):
        yield group, result, time.perf_counter() - waited
        waited = time.perf_counter()


def _check_same_config(writer: Any, options: dict[str, Any]) -> None:
    """Refuse to resume when rows that will be merged were made with other result options.

    Checked against what the writer will actually merge (`existing_metadata`: the final file, or the
    parts of an interrupted `--overwrite` run that supersede it), read in the writer's own format.
    """
    current = json.loads(json.dumps(options, default=str))  # the same JSON normalisation as stored
    for source, metadata in writer.existing_metadata():
        try:
            previous = json.loads(metadata.get("options", "{}"))
        except ValueError:
            continue
        differ = [
            key
            for key in RESULT_OPTIONS
            if (key in previous or (key in REQUIRED_ON_RESUME and key in current))
            and previous.get(key) != current.get(key)
            # a method that does not use --layer/--query/--keep records None; older files recorded
            # the CLI default there, which had no effect either
            and not (key in UNUSED_WHEN_NONE and current.get(key) is None)
        ]
        if differ:
            changes = ", ".join(
                f"input preparation v{previous.get(key) or 1} -> v{current.get(key)}"
                if key == "inputs"
                else f"{key} {previous.get(key)!r} -> {current.get(key)!r}"
                for key in differ
            )
            raise UsageError(
                f"{source} was written with other options ({changes}); resuming would mix configurations "
                "in one file. Use another --out, or --overwrite to start again."
            )


def _base_row(item: Item) -> dict[str, Any]:
    # The real path may hold a file name's undecodable bytes; rows must be valid UTF-8.
    return {"video_id": item.video_id, "video_path": printable(item.video_path), "origin": item.origin}


def _unique_videos(items: list[Item]) -> list[Item]:
    """One item per video (for per-video commands): a manifest may list a video several times.

    A broken manifest line is an input of its own: per-video rows are keyed by `video_id` alone, so its
    row takes its line (its `question_id`, "m.jsonl:4") as id, and neither replaces nor hides the row of
    the video it names, nor another broken line's.
    """
    seen: set[str] = set()
    unique = []
    for item in items:
        if item.error is not None and item.question_id is not None:
            item = replace(item, video_id=item.question_id)
        if item.video_id not in seen:
            seen.add(item.video_id)
            unique.append(item)
    return unique


Emit = Callable[[Item, dict[str, Any]], None]


def _run_batch(
    kind: str,
    schema: Any,
    items: list[Item],
    *,
    key: Callable[[Item], tuple],
    skip_key: Sequence[str],
    unique_key: Sequence[str] | None,
    identity: Callable[[Item], dict[str, Any]],
    work: Callable[[list[Item], Emit, Any], None],
    options: dict[str, Any],
    run: RunOptions,
    reporter: Reporter | None,
    prepare: Callable[[list[Item], Reporter], Any] | None = None,
) -> RunSummary:
    """The harness every command shares: writer, resume, error rows, progress, summary.

    `prepare(pending)` runs before any progress is shown (model commands load the model there, so a
    model that cannot load is a clean usage error with no output written); its result goes to
    `work(pending, emit, prepared)`, which processes the items not done yet and calls `emit(item, row)`
    once per item. Rows get the item's identity columns (`identity`) and the run's provenance; items whose
    source line was broken become error rows without reaching `work`. Error rows carry the key columns
    too, so a resumed run retries them instead of adding a second row.
    """
    reporter = reporter or NullReporter()
    if not items and kind != "summarize":  # (an empty camera folder is a normal night for summarize)
        raise UsageError("no videos found in the sources (folders are searched recursively by extension)")
    if run.num_shards > 1:
        items = [item for item in items if shard_of(item.video_id, run.num_shards) == run.shard_index]
    summary = RunSummary(kind, total=len(items))
    started = time.perf_counter()
    provenance = _provenance(options)
    writer = _open_writer(kind, schema, run, skip_key, unique_key, {"options": provenance["options_json"]})
    # Rows written but not yet committed by the writer (at most one part's worth). The summary counts a
    # row only once it is on disk, so a run stopped by a write error never claims rows it lost.
    uncounted: collections.deque[dict[str, Any]] = collections.deque()

    def count_committed() -> None:
        while uncounted and summary.ok + summary.failed < writer.committed:
            summary.record(uncounted.popleft())

    reporting = False
    try:
        with writer:
            summary.out = writer.out
            _check_same_config(writer, options)
            done = writer.done_keys()
            pending = [item for item in items if key(item) not in done]
            summary.skipped = len(items) - len(pending)
            good = [item for item in pending if not item.error]
            prepared = prepare(good, reporter) if prepare is not None and good else None
            reporter.start(kind, total=len(pending), skipped=summary.skipped)
            reporting = True

            def emit(item: Item, row: dict[str, Any]) -> None:
                row = {**_base_row(item), **identity(item), **row, **provenance}
                writer.write(row)
                uncounted.append(row)
                count_committed()
                reporter.advance(row)
                if run.fail_fast and row.get("error"):
                    raise MlbError(f"--fail-fast: {item.video_id}: {row['error']}")

            for item in pending:
                if item.error:  # a broken manifest line: an error row, the batch goes on
                    emit(item, {"error": item.error})
            work(good, emit, prepared)
    finally:  # after the writer closed: its last commit (or failure) decides what counts
        if reporting:
            count_committed()
            if kind == "answer":
                _score_whole_file(summary, run)
            summary.seconds = time.perf_counter() - started
            reporter.finish(summary)
    return summary


def _score_whole_file(summary: RunSummary, run: RunOptions) -> None:
    """Accuracy over the whole output file, rows of earlier (resumed) runs included, not this run's only.

    Read back after the writer closed; `--out -` (nothing to read back) keeps this run's counts. A file
    that cannot be read (a run stopped before its first commit) keeps them too.
    """
    if not summary.out or summary.out == "-":
        return
    from mlbcli.eval.score import score_file

    try:
        score = score_file(summary.out, fmt=run.fmt)
    except Exception:  # the run's own counts still stand; the file is reported by its writer
        log.debug("could not score %s", summary.out, exc_info=True)
        return
    if score.n:
        summary.file_score = score
        summary.graded, summary.correct = score.n, score.correct


def _load_pipeline(spec: ModelSpec, run: RunOptions) -> Callable[[list[Item], Reporter], Any]:
    """`prepare` of the model commands: load the model once there is work for it."""

    def prepare(items: list[Item], reporter: Reporter) -> Any:
        if run.runner == "ray":  # the model loads in the actors; here only what would fail there
            from mlbcli.models import _load_config, adapter_class_for
            from mlbcli.runners.ray import require_ray

            require_ray()
            adapter_cls = adapter_class_for(_load_config(spec.model))
            adapter_cls.check_options(spec.adapter_options())  # exit 2 here, not in every actor
            return adapter_cls
        import torch

        torch.manual_seed(spec.seed)
        report_status(reporter, model_loading_text(spec.model, spec.device, spec.dtype))
        return spec.pipeline()

    return prepare


def _model_work(spec: ModelSpec, run: RunOptions, task: Task, tokens_dir: str | None = None):
    """`work` for answer/compress/summarize: decode ahead, then batches through a `ModelWorker`.

    All questions about one video form one group, even when a manifest interleaves videos: every video
    is decoded and encoded once. Groups keep the order of each video's first appearance.
    """
    from mlbcli.runners.tasks import ModelWorker

    # What was asked, also on the rows of items that failed (so failures group by configuration).
    asked = {
        "model": spec.model,
        "method": spec.method,
        "keep_requested": spec.keep_requested(),
        "frames": spec.frames,
    }

    def work(items: list[Item], emit: Emit, pipe: Any) -> None:
        if not items or pipe is None:
            return
        num_frames = spec.frames if spec.frames is not None or spec.fps is not None else pipe.default_frames
        if spec.frames is not None and spec.fps is None:
            # said once here; every row also says it (`input_note`)
            count = pipe.frame_rule.frame_count(spec.frames)
            if count != spec.frames:
                log.warning(
                    "--frames %d -> %d: this model takes frames in groups of %d (as its reference processor)",
                    spec.frames,
                    count,
                    pipe.frame_rule.multiple,
                )
        by_video: dict[str, list[Item]] = {}
        for item in items:
            by_video.setdefault(item.video_path, []).append(item)
        groups = list(by_video.values())
        if run.runner == "ray":  # `pipe` is the adapter class here: the model loads in the actors
            from mlbcli.runners.ray import ray_work

            ray_work(spec, run, task, asked, num_frames, pipe.frame_rule, tokens_dir)(groups, emit)
            return
        worker = ModelWorker(pipe, task, asked, run.batch_size)
        saved, groups = _saved_videos(groups, tokens_dir, pipe, spec) if tokens_dir else ([], groups)
        decoded = _decoded_videos(groups, run, num_frames, spec.fps, pipe.frame_rule)
        for batch in worker.batches([*saved, *decoded]):
            for item, row in worker.process(batch):
                emit(item, row)

    return work


def _decoded_videos(
    groups: list[list[Item]], run: RunOptions, num_frames: int | None, fps: float | None, rule: FrameRule
) -> Iterator[DecodedVideo]:
    from mlbcli.runners.tasks import DecodedVideo

    for group, decoded, decode_s in _decoded(groups, run, num_frames, fps, rule):
        if isinstance(decoded, BaseException):
            yield DecodedVideo(group, error=decoded, decode_s=decode_s)
        else:
            yield DecodedVideo(group, frames=decoded, decode_s=decode_s)


def _saved_videos(
    groups: list[list[Item]], tokens_dir: str, pipe: Pipeline, spec: ModelSpec
) -> tuple[list[DecodedVideo], list[list[Item]]]:
    """(videos whose tokens `compress --save-tokens` stored in `tokens_dir`, the groups left to decode)."""
    from mlbcli.io.tokens import require_tokens_dir

    require_tokens_dir(tokens_dir)
    found: list[DecodedVideo] = []
    remaining = []
    for group in groups:
        video = saved_video(group, tokens_dir, pipe, spec)
        if video is None:
            remaining.append(group)
        else:
            found.append(video)
    return found, remaining


def saved_video(group: list[Item], tokens_dir: str, pipe: Pipeline, spec: ModelSpec) -> DecodedVideo | None:
    """The `DecodedVideo` of `group` from its tokens in `tokens_dir` (saved by `compress --save-tokens`),
    or None when there are none (for this model and this very file).

    The run's explicit sampling options (`--frames`/`--fps`) must agree with how the tokens were
    sampled, and the tokens must come from this input preparation: otherwise the video's rows are errors
    rather than answers from other frames. Used by the local runner and by the Ray actors.
    """
    from mlbcli.engine.pipeline import EncodedVideo
    from mlbcli.engine.saved_tokens import load_video_tokens
    from mlbcli.runners.tasks import DecodedVideo, SavedFrames

    saved = load_video_tokens(tokens_dir, group[0], pipe.adapter.model_id)
    if saved is None:
        return None
    frames = SavedFrames(list(range(len(saved.timestamps_s))), saved.timestamps_s)
    video = DecodedVideo(group, frames=frames, video=EncodedVideo(saved.tokens, 0.0))
    mismatch = saved.inputs_mismatch() or saved.sampling_mismatch(spec.frames, spec.fps, pipe.frame_rule)
    if mismatch is not None:
        video.error = UsageError(mismatch)
    elif saved.reduced:
        video.override = saved.stored_reduction()
        if pipe.method.name != "none":
            video.error = UsageError(
                f"{saved.path.name} holds tokens already reduced by {saved.method_name!r}; "
                "use --method none with them, or save unreduced tokens (compress --method none)"
            )
    return video


def _options(kind: str, spec: ModelSpec | None, run: RunOptions, **extra: Any) -> dict[str, Any]:
    """Every option of the run, recorded in each row (`options_json`) for reproducibility."""
    return {"kind": kind, **(spec.recorded() if spec else {}), **extra, **asdict(run)}


def answer(
    sources: Sequence[str],
    *,
    question: str | None = None,
    max_new_tokens: int | None = None,
    benchmark: str | None = None,
    tokens: str | None = None,
    run: RunOptions | None = None,
    reporter: Reporter | None = None,
    stdin: TextIO | None = None,
    spec: ModelSpec | None = None,
    **model_options: Any,
) -> RunSummary:
    """Answer every (video, question) item of `sources`; one row per item (see schema.ANSWER).

    `model_options` are the fields of `ModelSpec`: `model` (required), `method`, `keep`, `layer`,
    `query`, `debias`, `params`, `seed`, `frames`, `fps`, `device`, `dtype`, `min_pixels`, `max_pixels`.
    `tokens`: a folder written by `compress --save-tokens`; videos found there are not decoded or
    encoded again (a stale file, whose video changed since, is ignored).
    `benchmark` (videomme, mvbench, egoschema, nextqa, longvideobench, mlvu): lmms-eval's prompt, parse
    failure policy and aggregation for that benchmark (`mlbcli.eval.benchmarks`); `max_new_tokens` then
    defaults to the benchmark's generation limit (otherwise 32).
    """
    from mlbcli.eval.benchmarks import get_benchmark
    from mlbcli.io import schema
    from mlbcli.runners.tasks import AnswerTask

    run = run or RunOptions()
    spec = _model_spec(spec, **model_options)
    bench = get_benchmark(benchmark)
    if max_new_tokens is None:
        max_new_tokens = (bench.max_new_tokens if bench else None) or 32
    if max_new_tokens < 1:
        raise UsageError("--max-new-tokens must be >= 1")
    if tokens:
        from mlbcli.io.tokens import require_tokens_dir

        require_tokens_dir(tokens)  # before the model loads
    items = list(iter_items(sources, default_question=question, stdin=stdin, require_question=True))

    def identity(item: Item) -> dict[str, Any]:
        return {
            "question_id": item.question_id,
            "question": item.question,
            "options": list(item.options) if item.options else None,
            "ground_truth": item.answer,
            "category": item.category,
            "benchmark": bench.name if bench else None,
        }

    return _run_batch(
        "answer",
        schema.ANSWER,
        items,
        key=lambda item: (item.video_id, item.question_id),
        skip_key=("video_id", "question_id"),
        unique_key=None,
        identity=identity,
        work=_model_work(spec, run, AnswerTask(max_new_tokens, bench, spec.seed), tokens),
        prepare=_load_pipeline(spec, run),
        run=run,
        reporter=reporter,
        options=_options(
            "answer", spec, run, max_new_tokens=max_new_tokens, tokens=tokens, benchmark=bench and bench.name
        ),
    )


def compress(
    sources: Sequence[str],
    *,
    question: str | None = None,
    save_tokens: str | None = None,
    bias_report: str | None = None,
    run: RunOptions | None = None,
    reporter: Reporter | None = None,
    stdin: TextIO | None = None,
    spec: ModelSpec | None = None,
    **model_options: Any,
) -> RunSummary:
    """Encode + token reduction + per-video token statistics, no generation (see schema.COMPRESS).

    Query-aware methods score tokens against the item's question, `question`, or a generic prompt.
    `save_tokens` stores each video's tokens (safetensors) for `answer --tokens`; `bias_report` writes a
    PNG per video with the attention bias and what the method kept.
    """
    from mlbcli.io import schema
    from mlbcli.runners.tasks import CompressTask

    run = run or RunOptions()
    spec = _model_spec(spec, **model_options)
    items = list(iter_items(sources, default_question=question, stdin=stdin, require_question=False))

    return _run_batch(
        "compress",
        schema.COMPRESS,
        items,
        key=lambda item: (item.video_id, item.question_id),
        skip_key=("video_id", "question_id"),
        unique_key=None,
        identity=lambda item: {"question_id": item.question_id, "question": item.question},
        work=_model_work(spec, run, CompressTask(save_tokens, bias_report)),
        prepare=_load_pipeline(spec, run),
        run=run,
        reporter=reporter,
        options=_options("compress", spec, run, save_tokens=save_tokens, bias_report=bias_report),
    )


def summarize(
    sources: Sequence[str],
    *,
    prompt: str = DEFAULT_SUMMARY_PROMPT,
    max_new_tokens: int = 96,
    run: RunOptions | None = None,
    reporter: Reporter | None = None,
    stdin: TextIO | None = None,
    spec: ModelSpec | None = None,
    **model_options: Any,
) -> RunSummary:
    """Summarise every video not yet summarised, or changed since (size/mtime), for nightly cron runs.

    One row per video (see schema.SUMMARIZE); a changed video's new row replaces its old one.
    """
    from mlbcli.io import schema
    from mlbcli.runners.tasks import SummarizeTask

    run = run or RunOptions()
    spec = _model_spec(spec, **model_options)
    if not prompt.strip():
        raise UsageError("--prompt must not be empty")
    items = _unique_videos(list(iter_items(sources, stdin=stdin, require_question=False)))
    prints = {item.video_path: fingerprint(item.video_path) for item in items if not item.error}

    return _run_batch(
        "summarize",
        schema.SUMMARIZE,
        items,
        key=lambda item: (item.video_id, prints.get(item.video_path)),
        skip_key=("video_id", "fingerprint"),
        unique_key=("video_id",),
        identity=lambda item: {"fingerprint": prints.get(item.video_path), "prompt": prompt},
        work=_model_work(spec, run, SummarizeTask(prompt, max_new_tokens)),
        prepare=_load_pipeline(spec, run),
        run=run,
        reporter=reporter,
        options=_options("summarize", spec, run, prompt=prompt, max_new_tokens=max_new_tokens),
    )


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

    from mlbcli.io import schema

    run = run or RunOptions()
    _validate_sampling(frames, fps)
    num_frames = frames if frames is not None or fps is not None else SAMPLE_DEFAULT_FRAMES
    items = _unique_videos(list(iter_items(sources, stdin=stdin, require_question=False)))

    def work(pending: list[Item], emit: Emit, prepared: Any) -> None:
        for group, decoded, decode_s in _decoded([[item] for item in pending], run, num_frames, fps):
            item = group[0]
            row: dict[str, Any] = {"decode_s": decode_s}
            if isinstance(decoded, BaseException):
                emit(item, {**row, "error": _error_text(decoded)})
                continue
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
                from mlbcli.io.naming import safe_name
                from mlbcli.io.video import contact_sheet as write_sheet

                target = Path(contact_sheet) / safe_name(item.video_id, ".jpg")
                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    row["contact_sheet"] = str(write_sheet(decoded, target))
                except Exception as exc:
                    row["error"] = f"contact sheet: {_error_text(exc)}"
            emit(item, row)

    return _run_batch(
        "sample",
        schema.SAMPLE,
        items,
        key=lambda item: (item.video_id,),
        skip_key=("video_id",),
        unique_key=None,
        identity=lambda item: {},
        work=work,
        run=run,
        reporter=reporter,
        options=_options(
            "sample",
            None,
            run,
            frames=num_frames,
            fps=fps,
            contact_sheet=contact_sheet,
            # --fps picks other frames since inputs v2 (spread over the clip); --frames did not change
            **({"inputs": _inputs_version()} if fps is not None else {}),
        ),
    )


def iter_rows(path: str) -> Iterable[dict[str, Any]]:
    """Read back any mlb output file as dict rows (convenience for notebooks)."""
    from mlbcli.io.writers import read_results

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
    # Planned attention probe passes (two-stage mlb on image LLMs), (visual tokens, layers) each, and
    # their FLOPs: extra to `flops` (the final pass, the papers' convention).
    probe_passes: list[tuple[int, int]] = field(default_factory=list)
    flops_probes: float = 0.0

    @property
    def ratio(self) -> float:
        return self.flops / self.flops_vanilla if self.flops_vanilla else 1.0

    @property
    def probe_ratio(self) -> float:
        """(final pass + probe passes) / vanilla: the `flops_probe_ratio` column's nominal value."""
        return (self.flops + self.flops_probes) / self.flops_vanilla if self.flops_vanilla else 1.0


def flops(
    *,
    model: str,
    method: str = "none",
    keep: float | None = None,
    layer: int | None = None,
    query: str | None = None,
    frames: int | None = None,
    debias: Sequence[str] | str | None = None,
    params: dict[str, Any] | None = None,
    variant: str | None = None,
    positions: str | None = None,
) -> FlopsPlan:
    """Plan the visual-token LLM FLOPs of `method` (algorithms.md §2) from the checkpoint config.

    Validated exactly like a run: the same options (one not used by the method is an error), `--frames`
    >= 1, `--layer` 1..L-1 for attention methods, budgets that cannot hold a summary tail, and plans
    whose sequence cannot fit the model's context are `UsageError`s, as they would be in `answer`.
    """
    from mlbcli.engine.flops import LLMDims, layer_flops, tokens_per_layer, visual_flops
    from mlbcli.models import _load_config, adapter_class_for
    from mlbcli.selection import get_method
    from mlbcli.selection.base import NOMINAL_TEXT_TOKENS, PlanContext

    spec = _model_spec(
        model=model,
        method=method,
        keep=keep,
        layer=layer,
        query=query,
        debias=debias,
        params=params,
        frames=frames,
        variant=variant,
        positions=positions,
    )  # --frames 0, bad --keep, options the method does not use: the run's own UsageErrors
    config = _load_config(model)
    adapter_cls = adapter_class_for(config)
    frames = adapter_cls.frame_rule.frame_count(spec.frames or adapter_cls.default_frames)
    text_config = config.text_config if hasattr(config, "text_config") else config
    dims = LLMDims.from_config(text_config)
    chosen = get_method(spec.method, spec.method_options())
    chosen.check_layer(dims.num_layers)
    n = adapter_cls.visual_tokens(config, frames)
    limit = getattr(text_config, "max_position_embeddings", None) or None
    image_llm = bool(adapter_cls.renumber_input_positions)
    context = PlanContext(image_llm=image_llm, context_limit=limit)
    nominal, probes = chosen.nominal_with_context(n, frames, context)
    schedule = tokens_per_layer(n, nominal, dims.num_layers)
    if limit is not None:
        # The row's extent: pruned positions are re-sequenced on image LLMs, kept on video LLMs
        # (plus tokens appended after the visual block, which shift the text).
        appended = max(0, nominal.get(0, n) - n) if 0 in nominal else 0
        extent = (schedule[0] if image_llm else n + appended) + NOMINAL_TEXT_TOKENS
        if extent > limit:
            raise UsageError(
                f"{frames} frames give {schedule[0]} visual tokens entering the LLM + ~{NOMINAL_TEXT_TOKENS} "
                f"text tokens = {extent} positions, more than the model's context of {limit}: a run "
                "would fail; use fewer --frames (or a lower --keep on this family)"
                if image_llm
                else f"{frames} frames give {n} visual tokens + ~{NOMINAL_TEXT_TOKENS} text tokens, more "
                f"than the model's context of {limit}: a run would fail; use fewer --frames"
            )
    return FlopsPlan(
        model=model,
        family=adapter_cls.family,
        method=spec.method,
        frames=frames,
        visual_tokens=n,
        tokens_per_layer=schedule,
        flops=visual_flops(schedule, dims),
        flops_vanilla=visual_flops([n] * dims.num_layers, dims),
        probe_passes=probes,
        flops_probes=sum(layers * layer_flops(count, dims) for count, layers in probes),
    )
