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

from mlbcli.engine.plan import LayerContext, LayerKeep, PrunePlan
from mlbcli.selection.base import Method, MethodOptions, register_method
from mlbcli.selection.params import resolve_params

if TYPE_CHECKING:
    from mlbcli.models.base import Prompt, VideoTokens
    from mlbcli.selection.base import PlanContext


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


@register_method
class SlowFast(Method):
    """SlowFast-LLaVA (training-free, arXiv 2407.15841) as a pre-LLM token layout; see module doc.

    [C] slow = 10 uniformly spaced frames, horizontal 1-D max-pool 24x24 -> 24x12; fast = all frames
        adaptive-avg-pooled to 4x4; fast tokens after the slow ones.
    [R] a slow token takes the place (and on video LLMs the position id) of its window's first token;
        --keep does not apply (an error).
    Variants (`--variant`): paper (default) = slow frames by rounded linspace, first and last frame
    included; official = SF-LLaVA's `linspace(0, T, n+1)[:-1]` chunk starts, positions re-sequenced
    (SF-LLaVA concatenates slow then fast tokens; M-RoPE families keep original positions).
    """

    name = "slowfast"
    description = "SlowFast-LLaVA: few frames lightly pooled (slow) + all frames pooled to 4x4 (fast, after)."
    prune_point = "input"
    options_used = frozenset({"variant", "positions"})
    variants = ("paper", "official")

    def __init__(self, options: MethodOptions | None = None):
        super().__init__(options)
        self._params()  # UsageError at construction, before any work

    def _params(self) -> dict[str, Any]:
        return resolve_params(self.options.params, (self.name,))

    @property
    def positions(self) -> str:
        default = "contiguous" if self.variant == "official" else "original"
        return self.options.positions or default

    def nominal_schedule(self, num_visual: int, num_frames: int = 1) -> dict[int, int]:
        """Slow + fast tokens, assuming square frame grids (the measured count is in every row)."""
        n = num_visual // max(1, num_frames)
        side = math.isqrt(n)
        grid = (side, side) if side * side == n else (1, n)
        return {0: slowfast_count(num_frames, grid, self._params(), self.variant or "paper")}

    def plan(
        self, video: VideoTokens, prompt: Prompt | None, context: PlanContext | None = None
    ) -> PrunePlan:
        params = self._params()
        T, N, grid = video.num_frames, video.tokens_per_frame, video.grid
        slow = slow_frame_indices(T, params["slow_frames"], self.variant or "paper")
        width = params["slow_pool"]

        def prune(ctx: LayerContext) -> LayerKeep:
            device = ctx.visual_slots.device
            x = ctx.hidden[0, ctx.visual_slots].view(T, N, -1)  # [T, N, D]
            pooled, positions = slow_pool(x[slow], grid, width)  # [S, P, D], [P]
            keep = (torch.tensor(slow)[:, None] * N + positions[None]).flatten()
            fast = fast_pool(x, grid, params["fast_size"])
            info = {
                "slow_frames": slow,
                "slow_tokens": int(keep.numel()),
                "fast_tokens": int(fast.shape[0]),
                "slow_pool": width,
                "fast_size": params["fast_size"],
                "variant": self.variant,
            }
            return LayerKeep(
                keep=keep.to(device),
                replace=pooled.reshape(-1, pooled.shape[-1]),
                append=fast,
                info=info,
            )

        return self.position_policy(PrunePlan(steps={0: prune}), context)
