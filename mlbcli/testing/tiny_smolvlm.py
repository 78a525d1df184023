"""Tiny random SmolVLM2 checkpoint (SigLIP-like tower + pixel shuffle + Llama, the
HuggingFaceTB/SmolVLM2-*-Video-Instruct layout: `preprocessor_config.json` with `video_sampling`)."""

from __future__ import annotations

from pathlib import Path

from mlbcli.testing.tiny_tokens import build_family_tokenizer
from mlbcli.testing.tokenizer import save_checkpoint, text_config

# The checkpoints' own template (images only; the processor swaps in its video template for videos).
SMOLVLM_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def build_tiny_smolvlm(
    out_dir: str | Path,
    *,
    seed: int = 0,
    image_size: int = 64,
    patch_size: int = 8,
    scale_factor: int = 2,
    num_layers: int = 4,
    hidden_size: int = 64,
) -> Path:
    """Write a tiny random SmolVLM2 checkpoint to `out_dir` and return its path.

    Tower 64 px / patch 8 -> 8x8 patches, pixel shuffle 2 -> 4x4 = 16 tokens per frame (SmolVLM2-2.2B:
    384 / 14 -> 27x27, shuffle 3 -> 81); frames resized to a 128 px long edge, then 64 x 64.
    """
    import torch
    from transformers import LlamaConfig, SmolVLMConfig, SmolVLMForConditionalGeneration
    from transformers.models.smolvlm.configuration_smolvlm import SmolVLMVisionConfig

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<end_of_utterance>"]
    specials += ["<fake_token_around_image>", "<global-img>", "<image>", "<video>"]
    tok = build_family_tokenizer(
        specials,
        SMOLVLM_CHAT_TEMPLATE,
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
        extra_special_tokens={
            "fake_image_token": "<fake_token_around_image>",
            "image_token": "<image>",
            "global_image_token": "<global-img>",
            "end_of_utterance_token": "<end_of_utterance>",
            "video_token": "<video>",
        },
    )
    cfg = SmolVLMConfig(
        vision_config=SmolVLMVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=patch_size,
            initializer_range=0.5,
        ),
        text_config=LlamaConfig(
            **text_config(
                tok,
                hidden_size,
                num_layers,
                num_key_value_heads=2,
                max_position_embeddings=8192,
                bos_token_id=tok.bos_token_id,
            )
        ),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        scale_factor=scale_factor,
    )
    cfg.initializer_range = 0.5  # large random weights: visible attention and pruning effects
    torch.manual_seed(seed)
    model = SmolVLMForConditionalGeneration(cfg)
    return save_checkpoint(out, model, tok, _preprocessing(image_size, patch_size, scale_factor))


def _preprocessing(image_size: int, patch_size: int, scale_factor: int) -> dict[str, dict]:
    """The repo's preprocessor config (image and video rules, `video_sampling`) and processor config."""
    preprocessor = {
        "image_processor_type": "SmolVLMImageProcessor",
        "processor_class": "SmolVLMProcessor",
        "do_convert_rgb": True,
        "do_image_splitting": True,
        "do_normalize": True,
        "do_pad": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "max_image_size": {"longest_edge": image_size},
        "resample": 1,
        "rescale_factor": 1 / 255,
        "size": {"longest_edge": 2 * image_size},
        "video_sampling": {"fps": 1, "max_frames": 64, "video_size": {"longest_edge": 2 * image_size}},
    }
    processor = {
        "processor_class": "SmolVLMProcessor",
        "image_seq_len": (image_size // patch_size // scale_factor) ** 2,
    }
    return {"preprocessor_config.json": preprocessor, "processor_config.json": processor}
