"""Model adapters, one per family, registered by `config.model_type`; and checkpoint loading."""

from __future__ import annotations

import inspect
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mlbcli.errors import ModelLoadError, UsageError
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
    "Prompt",
    "VideoTokens",
    "adapter_class_for",
    "load_adapter",
    "register_adapter",
    "resolve_device",
    "resolve_dtype",
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


def _offline_message(model_id: str, why: str) -> str:
    return (
        f"cannot load model {model_id!r}: {why}.\n"
        "Download it once where the hub is reachable (e.g. `huggingface-cli download "
        f"{model_id}`), or point mlb at a local checkpoint folder with `--model PATH` "
        "or the MLB_MODEL environment variable."
    )


def _load_config(model_id: str) -> Any:
    from transformers import AutoConfig

    is_local = Path(model_id).expanduser().is_dir()
    if not is_local and Path(model_id).expanduser().exists():
        raise ModelLoadError(f"--model {model_id!r} is a file; pass the checkpoint folder")
    if not is_local and (model_id.startswith((".", "/", "~")) or model_id.count("/") > 1):
        raise ModelLoadError(f"--model {model_id!r}: no such folder")
    try:
        return AutoConfig.from_pretrained(model_id, trust_remote_code=False, local_files_only=True)
    except (OSError, ValueError) as cached_error:
        if is_local:
            raise ModelLoadError(f"cannot read the checkpoint in {model_id!r}: {cached_error}") from None
    if not _hub_reachable():
        raise ModelLoadError(
            _offline_message(model_id, "it is not in the local cache and the hub is unreachable")
        )
    try:
        return AutoConfig.from_pretrained(model_id, trust_remote_code=False)
    except (OSError, ValueError) as error:
        raise ModelLoadError(_offline_message(model_id, str(error).splitlines()[0])) from None


def _read_json(model_id: str, filename: str) -> dict[str, Any] | None:
    from transformers.utils import cached_file

    try:
        path = cached_file(model_id, filename, _raise_exceptions_for_missing_entries=False)
    except OSError:
        return None
    if not path:
        return None
    return json.loads(Path(path).read_text())


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

    `adapter_options` are family-specific settings (Qwen2-VL: `min_pixels`, `max_pixels`); None values
    are ignored, and an option the family does not have is a `UsageError`.
    """
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    config = _load_config(model_id)
    cls = adapter_class_for(config)
    adapter_options = {k: v for k, v in adapter_options.items() if v is not None}
    accepted = inspect.signature(cls.__init__).parameters
    for name in adapter_options:
        if name not in accepted:
            flag = "--" + name.replace("_", "-")
            raise UsageError(f"{flag} does not apply to {cls.family} models")
    try:
        model = cls.model_class().from_pretrained(
            model_id,
            dtype=torch_dtype,
            use_safetensors=True,
            trust_remote_code=False,
            attn_implementation="sdpa",
        )
        tokenizer = AutoTokenizer.from_pretrained(model_id, trust_remote_code=False)
    except (OSError, ValueError) as error:
        raise ModelLoadError(_offline_message(model_id, str(error).splitlines()[0])) from None
    model.to(device).eval()
    if getattr(tokenizer, "chat_template", None) is None:
        template = _read_json(model_id, "chat_template.json")
        if template and "chat_template" in template:
            tokenizer.chat_template = template["chat_template"]
    if getattr(tokenizer, "chat_template", None) is None:
        raise ModelLoadError(f"{model_id!r} has no chat template (tokenizer or chat_template.json)")
    preprocess = (
        _read_json(model_id, "video_preprocessor_config.json")
        or _read_json(model_id, "preprocessor_config.json")
        or {}
    )
    log.debug("loaded %s as %s on %s/%s", model_id, cls.family, device, torch_dtype)
    return cls(model, tokenizer, model_id, preprocess, **adapter_options)
