"""`LayerKeep.merged_into` for every method that merges or pools (issue 23): where each pruned token went.

Standalone (`select_tokens`, `Selection.merged_into` over the original tokens) and end to end on the
tiny model (`kept_tokens.merged_into` of the row, `io.kept_tokens.decode_merged`). Beyond "every merged
token names a kept token", the merged states are recomputed from the recorded assignment where the
method's formula is simple, so a target that is consistent but wrong fails.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlbcli.engine.pipeline import Pipeline
from mlbcli.io.kept_tokens import decode_merged
from mlbcli.selection.standalone import select_tokens

QUESTION = "What is happening in the video?"

# (method, variant, params): each merges or pools (kept states absorb pruned tokens)
MERGING = [
    ("uniform", None, {}),
    ("fastvid", None, {}),
    ("holitom", "official", {}),
    ("holitom", "exact", {}),
    ("visionzip", "official", {}),
    ("visionzip", "paper", {}),
    ("prunevid", "exact", {}),
    ("flashvid", None, {}),
    ("framefusion", None, {}),
]


def _similar_frames(T: int = 8, N: int = 16, D: int = 8, seed: int = 0, noise: float = 0.3) -> torch.Tensor:
    """[T, N, D] frames that differ a little from one base frame: temporal and spatial merges happen."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, N, D, generator=g) + noise * torch.randn(T, N, D, generator=g)


def _kept_and_pruned(sel) -> tuple[set[int], list[int]]:
    kept = set(sel.ids[sel.ids >= 0].tolist())
    return kept, [t for t in range(sel.merged_into.numel()) if t not in kept]


