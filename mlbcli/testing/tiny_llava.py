"""Tiny random LLaVA checkpoints: LLaVA-OneVision, LLaVA-Video (a OneVision checkpoint by name) and
LLaVA-NeXT (CLIP + Llama, Vicuna template)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlbcli.models.base import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from mlbcli.testing.tokenizer import build_tokenizer, save_checkpoint, text_config


def build_tiny_llava_onevision(
    out_dir: str | Path,
    *,
    seed: int = 0,
    image_size: int = 112,
    num_layers: int = 4,
    hidden_size: int = 64,
) -> Path:
    """Write a tiny random LLaVA-OneVision checkpoint to `out_dir` and return its path.

    With the defaults: SigLIP 112 px / patch 14 -> 8x8 patches, pooled 2x2 -> 16 tokens per frame;
    a 4-layer Qwen2 LLM with hidden 64, 4 heads, 2 KV heads (GQA, like the real models).
    """
    import torch
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        Qwen2Config,
        SiglipVisionConfig,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer()
    cfg = LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=14,
            vision_use_head=False,
        ),
        text_config=Qwen2Config(
            **text_config(
                tok,
                hidden_size,
                num_layers,
                num_key_value_heads=2,
                tie_word_embeddings=True,
                bos_token_id=None,
                max_position_embeddings=32768,
            )
        ),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        video_token_index=tok.convert_tokens_to_ids("<video>"),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=[[image_size, image_size], [2 * image_size, 2 * image_size]],
        tie_word_embeddings=True,
    )
    cfg.initializer_range = 0.5  # large random weights: visible attention and pruning effects
    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(cfg)
    preprocessor = {
        "image_processor_type": "LlavaOnevisionImageProcessor",
        "size": {"height": image_size, "width": image_size},
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "rescale_factor": 1 / 255,
        "resample": 3,
        "do_convert_rgb": True,
    }
    video_pre = dict(preprocessor, video_processor_type="LlavaOnevisionVideoProcessor")
    return save_checkpoint(
        out,
        model,
        tok,
        {"preprocessor_config.json": preprocessor, "video_preprocessor_config.json": video_pre},
    )


def build_tiny_llava_next(
    out_dir: str | Path,
    *,
    seed: int = 0,
    image_size: int = 56,
    num_layers: int = 4,
    hidden_size: int = 64,
    max_position_embeddings: int = 4096,
) -> Path:
    """Write a tiny random LLaVA-NeXT (CLIP + Llama, Vicuna template) checkpoint to `out_dir`.

    CLIP 56 px / patch 14 -> 4x4 = 16 tokens per frame (the real 336 px model: 24x24 = 576), feature
    layer -2, "default" strategy (CLS dropped), like llava-v1.6-vicuna-7b-hf.
    """
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextConfig, LlavaNextForConditionalGeneration

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer("vicuna")
    cfg = LlavaNextConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=14,
            projection_dim=32,
        ),
        text_config=LlamaConfig(
            **text_config(
                tok,
                hidden_size,
                num_layers,
                num_key_value_heads=4,
                max_position_embeddings=max_position_embeddings,
                bos_token_id=tok.bos_token_id,
            )
        ),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        image_grid_pinpoints=[
            [image_size, image_size],
            [image_size, 2 * image_size],
            [2 * image_size, image_size],
        ],
        image_seq_length=(image_size // 14) ** 2,
    )
    cfg.initializer_range = 0.5
    torch.manual_seed(seed)
    model = LlavaNextForConditionalGeneration(cfg)
    model.generation_config.bos_token_id = tok.bos_token_id
    preprocessor = {
        "image_processor_type": "LlavaNextImageProcessor",
        "size": {"shortest_edge": image_size},
        "crop_size": {"height": image_size, "width": image_size},
        "do_center_crop": True,
        "image_mean": OPENAI_CLIP_MEAN,
        "image_std": OPENAI_CLIP_STD,
        "rescale_factor": 1 / 255,
        "resample": 3,
        "image_grid_pinpoints": cfg.image_grid_pinpoints,
        "do_convert_rgb": True,
    }
    return save_checkpoint(out, model, tok, {"preprocessor_config.json": preprocessor})


def build_tiny_llava_video(out_dir: str | Path, **options: Any) -> Path:
    """Write a tiny random LLaVA-Video checkpoint: a llava_onevision one, as llava-hf/LLaVA-Video-7B-Qwen2-hf
    is, told apart from OneVision by its name (`mlbcli.models.llava_video`), so `out_dir`'s name must
    contain "LLaVA-Video" (any case, `-`/`_`). `options` are those of `build_tiny_llava_onevision`."""
    import re

    if not re.search(r"llava[-_ ]?video", Path(out_dir).name, re.IGNORECASE):
        raise ValueError(f"name the folder like the hub repo (…LLaVA-Video…), not {Path(out_dir).name!r}")
    return build_tiny_llava_onevision(out_dir, **options)
