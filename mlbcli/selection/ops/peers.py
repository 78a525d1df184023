"""The plans of the pre-LLM peers with paper/official variants: VisionZip* (its per-frame kernel is
`ops.debias.visionzip_frame`; DyCoke TTM's plan is in `ops.dycoke`)."""

from __future__ import annotations

import torch

from mlbcli.models.base import VideoTokens
from mlbcli.selection.base import token_budget
from mlbcli.selection.ops import debias as D
from mlbcli.selection.ops.baselines import frame_budgets, merged_index
from mlbcli.selection.plan import LayerContext, LayerKeep, PrunePlan


def visionzip_official_frame(
    features: torch.Tensor,
    attention: torch.Tensor,
    budget: int,
    ratio: float,
    into: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """VisionZip's code for one frame ([C] cokeshao/HoliTom e9b2972f `visionzip/llava_arch.py`
    L62-181, the LLaVA-OneVision port of dvlab-research/VisionZip 3151f6df): features [N, D], the
    tower's attention [N] -> (kept positions [b], their states [b, D]) in the order the LLM sees them.

    int(b * ratio) dominant tokens (top attention, in position order), then b - that contextual
    targets at arange(0, R, max(1, R // n_ctx))[:n_ctx] of the R other tokens; every remaining token
    joins its most cosine-similar target, which becomes target + mean(members).
    [R] cosine on the features (the reference: the last layer's attention keys).
    `into` [N] (filled when given): the position of the target each merged token joined.
    """
    from mlbcli.selection.ops.clustering import cosine_assign, stable_top

    N = features.shape[0]
    budget = max(1, min(int(budget), N))
    n_dom = int(budget * ratio)
    dominant = stable_top(attention.float(), n_dom).sort().values  # [n_dom] position order
    rest = torch.ones(N, dtype=torch.bool, device=features.device)
    rest[dominant] = False
    rest_idx = rest.nonzero().squeeze(1)  # [R]
    n_ctx = min(budget - n_dom, rest_idx.numel())
    if n_ctx <= 0:
        return dominant, features[dominant]
    slots = torch.arange(0, rest_idx.numel(), max(1, rest_idx.numel() // n_ctx))[:n_ctx]
    targets = rest_idx[slots]  # [n_ctx]
    is_target = torch.zeros(rest_idx.numel(), dtype=torch.bool, device=features.device)
    is_target[slots] = True
    others = rest_idx[~is_target]
    x = features.float()
    merged = x[targets].clone()
    if others.numel():
        assign = cosine_assign(x[others], x[targets])  # [m] -> target slot
        if into is not None:
            into[others.to(into.device)] = targets[assign].to(into.device)
        sums = torch.zeros_like(merged).index_add_(0, assign, x[others])
        counts = torch.bincount(assign, minlength=n_ctx).clamp(min=1)[:, None].float()
        merged = merged + sums / counts
    return torch.cat([dominant, targets]), torch.cat([features[dominant], merged.to(features.dtype)])


def visionzip_plan(video: VideoTokens, keep: float, ratio: float, variant: str) -> PrunePlan:
    """Per frame: dominant + contextual tokens. `official`: the same budget round(N * keep) for every
    frame ([R]: the reference reads that one per-frame count from a setting, mlb derives it from --keep),
    saliency from the vision tower when the family
    gives it, the reference's order (`entry_ids`); `paper`: even budgets summing to
    token_budget(T*N, keep), the pseudo-[CLS] proxy, position order."""
    from mlbcli.selection.ops.clustering import frame_saliency

    T, N = video.num_frames, video.tokens_per_frame
    if variant == "official":
        budgets = [token_budget(N, keep)] * T
    else:
        budgets = frame_budgets(token_budget(T * N, keep), T)

    def prune(ctx: LayerContext) -> LayerKeep:
        x = ctx.hidden[0, ctx.visual_slots].view(T, N, -1)  # [T, N, D]
        order, states = [], []
        into = torch.full((T, N), -1, dtype=torch.long)  # [T, N] position of the contextual target
        if variant == "official":
            tower = video.saliency
            attention = frame_saliency(x) if tower is None else tower.to(x.device)  # [T, N]
            for t, b in enumerate(budgets):
                idx, st = visionzip_official_frame(x[t], attention[t], b, ratio, into[t])
                order.append(idx + t * N)
                states.append(st)
        else:
            for t, b in enumerate(budgets):
                idx, st = D.visionzip_frame(x[t], b, ratio, variant, into[t])  # in the LLM's order
                order.append(idx + t * N)
                states.append(st)
        entry = torch.cat(order)
        owner = torch.where(into >= 0, into + torch.arange(T)[:, None] * N, -1).flatten()  # [T*N] flat
        return LayerKeep(
            keep=entry.sort().values.to(ctx.visual_slots.device),
            merged_into=merged_index(owner, entry.sort().values),  # by token id, not entry slot
            replace=torch.cat(states),  # [k, D] in entry order, written into the kept slots
            entry_ids=entry,  # the states' order (paper: ascending per frame, a no-op relabel)
            info={"frame_budgets": budgets, "dominant_ratio": ratio, "variant": variant},
        )

    return PrunePlan(steps={0: prune})
