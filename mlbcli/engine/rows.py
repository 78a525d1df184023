"""One row's token bookkeeping between decoder layers, and packing rows into one padded batch.

A row's sequence is the tokens of one request entering a layer: hidden states, position ids, and which
slots hold prunable visual tokens (with their visual ids), tokens a pruner appended, and the probe's
query rows. A pruner's `LayerKeep` turns one sequence into the next (`apply_keep`); the engine packs
the rows' sequences right-padded into one `[B, Lmax, D]` batch (`pack_rows`, see `engine.batch`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from mlbcli.selection.plan import LayerKeep


@dataclass
class RowSequence:
    """Bookkeeping of one row's sequence: which slots are visual, appended, or query rows."""

    hidden: torch.Tensor  # [1, L, D]
    position_ids: torch.Tensor  # [..., 1, L] ([1, L], or [3, 1, L] for M-RoPE)
    visual_slots: torch.Tensor  # [n]
    visual_ids: torch.Tensor  # [n]
    appended_slots: torch.Tensor  # [m]
    query_slots: torch.Tensor  # [q]
    # [1, L, ...] per-token layer inputs (`ModelInputs.token_inputs`), sliced with the tokens; or None
    token_inputs: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return int(self.hidden.shape[1])

    @property
    def alive(self) -> int:
        """Visual tokens in the sequence: original survivors plus appended ones."""
        return int(self.visual_slots.numel() + self.appended_slots.numel())

    def select(self, order: torch.Tensor) -> RowSequence:
        """Keep the slots in `order` (ascending) and renumber every slot index."""
        length = self.hidden.shape[1]
        new_index = torch.full((length,), -1, dtype=torch.long, device=order.device)
        new_index[order] = torch.arange(order.numel(), device=order.device)

        def remap(slots: torch.Tensor) -> torch.Tensor:
            mapped = new_index[slots]
            return mapped[mapped >= 0]

        visual_alive = new_index[self.visual_slots] >= 0
        return RowSequence(
            hidden=self.hidden[:, order],
            position_ids=self.position_ids[..., order],
            visual_slots=remap(self.visual_slots),
            visual_ids=self.visual_ids[visual_alive],
            appended_slots=remap(self.appended_slots),
            query_slots=remap(self.query_slots),
            token_inputs=None if self.token_inputs is None else self.token_inputs[:, order],
        )


def text_only(embeds: torch.Tensor, positions: torch.Tensor) -> RowSequence:
    """A sequence of `embeds` [1, m, D] at `positions` [..., 1, m] without visual or query slots."""
    device = embeds.device
    empty = torch.zeros(0, dtype=torch.long, device=device)
    return RowSequence(embeds, positions.to(device), empty, empty, empty, empty)


def apply_keep(
    seq: RowSequence,
    decision: LayerKeep,
    layer: int,
    token_inputs_of: Callable[[torch.Tensor], torch.Tensor | None] | None = None,
) -> RowSequence:
    """The sequence after a pruner's decision at `layer`: kept tokens (replaced, if it says so) in
    their order, then its appended tokens right after the visual block (layer 0 only).
    `token_inputs_of(embeds [1, m, D])` gives appended tokens their per-token layer inputs."""
    keep = decision.keep.to(seq.visual_slots.device)
    n = seq.visual_slots.numel()
    if keep.numel() == n and decision.replace is None and decision.append is None:
        return seq  # keeps everything as it is (e.g. a diagnostics-only step): no copy
    if keep.numel() and (keep.min() < 0 or keep.max() >= n or not bool((keep[1:] > keep[:-1]).all())):
        raise ValueError("pruner must return unique ascending indices into visual_slots")
    if decision.entry_ids is not None:
        seq = relabel(seq, keep, decision.entry_ids)
    hidden = seq.hidden
    if decision.replace is not None:
        if decision.replace.shape[0] != keep.numel():
            raise ValueError("LayerKeep.replace must have one row per kept token")
        hidden = hidden.clone()
        hidden[0, seq.visual_slots[keep]] = decision.replace.to(hidden.dtype)
        if layer == 0:
            seq = _refresh_token_inputs(seq, seq.visual_slots[keep], decision.replace, token_inputs_of)
    dropped = seq.visual_slots[~torch.isin(torch.arange(n, device=keep.device), keep)]  # [n - k]
    alive = torch.ones(seq.hidden.shape[1], dtype=torch.bool, device=hidden.device)  # [L]
    alive[dropped] = False
    seq = dataclasses.replace(seq, hidden=hidden).select(alive.nonzero().squeeze(1))
    if decision.append is not None and decision.append.shape[0]:
        if layer != 0:
            raise ValueError(
                "tokens can only be appended before the LLM (layer 0): earlier KV would miss them"
            )
        extra_inputs = None
        if seq.token_inputs is not None and token_inputs_of is not None:
            extra_inputs = token_inputs_of(decision.append[None].to(seq.hidden.dtype))
        seq = insert_after_visual(seq, decision.append, extra_inputs)
    return seq


