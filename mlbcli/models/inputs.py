"""What a model adapter hands the engine for one row: `ModelInputs` (see `models/contract.py`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ModelInputs:
    """One row as the LLM sees it: what `ModelAdapter.model_inputs(prompt, video)` builds."""

    embeds: torch.Tensor  # [1, L, D] input embeddings, visual block filled in
    position_ids: torch.Tensor  # [..., 1, L]: [1, L], or [3, 1, L] for M-RoPE
    visual_slots: torch.Tensor  # [n] positions of the prunable visual tokens (visual ids 0..n-1)
    query_slots: torch.Tensor  # [q] the probe's query rows (the question's tokens)
    # Per decoder layer l: [n, D] features added to the output of layer l at the visual tokens, by
    # visual id (Qwen3-VL's DeepStack). A pruned token's features go with it; appended tokens get none.
    visual_residuals: dict[int, torch.Tensor] = field(default_factory=dict)
    # [1, L, ...] per-token inputs of the decoder layers (`ModelAdapter.token_inputs`: Gemma 4's per-layer
    # embeddings); they travel with their tokens through pruning. None for most families.
    token_inputs: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return int(self.embeds.shape[1])
