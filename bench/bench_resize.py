"""Resize benchmark: mlb's reference-exact uint8 resize vs the float resize it replaced, side by side.

Both resize the same decoded-size frames to a model's input size with bicubic + antialias and normalise
them: `new` is `ModelAdapter.normalized_frames`' path (`resize_frames` on uint8, then the fused
normalisation), `old` the float path mlb used before (interpolate floats, clamp, rescale, normalise).
Rounds alternate (old, new, old, new...) so machine load hits both alike; the result is the ratio of
medians, plus the largest pixel difference between the two (in 8-bit levels).

    python bench/bench_resize.py                       # CPU: 32 frames 1280x720 -> 384x384 and 448x812
    python bench/bench_resize.py --device cuda --frames 64
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from mlbcli.models.base import resize_frames

MEAN = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1)
STD = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1)


def old(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    x = F.interpolate(frames.float(), size=size, mode="bicubic", antialias=True, align_corners=False)
    return (x.clamp(0, 255) / 255 - MEAN.to(x.device)) / STD.to(x.device)


def new(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    x = resize_frames(frames, size).float()
    return (x - MEAN.to(x.device) * 255) / (STD.to(x.device) * 255)


def timed(fn, frames: torch.Tensor, size: tuple[int, int]) -> float:
    if frames.device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    fn(frames, size)
    if frames.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (args.frames, 720, 1280, 3), dtype=torch.uint8, generator=generator)
    frames = frames.to(args.device).permute(0, 3, 1, 2)  # [T, 3, H, W], as the adapters view them
    print(
        "| target | frames | old (s) | new (s) | new / old | max diff (levels) |\n|---|---|---|---|---|---|"
    )
    for size in [(384, 384), (448, 812)]:
        old_s, new_s = [], []
        for _ in range(args.rounds):
            old_s.append(timed(old, frames, size))
            new_s.append(timed(new, frames, size))
        diff = ((old(frames, size) - new(frames, size)).abs().max() * 0.5 * 255).item()
        o, n = statistics.median(old_s), statistics.median(new_s)
        print(f"| {size[1]}x{size[0]} | {args.frames} | {o:.3f} | {n:.3f} | {n / o:.2f}x | {diff:.2f} |")


if __name__ == "__main__":
    main()