def _refresh_token_inputs(
    seq: RowSequence,
    slots: torch.Tensor,
    embeds: torch.Tensor,
    token_inputs_of: Callable[[torch.Tensor], torch.Tensor | None] | None,
) -> RowSequence:
    """`seq` with the per-token layer inputs of `slots` [k] recomputed from their new input embeddings
    `embeds` [k, D] (layer 0 only). Stock Gemma 4 computes per-layer inputs once, from the input embedding
    (`project_per_layer_inputs(inputs_embeds, ...)` before layer 0), and never from a layer's hidden state:
    a token merged before the LLM is an input embedding of its own, so its inputs follow it; inside the
    LLM a replaced hidden state is no input embedding, and the token keeps the inputs it entered with."""
    if seq.token_inputs is None or not slots.numel():
        return seq
    if token_inputs_of is None:
        raise ValueError("replaced tokens need their per-token layer inputs recomputed in this family")
    fresh = token_inputs_of(embeds[None].to(seq.hidden.dtype))  # [1, k, ...]
    if fresh is None:
        return seq
    token_inputs = seq.token_inputs.clone()
    token_inputs[0, slots.to(token_inputs.device)] = fresh[0].to(token_inputs.device, token_inputs.dtype)
    return dataclasses.replace(seq, token_inputs=token_inputs)


def relabel(seq: RowSequence, keep: torch.Tensor, entry_ids: torch.Tensor) -> RowSequence:
    """`seq` with its kept slots (`keep`, ascending) holding the tokens `entry_ids` [k] in that order: each
    slot takes its token's visual id and ORIGINAL position (on M-RoPE rows, where positions are never
    renumbered, a state must keep its own token's position), so ids, positions and the states a method
    wrote in its own order (`LayerKeep.entry_ids`) agree."""
    entry = entry_ids.to(seq.visual_ids.device).long()
    ids = seq.visual_ids
    if entry.numel() != keep.numel() or not torch.equal(entry.sort().values, ids[keep].sort().values):
        raise ValueError("LayerKeep.entry_ids must order exactly the kept tokens' ids")
    order = ids.argsort()
    source = order[torch.searchsorted(ids[order], entry)]  # [k] index of each entry id in visual_slots
    slots = seq.visual_slots[keep]
    positions = seq.position_ids.clone()
    positions[..., slots] = seq.position_ids[..., seq.visual_slots[source]]
    relabelled = ids.clone()
    relabelled[keep] = entry
    return dataclasses.replace(seq, position_ids=positions, visual_ids=relabelled)


def merge_targets(visual_ids: torch.Tensor, decision: LayerKeep) -> dict[int, int]:
    """{visual id of a token pruned at this step: visual id of the kept token it was merged into}
    from `LayerKeep.merged_into` (empty when the step merged nothing)."""
    if decision.merged_into is None:
        return {}
    ids = visual_ids.cpu()
    keep = decision.keep.cpu().long()
    into = decision.merged_into.cpu().long()  # [n] index into keep, -1 = dropped
    pruned = torch.ones(ids.numel(), dtype=torch.bool)
    pruned[keep] = False
    merged = pruned & (into >= 0)
    return dict(zip(ids[merged].tolist(), ids[keep[into[merged]]].tolist(), strict=True))


def contiguous_positions(position_ids: torch.Tensor) -> torch.Tensor:
    """[1, L] positions -> 0..L-1 (`PrunePlan.contiguous_positions`); M-RoPE [3, 1, L] is refused:
    its three axes have no single "next" position to re-sequence to."""
    if position_ids.dim() != 2:
        raise ValueError("contiguous positions are defined for 1-D RoPE only (this family uses M-RoPE)")
    return torch.arange(position_ids.shape[-1], device=position_ids.device)[None]


