"""Per-request token statistics, measured from the engine's actual schedule (the columns of a row:
kept tokens, FLOPs ratios, per-frame counts, attention mass, decode-time KV reads)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from mlbcli.engine.cache import PrefillResult
from mlbcli.engine.decode import Generation, step_visual_keys
from mlbcli.engine.flops import LLMDims, probe_flops, visual_flops
from mlbcli.io.kept_tokens import KeptRecord, encode_kept
from mlbcli.selection.base import keep_note

if TYPE_CHECKING:
    from mlbcli.models.base import VideoTokens
    from mlbcli.selection import Method


@dataclass
class TokenStats:
    """Per-request token statistics; every number is measured from the engine's actual schedule."""

    visual_tokens_in: int
    visual_tokens_kept: int  # visual tokens entering the last decoder layer (appended summary included)
    keep_realized: float  # kept / in
    flops_ratio: float  # visual-token LLM FLOPs vs the unpruned run (algorithms.md §2)
    tokens_per_layer: list[int]
    kept_per_frame: list[int]  # surviving original tokens of each frame (appended tokens not included)
    appended_tokens: int
    attention_per_frame: list[float] | None  # probe attention mass per frame (first probe layer)
    info: dict[str, Any] = field(default_factory=dict)  # method diagnostics (segments, budgets...)
    # (final pass + the method's probe passes) / vanilla; None = no probe passes (= flops_ratio)
    flops_probe_ratio: float | None = None
    # Why the method's budget was not met (`selection.base.keep_note`); None when it was, or when the
    # method has no budget (none, fixed layouts). `--strict-keep` turns it into an error.
    keep_note: str | None = None
    # Visual KV entries the decode steps attended to vs the unpruned model's (None: nothing decoded)
    decode_kv_ratio: float | None = None
    # Which original visual tokens survived, as a bitmap over [frames, grid_h, grid_w] (`io.kept_tokens`)
    kept_tokens: KeptRecord | None = None
    # The same mass per frame after the method's debiasing, over the tokens its selection kept (attention
    # methods; None for others): with `attention_per_frame`, the before/after of the bias report.
    attention_per_frame_debiased: list[float] | None = None
    # Decoder layers whose attention the pruners read (None: none in this pass)
    attention_layers: list[int] | None = None
    # What a method that reads saliency read: "tower" (the vision tower's attention) or "proxy"
    # (`--saliency proxy`, or a family with nothing captured); None for methods that read none.
    saliency: str | None = None

    def as_row(self) -> dict[str, Any]:
        return {
            "visual_tokens_in": self.visual_tokens_in,
            "visual_tokens_kept": self.visual_tokens_kept,
            "keep_realized": self.keep_realized,
            "keep_note": self.keep_note,
            "flops_ratio": self.flops_ratio,
            "flops_probe_ratio": (
                self.flops_ratio if self.flops_probe_ratio is None else self.flops_probe_ratio
            ),
            "decode_kv_ratio": self.decode_kv_ratio,
            "tokens_per_layer": self.tokens_per_layer,
            "kept_per_frame": self.kept_per_frame,
            "appended_tokens": self.appended_tokens,
            "attention_per_frame": self.attention_per_frame,
            "attention_per_frame_debiased": self.attention_per_frame_debiased,
            "attention_layers": self.attention_layers,
            "kept_tokens": self.kept_tokens,
            "saliency": self.saliency,
        }


def token_stats(
    state: PrefillResult, video: VideoTokens, dims: LLMDims, method: Method | None = None
) -> TokenStats:
    n_in = state.visual_in
    per_layer = state.visual_per_layer
    kept = per_layer[-1] if per_layer else n_in
    frames = torch.bincount(state.kept_ids.cpu() // video.tokens_per_frame, minlength=video.num_frames)
    attention = None
    if state.scores:
        first = state.scores[min(state.scores)].cpu()
        attention = torch.nan_to_num(first).view(video.num_frames, -1).sum(dim=1).tolist()
    else:  # probe passes outside the final pass (two-stage mlb): their raw field, from the diagnostics
        raw = [i["attention_per_frame_raw"] for i in state.infos.values() if "attention_per_frame_raw" in i]
        attention = list(raw[0]) if raw else None
    debiased = [
        i["attention_per_frame_debiased"] for i in state.infos.values() if "attention_per_frame_debiased" in i
    ]
    note = None
    if method is not None:
        reasons = [str(i["keep_note"]) for i in state.infos.values() if i.get("keep_note")]
        target = method.target_tokens(n_in, video.num_frames)
        note = keep_note(kept, n_in, target, video.num_frames, "; ".join(reasons) or None)
    full = visual_flops([n_in] * dims.num_layers, dims)
    final = visual_flops(per_layer, dims)
    probes = sum(probe_flops(n, layers, dims) for n, layers in state.probe_passes)
    return TokenStats(
        visual_tokens_in=n_in,
        visual_tokens_kept=kept,
        keep_realized=kept / n_in if n_in else 1.0,
        flops_ratio=final / full if full else 1.0,
        flops_probe_ratio=((final + probes) / full if full else 1.0) if state.probe_passes else None,
        tokens_per_layer=list(per_layer),
        kept_per_frame=frames.tolist(),
        appended_tokens=state.appended,
        attention_per_frame=attention,
        attention_per_frame_debiased=[float(a) for a in debiased[0]] if debiased else None,
        info={str(k): v for k, v in state.infos.items() if v},
        keep_note=note,
        saliency=None if method is None else method.saliency_used(video),
        kept_tokens=encode_kept(
            state.kept_ids.cpu().numpy(),
            video.num_frames,
            *video.grid,
            merged_into=final_merge_targets(state.merges, state.kept_ids, n_in),
        ),
        attention_layers=sorted(state.scores) or None,
    )


def final_merge_targets(merges: dict[int, int], kept_ids: torch.Tensor, n_in: int) -> list[int] | None:
    """`kept_tokens.merged_into`: per pruned token (ascending id), the surviving token its state ended
    in, following merges of merges (a token merged into one that a later step merged again), -1 where
    the chain ends in a dropped token; None when the method merged nothing."""
    if not merges:
        return None
    kept = set(kept_ids.cpu().tolist())
    out: list[int] = []
    for token in range(n_in):
        if token in kept:
            continue
        target = merges.get(token, -1)
        seen = {token}
        while target >= 0 and target not in kept and target not in seen:
            seen.add(target)
            target = merges.get(target, -1)
        out.append(target if target in kept else -1)
    return out


def decode_kv_ratio(state: PrefillResult, generation: Generation, dims: LLMDims) -> float:
    """Visual KV entries the decode steps attended to (summed over layers and steps) vs the unpruned
    model's; with no decode step (one token, taken from the prefill), what a step would attend to."""
    if generation.visual_keys_full:
        return generation.visual_keys_read / generation.visual_keys_full
    # layers that cache keys -> their sliding window (None: global): a sliding layer reads its window only
    windows = {
        i: dims.window if dims.kind(i) == "sliding" and dims.window > 0 else None
        for i in range(dims.num_layers)
        if dims.kind(i) != "linear"
    }
    read, full = step_visual_keys(state, windows, 0)
    return read / full if full else 1.0
