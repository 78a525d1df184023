"""`make bench-gpu`: the one prepared GPU run (about 5-7 minutes on one H100/H200 for the 7B shape).

Runs five measurements on the real LLaVA-OneVision-7B shape (random weights, bf16) and writes the
results as JSON plus a Markdown table under `bench/results/` (`gpu-<date>-<gpu>.{json,md}`):
1. prefill speed-up per method at keep 0.25 and 0.10 vs the FLOPs-ideal ratio (`bench_prefill.py`);
2. attention-probe overhead vs the unpruned prefill (`bench_prefill.py --only-probe` numbers);
3. our FastV (SDPA + a layer-(K-1) probe of the query rows) vs FastV done the way its reference
   code does it (eager attention with `output_attentions` at layer K-1, the full [H, L, L] map):
   peak memory and time of the prefill;
4. our engine at keep 1.0 vs stock `generate()` (prefill + 32 greedy tokens; time ratio, ~1.0);
5. throughput vs `--batch-size` (`bench_throughput.py`: answer and summarize, none and fastv).
Each part has its own try/except and a share of the time budget (`--budget-s`), so one failure or a
slow part still leaves the others' numbers. `--smoke` runs everything tiny on the CPU (CI checks
that the script works end to end; its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import bench_prefill  # noqa: E402
import bench_throughput  # noqa: E402

from mlbcli.engine import batch as engine  # noqa: E402


def _capture(fn: Any, argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        fn(argv)
    return out.getvalue()


def _median_time(device: str, fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        bench_prefill.sync(device)
        started = time.perf_counter()
        fn()
        bench_prefill.sync(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def fastv_vs_reference(
    arch: str, device: str, dtype: torch.dtype, frames: int, keep: float, layer: int
) -> dict:
    """Peak memory and time: our FastV prefill vs the reference style (eager attention maps at K-1)."""
    from mlbcli.selection import MethodOptions, get_method

    adapter = bench_prefill.build_model(arch, device, dtype, seed=0)
    req = bench_prefill.make_request(adapter, frames, 14, seed=0)
    method = get_method("fastv", MethodOptions(keep=keep, layer=layer, query="last"))

    def ours() -> engine.PrefillResult:
        return bench_prefill.run_prefill(adapter, req, method.plan(req.video, req.prompt))

    def reference() -> torch.Tensor:
        """Layers 0..K-1 with eager attention (the [1, H, L, L] map of layer K-1 materialised, as
        `output_attentions=True` does), top-k of the last row's attention, then layers K.. on the
        kept sequence with SDPA: the memory/time shape of FastV's reference implementation."""
        model = adapter.model
        model.set_attn_implementation("eager")
        captured: dict[str, torch.Tensor] = {}

        def keep_map(module: Any, inputs: Any, output: Any) -> None:
            captured["attn"] = output[1]  # (attn_output, attn_weights [1, H, L, L])

        hook = adapter.layers[layer - 1].self_attn.register_forward_hook(keep_map)
        try:
            with torch.inference_mode():
                hidden, positions = req.embeds, req.positions
                length = hidden.shape[1]
                mask = torch.ones(length, length, dtype=torch.bool, device=hidden.device).tril()[None, None]
                cos_sin = adapter.rotary(hidden, positions)
                for i in range(layer):
                    hidden = adapter.layers[i](
                        hidden, attention_mask=mask, position_embeddings=cos_sin, position_ids=positions
                    )
                attn = captured["attn"]  # [1, H, L, L]
                scores = attn[0, :, -1, req.visual].float().mean(0)  # [n]
                budget = max(1, round(req.visual.numel() * keep))
                kept = req.visual[scores.topk(budget).indices.sort().values]
                alive = torch.ones(length, dtype=torch.bool, device=hidden.device)
                alive[req.visual] = False
                alive[kept] = True
                order = alive.nonzero().squeeze(1)
                model.set_attn_implementation("sdpa")
                hidden, positions = hidden[:, order], positions[:, order]
                cos_sin = adapter.rotary(hidden, positions)
                for i in range(layer, len(adapter.layers)):
                    hidden = adapter.layers[i](
                        hidden, attention_mask=None, position_embeddings=cos_sin, position_ids=positions
                    )
                return hidden
        finally:
            hook.remove()
            model.set_attn_implementation("sdpa")

    result = {"arch": arch, "keep": keep, "layer": layer, "visual_tokens": int(req.visual.numel())}
    for name, fn in (("ours", ours), ("reference", reference)):
        fn()  # warm-up
        result[f"{name}_peak_mib"] = bench_prefill.peak_memory(device, fn)
        result[f"{name}_ms"] = 1e3 * _median_time(device, fn, 3)
    result["memory_ratio"] = result["ours_peak_mib"] / max(result["reference_peak_mib"], 1e-9)
    result["time_ratio"] = result["ours_ms"] / result["reference_ms"]
    return result


