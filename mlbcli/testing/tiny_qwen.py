"""Tiny random Qwen checkpoints: Qwen2-VL, Qwen2.5-VL, Qwen3-VL and Qwen3-VL-MoE."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlbcli.models.base import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from mlbcli.testing.tokenizer import build_tokenizer, save_checkpoint, text_config


def _special_ids(tok: Any) -> dict[str, int]:
    """The config's ids of Qwen's vision special tokens in the tiny tokenizer."""
    return {
        name: tok.convert_tokens_to_ids(token)
        for name, token in [
            ("image_token_id", "<|image_pad|>"),
            ("video_token_id", "<|video_pad|>"),
            ("vision_start_token_id", "<|vision_start|>"),
            ("vision_end_token_id", "<|vision_end|>"),
        ]
    }


def _qwen2_classes(version: str, hidden_size: int) -> tuple[type[Any], type[Any], dict[str, Any]]:
    """(config class, model class, vision config) of Qwen2-VL (`version="2"`) or Qwen2.5-VL ("2.5")."""
    vision: dict[str, Any]
    if version == "2":
        from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

        vision = dict(
            depth=2,
            embed_dim=32,
            hidden_size=hidden_size,
            num_heads=2,
            mlp_ratio=2,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            initializer_range=0.5,
        )
        return Qwen2VLConfig, Qwen2VLForConditionalGeneration, vision
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    vision = dict(
        depth=2,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        out_hidden_size=hidden_size,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=56,
        fullatt_block_indexes=[1],
        tokens_per_second=2,
        initializer_range=0.5,
    )
    return Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, vision


def _qwen2_preprocessing(min_pixels: int, max_pixels: int) -> dict[str, dict[str, Any]]:
    """The image and video preprocessor configs of a Qwen2(.5)-VL repo, {file name: JSON}."""
    common = {
        "do_resize": True,
        "do_rescale": True,
        "do_normalize": True,
        "rescale_factor": 1 / 255,
        "image_mean": OPENAI_CLIP_MEAN,
        "image_std": OPENAI_CLIP_STD,
        "patch_size": 14,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "resample": 3,
    }
    image = dict(common, image_processor_type="Qwen2VLImageProcessor", min_pixels=3136, max_pixels=12845056)
    video = dict(
        common,
        video_processor_type="Qwen2VLVideoProcessor",
        size={"shortest_edge": min_pixels, "longest_edge": max_pixels},
    )
    return {"preprocessor_config.json": image, "video_preprocessor_config.json": video}


def build_tiny_qwen2_vl(
    out_dir: str | Path,
    *,
    version: str = "2",
    seed: int = 0,
    num_layers: int = 4,
    hidden_size: int = 64,
    min_pixels: int = 56 * 56,
    max_pixels: int = 112 * 112,
) -> Path:
    """Write a tiny random Qwen2-VL (`version="2"`) or Qwen2.5-VL (`"2.5"`) checkpoint to `out_dir`.

    Vision: patch 14, 2x2 merge, temporal patch 2, depth 2. Text: a 4-layer Qwen2 with hidden 64,
    4 heads (head_dim 16, mrope_section [2, 3, 3]), 2 KV heads. The video preprocessor config bounds a
    frame to [min_pixels, max_pixels]: a 90x120 frame becomes 84x112 -> 3x4 = 12 tokens per
    temporal patch with the defaults.
    """
    import torch

    if version not in ("2", "2.5"):
        raise ValueError(f"version must be '2' or '2.5', not {version!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer("qwen")
    text = text_config(
        tok,
        hidden_size,
        num_layers,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    config_class, model_class, vision = _qwen2_classes(version, hidden_size)
    cfg: Any = config_class(
        text_config=text, vision_config=vision, tie_word_embeddings=True, **_special_ids(tok)
    )
    cfg.initializer_range = 0.5
    torch.manual_seed(seed)
    model = model_class(cfg)
    return save_checkpoint(out, model, tok, _qwen2_preprocessing(min_pixels, max_pixels))


# The Qwen3-VL template (chat_template.json of the Qwen/Qwen3-VL-*-Instruct repos), reduced to what mlb
# renders: no default system prompt (unlike Qwen2-VL), a video item is <|vision_start|><|video_pad|>
# <|vision_end|> (the processor replaces all three with the per-patch timestamped block).
QWEN3_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}<|im_start|>system\n{{ messages[0]['content'] }}<|im_end|>\n"
    "{% endif %}{% for m in messages %}{% if m['role'] != 'system' %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _qwen3_text(tok: Any, hidden_size: int, num_layers: int, moe: bool) -> dict[str, Any]:
    """The tiny Qwen3 LLM: 4 heads of 16 (interleaved mrope_section [4, 2, 2]), 2 KV heads; MoE: 4
    experts of width 32, top 2."""
    text: dict[str, Any] = text_config(
        tok,
        hidden_size,
        num_layers,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=32768,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 5000000.0,
            "mrope_section": [4, 2, 2],
            "mrope_interleaved": True,
        },
    )
    if moe:
        text.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, decoder_sparse_step=1)
    return text


def _qwen3_classes(moe: bool) -> tuple[type[Any], type[Any]]:
    if moe:
        from transformers import Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration

        return Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    return Qwen3VLConfig, Qwen3VLForConditionalGeneration


def _qwen3_preprocessing(min_pixels: int, max_pixels: int) -> dict[str, dict[str, Any]]:
    """The files of a Qwen3-VL repo besides weights and tokenizer, {file name: JSON}: image and video
    preprocessor configs (the video's bounds on T' x H' x W') and chat_template.json."""
    common = {
        "do_resize": True,
        "do_rescale": True,
        "do_normalize": True,
        "do_convert_rgb": True,
        "rescale_factor": 1 / 255,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "patch_size": 16,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "resample": 3,
        "processor_class": "Qwen3VLProcessor",
    }
    image = dict(
        common,
        image_processor_type="Qwen2VLImageProcessor",
        size={"shortest_edge": 65536, "longest_edge": 16777216},
    )
    video = dict(
        common,
        video_processor_type="Qwen3VLVideoProcessor",
        size={"shortest_edge": min_pixels, "longest_edge": max_pixels},
        fps=2,
        min_frames=4,
        max_frames=768,
        do_sample_frames=True,
    )
    return {
        "preprocessor_config.json": image,
        "video_preprocessor_config.json": video,
        "chat_template.json": {"chat_template": QWEN3_CHAT_TEMPLATE},
    }


def build_tiny_qwen3_vl(
    out_dir: str | Path,
    *,
    moe: bool = False,
    seed: int = 0,
    num_layers: int = 4,
    hidden_size: int = 64,
    min_pixels: int = 4096,
    max_pixels: int = 8 * 64 * 96,
) -> Path:
    """Write a tiny random Qwen3-VL (`moe=True`: Qwen3-VL-MoE) checkpoint to `out_dir`, with the file set of
    the Qwen/Qwen3-VL-*-Instruct repos (the chat template in chat_template.json).

    Vision: patch 16, 2x2 merge, temporal patch 2, depth 3, DeepStack from tower blocks 0 and 1 into LLM
    layers 0 and 1. Text: a 4-layer Qwen3 with hidden 64 (`_qwen3_text`). The video preprocessor config
    bounds the whole video's T' x H' x W' to [min_pixels, max_pixels] as the real one does (4096 ..
    25165824 there): 7 frames of 90x120 become 64x96 -> 2x3 = 6 tokens per temporal patch by default.
    """
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer("qwen")
    tok.chat_template = None  # the real repos ship it as chat_template.json (written below)
    vision = dict(
        depth=3,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        out_hidden_size=hidden_size,
        patch_size=16,
        spatial_merge_size=2,
        temporal_patch_size=2,
        num_position_embeddings=16,
        deepstack_visual_indexes=[0, 1],
        initializer_range=0.5,
    )
    config_class, model_class = _qwen3_classes(moe)
    text = _qwen3_text(tok, hidden_size, num_layers, moe)
    cfg: Any = config_class(
        text_config=text, vision_config=vision, tie_word_embeddings=True, **_special_ids(tok)
    )
    cfg.initializer_range = 0.5
    torch.manual_seed(seed)
    model = model_class(cfg)
    if moe:  # the experts' 3-D weights are left as allocated by `_init_weights`: draw them like the rest
        with torch.no_grad():
            for name, param in model.named_parameters():
                if ".experts." in name:
                    param.normal_(0.0, 0.5)
    return save_checkpoint(out, model, tok, _qwen3_preprocessing(min_pixels, max_pixels))
