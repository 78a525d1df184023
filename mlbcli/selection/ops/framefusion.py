"""FrameFusion (ICCV 2025, arXiv 2501.01986): merge tokens similar to the same patch of the previous
frame, layer after layer, then prune the rest by attention to a computation budget, inside the LLM.

[C] thu-nics/FrameFusion (fbec1d2e) `framefusion/main.py` (`FrameFusion.forward`, lines 40-140;
    `merge_tokens_and_get_mask` 243-319; `_compute_pruning_ratio` 321-343), hooked by
    `framefusion/models/qwen2/modeling_qwen2.py` (a call before layer 0's attention, then one after
    every layer's attention); defaults of `apply_framefusion`: cost 0.3, similarity_lower_bound 0.6,
    ratio_lower_bound 0.1:
    - every visual token has a patch type (its place in the frame); tokens of one patch are chained in
      sequence order and each is compared (cosine) with its predecessor in the chain;
    - a merging call: the sparsity upper bound u is what the remaining layers may still drop for the
      cost (`_compute_pruning_ratio`, over 28 layers); the tokens with similarity >= 0.6 are merged,
      a run of consecutive merged tokens of a chain into the token before the run (plain average of
      the run and that token), and the ratio merged / visual tokens is recorded; below 0.1 merging
      stops. When the ratio reaches u, only the int(u * n) most similar tokens merge, and that ends
      merging and pruning both;
    - the call after merging stopped prunes: the last prompt token's attention at that layer (mean over
      heads) keeps the top round(n * (1 - p)) visual tokens, p the ratio the cost leaves; in order;
    - kept tokens keep their position embeddings (original positions, M-RoPE included).
[R] where: the first merge is the engine's layer-0 step (before layer 0, as the official call); a
    later merge, made in the official code after layer i's attention (before its MLP), runs here
    before layer i + 1 (after the MLP), on those states; pruning after layer i's attention by that
    layer's attention runs here before layer i + 1 with the probe of layer i, which is the same for
    the kept tokens (an MLP acts token by token).
[R] the cost is spread over the model's own depth (the official code assumes 28 layers; 28 when the
    depth is unknown, as in `select_tokens`). A cost the merges already exceed (the official code
    raises "The cost is too small") prunes to one token and says so.
[R] budget: --keep is FrameFusion's cost, the average share of visual tokens over the layers, so the
    last layer sees fewer than --keep of them; the row's `keep_note` says so.
[R] patch type = the token's place in its frame (flat id mod N); LLaVA-Video's newline tokens, a patch
    type of their own in the official code, are not merged here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from mlbcli.selection.ops.baselines import merged_index, missed
from mlbcli.selection.plan import LayerContext, LayerKeep, LayerPruner, PrunePlan

IGNORE = -2.0  # the official similarity of a chain's first token (nothing before it to merge into)


def pruning_ratio(sparsity: list[float], cost: float, depth: int) -> float | None:
    """The share of the remaining visual tokens the next layers drop so the average over `depth`
    layers is `cost` (None: the layers so far already cost more)."""
    s, spent = 1.0, 0.0
    for value in sparsity:
        s *= 1 - value
        spent += s
    remain = depth * cost - spent
    if remain < 0:
        return None
    share = remain / ((depth - len(sparsity)) * s)
    return 0.0 if share > 1 else 1 - share


def chain_similarity(
    states: torch.Tensor, patch: torch.Tensor, patches: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """[n, D] states, [n] patch types -> (similarity [n] to the chain predecessor in chain order,
    chain order [n]: indices sorted by (patch, sequence))."""
    order = torch.where(patch == torch.arange(patches, device=patch.device)[:, None])[1]  # [n]
    a, b = states[order[:-1]].float(), states[order[1:]].float()
    similarity = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))  # [n-1]
    similarity[patch[order[:-1]] != patch[order[1:]]] = IGNORE
    return torch.cat([similarity.new_full((1,), IGNORE), similarity]), order


def merge_runs(
    states: torch.Tensor, order: torch.Tensor, merged: torch.Tensor, into: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge each run of consecutive `merged` chain positions into the position before it.

    states [n, D]; order [n] chain order; merged [n] bool over chain positions ->
    (kept mask [n] over the sequence, states [n, D] with the targets averaged); `into` [n] (filled
    when given): the sequence index of the target each merged token joined.
    """
    out = states.clone()
    keep = torch.ones(states.shape[0], dtype=torch.bool, device=states.device)
    keep[order[merged]] = False
    flags = merged.tolist()
    i, n = 0, len(flags)
    while i < n:
        if not flags[i]:
            i += 1
            continue
        stop = i
        while stop < n and flags[stop]:
            stop += 1
        target = order[i - 1]  # the chain element before the run (official: run end - run length)
        members = order[i:stop]
        total = states[target].float() + states[members].float().sum(0)
        out[target] = (total / (stop - i + 1)).to(states.dtype)
        if into is not None:
            into[members.to(into.device)] = int(target)
        i = stop
    return keep, out


