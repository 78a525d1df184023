"""Token selection on plain tensors, without a model: `select_tokens` and `replay_kv`.

The same `Method` objects the engine runs, driven on one video's visual tokens: notebooks and other
toolkits call them to see what a method keeps, and the golden tests compare them with each method's
official code on identical inputs (`tests/golden/methods/`).

What stands in for the model here:
- before the LLM (layer 0) a method sees `features` as the states entering the LLM, exactly as in a run;
- inside the LLM (a step before decoder layer K) it sees the attention you pass (`attention=`, the
  scores the engine's probe would give it) and, as hidden states, the states that entered the LLM (a
  model would have transformed them by layer K; methods that merge there merge these);
- positions are counted from the first visual token: `original` positions are the flat ids, the
  `contiguous` policy renumbers the kept tokens 0..K-1; appended tokens (summary tails) follow the
  last kept token (engine `rows.insert_after_visual`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from mlbcli.errors import UsageError
from mlbcli.models.base import VideoTokens
from mlbcli.selection.base import MethodOptions, PlanContext, keep_note
from mlbcli.selection.plan import DecodeContext, LayerContext, LayerKeep
from mlbcli.selection.registry import get_method

#: `Selection.ids` of a token a method appended (it stands for no single original token).
APPENDED = -1


@dataclass
class Selection:
    """What enters the LLM (or, with `attention=`, what continues past the in-LLM step)."""

    ids: (
        torch.Tensor
    )  # [K] long: flat ids t * N + n of the kept tokens, in entry order; APPENDED for appended
    states: torch.Tensor  # [K, D] the states that enter (merged/pooled where the method merges)
    positions: torch.Tensor  # [K] long: position of each token, counted from the first visual token
    method: str
    variant: str | None
    keep_note: str | None = None  # None when the --keep budget was met, else why not (as the rows say)
    layers: list[int] = field(default_factory=list)  # the steps applied: 0 = before the LLM, K = in the LLM
    info: dict[int, dict[str, Any]] = field(default_factory=dict)  # per step: the method's diagnostics
    # [T*N] long, for each original token t * N + n the id of the kept token its state ended in (a kept
    # token: its own id; one simply dropped: -1), following merges of merges over the steps; None when
    # the method merges nothing (its steps record no `LayerKeep.merged_into`)
    merged_into: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.ids.numel())


def _grid(tokens: int, grid: tuple[int, int] | None) -> tuple[int, int]:
    if grid is not None:
        if grid[0] * grid[1] != tokens:
            raise UsageError(f"grid {grid} does not hold the {tokens} tokens of a frame")
        return (int(grid[0]), int(grid[1]))
    side = math.isqrt(tokens)
    return (side, side) if side * side == tokens else (1, tokens)


def _video(
    features: torch.Tensor,
    saliency: torch.Tensor | None,
    grid: tuple[int, int] | None,
    frame_features: torch.Tensor | None,
) -> VideoTokens:
    if features.dim() != 3:
        raise UsageError(f"features must be [T, N, D] (one video), got shape {tuple(features.shape)}")
    T, N, _ = features.shape
    if saliency is not None and tuple(saliency.shape) != (T, N):
        raise UsageError(f"saliency must be [T, N] = [{T}, {N}], got {tuple(saliency.shape)}")
    if frame_features is not None and (frame_features.dim() != 2 or frame_features.shape[0] != T):
        raise UsageError(f"frame_features must be [T, Dv] with T = {T}, got {tuple(frame_features.shape)}")
    return VideoTokens(
        features=features,
        grid=_grid(N, grid),
        extra=None,
        frame_features=frame_features,
        saliency=saliency,
    )


def _attention_for(
    attention: torch.Tensor | Mapping[int, torch.Tensor] | None, layer: int, alive: int, first: bool
) -> torch.Tensor | None:
    """The scores of the in-LLM step before `layer`: a tensor serves the first in-LLM step, a mapping
    {layer: tensor} any step; each is over the `alive` tokens entering that step, in entry order."""
    if attention is None:
        return None
    scores = attention.get(layer) if isinstance(attention, Mapping) else (attention if first else None)
    if scores is None:
        return None
    scores = scores.reshape(-1)
    if scores.numel() != alive:
        raise UsageError(
            f"attention for the step before layer {layer} must score the {alive} tokens entering it, "
            f"got {scores.numel()}"
        )
    return scores.float()


def select_tokens(
    method: str,
    features: torch.Tensor,
    keep: float | None = None,
    *,
    variant: str | None = None,
    saliency: torch.Tensor | None = None,
    attention: torch.Tensor | Mapping[int, torch.Tensor] | None = None,
    grid: tuple[int, int] | None = None,
    frame_features: torch.Tensor | None = None,
    layer: int | None = None,
    positions: str | None = None,
    **params: Any,
) -> Selection:
    """What `method` keeps of one video's visual tokens `features` [T, N, D].

    `saliency` [T, N]: the vision tower's attention (methods that read it; None = their fallback).
    `attention`: the LLM attention an in-LLM step reads ([alive] over the tokens entering it, or a
    {layer: tensor} mapping for several steps); without it the result stops before the first in-LLM
    step (for a two-sided method such as FlashVID: what enters the LLM). `grid`: (h, w) of a frame
    (default: square when N is a square, else one row). `params`: the method's parameters by name,
    as `--param` takes them. Options the method does not take are `UsageError`s, as on the CLI.
    """
    options = MethodOptions(keep=keep, variant=variant, layer=layer, positions=positions, params=params)
    chosen = get_method(method, options)
    video = _video(features, saliency, grid, frame_features)
    T, N, _ = video.features.shape
    context = PlanContext(grid=video.grid, text_tokens=0)
    try:
        plan = chosen.plan_with_context(video, None, context)  # type: ignore[arg-type]
    except RuntimeError as error:
        if "probe" in str(error):
            raise UsageError(f"{chosen.name} runs probe passes through the LLM: it needs a model") from error
        raise

    hidden = video.features.reshape(1, T * N, -1)  # [1, L, D], L = T * N entering the LLM
    ids = torch.arange(T * N)  # [L] flat id of each slot (APPENDED for appended tokens)
    pos = torch.arange(T * N)  # [L] position of each slot from the first visual token
    applied: list[int] = []
    info: dict[int, dict[str, Any]] = {}
    merges: dict[int, int] | None = None  # {pruned id: id of the token it merged into}, over the steps
    for step in sorted(plan.steps):
        scores = None
        if step > 0:
            scores = _attention_for(attention, step, int(ids.numel()), first=not any(s > 0 for s in applied))
            if scores is None:
                break  # no LLM attention for this step: the result is what enters it
        visual = (ids != APPENDED).nonzero().squeeze(1)  # prunable slots; appended ones stay
        if scores is not None and visual.numel() != ids.numel():
            scores = scores[visual]
        decision = plan.steps[step](
            LayerContext(
                layer=step, hidden=hidden, visual_slots=visual, visual_ids=ids[visual], scores=scores
            )
        )
        if decision.merged_into is not None:
            merges = {**(merges or {}), **_merge_targets(ids[visual], decision)}
        hidden, ids, pos = _apply(decision, hidden, ids, pos, visual, step)
        if step == 0 and plan.contiguous_positions:
            pos = torch.arange(ids.numel())
        applied.append(step)
        info[step] = dict(decision.info)
    reason = next((i.get("keep_note") for i in info.values() if i.get("keep_note")), None)
    note = None  # the budget is checked where it applies: after the method's last step
    if applied == sorted(plan.steps):
        note = keep_note(int(ids.numel()), T * N, chosen.target_tokens(T * N, T), T, reason)
    return Selection(
        ids=ids,
        states=hidden[0],
        positions=pos,
        method=chosen.name,
        variant=chosen.variant,
        keep_note=note,
        layers=applied,
        info=info,
        merged_into=None if merges is None else _final_targets(merges, ids, T * N),
    )


def _apply(
    decision: LayerKeep,
    hidden: torch.Tensor,
    ids: torch.Tensor,
    pos: torch.Tensor,
    visual: torch.Tensor,
    step: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(hidden [1, L', D], ids [L'], positions [L']) after one decision, as `engine.rows.apply_keep`
    does it: kept slots in order (replaced where the method says), appended tokens after them."""
    keep = decision.keep.to(torch.long).cpu()
    if keep.numel() and (
        keep.min() < 0 or keep.max() >= visual.numel() or bool((keep[1:] <= keep[:-1]).any())
    ):
        raise ValueError(f"{step}: the pruner returned indices that are not unique, ascending and in range")
    next_text = int(ids.numel())  # the position of the first text token after the visual block (layer 0)
    if decision.entry_ids is not None:  # the method's own order: each kept slot takes its token's id AND
        entry = decision.entry_ids.to(torch.long).cpu()  # original position (as engine.rows.relabel)
        visual_ids = ids[visual]
        order = visual_ids.argsort()
        source = visual[order[torch.searchsorted(visual_ids[order], entry)]]
        ids, pos = ids.clone(), pos.clone()
        pos[visual[keep]] = pos[source]
        ids[visual[keep]] = entry
    states = hidden[0].clone()
    if decision.replace is not None:
        states[visual[keep]] = decision.replace.to(states.dtype).cpu()
    alive = torch.ones(ids.numel(), dtype=torch.bool)
    alive[visual] = False
    alive[visual[keep]] = True
    slots = alive.nonzero().squeeze(1)
    new_ids = ids[slots].clone()
    states, pos = states[slots], pos[slots]
    if decision.append is not None and decision.append.shape[0]:
        m = decision.append.shape[0]
        at = int((new_ids != APPENDED).nonzero().max()) + 1 if new_ids.numel() else 0
        start = next_text  # as `engine.rows.insert_after_visual`: where the text after the block began
        states = torch.cat([states[:at], decision.append.to(states.dtype).cpu(), states[at:]])
        new_ids = torch.cat([new_ids[:at], torch.full((m,), APPENDED), new_ids[at:]])
        pos = torch.cat([pos[:at], start + torch.arange(m), pos[at:] + m])
    return states[None], new_ids, pos


