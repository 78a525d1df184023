"""Tiny random checkpoints built from config, for `mlb doctor` and the test suite.

No weights can be downloaded in CI, so we build a real `LlavaOnevisionForConditionalGeneration` (and
Qwen2-VL / Qwen2.5-VL / LLaVA-NeXT models, one builder each) with a few thousand parameters, save it with `save_pretrained` next to a byte-level BPE tokenizer trained on
the fly, and load it back by path exactly as a user loads a real checkpoint. Random weights are drawn
with a large `initializer_range` (0.5): at the default 0.02 a tiny model prints the same tokens
whatever the video, and tests could not see the effect of pruning.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlbcli.models.base import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

# Words the tiny tokenizer is trained on: enough for prompts, options and answers to tokenize into
# short sequences (long sequences would make the tiny model slow for no benefit).
_CORPUS = [
    "What is happening in the video? A yellow disc moves right across a blue background.",
    "Describe the video in one sentence. Summarize what happens.",
    "Answer with the option's letter from the given choices directly.",
    "A. running B. jumping C. sitting D. swimming E. none of these",
    "What is the person doing? Which colour is the square? How many objects are there?",
    "You are a helpful assistant. The answer is red green blue black white.",
]

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'video' %}<video>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


# Qwen2-VL style: a video item renders as <|vision_start|><|video_pad|><|vision_end|>, with the
# official default system prompt.
QWEN_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# The llava-hf/llava-v1.6-vicuna-*-hf template: "USER: <image>\nQUESTION ASSISTANT:"; images only (a
# "video" item is not rendered) and no BOS (the tokenizer adds it).
VICUNA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] + ' ' }}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' ' }}"
    "{% endfor %}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def _build_tokenizer(style: str = "onevision"):
    """Byte-level BPE trained on `_CORPUS`; `style` picks special tokens and chat template.

    onevision: <|im_start|>/<|im_end|>, <image>, <video>; qwen: + <|vision_start|> <|vision_end|>
    <|image_pad|> <|video_pad|>; vicuna: <s> </s> <unk> and <image>.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]
    if style == "qwen":
        specials += ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    elif style == "vicuna":
        specials = ["<unk>", "<s>", "</s>", "<image>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 20, trainer)
    if style == "vicuna":
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok,
            bos_token="<s>",
            eos_token="</s>",
            unk_token="<unk>",
            pad_token="<unk>",
            extra_special_tokens={"image_token": "<image>"},
        )
        fast.chat_template = VICUNA_CHAT_TEMPLATE
        return fast
    extra = {"image_token": "<image>", "video_token": "<video>"}
    if style == "qwen":
        extra = {
            "image_token": "<|image_pad|>",
            "video_token": "<|video_pad|>",
            "vision_bos_token": "<|vision_start|>",
            "vision_eos_token": "<|vision_end|>",
        }
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=extra,
    )
    fast.chat_template = QWEN_CHAT_TEMPLATE if style == "qwen" else CHAT_TEMPLATE
    return fast


def _text_config(tok: Any, hidden_size: int, num_layers: int, **family: Any) -> dict[str, Any]:
    """Keyword arguments of the tiny LLM's config: 4 heads, MLP 2x wide, the tokenizer's vocabulary and
    EOS/PAD, a large `initializer_range`; `family` adds or overrides (KV heads, BOS, positions...)."""
    return {
        "vocab_size": len(tok),
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": 4,
        "initializer_range": 0.5,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
        **family,
    }


