"""Tiny random GLM-4.1V / GLM-4.6V checkpoints (patch tower with 2-D RoPE + GLM-4 LLM with 3-D RoPE, the
zai-org/GLM-4.1V-9B-Thinking / GLM-4.6V-Flash layout: `video_preprocessor_config.json` with the video's
pixel bounds, the `[gMASK]<sop>` template)."""

from __future__ import annotations

from pathlib import Path

from mlbcli.models.base import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from mlbcli.testing.tiny_tokens import build_family_tokenizer
from mlbcli.testing.tokenizer import save_checkpoint, text_config

GLM4V_CHAT_TEMPLATE = (
    "[gMASK]<sop>{%- for msg in messages %}{%- if msg.role == 'system' %}<|system|>\n{{ msg.content }}"
    "{%- elif msg.role == 'user' %}<|user|>{{ '\n' }}{%- if msg.content is string %}{{ msg.content }}{%- else %}"
    "{%- for item in msg.content %}{%- if item.type == 'video' %}<|begin_of_video|><|video|><|end_of_video|>"
    "{%- elif item.type == 'image' %}<|begin_of_image|><|image|><|end_of_image|>"
    "{%- elif item.type == 'text' %}{{ item.text }}{%- endif %}{%- endfor %}{%- endif %}"
    "{%- elif msg.role == 'assistant' %}<|assistant|>\n{{ msg.content }}{%- endif %}{%- endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIALS = [
    "<|endoftext|>",
    "[gMASK]",
    "<sop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|begin_of_image|>",
    "<|end_of_image|>",
    "<|image|>",
    "<|video|>",
    "<|begin_of_video|>",
    "<|end_of_video|>",
]


def build_tiny_glm4v(
    out_dir: str | Path,
    *,
    seed: int = 0,
    version: str = "4.1",
    num_layers: int = 4,
    hidden_size: int = 64,
    max_video_pixels: int = 28 * 28 * 2 * 48,
) -> Path:
    """Write a tiny random GLM-4.1V (`version="4.1"`) or GLM-4.6V (`"4.6"`) checkpoint to `out_dir`.

    Patch 14, merge 2, temporal patch 2; the video's pixels capped at `max_video_pixels` (8 frames of
    84 x 112 -> 4 patches of 3 x 4 = 12 tokens); a 4-layer GLM-4 LLM, half the head rotated, 3 RoPE sections.
    """
    import torch
    from transformers import Glm4vConfig, Glm4vForConditionalGeneration
    from transformers.models.glm4v.configuration_glm4v import Glm4vTextConfig, Glm4vVisionConfig

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_family_tokenizer(
        SPECIALS,
        GLM4V_CHAT_TEMPLATE,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={"image_token": "<|image|>", "video_token": "<|video|>"},
    )
    ids = {name: tok.convert_tokens_to_ids(token) for name, token in _TOKEN_IDS.items()}
    vision = Glm4vVisionConfig(
        depth=2,
        hidden_size=32,
        num_heads=2,
        intermediate_size=64,
        image_size=56,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        out_hidden_size=hidden_size,
        initializer_range=0.5,
    )
    text = Glm4vTextConfig(
        **text_config(
            tok,
            hidden_size,
            num_layers,
            num_key_value_heads=2,
            max_position_embeddings=65536,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": [2, 1, 1],
                "partial_rotary_factor": 0.5,
            },
        )
    )
    if version == "4.6":
        from transformers import Glm46VConfig, Glm46VForConditionalGeneration

        cfg: object = Glm46VConfig(vision_config=vision, text_config=text, **ids)
        model_cls: type = Glm46VForConditionalGeneration
    else:
        cfg, model_cls = (
            Glm4vConfig(vision_config=vision, text_config=text, **ids),
            Glm4vForConditionalGeneration,
        )
    cfg.initializer_range = 0.5  # type: ignore[attr-defined]  # large random weights: visible pruning effects
    torch.manual_seed(seed)
    model = model_cls(cfg)
    return save_checkpoint(out, model, tok, _preprocessing(version, max_video_pixels))


_TOKEN_IDS = {
    "image_token_id": "<|image|>",
    "video_token_id": "<|video|>",
    "image_start_token_id": "<|begin_of_image|>",
    "image_end_token_id": "<|end_of_image|>",
    "video_start_token_id": "<|begin_of_video|>",
    "video_end_token_id": "<|end_of_video|>",
}


def _preprocessing(version: str, max_video_pixels: int) -> dict[str, dict]:
    """The repo's image and video processor configs (the video's pixel bounds, CLIP mean/std)."""
    name = "Glm46V" if version == "4.6" else "Glm4v"
    video = {
        "video_processor_type": f"{name}VideoProcessor",
        "processor_class": f"{name}Processor",
        "size": {"shortest_edge": 112 * 112, "longest_edge": max_video_pixels},
        "do_sample_frames": True,
        "fps": 2,
        "patch_size": 14,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": OPENAI_CLIP_MEAN,
        "image_std": OPENAI_CLIP_STD,
        "rescale_factor": 1 / 255,
        "resample": 3,
        "do_convert_rgb": True,
    }
    image = {k: v for k, v in video.items() if k not in ("video_processor_type", "do_sample_frames", "fps")}
    image["image_processor_type"] = f"{name}ImageProcessor"
    image["size"] = {"shortest_edge": 112 * 112, "longest_edge": 28 * 28 * 64}
    return {"preprocessor_config.json": image, "video_preprocessor_config.json": video}
