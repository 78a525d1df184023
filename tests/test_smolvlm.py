"""SmolVLM2's own rules: the processor's per-frame prompt text, frame times and the two LANCZOS resizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlbcli.models.smolvlm import longest_edge_size, number_words


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    from mlbcli.models import load_adapter
    from mlbcli.testing.tiny import build_tiny

    return load_adapter(str(build_tiny("smolvlm", tmp_path_factory.mktemp("tiny-smolvlm"))), device="cpu")


def test_number_words_follow_num2words():
    words = {0: "zero", 7: "seven", 13: "thirteen", 20: "twenty", 64: "sixty-four", 100: "one hundred"}
    words |= {101: "one hundred and one", 999: "nine hundred and ninety-nine", 1000: "one thousand"}
    words |= {1050: "one thousand and fifty", 1203: "one thousand, two hundred and three"}
    assert {n: number_words(n) for n in words} == words


def test_first_resize_keeps_the_aspect_with_an_even_short_edge():
    assert longest_edge_size(90, 120, 128) == (96, 128)  # int(128 / (4/3)) = 96
    assert longest_edge_size(100, 120, 128) == (106, 128)  # int(106.67) = 106, even already
    assert longest_edge_size(120, 90, 128) == (128, 96)
    assert longest_edge_size(77, 100, 128) == (98, 128)  # int(98.56) = 98
    assert longest_edge_size(75, 100, 100) == (76, 100)  # int(75) = 75 -> 76 (even)


def test_prompt_has_one_timestamped_block_per_frame(adapter):
    frames = np.random.default_rng(0).integers(0, 255, (5, 90, 120, 3), dtype=np.uint8)
    video = adapter.encode(adapter.preprocess(frames))
    # 5 of 250 frames at 25 fps (a 10 s video), frames 0, 62, 125, 187, 249
    video.frame_indices, video.native_fps, video.sampled_fps = [0, 62, 125, 187, 249], 25.0, 5 / 250 * 25
    prompt = adapter.build_prompt("What is happening?", video)
    assert prompt.text.startswith(
        "<|im_start|>User: You are provided the following series of five frames from a 0:00:10 [H:MM:SS] video.\n"
    )
    stamps = [part[1:6] for part in prompt.text.split("\nFrame from")[1:]]  # " mm:ss:<fake..."
    assert stamps == ["00:00", "00:02", "00:05", "00:07", "00:09"]
    assert prompt.text.endswith("\n\nWhat is happening?<end_of_utterance>\nAssistant:")
    ids = prompt.input_ids[0]
    slots = prompt.visual_slots()
    n = video.tokens_per_frame
    assert slots.numel() == 5 * n and bool((ids[slots] == adapter.model.config.image_token_id).all())
    fake = adapter.tokenizer.convert_tokens_to_ids("<fake_token_around_image>")
    for t in range(5):  # each frame's tokens sit between <global-img> and <fake_token_around_image>
        first, last = int(slots[t * n]), int(slots[t * n + n - 1])
        assert last - first == n - 1 and int(ids[last + 1]) == fake
    question = adapter.tokenizer.decode(ids[prompt.question_index])
    assert question.strip() == "What is happening?"


def test_frames_are_resized_twice_with_lanczos(adapter):
    import torch.nn.functional as F

    frames = np.random.default_rng(1).integers(0, 255, (2, 90, 120, 3), dtype=np.uint8)
    pixel = adapter.preprocess(frames)["pixel_values"][0]  # [T, 3, 64, 64]
    x = torch.from_numpy(frames).permute(0, 3, 1, 2)
    once = F.interpolate(x, size=(96, 128), mode="lanczos", antialias=True)
    twice = F.interpolate(once, size=(64, 64), mode="lanczos", antialias=True)
    assert torch.equal(((pixel * 0.5 + 0.5) * 255).round().to(torch.uint8), twice)
    direct = F.interpolate(x, size=(64, 64), mode="lanczos", antialias=True)
    assert not torch.equal(direct, twice)  # the first resize matters: guards the comparison
