"""Checkpoint loading: what a --model string names, and errors that name a fix the user can run."""

from __future__ import annotations

import importlib.metadata
import logging
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlbcli import models
from mlbcli.cli.app import app
from mlbcli.errors import ModelLoadError
from mlbcli.io.writers import read_results
from mlbcli.models import DEFAULT_MODEL, load_adapter
from mlbcli.models.source import _hub_model_known


def _hub_major() -> int:
    return int(importlib.metadata.version("huggingface_hub").split(".")[0])


def _executable(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / name
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    return script


# -- the download command the installed hub client provides ---------------------------------------------
@pytest.mark.parametrize(
    ("hub_version", "installed", "expected"),
    [
        ("2.4.0", ["hf"], "hf download"),
        ("1.0.0", ["hf"], "hf download"),
        ("0.36.0", ["hf", "huggingface-cli"], "hf download"),  # both exist: the current name
        ("0.36.0", ["huggingface-cli"], "huggingface-cli download"),
        ("0.30.2", ["huggingface-cli"], "huggingface-cli download"),
    ],
)
def test_download_command_follows_the_installed_hub_client(
    hub_version, installed, expected, tmp_path, monkeypatch
):
    on_path = tmp_path / "bin"
    for name in installed:
        _executable(on_path, name)
    monkeypatch.setenv("PATH", str(on_path))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "elsewhere" / "python"))
    monkeypatch.setattr(importlib.metadata, "version", lambda name: hub_version)
    assert models.download_command() == expected


def test_download_command_beside_an_inactive_venv_is_named_by_path(tmp_path, monkeypatch):
    """`.venv/bin/mlb` run without activating the venv: `hf` is not on PATH, but beside python."""
    venv_bin = tmp_path / "venv" / "bin"
    hf = _executable(venv_bin, "hf")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "2.4.0")
    assert models.download_command() == f"{hf} download"


