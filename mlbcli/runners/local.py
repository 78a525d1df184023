"""The `work` and `prepare` of the batch harness (`runners.batch`) for each command.

Model commands (answer, compress, summarize): `load_pipeline` loads the model once there is work, and
`model_work` groups the items by video and runs them through a `ModelWorker` in this process (videos
decoded ahead in background processes, or loaded from saved tokens), or hands them to the Ray runner.
`sample_work` decodes and describes videos, no model.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlbcli.errors import UsageError
from mlbcli.runners.batch import Emit, Prepare, Rows, Work, run_batch
from mlbcli.runners.tasks import ModelWorker, error_text
from mlbcli.runners.videos import decoded, decoded_videos, saved_videos

if TYPE_CHECKING:
    from mlbcli.io.sources import Item
    from mlbcli.io.video import Frames
    from mlbcli.options import ModelSpec, RunOptions
    from mlbcli.runners.progress import Reporter
    from mlbcli.runners.summary import RunSummary
    from mlbcli.runners.tasks import Task

log = logging.getLogger(__name__)


def load_pipeline(spec: ModelSpec, run: RunOptions) -> Prepare:
    """`prepare` of the model commands: load the model once there is work for it.

    With `--runner ray` the model loads in the actors; here only what would fail there is checked (exit
    2 once, not in every actor), and the adapter class is what `model_work` gets.
    """

    def prepare(items: list[Item], reporter: Reporter) -> Any:
        if run.runner == "ray":
            from mlbcli.runners.ray import require_ray

            require_ray()
            return check_model(spec)
        check_model(spec)  # exit 2 in a second, before the weights load (minutes on a real checkpoint)
        import torch

        from mlbcli.runners.progress import model_loading_text, report_status

        torch.manual_seed(spec.seed)
        report_status(reporter, model_loading_text(spec.model, spec.device, spec.dtype))
        return spec.pipeline()

    return prepare


def check_model(spec: ModelSpec) -> Any:
    """What the model's config (not its weights) can tell is wrong with `spec`, as a `UsageError`;
    returns the family's adapter class.

    The family's own options (`check_options`), `--layer` against the decoder's depth, and the method
    planned once on a nominal video with the family's traits (`PlanContext`): a variant the family has
    no layout for (`mlb --variant paper` on a video LLM) or a `--positions` it cannot honour would
    otherwise make every row an error row after the model has loaded.
    """
    from mlbcli.engine.flops import LLMDims
    from mlbcli.models import adapter_class_for, load_config
    from mlbcli.selection import get_method
    from mlbcli.selection.base import PlanContext
    from mlbcli.selection.plan import PrunePlan

    config = load_config(spec.model)
    adapter_cls = adapter_class_for(config)
    adapter_cls.check_options(spec.adapter_options())
    text_config = getattr(config, "text_config", config)
    method = get_method(spec.method, spec.method_options())
    method.check_layer(LLMDims.from_config(text_config).num_layers)
    if method.options.saliency == "tower" and method.reads_saliency() and not adapter_cls.tower_saliency:
        raise UsageError(
            f"--saliency tower: mlb does not capture the {adapter_cls.family} vision tower's attention; "
            "use --saliency proxy, or leave it unset (the proxy is then the fallback, and rows say so)"
        )
    rope = getattr(text_config, "rope_parameters", None) or getattr(text_config, "rope_scaling", None)
    context = PlanContext(
        image_llm=bool(adapter_cls.renumber_input_positions),
        mrope=isinstance(rope, dict) and "mrope_section" in rope,  # as `inputs.position_ids.dim() == 3`
    )
    frames = adapter_cls.frame_rule.frame_count(spec.frames or adapter_cls.default_frames)
    method.nominal_with_context(adapter_cls.visual_tokens(config, frames), frames, context)
    method.position_policy(PrunePlan(), context)
    return adapter_cls


def _frame_count(spec: ModelSpec, pipe: Any) -> int | None:
    """Frames to decode per video: `--frames`, or the family's default (None when `--fps` decides)."""
    if spec.frames is None and spec.fps is None:
        return pipe.default_frames
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
    return spec.frames