def _merge_targets(visual_ids: torch.Tensor, decision: LayerKeep) -> dict[int, int]:
    """{id of a token pruned at this step: id of the kept token it merged into} (`LayerKeep.merged_into`,
    an index into `keep`; as `engine.rows.merge_targets`, which this layer may not import)."""
    assert decision.merged_into is not None
    keep = decision.keep.long().cpu()
    into = decision.merged_into.long().cpu()  # [n] index into keep, -1 = dropped
    merged = torch.ones(visual_ids.numel(), dtype=torch.bool)
    merged[keep] = False
    merged &= into >= 0
    return dict(zip(visual_ids[merged].tolist(), visual_ids[keep[into[merged]]].tolist(), strict=True))


def _final_targets(merges: dict[int, int], ids: torch.Tensor, total: int) -> torch.Tensor:
    """[total] per original token the kept token (in `ids`) its state ended in, following merges of
    merges; a kept token names itself, a chain that ends in a dropped token gives -1."""
    kept = set(ids[ids != APPENDED].tolist())
    out = torch.full((total,), -1, dtype=torch.long)
    for token in range(total):
        target, seen = token, set()
        while target >= 0 and target not in kept and target not in seen:
            seen.add(target)
            target = merges.get(target, -1)
        out[token] = target if target in kept else -1
    return out


