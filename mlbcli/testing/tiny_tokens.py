"""Tokenizers of the tiny checkpoints of the 2026 families (LLaVA-NeXT-Video, SmolVLM2, InternVL3.5,
GLM-4.1V/4.6V): the same byte-level BPE as `tokenizer.build_tokenizer`, with each family's own special
tokens and chat template, so that prompts render the way the real repositories' templates render them."""

from __future__ import annotations

from typing import Any

from mlbcli.testing.tokenizer import _CORPUS


def build_family_tokenizer(
    specials: list[str],
    chat_template: str,
    *,
    bos_token: str | None = None,
    eos_token: str,
    pad_token: str,
    unk_token: str | None = None,
    extra_special_tokens: dict[str, str] | None = None,
    add_bos: bool = False,
) -> Any:
    """Byte-level BPE trained on the shared corpus with `specials` (ids 0..len-1, in order) and
    `chat_template`; `extra_special_tokens` names tokens as attributes (`tokenizer.video_token`).
    `add_bos=True` makes the tokenizer prepend BOS with `add_special_tokens=True` (Llama's, Vicuna)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

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
    if add_bos and bos_token is not None:
        bos_id = tok.token_to_id(bos_token)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos_token} $A", pair=f"{bos_token} $A $B", special_tokens=[(bos_token, bos_id)]
        )
    kwargs: dict[str, Any] = {"eos_token": eos_token, "pad_token": pad_token}
    if bos_token is not None:
        kwargs["bos_token"] = bos_token
    if unk_token is not None:
        kwargs["unk_token"] = unk_token
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, extra_special_tokens=dict(extra_special_tokens or {}), **kwargs
    )
    fast.chat_template = chat_template
    return fast
