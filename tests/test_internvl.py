"""InternVL3.5 (HF format): the per-frame prompt lines and the raster order of the pixel-shuffled grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    from mlbcli.models import load_adapter
    from mlbcli.testing.tiny import build_tiny

    return load_adapter(str(build_tiny("internvl", tmp_path_factory.mktemp("tiny-internvl"))), device="cpu")


def test_prompt_has_one_labelled_line_per_frame(adapter):
    frames = np.random.default_rng(0).integers(0, 255, (3, 90, 120, 3), dtype=np.uint8)
    video = adapter.encode(adapter.preprocess(frames))
    prompt = adapter.build_prompt("What is happening?", video)
    assert prompt.text == (
        "<|im_start|>user\nFrame1: <img><IMG_CONTEXT></img>\nFrame2: <img><IMG_CONTEXT></img>\n"
        "Frame3: <img><IMG_CONTEXT></img>\nWhat is happening?<|im_end|>\n<|im_start|>assistant\n"
    )
    ids, slots, n = prompt.input_ids[0], prompt.visual_slots(), video.tokens_per_frame
    assert slots.numel() == 3 * n and bool((ids[slots] == adapter.model.config.image_token_id).all())
    start, end = (adapter.tokenizer.convert_tokens_to_ids(t) for t in ("<img>", "</img>"))
    for t in range(3):
        first = int(slots[t * n])
        assert int(ids[first - 1]) == start and int(ids[first + n]) == end
    assert adapter.tokenizer.decode(ids[prompt.question_index]).strip() == "What is happening?"


def test_pixel_shuffle_output_is_a_raster_of_2x2_cells(adapter):
    """Token (r, c) of the (g/2) x (g/2) grid holds patches (2r..2r+1, 2c..2c+1): `VideoTokens.grid` is
    (h, w) raster, which spatial methods (uniform pooling, VisionZip's neighbours) rely on."""
    g = 8
    rows = torch.arange(g).view(g, 1).expand(g, g)
    cols = torch.arange(g).view(1, g).expand(g, g)
    coded = torch.stack([rows, cols], dim=-1).float()[None]  # [1, g, g, 2]: each patch its (row, col)
    shuffled = adapter.model.model.pixel_shuffle(coded, scale_factor=0.5).reshape(1, -1, 8)  # [1, 16, 4*2]
    for token in range(16):
        r, c = divmod(token, g // 2)
        patches = {tuple(shuffled[0, token, k : k + 2].int().tolist()) for k in range(0, 8, 2)}
        assert patches == {(2 * r + a, 2 * c + b) for a in (0, 1) for b in (0, 1)}, token
    video = adapter.encode(adapter.preprocess(np.zeros((1, 112, 112, 3), dtype=np.uint8)))
    assert video.grid == (4, 4) and video.tokens_per_frame == 16
