"""Model adapters as named, lazily loaded components: built-ins and `mlb.models` plugins by
`config.model_type`, variants chosen by `detect`, and what other layers read from adapter classes
instead of naming families (prompt profile, family settings, tiny checkpoints)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from mlbcli import models
from mlbcli.errors import ModelLoadError, UsageError
from mlbcli.models import registry
from mlbcli.models.base import ModelAdapter
from mlbcli.models.contract import Adapter, AdapterClass


def test_importing_the_models_face_imports_no_family_and_no_torch():
    code = (
        "import sys, mlbcli.models as m; m.supported_model_types(); "
        "print(sorted(k for k in sys.modules if k.startswith('mlbcli.models.') and "
        "k.split('.')[-1] in ('llava_onevision', 'llava_video', 'llava_next', 'qwen2_vl', 'qwen3_vl')), "
        "'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] False"


def test_a_checkpoint_gets_its_variant_when_detected_else_the_base():
    onevision = SimpleNamespace(model_type="llava_onevision", _name_or_path="llava-hf/llava-onevision-0.5b")
    video = SimpleNamespace(model_type="llava_onevision", _name_or_path="llava-hf/LLaVA-Video-7B-Qwen2-hf")
    assert models.adapter_class_for(onevision).family == "llava_onevision"
    assert models.adapter_class_for(video).family == "llava_video"
    assert models.adapter_class_for(SimpleNamespace(model_type="qwen3_vl_moe")).family == "qwen3_vl_moe"


def test_an_unsupported_model_type_lists_the_supported_ones_without_variants():
    with pytest.raises(ModelLoadError) as error:
        models.adapter_class_for(SimpleNamespace(model_type="gpt2"))
    message = str(error.value)
    assert "'gpt2' is not supported" in message and "qwen2_5_vl" in message
    assert "llava_video" not in message  # a variant is no model_type


def _write_plugin(root: Path) -> None:
    """A distribution `mlb-tiny-family` whose entry points add a family and a OneVision variant."""
    (root / "mlb_tiny_family.py").write_text(
        textwrap.dedent(
            """
            from mlbcli.models.llava_onevision import LlavaOnevisionAdapter

            class TinyFamily(LlavaOnevisionAdapter):
                family = "tiny_family"
                model_types = ("tiny_family",)

            class TinyVariant(LlavaOnevisionAdapter):
                family = "tiny_variant"
                default_frames = 3

                @classmethod
                def detect(cls, config):
                    return "tiny-variant" in str(getattr(config, "_name_or_path", ""))
            """
        )
    )
    dist = root / "mlb_tiny_family-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mlb-tiny-family\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[mlb.models]\n"
        "tiny_family = mlb_tiny_family:TinyFamily\n"
        "llava_onevision.tiny_variant = mlb_tiny_family:TinyVariant\n"
    )


def test_a_plugin_adds_a_family_and_a_variant_with_entry_points(tmp_path, monkeypatch):
    _write_plugin(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry.MODEL_ADAPTERS, "_plugins", None)  # read the entry points again
    monkeypatch.setattr(registry.MODEL_ADAPTERS, "_loaded", {})
    assert "tiny_family" in models.supported_model_types()
    assert registry.MODEL_ADAPTERS.origin("tiny_family") == "plugin mlb-tiny-family"
    assert models.adapter_class_for(SimpleNamespace(model_type="tiny_family")).family == "tiny_family"
    variant = SimpleNamespace(model_type="llava_onevision", _name_or_path="/ckpt/tiny-variant")
    assert models.adapter_class_for(variant).default_frames == 3
    assert models.adapter_class_for(SimpleNamespace(model_type="llava_onevision")).family == "llava_onevision"


def test_register_adapter_adds_a_variant_in_this_process(monkeypatch):
    monkeypatch.setattr(registry.MODEL_ADAPTERS, "_registered", {})
    from mlbcli.models.qwen2_vl import Qwen2VLAdapter

    class Distilled(Qwen2VLAdapter):
        family = "qwen2_vl_distilled"

        @classmethod
        def detect(cls, config):
            return bool(getattr(config, "distilled", False))

    models.register_adapter(Distilled, variant=True)
    assert models.adapter_class_for(SimpleNamespace(model_type="qwen2_vl", distilled=True)) is Distilled
    assert models.adapter_class_for(SimpleNamespace(model_type="qwen2_vl")) is Qwen2VLAdapter


def test_family_settings_are_offered_by_the_option_table():
    """What an adapter takes (`option_defaults`) is declared once, as a family setting of the option table
    (flag, help, allowed values), and a value outside the table's choices is refused before loading."""
    from mlbcli.options import ModelSpec
    from mlbcli.options.table import OPTIONS

    offered = {option.name for option in OPTIONS if option.adapter}
    assert offered == {"min_pixels", "max_pixels", "temporal_spacing"}
    for cls in models.adapter_classes():
        assert set(cls.option_defaults) <= offered, cls.family
    with pytest.raises(UsageError, match="temporal"):
        ModelSpec(model="m", temporal_spacing="fast")


def test_the_benchmark_prompt_profile_is_an_adapter_attribute():
    profiles = {cls.family: cls.prompt_profile for cls in models.adapter_classes()}
    assert profiles["qwen3_vl"] == profiles["qwen3_vl_moe"] == "qwen3_vl"
    assert profiles["llava_video"] == "llava_vid"  # lmms-eval's `llava_vid` model (Video-MME)
    assert {family for family, profile in profiles.items() if profile == "default"} == {
        "llava_onevision",
        "llava_next",
        "qwen2_vl",
        "qwen2_5_vl",
        "gemma4",
        "llava_next_video",
        "smolvlm",
        "internvl",
        "glm4v",
        "glm46v",
    }


def test_every_family_has_a_tiny_checkpoint_builder():
    from mlbcli.testing import tiny

    assert set(tiny.TINY_FAMILIES) == {cls.family for cls in models.adapter_classes()}
    with pytest.raises(KeyError, match="no tiny checkpoint"):
        tiny.build_tiny("gpt2", "unused")


def test_the_base_adapter_provides_every_member_of_the_contract():
    members = {
        name
        for name in vars(Adapter)
        if not name.startswith("_") and name not in ("model_id",)  # model_id is set per instance
    }
    missing = sorted(name for name in members if not hasattr(ModelAdapter, name))
    assert missing == ["default_frames", "family"]  # each family names itself and its frame count
    for cls in models.adapter_classes():
        assert all(hasattr(cls, name) for name in members), cls


def test_every_adapter_class_answers_what_is_asked_before_loading():
    """`AdapterClass`: the members `mlb flops`, option checks and the registry use on a bare class."""
    members = [
        name for name in {*vars(AdapterClass), *AdapterClass.__annotations__} if not name.startswith("_")
    ]
    assert "tokens_per_frame" in members and "option_defaults" in members
    for cls in models.adapter_classes():
        assert all(hasattr(cls, name) for name in members), cls
        assert cls.model_types and all(isinstance(t, str) for t in cls.model_types)
