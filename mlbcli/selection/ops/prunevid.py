"""PruneVid (ACL'25, arXiv 2412.16117): static/dynamic token merging before the LLM, then
question-guided selection inside it.

[C] Visual-AI/PruneVid (b12600c6) `models/pllava/modeling_pllava.py` (`merge_frames_dynamic`,
    `cluster_dpc_knn`, `refine_clusters`) and `elastic_cache.py` (`VTPWindowCache`):
    - temporal segments: DPC-kNN (k = 7) on the frames' mean tokens into int(T * r_seg) clusters
      (r_seg = 0.25), every frame joins its nearest centre; `refine_clusters` keeps each cluster's
      longest run of consecutive frames and gives the other runs to the longer neighbouring run (left
      on ties); segments = runs of equal labels;
    - in a segment of W frames a grid position is static when the mean pairwise cosine of its tokens
      across the W frames (self pairs excluded) is > tau (0.8; never for W = 1); static positions are
      averaged over the segment, dynamic ones stay per frame; a group (the segment's static tokens,
      or one frame's dynamic tokens) of more than 14 tokens is clustered by DPC-kNN (k = 7) into
      int(size * r_cluster) tokens (r_cluster = 0.5), each the mean of its members;
    - after LLM layer 10 (`selected_layer`), by the attention the text after the visual block gives
      each visual token: a segment keeps its top int(static * alpha) static tokens and every frame its
      top int(dynamic * alpha) dynamic tokens (alpha = 0.4); the KV cache of layers 0..10 is pruned to
      the same tokens, so decoding never sees the dropped ones.
[R] --keep sets the final count: token_budget(T*N, keep) tokens are kept at layer K, split over the
    groups in proportion to their sizes (largest remainder; alpha = budget / merged tokens); when
    merging left fewer tokens than that, all are kept (`keep_note`). `prunevid_alpha` restores the
    reference's fixed per-group int(size * alpha) (realised keep then content-dependent).
[R] the layer: `--layer K` prunes before decoder layer K with layer K-1's attention (the reference's
    `selected_layer` 10 is `--layer 11`); attention = max over heads and query rows with `official`
    (the reference's reduction; its rows: all text after the visual block), else the mean.
[R] a merged token stands for its cluster centre (a static one: in the segment's first frame).
[C] `--variant official`: alpha 0.4 at `--layer 11`, per segment the static tokens then each frame's
    dynamic ones, inside a group the clusters in centre-score rank (PLLaVA's `merge_frames_dynamic`
    order, `LayerKeep.entry_ids`) at contiguous positions; after the selection the kept tokens keep
    their merged positions (`position_ids[:, index_list]`). Equal to b12600c6's merge and selection
    on every golden case (`tests/golden/methods/prunevid.pt`: ids, order, states within 1e-5,
    positions; same [n] attention on both sides). `exact` keeps ascending order and original
    positions.
[R] decode: the reference's KV-cache pruning of layers 0..K-1 is a decode-time key mask here
    (`engine.DecodePolicy`), so decoding sees what the reference's decoding sees; the prefill's own
    text tokens keep the attention they computed over the full cache (as in the reference).
[R] deterministic density ties (see `clustering`); fp32 clustering.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from mlbcli.models.base import VideoTokens
from mlbcli.selection.base import token_budget
from mlbcli.selection.ops import debias as D
from mlbcli.selection.ops.baselines import layer0_features, merged_index, missed
from mlbcli.selection.ops.clustering import assign_to_centres, density_peaks, runs, stable_top
from mlbcli.selection.plan import DecodeContext, DecodePolicy, LayerContext, LayerKeep, PrunePlan

NEIGHBOURS = 7
MIN_CLUSTER_SIZE = 14  # groups of at most this many tokens are not clustered (reference)


def refine_labels(labels: list[int]) -> list[int]:
    """PruneVid's `refine_clusters`: each label keeps its longest run; other runs join a neighbour."""
    out = list(labels)
    by_label: dict[int, list[tuple[int, int]]] = {}
    for start, stop in runs(labels):
        by_label.setdefault(labels[start], []).append((start, stop))
    for segments in by_label.values():
        longest = max(stop - start for start, stop in segments)
        for start, stop in segments:
            if longest == 1 or stop - start != longest:
                out[start:stop] = [-1] * (stop - start)
    i, n = 0, len(out)
    while i < n:
        if out[i] != -1:
            i += 1
            continue
        start = i
        while i < n and out[i] == -1:
            i += 1
        left = right = None
        left_length = right_length = 0
        if start > 0:
            left = out[start - 1]
            j = start - 1
            while j >= 0 and out[j] == left:
                j -= 1
            left_length = start - j - 1
        if i < n:
            right = out[i]
            j = i
            while j < n and out[j] == right:
                j += 1
            right_length = j - i
        if left_length > right_length:
            label = left
        elif right_length > left_length:
            label = right
        else:
            label = left if left is not None else right
        out[start:i] = [0 if label is None else label] * (i - start)
    return out


