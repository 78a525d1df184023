"""Prompts whose frame tokens are interleaved with text (per-frame timestamps, frame labels, image
delimiters): SmolVLM2, InternVL3.5, GLM-4.1V. No family knowledge here: a family renders its own text,
with ONE frame placeholder token per frame, and this module tokenizes it and expands each placeholder
into the frame's N tokens.

Tokenising one placeholder per frame gives the ids of the processor's N placeholders (special tokens
are atomic, so the text around them tokenizes alike) at a fraction of the cost.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlbcli.models.base import Prompt

if TYPE_CHECKING:
    import torch

    from mlbcli.models.base import VideoTokens

log = logging.getLogger(__name__)


@dataclass
class InterleavedPrompt(Prompt):
    """A prompt whose visual tokens are interleaved with text.

    `slots` [num_visual] are the positions of the frame-token placeholders, ascending (visual id i sits
    at slots[i]). `visual_start` is the first of them and `num_extra` counts the non-visual tokens between
    the first and the last, so `visual_start + num_visual + num_extra` is one past the last visual token,
    as for a contiguous block.
    """

    slots: torch.Tensor | None = None

    def visual_slots(self) -> torch.Tensor:
        assert self.slots is not None
        return self.slots


def tokenize_interleaved(
    tokenizer: Any,
    text: str,
    *,
    placeholder_id: int,
    tokens_per_frame: int,
    num_visual: int,
    question_text: str,
    question_after: int,
    bos_id: int | None = None,
) -> InterleavedPrompt:
    """Tokenize `text` (one `placeholder_id` token per frame) and expand each placeholder into
    `tokens_per_frame` copies.

    `question_after` is the character offset after which the question is searched (the end of the video
    block); its tokens are the probe's query rows. `bos_id` is prepended when given (tokenizers that add
    BOS as the processor tokenizes). Raises ValueError when the placeholders do not make `num_visual`.
    """
    import torch

    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = [] if bos_id is None else [bos_id]
    slots: list[int] = []
    position_of: list[int] = []  # token index in `enc` -> index in `ids`
    for token in enc.input_ids:
        position_of.append(len(ids))
        if token == placeholder_id:
            slots.extend(range(len(ids), len(ids) + tokens_per_frame))
            ids.extend([placeholder_id] * tokens_per_frame)
        else:
            ids.append(token)
    if len(slots) != num_visual or not slots:
        raise ValueError(f"prompt holds {len(slots)} visual placeholders, expected {num_visual}")
    q_start = text.find(question_text, question_after)
    q_end = q_start + len(question_text)
    q_rows = [
        position_of[i]
        for i, (a, b) in enumerate(enc.offset_mapping)
        if q_start >= 0 and b > q_start and a < q_end
    ]
    if not q_rows:
        # The template put the question before the video, where causal attention cannot see the frames:
        # score with the last prompt token (FastV's row) instead.
        if question_text.strip():
            log.warning(
                "question text not found after the video; the attention probe uses the last prompt token"
            )
        q_rows = [len(ids) - 1]
    return InterleavedPrompt(
        input_ids=torch.tensor([ids], dtype=torch.long),
        visual_start=slots[0],
        num_visual=len(slots),
        num_extra=slots[-1] + 1 - slots[0] - len(slots),
        question_index=torch.tensor(q_rows, dtype=torch.long),
        text=text,
        slots=torch.tensor(slots, dtype=torch.long),
    )


def expand_video_placeholder(
    tokenizer: Any,
    text: str,
    placeholder: str,
    block: str,
    image_token_id: int,
    video: VideoTokens,
    question_text: str,
) -> InterleavedPrompt:
    """A chat-template rendering `text` with exactly one video `placeholder` -> the prompt with the
    family's per-frame `block` in its place (one `image_token_id` per frame, expanded to the frame's
    tokens); the question's tokens after the block are the probe's query rows."""
    if text.count(placeholder) != 1:
        raise ValueError(f"chat template rendered {text.count(placeholder)} video placeholders, expected 1")
    at = text.index(placeholder)
    expanded = text[:at] + block + text[at + len(placeholder) :]
    return tokenize_interleaved(
        tokenizer,
        expanded,
        placeholder_id=image_token_id,
        tokens_per_frame=video.tokens_per_frame,
        num_visual=video.num_visual,
        question_text=question_text,
        question_after=at + len(block),
    )


def embed_at_slots(embed_tokens: Any, prompt: Prompt, video: VideoTokens, device: Any) -> torch.Tensor:
    """Token embeddings [1, L, D] of `prompt` with the frame tokens [T*N, D] written at their slots, in
    visual-id order, as the stock models' `masked_scatter` does."""
    embeds = embed_tokens(prompt.input_ids.to(device))  # [1, L, D]
    visual = video.features.reshape(-1, video.features.shape[-1]).to(embeds.device, embeds.dtype)
    embeds[0, prompt.visual_slots().to(embeds.device)] = visual
    return embeds
