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
