"""The tiny checkpoints' tokenizer (a byte-level BPE trained on the fly) and chat templates, and the
config and saving steps every tiny builder shares."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


def build_tokenizer(style: str = "onevision"):
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


def text_config(tok: Any, hidden_size: int, num_layers: int, **family: Any) -> dict[str, Any]:
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


def save_checkpoint(out: Path, model: Any, tok: Any, preprocessing: dict[str, dict[str, Any]]) -> Path:
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
