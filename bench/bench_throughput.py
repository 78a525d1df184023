"""Throughput benchmark: videos/s and peak memory vs --batch-size, through the real `Pipeline`.

A LLaVA-OneVision model (SigLIP tower + Qwen2 LLM) is built from config with random weights, in
memory, at one of the `ARCHS` sizes; synthetic frames go through the whole request path a batch run
takes (`Pipeline.encode_many` + `Pipeline.run`: vision tower, planning, batched prefill, batched
greedy decode). Two workloads:
- `answer`: multiple-choice style, a few new tokens per question (`--answer-tokens`, default 4);
- `summarize`: one long answer per video (`--summary-tokens`, default 128).
EOS is disabled, so every row generates exactly its token budget (random weights would stop anywhere).

    python bench/bench_throughput.py                                         # CPU, mid-size model
    python bench/bench_throughput.py --device cuda --dtype bf16 --arch llava-ov-7b --batch-sizes 1,2,4,8,16

Per (workload, method, batch size): videos/s over `--videos` videos (after one untimed warm-up batch),
speed-up vs batch 1, and peak memory (CUDA: max allocated above the weights; CPU: peak RSS above the
start, sampled). Results are printed as a Markdown table and, with `--json FILE`, written as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_prefill import peak_memory, sync  # noqa: E402  (one memory/timing helper for every bench)
from machine import machine_line, spread_text  # noqa: E402

from mlbcli.engine.pipeline import Pipeline, Request  # noqa: E402
from mlbcli.selection import MethodOptions, get_method  # noqa: E402

ARCHS = {
    # name: (LLM layers, hidden, FFN, heads, kv heads; vision layers, hidden, FFN, heads, image px)
    "tiny": (4, 64, 128, 4, 2, 2, 32, 64, 2, 112),
    "mid": (8, 512, 1408, 8, 2, 4, 256, 1024, 4, 224),
    "llava-ov-7b": (28, 3584, 18944, 28, 4, 26, 1152, 4304, 16, 384),  # Qwen2-7B + SigLIP-so400m/14 @ 384
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def build_pipeline(
    arch: str, device: str, dtype: torch.dtype, method: str, keep: float, seed: int = 0
) -> Pipeline:
    """A `Pipeline` over a random-weight LLaVA-OneVision model of shape `arch` (no checkpoint needed)."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        Qwen2Config,
        SiglipVisionConfig,
    )

    from mlbcli.models.llava_onevision import LlavaOnevisionAdapter
    from mlbcli.testing.tokenizer import build_tokenizer

    layers, hidden, ffn, heads, kv, v_layers, v_hidden, v_ffn, v_heads, px = ARCHS[arch]
    tok = build_tokenizer()
    cfg = LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(
            hidden_size=v_hidden,
            intermediate_size=v_ffn,
            num_hidden_layers=v_layers,
            num_attention_heads=v_heads,
            image_size=px,
            patch_size=14,
            vision_use_head=False,
        ),
        text_config=Qwen2Config(
            vocab_size=len(tok),
            hidden_size=hidden,
            intermediate_size=ffn,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=kv,
            max_position_embeddings=32768,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            tie_word_embeddings=False,
        ),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        video_token_index=tok.convert_tokens_to_ids("<video>"),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=[[px, px]],
    )
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # initialise in the target dtype and device (7B: no fp32 copy)
    try:
        with torch.device(device):
            model = LlavaOnevisionForConditionalGeneration(cfg).eval()
    finally:
        torch.set_default_dtype(previous)
    model.generation_config.eos_token_id = -1  # never stop early: every row costs its full budget
    preprocess = {"size": {"height": px, "width": px}, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    adapter = LlavaOnevisionAdapter(model, tok, f"random:{arch}", preprocess)
    options = MethodOptions(keep=keep) if keep < 1.0 else MethodOptions()  # `none` takes no --keep
    return Pipeline(adapter, method=get_method(method, options))


def run_workload(
    pipe: Pipeline,
    clips: list[np.ndarray],
    questions_per_video: int,
    new_tokens: int,
    batch: int,
    device: str,
) -> tuple[float, float]:
    """(seconds, peak MiB) to answer every clip in batches of `batch` items, as `ModelWorker` would."""
    items = [(clip, q) for clip in clips for q in range(questions_per_video)]
    took: list[float] = []

    def answer_all() -> None:
        sync(device)
        started = time.perf_counter()
        for start in range(0, len(items), batch):
            chunk = items[start : start + batch]
            videos: dict[int, Any] = {}
            distinct = [clip for clip in {id(c): c for c, _ in chunk}.values()]
            for clip, encoded in zip(distinct, pipe.encode_many(distinct), strict=True):
                videos[id(clip)] = encoded
            requests = [
                Request(videos[id(clip)], f"Question {q}: what happens? Options: A, B, C, D.", new_tokens)
                for clip, q in chunk
            ]
            for result in pipe.run(requests):
                if result.error is not None:
                    raise result.error
        sync(device)
        took.append(time.perf_counter() - started)

    peak = peak_memory(device, answer_all)  # CUDA max allocated, or sampled RSS on CPU (an estimate)
    return took[0], peak


def print_table(args: argparse.Namespace, results: list[dict], videos: int) -> None:
    """The Markdown table of `results` (one row per workload, method and batch size) and the spread of the
    times behind each rate, so a reader can judge it."""
    print(
        f"### Throughput: {args.arch}, {args.frames} frames, {args.videos} videos, device {args.device}, "
        f"{args.dtype}, torch threads {torch.get_num_threads()}, keep {args.keep} (none: 1.0), "
        f"median of {args.rounds} interleaved rounds, "
        f"answer {args.answer_tokens} / summarize {args.summary_tokens} new tokens\n"
    )
    print("| workload | method | batch | videos/s | vs batch 1 | peak MiB |")
    print("|---|---|---|---|---|---|")
    for row in results:
        print(
            f"| {row['workload']} | {row['method']} | {row['batch_size']} | {row['videos_per_s']:.2f} | "
            f"{row['speedup_vs_batch_1']:.2f}x | {row['peak_mib']:.0f} |"
        )
    print()
    for row in results:  # the spread of the time behind each videos/s, so a reader can judge it
        label = f"{row['workload']}, {row['method']}, batch {row['batch_size']}"
        print(f"- {label}: {spread_text(row['seconds'])} for {videos} videos")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", choices=sorted(ARCHS), default="mid")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--videos", type=int, default=8, help="videos per measurement (after one warm-up batch)")
    p.add_argument("--batch-sizes", default="1,2,4,8")
    p.add_argument("--methods", default="none,uniform,fastv,adatp")
    p.add_argument("--keep", type=float, default=0.25)
    p.add_argument("--workloads", default="answer,summarize")
    p.add_argument("--answer-tokens", type=int, default=4)
    p.add_argument("--summary-tokens", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per batch size (median)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", help="write the results here as JSON")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    before = machine_line()
    print(before, flush=True)
    rng = np.random.default_rng(0)
    px = ARCHS[args.arch][-1]
    clips = [rng.integers(0, 255, (args.frames, px, px, 3), dtype=np.uint8) for _ in range(args.videos)]
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    workloads = {"answer": (1, args.answer_tokens), "summarize": (1, args.summary_tokens)}
    results = []
    pipe = None
    for method in args.methods.split(","):
        keep = 1.0 if method == "none" else args.keep
        del pipe
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
        pipe = build_pipeline(args.arch, args.device, DTYPES[args.dtype], method, keep)
        for workload in args.workloads.split(","):
            questions, new_tokens = workloads[workload]
            run_workload(pipe, clips[:1], questions, new_tokens, 1, args.device)  # warm-up
            # Interleaved rounds (every batch size once per round), medians: a load drift on a shared
            # machine hits every batch size alike instead of whichever ran last.
            seconds: dict[int, list[float]] = {batch: [] for batch in sizes}
            peaks: dict[int, float] = {batch: 0.0 for batch in sizes}
            for _ in range(args.rounds):
                for batch in sizes:
                    took, peak = run_workload(pipe, clips, questions, new_tokens, batch, args.device)
                    seconds[batch].append(took)
                    peaks[batch] = max(peaks[batch], peak)
            base = len(clips) / statistics.median(seconds[sizes[0]])
            for batch in sizes:
                rate = len(clips) / statistics.median(seconds[batch])
                row = {
                    "workload": workload,
                    "method": method,
                    "keep": keep,
                    "batch_size": batch,
                    "videos_per_s": rate,
                    "speedup_vs_batch_1": rate / base,
                    "peak_mib": peaks[batch],
                    "seconds": seconds[batch],
                }
                results.append(row)
                print(json.dumps(row), file=sys.stderr)
    print_table(args, results, len(clips))
    print(f"\n{before}\n{machine_line().replace('machine:', 'after:  ')}")
    if args.json:
        meta = {"arch": args.arch, "device": args.device, "dtype": args.dtype, "frames": args.frames}
        meta["machine"] = before
        if args.device.startswith("cuda"):
            meta["gpu"] = torch.cuda.get_device_name()
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
