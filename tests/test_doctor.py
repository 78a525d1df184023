"""`mlb doctor --model PATH_OR_ID` (a checkpoint: loads, family, methods, one answer unpruned and one
pruned) and `mlb doctor --keep-files DIR` (the offline path: tiny models kept for `--model`) (issue 22)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlbcli.cli import doctor
from mlbcli.cli.app import app

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def run(args: list, env: dict | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env, catch_exceptions=False)


@pytest.fixture(scope="module")
def tiny_onevision(tmp_path_factory) -> Path:
    from mlbcli.testing.tiny import build_tiny

    return build_tiny("llava_onevision", tmp_path_factory.mktemp("doctor") / "tiny-llava_onevision")


def test_doctor_model_checks_a_checkpoint(tiny_onevision):
    lines: list[str] = []
    assert doctor.run_doctor(echo=lines.append, model=str(tiny_onevision))
    text = "\n".join(lines)
    assert f"[ok]   checkpoint {tiny_onevision}: family llava_onevision; all " in text
    assert "methods apply (" in text and "fastv" in text and "a video LLM" in text
    assert "[ok]   answer with --method none: answered in" in text
    assert "[ok]   answer with --method uniform --keep 0.5: answered in" in text
    assert "pipeline on a tiny" not in text  # the checkpoint, not the tiny families
    assert lines[-1] == f"{tiny_onevision}: loads and answers here"


def test_doctor_model_notes_the_resequencing_of_an_image_llm(tmp_path):
    from mlbcli.testing.tiny import build_tiny

    summary = doctor.checkpoint_summary(str(build_tiny("llava_next", tmp_path / "tiny-llava_next")))
    assert summary.startswith("family llava_next; all ")
    assert "an image LLM" in summary and "re-sequence the kept tokens" in summary and "uniform" in summary


def test_doctor_model_with_a_bad_path_fails_with_one_clear_line(tmp_path):
    lines: list[str] = []
    missing = tmp_path / "no-such-checkpoint"
    assert not doctor.run_doctor(echo=lines.append, model=str(missing))
    failed = [line for line in lines if line.startswith("[FAIL]")]
    assert failed == [f"[FAIL] checkpoint {missing}: --model '{missing}': no such folder"]
    assert sum(line.startswith("[skip] answer with") for line in lines) == 2
    assert lines[-1] == f"{missing}: some checks failed (see above)"


def test_doctor_keeps_its_tiny_models_in_a_folder_ready_for_model(tmp_path, monkeypatch):
    """`keep_files=DIR`: the tiny checkpoints land in DIR, and the last lines say how to use one."""
    from mlbcli.testing.tiny import build_tiny

    monkeypatch.setattr(
        doctor, "_tiny_families", lambda: {"llava_onevision": lambda out: build_tiny("llava_onevision", out)}
    )
    lines: list[str] = []
    kept = tmp_path / "mlb-tiny"
    assert doctor.run_doctor(echo=lines.append, keep_files=str(kept))
    model = kept / "tiny-llava_onevision"
    assert (model / "config.json").is_file() and (kept / "clip.mp4").is_file()
    assert f"files kept in {kept}" in lines
    assert f"try: mlb answer examples/manifest.jsonl --model {model}" in lines
    shutil.copytree(EXAMPLES / "clips", tmp_path / "examples" / "clips")
    shutil.copy(EXAMPLES / "manifest.jsonl", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    args = ["answer", "examples/manifest.jsonl", "--model", model, "--frames", "4", "--max-new-tokens", "3"]
    result = run([*args, "--workers", "0"], env=OFFLINE)
    assert result.exit_code == 0, result.output


def test_mlb_doctor_model_option(tiny_onevision, tmp_path):
    ok = run(["doctor", "--model", tiny_onevision], env=OFFLINE)
    assert ok.exit_code == 0, ok.output
    assert "family llava_onevision" in ok.output
    bad = run(["doctor", "--model", tmp_path / "nope"], env=OFFLINE)
    assert bad.exit_code == 1
    assert (
        f"[FAIL] checkpoint {tmp_path / 'nope'}: --model '{tmp_path / 'nope'}': no such folder" in bad.output
    )


def test_readme_offline_path_as_written(tmp_path, monkeypatch):
    """README "Set up", offline: `mlb doctor --keep-files DIR`, then `mlb answer examples/manifest.jsonl
    --model DIR/tiny-llava_onevision`, exactly, with no network."""
    shutil.copytree(EXAMPLES / "clips", tmp_path / "examples" / "clips")
    shutil.copy(EXAMPLES / "manifest.jsonl", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    readme = (EXAMPLES.parent / "README.md").read_text()
    assert "mlb doctor --keep-files DIR" in readme
    assert "mlb answer examples/manifest.jsonl --model DIR/tiny-llava_onevision" in readme
    doctor_run = run(["doctor", "--keep-files", "DIR"], env=OFFLINE)
    assert doctor_run.exit_code == 0, doctor_run.output
    answer = run(["answer", "examples/manifest.jsonl", "--model", "DIR/tiny-llava_onevision"], env=OFFLINE)
    assert answer.exit_code == 0, answer.output
    assert Path("answer.parquet").is_file()
