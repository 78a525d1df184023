"""Messages that name the fix when a checkpoint cannot load, and whether the hub can be reached."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse

from mlbcli.errors import ModelLoadError
from mlbcli.models.source import MODEL_OPTIONS, ModelSource


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """A cheap check so that an offline machine fails in seconds, not after the hub client's retries."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = urlparse(endpoint).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def _hub_cli_names() -> list[str]:
    """The hub client's command names, newest first, for the installed huggingface_hub.

    `hf` arrived in huggingface_hub 0.34 and `huggingface-cli` was removed in 1.0.
    """
    try:
        version = importlib.metadata.version("huggingface_hub")
    except importlib.metadata.PackageNotFoundError:
        return ["hf"]
    numbers = [int(part) for part in re.findall(r"\d+", version)[:2]] + [0, 0]
    major, minor = numbers[0], numbers[1]
    if major >= 1:
        return ["hf"]
    return ["hf", "huggingface-cli"] if minor >= 34 else ["huggingface-cli"]


def download_command() -> str:
    """`<cli> download` as this environment provides it: `hf download` or `huggingface-cli download`.

    A command on PATH is named bare; one only beside the running interpreter (a virtual environment
    that is not activated, e.g. `.venv/bin/mlb`) is named by its path, so the advice can be pasted.
    """
    names = _hub_cli_names()
    bindir = Path(sys.executable).parent
    for name in names:
        if shutil.which(name):
            return f"{name} download"
        beside = bindir / name
        if beside.is_file() and os.access(beside, os.X_OK):
            return f"{beside} download"
    return f"{names[0]} download"


def first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0].rstrip(".") if lines else type(error).__name__


def _hub_message(model_id: str, why: str) -> str:
    return (
        f"cannot load model {model_id!r}: {why}.\n"
        f"Download it once where the hub is reachable (`{download_command()} {model_id}`), "
        f"or point mlb at a local checkpoint folder: {MODEL_OPTIONS}."
    )


def _local_message(folder: str, why: str) -> str:
    """For a local folder that is not a loadable checkpoint: never suggest downloading the folder path."""
    files = {p.name for p in Path(folder).iterdir()} if Path(folder).is_dir() else set()
    has_safetensors = any(name.endswith(".safetensors") for name in files)
    pickles = sorted(name for name in files if name.endswith((".bin", ".pt", ".pth", ".ckpt")))
    if pickles and not has_safetensors:
        why = (
            f"it has only PyTorch pickle weights ({', '.join(pickles[:3])}), and mlb loads safetensors "
            "only (a pickle can run code when it is loaded)"
        )
    elif files and not has_safetensors and "config.json" in files:
        why = "it has no *.safetensors weights"
    return (
        f"cannot load the checkpoint in {folder}: {why}.\n"
        "A checkpoint folder holds config.json, *.safetensors weights and the tokenizer files; fetch "
        f"a complete one with `{download_command()} ORG/NAME --local-dir {folder}`, "
        f"or point mlb at another folder: {MODEL_OPTIONS}."
    )


def load_error(source: ModelSource, why: str) -> ModelLoadError:
    return ModelLoadError(_local_message(source.ref, why) if source.local else _hub_message(source.ref, why))
