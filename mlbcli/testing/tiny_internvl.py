"""Tiny random InternVL3.5 checkpoint in the Hugging Face format (InternViT + pixel shuffle + Qwen3, the
OpenGVLab/InternVL3_5-*-HF layout: `video_preprocessor_config.json`, the tokenizer naming `<img>`,
`</img>`, `<IMG_CONTEXT>` and `<video>`)."""

from __future__ import annotations

from pathlib import Path

from mlbcli.testing.tiny_tokens import build_family_tokenizer
from mlbcli.testing.tokenizer import save_checkpoint, text_config

# The InternVL3.5-HF template: ChatML; an image renders as <IMG_CONTEXT>, a video as <video>, each on its line.
INTERNVL_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\n' }}{% elif content['type'] == 'video' %}{{ '<video>\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def build_tiny_internvl(
    out_dir: str | Path,
    *,
    seed: int = 0,
    image_size: int = 112,
    num_layers: int = 4,
    hidden_size: int = 64,
) -> Path:
    """Write a tiny random InternVL3.5 checkpoint to `out_dir` and return its path.

    InternViT 112 px / patch 14 -> 8x8 patches, pixel shuffle 0.5 -> 4x4 = 16 tokens per frame (the real
    448 px models: 32x32 -> 256); a 4-layer Qwen3 LLM (q/k norm, GQA) with hidden 64.
    """
    import torch
    from transformers import InternVLConfig, InternVLForConditionalGeneration, Qwen3Config
    from transformers.models.internvl.configuration_internvl import InternVLVisionConfig

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_family_tokenizer(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"],
        INTERNVL_CHAT_TEMPLATE,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={
            "start_image_token": "<img>",
            "end_image_token": "</img>",
            "context_image_token": "<IMG_CONTEXT>",
            "video_token": "<video>",
        },
    )
    cfg = InternVLConfig(
        vision_config=InternVLVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=[image_size, image_size],
            patch_size=[14, 14],
            initializer_range=0.5,
        ),
        text_config=Qwen3Config(
            **text_config(
                tok,
                hidden_size,
                num_layers,
                num_key_value_heads=2,
                head_dim=hidden_size // 4,
                tie_word_embeddings=True,
                bos_token_id=None,
                max_position_embeddings=40960,
            )
        ),
        image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"),
        image_seq_length=(image_size // 28) ** 2,
        downsample_ratio=0.5,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    cfg.initializer_range = 0.5  # large random weights: visible attention and pruning effects
    torch.manual_seed(seed)
    model = InternVLForConditionalGeneration(cfg)
    return save_checkpoint(out, model, tok, _preprocessing(image_size))


def _preprocessing(image_size: int) -> dict[str, dict]:
    """The repo's image, video and processor configs (frames squashed to `image_size`, ImageNet mean/std)."""
    image = {
        "image_processor_type": "GotOcr2ImageProcessorFast",
        "crop_to_patches": False,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": IMAGENET_MEAN,
        "image_std": IMAGENET_STD,
        "max_patches": 12,
        "min_patches": 1,
        "resample": 3,
        "rescale_factor": 1 / 255,
        "size": {"height": image_size, "width": image_size},
    }
    video = {k: v for k, v in image.items() if k not in ("crop_to_patches", "max_patches", "min_patches")}
    video["video_processor_type"] = "InternVLVideoProcessor"
    del video["image_processor_type"]
    processor = {"processor_class": "InternVLProcessor", "image_seq_length": (image_size // 28) ** 2}
    return {
        "preprocessor_config.json": image,
        "video_preprocessor_config.json": video,
        "processor_config.json": processor,
    }
