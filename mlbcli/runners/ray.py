"""`--runner ray`: the same batch on Ray Data — many GPUs and machines, the same rows and Parquet.

Only the work in the middle moves to Ray. The driver keeps everything that defines the output: it plans
the sources (same ids, same resume filtering, same shard split), holds the output lock and the one
`ResultWriter`, and writes every row through the same `emit` as the local runner (`runners.batch`), so
the schema, metadata, error rows, exit codes and resume are the local runner's by construction.

    videos (one block per video, in input order)
      -> map(decode)                Ray CPU tasks, each with the per-video decode timeout
      -> map_batches(ModelActor)    an actor pool: one model load per actor (`num_gpus` each), and
                                    `mlbcli.runners.tasks.ModelWorker` per call, exactly the local per-item code
      -> iter_rows() on the driver  streaming: rows are written as they arrive (bounded memory)

A worker process that dies (a crash in native code, an out-of-memory kill, a lost node) makes Ray retry
its task on a restarted actor (Ray Data's defaults: actors restart, tasks retry). The retries are
bounded here, not through Ray's deprecated `ray_remote_args` (`max_task_retries`): a small counter actor
(`_Attempts`) counts each call's runs, and a call past `RayOptions.task_retries` retries gives its
videos up; they get a second pass, one video per call, so one bad video cannot take its batch-mates
down. A video that still kills its worker becomes an error row; the batch completes.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlbcli.errors import UsageError
from mlbcli.io.sampling import GENERIC, FrameRule
from mlbcli.runners.ray_options import RayOptions

if TYPE_CHECKING:
    from mlbcli.io.sources import Item
    from mlbcli.options import ModelSpec, RunOptions
    from mlbcli.runners.tasks import Task

log = logging.getLogger(__name__)


def require_ray() -> Any:
    """Import Ray, or a usage error that says how to install it (exit 2, before any work)."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise UsageError("--runner ray needs Ray Data: pip install 'mlbcli[ray]'") from None
    return ray


#: Ray's hint that its progress bars are off: mlb turns them off on purpose (its reporter shows progress).
_PROGRESS_HINT_LOGGER = "ray.data._internal.progress"


def _connect(ray: Any, options: RayOptions) -> None:
    # Ray Data's own INFO lines (plans, "execution finished") would interleave with our progress; with
    # -q its warnings too (a token-authentication notice at every start), as quiet means quiet.
    level = logging.ERROR if options.quiet else logging.WARNING
    if not log.isEnabledFor(logging.DEBUG):
        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(level)
        logging.getLogger(_PROGRESS_HINT_LOGGER).setLevel(logging.ERROR)
    if ray.is_initialized():
        return
    address = options.address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": level,
    }
    if address is None:  # a local instance, for one machine (several GPUs) or a laptop
        from mlbcli.runners.ray_reaper import watch_descendants

        watch_descendants()  # Ray's helpers go when this driver goes, even by SIGKILL
        ray.init(**kwargs)
    else:
        ray.init(address=address, **kwargs)