def engine_vs_generate(arch: str, device: str, dtype: torch.dtype, frames: int, new_tokens: int) -> dict:
    """Our prefill + greedy decode at keep 1.0 vs stock `generate(inputs_embeds=...)`, same model."""
    adapter = bench_prefill.build_model(arch, device, dtype, seed=0)
    req = bench_prefill.make_request(adapter, frames, 14, seed=0)
    model = adapter.model
    model.generation_config.eos_token_id = None

    def ours() -> list[int]:
        state = bench_prefill.run_prefill(adapter, req, None)
        return engine.greedy_decode(adapter, state, max_new_tokens=new_tokens).token_ids

    def stock() -> list[int]:
        with torch.inference_mode():
            out = model.generate(
                inputs_embeds=req.embeds,
                attention_mask=torch.ones(req.embeds.shape[:2], dtype=torch.long, device=req.embeds.device),
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
            )
        return out[0, -new_tokens:].tolist()

    same = ours() == stock()  # warm-up, and the tokens must agree
    t_ours, t_stock = [], []
    for _ in range(3):  # interleaved
        t_ours.append(_median_time(device, ours, 1))
        t_stock.append(_median_time(device, stock, 1))
    return {
        "arch": arch,
        "new_tokens": new_tokens,
        "same_tokens": same,
        "engine_ms": 1e3 * statistics.median(t_ours),
        "generate_ms": 1e3 * statistics.median(t_stock),
        "time_ratio": statistics.median(t_ours) / statistics.median(t_stock),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU (checks the script only)")
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--budget-s", type=float, default=450.0, help="stop starting new parts after this")
    args = p.parse_args(argv)
    if args.smoke:
        device, dtype_name, arch, tarch, frames, videos, sizes = "cpu", "fp32", "tiny", "tiny", 2, 2, "1,2"
        prefill_extra = ["--grid", "4", "--repeats", "1", "--probe-repeats", "1"]
        summary_tokens, methods = "4", "uniform,fastv"
    else:
        if not torch.cuda.is_available():
            print("bench_gpu: no CUDA device (use --smoke to check the script on a CPU)", file=sys.stderr)
            return 2
        device, dtype_name, arch, tarch, frames, videos, sizes = (
            "cuda",
            "bf16",
            "llava-ov-7b",
            "llava-ov-7b",
            32,
            8,
            "1,2,4,8,16",
        )
        prefill_extra = ["--repeats", "3", "--probe-repeats", "5"]
        summary_tokens = "128"
        methods = "uniform,random,fastv,adatp,mlb,visionzip,dycoke,evs,vidcom2,fastvid,holitom,prunevid"
    dtype = bench_prefill.DTYPES[dtype_name]
    report = _Report(dtype_name, arch, device, args.budget_s)
    part = report.part
    prefill_args = ["--arch", arch, "--device", device, "--dtype", dtype_name, "--frames", str(frames)]
    part(
        "1-2 prefill speed-up and probe overhead",
        lambda: _capture(
            bench_prefill.main, [*prefill_args, "--methods", methods, "--keeps", "0.25,0.1", *prefill_extra]
        ),
    )
    part("3 fastv vs reference-style fastv", lambda: fastv_vs_reference(arch, device, dtype, frames, 0.25, 2))
    part("4 engine vs stock generate (keep 1.0)", lambda: engine_vs_generate(arch, device, dtype, frames, 32))
    part(
        "5 throughput vs batch size",
        lambda: _capture(
            bench_throughput.main,
            [
                "--arch", tarch, "--device", device, "--dtype", dtype_name, "--frames", str(frames),
                "--videos", str(videos), "--batch-sizes", sizes, "--methods", "none,fastv",
                "--summary-tokens", summary_tokens, "--rounds", "1" if args.smoke else "2",
            ],
        ),
    )  # fmt: skip
    return report.write(Path(args.out), args.smoke)


class _Report:
    """The parts of one benchmark run: each part's result (or error, or "skipped" once the time budget
    is spent), as JSON and as Markdown."""

    def __init__(self, dtype_name: str, arch: str, device: str, budget_s: float):
        self.started = time.perf_counter()
        self.device, self.budget_s = device, budget_s
        self.gpu = torch.cuda.get_device_name() if device == "cuda" else "cpu"
        self.data: dict[str, Any] = {
            "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "device": self.gpu,
            "torch": torch.__version__,
            "dtype": dtype_name,
            "arch": arch,
            "parts": {},
        }
        self.md = [
            f"# GPU benchmark {self.data['date_utc']} on {self.gpu} ({arch}, {dtype_name}, "
            f"torch {torch.__version__})\n"
        ]

    def part(self, name: str, fn: Any) -> None:
        if time.perf_counter() - self.started > self.budget_s:
            self.data["parts"][name] = {"skipped": "time budget spent"}
            self.md.append(f"## {name}\n\nskipped: time budget spent\n")
            return
        t0 = time.perf_counter()
        try:
            value = fn()
            self.data["parts"][name] = {"seconds": time.perf_counter() - t0, "result": value}
            self.md.append(f"## {name}\n\n{value if isinstance(value, str) else _table(value)}\n")
        except Exception:
            self.data["parts"][name] = {"error": traceback.format_exc()}
            self.md.append(f"## {name}\n\nfailed:\n```\n{traceback.format_exc()}\n```\n")
        finally:
            if self.device == "cuda":
                torch.cuda.empty_cache()
        print(f"bench_gpu: {name} done in {time.perf_counter() - t0:.0f}s", file=sys.stderr)

    def write(self, out: Path, smoke: bool) -> int:
        """Write `<out>/gpu-<date>-<device>[-smoke].json/.md`; exit status 1 when a part failed."""
        out.mkdir(parents=True, exist_ok=True)
        stem = f"gpu-{self.data['date_utc'][:10]}-{self.gpu.replace(' ', '_')}" + ("-smoke" if smoke else "")
        (out / f"{stem}.json").write_text(json.dumps(self.data, indent=2, default=str))
        (out / f"{stem}.md").write_text("\n".join(self.md))
        print("\n".join(self.md))
        elapsed = time.perf_counter() - self.started
        print(f"bench_gpu: wrote {out / stem}.json/.md in {elapsed:.0f}s", file=sys.stderr)
        failed = [name for name, value in self.data["parts"].items() if "error" in value]
        return 1 if failed else 0


def _table(value: dict) -> str:
    return "| key | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in value.items())


if __name__ == "__main__":
    raise SystemExit(main())
