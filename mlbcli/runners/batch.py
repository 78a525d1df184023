"""The harness every command shares: output writer, resume, error rows, progress and the summary.

A command says what its rows are (`Rows`: kind, schema, the columns that identify a done item) and how
to process the items not done yet (`work`); `run_batch` does the rest, the same for every command and
runner. Nothing here knows about models: `runners.local` gives the model commands their `work`.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from mlbcli import __version__
from mlbcli.errors import MlbError, UsageError
from mlbcli.io.sources import Item, printable
from mlbcli.options import REQUIRED_ON_RESUME, RESULT_OPTIONS, UNUSED_WHEN_NONE
from mlbcli.runners.progress import NullReporter, Reporter
from mlbcli.runners.summary import RunSummary, attach

if TYPE_CHECKING:
    from mlbcli.io.writers import ResultWriter
    from mlbcli.options import ModelSpec, RunOptions

log = logging.getLogger(__name__)

#: `emit(item, row)`: hand one item's result columns to the harness (exactly once per item).
Emit = Callable[[Item, dict[str, Any]], None]
#: `work(pending, emit, prepared)`: process the items not done yet (see `run_batch`).
Work = Callable[[list[Item], Emit, Any], None]
#: `prepare(pending, reporter)`: load what `work` needs once there is work (the model).
Prepare = Callable[[list[Item], Reporter], Any]


@dataclass(frozen=True)
class Rows:
    """What one command writes: `kind` (its name), the output `schema`, and how rows are keyed.

    `key` names the columns that identify a done item (a resumed run skips it); `identity(item)` gives the
    item's identity columns, `key` among them unless the base columns (`base_row`) hold them.
    `unique_key`: columns whose new row replaces an old one (summarize: a changed video's new summary).
    """

    kind: str
    schema: Any
    key: tuple[str, ...]
    identity: Callable[[Item], dict[str, Any]]
    unique_key: tuple[str, ...] | None = None
    # Skip an item whose last row is an error row with the same key (summarize: the same video, size
    # and mtime): a broken video is not retried at every cron run; `--retry-failed` sets it False.
    skip_failed: bool = False

    def columns(self, item: Item) -> dict[str, Any]:
        """The columns every row of `item` starts with: its base columns, then its identity."""
        return {**base_row(item), **self.identity(item)}

    def key_of(self, item: Item) -> tuple:
        """The values of `key` for `item`, as the writer's `done_keys()` lists finished rows."""
        columns = self.columns(item)
        return tuple(columns[name] for name in self.key)


def shard_of(video_id: str, num_shards: int) -> int:
    """The shard a video belongs to: a stable hash of its id, so that every run (and every question
    of one video) agrees, whatever the order or number of sources."""
    return int.from_bytes(hashlib.sha1(video_id.encode()).digest()[:8], "big") % num_shards


def recorded_options(kind: str, spec: ModelSpec | None, run: RunOptions, **extra: Any) -> dict[str, Any]:
    """Every option of the run, recorded in each row (`options_json`) for reproducibility."""
    return {"kind": kind, **(spec.recorded() if spec else {}), **extra, **asdict(run)}


def provenance(options: dict[str, Any]) -> dict[str, Any]:
    """The provenance columns of every row: versions, the run's options and when it started."""
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


def open_writer(rows: Rows, run: RunOptions, metadata: dict[str, str]) -> ResultWriter:
    """The run's one `ResultWriter` (default output `<kind>.parquet`)."""
    from mlbcli.io.writers import ResultWriter

    return ResultWriter(
        run.out or f"{rows.kind}.parquet",
        schema=rows.schema,
        kind=rows.kind,
        fmt=run.fmt,
        resume=run.resume,
        overwrite=run.overwrite,
        skip_key=rows.key,
        unique_key=rows.unique_key,
        metadata=metadata,
    )


def check_same_config(writer: Any, options: dict[str, Any]) -> None:
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


def base_row(item: Item) -> dict[str, Any]:
    """The columns every row has first: which video, and where it came from."""
    # The real path may hold a file name's undecodable bytes; rows must be valid UTF-8.
    return {"video_id": item.video_id, "video_path": printable(item.video_path), "origin": item.origin}


def unique_videos(items: list[Item]) -> list[Item]:
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


def run_batch(
    rows: Rows,
    items: list[Item],
    work: Work,
    *,
    options: dict[str, Any],
    run: RunOptions,
    reporter: Reporter | None,
    prepare: Prepare | None = None,
) -> RunSummary:
    """Run `work` over the items not done yet and write one row per item; the summary of what it did.

    `prepare(pending)` runs before any progress is shown (model commands load the model there, so a
    model that cannot load is a clean usage error with no output written); its result goes to
    `work(pending, emit, prepared)`, which processes the items not done yet and calls `emit(item, row)`
    once per item. Rows get the item's columns (`rows.columns`) and the run's provenance; items whose
    source line was broken become error rows without reaching `work`. Error rows carry the key columns
    too, so a resumed run retries them instead of adding a second row.
    """
    reporter = reporter or NullReporter()
    if not items and rows.kind != "summarize":  # (an empty camera folder is a normal night for summarize)
        raise UsageError("no videos found in the sources (folders are searched recursively by extension)")
    if run.num_shards > 1:
        items = [item for item in items if shard_of(item.video_id, run.num_shards) == run.shard_index]
    summary = RunSummary(rows.kind, total=len(items))
    started = time.perf_counter()
    stamp = provenance(options)
    writer = open_writer(rows, run, {"options": stamp["options_json"]})
    # Rows written but not yet committed by the writer (at most one part's worth). The summary counts a
    # row only once it is on disk, so a run stopped by a write error never claims rows it lost.
    uncounted: collections.deque[dict[str, Any]] = collections.deque()

    def count_committed() -> None:
        while uncounted and summary.ok + summary.failed < writer.committed:
            summary.record(uncounted.popleft())

    def emit(item: Item, row: dict[str, Any]) -> None:
        row = {**rows.columns(item), **row, **stamp}
        writer.write(row)
        uncounted.append(row)
        count_committed()
        reporter.advance(row)
        if run.fail_fast and row.get("error"):
            raise MlbError(f"--fail-fast: {item.video_id}: {row['error']}")

    reporting = counted = False
    try:
        with writer:
            summary.out = writer.out
            check_same_config(writer, options)
            done = writer.done_keys()
            pending = [item for item in items if rows.key_of(item) not in done]
            summary.skipped = len(items) - len(pending)
            if rows.skip_failed:
                failed = writer.failed_keys()
                pending = [item for item in pending if rows.key_of(item) not in failed]
                summary.skipped_failed = len(items) - summary.skipped - len(pending)
            counted = True
            good = [item for item in pending if not item.error]
            prepared = prepare(good, reporter) if prepare is not None and good else None
            reporter.start(rows.kind, total=len(pending), skipped=summary.skipped)
            reporting = True
            for item in pending:
                if item.error:  # a broken manifest line: an error row, the batch goes on
                    emit(item, {"error": item.error})
            work(good, emit, prepared)
    except KeyboardInterrupt as interrupt:  # a stop signal: the CLI's last line says what was saved
        if counted:
            attach(interrupt, summary)  # (counted in `finally`, once the writer closed)
        raise
    finally:  # after the writer closed: its last commit (or failure) decides what counts
        if reporting:
            count_committed()
            # After a write error the final file is the old one, without this run's committed rows:
            # its score would count other rows than `ok`; this run's committed rows are the count.
            if rows.kind == "answer" and not writer.write_failed:
                score_whole_file(summary, run)
            summary.seconds = time.perf_counter() - started
            reporter.finish(summary)
    return summary


def score_whole_file(summary: RunSummary, run: RunOptions) -> None:
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
