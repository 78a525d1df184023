"""Tiny random checkpoints built from config, for `mlb doctor` and the test suite.

No weights can be downloaded in CI, so we build a real `LlavaOnevisionForConditionalGeneration` with a
few thousand parameters, save it with `save_pretrained` next to a byte-level BPE tokenizer trained on
the fly, and load it back by path exactly as a user loads a real checkpoint. Random weights are drawn
with a large `initializer_range` (0.5): at the default 0.02 a tiny model prints the same tokens
whatever the video, and tests could not see the effect of pruning.
"""

from __future__ import annotations

import json
from pathlib import Path

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


def _build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 20, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={"image_token": "<image>", "video_token": "<video>"},
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


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
            vocab_size=len(tok),
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            initializer_range=0.5,
            tie_word_embeddings=True,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            bos_token_id=None,
            max_position_embeddings=32768,
        ),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        video_token_index=tok.convert_tokens_to_ids("<video>"),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        initializer_range=0.5,
        image_grid_pinpoints=[[image_size, image_size], [2 * image_size, 2 * image_size]],
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(cfg)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    # The checkpoint's own preprocessing parameters, in the layout of the real hub repos.
    preprocessor = {
        "image_processor_type": "LlavaOnevisionImageProcessor",
        "size": {"height": image_size, "width": image_size},
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "rescale_factor": 1 / 255,
        "resample": 3,
        "do_convert_rgb": True,
    }
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    video_pre = dict(preprocessor, video_processor_type="LlavaOnevisionVideoProcessor")
    (out / "video_preprocessor_config.json").write_text(json.dumps(video_pre, indent=2))
    return out
