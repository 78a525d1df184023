"""Qwen3.5: a hybrid decoder (Gated DeltaNet linear-attention layers 3:1 with full attention) against its
stock transformers model, on a tiny random checkpoint in the real repository layout (offline).

What these tests pin: bit-exact parity with stock `generate()` (batch 1, and a batch of 4 prompts
padded the stock way), a batch equal to its rows alone under pruning (padding must not run through a
linear layer's state), attention read only at full-attention layers and recorded, every method with
its budget, `mlb flops` charging linear layers O(L), and `mlb answer` end to end.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_engine import no_eos, stock_generate

from mlbcli.engine import batch as engine
from mlbcli.engine.linear import probe_layer, resolve_reads
from mlbcli.engine.pipeline import Pipeline, Request

QUESTION = "What is happening in the video?"
QUESTIONS = [
    QUESTION,
    "Which colour is the large square in the middle of the first frames, and does it move?",
    "How many?",
    "Describe the scene.",
]
TIMESTAMPS = [0.25 * i for i in range(7)]
KINDS = ("linear", "linear", "linear", "full", "linear", "linear", "linear", "full")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    from mlbcli.testing.tiny import build_tiny

    return str(build_tiny("qwen3_5", tmp_path_factory.mktemp("Qwen3.5-tiny")))


@pytest.fixture(scope="module")
def adapter(model_dir):
    from mlbcli.models import load_adapter

    return load_adapter(model_dir, device="cpu")


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (7, 90, 120, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    shapes = [(6, 90, 120), (4, 64, 64), (8, 72, 96)]  # different lengths and token grids
    return [rng.integers(0, 255, (*shape, 3), dtype=np.uint8) for shape in shapes]


def _encode(adapter, frames):
    video = adapter.encode(adapter.preprocess(frames))
    video.timestamps_s = list(TIMESTAMPS[: len(frames)])
    return video


def _run(adapter, video, plan=None, max_new_tokens=8, question=QUESTION):
    prompt = adapter.build_prompt(question, video)
    batch, errors = engine.prefill_batch(adapter, [adapter.model_inputs(prompt, video)], [plan])
    assert not errors, errors
    with no_eos(adapter):
        gen = engine.greedy_decode(adapter, batch.rows[0], max_new_tokens=max_new_tokens, keep_logits=True)
    return prompt, batch.rows[0], gen


def _stock(adapter, frames, prompt, max_new_tokens=8):
    pixel = adapter.preprocess(frames)
    return stock_generate(
        adapter,
        max_new_tokens,
        input_ids=prompt.input_ids,
        pixel_values_videos=pixel["pixel_values_videos"],
        video_grid_thw=pixel["video_grid_thw"],
        mm_token_type_ids=adapter.mm_token_type_ids(prompt),
    )


# -- the family -------------------------------------------------------------------------------------------
def test_checkpoint_is_hybrid_in_the_real_layout(model_dir, adapter):
    import json
    from pathlib import Path

    files = {p.name for p in Path(model_dir).iterdir()}
    assert {"config.json", "preprocessor_config.json", "video_preprocessor_config.json"} <= files
    assert "chat_template.jinja" in files
    config = json.loads((Path(model_dir) / "config.json").read_text())
    assert config["model_type"] == "qwen3_5"
    assert config["text_config"]["layer_types"][3] == "full_attention"
    assert adapter.family == "qwen3_5"
    assert adapter.layer_kinds(adapter.text_config) == KINDS
    assert adapter.layer_kinds(config["text_config"]) == KINDS  # from the plain config too (`mlb flops`)


def test_output_depends_on_video(adapter, frames):
    """Guards the tiny model itself: a model that ignores the video would make the tests vacuous."""
    a = _run(adapter, _encode(adapter, frames), max_new_tokens=6)[2].token_ids
    b = _run(adapter, _encode(adapter, np.full_like(frames, 200)), max_new_tokens=6)[2].token_ids
    assert a != b


# -- parity with stock generate ---------------------------------------------------------------------------
def test_empty_schedule_reproduces_stock_generate(adapter, frames):
    video = _encode(adapter, frames)
    prompt, _, gen = _run(adapter, video, max_new_tokens=10)
    out = _stock(adapter, frames, prompt, max_new_tokens=10)
    assert gen.token_ids == out.sequences[0, prompt.length :].tolist()
    for ours, theirs in zip(gen.logits, out.logits, strict=True):
        assert torch.equal(ours, theirs[0].float())  # identical, not merely close


def test_batch_of_four_reproduces_stock_generate_of_each(adapter, clips):
    """Four prompts of different lengths batched by our engine give the tokens stock `generate()` gives
    each of them (the stock model run per prompt: its own left-padded batch moves the linear layers'
    chunk boundaries, so it is not itself equal to its batch-1 runs bit for bit)."""
    pipe = Pipeline(adapter)
    videos = [pipe.encode(clip) for clip in clips]
    owners = [0, 1, 2, 0]
    requests = [Request(videos[o], q, 6) for o, q in zip(owners, QUESTIONS, strict=True)]
    with no_eos(adapter):
        batched = pipe.run(requests)
    for request, result, owner in zip(requests, batched, owners, strict=True):
        assert result.error is None, result.error
        prompt = adapter.build_prompt(request.prompt, request.video.tokens)
        out = _stock(adapter, clips[owner], prompt, max_new_tokens=6)
        assert result.token_ids == out.sequences[0, prompt.length :].tolist()


def test_fastv_keep_one_equals_none(adapter, frames):
    pipe = Pipeline(adapter)
    encoded = pipe.encode(frames)
    none = pipe.answer(encoded, QUESTION, max_new_tokens=6)
    fastv = Pipeline(adapter, method="fastv", keep=1.0).answer(encoded, QUESTION, max_new_tokens=6)
    assert fastv.token_ids == none.token_ids


# -- batched == batch 1 -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("none", {}),
        ("fastv", {"keep": 0.5}),
        ("adatp", {"keep": 0.5}),
        ("visionzip", {"keep": 0.5}),
        ("dycoke", {"keep": 0.5}),
        ("uniform", {"keep": 0.5}),
    ],
)
def test_batch_equals_one_by_one(adapter, clips, method, options):
    """Rows of different lengths (padded batch; video 0 asked twice: a shared prefix for the
    question-agnostic methods) get exactly the tokens and statistics they get alone."""
    pipe = Pipeline(adapter, method=method, **options)
    videos = [pipe.encode(clip) for clip in clips]
    owners = [0, 1, 0, 2]
    requests = [Request(videos[o], q, n) for o, q, n in zip(owners, QUESTIONS, [4, 2, 5, 3], strict=True)]
    batched = pipe.run(requests)
    alone = [Pipeline(adapter, method=method, **options).run([r])[0] for r in requests]
    for a, b in zip(batched, alone, strict=True):
        assert a.error is None and b.error is None, (a.error, b.error)
        assert a.token_ids == b.token_ids
        row_a, row_b = a.stats.as_row(), b.stats.as_row()
        attention_a, attention_b = row_a.pop("attention_per_frame"), row_b.pop("attention_per_frame")
        assert row_a == row_b
        assert (attention_a is None) == (attention_b is None)
        if attention_a is not None:
            assert attention_a == pytest.approx(attention_b, rel=1e-4, abs=1e-6)


def test_padding_would_leak_into_the_linear_state(adapter, clips):
    """Guards the row-by-row linear layers: a right-padded row run in one batched call (padding
    after its real tokens) ends in another recurrent state than the row alone."""
    from mlbcli.engine.cache import make_cache
    from mlbcli.engine.forward import run_layer
    from mlbcli.engine.linear import run_linear_layer

    layer = adapter.layers[0]
    torch.manual_seed(0)
    hidden = torch.randn(2, 9, adapter.text_config.hidden_size)
    positions = torch.arange(9).view(1, 1, 9).expand(3, 2, 9)
    cos_sin = adapter.rotary(hidden, positions)
    lengths = torch.tensor([9, 5])
    states = []
    for runner in ("rows", "one call"):
        cache = make_cache(adapter.text_config)
        if runner == "rows":
            run_linear_layer(layer, 0, hidden, positions, cos_sin, cache, lengths, adapter.text_config)
        else:
            run_layer(layer, hidden, positions, cos_sin, cache, None)
        states.append(cache.layers[0].recurrent_states[0][1].clone())
    alone = make_cache(adapter.text_config)
    run_layer(layer, hidden[1:, :5], positions[..., 1:, :5], tuple(t[1:, :5] for t in cos_sin), alone, None)
    assert torch.equal(states[0], alone.layers[0].recurrent_states[0][0])
    assert not torch.allclose(states[1], alone.layers[0].recurrent_states[0][0])


# -- attention only where it exists -----------------------------------------------------------------------
def test_probe_layer_is_the_nearest_full_layer():
    assert [probe_layer(KINDS, k) for k in range(8)] == [3, 3, 3, 3, 3, 3, 3, 7]
    assert probe_layer(("full",) * 4, 1) == 1  # an all-attention decoder reads K - 1 itself
    steps, reads = resolve_reads({2: "p"}, frozenset({2}), KINDS)
    assert steps == {4: "p"} and reads == {4: 3}  # no attention before layer 2: runs after layer 3
    steps, reads = resolve_reads({0: "a", 6: "p"}, frozenset({6}), KINDS)
    assert steps == {0: "a", 6: "p"} and reads == {6: 3}
    # a step before every layer (FrameFusion): those with no attention before them stay, without scores
    pruner = object()
    every = dict.fromkeys(range(8), pruner)
    steps, reads = resolve_reads(every, frozenset(range(1, 8)), KINDS)
    assert steps == every and reads == {4: 3, 5: 3, 6: 3, 7: 3}
    with pytest.raises(ValueError, match="already prunes"):  # two different pruners would meet at layer 4
        resolve_reads({2: "a", 4: "b"}, frozenset({2, 4}), KINDS)


@pytest.mark.parametrize(("layer", "read", "pruned_at"), [(2, 3, 4), (5, 3, 5), (6, 3, 6), (4, 3, 4)])
def test_attention_methods_read_full_layers_and_say_which(adapter, frames, layer, read, pruned_at):
    """FastV at layer K reads the nearest full-attention layer at or before K - 1 (none before layer 3
    for K = 2: it then prunes right after layer 3), and the row records the layer it read."""
    pipe = Pipeline(adapter, method="fastv", keep=0.5, layer=layer)
    result = pipe.run([Request(pipe.encode(frames), QUESTION, 3)])[0]
    assert result.error is None, result.error
    assert list(result.state.scores) == [read] and KINDS[read] == "full"
    assert result.stats.as_row()["attention_layers"] == [read]
    per_layer = result.stats.tokens_per_layer
    n = result.stats.visual_tokens_in
    assert per_layer[:pruned_at] == [n] * pruned_at and per_layer[pruned_at] == round(n * 0.5)


def test_scores_from_the_full_layer_are_what_eager_attention_gives(adapter, frames):
    """The probe at a full layer of the hybrid reproduces the eager attention of that layer (gated
    q_proj, q/k norms, partial rotary), as the stock model computes it."""
    video = _encode(adapter, frames)
    prompt = adapter.build_prompt(QUESTION, video)
    plan = engine.PrunePlan(
        steps={4: lambda ctx: engine.LayerKeep(keep=torch.arange(ctx.visual_slots.numel()))},
        needs_scores=frozenset({4}),
        query="last",
    )
    batch, errors = engine.prefill_batch(adapter, [adapter.model_inputs(prompt, video)], [plan])
    assert not errors
    scores = batch.rows[0].scores[3]  # [n] by visual id
    model = adapter.model
    saved = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        out = model(
            input_ids=prompt.input_ids,
            **{k: v for k, v in adapter.preprocess(frames).items()},
            mm_token_type_ids=adapter.mm_token_type_ids(prompt),
            output_attentions=True,
        )
    finally:
        model.set_attn_implementation(saved)
    eager = out.attentions[3] if len(out.attentions) == 8 else out.attentions[0]  # full layers only?
    last = eager[0, :, -1].float().mean(dim=0)  # [L]
    assert torch.allclose(scores, last[prompt.visual_slots()], rtol=1e-4, atol=1e-6)


# -- every method, budgets --------------------------------------------------------------------------------
METHODS = [
    "none",
    "uniform",
    "random",
    "fastv",
    "adatp",
    "mlb",
    "visionzip",
    "dycoke",
    "slowfast",
    "evs",
    "vidcom2",
    "fastvid",
    "holitom",
    "prunevid",
]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_and_meets_its_budget_or_says_why(adapter, frames, method):
    import math

    from mlbcli.selection import method_option_rules

    keep = {"keep": 0.5} if "keep" in method_option_rules(method)[0] else {}
    pipe = Pipeline(adapter, method=method, **keep)
    encoded = pipe.encode(frames)
    result = pipe.answer(encoded, QUESTION, max_new_tokens=3)
    stats, video = result.stats, encoded.tokens
    assert 1 <= len(result.token_ids) <= 3
    assert stats.visual_tokens_kept == stats.tokens_per_layer[-1]
    assert sum(stats.kept_per_frame) + stats.appended_tokens == stats.visual_tokens_kept
    if method == "none":
        assert stats.flops_ratio == 1.0
    if keep and stats.keep_note is None:
        budget = math.floor(video.num_visual * 0.5 + 0.5)
        assert 2 * abs(stats.visual_tokens_kept - budget) <= max(1, video.num_frames), stats
    elif keep and stats.keep_note is not None:
        assert "budget" in stats.keep_note


def test_dycoke_hides_keys_at_full_layers_only(adapter, frames):
    """DyCoke's decode stage reads layer 3 (its L - 1 = 2 is linear, no full layer before) and hides
    visual keys from the full layers after it (layer 7): the decode reads fall below what the prefill's
    pruning alone leaves at the two full layers, the only layers whose keys are counted."""
    pipe = Pipeline(adapter, method="dycoke", keep=0.5)
    result = pipe.answer(pipe.encode(frames), QUESTION, max_new_tokens=4)
    stats = result.stats
    full = [i for i, kind in enumerate(KINDS) if kind == "full"]
    static = sum(stats.tokens_per_layer[i] for i in full) / (stats.visual_tokens_in * len(full))
    assert len(result.token_ids) > 1 and stats.decode_kv_ratio is not None
    assert stats.decode_kv_ratio < static


# -- flops ------------------------------------------------------------------------------------------------
def test_flops_follow_the_layer_kinds(model_dir):
    """Linear layers cost O(n): the hybrid's unpruned count is below the same decoder all full attention,
    and the saving of a pruning step grows less than quadratically on linear layers."""
    from mlbcli.api import flops
    from mlbcli.engine.flops import LLMDims, layer_flops, visual_flops
    from mlbcli.models import load_config

    text = load_config(model_dir).text_config
    hybrid = LLMDims.from_config(text, KINDS)
    dense = LLMDims.from_config(text)
    assert visual_flops([1000] * 8, hybrid) < visual_flops([1000] * 8, dense)
    # no n^2 term: twice the tokens, twice the cost, on a linear layer only
    assert layer_flops(2000, hybrid, "linear") == pytest.approx(2 * layer_flops(1000, hybrid, "linear"))
    assert layer_flops(2000, hybrid, "full") > 2 * layer_flops(1000, hybrid, "full")
    plan = flops(model=model_dir, method="uniform", keep=0.5, frames=8)
    assert plan.family == "qwen3_5"
    assert plan.flops_vanilla == pytest.approx(visual_flops([plan.visual_tokens] * 8, hybrid))
    assert plan.flops_vanilla < visual_flops([plan.visual_tokens] * 8, dense)
    assert 0 < plan.flops < plan.flops_vanilla


def test_row_flops_ratio_is_the_hybrids(adapter, frames):
    """The row's FLOPs ratio weighs each layer by its kind (a pruning step after layer 3 saves less on
    the linear layers than a full-attention count would say)."""
    from mlbcli.engine.flops import LLMDims, visual_flops

    pipe = Pipeline(adapter, method="fastv", keep=0.5)
    stats = pipe.answer(pipe.encode(frames), QUESTION, max_new_tokens=2).stats
    dims = LLMDims.from_config(adapter.text_config, KINDS)
    n = stats.visual_tokens_in
    expected = visual_flops(stats.tokens_per_layer, dims) / visual_flops([n] * 8, dims)
    assert stats.flops_ratio == pytest.approx(expected)
    dense = LLMDims.from_config(adapter.text_config)
    assert stats.flops_ratio != pytest.approx(
        visual_flops(stats.tokens_per_layer, dense) / visual_flops([n] * 8, dense)
    )


# -- the CLI and the doctor -------------------------------------------------------------------------------
def test_cli_answer_with_the_checkpoint(model_dir, clips_dir, tmp_path):
    """`mlb answer ... --model <Qwen3.5 checkpoint>` end to end (decode -> encode -> prune -> Parquet)."""
    from typer.testing import CliRunner

    from mlbcli.cli.app import app
    from mlbcli.io.writers import read_results

    out = tmp_path / "answers.parquet"
    args = ["answer", str(clips_dir / "a.mp4"), "--question", QUESTION, "--model", model_dir]
    args += [
        "--method",
        "fastv",
        "--keep",
        "0.5",
        "--frames",
        "6",
        "--max-new-tokens",
        "3",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (row,) = read_results(out).to_pylist()
    assert row["error"] is None and row["answer"] is not None
    assert len(row["kept_per_frame"]) == 3  # 6 frames = 3 temporal patches
    assert row["visual_tokens_kept"] < row["visual_tokens_in"]
    assert row["attention_layers"] == [3]  # FastV's K - 1 = 1 is linear: it read full layer 3
    assert row["tokens_per_layer"][3] == row["visual_tokens_in"] > row["tokens_per_layer"][4]


def test_doctor_lists_the_family():
    from mlbcli.models import supported_model_types
    from mlbcli.testing.tiny import TINY_FAMILIES

    assert "qwen3_5" in supported_model_types() and "qwen3_5" in TINY_FAMILIES


def test_flops_schedule_is_the_one_that_runs(model_dir, adapter, frames):
    """`mlb flops` moves FastV's K = 2 to layer 4 as the run does (no full-attention layer before layer 2
    to read), so the nominal schedule and FLOPs are those of the row."""
    from mlbcli.api import flops

    plan = flops(model=model_dir, method="fastv", keep=0.5, frames=len(frames))
    n = plan.visual_tokens
    assert plan.tokens_per_layer[:4] == [n] * 4 and plan.tokens_per_layer[4] < n
    pipe = Pipeline(adapter, method="fastv", keep=0.5)
    stats = pipe.answer(pipe.encode(frames), QUESTION, max_new_tokens=1).stats
    assert [c > stats.tokens_per_layer[-1] for c in stats.tokens_per_layer] == [
        c > plan.tokens_per_layer[-1] for c in plan.tokens_per_layer
    ]
