"""Model adapters, one module per family, and checkpoint loading: the face of the models layer.

- `contract.py`: the `Adapter` protocol, what a family must provide (with shapes);
- `base.py`: `ModelAdapter`, the base class families subclass, and `VideoTokens` / `Prompt`;
- `registry.py`: adapters by `config.model_type` (built-ins and `mlb.models` entry points);
- `source.py` / `hub.py` / `loading.py`: what `--model` names, messages that name the fix, loading;
- one module per family: `llava_onevision`, `llava_video`, `llava_next`, `qwen2_vl`, `qwen3_vl`.

Importing this package imports no family module and no torch.
"""

from __future__ import annotations

from mlbcli.models.base import ModelAdapter, Prompt, VideoTokens
from mlbcli.models.hub import download_command
from mlbcli.models.loading import describe_model, load_adapter, load_config, resolve_device, resolve_dtype
from mlbcli.models.registry import (
    GROUP,
    MODEL_ADAPTERS,
    adapter_class_for,
    adapter_classes,
    register_adapter,
    supported_model_types,
)
from mlbcli.models.source import DEFAULT_MODEL, ModelSource, resolve_model

__all__ = [
    "DEFAULT_MODEL",
    "GROUP",
    "MODEL_ADAPTERS",
    "ModelAdapter",
    "ModelSource",
    "Prompt",
    "VideoTokens",
    "adapter_class_for",
    "adapter_classes",
    "describe_model",
    "download_command",
    "load_adapter",
    "load_config",
    "register_adapter",
    "resolve_device",
    "resolve_dtype",
    "resolve_model",
    "supported_model_types",
]
