"""Prefill benchmark: every method at several --keep values vs the unpruned prefill, on one machine.

A LLaVA-OneVision-like decoder (Qwen2 architecture) is built from config with random weights and fed
`VideoTokens` made directly (the vision tower is skipped: it costs the same for every method), so
the numbers isolate what token pruning changes: the decoder prefill.

    python bench/bench_prefill.py                                   # CPU, mid-size (8 layers, hidden 512)
    python bench/bench_prefill.py --device cuda --dtype bf16 --arch llava-ov-7b   # real 7B shape, GPU

What is measured, per (method, keep):
- prefill time: median over `--repeats` rounds; every round runs the vanilla prefill and then each
  pruned configuration (round-robin), so slow drifts (thermal, other load) hit both sides alike;
- peak memory: on CUDA `torch.cuda.max_memory_allocated` above the allocated memory before the call
  (activations + KV cache + probe; weights excluded). On CPU: peak resident set size above the RSS
  before the call, sampled every 2 ms by a thread in a separate, untimed warm-up round (the allocator
  may reuse freed pages, so it is an estimate of the extra memory the call needed, not an exact peak);
- flops_ratio and realized keep: from the engine's measured schedule (`runner.token_stats`);
- probe overhead: a plan whose pruner at layer K keeps everything but needs the layer-(K-1) probe vs
  the plain prefill (median over `--probe-repeats` interleaved pairs).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_line, spread_text  # noqa: E402

from mlbcli.engine import batch as engine  # noqa: E402
from mlbcli.engine.flops import LLMDims  # noqa: E402
from mlbcli.engine.stats import token_stats  # noqa: E402
from mlbcli.models.base import Prompt, VideoTokens  # noqa: E402
from mlbcli.models.traits import DecoderTraits  # noqa: E402
from mlbcli.selection import (  # noqa: E402
    MethodOptions,
    get_method,
    method_option_rules,  # noqa: E402
)

ARCHS = {
    # name: (layers, hidden, FFN, heads, kv heads, vocab)
    "tiny": (3, 64, 128, 4, 2, 1024),  # smoke tests of the scripts only
    "mid": (8, 512, 1408, 8, 2, 1024),
    "llava-ov-7b": (28, 3584, 18944, 28, 4, 152064),  # Qwen2-7B, the LLM of LLaVA-OneVision-7B
    "llava-ov-0.5b": (24, 896, 4864, 14, 2, 151936),  # Qwen2-0.5B
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class BenchAdapter(DecoderTraits):
    """The slice of `ModelAdapter` the engine uses, over a bare Qwen2ForCausalLM."""

    renumber_input_positions = False  # LLaVA-OneVision keeps original position ids

    def check_context(
        self, num_prompt_tokens: int, max_new_tokens: int, *, num_visual: int | None = None
    ) -> None:
        """Random-weight model built with a 32k context: nothing to check."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.decoder = model.model
        self.layers = self.decoder.layers
        self.text_config = model.config
        self.lm_head = model.lm_head
        self.apply_rotary = sys.modules[type(self.decoder).__module__].apply_rotary_pos_emb

    def rotary(self, hidden: torch.Tensor, position_ids: torch.Tensor):
        return self.decoder.rotary_emb(hidden, position_ids)

    def positions_after_input_pruning(self, position_ids: torch.Tensor) -> torch.Tensor:
        return position_ids  # a video LLM: survivors keep their original positions

    def next_positions(self, position_ids: torch.Tensor, steps: int) -> torch.Tensor:
        return position_ids.max(dim=-1, keepdim=True).values + 1 + steps

    eos_token_ids: set[int] = set()  # random weights: decode benchmarks always run their full length