def test_hub_model_error_names_the_command_that_exists(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as caught:
        load_adapter("nobody/not-a-cached-model", device="cpu")
    message = str(caught.value)
    if _hub_major() >= 1:  # huggingface_hub 1.0 removed huggingface-cli
        assert "huggingface-cli" not in message
        assert "hf download nobody/not-a-cached-model`" in message
    assert "--model PATH" in message and "MLB_MODEL" in message and "make demo MODEL=PATH" in message


# -- local folders that are not loadable checkpoints ----------------------------------------------------
def _copy_without_weights(tiny_model_dir: Path, target: Path) -> Path:
    shutil.copytree(tiny_model_dir, target)
    for weights in target.glob("*.safetensors"):
        weights.unlink()
    return target


def test_local_folder_without_weights_is_not_told_to_download_itself(tiny_model_dir, tmp_path):
    folder = _copy_without_weights(tiny_model_dir, tmp_path / "ckpt")
    with pytest.raises(ModelLoadError) as caught:
        load_adapter(str(folder), device="cpu")
    message = str(caught.value)
    assert f"download {folder}" not in message  # the old advice: download a local path from the hub
    assert "no *.safetensors weights" in message
    assert f"--local-dir {folder}" in message and "--model PATH" in message


def test_pickle_only_checkpoint_is_refused_with_the_reason(tiny_model_dir, tmp_path):
    folder = _copy_without_weights(tiny_model_dir, tmp_path / "pickled")
    (folder / "pytorch_model.bin").write_bytes(b"not loaded: pickles are never opened")
    with pytest.raises(ModelLoadError) as caught:
        load_adapter(str(folder), device="cpu")
    message = str(caught.value)
    assert "pytorch_model.bin" in message and "safetensors only" in message
    assert f"download {folder}" not in message


# -- a hub id that is also a folder in the current directory --------------------------------------------
@pytest.fixture()
def default_named_folder(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tiny checkpoint at ./llava-hf/llava-onevision-qwen2-0.5b-ov-hf under a temporary cwd."""
    cwd = tmp_path / "work"
    folder = cwd / DEFAULT_MODEL
    shutil.copytree(tiny_model_dir, folder)
    monkeypatch.chdir(cwd)
    return folder.resolve()


def test_default_model_id_never_silently_loads_a_same_named_folder(default_named_folder, caplog):
    with caplog.at_level(logging.WARNING, logger="mlbcli.models"):
        adapter = load_adapter(DEFAULT_MODEL, device="cpu")
    # The folder is what was loaded, so that is what the rows record, never the hub id...
    assert adapter.model_id == str(default_named_folder)
    # ...and the user is told, with the way to say either meaning explicitly.
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert str(default_named_folder) in warning and f"./{DEFAULT_MODEL}" in warning


def test_explicit_relative_path_loads_the_folder_without_a_warning(default_named_folder, caplog):
    with caplog.at_level(logging.WARNING, logger="mlbcli.models"):
        adapter = load_adapter(f"./{DEFAULT_MODEL}", device="cpu")
    assert adapter.model_id == str(default_named_folder)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_answer_rows_record_the_folder_that_was_loaded(default_named_folder, clips_dir, caplog):
    """`mlb answer` with the default --model, run where a same-named folder exists."""
    result = CliRunner().invoke(
        app,
        ["answer", str(clips_dir / "a.mp4"), "--question", "q", "--out", "r.parquet", "--workers", "0"]
        + ["--frames", "4", "--max-new-tokens", "2", "-q"],
        catch_exceptions=False,
        env={"MLB_MODEL": None},
    )
    assert result.exit_code == 0, result.output
    assert read_results("r.parquet").column("model").to_pylist() == [str(default_named_folder)]
    assert any("also a folder" in r.getMessage() for r in caplog.records)


def test_a_relative_folder_shaped_like_a_hub_id_is_the_folder(tiny_model_dir, tmp_path, monkeypatch, caplog):
    """The README's `--model ckpt/ov-0.5b`: not a hub model anyone knows here, so no warning."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_model_dir, tmp_path / "ckpt" / "ov-0.5b")
    with caplog.at_level(logging.WARNING, logger="mlbcli.models"):
        source = models.resolve_model("ckpt/ov-0.5b")
    assert source.local and source.ref == str((tmp_path / "ckpt" / "ov-0.5b").resolve())
    assert not caplog.records


def test_a_cached_hub_model_is_known(tmp_path, monkeypatch):
    """A hub id in the HF cache counts as known (so a same-named folder is announced)."""
    monkeypatch.setattr(
        "huggingface_hub.try_to_load_from_cache",
        lambda repo_id, filename: "/cache/config.json" if repo_id == "org/cached" else None,
    )
    assert _hub_model_known("org/cached")
    assert not _hub_model_known("org/other")


@pytest.mark.parametrize(
    ("given", "problem"),
    [("./missing", "no such folder"), ("a/b/c", "no such folder"), ("weights.bin", "is a file")],
)
def test_path_forms_that_are_not_folders_are_errors(given, problem, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ModelLoadError, match=problem):
        models.resolve_model(given)


def test_a_hub_id_stays_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = models.resolve_model(DEFAULT_MODEL)
    assert not source.local and source.ref == DEFAULT_MODEL


# -- mlb doctor: the model mlb would use, and whether it can load here ----------------------------------
def test_doctor_names_the_default_model_and_how_to_fetch_it(tmp_path, monkeypatch):
    from mlbcli.cli import doctor

    monkeypatch.delenv("MLB_MODEL", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda repo_id, filename: None)
    line = doctor.model_line()
    assert line.startswith(f"model (the default): hub id {DEFAULT_MODEL}, not in the HF cache")
    assert f"download {DEFAULT_MODEL}`" in line


def test_doctor_reports_a_cached_hub_model(tmp_path, monkeypatch):
    from mlbcli.cli import doctor

    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    (snapshot / "config.json").write_text("{}")
    (snapshot / "model.safetensors").write_bytes(b"")
    monkeypatch.setattr(
        "huggingface_hub.try_to_load_from_cache", lambda repo_id, filename: str(snapshot / filename)
    )
    line = doctor.model_line("org/cached")
    assert "model (--model): hub id org/cached, in the HF cache" in line and "1 safetensors" in line
    assert "download" not in line


def test_doctor_reports_the_local_folder_from_mlb_model(tiny_model_dir, monkeypatch):
    from mlbcli.cli import doctor

    monkeypatch.setenv("MLB_MODEL", str(tiny_model_dir))
    line = doctor.model_line()
    assert (
        line
        == f"model (MLB_MODEL): local folder {tiny_model_dir.resolve()} (config.json, 1 safetensors file(s))"
    )
