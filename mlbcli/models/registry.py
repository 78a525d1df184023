"""Model adapters by `config.model_type`: the built-in families and `mlb.models` plugins.

One `mlbcli.plugins.Registry` holds them. A name is either a `model_type` (the family's base adapter)
or `<model_type>.<variant>`: a variant shares its model_type with a base adapter and differs in
defaults (LLaVA-Video is a llava_onevision checkpoint); its `ModelAdapter.detect(config)` says whether
a checkpoint is one, and variants are tried before the base. A plugin package adds a family with one
entry point in its `pyproject.toml`:

    [project.entry-points."mlb.models"]
    my_vlm = "mlb_my_vlm:MyVLMAdapter"              # config.model_type "my_vlm"
    llava_onevision.my_variant = "mlb_my_vlm:MyVariant"  # a variant of a built-in model_type

The class subclasses `mlbcli.models.base.ModelAdapter` (the `Adapter` protocol of `models/contract.py`
says what it must provide). Family modules are imported only for the checkpoint that needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlbcli.errors import ModelLoadError
from mlbcli.plugins import Registry

if TYPE_CHECKING:
    from mlbcli.models.base import ModelAdapter

#: Entry point group of model adapter plugins.
GROUP = "mlb.models"

MODEL_ADAPTERS: Registry[type[ModelAdapter]] = Registry(
    GROUP,
    {
        "llava_onevision": "mlbcli.models.llava_onevision:LlavaOnevisionAdapter",
        "llava_onevision.llava_video": "mlbcli.models.llava_video:LlavaVideoAdapter",
        "llava_next": "mlbcli.models.llava_next:LlavaNextAdapter",
        "qwen2_vl": "mlbcli.models.qwen2_vl:Qwen2VLAdapter",
        "qwen2_5_vl": "mlbcli.models.qwen2_vl:Qwen2_5_VLAdapter",
        "qwen3_vl": "mlbcli.models.qwen3_vl:Qwen3VLAdapter",
        "qwen3_vl_moe": "mlbcli.models.qwen3_vl:Qwen3VLMoeAdapter",
        "gemma4": "mlbcli.models.gemma4:Gemma4Adapter",
        "qwen3_5": "mlbcli.models.qwen3_5:Qwen3_5Adapter",
        "llava_next_video": "mlbcli.models.llava_next_video:LlavaNextVideoAdapter",
        "smolvlm": "mlbcli.models.smolvlm:SmolVLMAdapter",
        "internvl": "mlbcli.models.internvl:InternVLAdapter",
        "glm4v": "mlbcli.models.glm4v:Glm4vAdapter",
        "glm46v": "mlbcli.models.glm4v:Glm46VAdapter",
    },
)


def _model_type(name: str) -> str:
    return name.partition(".")[0]


def supported_model_types() -> list[str]:
    """The `config.model_type` values some adapter serves (no family module is imported)."""
    return sorted({_model_type(name) for name in MODEL_ADAPTERS.names() if "." not in name})


def variant_names(model_type: str) -> list[str]:
    """Registry names of the variants of `model_type`, in name order (the order they are tried)."""
    return [name for name in MODEL_ADAPTERS.names() if name.startswith(model_type + ".")]


def register_adapter(cls: type[ModelAdapter], *, variant: bool = False) -> type[ModelAdapter]:
    """Make `cls` serve its `model_types` in this process (a notebook's own family); `variant=True`
    adds it as a variant of them, chosen when `cls.detect(config)` says so."""
    for model_type in cls.model_types:
        MODEL_ADAPTERS.register(f"{model_type}.{cls.family}" if variant else model_type, cls)
    return cls


def adapter_class_for(config: Any) -> type[ModelAdapter]:
    """The adapter class for a checkpoint's config: a detected variant of its model_type, else the base."""
    model_type = getattr(config, "model_type", None)
    if not isinstance(model_type, str) or model_type not in MODEL_ADAPTERS:
        raise ModelLoadError(
            f"model type {model_type!r} is not supported yet; supported: {', '.join(supported_model_types())}"
        )
    for name in variant_names(model_type):
        variant = MODEL_ADAPTERS.load(name)
        if variant.detect(config):
            return variant
    return MODEL_ADAPTERS.load(model_type)


def adapter_classes() -> list[type[ModelAdapter]]:
    """Every known adapter class, bases and variants (imports every family module)."""
    return list(MODEL_ADAPTERS.load_all().values())
