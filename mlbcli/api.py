"""The library API: one function per subcommand. The CLI (`mlbcli.cli.app`) is a thin layer over these.

Each function takes sources (files, folders, manifests, "-"), runs the batch with bounded decode
prefetch, writes one row per item through an atomic, resumable `ResultWriter`, and returns a
`RunSummary`. Progress goes to the caller's `Reporter` (the CLI's Rich one), else to a `tqdm.auto` bar
(`progress=False`: none); details go to `logging`.
The batch harness lives in `mlbcli.runners` (`batch`: writer, resume, rows; `local` and `ray`: the
model work); this module only says what each command reads, asks and writes.

    >>> from mlbcli import api
    >>> api.answer(["videos/"], question="What is the person doing?", model="llava-hf/llava-onevision-qwen2-0.5b-ov-hf",
    ...            method="fastv", keep=0.25, run=api.RunOptions(out="answers.parquet"))
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from mlbcli.errors import UsageError
from mlbcli.io.sources import Item, fingerprint, iter_items
from mlbcli.options import ModelSpec, RunOptions, _inputs_version, _model_spec, _validate_sampling
from mlbcli.runners.batch import Rows, recorded_options, run_batch, unique_videos
from mlbcli.runners.local import run_model_batch, sample_work
from mlbcli.runners.summary import RunSummary
from mlbcli.runners.tasks import DEFAULT_SUMMARY_PROMPT  # the one definition (tasks imports no torch)
from mlbcli.runners.videos import saved_video

if TYPE_CHECKING:
    from mlbcli.runners.progress import Reporter

__all__ = [
    "FlopsPlan",
    "ModelSpec",
    "RunOptions",
    "RunSummary",
    "answer",
    "compress",
    "flops",
    "iter_rows",
    "sample",
    "saved_video",
    "summarize",
]

SAMPLE_DEFAULT_FRAMES = 32


def answer(
    sources: Sequence[str],
    *,
    question: str | None = None,
    max_new_tokens: int | None = None,
    benchmark: str | None = None,
    grader: str | None = None,
    tokens: str | None = None,
    run: RunOptions | None = None,
    reporter: Reporter | None = None,
    progress: bool = True,
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
    defaults to the benchmark's generation limit (otherwise 32). `grader` ("lmms-eval" or "mlb"; default
    lmms-eval with an lmms-eval benchmark, else mlb) decides whose verdict `choice` / `correct` are; rows
    record both (`mlbcli.eval.grading`).
    """
    from mlbcli.eval.benchmarks import get_benchmark
    from mlbcli.io import schema
    from mlbcli.runners.tasks import AnswerTask

    run = run or RunOptions()
    spec = _model_spec(spec, **model_options)
    bench = get_benchmark(benchmark)
    from mlbcli.eval.grading import resolve_grader

    grader = resolve_grader(grader, bench.name if bench else None)
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

    return run_model_batch(
        Rows("answer", schema.ANSWER, ("video_id", "question_id"), identity),
        items,
        spec,
        run,
        AnswerTask(max_new_tokens, bench, spec.seed, grader),
        tokens_dir=tokens,
        reporter=_reporter(reporter, progress),
        options=recorded_options(
            "answer",
            spec,
            run,
            max_new_tokens=max_new_tokens,
            tokens=tokens,
            benchmark=bench and bench.name,
            # recorded only where it can differ from the old files' grading (resume compares it)
            **({"grader": grader} if bench else {}),
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
    progress: bool = True,
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

    def identity(item: Item) -> dict[str, Any]:
        return {"question_id": item.question_id, "question": item.question}

    return run_model_batch(
        Rows("compress", schema.COMPRESS, ("video_id", "question_id"), identity),
        items,
        spec,
        run,
        CompressTask(save_tokens, bias_report),
        reporter=_reporter(reporter, progress),
        options=recorded_options("compress", spec, run, save_tokens=save_tokens, bias_report=bias_report),
    )


def summarize(
    sources: Sequence[str],
    *,
    prompt: str = DEFAULT_SUMMARY_PROMPT,
    max_new_tokens: int = 96,
    retry_failed: bool = False,
    run: RunOptions | None = None,
    reporter: Reporter | None = None,
    progress: bool = True,
    stdin: TextIO | None = None,
    spec: ModelSpec | None = None,
    **model_options: Any,
) -> RunSummary:
    """Summarise every video not yet summarised, or changed since (size/mtime), for nightly cron runs.

    One row per video (see schema.SUMMARIZE); a changed video's new row replaces its old one. A video
    whose row is an error row and that has not changed since (same size and mtime) is skipped and
    counted in `RunSummary.skipped_failed`, so a broken file is not retried every night;
    `retry_failed=True` tries such videos again.
    """
    from mlbcli.io import schema
    from mlbcli.runners.tasks import SummarizeTask

    run = run or RunOptions()
    spec = _model_spec(spec, **model_options)
    if not prompt.strip():
        raise UsageError("--prompt must not be empty")
    items = unique_videos(list(iter_items(sources, stdin=stdin, require_question=False)))
    prints = {item.video_path: fingerprint(item.video_path) for item in items if not item.error}

    def identity(item: Item) -> dict[str, Any]:
        return {"fingerprint": prints.get(item.video_path), "prompt": prompt}

    return run_model_batch(
        Rows(
            "summarize",
            schema.SUMMARIZE,
            ("video_id", "fingerprint"),
            identity,
            unique_key=("video_id",),
            skip_failed=not retry_failed,
        ),
        items,
        spec,
        run,
        SummarizeTask(prompt, max_new_tokens),
        reporter=_reporter(reporter, progress),
        options=recorded_options("summarize", spec, run, prompt=prompt, max_new_tokens=max_new_tokens),
    )


def sample(
    sources: Sequence[str],
    *,
    frames: int | None = None,
    fps: float | None = None,
    contact_sheet: str | None = None,
    run: RunOptions | None = None,
    reporter: Reporter | None = None,
    progress: bool = True,
    stdin: TextIO | None = None,
) -> RunSummary:
    """Decode and sample frames of every video; one row per video (see schema.SAMPLE). No model."""
    from mlbcli.io import schema

    run = run or RunOptions()
    _validate_sampling(frames, fps)
    num_frames = frames if frames is not None or fps is not None else SAMPLE_DEFAULT_FRAMES
    items = unique_videos(list(iter_items(sources, stdin=stdin, require_question=False)))
    # --fps picks other frames since inputs v2 (spread over the clip); --frames did not change
    inputs = {"inputs": _inputs_version()} if fps is not None else {}
    return run_batch(
        Rows("sample", schema.SAMPLE, ("video_id",), lambda item: {}),
        items,
        sample_work(run, num_frames, fps, contact_sheet),
        run=run,
        reporter=_reporter(reporter, progress),
        options=recorded_options(
            "sample", None, run, frames=num_frames, fps=fps, contact_sheet=contact_sheet, **inputs
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
    # The input resolution the token count assumes, in words (fixed by the family, or dynamic: at the
    # pixel budget, or the `resolution` asked for).
    resolution: str = ""

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
    saliency: str | None = None,
    resolution: tuple[int, int] | str | None = None,
) -> FlopsPlan:
    """Plan the visual-token LLM FLOPs of `method` (algorithms.md §2) from the checkpoint config.

    Validated exactly like a run: the same options (one not used by the method is an error), `--frames`
    >= 1, `--layer` 1..L-1 for attention methods, budgets that cannot hold a summary tail, and plans
    whose sequence cannot fit the model's context are `UsageError`s, as they would be in `answer`.

    `resolution` (width, height) or "WxH": the videos' frame size, for families with dynamic resolution
    (Qwen); without it their count assumes frames at the pixel budget (`FlopsPlan.resolution` says so). A
    family with a fixed input size refuses it (`UsageError`).
    """
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
        saliency=saliency,
    )  # --frames 0, bad --keep, options the method does not use: the run's own UsageErrors
    return _plan_flops(spec, model, resolution)


def _plan_flops(spec: ModelSpec, model: str, resolution: tuple[int, int] | str | None) -> FlopsPlan:
    """`flops` after its options were validated: the config's dims by layer kind, the method's nominal
    schedule where it runs on this decoder, and the context check a run would make."""
    from mlbcli.engine.flops import (
        LLMDims,
        input_resolution,
        parse_resolution,
        probe_flops,
        tokens_per_layer,
        visual_flops,
    )
    from mlbcli.models import adapter_class_for, load_config
    from mlbcli.selection import get_method
    from mlbcli.selection.base import PlanContext

    config = load_config(model)
    adapter_cls = adapter_class_for(config)
    frames = adapter_cls.frame_rule.frame_count(spec.frames or adapter_cls.default_frames)
    text_config = config.text_config if hasattr(config, "text_config") else config
    kinds, sources = adapter_cls.layer_kinds(text_config), adapter_cls.kv_sources(text_config)
    dims = LLMDims.from_config(text_config, kinds, sources)  # hybrids, sliding and shared layers: per kind
    chosen = get_method(spec.method, spec.method_options())
    chosen.check_layer(dims.num_layers)
    size = parse_resolution(resolution) if isinstance(resolution, str) else resolution
    at_size, assumed = input_resolution(adapter_cls, config, model, frames, size)
    n = adapter_cls.visual_tokens(config, frames) if at_size is None else at_size
    limit = getattr(text_config, "max_position_embeddings", None) or None
    image_llm = bool(adapter_cls.renumber_input_positions)
    context = PlanContext(image_llm=image_llm, context_limit=limit)
    nominal, probes = chosen.nominal_with_context(n, frames, context)
    nominal = _runs_where_it_reads(nominal, kinds, sources)
    schedule = tokens_per_layer(n, nominal, dims.num_layers)
    _check_context(n, frames, schedule[0], nominal, limit, image_llm)
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
        flops_probes=sum(probe_flops(count, layers, dims) for count, layers in probes),
        resolution=assumed,
    )


def _runs_where_it_reads(
    nominal: dict[int, int], kinds: Sequence[str], sources: Sequence[int]
) -> dict[int, int]:
    """The nominal schedule as the run executes it (`engine.prefill.prefill_batch`): a step that a
    layer's KV sharing spans runs before it (`engine.cache.before_shared_kv`, Gemma 4), and an in-LLM
    step (every one reads the attention of the layer before it) with no full-attention layer before it
    runs after the first one (`engine.linear.resolve_reads`: FastV's K = 2 runs at layer 4 on Qwen3.5)."""
    if "linear" not in kinds and list(sources) == list(range(len(sources))):
        return nominal
    from mlbcli.engine.cache import before_shared_kv
    from mlbcli.engine.linear import resolve_reads

    try:
        steps, needs = before_shared_kv(dict(nominal), frozenset(k for k in nominal if k > 0), sources)
        steps, _ = resolve_reads(steps, needs, kinds)
    except ValueError as error:
        raise UsageError(str(error)) from None
    return steps


def _check_context(
    visual: int, frames: int, entering: int, nominal: dict[int, int], limit: int | None, image_llm: bool
) -> None:
    """A `UsageError` when the planned row cannot fit the model's context (`limit` positions), as the run
    would fail: `visual` tokens from `frames` frames, `entering` of them entering the LLM."""
    from mlbcli.selection.base import NOMINAL_TEXT_TOKENS

    if limit is None:
        return
    # The row's extent: pruned positions are re-sequenced on image LLMs, kept on video LLMs
    # (plus tokens appended after the visual block, which shift the text).
    appended = max(0, nominal.get(0, visual) - visual) if 0 in nominal else 0
    extent = (entering if image_llm else visual + appended) + NOMINAL_TEXT_TOKENS
    if extent <= limit:
        return
    raise UsageError(
        f"{frames} frames give {entering} visual tokens entering the LLM + ~{NOMINAL_TEXT_TOKENS} "
        f"text tokens = {extent} positions, more than the model's context of {limit}: a run "
        "would fail; use fewer --frames (or a lower --keep on this family)"
        if image_llm
        else f"{frames} frames give {visual} visual tokens + ~{NOMINAL_TEXT_TOKENS} text tokens, more "
        f"than the model's context of {limit}: a run would fail; use fewer --frames"
    )


def _reporter(reporter: Reporter | None, progress: bool) -> Reporter | None:
    """The run's progress: the caller's reporter (the CLI's Rich one), else a `tqdm.auto` bar for
    library runs (a widget in Jupyter, a line in a terminal), or none with `progress=False`."""
    if reporter is not None or not progress:
        return reporter
    from mlbcli.runners.progress import TqdmReporter

    return TqdmReporter()