def _pool_size(ray: Any, options: RayOptions) -> tuple[int, float]:
    """(model actors, GPUs per actor) from the cluster's alive nodes."""
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    gpus = sum(node.get("Resources", {}).get("GPU", 0) for node in nodes)
    per_worker = options.gpus_per_worker if options.gpus_per_worker is not None else (1.0 if gpus else 0.0)
    actors = max(1, len(nodes)) * options.workers_per_node
    if per_worker > 0:
        actors = max(1, min(actors, int(gpus // per_worker)))
    return actors, per_worker


@dataclass(frozen=True)
class VideoInputs:
    """How the decode tasks get a video's frames: `--frames` (or the family default), `--fps`, the
    family's frame rule, and `--tokens` (a folder of saved tokens, for the model `model_id`)."""

    num_frames: int | None
    fps: float | None
    rule: FrameRule = GENERIC
    tokens_dir: str | None = None
    model_id: str | None = None


# What a decode task sends instead of frames when the video's tokens are saved in --tokens: the actor
# loads them (it has the model, and the stored reduction may hold the model's own objects).
SAVED_TOKENS = "saved-tokens"


def _decode_row(row: dict[str, Any], inputs: VideoInputs, timeout_s: float | None) -> dict[str, Any]:
    """Ray CPU task: decode one video (with the run's timeout); the frames travel in the row. A video
    whose tokens are saved in `--tokens` is not decoded."""
    from mlbcli.io.prefetch import _inline, _inline_with_timeout
    from mlbcli.io.video import decode_frames

    items: list[Item] = pickle.loads(row["items"])
    if inputs.tokens_dir is not None and inputs.model_id is not None:
        from mlbcli.io.tokens import find_video_tokens

        if find_video_tokens(inputs.tokens_dir, items[0], inputs.model_id) is not None:  # metadata only
            return {**row, "decoded": pickle.dumps(SAVED_TOKENS), "decode_s": 0.0}
    num_frames, fps, rule = inputs.num_frames, inputs.fps, inputs.rule

    def decode(path: str) -> Any:
        return decode_frames(path, num_frames=num_frames, fps=fps, rule=rule)

    started = time.perf_counter()
    runs = _inline_with_timeout if timeout_s is not None else _inline
    args = (timeout_s,) if timeout_s is not None else ()
    ((_, decoded),) = list(runs([items[0].video_path], decode, *args))
    return {
        "group": row["group"],
        "items": row["items"],
        "decoded": pickle.dumps(decoded),
        "decode_s": time.perf_counter() - started,
    }


class _Attempts:
    """How many times each model call has started, across the restarts of the actors that ran it (a Ray
    actor of its own, created per run: Ray retries a call whose worker died, and the count bounds that)."""

    def __init__(self) -> None:
        self.counts: dict[tuple[int, ...], int] = {}

    def start(self, key: tuple[int, ...]) -> int:
        self.counts[key] = self.counts.get(key, 0) + 1
        return self.counts[key]


@dataclass(frozen=True)
class _Bound:
    """The retry bound of one pass: its counter actor, the pass, and the runs a call may start."""

    attempts: Any  # an `_Attempts` actor handle
    pass_index: int
    runs: int  # 1 + RayOptions.task_retries


class ModelActor:
    """One model load per actor; each call runs its videos through `ModelWorker`, like the local runner."""

    def __init__(
        self,
        spec: ModelSpec,
        task: Task,
        asked: dict[str, Any],
        batch_size: int | None,
        tokens_dir: str | None = None,
        bound: _Bound | None = None,
    ):
        import torch

        from mlbcli.runners.tasks import ModelWorker

        torch.manual_seed(spec.seed)
        self.spec, self.tokens_dir, self.bound = spec, tokens_dir, bound
        self.worker = ModelWorker(spec.pipeline(), task, asked, batch_size)

    def _given_up(self, groups: list[int]) -> bool:
        """Whether this call has already killed its worker `runs` times: its videos are given up (no
        rows), so the driver retries them one per call, or reports them lost."""
        if self.bound is None:
            return False
        import ray

        key = (self.bound.pass_index, *sorted(groups))
        return bool(ray.get(self.bound.attempts.start.remote(key)) > self.bound.runs)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[bytes]]:
        from mlbcli.runners.tasks import DecodedVideo

        if self._given_up([int(group) for group in batch["group"]]):
            return {"rows": [pickle.dumps([])]}
        videos, where = [], {}
        for group, items_blob, decoded_blob, decode_s in zip(
            batch["group"], batch["items"], batch["decoded"], batch["decode_s"], strict=True
        ):
            items, decoded = pickle.loads(items_blob), pickle.loads(decoded_blob)
            if isinstance(decoded, str) and decoded == SAVED_TOKENS:
                video = self._saved(items)
            else:
                error = decoded if isinstance(decoded, BaseException) else None
                video = DecodedVideo(
                    items, frames=None if error else decoded, error=error, decode_s=float(decode_s)
                )
            videos.append(video)
            for position, item in enumerate(items):
                where[id(item)] = (int(group), position)
        out = []
        for chunk in self.worker.batches(videos):
            for item, row in self.worker.process(chunk):
                out.append((*where[id(item)], row))
        return {"rows": [pickle.dumps(out)]}

    def _saved(self, items: list[Item]) -> Any:
        """The video from its saved tokens, as the local runner takes it (`runners.videos.saved_video`)."""
        from mlbcli.runners.tasks import DecodedVideo
        from mlbcli.runners.videos import saved_video

        assert self.tokens_dir is not None
        video = saved_video(items, self.tokens_dir, self.worker.pipe, self.spec)
        if video is None:  # found by the decode task, gone or changed since
            video = DecodedVideo(
                items,
                error=UsageError(f"its saved tokens in {self.tokens_dir} changed during the run; run again"),
            )
        return video


@dataclass(frozen=True)
class _Pass:
    """What every pass of the Ray pipeline shares: the model work and the actor pool it runs on."""

    spec: ModelSpec
    run: RunOptions
    task: Task
    asked: dict[str, Any]  # what was asked, also on failed rows
    inputs: VideoInputs
    options: RayOptions
    actors: int  # model actors in the pool
    gpus: float  # GPUs per actor


def ray_work(
    spec: ModelSpec,
    run: RunOptions,
    task: Task,
    asked: dict[str, Any],
    num_frames: int | None,
    rule: FrameRule = GENERIC,
    tokens_dir: str | None = None,
) -> Callable[[list[list[Item]], Callable[[Item, dict[str, Any]], None]], None]:
    """The Ray counterpart of the local decode + `ModelWorker` loop: `work(groups, emit)`."""
    options = run.ray or RayOptions()
    model_id = None
    if tokens_dir is not None:  # what the saved tokens must have been made with (the adapter's model_id)
        from mlbcli.models import resolve_model

        model_id = resolve_model(spec.model).ref
    inputs = VideoInputs(num_frames, spec.fps, rule, tokens_dir, model_id)

    def work(groups: list[list[Item]], emit: Callable[[Item, dict[str, Any]], None]) -> None:
        ray = require_ray()
        _connect(ray, options)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the driver's own reporter shows progress
        context.max_errored_blocks = -1  # a block whose worker keeps dying is skipped, then retried alone
        plan = _Pass(spec, run, task, asked, inputs, options, *_pool_size(ray, options))
        attempts = ray.remote(num_cpus=0)(_Attempts).remote()
        pending = dict(enumerate(groups))
        emitted: dict[int, set[int]] = {}  # group -> positions whose row was emitted
        for attempt in range(2):  # all videos batched, then the ones whose worker died, one per call
            if not pending:
                return
            videos_per_call = 1 if attempt else max(1, run.batch_size or 1)
            bound = _Bound(attempts, attempt, 1 + options.task_retries)
            for group, position, row in _run_once(ray, plan, pending, videos_per_call, bound):
                done = emitted.setdefault(group, set())
                if group in pending and position not in done:
                    emit(pending[group][position], row)
                    done.add(position)
                    if len(done) == len(pending[group]):
                        del pending[group]
            if pending:
                log.warning("%d video(s) lost their worker; retrying them one per task", len(pending))
        lost = {
            **asked,
            "error": "the worker process died while processing this video "
            f"({2 * (1 + options.task_retries)} attempts); see the Ray logs",
        }
        for group, items in pending.items():
            for position, item in enumerate(items):
                if position not in emitted.get(group, ()):
                    emit(item, dict(lost))

    return work


def _run_once(
    ray: Any, plan: _Pass, groups: dict[int, list[Item]], videos_per_call: int, bound: _Bound
) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """One pass of the pipeline over `groups`; yields (group, position in group, row) as rows arrive."""
    rows = [{"group": index, "items": pickle.dumps(items)} for index, items in groups.items()]
    dataset = ray.data.from_items(rows, override_num_blocks=len(rows))
    decoded = dataset.map(
        _decode_row,
        fn_kwargs={"inputs": plan.inputs, "timeout_s": plan.run.decode_timeout_s},
        num_cpus=1,
    )
    answered = decoded.map_batches(
        ModelActor,
        fn_constructor_kwargs={
            "spec": plan.spec,
            "task": plan.task,
            "asked": plan.asked,
            "batch_size": plan.run.batch_size,
            "tokens_dir": plan.inputs.tokens_dir,
            "bound": bound,
        },
        batch_size=videos_per_call,
        batch_format="numpy",
        # On the isolation pass (one video per call) an actor holds one task at a time, so a video that
        # kills its worker cannot take a queued video down with it.
        compute=ray.data.ActorPoolStrategy(
            size=plan.actors, max_tasks_in_flight_per_actor=1 if videos_per_call == 1 else None
        ),
        num_gpus=plan.gpus,
        # Actors reserve no CPU: the pool size is set above, and an actor still restarting from an
        # earlier pass must never hold the CPU the decode tasks or the next pass need (a deadlock on
        # small machines).
        # (Ray Data restarts dead actors and retries their calls by default; `_Attempts` bounds that.)
        num_cpus=0,
    )
    for out in answered.iter_rows():
        yield from pickle.loads(out["rows"])
