"""The published video baselines (EVS, VidCom2, FastVID, HoliTom, PruneVid) and DyCoke's decode-time
KV pruning: identity at keep 1.0 on every family, exact budgets, hand-computed cases of the reference
algorithms, the engine's per-step KV policy hook, and end-to-end CLI runs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers_engine import no_eos
from hypothesis import given, settings
from hypothesis import strategies as st

from mlbcli.engine import batch as engine
from mlbcli.engine.pipeline import Pipeline, Request
from mlbcli.errors import UsageError
from mlbcli.selection import MethodOptions, get_method
from mlbcli.selection.ops.baselines import frame_budgets
from mlbcli.selection.ops.dycoke_kv import DyCokeKV
from mlbcli.selection.ops.evs import evs_count, evs_keep
from mlbcli.selection.ops.fastvid import dynamic_segments, fastvid_select, segment_plan
from mlbcli.selection.ops.holitom import holitom_outer, inner_merge, static_windows
from mlbcli.selection.ops.prunevid import cluster_group, prunevid_merge, refine_labels
from mlbcli.selection.ops.vidcom2 import vidcom2_count, vidcom2_keep

NEW = ["evs", "vidcom2", "fastvid", "holitom", "prunevid"]
QUESTION = "What is happening in the video?"
FAMILIES = ["llava_onevision", "qwen2_vl", "qwen2_5_vl", "llava_next", "qwen3_vl", "llava_video"]


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, tiny_adapter):
    from mlbcli.models import load_adapter
    from mlbcli.testing.tiny import (
        build_tiny_llava_next,
        build_tiny_llava_video,
        build_tiny_qwen2_vl,
        build_tiny_qwen3_vl,
    )

    built = {
        "qwen2_vl": build_tiny_qwen2_vl(tmp_path_factory.mktemp("q2"), version="2"),
        "qwen2_5_vl": build_tiny_qwen2_vl(tmp_path_factory.mktemp("q25"), version="2.5"),
        "llava_next": build_tiny_llava_next(tmp_path_factory.mktemp("next")),
        "qwen3_vl": build_tiny_qwen3_vl(tmp_path_factory.mktemp("q3")),
        "llava_video": build_tiny_llava_video(tmp_path_factory.mktemp("LLaVA-Video")),
    }
    loaded = {name: load_adapter(str(path), device="cpu") for name, path in built.items()}
    return {"llava_onevision": tiny_adapter, **loaded}


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return np.random.default_rng(5).integers(0, 255, (8, 72, 96, 3), dtype=np.uint8)


# -- identity at keep 1.0, on every family ----------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_keep_one_reproduces_none_on_every_family(adapters, clip, family):
    adapter = adapters[family]
    pipe = Pipeline(adapter)
    video = pipe.encode(clip)
    reference = pipe.run([Request(video, QUESTION, 5)])[0]
    for name in [*NEW, "dycoke"]:
        params = {"holitom_layer": 2} if name == "holitom" else {}
        ours = Pipeline(adapter, method=name, keep=1.0, params=params).run([Request(video, QUESTION, 5)])[0]
        assert ours.error is None, (name, ours.error)
        assert ours.token_ids == reference.token_ids, name
        ours_row, reference_row = ours.stats.as_row(), reference.stats.as_row()
        assert ours_row.pop("saliency") in (None, "tower", "proxy")  # what the method read; none reads none
        assert reference_row.pop("saliency") is None
        assert ours_row == reference_row, name
        assert ours.stats.decode_kv_ratio == 1.0


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("keep", [0.5, 0.1])
def test_realised_keep_is_requested_up_to_rounding(adapters, clip, family, keep):
    """The budget contract: token_budget(T*N, keep) up to half a token per frame, or a keep_note."""
    adapter = adapters[family]
    video = Pipeline(adapter).encode(clip)
    n, T = video.tokens.num_visual, video.tokens.num_frames
    budget = math.floor(n * keep + 0.5)
    for name in NEW:
        layer = {"layer": 2} if name == "prunevid" else {}
        stats = Pipeline(adapter, method=name, keep=keep, **layer).run([Request(video, QUESTION, 2)])[0].stats
        if stats.keep_note is None:
            assert 2 * abs(stats.visual_tokens_kept - budget) <= max(1, T), (name, stats.visual_tokens_kept)
        else:  # only the documented reasons
            assert any(
                why in stats.keep_note
                for why in (
                    "first frame",
                    "one token per frame",
                    "merging left fewer",
                    "static window",
                    "official",
                )
            ), stats.keep_note
        assert 0 < stats.flops_ratio < 1


def test_keep_notes_name_the_reason(tiny_adapter, clip):
    video = Pipeline(tiny_adapter).encode(clip)
    stats = (
        Pipeline(tiny_adapter, method="evs", keep=0.05)
        .run([Request(video, QUESTION, generate=False)])[0]
        .stats
    )
    assert stats.keep_realized == 1 / video.tokens.num_frames and "whole first frame" in stats.keep_note
    inner = Pipeline(tiny_adapter, method="holitom", keep=0.5, variant="exact", params={"holitom_layer": 2})
    stats = inner.run([Request(video, QUESTION, 2)])[0].stats
    n = video.tokens.num_visual
    assert stats.visual_tokens_kept == round(round(n * 0.5) * 0.5) and "inner merge" in stats.keep_note
    assert stats.tokens_per_layer[:2] == [round(n * 0.5)] * 2


# -- EVS ----------------------------------------------------------------------------------------------------
def test_evs_hand_case():
    """vLLM's rule by hand: dissimilarity to the previous frame's same position, first frame = 255."""
    e0, e1 = [1.0, 0.0], [0.0, 1.0]
    features = torch.tensor([[e0, e1], [e0, e0], [e1, e0]])  # T=3, N=2, D=2
    # dissimilarity: frame 0: 255, 255; frame 1: 0 (same), 1 (orthogonal); frame 2: 1, 0
    assert evs_count(3, 2, 0.5) == 3  # int(6 * 0.5)
    assert evs_keep(features, 3).tolist() == [0, 1, 3]  # ties (ids 3 and 4) go to the earlier token
    assert evs_count(3, 2, 0.2) == 2  # int(1.2) = 1 < N: the whole first frame
    assert evs_keep(features, 2).tolist() == [0, 1]
    assert evs_count(20, 196, 0.1) == 391  # vLLM float arithmetic: int(3920 * (1 - 0.9)), not round(392.0)


@settings(max_examples=60, deadline=None)
@given(T=st.integers(1, 6), N=st.integers(1, 9), keep=st.floats(0.01, 1.0), seed=st.integers(0, 99))
def test_evs_budget_properties(T, N, keep, seed):
    x = torch.randn(T, N, 5, generator=torch.Generator().manual_seed(seed))
    count = evs_count(T, N, keep)
    kept = evs_keep(x, count)
    assert kept.numel() == count == max(N, min(T * N, int(T * N * (1 - (1 - keep)))))
    assert bool((kept[1:] > kept[:-1]).all())
    assert set(range(N)) <= set(kept.tolist())  # the first frame survives whole


# -- VidCom2 -------------------------------------------------------------------------------------------------
def test_vidcom2_hand_case_keeps_each_frames_outlier():
    noise = torch.tensor([10.0, -10.0] * 4).view(8, 1) * torch.tensor([1.0, 1.0])  # high-variance channels
    a, b = [1.0, 0.0], [0.0, 1.0]
    low = torch.tensor([a, a, a, b, a, b, a, a])  # frame 0: token 3 is the outlier, frame 1: token 1
    x = torch.cat([low, noise], dim=1).view(2, 4, 4)
    kept, budgets = vidcom2_keep(x, 0.5, vidcom2_count(2, 4, 0.5))
    assert budgets == [2, 2]  # symmetric frames: equal uniqueness, keep * N each
    assert kept.tolist() == [0, 3, 4, 5]  # outlier + the lowest-index of the tied rest, per frame


def test_vidcom2_unique_frame_gets_the_larger_budget():
    g = torch.Generator().manual_seed(0)
    structure = torch.zeros(3, 10, 2)
    structure[:2, :, 0] = 1.0  # frames 0 and 1 point one way
    structure[2, :, 1] = 1.0  # frame 2 another: the unique frame
    structure += 0.05 * torch.randn(3, 10, 2, generator=g)
    noise = 10 * torch.randn(3, 10, 2, generator=g)  # high-variance channels, left out by step 1
    kept, budgets = vidcom2_keep(torch.cat([structure, noise], dim=-1), 0.3, vidcom2_count(3, 10, 0.3))
    # softmax at temperature 0.01 puts p ~ [0, 0, 1]: scale_t = 0.3 * (1 + p_t - 1/3)
    assert budgets == [2, 2, 5]
    assert kept.numel() == 9 and torch.bincount(kept // 10, minlength=3).tolist() == [2, 2, 5]


@settings(max_examples=50, deadline=None)
@given(T=st.integers(1, 6), N=st.integers(1, 9), keep=st.floats(0.01, 0.99), seed=st.integers(0, 99))
def test_vidcom2_exact_target(T, N, keep, seed):
    x = torch.randn(T, N, 6, generator=torch.Generator().manual_seed(seed))
    target = vidcom2_count(T, N, keep)
    kept, budgets = vidcom2_keep(x, keep, target)
    assert kept.numel() == target >= min(T, T * N)
    assert bool((kept[1:] > kept[:-1]).all()) and all(1 <= k <= N for k in budgets)


# -- FastVID ---------------------------------------------------------------------------------------------------
FASTVID = get_method("fastvid").params


def test_fastvid_dyseg_hand_case():
    frames = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
    assert dynamic_segments(frames, 2, -1.0) == [(0, 2), (2, 4)]  # c - 1 = 1 cut at the least similar pair
    assert dynamic_segments(frames, 1, 0.99) == [(0, 2), (2, 4)]  # tau alone
    assert dynamic_segments(frames, 8, -1.0) == [(0, 1), (1, 2), (2, 3), (3, 4)]  # c - 1 capped at T - 1
    # per-segment counts: d = 0.4 of 40 -> 16 contextual on ceil(5/4) = 2 anchors at the end (reversed)
    sal, ctx = segment_plan(5, 40, 196, 0.4, 4)
    assert sal == [5, 5, 5, 5, 4] and ctx == [8, 0, 0, 0, 8]


def test_fastvid_hand_case_salient_anchors_and_merge():
    g = torch.Generator().manual_seed(3)
    T, N, D = 4, 4, 6
    x = torch.randn(T, N, D, generator=g)
    frames = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
    params = {**FASTVID, "fastvid_segments": 2, "fastvid_threshold": -1.0, "fastvid_contextual": 0.5}
    ids, states, info = fastvid_select(x, frames, frame_budgets(8, x.shape[0]), params)
    assert ids.numel() == 8 and bool((ids[1:] > ids[:-1]).all())
    # segments (0,2), (2,4); 4 tokens each: 2 salient (1 per frame), 2 anchors on the segment's last frame
    assert info["segments"] == [
        {"frames": [0, 2], "salient": [1, 1], "contextual": [0, 2]},
        {"frames": [2, 4], "salient": [1, 1], "contextual": [0, 2]},
    ]
    per_frame = torch.bincount(ids // N, minlength=T).tolist()
    assert per_frame == [1, 3, 1, 3]
    from mlbcli.selection.ops.clustering import frame_saliency

    saliency = frame_saliency(x)
    salient = [int(saliency[t].argmax()) + t * N for t in range(T)]
    assert set(salient) <= set(ids.tolist())
    flat = x.reshape(T * N, D)
    torch.testing.assert_close(states[ids == salient[0]], flat[[salient[0]]])  # salient: unchanged
    # one anchor by hand: w * anchor + (1 - w) * mean(members), members = non-salient non-anchor tokens
    anchors = [i for i in ids.tolist() if i // N == 1 and i != salient[1]]
    members = [i for i in range(0, 2 * N) if i not in salient[:2] and i not in anchors]
    sim = F.normalize(flat[members], dim=-1) @ F.normalize(flat[anchors], dim=-1).T
    owner = sim.argmax(dim=1)
    for slot, anchor in enumerate(anchors):
        group = [m for m, o in zip(members, owner.tolist(), strict=True) if o == slot]
        w = max(0.6, 1 / (len(group) + 1))
        expected = flat[anchor] if not group else w * flat[anchor] + (1 - w) * flat[group].mean(0)
        torch.testing.assert_close(states[ids == anchor][0], expected)


@settings(max_examples=40, deadline=None)
@given(T=st.integers(1, 7), N=st.integers(1, 9), keep=st.floats(0.05, 0.95), seed=st.integers(0, 99))
def test_fastvid_exact_budget(T, N, keep, seed):
    from mlbcli.selection.base import token_budget

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, N, 5, generator=g)
    budget = token_budget(T * N, keep)
    ids, states, _ = fastvid_select(x, x.mean(1), frame_budgets(budget, T), FASTVID)
    assert ids.numel() == states.shape[0] == budget
    assert bool((ids[1:] > ids[:-1]).all()) and int(ids.max()) < T * N


# -- HoliTom -----------------------------------------------------------------------------------------------------
def test_holitom_window_dp_hand_case():
    # position 0 static over frames 0-2, position 1 only over 0-1
    similarity = torch.tensor([[0.9, 0.9], [0.9, 0.5]])
    # removed(0,1) = 2 * 1, removed(1,2) = 1 * 1, removed(0,2) = 1 * 2: the DP takes [0,1] + [2] (ties: shorter)
    assert static_windows(similarity, 0.8, 1024) == ([(0, 1), (2, 2)], 2.0)
    similarity = torch.tensor([[0.9, 0.9], [0.9, 0.9]])
    assert static_windows(similarity, 0.8, 1024) == ([(0, 2)], 4.0)  # 2 positions x 2 removed
    assert static_windows(similarity, 0.8, 2) == ([(0, 1), (2, 2)], 2.0)  # window length capped


def test_holitom_inner_merge_is_sequential_pairwise_averaging():
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(9, 4, generator=g)
    scores = torch.rand(9, generator=g)
    kept, merged = inner_merge(hidden, scores, 3)
    assert kept.tolist() == sorted(torch.argsort(scores, descending=True)[:3].tolist())
    reference = hidden.clone()
    kn = F.normalize(hidden[kept], dim=-1)
    for i in range(9):  # the reference's loop: s <- (s + x) / 2 into the most similar survivor
        if i in kept.tolist():
            continue
        target = kept[int((F.normalize(hidden[i], dim=-1) @ kn.T).argmax())]
        reference[target] = (reference[target] + hidden[i]) / 2
    torch.testing.assert_close(merged, reference[kept])


@settings(max_examples=30, deadline=None)
@given(T=st.integers(1, 6), N=st.integers(1, 9), keep=st.floats(0.05, 0.95), seed=st.integers(0, 99))
def test_holitom_exact_budget(T, N, keep, seed):
    from mlbcli.selection.base import token_budget

    g = torch.Generator().manual_seed(seed)
    base = torch.randn(1, N, 5, generator=g)
    x = base + 0.3 * torch.randn(T, N, 5, generator=g) * (torch.rand(T, N, 1, generator=g) < 0.5)
    budget = token_budget(T * N, keep)
    ids, states, info = holitom_outer(x, budget, get_method("holitom").params)
    # static windows collapse to one token per static position: fewer may remain than the budget
    available = T * N - info["static_removed"]
    assert ids.numel() == states.shape[0] == min(budget, available)
    assert ("keep_note" in info) == (budget > available)
    assert bool((ids[1:] > ids[:-1]).all())


# -- PruneVid ----------------------------------------------------------------------------------------------------
def test_prunevid_refine_clusters_hand_cases():
    # label 1 has only a 1-frame run: re-labelled by its longer neighbour (left on ties)
    assert refine_labels([0, 0, 1, 0, 0, 2, 2]) == [0, 0, 0, 0, 0, 2, 2]
    # label 0's shorter run joins the longer neighbour (2 has 3 frames to the right)
    assert refine_labels([0, 0, 0, 1, 1, 0, 2, 2, 2]) == [0, 0, 0, 1, 1, 2, 2, 2, 2]
    assert refine_labels([3]) == [0]  # nothing to its sides: cluster 0


def test_prunevid_static_positions_and_small_groups():
    g = torch.Generator().manual_seed(0)
    T, N = 4, 9
    still = torch.randn(1, N, 6, generator=g).expand(T, N, 6).clone()
    still[:, 4] = torch.randn(T, 6, generator=g)  # position 4 moves
    params = {**get_method("prunevid").params, "prunevid_segment_ratio": 0.25}
    ids, states, groups = prunevid_merge(still, params)
    # one segment, 8 static positions (8 <= 14: not clustered) at frame 0, position 4 dynamic per frame
    assert [(kind, frame) for kind, frame, _ in groups] == [
        ("static", 0),
        *[("dynamic", t) for t in range(T)],
    ]
    assert ids.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 13, 22, 31]
    torch.testing.assert_close(states[:4], still[0, :4])


def test_prunevid_cluster_means():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(20, 3, generator=g)
    states, ids = cluster_group(x, torch.arange(100, 120), 0.5)
    assert states.shape == (10, 3) and bool((ids[1:] > ids[:-1]).all())
    # every merged token is the mean of the tokens nearer to its centre than to any other centre
    centres = ids - 100
    nearest = torch.cdist(x, x[centres]).argmin(1)
    nearest[centres] = torch.arange(10)
    for c in range(10):
        torch.testing.assert_close(states[c], x[nearest == c].mean(0))


def test_prunevid_decoding_never_sees_dropped_tokens(tiny_adapter, clip):
    pipe = Pipeline(tiny_adapter, method="prunevid", keep=0.25, layer=2)
    video = pipe.encode(clip)
    result = pipe.run([Request(video, QUESTION, 4)])[0]
    stats = result.stats
    kept = stats.visual_tokens_kept
    # every decode step attends to `kept` visual keys in every layer, out of visual_in
    assert result.stats.decode_kv_ratio == pytest.approx(kept / stats.visual_tokens_in)


# -- DyCoke stage 2 -------------------------------------------------------------------------------------------
def test_dycoke_kv_policy_hand_case():
    policy = DyCokeKV(layer=3, ratio=0.5, threshold=0.9)
    ids = torch.tensor([10, 11, 12, 13])
    ctx = engine.DecodeContext(0, ids, torch.tensor([0.1, 0.5, 0.2, 0.2]), ids)
    hidden, state = policy.step(ctx, policy.start())
    assert hidden.tolist() == [10, 13]  # the first step prunes: int(4 * 0.5) = 2 kept, 11 then 12 (tie)
    # a similar attention (cosine >= 0.9) prunes nothing: this step sees the whole cache
    ctx = engine.DecodeContext(1, ids, torch.tensor([0.1, 0.5, 0.2, 0.21]), ids)
    again, state = policy.step(ctx, state)
    assert again is None
    ctx = engine.DecodeContext(2, ids, torch.tensor([0.9, 0.0, 0.0, 0.1]), ids)  # attention moved
    moved, state = policy.step(ctx, state)
    assert moved.tolist() == [11, 12]  # this step's own top 2
    # every step is compared with the step before it, not with the last step that pruned
    steps = [torch.tensor([0.9, 0.0, 0.05 * k, 0.1]) for k in range(1, 6)]
    hidden_steps = []
    for k, attention in enumerate(steps):
        hide, state = policy.step(engine.DecodeContext(3 + k, ids, attention, ids), state)
        hidden_steps.append(hide)
    assert hidden_steps == [None] * 5  # a slow drift never prunes


def test_dycoke_kv_official_never_scores_the_last_video_key():
    # the code's video span is the TTM output's size - 1 keys: the last video key stays visible
    policy = DyCokeKV(layer=3, ratio=0.5, threshold=0.9, last_key_visible=True)
    ids = torch.tensor([10, 11, 12, 13])
    ctx = engine.DecodeContext(0, ids, torch.tensor([0.1, 0.5, 0.2, 0.9]), ids)
    hidden, _ = policy.step(ctx, policy.start())
    assert hidden.tolist() == [10, 12]  # int(3 * 0.5) = 1 of the first three kept (11), 13 unscored


def test_dycoke_kv_is_on_by_default_and_switchable(tiny_adapter, clip):
    video = Pipeline(tiny_adapter).encode(clip)
    on = Pipeline(tiny_adapter, method="dycoke", keep=0.5).run([Request(video, QUESTION, 6)])[0]
    off = Pipeline(tiny_adapter, method="dycoke", keep=0.5, params={"dycoke_kv": False}).run(
        [Request(video, QUESTION, 6)]
    )[0]
    static = sum(off.stats.tokens_per_layer) / (off.stats.visual_tokens_in * len(off.stats.tokens_per_layer))
    assert off.stats.decode_kv_ratio == pytest.approx(static)
    # a pruning step shows layer 3 of 4 only (1 - 0.7) of the video keys: the ratio falls by
    # 0.7 * kept / (4 * in) on such a step, by nothing on a step whose attention barely moved; the first
    # of the (at most 6) steps always prunes
    drop = 0.7 * off.stats.visual_tokens_kept / (4 * off.stats.visual_tokens_in)
    fall = static - on.stats.decode_kv_ratio
    tolerance = 1 / off.stats.visual_tokens_in
    assert drop / 6 - tolerance <= fall <= drop + tolerance
    assert on.stats.flops_ratio == off.stats.flops_ratio  # prefill untouched


def test_dycoke_official_runs_end_to_end_with_its_decode_policy(tiny_adapter, clip):
    video = Pipeline(tiny_adapter).encode(clip)
    pipe = Pipeline(tiny_adapter, method="dycoke", keep=0.5, variant="official")
    result = pipe.run([Request(video, QUESTION, 6)])[0]
    assert result.error is None and result.stats.visual_tokens_kept < result.stats.visual_tokens_in
    off = Pipeline(tiny_adapter, method="dycoke", keep=0.5, variant="official", params={"dycoke_kv": False})
    static = off.run([Request(video, QUESTION, 6)])[0].stats.decode_kv_ratio
    assert result.stats.decode_kv_ratio < static  # the first decode step prunes at least


def test_dycoke_kv_layer_out_of_range_is_a_clear_row_error(tiny_adapter, clip):
    video = Pipeline(tiny_adapter).encode(clip)
    pipe = Pipeline(tiny_adapter, method="dycoke", keep=0.5, params={"dycoke_kv_layer": 9})
    result = pipe.run([Request(video, QUESTION, 3)])[0]
    assert "decode-time KV pruning from layer 9 is impossible" in str(result.error)


# -- the engine's per-step KV policy hook ---------------------------------------------------------------
class _Recorder(engine.DecodePolicy):
    def __init__(self, layer: int, hide: torch.Tensor | None = None):
        self.layer, self.hide, self.seen = layer, hide, []

    def step(self, ctx, state):
        self.seen.append((ctx.step, ctx.visual_ids.clone(), ctx.attention.clone()))
        return self.hide, state


def _decode(adapter, video, policy, steps=5):
    prompt = adapter.build_prompt(QUESTION, video)
    inputs = adapter.model_inputs(prompt, video)
    batch, errors = engine.prefill_batch(adapter, [inputs], [engine.PrunePlan(decode_policy=policy)])
    assert not errors
    with no_eos(adapter):
        return (
            prompt,
            inputs,
            engine.greedy_decode_batch(adapter, batch, max_new_tokens=steps, keep_logits=True)[0],
        )


def test_policy_hiding_nothing_is_exact_parity(tiny_adapter, clip):
    video = Pipeline(tiny_adapter).encode(clip).tokens
    _, _, plain = _decode(tiny_adapter, video, None)
    _, _, hooked = _decode(tiny_adapter, video, _Recorder(2))
    assert hooked.token_ids == plain.token_ids
    assert all(torch.equal(a, b) for a, b in zip(hooked.logits, plain.logits, strict=True))


def test_policy_attention_equals_a_prefill_probe_of_the_same_row(tiny_adapter, clip):
    video = Pipeline(tiny_adapter).encode(clip).tokens
    recorder = _Recorder(2)
    prompt, inputs, gen = _decode(tiny_adapter, video, recorder, steps=3)
    for step, ids, attention in recorder.seen:
        tokens = torch.tensor([gen.token_ids[: step + 1]])
        embeds = torch.cat([inputs.embeds, tiny_adapter.decoder.embed_tokens(tokens)], dim=1)
        extra = tiny_adapter.next_positions(inputs.position_ids, 0) + torch.arange(step + 1)
        positions = torch.cat([inputs.position_ids, extra], dim=-1)

        def keep_all(ctx):
            return engine.LayerKeep(keep=torch.arange(ctx.visual_slots.numel()))

        plan = engine.PrunePlan(steps={2: keep_all}, needs_scores=frozenset({2}), query="last")
        state = engine.prefill(
            tiny_adapter,
            embeds,
            positions,
            inputs.visual_slots,
            inputs.query_slots,
            plan,
            stop_after_pruning=True,
        )
        torch.testing.assert_close(attention, state.scores[1][ids], rtol=1e-4, atol=1e-6)


def test_hidden_keys_equal_keys_removed_from_the_cache(tiny_adapter, clip):
    """Masking visual keys from layer L on == decoding over a cache whose layers >= L lack them."""
    video = Pipeline(tiny_adapter).encode(clip).tokens
    hide = torch.arange(0, video.num_visual, 3)
    _, inputs, masked = _decode(tiny_adapter, video, _Recorder(2, hide), steps=5)
    state = engine.prefill(
        tiny_adapter, inputs.embeds, inputs.position_ids, inputs.visual_slots, inputs.query_slots, None
    )
    for layer_index, layer in enumerate(state.cache.layers):
        if layer_index >= 2:
            alive = torch.ones(layer.keys.shape[-2], dtype=torch.bool)
            alive[inputs.visual_slots[hide]] = False
            layer.keys, layer.values = layer.keys[:, :, alive], layer.values[:, :, alive]
    with no_eos(tiny_adapter):
        removed = engine.greedy_decode(tiny_adapter, state, max_new_tokens=5, keep_logits=True)
    assert masked.token_ids == removed.token_ids
    for a, b in zip(masked.logits, removed.logits, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_policies_batch_equals_one_by_one(adapters, clip):
    """DyCoke's KV policy (layer 1) and HoliTom's inner merge: a batch row is the row alone."""
    for family in ("llava_onevision", "qwen2_5_vl", "qwen3_vl"):
        adapter = adapters[family]
        for name, params in (("dycoke", {"dycoke_kv_layer": 1}), ("holitom", {"holitom_layer": 2})):
            pipe = Pipeline(adapter, method=name, keep=0.5, params=params)
            videos = [pipe.encode(clip), pipe.encode(clip[:4, :64, :64])]
            requests = [
                Request(videos[0], QUESTION, 5),
                Request(videos[1], "Why?", 3),
                Request(videos[0], "How?", 4),
            ]
            batched = pipe.run(requests)
            alone = [Pipeline(adapter, method=name, keep=0.5, params=params).run([r])[0] for r in requests]
            for a, b in zip(batched, alone, strict=True):
                assert a.error is None and b.error is None
                assert a.token_ids == b.token_ids, (family, name)
                row_a, row_b = a.stats.as_row(), b.stats.as_row()
                for column in ("attention_per_frame", "attention_per_frame_debiased"):
                    row_a.pop(column), row_b.pop(column)  # float sums: batched differs in the last bits
                assert row_a == row_b


# -- usage, nominal schedules, CLI ------------------------------------------------------------------------
@pytest.mark.parametrize("name", NEW)
def test_no_debiasers_and_no_foreign_parameters(name):
    with pytest.raises(UsageError):
        get_method(name, MethodOptions(keep=0.5, debias=("grid",)))
    with pytest.raises(UsageError):
        get_method(name, MethodOptions(keep=0.5, params={"dedup_threshold": 0.8}))


def test_bool_parameter_coercion():
    assert get_method("dycoke", MethodOptions(params={"dycoke_kv": "false"})).params["dycoke_kv"] is False
    assert get_method("dycoke").params["dycoke_kv"] is True
    with pytest.raises(UsageError):
        get_method("dycoke", MethodOptions(params={"dycoke-kv": "maybe"}))


@pytest.mark.parametrize("name", ["evs", "vidcom2", "fastvid", "holitom"])
@pytest.mark.parametrize("keep", [0.5, 0.25, 0.1])
def test_nominal_schedule_matches_the_measured_count(tiny_adapter, clip, name, keep):
    video = Pipeline(tiny_adapter).encode(clip)
    # HoliTom's and VidCom2's official counts depend on the content: their nominal count is exact under
    # `exact` / `vllm`
    variant = {"holitom": "exact", "vidcom2": "vllm"}.get(name)
    method = get_method(name, MethodOptions(keep=keep, variant=variant))
    stats = Pipeline(tiny_adapter, method=method).run([Request(video, QUESTION, generate=False)])[0].stats
    (count,) = method.nominal_schedule(video.tokens.num_visual, video.tokens.num_frames).values()
    assert count == stats.visual_tokens_kept


def test_cli_answer_runs_every_new_method(tiny_model_dir, clips_dir, tmp_path):
    from typer.testing import CliRunner

    from mlbcli.cli.app import app
    from mlbcli.io.writers import read_results

    for name in [*NEW, "dycoke"]:
        out = tmp_path / f"{name}.parquet"
        args = ["answer", str(clips_dir), "--question", "What moves?", "--model", str(tiny_model_dir)]
        args += ["--method", name, "--keep", "0.25", "--frames", "8", "--max-new-tokens", "3", "-q"]
        args += ["--workers", "0", "--out", str(out)]
        if name == "prunevid":
            args += ["--layer", "2"]
        result = CliRunner().invoke(app, args, catch_exceptions=False)
        assert result.exit_code == 0, (name, result.output)
        rows = read_results(str(out)).to_pylist()
        assert len(rows) == 3 and all(row["error"] is None for row in rows), name
        for row in rows:
            assert row["method"] == name and row["keep_realized"] < 0.5
            assert 0 < row["decode_kv_ratio"] <= row["keep_realized"] + 1e-9
    switched = tmp_path / "off.parquet"
    args = ["answer", str(clips_dir), "--question", "What moves?", "--model", str(tiny_model_dir)]
    args += ["--method", "dycoke", "--keep", "0.25", "--frames", "8", "--max-new-tokens", "3", "-q"]
    args += ["--workers", "0", "--no-dycoke-kv", "--out", str(switched)]
    assert CliRunner().invoke(app, args, catch_exceptions=False).exit_code == 0
    on = {r["video_id"]: r for r in read_results(str(tmp_path / "dycoke.parquet")).to_pylist()}
    for row in read_results(str(switched)).to_pylist():
        assert row["keep_realized"] == on[row["video_id"]]["keep_realized"]
        assert row["decode_kv_ratio"] >= on[row["video_id"]]["decode_kv_ratio"]


def test_mlb_methods_lists_the_baselines():
    from typer.testing import CliRunner

    from mlbcli.cli.app import app

    text = CliRunner().invoke(app, ["methods"]).stdout
    for name in NEW:
        assert f"\n{name} " in text
    assert "--dycoke-kv on" in text and "--no-dycoke-kv" in text


def test_prunevid_layer_zero_is_refused():
    with pytest.raises(UsageError):
        from mlbcli.models.base import Prompt, VideoTokens

        video = VideoTokens(torch.randn(4, 16, 8), (4, 4), None, None)
        prompt = Prompt(torch.zeros(1, 70, dtype=torch.long), 2, 64, 0, torch.tensor([66, 67]), "")
        get_method("prunevid", MethodOptions(keep=0.5, layer=0)).plan(video, prompt)
