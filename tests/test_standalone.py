"""`select_tokens` / `replay_kv`: the methods on plain tensors, as notebooks and the golden tests call them."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from mlbcli import replay_kv, select_tokens
from mlbcli.errors import UsageError
from mlbcli.selection.base import token_budget
from mlbcli.selection.standalone import APPENDED


def video(T: int = 6, N: int = 16, D: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.randn(T, N, D, generator=torch.Generator().manual_seed(seed))


def test_fastv_keeps_the_top_of_the_attention_it_is_given():
    features = video()
    attention = torch.rand(features.shape[0] * features.shape[1], generator=torch.Generator().manual_seed(1))
    sel = select_tokens("fastv", features, keep=0.25, attention=attention)
    budget = token_budget(attention.numel(), 0.25)
    expected = attention.topk(budget).indices.sort().values
    assert torch.equal(sel.ids, expected)
    assert torch.equal(sel.positions, expected)  # original positions inside the LLM
    assert torch.equal(sel.states, features.reshape(-1, features.shape[-1])[expected])
    assert sel.layers == [2] and sel.keep_note is None
    # inverted attention keeps the other end: the selection follows the scores, not the layout
    low = select_tokens("fastv", features, keep=0.25, attention=-attention)
    assert not set(low.ids.tolist()) & set(sel.ids.tolist())


def test_without_attention_an_in_llm_method_stops_before_the_llm():
    sel = select_tokens("fastv", video(), keep=0.25)
    assert sel.layers == [] and len(sel) == 6 * 16 and sel.keep_note is None


def test_pre_llm_selection_without_merging_returns_the_kept_features_at_their_positions():
    features = video()
    sel = select_tokens("random", features, keep=0.5)
    flat = features.reshape(-1, features.shape[-1])
    assert torch.equal(sel.states, flat[sel.ids])
    assert torch.equal(sel.positions, sel.ids)
    assert len(sel) == token_budget(flat.shape[0], 0.5)


def test_contiguous_positions_renumber_the_kept_tokens():
    sel = select_tokens("visionzip", video(), keep=0.25, variant="official")
    assert torch.equal(sel.positions, torch.arange(len(sel)))
    sel = select_tokens("uniform", video(), keep=0.25, positions="contiguous")
    assert torch.equal(sel.positions, torch.arange(len(sel)))


def test_merging_methods_return_states_that_differ_from_the_kept_features():
    features = video(T=8)
    sel = select_tokens("fastvid", features, keep=0.25)
    flat = features.reshape(-1, features.shape[-1])
    merged = (sel.states - flat[sel.ids]).abs().amax(dim=1) > 1e-6
    assert bool(merged.any())  # the anchors took their members in


def test_appended_tokens_follow_the_kept_ones():
    """SlowFast appends its fast tokens after the visual block: they take the positions where the text
    after the block began (T * N on), as the engine's `insert_after_visual` gives them."""
    features = video(T=8)
    sel = select_tokens("slowfast", features)
    appended = (sel.ids == APPENDED).nonzero().squeeze(1)
    assert appended.numel() > 0
    assert int(appended.min()) > int((sel.ids != APPENDED).nonzero().max())
    start = features.shape[0] * features.shape[1]
    assert torch.equal(sel.positions[appended], start + torch.arange(appended.numel()))


def test_an_official_order_keeps_each_token_at_its_own_position():
    """Official VisionZip feeds its tokens in its own order; with original positions (as on M-RoPE
    families) every state keeps its own token's position, whatever slot it lands in."""
    features = video(T=4)
    sel = select_tokens("visionzip", features, keep=0.25, variant="official", positions="original")
    assert not torch.equal(sel.ids, sel.ids.sort().values)  # the official order differs from ascending
    assert torch.equal(sel.positions, sel.ids)


def test_bad_inputs_are_usage_errors():
    with pytest.raises(UsageError, match=r"\[T, N, D\]"):
        select_tokens("uniform", torch.randn(16, 24), keep=0.5)
    with pytest.raises(UsageError, match="saliency"):
        select_tokens("fastvid", video(), keep=0.5, saliency=torch.rand(3, 3))
    with pytest.raises(UsageError, match="not apply"):
        select_tokens("uniform", video(), keep=0.5, layer=3)
    with pytest.raises(UsageError):
        select_tokens("uniform", video(), keep=0.5, no_such_parameter=1)
    with pytest.raises(UsageError, match="score the"):
        select_tokens("fastv", video(), keep=0.5, attention=torch.rand(5))


def test_replay_kv_hides_the_least_attended_keys_and_reports_visible_ones():
    attention = torch.rand(4, 50, generator=torch.Generator().manual_seed(2))
    steps = replay_kv("dycoke", attention, dycoke_kv_ratio=0.7)
    assert len(steps) == 4
    first = steps[0]
    assert first.numel() == int(50 * 0.3)
    assert set(first.tolist()) == set(attention[0].topk(first.numel()).indices.tolist())
    with pytest.raises(UsageError, match="no decode-time KV"):
        replay_kv("fastv", attention)


def test_importing_mlbcli_does_not_import_torch():
    code = "import sys, mlbcli; assert 'torch' not in sys.modules; print(callable(mlbcli.select_tokens))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
