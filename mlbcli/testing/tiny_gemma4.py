"""A tiny random Gemma 4 checkpoint (`Gemma4ForConditionalGeneration`) in the layout of the google/gemma-4-*-it
repos: config.json with text and vision configs, the chat template in chat_template.jinja (it emits BOS),
a tokenizer with Gemma 4's multimodal special tokens, and the processor's video preprocessor config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlbcli.testing.tokenizer import _CORPUS, save_checkpoint

#: Gemma 4's chat template, reduced to what mlb renders: BOS, turns, a video item as `<|video|>`.
GEMMA4_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'video' %}<|video|>\n{% elif c['type'] == 'image' %}<|image|>\n"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<turn|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|turn>model\n{% endif %}"
)

_SPECIALS = {
    "pad_token": "<pad>",
    "eos_token": "<eos>",
    "bos_token": "<bos>",
    "unk_token": "<unk>",
}
_MULTIMODAL = {
    "image_token": "<|image|>",
    "boi_token": "<|image>",
    "eoi_token": "<image|>",
    "video_token": "<|video|>",
    "audio_token": "<|audio|>",
    "boa_token": "<|audio>",
    "eoa_token": "<audio|>",
}


def build_gemma4_tokenizer() -> Any:
    """Byte-level BPE trained on the tiny corpus, with Gemma 4's special tokens (`<turn|>` ends a turn)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [*_SPECIALS.values(), "<|turn>", "<turn|>", *_MULTIMODAL.values()]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([*_CORPUS, "00:01 00:02 12:34"] * 20, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **_SPECIALS, extra_special_tokens=dict(_MULTIMODAL))
    fast.chat_template = None  # the real repos ship chat_template.jinja (written below)
    return fast


#: The tiny vision tower: patch 4, 3x3 pooling, 2 layers.
_VISION: dict[str, Any] = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=2,
    head_dim=16,
    patch_size=4,
    pooling_kernel_size=3,
    position_embedding_size=256,
    initializer_range=0.5,
)


def _token_ids(tok: Any) -> dict[str, Any]:
    """The config's multimodal token ids, from the tokenizer's special tokens."""
    names = (
        "image_token_id",
        "video_token_id",
        "audio_token_id",
        "boi_token_id",
        "eoi_token_id",
        "boa_token_id",
    )
    return {name: tok.convert_tokens_to_ids(_MULTIMODAL[name.replace("_id", "")]) for name in names}


def build_tiny_gemma4(
    out_dir: str | Path,
    *,
    seed: int = 0,
    num_layers: int = 7,
    hidden_size: int = 64,
    sliding_window: int = 16,
    num_kv_shared_layers: int = 2,
) -> Path:
    """Write a tiny random Gemma 4 checkpoint to `out_dir`.

    Text: `num_layers` layers, sliding:global 2:1 (layers 1, 4 and the last global), a 16-token window, the last
    `num_kv_shared_layers` layers reusing the KV of earlier ones, per-layer embeddings of 8, soft-capped
    logits. Vision: patch 4, 3x3 pooling, 2 layers; the video processor config's 70 soft tokens per
    frame make a 90x120 frame 84x108 px -> 7x9 = 63 tokens.
    """
    import torch
    from transformers import Gemma4Config, Gemma4ForConditionalGeneration

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_gemma4_tokenizer()
    # s f s s f | s f: global layers 1 and 4; layers 5 and 6 (shared) read the KV of layers 3 and 4.
    types = ["full_attention" if i % 3 == 1 else "sliding_attention" for i in range(num_layers)]
    types[-1] = "full_attention"
    text = dict(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        global_head_dim=32,
        layer_types=types,
        sliding_window=sliding_window,
        num_kv_shared_layers=num_kv_shared_layers,
        hidden_size_per_layer_input=8,
        vocab_size_per_layer_input=len(tok),
        final_logit_softcapping=30.0,
        max_position_embeddings=32768,
        initializer_range=0.5,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.convert_tokens_to_ids("<turn|>"),
        bos_token_id=tok.bos_token_id,
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1e6},
        },
    )
    cfg: Any = Gemma4Config(text_config=text, vision_config=_VISION, audio_config=None, **_token_ids(tok))
    cfg.initializer_range = 0.5
    torch.manual_seed(seed)
    model = Gemma4ForConditionalGeneration(cfg)
    # Gemma scales the input embeddings by sqrt(hidden) and ties the LM head to them: at 0.5 a token's
    # own embedding dominates the residual stream (norm ~32 against ~8 added per layer) and the tied head
    # maps it back to itself, so the model repeats one token whatever the video. A 10x smaller table
    # lets the layers, and so the video and the question, decide the output.
    embeddings: Any = model.get_input_embeddings()
    with torch.no_grad():
        embeddings.weight.mul_(0.1)
    tok.chat_template = GEMMA4_CHAT_TEMPLATE
    path = save_checkpoint(out, model, tok, {"video_preprocessor_config.json": _video_processor()})
    model.generation_config.eos_token_id = [tok.convert_tokens_to_ids("<turn|>"), tok.eos_token_id]
    model.generation_config.save_pretrained(out)
    return path


def _video_processor() -> dict[str, Any]:
    """`Gemma4VideoProcessor`'s config as the repos publish it (the tiny tower's 4-px patches)."""
    return {
        "video_processor_type": "Gemma4VideoProcessor",
        "do_resize": True,
        "do_rescale": True,
        "do_normalize": True,
        "do_convert_rgb": True,
        "rescale_factor": 1 / 255,
        "image_mean": [0.0, 0.0, 0.0],
        "image_std": [1.0, 1.0, 1.0],
        "resample": 3,
        "patch_size": 4,
        "max_soft_tokens": 70,
        "pooling_kernel_size": 3,
        "num_frames": 32,
        "do_sample_frames": True,
    }
