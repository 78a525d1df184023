"""Errors knowable from the arguments and the model's config come before the weights load (exit 2).

The checkpoint here has its weights file removed: a check that ran only after loading would report a
load error (exit 1) or error rows instead of the option's own one-line usage error.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlbcli.cli.app import app
from mlbcli.errors import UsageError
from mlbcli.options import ModelSpec


@pytest.fixture(scope="module")
def weightless_model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny OneVision checkpoint without its weights: config and tokenizer only."""
    folder = tmp_path_factory.mktemp("weightless") / "tiny-ov"
    shutil.copytree(tiny_model_dir, folder)
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    return folder


def run(args: list) -> object:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "adatp", "--dedup-threshold", "7"], "dedup_threshold=7.0 outside [-1.0, 1.0]"),
        (["--method", "mlb", "--variant", "paper"], "--variant paper is the two-stage LLaVA-MLB layout"),
        (["--method", "fastv", "--keep", "0.5", "--layer", "40"], "--layer 40: fastv prunes before"),
    ],
)
def test_errors_from_arguments_and_config_come_before_the_weights(weightless_model, clips_dir, args, message):
    out = Path("out.parquet")
    result = run(
        [
            "answer",
            clips_dir / "a.mp4",
            "--question",
            "q",
            "--model",
            weightless_model,
            "-o",
            out,
            *args,
        ]
    )
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "loading model" not in result.output  # (not -q: the line shows when a load starts)
    assert not out.exists()  # not one error row


def test_the_same_run_with_weights_missing_is_a_load_error(weightless_model, clips_dir):
    """The guard of the test above: this checkpoint really cannot load (so exit 2 there came first)."""
    result = run(["answer", clips_dir / "a.mp4", "-q", "--question", "q", "--model", weightless_model])
    assert result.exit_code != 0
    assert "dedup" not in result.stderr and "variant" not in result.stderr


def test_a_hyperparameter_out_of_range_is_refused_when_the_spec_is_built():
    """The library path: no model named exists, yet the spec itself refuses the value."""
    with pytest.raises(UsageError, match="outside"):
        ModelSpec(model="nowhere/none", method="adatp", params={"dedup_threshold": 7})
    assert ModelSpec(model="nowhere/none", method="adatp", params={"dedup_threshold": 0.5}).params == {
        "dedup_threshold": 0.5
    }


def test_positions_the_family_cannot_honour_are_refused_from_the_config(tmp_path):
    """Qwen2-VL's config names M-RoPE: contiguous positions are refused before its weights load."""
    from mlbcli.runners.local import check_model
    from mlbcli.testing.tiny import build_tiny

    folder = build_tiny("qwen2_vl", tmp_path / "tiny-q2")
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(UsageError, match="M-RoPE"):
        check_model(ModelSpec(model=str(folder), method="visionzip", keep=0.5, positions="contiguous"))
    # without --positions the same method passes (the official default quietly keeps M-RoPE ids)
    assert check_model(ModelSpec(model=str(folder), method="visionzip", keep=0.5)).family == "qwen2_vl"


def test_an_explicit_tower_saliency_needs_a_family_that_captures_it(tmp_path):
    """GLM-4.1V's tower attention is not captured: `--saliency tower` is refused from its config, while
    leaving it unset falls back to the proxy (the rows say so) and OneVision, which captures it, passes."""
    from mlbcli.runners.local import check_model
    from mlbcli.testing.tiny import build_tiny

    glm = build_tiny("glm4v", tmp_path / "tiny-glm")
    for weights in glm.glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(UsageError, match="does not capture the glm4v"):
        check_model(ModelSpec(model=str(glm), method="fastvid", keep=0.5, saliency="tower"))
    assert check_model(ModelSpec(model=str(glm), method="fastvid", keep=0.5)).family == "glm4v"
    assert check_model(ModelSpec(model=str(glm), method="fastvid", keep=0.5, saliency="proxy"))
    onevision = build_tiny("llava_onevision", tmp_path / "tiny-ov")
    assert check_model(ModelSpec(model=str(onevision), method="fastvid", keep=0.5, saliency="tower"))
