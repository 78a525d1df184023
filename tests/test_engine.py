"""The engine against stock `generate()`, and the keep-schedule bookkeeping."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_engine import engine_generate, prefill, stock_generate
from hypothesis import given, settings
from hypothesis import strategies as st

from mlbcli.engine import batch as engine
from mlbcli.engine.pipeline import Pipeline
from mlbcli.selection import MethodOptions, get_method
from mlbcli.selection.ops.baselines import frame_budgets, grid_cells

QUESTION = "What is happening in the video?"


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (8, 90, 120, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def encoded(tiny_adapter, frames):
    return Pipeline(tiny_adapter).encode(frames)


def _stock_generate(adapter, frames, question, max_new_tokens):
    video = adapter.encode(adapter.preprocess(frames))
    prompt = adapter.build_prompt(question, video)
    out = stock_generate(
        adapter,
        max_new_tokens,
        input_ids=prompt.input_ids,
        pixel_values_videos=adapter.preprocess(frames)["pixel_values_videos"],
    )
    return out.sequences[0, prompt.length :].tolist(), [logit[0] for logit in out.logits]


def _engine_generate(adapter, video, question, max_new_tokens, plan=None):
    _, state, gen = engine_generate(adapter, video, question, max_new_tokens, plan)
    return state, gen


def test_empty_schedule_reproduces_stock_generate(tiny_adapter, frames, encoded):
    ref_tokens, ref_logits = _stock_generate(tiny_adapter, frames, QUESTION, 12)
    _, gen = _engine_generate(tiny_adapter, encoded.tokens, QUESTION, 12)
    assert gen.token_ids == ref_tokens
    for ours, theirs in zip(gen.logits, ref_logits, strict=True):
        assert torch.equal(ours, theirs.float())  # identical, not merely close


def test_output_depends_on_video(tiny_adapter, encoded):
    """Guards the test model itself: a model that ignores the video would make every test vacuous."""
    other = Pipeline(tiny_adapter).encode(np.full((8, 90, 120, 3), 200, dtype=np.uint8))
    a = _engine_generate(tiny_adapter, encoded.tokens, QUESTION, 6)[1].token_ids
    b = _engine_generate(tiny_adapter, other.tokens, QUESTION, 6)[1].token_ids
    assert a != b


@pytest.mark.parametrize("method", ["uniform", "random"])
def test_keep_one_equals_none(tiny_adapter, encoded, method):
    none = Pipeline(tiny_adapter, method="none").answer(encoded, QUESTION, max_new_tokens=8)
    same = Pipeline(tiny_adapter, method=method, keep=1.0).answer(encoded, QUESTION, max_new_tokens=8)
    assert same.token_ids == none.token_ids
    assert same.stats.keep_realized == 1.0 and same.stats.flops_ratio == 1.0


@pytest.mark.parametrize("method", ["uniform", "random"])
@pytest.mark.parametrize("keep", [0.5, 0.25, 0.1])
def test_prune_before_llm_exact_budget_and_stats(tiny_adapter, encoded, method, keep):
    result = Pipeline(tiny_adapter, method=method, keep=keep).answer(encoded, QUESTION, max_new_tokens=4)
    stats = result.stats
    n = encoded.tokens.num_visual
    assert stats.visual_tokens_in == n
    assert stats.visual_tokens_kept == round(n * keep + 1e-9) or stats.visual_tokens_kept == int(
        n * keep + 0.5
    )
    assert stats.tokens_per_layer == [stats.visual_tokens_kept] * len(tiny_adapter.layers)
    assert sum(stats.kept_per_frame) == stats.visual_tokens_kept
    assert stats.keep_realized == pytest.approx(stats.visual_tokens_kept / n)
    assert 0 < stats.flops_ratio < keep + 0.05


def test_uniform_spreads_budget_over_frames(tiny_adapter, encoded):
    stats = (
        Pipeline(tiny_adapter, method="uniform", keep=0.25).answer(encoded, QUESTION, max_new_tokens=2).stats
    )
    assert max(stats.kept_per_frame) - min(stats.kept_per_frame) <= 1


def test_positions_and_text_preserved_after_layer_pruning(tiny_adapter, encoded):
    """A FastV-style step at layer 2: text tokens all survive, order and original positions are kept."""
    video = encoded.tokens
    prompt = tiny_adapter.build_prompt(QUESTION, video)
    seen = {}

    def keep_even(ctx: engine.LayerContext) -> engine.LayerKeep:
        seen["scores"] = ctx.scores
        return engine.LayerKeep(keep=torch.arange(0, ctx.visual_slots.numel(), 2))

    plan = engine.PrunePlan(steps={2: keep_even}, needs_scores=frozenset({2}))
    visual = torch.arange(prompt.visual_start, prompt.visual_start + prompt.num_visual)
    positions = tiny_adapter.position_ids(prompt, video)
    state = engine.prefill(
        tiny_adapter, tiny_adapter.embed(prompt, video), positions, visual, prompt.question_index, plan
    )
    n = video.num_visual
    assert seen["scores"].shape == (n,) and torch.all(seen["scores"] >= 0)
    assert state.visual_per_layer == [n, n, (n + 1) // 2, (n + 1) // 2]
    expected = torch.cat(
        [torch.arange(prompt.visual_start), visual[::2], torch.arange(prompt.visual_start + n, prompt.length)]
    )
    assert torch.equal(state.position_ids[0], expected)
    assert torch.equal(state.kept_ids, torch.arange(0, n, 2))
    # The KV cache holds the full sequence for layers 0-1 and the pruned one after.
    lengths = [layer.keys.shape[2] for layer in state.cache.layers]
    assert lengths == [prompt.length] * 2 + [expected.numel()] * 2


def test_appended_tokens_shift_following_positions(tiny_adapter, encoded):
    video = encoded.tokens
    prompt = tiny_adapter.build_prompt(QUESTION, video)
    extra = torch.zeros(3, video.features.shape[-1])

    def add_tail(ctx: engine.LayerContext) -> engine.LayerKeep:
        return engine.LayerKeep(keep=torch.arange(ctx.visual_slots.numel()), append=extra)

    state = prefill(tiny_adapter, prompt, video, engine.PrunePlan(steps={0: add_tail}))
    assert state.appended == 3
    assert torch.equal(state.position_ids[0], torch.arange(prompt.length + 3))
    assert state.visual_per_layer[0] == video.num_visual + 3


def test_plan_validation():
    with pytest.raises(ValueError):
        engine.PrunePlan(steps={0: lambda ctx: None}, needs_scores=frozenset({0}))
    with pytest.raises(ValueError):
        engine.PrunePlan(query="first")


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 12), w=st.integers(1, 12), data=st.data())
def test_grid_cells_partition(h, w, data):
    cells = data.draw(st.integers(1, h * w))
    parts = grid_cells(h, w, cells)
    assert len(parts) == cells
    flat = sorted(i for part in parts for i in part)
    assert flat == list(range(h * w))  # every token in exactly one cell


@settings(max_examples=60, deadline=None)
@given(total=st.integers(0, 500), frames=st.integers(1, 40))
def test_frame_budgets_even_and_exact(total, frames):
    budgets = frame_budgets(total, frames)
    assert sum(budgets) == total and max(budgets) - min(budgets) <= 1


@settings(max_examples=40, deadline=None)
@given(keep=st.floats(0.01, 1.0), seed=st.integers(0, 10_000), frames=st.integers(1, 6))
def test_random_selection_exact_sorted_unique(keep, seed, frames):
    from mlbcli.models.base import VideoTokens
    from mlbcli.selection.base import token_budget

    video = VideoTokens(features=torch.zeros(frames, 16, 4), grid=(4, 4), extra=None, frame_features=None)
    plan = get_method("random", MethodOptions(keep=keep, seed=seed)).plan(video, None)
    n = frames * 16
    if not plan.steps:
        assert keep >= 1.0
        return
    ctx = engine.LayerContext(0, torch.zeros(1, n + 5, 4), torch.arange(n) + 2, torch.arange(n), None)
    keep_idx = plan.steps[0](ctx).keep
    assert keep_idx.numel() == token_budget(n, keep)
    assert torch.all(keep_idx[1:] > keep_idx[:-1])


def test_the_loop_imports_model_adapters_for_types_only():
    """The batched loop speaks to a family only through the `Adapter` protocol: its modules import
    `mlbcli.models` under TYPE_CHECKING only (no import circle, and a plugin family needs no engine edit),
    apart from the data the adapters hand it (`models.inputs.ModelInputs`)."""
    import ast
    from pathlib import Path

    import mlbcli.engine

    folder = Path(mlbcli.engine.__file__).parent
    for name in ("batch", "rows", "cache", "forward", "prefill", "decode", "probe", "flops"):
        tree = ast.parse((folder / f"{name}.py").read_text())
        type_only = {
            id(node)
            for block in ast.walk(tree)
            if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
            for node in ast.walk(block)
        }
        runtime = [
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and id(node) not in type_only
        ]
        adapters = [m for m in runtime if m.startswith("mlbcli.models") and m != "mlbcli.models.inputs"]
        assert not adapters, name
