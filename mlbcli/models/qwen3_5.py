"""Qwen3.5 (`Qwen3_5ForConditionalGeneration`: Qwen/Qwen3.5-0.8B ... 27B), a hybrid-attention video LLM.

What differs from Qwen3-VL (`models/qwen3_vl.py`, whose inputs it shares), as transformers 5.23 runs it
(`models/qwen3_5/`):

- Inputs: the same. The official processor of a `qwen3_5` checkpoint is `Qwen3VLProcessor` with
  `Qwen3VLVideoProcessor` (transformers' auto tables), so frames are resized within the same volume
  bounds, patchified the same way (patch 16, temporal patch 2, merge 2), and the prompt carries the same
  per-temporal-patch timestamps `<t.t seconds><|vision_start|>` + N `<|video_pad|>` + `<|vision_end|>`.
  Positions are the model's own `get_rope_index` ([3, 1, L], each temporal patch its own t=1 grid);
  the stock forward prepends a fourth row (text positions, for its masks) that the decoder layers do
  not use for rotary, so the engine passes the three M-RoPE rows, as for Qwen3-VL. Rotary covers a
  quarter of each head (`partial_rotary_factor` 0.25): the modelling file's `apply_rotary_pos_emb`,
  which the probe uses, rotates that part only.
- No DeepStack: the tower returns merged tokens only, so nothing is added inside the LLM.
- The LLM is hybrid: `text_config.layer_types` alternates three Gated DeltaNet layers
  ("linear_attention": a causal depthwise conv and a gated delta-rule recurrent state, no KV) with one
  gated full-attention layer (`full_attention_interval` 4: layers 3, 7, 11, ...). `layer_kinds` tells
  the engine, which carries the linear layers' states in the cache beside the full layers' KV, runs a
  padded batch through a linear layer row by row (padding would run through a row's state), reads
  attention only at full layers (a method whose layer K - 1 is linear reads the nearest full layer
  before it; FastV's default K = 2 has none before it and runs after layer 3, reading it), and hides
  KV (DyCoke's decode stage) at full layers only (`engine/linear.py`). `mlb flops` charges a linear
  layer O(L) per token (projections, conv, state update; no L^2 term).
- Full attention is gated (`q_proj` gives the query and a sigmoid gate) and normalises q and k per
  head (`q_norm` / `k_norm`, zero-centred RMSNorm); the probe captures q and k after those norms.
- `flash-linear-attention` (optional, `pip install mlbcli[qwen35]`) gives the linear layers fused GPU
  kernels; without it transformers runs its torch implementation (exact, slower on long prompts).

Mapping to `VideoTokens`: as Qwen3-VL, one row per temporal patch (2 sampled frames).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlbcli.models.base import ModelAdapter, Prompt, VideoTokens
from mlbcli.models.qwen3_vl import Qwen3VLAdapter

if TYPE_CHECKING:
    import torch

    from mlbcli.models.inputs import ModelInputs


class Qwen3_5Adapter(Qwen3VLAdapter):  # noqa: N801 (the transformers spelling)
    family = "qwen3_5"
    model_types = ("qwen3_5",)

    @classmethod
    def model_class(cls) -> type[Any]:
        from transformers import Qwen3_5ForConditionalGeneration

        return Qwen3_5ForConditionalGeneration

    @classmethod
    def layer_kinds(cls, text_config: Any) -> tuple[str, ...]:
        """ "linear" for the Gated DeltaNet layers of `layer_types`, "full" for the attention layers."""
        if isinstance(text_config, dict):
            types = text_config.get("layer_types")
            count = int(text_config["num_hidden_layers"])
        else:
            types = getattr(text_config, "layer_types", None)
            count = int(text_config.num_hidden_layers)
        if not types:  # the config's own default: every 4th layer is full attention
            types = ["full_attention" if (i + 1) % 4 == 0 else "linear_attention" for i in range(count)]
        return tuple("linear" if kind == "linear_attention" else "full" for kind in types)

    def layer_features(
        self, tower_output: Any, index: int, shape: tuple[int, int]
    ) -> dict[int, torch.Tensor]:
        """No DeepStack in Qwen3.5."""
        return {}

    def model_inputs(self, prompt: Prompt, video: VideoTokens) -> ModelInputs:
        """Embeddings, 3-row M-RoPE positions, the interleaved visual slots and question rows."""
        return ModelAdapter.model_inputs(self, prompt, video)