def temporal_segments(frame_means: torch.Tensor, ratio: float) -> list[tuple[int, int]]:
    """[T, D] -> segments [(start, stop)] from DPC-kNN frame clusters (labels = centre rank)."""
    T = frame_means.shape[0]
    count = max(1, min(T, int(T * ratio)))
    score, dist = density_peaks(frame_means, NEIGHBOURS)
    centres = stable_top(score, count)  # rank order: label 0 is the best centre
    labels = assign_to_centres(dist, centres).tolist()
    return runs(refine_labels(labels))


def cluster_group(
    x: torch.Tensor,
    ids: torch.Tensor,
    ratio: float,
    owner: torch.Tensor | None = None,
    ranked: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One group ([n, D] states, [n] ids) -> (merged states, their ids), clustered when n > 14; the
    clusters in position order of their centres, or with `ranked` in PLLaVA's order (cluster j is
    the j-th best centre score: `compute_cluster_vectors` over `cluster_dpc_knn`'s labels). `owner`
    [T*N] (filled when given): owner[ids] = the id of the token each one ended in."""
    n = x.shape[0]
    if owner is not None:
        owner[ids] = ids.to(owner.device)  # unclustered: each token stays itself
    if n <= MIN_CLUSTER_SIZE:
        return x, ids
    count = max(1, int(n * ratio))
    score, dist = density_peaks(x, NEIGHBOURS)
    centres = stable_top(score, count)  # [count] rank order
    if not ranked:
        centres = centres.sort().values
    assign = assign_to_centres(dist, centres)  # [n] -> centre slot
    if owner is not None:
        owner[ids] = ids[centres][assign].to(owner.device)
    sums = torch.zeros(count, x.shape[1], device=x.device).index_add_(0, assign, x.float())
    counts = torch.bincount(assign, minlength=count).clamp(min=1)[:, None]
    return (sums / counts).to(x.dtype), ids[centres]


def prunevid_merge(
    features: torch.Tensor, params: dict[str, Any], official: bool = False, owner: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Before the LLM: [T, N, D] -> (ids [m], states [m, D], groups [(kind, ids)]); ids ascending, or
    with `official` in PLLaVA's order (per segment the static tokens, then each frame's dynamic ones)."""
    T, N, _ = features.shape
    x = features
    segments = temporal_segments(x.float().mean(dim=1), params["prunevid_segment_ratio"])
    ids_out, states_out, groups = [], [], []
    for a, b in segments:
        W = b - a
        window = x[a:b].float()  # [W, N, D]
        static = torch.zeros(N, dtype=torch.bool, device=x.device)
        if W > 1:
            unit = F.normalize(window, dim=-1)
            pair = torch.einsum("wnc,tnc->wtn", unit, unit)  # [W, W, N]
            mean_sim = (pair.sum(dim=(0, 1)) - W) / (W * (W - 1))  # self pairs excluded
            static = mean_sim > params["prunevid_threshold"]
        positions = torch.arange(N, device=x.device)
        if bool(static.any()):
            states, ids = cluster_group(
                window[:, static].mean(dim=0).to(x.dtype),
                a * N + positions[static],
                params["prunevid_cluster_ratio"],
                owner,
                ranked=official,
            )
            if owner is not None:  # a static token of a later frame ends where the segment's first did
                owner[
                    (torch.arange(a + 1, b, device=x.device)[:, None] * N + positions[static]).flatten()
                ] = owner[a * N + positions[static]].repeat(W - 1)
            ids_out.append(ids)
            states_out.append(states)
            groups.append(("static", a, ids))
        for t in range(a, b):
            if bool((~static).any()):
                states, ids = cluster_group(
                    x[t, ~static],
                    t * N + positions[~static],
                    params["prunevid_cluster_ratio"],
                    owner,
                    official,
                )
                ids_out.append(ids)
                states_out.append(states)
                groups.append(("dynamic", t, ids))
    ids = torch.cat(ids_out)
    states = torch.cat(states_out)
    if official:
        return ids, states, groups
    order = ids.argsort()
    return ids[order], states[order], groups


class EvictDropped(DecodePolicy):
    """Decoding sees, at every layer, only the visual tokens that survived the prefill's last pruning
    step: PruneVid prunes the KV cache of the layers before its selection layer too."""

    layer = 0
    needs_attention = False

    def step(self, ctx: DecodeContext, state: Any) -> tuple[torch.Tensor | None, Any]:
        if state is None:  # the same every step: computed once per row
            kept = ctx.kept_ids.to(ctx.visual_ids.device)
            state = ctx.visual_ids[~torch.isin(ctx.visual_ids, kept)]
        return state, state


def prunevid_plan(
    video: VideoTokens, keep: float, layer: int, query: str, params: dict[str, Any], official: bool = False
) -> PrunePlan:
    """Merge before the LLM, select before decoder `layer` (token_budget(T*N, keep) tokens, or
    int(size * prunevid_alpha) of every group when alpha is set); decoding sees only the kept ones."""
    T, N = video.num_frames, video.tokens_per_frame
    alpha = params["prunevid_alpha"]
    budget = token_budget(T * N, keep)
    state: dict[str, Any] = {}

    def merge(ctx: LayerContext) -> LayerKeep:
        x = layer0_features(ctx.hidden, ctx.visual_slots, T, N)
        owner = torch.full((T * N,), -1, dtype=torch.long, device=x.device)  # [T*N] cluster centre id
        ids, states, groups = prunevid_merge(x, params, official, owner)
        state["groups"] = groups
        info = {
            "merged": int(ids.numel()),
            "segments": sorted({g[1] for g in groups if g[0] == "static"}),
        }
        return LayerKeep(
            keep=ids.sort().values.to(ctx.visual_slots.device),
            replace=states,  # [m, D] in `ids` order, written into the kept slots
            entry_ids=ids if official else None,
            info=info,
            merged_into=merged_index(owner, ids.sort().values),  # by token id, not entry slot
        )

    def select(ctx: LayerContext) -> LayerKeep:
        assert ctx.scores is not None
        scores = ctx.scores.detach().float().cpu()
        position = {int(i): j for j, i in enumerate(ctx.visual_ids.cpu().tolist())}
        members = [
            torch.tensor([position[int(i)] for i in g[2].tolist()], dtype=torch.long) for g in state["groups"]
        ]
        sizes = [m.numel() for m in members]
        counts = D.allocate(budget, sizes, sizes) if alpha is None else [int(n * alpha) for n in sizes]
        chosen = [m[stable_top(scores[m], c)] for m, c in zip(members, counts, strict=True)]
        kept = torch.cat(chosen).sort().values if chosen else torch.zeros(0, dtype=torch.long)
        info: dict[str, Any] = {"kept": int(kept.numel()), "layer": layer}
        if alpha is None:
            info["budget"] = budget
            note = missed(int(kept.numel()), budget, T, "PruneVid's merging left fewer tokens")
            if note:
                info["keep_note"] = note
        return LayerKeep(keep=kept.to(ctx.visual_slots.device), info=info)

    return PrunePlan(
        steps={0: merge, layer: select},
        needs_scores=frozenset({layer}),
        query=query,
        decode_policy=EvictDropped(),
        probe_reduce="max" if official else "mean",  # PLLaVA: max over heads, then over text rows
    )