def insert_after_visual(
    seq: RowSequence, extra: torch.Tensor, extra_inputs: torch.Tensor | None = None
) -> RowSequence:
    """Insert `extra` [m, D] right after the last visual slot; later tokens' positions shift by m.
    `extra_inputs` [1, m, ...]: their per-token layer inputs (required when the sequence has them)."""
    m = extra.shape[0]
    at = int(seq.visual_slots.max()) + 1 if seq.visual_slots.numel() else int(seq.query_slots.min())
    first_pos = seq.position_ids[..., at : at + 1]  # position the inserted block starts at
    hidden = torch.cat([seq.hidden[:, :at], extra[None].to(seq.hidden.dtype), seq.hidden[:, at:]], dim=1)
    new_pos = first_pos + torch.arange(m, device=first_pos.device)
    pos = torch.cat([seq.position_ids[..., :at], new_pos, seq.position_ids[..., at:] + m], dim=-1)

    def shift(slots: torch.Tensor) -> torch.Tensor:
        return torch.where(slots >= at, slots + m, slots)

    appended = torch.arange(at, at + m, device=seq.visual_slots.device)
    token_inputs = seq.token_inputs
    if token_inputs is not None:
        if extra_inputs is None:
            raise ValueError("appended tokens need their per-token layer inputs in this family")
        extra_inputs = extra_inputs.to(token_inputs.device, token_inputs.dtype)
        token_inputs = torch.cat([token_inputs[:, :at], extra_inputs, token_inputs[:, at:]], dim=1)
    return RowSequence(
        hidden,
        pos,
        shift(seq.visual_slots),
        seq.visual_ids,
        torch.cat([shift(seq.appended_slots), appended]),
        shift(seq.query_slots),
        token_inputs,
    )


# -- packing rows into one padded batch --------------------------------------------------------------


def pad_to(tensor: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    """Right-pad `tensor` with zeros along `dim` to `length`."""
    missing = length - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor, tensor.new_zeros(shape)], dim=dim)


def pack_rows(seqs: Sequence[RowSequence]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded `[B, Lmax, D]` hidden, `[..., B, Lmax]` positions and `[B]` lengths of `seqs`.

    Padding positions are 0: their rotary values are never seen by a real token (see `engine.batch`).
    """
    longest = max(seq.length for seq in seqs)
    if len(seqs) == 1:  # nothing to pad: the very tensors of the row (batch-1 parity with generate)
        seq = seqs[0]
        return seq.hidden, seq.position_ids, torch.tensor([seq.length], device=seq.hidden.device)
    hidden = torch.cat([pad_to(seq.hidden, longest, 1) for seq in seqs], dim=0)
    positions = torch.cat([pad_to(seq.position_ids, longest, -1) for seq in seqs], dim=-2)
    lengths = torch.tensor([seq.length for seq in seqs], device=hidden.device)
    return hidden, positions, lengths


def pack_token_inputs(seqs: Sequence[RowSequence]) -> torch.Tensor | None:
    """Right-padded `[B, Lmax, ...]` per-token layer inputs of `seqs` (None when they have none)."""
    if seqs[0].token_inputs is None:
        return None
    if len(seqs) == 1:
        return seqs[0].token_inputs
    longest = max(seq.length for seq in seqs)
    return torch.cat([pad_to(seq.token_inputs, longest, 1) for seq in seqs if seq.token_inputs is not None])


def window_mask(visible: torch.Tensor, window: int) -> torch.Tensor:
    """`visible` [..., q, k] (causal, padding hidden) restricted to the last `window` visible keys of
    each query: a sliding-window layer's mask over the sequence as it is (kept tokens count, pruned
    and padding ones do not), which is stock attention's window on the pruned sequence."""
    from_right = visible.flip(-1).int().cumsum(-1).flip(-1)  # visible keys at or after each key
    return visible & (from_right <= window)


def valid_slots(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """[B, width] True where a slot holds a real token of its row."""
    return torch.arange(width, device=lengths.device)[None, :] < lengths[:, None]