def build_model(arch: str, device: str, dtype: torch.dtype, seed: int) -> BenchAdapter:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    layers, hidden, ffn, heads, kv, vocab = ARCHS[arch]
    cfg = Qwen2Config(
        num_hidden_layers=layers,
        hidden_size=hidden,
        intermediate_size=ffn,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        vocab_size=vocab,
        max_position_embeddings=32768,
        attn_implementation="sdpa",
    )
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # initialise directly in the target dtype / device (7B: no fp32 copy)
    try:
        with torch.device(device):
            model = Qwen2ForCausalLM(cfg).eval()
    finally:
        torch.set_default_dtype(previous)
    return BenchAdapter(model)


@dataclass
class Request:
    video: VideoTokens
    prompt: Prompt
    embeds: torch.Tensor  # [1, L, D]
    positions: torch.Tensor  # [1, L]
    visual: torch.Tensor  # [n] visual slots


def make_request(adapter: BenchAdapter, frames: int, side: int, seed: int) -> Request:
    """Synthetic video tokens with scene structure (4 scenes, partly static positions) + a text prompt."""
    g = torch.Generator().manual_seed(seed)
    D = adapter.text_config.hidden_size
    N = side * side
    scenes = 4
    scene_tokens = torch.randn(scenes, N, D, generator=g)
    scene_of = torch.arange(frames) * scenes // frames  # [T]
    static = (torch.rand(N, generator=g) < 0.3).float()[None, :, None]  # [1, N, 1] 30% static positions
    noise = torch.randn(frames, N, D, generator=g) * (0.1 * static + 0.8 * (1 - static))
    features = (scene_tokens[scene_of] + noise) * 0.02  # [T, N, D], roughly the embedding scale
    frame_features = torch.randn(scenes, 64, generator=g)[scene_of] + 0.05 * torch.randn(
        frames, 64, generator=g
    )
    device, dtype = adapter.model.device, adapter.model.dtype
    video = VideoTokens(
        features.to(device, dtype),
        (side, side),
        torch.zeros(1, D, device=device, dtype=dtype),
        frame_features,
    )
    prefix, question, suffix = 14, 24, 5
    n = frames * N
    length = prefix + n + 1 + question + suffix
    ids = torch.randint(0, adapter.text_config.vocab_size, (1, length), generator=g).to(device)
    q_index = torch.arange(prefix + n + 1, prefix + n + 1 + question)
    prompt = Prompt(ids, prefix, n, 1, q_index, "")
    with torch.inference_mode():
        embeds = adapter.decoder.embed_tokens(ids)
        embeds[0, prefix : prefix + n] = video.features.reshape(n, D)
    return Request(
        video, prompt, embeds, torch.arange(length, device=device)[None], torch.arange(prefix, prefix + n)
    )


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(device: str, fn: Callable[[], engine.PrefillResult]) -> tuple[float, engine.PrefillResult]:
    sync(device)
    started = time.perf_counter()
    state = fn()
    sync(device)
    return time.perf_counter() - started, state


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def peak_memory(device: str, fn: Callable[[], object]) -> float:
    """Extra memory (MiB) the call needed above what was allocated before it (see module docstring)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    base = _rss_bytes()
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        fn()
    finally:
        stop.set()
        thread.join()
    peak[0] = max(peak[0], _rss_bytes())
    return (peak[0] - base) / 2**20


def run_prefill(adapter: BenchAdapter, req: Request, plan: engine.PrunePlan | None) -> engine.PrefillResult:
    return engine.prefill(adapter, req.embeds, req.positions, req.visual, req.prompt.question_index, plan)


def probe_compute_seconds(
    adapter: BenchAdapter, req: Request, layer: int, device: str, repeats: int = 5
) -> float:
    """Median time of the probe's own work (hooks + `received()`) on decoder layer `layer - 1` alone."""
    from mlbcli.engine.probe import attention_probe

    block = adapter.layers[layer - 1]
    cos_sin = adapter.rotary(req.embeds, req.positions)
    out = []
    with torch.inference_mode():
        for _ in range(repeats):
            with attention_probe(block.self_attn, adapter.apply_rotary) as probe:
                block(
                    req.embeds, attention_mask=None, position_embeddings=cos_sin, position_ids=req.positions
                )
            rows = req.prompt.question_index.to(req.embeds.device)
            out.append(timed(device, functools.partial(probe.received, 0, rows, req.embeds.shape[1]))[0])
    return statistics.median(out)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", choices=sorted(ARCHS), default="mid")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--grid", type=int, default=14, help="tokens per frame side (14 -> 196)")
    p.add_argument(
        "--methods",
        default="uniform,random,fastv,adatp,mlb,visionzip,dycoke,evs,vidcom2,fastvid,holitom,prunevid",
    )
    p.add_argument("--keeps", default="1.0,0.5,0.25,0.1")
    p.add_argument("--layer", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="timed rounds (after one untimed warm-up round)")
    p.add_argument("--probe-repeats", type=int, default=5)
    p.add_argument("--only-probe", action="store_true", help="measure the probe overhead only")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--seed", type=int, default=0)
    return p


