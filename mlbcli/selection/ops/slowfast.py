"""SlowFast-LLaVA's training-free token layout as a pre-LLM method (research/algorithms.md §5.1).

Slow path: `slow_frames` uniformly spaced frames (capped at T), each horizontally 1-D max-pooled with
width `slow_pool` (SF-LLaVA: 24x24 -> 24x12; ragged widths keep a narrower last window, so a frame
keeps h * ceil(w / slow_pool) tokens). Fast path: every frame adaptively average-pooled to
`fast_size` x `fast_size` (capped at the frame grid), appended after the visual block, so the fast
tokens come after the slow ones as in SF-LLaVA. A slow token replaces the first token of its pooling
window (it keeps that token's position id on video LLMs; image LLMs re-sequence positions).

--keep does not apply (an error if given): the token count is fixed by the pooling (with the
defaults, SF-LLaVA's 50-frame layout: 10*24*12 + 50*16 = 3680 tokens on LLaVA-NeXT). The realized
keep is measured per row; `keep_note` stays empty (there is no budget to miss).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from mlbcli.selection.ops.baselines import merged_index
from mlbcli.selection.plan import LayerContext, LayerKeep, PrunePlan

if TYPE_CHECKING:
    from mlbcli.models.base import VideoTokens


def slow_frame_indices(num_frames: int, count: int, variant: str = "paper") -> list[int]:
    """`count` (capped at T) uniformly spaced frame indices, ascending.

    "paper": rounded linspace with the first and last frame included ([0, 5, 11, ..., 49] for 10 of 50).
    "official" (SF-LLaVA `prepare_slowfast`): int(linspace(0, T, count + 1))[:-1], i.e. the starts of
    `count` equal chunks ([0, 5, 10, ..., 45]); indices the code would repeat (T < count) appear once.
    """
    if variant == "official":  # the code's own float32 linspace and int cast
        starts = torch.linspace(0, num_frames, max(1, count) + 1).to(torch.int32).tolist()[:-1]
        return sorted(set(starts))
    count = max(1, min(count, num_frames))
    if count == 1:
        return [0]
    return sorted({round(i * (num_frames - 1) / (count - 1)) for i in range(count)})


def slow_pool(frames: torch.Tensor, grid: tuple[int, int], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[F, N, D] frames -> (pooled [F, h * ceil(w/width), D], window-start positions [h * ceil(w/width)])."""
    F_, N, D = frames.shape
    h, w = grid
    cols = math.ceil(w / width)
    x = frames.reshape(F_ * h, w, D).permute(0, 2, 1)  # [F*h, D, w]
    pooled = F.max_pool1d(x.float(), kernel_size=width, stride=width, ceil_mode=True)  # [F*h, D, cols]
    pooled = pooled.permute(0, 2, 1).reshape(F_, h * cols, D).to(frames.dtype)
    positions = (torch.arange(h)[:, None] * w + torch.arange(cols)[None] * width).flatten()
    return pooled, positions


def fast_pool(frames: torch.Tensor, grid: tuple[int, int], size: int) -> torch.Tensor:
    """[T, N, D] -> [T * fh * fw, D], every frame adaptively average-pooled to min(size, h) x min(size, w)."""
    T, N, D = frames.shape
    h, w = grid
    out = (min(size, h), min(size, w))
    x = frames.reshape(T, h, w, D).permute(0, 3, 1, 2)  # [T, D, h, w]
    pooled = F.adaptive_avg_pool2d(x.float(), out).to(frames.dtype)  # [T, D, fh, fw]
    return pooled.permute(0, 2, 3, 1).reshape(T * out[0] * out[1], D)


def slowfast_count(
    num_frames: int, grid: tuple[int, int], params: dict[str, Any], variant: str = "paper"
) -> int:
    h, w = grid
    slow = len(slow_frame_indices(num_frames, params["slow_frames"], variant))
    fast = min(params["fast_size"], h) * min(params["fast_size"], w)
    return slow * h * math.ceil(w / params["slow_pool"]) + num_frames * fast


def slowfast_plan(video: VideoTokens, params: dict[str, Any], variant: str) -> PrunePlan:
    """Slow tokens in place of their pooling windows' first tokens, fast tokens appended after them."""
    T, N, grid = video.num_frames, video.tokens_per_frame, video.grid
    slow = slow_frame_indices(T, params["slow_frames"], variant)
    width = params["slow_pool"]

    def prune(ctx: LayerContext) -> LayerKeep:
        device = ctx.visual_slots.device
        x = ctx.hidden[0, ctx.visual_slots].view(T, N, -1)  # [T, N, D]
        pooled, positions = slow_pool(x[slow], grid, width)  # [S, P, D], [P]
        keep = (torch.tensor(slow)[:, None] * N + positions[None]).flatten()
        # a slow frame's token is max-pooled into its window's first token (kept); other frames' tokens
        # live on in the appended fast tokens only, none of them a kept token (-1)
        cell = torch.arange(N)
        start = cell // grid[1] * grid[1] + cell % grid[1] // width * width  # [N] window start position
        owner = torch.full((T, N), -1, dtype=torch.long)
        owner[slow] = torch.tensor(slow)[:, None] * N + start
        fast = fast_pool(x, grid, params["fast_size"])
        info = {
            "slow_frames": slow,
            "slow_tokens": int(keep.numel()),
            "fast_tokens": int(fast.shape[0]),
            "slow_pool": width,
            "fast_size": params["fast_size"],
            "variant": variant,
        }
        return LayerKeep(
            keep=keep.to(device),
            replace=pooled.reshape(-1, pooled.shape[-1]),
            append=fast,
            info=info,
            merged_into=merged_index(owner.flatten(), keep),
        )

    return PrunePlan(steps={0: prune})
