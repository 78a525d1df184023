"""Local vs Ray runner: where the time of a batch goes, at a few sizes (16 and 256 videos by default).

The same `mlb answer` run (a tiny random OneVision checkpoint, 4 frames, 3 new tokens, so the model's
own work is small and the runners' overhead shows) goes through `--runner local` and `--runner ray`
(a local Ray instance). Each run is split into
- start: Ray's start (`ray.init`, measured on its own; 0 for local);
- first row: from the call to the first committed row (model load, first decode, pipeline start-up);
- per video: the steady rate after the first row, (last - first) / (videos - 1);
- total: the call, start excluded.
so a fixed cost (paid once per run) and a per-video cost (paid by every video) are told apart.

    python bench/bench_runners.py                      # 16 and 256 videos, 3 runs each
    python bench/bench_runners.py --videos 16 --runs 1 # a quick look

It prints the machine (cores, load average, before and after) and every number's spread over runs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_line, spread_text  # noqa: E402


class _Clock:
    """A reporter that notes when each row was committed."""

    def __init__(self) -> None:
        self.rows: list[float] = []

    def status(self, text: str) -> None:
        pass

    def start(self, kind: str, *, total: int, skipped: int) -> None:
        pass

    def advance(self, row: dict[str, Any]) -> None:
        self.rows.append(time.perf_counter())

    def finish(self, summary: Any) -> None:
        pass


def make_inputs(folder: Path, videos: int) -> tuple[Path, Path]:
    """A tiny checkpoint and `videos` distinct small clip files (copies of 8 synthetic clips)."""
    from mlbcli.io.video import make_test_video
    from mlbcli.testing.tiny import build_tiny_llava_onevision

    model = folder / "tiny-ov"
    if not model.exists():
        build_tiny_llava_onevision(model)
    clips = folder / f"clips-{videos}"
    clips.mkdir(exist_ok=True)
    seeds = [make_test_video(folder / f"seed{i}.mp4", num_frames=16, seed=i) for i in range(8)]
    for index in range(videos):
        target = clips / f"v{index:04d}.mp4"
        if not target.exists():
            shutil.copy(seeds[index % len(seeds)], target)
    return model, clips


def one_run(runner: str, model: Path, clips: Path, out: Path, batch_size: int) -> dict[str, float]:
    from mlbcli import api

    start = 0.0
    if runner == "ray":
        import ray

        began = time.perf_counter()
        ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        start = time.perf_counter() - began
    clock = _Clock()
    run = api.RunOptions(out=str(out), overwrite=True, runner=runner, batch_size=batch_size)
    began = time.perf_counter()
    summary = api.answer(
        [str(clips)], question="What moves?", model=str(model), frames=4, max_new_tokens=3,
        run=run, reporter=clock, progress=False,
    )  # fmt: skip
    total = time.perf_counter() - began
    if runner == "ray":
        import ray

        ray.shutdown()
    if summary.failed or len(clock.rows) != summary.ok:
        raise SystemExit(f"{runner}: {summary.failed} failed rows; the benchmark needs clean runs")
    first = clock.rows[0] - began
    per_video = (clock.rows[-1] - clock.rows[0]) / max(1, len(clock.rows) - 1)
    return {"start": start, "first_row": first, "per_video": per_video, "total": total}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", default="16,256", help="comma list of batch sizes in videos")
    p.add_argument("--runs", type=int, default=3, help="runs per (runner, size), interleaved")
    p.add_argument("--batch-size", type=int, default=1, help="--batch-size of both runners")
    p.add_argument("--work", help="folder for the checkpoint and clips (default: a temporary one)")
    p.add_argument("--json", help="write the results here as JSON")
    args = p.parse_args(argv)
    sizes = [int(v) for v in args.videos.split(",") if v]
    before = machine_line()
    print(before, flush=True)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="mlb-bench-runners-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    for size in sizes:
        model, clips = make_inputs(work, size)
        for _ in range(args.runs):  # interleaved: a load change hits both runners alike
            for runner in ("local", "ray"):
                measured = one_run(runner, model, clips, work / f"{runner}.parquet", args.batch_size)
                results.setdefault((runner, size), []).append(measured)
                print(json.dumps({"runner": runner, "videos": size, **measured}), file=sys.stderr, flush=True)
    print(
        f"\n### Runners: local vs ray, tiny OneVision, 4 frames, 3 new tokens, --batch-size "
        f"{args.batch_size}, {args.runs} interleaved run(s) each (medians; spread below)\n"
    )
    print("| videos | runner | start s | first row s | per video ms | total s | ray / local (total) |")
    print("|---|---|---|---|---|---|---|")
    for size in sizes:
        local_total = statistics.median(r["total"] for r in results[("local", size)])
        for runner in ("local", "ray"):
            runs = results[(runner, size)]
            med = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
            ratio = f"{med['total'] / local_total:.2f}x" if runner == "ray" else ""
            print(
                f"| {size} | {runner} | {med['start']:.2f} | {med['first_row']:.2f} | "
                f"{1000 * med['per_video']:.0f} | {med['total']:.2f} | {ratio} |"
            )
    print()
    for (runner, size), runs in results.items():
        print(f"- {runner}, {size} videos, total: {spread_text([r['total'] for r in runs])}")
    after = machine_line()
    print(f"\n{before}\n{after.replace('machine:', 'after:  ')}")
    if args.json:
        rows = [{"runner": r, "videos": v, "runs": runs} for (r, v), runs in results.items()]
        Path(args.json).write_text(json.dumps({"machine": [before, after], "results": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