def _plans(
    req: Request, methods: list[str], keeps: list[float], layer_k: int
) -> tuple[dict[tuple[str, float], Any], set[tuple[str, float]]]:
    """Per (method, keep): a function that plans the request (timed with the prefill), and the set of
    configurations whose plan is empty. An empty plan (every method at --keep 1.0 except fixed-layout
    ones such as slowfast) *is* the vanilla prefill: it is reported as such instead of being timed again."""
    plans: dict[tuple[str, float], Any] = {}
    empty: set[tuple[str, float]] = set()
    for m in methods:
        for k in keeps:
            # --layer only for the methods that use it (an option a method does not use is an error)
            layer = layer_k if "layer" in method_option_rules(m)[0] else None
            method = get_method(m, MethodOptions(keep=k, layer=layer))
            if not method.plan(req.video, req.prompt).steps:
                empty.add((m, k))
                continue
            plans[(m, k)] = lambda method=method: method.plan(req.video, req.prompt)  # plan() is timed too
    return plans, empty


def _probe_line(adapter: Any, req: Request, layer: int, device: str, repeats: int) -> str:
    """Probe overhead: keep-everything pruner at layer K that needs scores vs no plan, interleaved."""

    def keep_all(ctx: engine.LayerContext) -> engine.LayerKeep:
        return engine.LayerKeep(keep=torch.arange(ctx.visual_slots.numel(), device=ctx.visual_slots.device))

    probe_plan = engine.PrunePlan(steps={layer: keep_all}, needs_scores=frozenset({layer}))
    plain_t, probe_t = [], []
    for _ in range(repeats):
        plain_t.append(timed(device, lambda: run_prefill(adapter, req, None))[0])
        probe_t.append(timed(device, lambda: run_prefill(adapter, req, probe_plan))[0])
    plain, probed = statistics.median(plain_t), statistics.median(probe_t)
    component = probe_compute_seconds(adapter, req, layer, device)
    return (
        f"Probe overhead (layer {layer - 1} probe, question rows, keep-all step at layer {layer}): "
        f"plain {plain * 1e3:.1f} ms, probed {probed * 1e3:.1f} ms, overhead {100 * (probed / plain - 1):+.2f}% "
        f"(median of {repeats} interleaved pairs; per-pair ratios: median "
        f"{100 * (statistics.median(b / a for a, b in zip(plain_t, probe_t, strict=True)) - 1):+.2f}%). "
        f"Probe computation alone (softmax of the query rows, isolated): {component * 1e3:.1f} ms = "
        f"{100 * component / plain:.2f}% of the plain prefill"
    )