def model_work(spec: ModelSpec, run: RunOptions, task: Task, tokens_dir: str | None = None) -> Work:
    """`work` for answer/compress/summarize: decode ahead, then batches through a `ModelWorker`.

    All questions about one video form one group, even when a manifest interleaves videos: every video
    is decoded and encoded once. Groups keep the order of each video's first appearance.
    """
    # What was asked, also on the rows of items that failed (so failures group by configuration).
    asked = {
        "model": spec.model,
        "method": spec.method,
        "keep_requested": spec.keep_requested(),
    }

    def work(items: list[Item], emit: Emit, pipe: Any) -> None:
        if not items or pipe is None:
            return
        num_frames = _frame_count(spec, pipe)
        by_video: dict[str, list[Item]] = {}
        for item in items:
            by_video.setdefault(item.video_path, []).append(item)
        groups = list(by_video.values())
        if run.runner == "ray":  # `pipe` is the adapter class here: the model loads in the actors
            from mlbcli.runners.ray import ray_work

            ray_work(spec, run, task, asked, num_frames, pipe.frame_rule, tokens_dir)(groups, emit)
            return
        worker = ModelWorker(pipe, task, asked, run.batch_size)
        saved, groups = saved_videos(groups, tokens_dir, pipe, spec) if tokens_dir else ([], groups)
        videos = decoded_videos(groups, run, num_frames, spec.fps, pipe.frame_rule)
        with cpu_threads_beside_decoders(pipe.adapter.device.type, run.workers):
            for batch in worker.batches([*saved, *videos]):
                for item, row in worker.process(batch):
                    emit(item, row)

    return work


@contextlib.contextmanager
def cpu_threads_beside_decoders(device: str, workers: int) -> Iterator[None]:
    """On CPU, torch's threads leave the decode processes their cores: max(1, cores - workers).

    torch takes every core by default, and its threads spin while they wait; beside `workers` decode
    processes on the same cores they fight over them. On 2 cores with 2 workers a tiny model ran 256
    videos in 70-77 s, and in 11-12 s with one thread (`bench/bench_runners.py`, CHANGELOG). A thread
    count the user chose (OMP_NUM_THREADS, MKL_NUM_THREADS) is kept; the old count is restored after.
    """
    import torch

    chosen = any(os.environ.get(name) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"))
    if device != "cpu" or workers < 1 or chosen:
        yield
        return
    before = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, min(before, cores - workers)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def sample_work(
    run: RunOptions, num_frames: int | None, fps: float | None, contact_sheet: str | None
) -> Work:
    """`work` of `mlb sample`: decode each video, describe it and what was sampled (no model)."""

    def work(pending: list[Item], emit: Emit, prepared: Any) -> None:
        for group, frames, decode_s in decoded([[item] for item in pending], run, num_frames, fps):
            item = group[0]
            if isinstance(frames, BaseException):
                emit(item, {"decode_s": decode_s, "error": error_text(frames)})
                continue
            row = {"decode_s": decode_s, **_sample_columns(frames)}
            if contact_sheet:
                row.update(_contact_sheet(frames, item, contact_sheet))
            emit(item, row)

    return work


def _sample_columns(frames: Frames) -> dict[str, Any]:
    """The video's properties and the frames sampled from it (a `sample` row)."""
    info = frames.info
    return {
        "num_frames_total": info.num_frames_total,
        "fps": info.fps,
        "duration_s": info.duration_s,
        "width": info.width,
        "height": info.height,
        "codec": info.codec,
        "backend": frames.backend,
        "frame_indices": [int(i) for i in frames.indices],
        "timestamps_s": [float(t) for t in frames.timestamps_s],
        "decode_warning": frames.warning,
    }


def _contact_sheet(frames: Frames, item: Item, folder: str) -> dict[str, Any]:
    """{"contact_sheet": path} of the sheet written into `folder`, or {"error": why it could not be}."""
    from mlbcli.io.naming import safe_name
    from mlbcli.io.video import contact_sheet as write_sheet

    target = Path(folder) / safe_name(item.video_id, ".jpg")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        return {"contact_sheet": str(write_sheet(frames, target))}
    except Exception as exc:
        return {"error": f"contact sheet: {error_text(exc)}"}


def run_model_batch(
    rows: Rows,
    items: list[Item],
    spec: ModelSpec,
    run: RunOptions,
    task: Task,
    *,
    options: dict[str, Any],
    reporter: Reporter | None,
    tokens_dir: str | None = None,
) -> RunSummary:
    """`run_batch` of a model command: the model loads once there is work, then `model_work` runs."""
    return run_batch(
        rows,
        items,
        model_work(spec, run, task, tokens_dir),
        prepare=load_pipeline(spec, run),
        options=options,
        run=run,
        reporter=reporter,
    )