@dataclass
class FusionState:
    """One request's progress through the layers (the official module's flags)."""

    sparsity: list[float] = field(default_factory=list)
    merging_done: bool = False
    pruning_done: bool = False


@dataclass(frozen=True)
class FusionSettings:
    cost: float
    similarity: float
    ratio_floor: float
    depth: int
    tokens_per_frame: int
    num_frames: int
    target: int


def merge_step(
    states: torch.Tensor,
    ids: torch.Tensor,
    state: FusionState,
    settings: FusionSettings,
    into: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """One merging call: [n, D] states of the visual tokens, [n] their flat ids ->
    (kept indices ascending, their states, info); `into` as in `merge_runs`."""
    n, N = states.shape[0], settings.tokens_per_frame
    upper = pruning_ratio(state.sparsity, settings.cost, settings.depth)
    if upper is None:  # earlier merges already spent the cost: no merge here; the pruning step that
        state.merging_done = True  # follows keeps one token and says why (`prune_step`)
        return torch.arange(n, device=states.device), states, {"merged": 0, "ratio": 0.0}
    similarity, order = chain_similarity(states, ids % N, N)
    chosen = similarity >= settings.similarity  # [n] over chain positions
    ratio = int(chosen.sum()) / n
    if ratio < upper:
        state.sparsity.append(ratio)
        state.merging_done = ratio < settings.ratio_floor
    else:
        top = torch.topk(similarity, int(upper * n)).indices
        chosen = torch.zeros_like(chosen)
        chosen[top] = True
        state.merging_done = state.pruning_done = True
    keep, merged = merge_runs(states, order, chosen, into)
    kept = keep.nonzero().squeeze(1)
    return kept, merged[kept], {"merged": int((~keep).sum()), "ratio": round(ratio, 6)}


def prune_step(
    scores: torch.Tensor, state: FusionState, settings: FusionSettings
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The pruning call: [n] attention -> (kept indices ascending, info)."""
    n = scores.shape[0]
    ratio = pruning_ratio(state.sparsity, settings.cost, settings.depth)
    count = max(1, round(n * (1 - ratio))) if ratio is not None else 1
    state.pruning_done = True
    kept = torch.topk(scores.float(), min(n, count)).indices.sort().values
    info: dict[str, Any] = {"pruned_to": int(kept.numel())}
    why = (
        "FrameFusion's cost (--keep) is the average share of visual tokens over the layers, so the "
        "last layer sees fewer (official)"
    )
    if ratio is None:
        why = "the merges already spent FrameFusion's cost (--keep): one token kept"
    note = missed(int(kept.numel()), settings.target, settings.num_frames, why)
    if note:
        info["keep_note"] = note
    return kept, info


def framefusion_plan(settings: FusionSettings) -> PrunePlan:
    """A step before every layer: merging (before layer 0 on the embeddings, then while the merged
    share stays >= ratio_floor), then one pruning step by the previous layer's attention."""
    state = FusionState()

    def step(ctx: LayerContext) -> LayerKeep:
        nonlocal state
        device = ctx.visual_slots.device
        n = int(ctx.visual_slots.numel())
        if ctx.layer == 0:
            state = FusionState()  # a plan may be run again (a batch split after running out of memory)
        if state.merging_done:
            # no attention before this layer (a hybrid decoder's linear layers): prune at the next one
            if ctx.layer > 0 and not state.pruning_done and ctx.scores is not None:
                kept, info = prune_step(ctx.scores, state, settings)
                return LayerKeep(keep=kept.to(device), info=info)
            return LayerKeep(keep=torch.arange(n, device=device))
        states = ctx.hidden[0, ctx.visual_slots]  # [n, D] the visual tokens entering this layer
        into = torch.full((n,), -1, dtype=torch.long)  # [n] index (this step) of the token merged into
        kept, merged, info = merge_step(states, ctx.visual_ids.to(device), state, settings, into)
        info["layer"] = ctx.layer
        return LayerKeep(
            keep=kept.to(device), replace=merged, info=info, merged_into=merged_index(into, kept)
        )

    layers = range(1, settings.depth)
    steps: dict[int, LayerPruner] = {0: step, **{i: step for i in layers}}
    return PrunePlan(steps=steps, needs_scores=frozenset(layers), query="last")