def replay_kv(
    method: str,
    attention_steps: torch.Tensor,
    *,
    variant: str | None = None,
    **params: Any,
) -> list[torch.Tensor]:
    """Replay a decode-time KV method on recorded attention, without a model.

    `attention_steps` [S, n]: per decode step, the attention the method reads over the n cached video
    tokens (DyCoke: layer L-1, the step's one query row, mean over heads). Returns, per step, the
    LongTensor of video keys (indices into n, ascending) visible to the pruned layers at that step.
    """
    options = MethodOptions(variant=variant, params=params)
    chosen = get_method(method, options)
    policy = chosen.decode_policy()
    if policy is None:
        raise UsageError(f"--method {chosen.name} has no decode-time KV policy with these parameters")
    if attention_steps.dim() != 2:
        raise UsageError(f"attention_steps must be [S, n], got shape {tuple(attention_steps.shape)}")
    n = attention_steps.shape[1]
    every = torch.arange(n)
    state = policy.start()
    visible: list[torch.Tensor] = []
    for step, attention in enumerate(attention_steps.float()):
        context = DecodeContext(step=step, visual_ids=every, attention=attention, kept_ids=every)
        hidden, state = policy.step(context, state)
        if hidden is None or hidden.numel() == 0:
            visible.append(every.clone())
        else:
            visible.append(every[~torch.isin(every, hidden.to(torch.long).cpu())])
    return visible