def _save_checkpoint(out: Path, model: Any, tok: Any, preprocessing: dict[str, dict[str, Any]]) -> Path:
    """Save `model` (generation ending at the tokenizer's EOS, padding with its PAD) and `tok` to `out`,
    plus the checkpoint's own preprocessing parameters, {file name: JSON}, in the layout of the real
    hub repos. Returns `out`."""
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    for name, config in preprocessing.items():
        (out / name).write_text(json.dumps(config, indent=2))
    return out


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
    tok = _build_tokenizer()
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
            **_text_config(
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
    return _save_checkpoint(
        out,
        model,
        tok,
        {"preprocessor_config.json": preprocessor, "video_preprocessor_config.json": video_pre},
    )


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
    tok = _build_tokenizer("qwen")
    ids = {
        name: tok.convert_tokens_to_ids(token)
        for name, token in [
            ("image_token_id", "<|image_pad|>"),
            ("video_token_id", "<|video_pad|>"),
            ("vision_start_token_id", "<|vision_start|>"),
            ("vision_end_token_id", "<|vision_end|>"),
        ]
    }
    text = _text_config(
        tok,
        hidden_size,
        num_layers,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    config_class: type[Any]  # Qwen2VLConfig or Qwen2_5_VLConfig
    model_class: type[Any]
    vision: dict[str, Any]
    if version == "2":
        from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

        config_class, model_class = Qwen2VLConfig, Qwen2VLForConditionalGeneration
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
    else:
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

        config_class, model_class = Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
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
    cfg: Any = config_class(text_config=text, vision_config=vision, tie_word_embeddings=True, **ids)
    cfg.initializer_range = 0.5
    torch.manual_seed(seed)
    model = model_class(cfg)
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
    return _save_checkpoint(
        out, model, tok, {"preprocessor_config.json": image, "video_preprocessor_config.json": video}
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
    tok = _build_tokenizer("vicuna")
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
            **_text_config(
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
    return _save_checkpoint(out, model, tok, {"preprocessor_config.json": preprocessor})


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
    layers 0 and 1. Text: a 4-layer Qwen3 with hidden 64, 4 heads of 16 (interleaved mrope_section
    [4, 2, 2]), 2 KV heads; MoE: 4 experts of width 32, top 2. The video preprocessor config bounds the
    whole video's T' x H' x W' to [min_pixels, max_pixels] as the real one does (4096 .. 25165824 there):
    7 frames of 90x120 become 64x96 -> 2x3 = 6 tokens per temporal patch with the defaults.
    """
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = _build_tokenizer("qwen")
    tok.chat_template = None  # the real repos ship it as chat_template.json (written below)
    ids = {
        name: tok.convert_tokens_to_ids(token)
        for name, token in [
            ("image_token_id", "<|image_pad|>"),
            ("video_token_id", "<|video_pad|>"),
            ("vision_start_token_id", "<|vision_start|>"),
            ("vision_end_token_id", "<|vision_end|>"),
        ]
    }
    text: dict[str, Any] = _text_config(
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
    config_class: type[Any]
    model_class: type[Any]
    if moe:
        from transformers import Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration

        config_class, model_class = Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration
        text.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, decoder_sparse_step=1)
    else:
        from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

        config_class, model_class = Qwen3VLConfig, Qwen3VLForConditionalGeneration
    cfg: Any = config_class(text_config=text, vision_config=vision, tie_word_embeddings=True, **ids)
    cfg.initializer_range = 0.5
    torch.manual_seed(seed)
    model = model_class(cfg)
    if moe:  # the experts' 3-D weights are left as allocated by `_init_weights`: draw them like the rest
        with torch.no_grad():
            for name, param in model.named_parameters():
                if ".experts." in name:
                    param.normal_(0.0, 0.5)
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
    return _save_checkpoint(
        out,
        model,
        tok,
        {
            "preprocessor_config.json": image,
            "video_preprocessor_config.json": video,
            "chat_template.json": {"chat_template": QWEN3_CHAT_TEMPLATE},
        },
    )


def build_tiny_llava_video(out_dir: str | Path, **options: Any) -> Path:
    """Write a tiny random LLaVA-Video checkpoint: a llava_onevision one, as llava-hf/LLaVA-Video-7B-Qwen2-hf
    is, told apart from OneVision by its name (`mlbcli.models.llava_video`), so `out_dir`'s name must
    contain "LLaVA-Video" (any case, `-`/`_`). `options` are those of `build_tiny_llava_onevision`."""
    import re

    if not re.search(r"llava[-_ ]?video", Path(out_dir).name, re.IGNORECASE):
        raise ValueError(f"name the folder like the hub repo (…LLaVA-Video…), not {Path(out_dir).name!r}")
    return build_tiny_llava_onevision(out_dir, **options)
