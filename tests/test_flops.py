"""FLOPs accounting must reproduce the published tables (research/algorithms.md §2.1) to print precision."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mlbcli.engine.flops import TERA, LLMDims, flops_ratio, layer_flops, tokens_per_layer, visual_flops

QWEN2_7B = LLMDims(num_layers=28, hidden=3584, intermediate=18944, num_heads=28, num_kv_heads=4, head_dim=128)


def tflops(schedule: dict[int, float], n_in: float) -> float:
    counts = [float(c) for c in tokens_per_layer(int(n_in), {k: int(v) for k, v in schedule.items()}, 28)]
    return visual_flops(counts, QWEN2_7B) / TERA


@pytest.mark.parametrize(
    ("n_in", "schedule", "printed", "decimals"),
    [
        (6272, {}, 48.82, 2),  # LLaVA-OV vanilla
        (6272, {0: 1568}, 10.73, 2),  # 25% input pruning
        (6272, {0: 1248}, 8.46, 2),
        (6272, {0: 928}, 6.23, 2),
        (6272, {0: 608}, 4.04, 2),
        (6272, {2: 1568}, 13.45, 2),  # FastV K=2 keep 25%
        (6272, {2: 627}, 7.36, 2),  # FastV K=2 keep 10%
        (11648, {}, 103.2, 1),  # LLaVA-Video vanilla
        (13447, {}, 124.0, 1),  # Qwen2-VL
        (13447, {2: 3362}, 31.3, 1),  # Qwen2-VL FastV K=2 keep 25%
    ],
)
def test_reproduces_published_table(n_in, schedule, printed, decimals):
    assert round(tflops(schedule, n_in), decimals) == pytest.approx(printed)


def test_fractional_average_token_count():
    # Qwen2.5-VL row: an average of 3240.7 tokens per video -> 23.25 T.
    assert round(visual_flops([3240.7] * 28, QWEN2_7B) / TERA, 2) == pytest.approx(23.25)


def test_layer_flops_terms():
    dims = LLMDims(num_layers=1, hidden=2, intermediate=3, num_heads=1, num_kv_heads=1, head_dim=2)
    # 2nD² + 2nD(h_kv·d) + 2n²D + 3nDD' with n=5: 40 + 40 + 100 + 90
    assert layer_flops(5, dims) == 270
    assert layer_flops(0, dims) == 0


def test_ratios():
    vanilla = [6272] * 28
    assert flops_ratio(vanilla, QWEN2_7B, 6272) == pytest.approx(1.0)
    ratio = flops_ratio(tokens_per_layer(6272, {0: 1568}, 28), QWEN2_7B, 6272)
    assert ratio == pytest.approx(10.73 / 48.82, abs=1e-3)
    fastv = flops_ratio(tokens_per_layer(6272, {2: 1568}, 28), QWEN2_7B, 6272)
    assert ratio < fastv < 1.0


def test_tokens_per_layer_schedules():
    assert tokens_per_layer(10, {}, 4) == [10, 10, 10, 10]
    assert tokens_per_layer(10, {0: 5}, 4) == [5, 5, 5, 5]
    assert tokens_per_layer(10, {2: 3}, 4) == [10, 10, 3, 3]
    # Multi-stage: prune before the LLM, then again inside it.
    assert tokens_per_layer(10, {0: 6, 3: 2}, 5) == [6, 6, 6, 2, 2]


ERROR_CASES = [(10, {4: 3}, 4), (10, {-1: 3}, 4), (10, {1: -1}, 4), (-1, {}, 4), (10, {}, 0)]


def test_tokens_per_layer_allows_appended_tokens():
    # LLaVA-MLB's summary tail rides through the layers before the cut: more than n_in there.
    assert tokens_per_layer(10, {0: 12, 2: 3}, 4) == [12, 12, 3, 3]


@pytest.mark.parametrize(("n_in", "schedule", "num_layers"), ERROR_CASES)
def test_tokens_per_layer_errors(n_in, schedule, num_layers):
    with pytest.raises(ValueError):
        tokens_per_layer(n_in, schedule, num_layers)


def test_errors():
    with pytest.raises(ValueError, match="one token count per decoder layer"):
        visual_flops([1.0] * 27, QWEN2_7B)
    with pytest.raises(ValueError):
        layer_flops(-1, QWEN2_7B)
    with pytest.raises(ValueError):
        flops_ratio([0] * 28, QWEN2_7B, 0)
    with pytest.raises(ValueError):
        LLMDims(num_layers=0, hidden=1, intermediate=1, num_heads=1, num_kv_heads=1, head_dim=1)


QWEN2_CONFIG = {
    "num_hidden_layers": 28,
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
}


def test_from_config_dict_and_object():
    assert LLMDims.from_config(QWEN2_CONFIG) == QWEN2_7B
    assert LLMDims.from_config(SimpleNamespace(**QWEN2_CONFIG)) == QWEN2_7B
    # Explicit head_dim wins over hidden // heads (Qwen3/Gemma-style configs decouple them).
    assert LLMDims.from_config({**QWEN2_CONFIG, "head_dim": 64}).head_dim == 64


def test_from_config_defaults_and_nesting():
    mha = {k: v for k, v in QWEN2_CONFIG.items() if k != "num_key_value_heads"}
    dims = LLMDims.from_config({**mha, "head_dim": None})
    assert dims.num_kv_heads == 28 and dims.head_dim == 128
    # A full VLM config holding the text config is unwrapped.
    assert LLMDims.from_config(SimpleNamespace(text_config=SimpleNamespace(**QWEN2_CONFIG))) == QWEN2_7B
    with pytest.raises(ValueError, match="hidden_size"):
        LLMDims.from_config({k: v for k, v in QWEN2_CONFIG.items() if k != "hidden_size"})


# -- mlb flops for people: units that fit, the input resolution it assumes, --resolution ----------------------
def test_flops_text_picks_the_unit_that_fits():
    from mlbcli.engine.flops import flops_text

    assert flops_text(48.8245e12) == "48.82 TFLOPs"
    assert flops_text(3.1e9) == "3.10 GFLOPs"
    assert flops_text(2.5e15) == "2.50 PFLOPs"
    assert flops_text(123.4e6) == "123.40 MFLOPs"
    assert flops_text(3.2e5) == "3.20e+05 FLOPs"  # below a mega: scientific, never 0.00
    assert flops_text(0) == "0 FLOPs"


def test_parse_resolution():
    from mlbcli.engine.flops import parse_resolution
    from mlbcli.errors import UsageError

    assert parse_resolution("1280x720") == (1280, 720)
    assert parse_resolution(" 640X480 ") == (640, 480)
    for bad in ("1280", "x720", "1280x0", "12.5x7", "wide"):
        with pytest.raises(UsageError, match="WIDTHxHEIGHT"):
            parse_resolution(bad)


@pytest.fixture(scope="module")
def tiny_qwen2(tmp_path_factory):
    from mlbcli.testing.tiny import build_tiny

    return build_tiny("qwen2_vl", tmp_path_factory.mktemp("flops") / "tiny-qwen2_vl")


def test_flops_of_a_small_model_prints_a_unit_that_fits(tiny_model_dir):
    """Before: "vanilla 0.00 TFLOPs" for a small model."""
    from typer.testing import CliRunner

    from mlbcli.cli.app import app

    result = CliRunner().invoke(app, ["flops", "--model", str(tiny_model_dir), "--frames", "8"])
    assert result.exit_code == 0, result.output
    assert "0.00 TFLOPs" not in result.output
    vanilla = next(line for line in result.output.splitlines() if line.startswith("vanilla"))
    assert vanilla.split()[-1] in ("FLOPs", "MFLOPs", "GFLOPs") and float(vanilla.split()[1]) > 0
    assert "resolution     fixed: every frame is resized to" in result.output


def test_flops_says_which_resolution_a_dynamic_family_assumes(tiny_qwen2):
    from mlbcli import api

    plan = api.flops(model=str(tiny_qwen2), frames=32)
    # 768 tokens per temporal patch of 2 frames at the budget of 768 x 28 x 28 pixels per frame
    assert plan.visual_tokens == 16 * 768
    assert "dynamic; assumed frames at the pixel budget, 602112 pixels each" in plan.resolution
    assert "896x672" in plan.resolution and "--resolution" in plan.resolution


def test_flops_at_a_resolution_counts_what_the_adapter_makes_of_such_frames(tiny_qwen2):
    """--resolution 1280x720 plans what a run on 1280x720 videos gets: the tokens the adapter's own
    preprocessing makes of such frames (at the processor's default pixel bounds)."""
    import numpy as np

    from mlbcli import api
    from mlbcli.models import load_adapter

    plan = api.flops(model=str(tiny_qwen2), frames=4, resolution="1280x720")
    assert "1280x720 frames, resized to 1008x560" in plan.resolution
    adapter = load_adapter(str(tiny_qwen2), device="cpu")
    adapter.preprocess_config = {}  # the processor's default bounds, as `mlb flops` assumes
    grid = adapter.preprocess(np.zeros((4, 720, 1280, 3), dtype=np.uint8))["video_grid_thw"][0].tolist()
    merge = 2
    assert plan.visual_tokens == grid[0] * (grid[1] // merge) * (grid[2] // merge) == 2 * 20 * 36
    assert plan.visual_tokens < api.flops(model=str(tiny_qwen2), frames=4).visual_tokens
    assert plan.tokens_per_layer[0] == plan.visual_tokens


def test_resolution_does_not_apply_to_a_fixed_resolution_family(tiny_model_dir):
    from mlbcli import api
    from mlbcli.errors import UsageError

    with pytest.raises(
        UsageError, match=r"--resolution does not apply to llava_onevision models \(every frame"
    ):
        api.flops(model=str(tiny_model_dir), resolution="1280x720")


def test_flops_resolution_option(tiny_qwen2, tiny_model_dir):
    from typer.testing import CliRunner

    from mlbcli.cli.app import app

    runner = CliRunner()
    ok = runner.invoke(
        app, ["flops", "--model", str(tiny_qwen2), "--frames", "4", "--resolution", "1280x720"]
    )
    assert ok.exit_code == 0, ok.output
    assert "1440 visual tokens" in ok.output and "resized to 1008x560" in ok.output
    fixed = runner.invoke(app, ["flops", "--model", str(tiny_model_dir), "--resolution", "1280x720"])
    assert fixed.exit_code == 2
    assert "mlb: error: --resolution does not apply to llava_onevision models" in fixed.output


def test_sliding_window_and_shared_kv_layer_terms():
    """A sliding layer's attention term is 2·n·min(n, w)·q; a layer reading another's KV computes no K/V;
    per-layer head dims give each layer its own query width (q = heads x d)."""
    dims = LLMDims(
        num_layers=2,
        hidden=2,
        intermediate=3,
        num_heads=1,
        num_kv_heads=1,
        head_dim=2,
        layer_kinds=("sliding", "full"),
        window=2,
        layer_head_dims=(2, 4),
        kv_projections=(2, 0),
    )
    # n=5, layer 0 (q=2): 2nDq + 2nD(h_kv·d) + 2n·min(n,w)·q + 3nDD' = 40 + 40 + 40 + 90
    assert layer_flops(5, dims, layer=0) == 210
    # layer 1 (q=4, no K/V): 2nDq + 0 + 2n²q + 3nDD' = 80 + 200 + 90
    assert layer_flops(5, dims, layer=1) == 370
    assert visual_flops([5, 5], dims) == 580


def test_heterogeneous_config_is_read_per_layer():
    """Gemma 4 style: `per_layer_config` overrides head_dim on global layers (a dict from config.json)."""
    config = {
        "num_hidden_layers": 3,
        "hidden_size": 8,
        "intermediate_size": 16,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 4,
        "sliding_window": 5,
        "per_layer_config": {"2": {"head_dim": 8}},
    }
    dims = LLMDims.from_config(config, ("sliding", "sliding", "full"), (0, 0, 2))
    assert dims.layer_head_dims == (4, 4, 8) and dims.window == 5
    assert dims.kv_projections == (2, 0, 2)  # layer 1 reads layer 0's KV
    uniform = LLMDims.from_config({**config, "per_layer_config": {}})
    assert uniform.layer_head_dims == () and uniform.window == 0  # no kinds: every layer full, paper's D


def test_steps_move_before_a_shared_kv_span():
    from mlbcli.engine.cache import before_shared_kv
    from mlbcli.selection.plan import LayerKeep

    sources = [0, 1, 2, 3, 4, 3, 4]  # layers 5 and 6 read the KV of 3 and 4

    def prune(ctx):
        return LayerKeep(keep=ctx, info={"a": 1})

    steps, scores = before_shared_kv({0: prune, 5: prune}, frozenset({5}), sources)
    assert set(steps) == {0, 3} and scores == {3}
    assert steps[3]("kept").info == {"a": 1, "moved_from_layer": 5}
    steps, _ = before_shared_kv({2: prune, 3: prune, 4: prune, 5: prune, 6: prune}, frozenset(), sources)
    assert set(steps) == {2, 3}  # one pruner before every layer: it runs at 3 anyway
    with pytest.raises(ValueError, match="already prunes"):
        before_shared_kv({3: prune, 5: lambda ctx: prune(ctx)}, frozenset(), sources)
    assert before_shared_kv({2: 7}, frozenset({2}), list(range(7))) == ({2: 7}, frozenset({2}))
