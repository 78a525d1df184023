"""Model adapters, one per family, registered by `config.model_type`; and checkpoint loading."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import re
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mlbcli.errors import ModelLoadError
from mlbcli.models.base import ModelAdapter, Prompt, VideoTokens
from mlbcli.models.llava_next import LlavaNextAdapter
from mlbcli.models.llava_onevision import LlavaOnevisionAdapter
from mlbcli.models.llava_video import LlavaVideoAdapter
from mlbcli.models.qwen2_vl import Qwen2_5_VLAdapter, Qwen2VLAdapter
from mlbcli.models.qwen3_vl import Qwen3VLAdapter, Qwen3VLMoeAdapter

log = logging.getLogger(__name__)

DEFAULT_MODEL = "llava-hf/llava-onevision-qwen2-0.5b-ov-hf"

ADAPTERS: dict[str, type[ModelAdapter]] = {}
#: Checkpoints that share a model_type with a family but differ in defaults (LLaVA-Video is a
#: llava_onevision checkpoint): tried in order, by `ModelAdapter.detect(config)`, before ADAPTERS.
VARIANTS: dict[str, list[type[ModelAdapter]]] = {}


def register_adapter(cls: type[ModelAdapter], *, variant: bool = False) -> type[ModelAdapter]:
    for model_type in cls.model_types:
        if variant:
            VARIANTS.setdefault(model_type, []).append(cls)
        else:
            ADAPTERS[model_type] = cls
    return cls


register_adapter(LlavaOnevisionAdapter)
register_adapter(LlavaVideoAdapter, variant=True)
register_adapter(Qwen2VLAdapter)
register_adapter(Qwen2_5_VLAdapter)
register_adapter(Qwen3VLAdapter)
register_adapter(Qwen3VLMoeAdapter)
register_adapter(LlavaNextAdapter)

__all__ = [
    "ADAPTERS",
    "DEFAULT_MODEL",
    "VARIANTS",
    "ModelAdapter",
    "ModelSource",
    "Prompt",
    "VideoTokens",
    "adapter_class_for",
    "download_command",
    "load_adapter",
    "register_adapter",
    "resolve_device",
    "resolve_dtype",
    "resolve_model",
]


def resolve_device(device: str = "auto") -> str:
    """auto -> cuda > mps > cpu."""
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(dtype: str, device: str) -> Any:
    """auto -> bf16 on GPUs, fp32 on the CPU (bf16 on CPU is faster but not bit-stable: opt in)."""
    import torch

    names = {
        "fp32": torch.float32,
        "float32": torch.float32,
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
        "fp16": torch.float16,
        "float16": torch.float16,
    }
    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16
        return torch.float16 if device == "mps" else torch.float32
    if dtype not in names:
        raise ModelLoadError(f"unknown dtype {dtype!r}; choose from auto, {', '.join(sorted(names))}")
    return names[dtype]


def _hub_reachable(timeout_s: float = 3.0) -> bool:
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


# -- what a --model string names ------------------------------------------------------------------------
#: `org/name`: the shape of a hub id, which is also the shape of a relative path one folder deep.
_HUB_ID_SHAPE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

#: Where `--model` can come from, for messages (the CLI flag, its environment variable, the Makefile).
_MODEL_OPTIONS = "`--model PATH`, `MLB_MODEL=PATH` or `make demo MODEL=PATH`"


@dataclass(frozen=True)
class ModelSource:
    """What a `--model` string names.

    `ref` is what transformers reads and what result rows record as `model`: the absolute folder of a
    local checkpoint, or the hub id. `given` is the string as the user wrote it.
    """

    given: str
    ref: str
    local: bool


def _is_hub_id_shaped(model_id: str) -> bool:
    return bool(_HUB_ID_SHAPE.match(model_id))


def _hub_model_known(model_id: str) -> bool:
    """Whether `model_id` is a hub model this machine knows: the default one, or one in the HF cache."""
    if model_id == DEFAULT_MODEL:
        return True
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(model_id, "config.json"), str)
    except (ImportError, ValueError, OSError):
        return False


def resolve_model(model_id: str) -> ModelSource:
    """The checkpoint a `--model` string names. The rule:

    - an existing folder is a local checkpoint (transformers' own rule), even when the string also
      has the `org/name` shape of a hub id; rows then record the folder's absolute path, never the
      bare string, so results of a local folder can never pass for the hub model's;
    - when such a string is also a hub model known here (the default model, or one in the HF cache),
      the choice is announced with a warning: write `./org/name` to mean the folder without it, or
      run from another directory to get the hub model;
    - a string written as a path (`./x`, `../x`, `/x`, `~/x`, or two or more `/`) that is no folder
      is an error; anything else is a hub id.
    """
    path = Path(model_id).expanduser()
    if path.is_dir():
        folder = str(path.resolve())
        explicit_path = model_id.startswith((".", "/", "~")) or os.path.isabs(model_id)
        if not explicit_path and _is_hub_id_shaped(model_id) and _hub_model_known(model_id):
            log.warning(
                "--model %r is a hub id and also a folder in the current directory: loading the folder "
                "%s (results record that path), not the hub model. Write --model ./%s to use the folder "
                "without this warning, or run from another directory to use the hub model.",
                model_id,
                folder,
                model_id,
            )
        return ModelSource(given=model_id, ref=folder, local=True)
    if path.exists():
        raise ModelLoadError(f"--model {model_id!r} is a file; pass the checkpoint folder")
    if model_id.startswith((".", "/", "~")) or model_id.count("/") > 1:
        raise ModelLoadError(f"--model {model_id!r}: no such folder")
    return ModelSource(given=model_id, ref=model_id, local=False)


# -- messages that name the fix ---------------------------------------------------------------------------
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


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0].rstrip(".") if lines else type(error).__name__


def _hub_message(model_id: str, why: str) -> str:
    return (
        f"cannot load model {model_id!r}: {why}.\n"
        f"Download it once where the hub is reachable (`{download_command()} {model_id}`), "
        f"or point mlb at a local checkpoint folder: {_MODEL_OPTIONS}."
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
        f"or point mlb at another folder: {_MODEL_OPTIONS}."
    )


def _load_error(source: ModelSource, why: str) -> ModelLoadError:
    return ModelLoadError(_local_message(source.ref, why) if source.local else _hub_message(source.ref, why))


def describe_model(model_id: str) -> str:
    """One line for `mlb doctor`: what `model_id` names here and whether it can load without the hub."""
    try:
        source = resolve_model(model_id)
    except ModelLoadError as error:
        return str(error)
    if source.local:
        files = [p.name for p in Path(source.ref).iterdir()]
        weights = sum(name.endswith(".safetensors") for name in files)
        config = "config.json" if "config.json" in files else "no config.json"
        return f"local folder {source.ref} ({config}, {weights} safetensors file(s))"
    from huggingface_hub import constants, try_to_load_from_cache

    cached_config = try_to_load_from_cache(source.ref, "config.json")
    if isinstance(cached_config, str):
        weights = len(list(Path(cached_config).parent.glob("*.safetensors")))
        cache = f"in the HF cache {constants.HF_HUB_CACHE} ({weights} safetensors file(s))"
    else:
        cache = f"not in the HF cache {constants.HF_HUB_CACHE}"
    hub = "the hub is reachable" if _hub_reachable() else "the hub is unreachable or HF_HUB_OFFLINE is set"
    line = f"hub id {source.ref}, {cache}; {hub}"
    if not isinstance(cached_config, str):
        line += f"; to fetch it: `{download_command()} {source.ref}`"
    return line


def _load_config(model_id: str | ModelSource) -> Any:
    from transformers import AutoConfig

    source = model_id if isinstance(model_id, ModelSource) else resolve_model(model_id)
    try:
        return AutoConfig.from_pretrained(source.ref, trust_remote_code=False, local_files_only=True)
    except (OSError, ValueError) as cached_error:
        if source.local:
            raise _load_error(source, _first_line(cached_error)) from None
    if not _hub_reachable():
        raise _load_error(source, "it is not in the local cache and the hub is unreachable")
    try:
        return AutoConfig.from_pretrained(source.ref, trust_remote_code=False)
    except (OSError, ValueError) as error:
        raise _load_error(source, _first_line(error)) from None


def _read_json(model_ref: str, filename: str) -> dict[str, Any] | None:
    from transformers.utils import cached_file

    try:
        path = cached_file(model_ref, filename, _raise_exceptions_for_missing_entries=False)
    except OSError:
        return None
    if not path:
        return None
    loaded: dict[str, Any] = json.loads(Path(path).read_text())
    return loaded


def adapter_class_for(config: Any) -> type[ModelAdapter]:
    model_type = getattr(config, "model_type", None)
    if model_type not in ADAPTERS:
        raise ModelLoadError(
            f"model type {model_type!r} is not supported yet; supported: {', '.join(sorted(ADAPTERS))}"
        )
    return next((v for v in VARIANTS.get(model_type, []) if v.detect(config)), ADAPTERS[model_type])


def load_adapter(
    model_id: str, *, device: str = "auto", dtype: str = "auto", **adapter_options: Any
) -> ModelAdapter:
    """Load a checkpoint by hub id or local folder (safetensors only, no remote code).

    `model_id` is resolved by `resolve_model`; the adapter's `model_id` (what rows record) is the
    hub id, or the local folder's absolute path.

    `adapter_options` are family-specific settings (Qwen2-VL: `min_pixels`, `max_pixels`); None values
    are ignored, and an option the family does not have is a `UsageError`.
    """
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    source = resolve_model(model_id)
    config = _load_config(source)
    cls = adapter_class_for(config)
    adapter_options = {k: v for k, v in adapter_options.items() if v is not None}
    cls.check_options(adapter_options)  # before the weights load
    try:
        model = cls.model_class().from_pretrained(
            source.ref,
            dtype=torch_dtype,
            use_safetensors=True,
            trust_remote_code=False,
            attn_implementation="sdpa",
        )
        tokenizer = AutoTokenizer.from_pretrained(source.ref, trust_remote_code=False)
    except (OSError, ValueError) as error:
        raise _load_error(source, _first_line(error)) from None
    model.to(device).eval()
    if getattr(tokenizer, "chat_template", None) is None:
        template = _read_json(source.ref, "chat_template.json")
        if template and "chat_template" in template:
            tokenizer.chat_template = template["chat_template"]
    if getattr(tokenizer, "chat_template", None) is None:
        raise ModelLoadError(f"{source.ref!r} has no chat template (tokenizer or chat_template.json)")
    preprocess = (
        _read_json(source.ref, "video_preprocessor_config.json")
        or _read_json(source.ref, "preprocessor_config.json")
        or {}
    )
    log.debug("loaded %s as %s on %s/%s", source.ref, cls.family, device, torch_dtype)
    return cls(model, tokenizer, source.ref, preprocess, **adapter_options)
