"""A tiny random Qwen3.5 checkpoint: the hybrid LLM (Gated DeltaNet + gated full attention), no DeepStack."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlbcli.testing.tiny_qwen import QWEN3_CHAT_TEMPLATE, _qwen3_preprocessing, _special_ids
from mlbcli.testing.tokenizer import build_tokenizer, save_checkpoint, text_config


def _qwen3_5_text(tok: Any, hidden_size: int, num_layers: int) -> dict[str, Any]:
    """The tiny hybrid LLM, laid out like Qwen/Qwen3.5-*'s `text_config`: every 4th layer full attention
    (4 heads of 32, 2 KV heads; rotary on a quarter of each head, interleaved mrope_section [2, 1, 1]
    over its 4 frequencies, so every axis has one), the others Gated DeltaNet (2 key heads, 4 value
    heads of 8, conv kernel 4)."""
    return text_config(
        tok,
        hidden_size,
        num_layers,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=32768,
        linear_conv_kernel_dim=4,
        linear_key_head_dim=8,
        linear_value_head_dim=8,
        linear_num_key_heads=2,
        linear_num_value_heads=4,
        layer_types=["full_attention" if (i + 1) % 4 == 0 else "linear_attention" for i in range(num_layers)],
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 10000000.0,
            "partial_rotary_factor": 0.25,
            "mrope_section": [2, 1, 1],
            "mrope_interleaved": True,
        },
        tie_word_embeddings=True,
    )


def build_tiny_qwen3_5(
    out_dir: str | Path,
    *,
    seed: int = 1,  # seed 0 happens to answer a grey clip as a random one (tests/test_qwen3_5.py guards it)
    num_layers: int = 8,
    hidden_size: int = 64,
    min_pixels: int = 4096,
    max_pixels: int = 8 * 64 * 96,
) -> Path:
    """Write a tiny random Qwen3.5 checkpoint to `out_dir`, with the file set of the Qwen/Qwen3.5-* repos
    (config with `text_config.layer_types`, tokenizer with chat_template.jinja, the Qwen3-VL image and
    video preprocessor configs their `Qwen3VLProcessor` reads).

    Vision: patch 16, 2x2 merge, temporal patch 2, depth 2. Text: 8 layers (linear x3, full, linear x3,
    full) of hidden 64. Frames are bounded as for the tiny Qwen3-VL: 7 frames of 90x120 become 64x96 ->
    2x3 = 6 tokens per temporal patch.
    """
    import torch
    from transformers import Qwen3_5Config, Qwen3_5ForConditionalGeneration

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer("qwen")
    tok.chat_template = QWEN3_CHAT_TEMPLATE  # saved as chat_template.jinja, as the Qwen3.5 repos ship it
    vision = dict(
        depth=2,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        out_hidden_size=hidden_size,
        patch_size=16,
        spatial_merge_size=2,
        temporal_patch_size=2,
        num_position_embeddings=16,
        initializer_range=0.5,
    )
    config_class: Any = Qwen3_5Config  # its dataclass fields type `**ids` too strictly for mypy
    cfg: Any = config_class(
        text_config=_qwen3_5_text(tok, hidden_size, num_layers),
        vision_config=vision,
        tie_word_embeddings=True,
        **_special_ids(tok),
    )
    cfg.initializer_range = 0.5
    torch.manual_seed(seed)
    model = Qwen3_5ForConditionalGeneration(cfg)
    files = _qwen3_preprocessing(min_pixels, max_pixels)
    files.pop("chat_template.json")
    return save_checkpoint(out, model, tok, files)
