"""Shared fixtures: a tiny random LLaVA-OneVision checkpoint and synthetic clips, built at test time.

Everything is offline: the checkpoint is built from config, saved with `save_pretrained` and loaded
back by path, exactly as a user loads a real local checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands that default their output to ./<command>.parquet must not write into the checkout."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mlbcli.testing.tiny import build_tiny_llava_onevision

    return build_tiny_llava_onevision(tmp_path_factory.mktemp("tiny-llava-ov"))


@pytest.fixture(scope="session")
def tiny_adapter(tiny_model_dir: Path):
    from mlbcli.models import load_adapter

    return load_adapter(str(tiny_model_dir), device="cpu")


@pytest.fixture(scope="session")
def clips_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with three small clips (one in a subfolder), shared read-only by the CLI tests."""
    from mlbcli.io.video import make_test_video

    root = tmp_path_factory.mktemp("clips")
    make_test_video(root / "a.mp4", num_frames=24, seed=1)
    make_test_video(root / "b.mp4", num_frames=16, seed=2, pattern="flash")
    (root / "sub").mkdir()
    make_test_video(root / "sub" / "c.mp4", num_frames=20, seed=3)
    return root
