"""Code paths that only run on CUDA: bf16 end to end, batching on the GPU, the out-of-memory type.

Marked `gpu`: skipped where no CUDA device is present (CI, CPU machines); run them on a GPU machine
with `pytest -m gpu tests/test_gpu.py` (see README "GPU"). They use the tiny checkpoints only.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

QUESTIONS = ["What is happening in the video?", "Which colour is it?", "How many objects?"]


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, 255, (n, 90, 120, 3), dtype=np.uint8) for n in (6, 4, 8)]


def _pipeline(model_dir, dtype: str, method: str = "fastv"):
    from mlbcli.engine.pipeline import Pipeline

    return Pipeline(str(model_dir), method=method, keep=0.5, device="cuda", dtype=dtype)


def _requests(pipe, clips):
    from mlbcli.engine.pipeline import Request

    videos = pipe.encode_many(clips)
    return [Request(video, question, 6) for video, question in zip(videos, QUESTIONS, strict=True)]


def test_bf16_batch_runs_end_to_end_on_cuda(tiny_model_dir, clips):
    pipe = _pipeline(tiny_model_dir, "bf16")
    assert pipe.adapter.device.type == "cuda" and pipe.adapter.dtype == torch.bfloat16
    results = pipe.run(_requests(pipe, clips))
    for result in results:
        assert result.error is None
        assert 1 <= len(result.token_ids) <= 6
        assert result.stats.visual_tokens_kept < result.stats.visual_tokens_in


def test_fp32_batch_equals_one_by_one_on_cuda(tiny_model_dir, clips):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    pipe = _pipeline(tiny_model_dir, "fp32", method="uniform")
    requests = _requests(pipe, clips)
    batched = pipe.run(requests)
    alone = [pipe.run([request])[0] for request in requests]
    for a, b in zip(batched, alone, strict=True):
        assert a.stats.as_row()["tokens_per_layer"] == b.stats.as_row()["tokens_per_layer"]
        torch.testing.assert_close(a.state.logits, b.state.logits, rtol=1e-3, atol=1e-3)


def test_a_real_cuda_out_of_memory_is_recognised():
    from mlbcli.runners.tasks import is_out_of_memory

    torch.cuda.set_per_process_memory_fraction(0.0001)
    try:
        with pytest.raises(Exception) as caught:
            torch.empty(1 << 34, dtype=torch.uint8, device="cuda")
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    assert is_out_of_memory(caught.value)


def test_auto_batch_size_on_cuda(tiny_model_dir):
    from mlbcli.runners.tasks import AUTO_BATCH_CUDA, AnswerTask, ModelWorker

    worker = ModelWorker(_pipeline(tiny_model_dir, "bf16"), AnswerTask(), {}, batch_size=None)
    assert worker.batch_size == AUTO_BATCH_CUDA