@pytest.mark.parametrize(("method", "variant", "params"), MERGING)
def test_select_tokens_every_merged_token_names_a_kept_token(method, variant, params):
    x = _similar_frames()
    T, N, _ = x.shape
    sel = select_tokens(method, x, 0.3, variant=variant, **params)
    assert sel.merged_into is not None and sel.merged_into.shape == (T * N,)
    kept, pruned = _kept_and_pruned(sel)
    targets = sel.merged_into.tolist()
    assert all(targets[k] == k for k in kept)  # a kept token's state is its own
    merged = [t for t in pruned if targets[t] >= 0]
    assert merged, "the similar frames should make the method merge something"
    assert all(targets[t] in kept for t in merged)
    if method in ("uniform", "visionzip"):  # per-frame pooling / contextual merging: every token, same frame
        assert len(merged) == len(pruned)
        assert all(targets[t] // N == t // N for t in merged)


def test_slowfast_pools_slow_windows_into_their_first_token():
    x = _similar_frames(T=4, N=16)
    sel = select_tokens("slowfast", x, slow_frames=2, slow_pool=2, fast_size=2)
    assert sel.merged_into is not None
    kept, pruned = _kept_and_pruned(sel)
    slow = sorted({k // 16 for k in kept})
    for t in pruned:
        target = int(sel.merged_into[t])
        if t // 16 in slow:  # 4x4 grid, windows of 2 columns: (r, c) -> (r, c - c % 2)
            assert target == t - (t % 16 % 2)
        else:  # only in the appended fast tokens
            assert target == -1


def test_uniform_kept_state_is_the_mean_of_itself_and_the_tokens_naming_it():
    x = _similar_frames(T=3, N=16, seed=1)
    sel = select_tokens("uniform", x, 0.25)
    flat = x.reshape(-1, x.shape[-1])
    assert sel.merged_into is not None
    for row, k in enumerate(sel.ids.tolist()):
        cell = (sel.merged_into == k).nonzero().squeeze(1)  # k itself included
        assert cell.numel() > 1
        torch.testing.assert_close(sel.states[row], flat[cell].mean(0))


@pytest.mark.parametrize("segments", [{}, {"fastvid_segments": 1, "fastvid_threshold": -1.0}])
def test_fastvid_anchor_state_is_weighted_anchor_plus_member_mean(segments):
    """4 frames: one anchor frame per segment (per frame, or one 4-frame segment), so every member
    joins exactly one anchor: state = w * anchor + (1 - w) * mean(members), w = max(beta, 1/(m+1))."""
    x = _similar_frames(T=4, N=16, seed=2)
    beta = 0.6
    sel = select_tokens("fastvid", x, 0.25, **segments)
    flat = x.reshape(-1, x.shape[-1])
    assert sel.merged_into is not None
    anchors = 0
    for row, k in enumerate(sel.ids.tolist()):
        members = ((sel.merged_into == k) & (torch.arange(flat.shape[0]) != k)).nonzero().squeeze(1)
        expected = flat[k]
        if members.numel():
            anchors += 1
            w = max(beta, 1 / (members.numel() + 1))
            expected = w * flat[k] + (1 - w) * flat[members].mean(0)
        torch.testing.assert_close(sel.states[row], expected)
    assert anchors > 0
    if segments:  # one segment: members come from every frame, anchors sit on the last one
        members = [t for t in range(64) if int(sel.merged_into[t]) not in (-1, t)]
        assert {t // 16 for t in members} == {0, 1, 2, 3}
        assert {int(sel.merged_into[t]) // 16 for t in members} == {3}


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_visionzip_contextual_state_from_its_members(variant):
    """paper: mean(target, members); official: target + mean(members) (VisionZip's code)."""
    x = _similar_frames(T=2, N=16, seed=3)
    sel = select_tokens("visionzip", x, 0.5, variant=variant, dominant_ratio=0.5)  # 4 targets a frame
    flat = x.reshape(-1, x.shape[-1])
    assert sel.merged_into is not None
    contextual = 0
    for row, k in enumerate(sel.ids.tolist()):
        members = ((sel.merged_into == k) & (torch.arange(flat.shape[0]) != k)).nonzero().squeeze(1)
        if not members.numel():
            continue
        contextual += 1
        if variant == "paper":
            expected = torch.cat([flat[k : k + 1], flat[members]]).mean(0)
        else:
            expected = flat[k] + flat[members].mean(0)
        torch.testing.assert_close(sel.states[row], expected)
    assert contextual > 0


def test_merges_chain_over_steps():
    """HoliTom's inner merge (layer 2) merges tokens the outer merge (layer 0) kept: a token merged at
    layer 0 into X ends in X if X survives layer 2, else where X went."""
    x = _similar_frames(T=4, N=16, seed=4)
    params = {"holitom_layer": 2}
    outer = select_tokens("holitom", x, 0.5, variant="exact", **params)
    assert outer.layers == [0] and outer.merged_into is not None
    scores = torch.rand(len(outer), generator=torch.Generator().manual_seed(0))
    both = select_tokens("holitom", x, 0.5, variant="exact", attention=scores, **params)
    assert both.layers == [0, 2] and both.merged_into is not None
    kept = set(both.ids.tolist())
    first, final = outer.merged_into.tolist(), both.merged_into.tolist()
    chained = 0
    for token, target in enumerate(first):
        if target < 0:
            assert final[token] == -1
        elif target in kept:
            assert final[token] == target
        else:
            chained += 1
            assert final[token] == final[target] and final[token] in kept
    assert chained > 0


@pytest.mark.parametrize(("method", "params"), [("random", {}), ("evs", {}), ("vidcom2", {}), ("dycoke", {})])
def test_methods_that_only_drop_record_none(method, params):
    sel = select_tokens(method, _similar_frames(), 0.3, **params)
    assert sel.merged_into is None


# -- end to end on the tiny model ---------------------------------------------------------------------------
def _clip(frames: int, seed: int = 0) -> np.ndarray:
    """A base frame with small per-frame noise: similar frames, so temporal merges happen."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (1, 56, 56, 3)).astype(np.int16)
    noise = rng.integers(-6, 7, (frames, 56, 56, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


E2E = [
    *MERGING,
    ("holitom", "exact", {"holitom_layer": 2}),
    ("slowfast", None, {"slow_frames": 2}),
]


def _assert_merges_name_kept_tokens(adapter, method, variant, params, keep) -> None:
    encoded = Pipeline(adapter).encode(_clip(4, seed=5))
    stats, state = Pipeline(adapter, method=method, keep=keep, variant=variant, params=params).reduce(
        encoded, QUESTION
    )
    assert stats.kept_tokens is not None
    targets = decode_merged(stats.kept_tokens)  # [frames, h, w]: flat id merged into, -1
    assert targets is not None and targets.size == encoded.tokens.num_visual
    kept = set(state.kept_ids.tolist())
    flat = targets.ravel().tolist()
    assert all(flat[k] == -1 for k in kept)
    merged = [t for t, target in enumerate(flat) if t not in kept and target >= 0]
    assert merged and all(flat[t] in kept for t in merged)


@pytest.mark.parametrize(("method", "variant", "params"), E2E)
def test_rows_record_where_merged_tokens_went(tiny_adapter, method, variant, params):
    _assert_merges_name_kept_tokens(
        tiny_adapter, method, variant, params, None if method == "slowfast" else 0.3
    )


def test_rows_of_mlb_two_stage_pool_mode(tmp_path_factory):
    """The two-stage layout (image LLMs) pools each cell into its centre, as MLB-lite's pool mode."""
    from mlbcli.models import load_adapter
    from mlbcli.testing.tiny import build_tiny_llava_next

    adapter = load_adapter(str(build_tiny_llava_next(tmp_path_factory.mktemp("mi-next"))), device="cpu")
    _assert_merges_name_kept_tokens(adapter, "mlb", "paper", {"pool_temperature": 1.0}, None)


@pytest.mark.parametrize("method", ["fastv", "random", "evs", "vidcom2", "dycoke"])
def test_rows_of_methods_that_only_drop_record_none(tiny_adapter, method):
    encoded = Pipeline(tiny_adapter).encode(_clip(4, seed=5))
    stats, _ = Pipeline(tiny_adapter, method=method, keep=0.3).reduce(encoded, QUESTION)
    assert stats.kept_tokens is not None and decode_merged(stats.kept_tokens) is None
