"""Tiny random LLaVA-NeXT-Video checkpoint (CLIP + Llama, the llava-hf/LLaVA-NeXT-Video-7B-hf layout)."""

from __future__ import annotations

from pathlib import Path

from mlbcli.models.base import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from mlbcli.testing.tiny_tokens import build_family_tokenizer
from mlbcli.testing.tokenizer import save_checkpoint, text_config

# The llava-hf/LLaVA-NeXT-Video-*-hf template: "USER: <video>\nQUESTION ASSISTANT:"; images first, then
# videos, then text; no BOS (the Llama tokenizer adds it).
LLAVA_NEXT_VIDEO_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] + ' ' }}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' ' }}"
    "{% endfor %}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def build_tiny_llava_next_video(
    out_dir: str | Path,
    *,
    seed: int = 0,
    image_size: int = 112,
    num_layers: int = 4,
    hidden_size: int = 64,
    max_position_embeddings: int = 4096,
) -> Path:
    """Write a tiny random LLaVA-NeXT-Video checkpoint to `out_dir` and return its path.

    CLIP 112 px / patch 14 -> 8x8 patches, average-pooled 2x2 -> 4x4 = 16 tokens per frame (the real
    336 px model: 24x24 -> 144); feature layer -2 without CLS; a 4-layer Llama with 4 heads.
    """
    import torch
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaNextVideoConfig,
        LlavaNextVideoForConditionalGeneration,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer()
    cfg = LlavaNextVideoConfig(
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
        video_token_index=tok.convert_tokens_to_ids("<video>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        spatial_pool_mode="average",
        spatial_pool_stride=2,
        image_grid_pinpoints=[[image_size, 2 * image_size], [2 * image_size, image_size]],
        image_seq_length=(image_size // 14) ** 2,
        video_seq_length=(image_size // 28) ** 2 * 2,
    )
    cfg.initializer_range = 0.5  # large random weights: visible attention and pruning effects
    torch.manual_seed(seed)
    model = LlavaNextVideoForConditionalGeneration(cfg)
    model.generation_config.bos_token_id = tok.bos_token_id
    return save_checkpoint(out, model, tok, _preprocessing(image_size, cfg.image_grid_pinpoints))


def _tokenizer():
    """Llama-style BPE with BOS added, `<video>` and `<image>`, the llava-hf template."""
    return build_family_tokenizer(
        ["<unk>", "<s>", "</s>", "<video>", "<image>"],
        LLAVA_NEXT_VIDEO_CHAT_TEMPLATE,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<unk>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>", "video_token": "<video>"},
        add_bos=True,
    )


def _preprocessing(image_size: int, pinpoints: list | None) -> dict[str, dict]:
    """The repo's image, video and processor configs: short edge then center crop to `image_size`."""
    image = {
        "image_processor_type": "LlavaNextImageProcessor",
        "size": {"shortest_edge": image_size},
        "crop_size": {"height": image_size, "width": image_size},
        "do_center_crop": True,
        "image_mean": OPENAI_CLIP_MEAN,
        "image_std": OPENAI_CLIP_STD,
        "rescale_factor": 1 / 255,
        "resample": 3,
        "image_grid_pinpoints": pinpoints,
        "do_convert_rgb": True,
    }
    video = {k: v for k, v in image.items() if k not in ("image_processor_type", "image_grid_pinpoints")}
    video["video_processor_type"] = "LlavaNextVideoVideoProcessor"
    processor = {
        "processor_class": "LlavaNextVideoProcessor",
        "patch_size": 14,
        "vision_feature_select_strategy": "default",
        "num_additional_image_tokens": 1,
    }
    return {
        "preprocessor_config.json": image,
        "video_preprocessor_config.json": video,
        "processor_config.json": processor,
    }
