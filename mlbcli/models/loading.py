"""Loading a checkpoint: device and dtype, its config, the adapter class for it, weights and tokenizer."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlbcli.errors import ModelLoadError
from mlbcli.models.hub import download_command, first_line, hub_reachable, load_error
from mlbcli.models.registry import adapter_class_for
from mlbcli.models.source import ModelSource, resolve_model

if TYPE_CHECKING:
    from mlbcli.models.base import ModelAdapter

log = logging.getLogger(__name__)


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
    hub = "the hub is reachable" if hub_reachable() else "the hub is unreachable or HF_HUB_OFFLINE is set"
    line = f"hub id {source.ref}, {cache}; {hub}"
    if not isinstance(cached_config, str):
        line += f"; to fetch it: `{download_command()} {source.ref}`"
    return line


def load_config(model_id: str | ModelSource) -> Any:
    """The checkpoint's config: from the local cache first, from the hub only when it is reachable."""
    from transformers import AutoConfig

    source = model_id if isinstance(model_id, ModelSource) else resolve_model(model_id)
    try:
        return AutoConfig.from_pretrained(source.ref, trust_remote_code=False, local_files_only=True)
    except (OSError, ValueError) as cached_error:
        if source.local:
            raise load_error(source, first_line(cached_error)) from None
    if not hub_reachable():
        raise load_error(source, "it is not in the local cache and the hub is unreachable")
    try:
        return AutoConfig.from_pretrained(source.ref, trust_remote_code=False)
    except (OSError, ValueError) as error:
        raise load_error(source, first_line(error)) from None


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
    config = load_config(source)
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
        raise load_error(source, first_line(error)) from None
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