def _table(args: argparse.Namespace, req: Request, rows: list[tuple[str, float, Any, float, float]]) -> None:
    """Print the Markdown table; `rows` are (method, keep, TokenStats or None = empty plan, seconds, MiB),
    the first being vanilla."""
    layers, hidden, ffn, heads, kv, _ = ARCHS[args.arch]
    print(
        f"### Prefill benchmark: {args.arch} (L={layers}, D={hidden}, D'={ffn}, H={heads}, H_kv={kv}), "
        f"{args.frames} frames x {args.grid * args.grid} = {req.video.num_visual} visual tokens, prompt "
        f"{req.prompt.length} tokens, device {args.device}, {args.dtype}, torch threads "
        f"{torch.get_num_threads()}, K={args.layer}, median of {args.repeats} interleaved rounds\n"
    )
    mem_label = (
        "peak extra GPU mem (MiB)" if args.device.startswith("cuda") else "peak extra RSS (MiB, sampled)"
    )
    print(
        f"| method | keep | realized keep | FLOPs ratio | prefill ms | vanilla ms | speedup | {mem_label} |"
    )
    print("|---|---|---|---|---|---|---|---|")
    vanilla, vanilla_mem = rows[0][3], rows[0][4]
    print(
        f"| none (vanilla) | 1.00 | 1.000 | 1.000 | {vanilla * 1e3:.0f} | {vanilla * 1e3:.0f} | 1.00x | "
        f"{vanilla_mem:.0f} |"
    )
    for m, k, s, t, mem in rows[1:]:
        if s is None:
            print(f"| {m} | {k:.2f} | 1.000 | 1.000 | = vanilla (empty plan) | | | |")
            continue
        print(
            f"| {m} | {k:.2f} | {s.keep_realized:.3f} | {s.flops_ratio:.3f} | {t * 1e3:.0f} | "
            f"{vanilla * 1e3:.0f} | {vanilla / t:.2f}x | {mem:.0f} |"
        )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    before = machine_line()
    print(before, flush=True)
    adapter = build_model(args.arch, args.device, DTYPES[args.dtype], args.seed)
    req = make_request(adapter, args.frames, args.grid, args.seed)
    dims = LLMDims.from_config(adapter.text_config)
    methods = [m for m in args.methods.split(",") if m]
    keeps = [float(k) for k in args.keeps.split(",") if k]
    plans, empty = _plans(req, [] if args.only_probe else methods, keeps, args.layer)
    configs = list(plans)
    times: dict[object, list[float]] = {key: [] for key in configs}
    times["vanilla"] = []
    memory: dict[object, float] = {}
    stats = {}
    memory["vanilla"] = peak_memory(args.device, lambda: run_prefill(adapter, req, None))  # warm-up round
    if args.only_probe:
        args.repeats = 0
    for key in configs:
        holder: dict[str, engine.PrefillResult] = {}
        memory[key] = peak_memory(
            args.device,
            lambda key=key, holder=holder: holder.setdefault("s", run_prefill(adapter, req, plans[key]())),
        )
        stats[key] = token_stats(holder["s"], req.video, dims)
    for _ in range(args.repeats):
        times["vanilla"].append(timed(args.device, lambda: run_prefill(adapter, req, None))[0])
        for key in configs:
            times[key].append(timed(args.device, lambda key=key: run_prefill(adapter, req, plans[key]()))[0])
    probe_line = _probe_line(adapter, req, args.layer, args.device, args.probe_repeats)
    if args.only_probe:
        print(probe_line)
        return 0
    rows: list[tuple[str, float, Any, float, float]] = [
        ("none", 1.0, None, statistics.median(times["vanilla"]), memory["vanilla"])
    ]
    for m in methods:
        for k in keeps:
            if (m, k) in empty:
                rows.append((m, k, None, 0.0, 0.0))
            else:
                rows.append((m, k, stats[(m, k)], statistics.median(times[(m, k)]), memory[(m, k)]))
    _table(args, req, rows)
    print("\n" + probe_line)
    print()
    for key, seconds in times.items():  # the spread behind each median, so a reader can judge it
        name = key if isinstance(key, str) else f"{key[0]} keep {key[1]}"
        print(f"- {name}: prefill {spread_text([1000 * t for t in seconds], 'ms', 0)}")
    print(f"\n{before}\n{machine_line().replace('machine:', 'after:  ')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
