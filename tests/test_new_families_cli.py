"""`mlb compress` and `mlb summarize` on the 2026 families' tiny checkpoints (real repository layouts):
Gemma 4 (sliding-window and KV-shared layers) and Qwen3.5 (hybrid linear attention). `mlb answer` is
covered in tests/test_gemma4_runs.py and tests/test_qwen3_5.py; `mlb sample` reads no model."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlbcli.cli.app import app
from mlbcli.io.writers import read_results

FAMILIES = ["gemma4", "qwen3_5"]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from mlbcli.testing.tiny import build_tiny

    return {name: str(build_tiny(name, tmp_path_factory.mktemp(f"{name}-tiny"))) for name in FAMILIES}


def _run(args: list[object]) -> list[dict]:
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = Path(str(args[args.index("--out") + 1]))
    return read_results(out).to_pylist()


@pytest.mark.parametrize("family", FAMILIES)
def test_compress_then_answer_from_saved_tokens(model_dirs, clips_dir, tmp_path, family):
    """compress saves a reduction; answering from it gives the answer of a direct run."""
    common = ["--model", model_dirs[family], "--workers", "0", "--frames", "4", "-q"]
    tokens = tmp_path / "tokens"
    (row,) = _run(
        ["compress", clips_dir / "a.mp4", "--method", "uniform", "--keep", "0.5", "--save-tokens", tokens]
        + ["--out", tmp_path / "stats.parquet", *common]
    )
    assert row["error"] is None and row["visual_tokens_kept"] < row["visual_tokens_in"]
    assert Path(row["tokens_file"]).is_file()
    ask = ["--question", "What is happening?", "--max-new-tokens", "3", *common]
    (direct,) = _run(
        [
            "answer",
            clips_dir / "a.mp4",
            "--method",
            "uniform",
            "--keep",
            "0.5",
            "--out",
            tmp_path / "d.parquet",
        ]
        + ask
    )
    (reused,) = _run(
        ["answer", clips_dir / "a.mp4", "--tokens", tokens, "--out", tmp_path / "r.parquet", *ask]
    )
    assert direct["error"] is None and reused["error"] is None
    assert reused["answer"] == direct["answer"]
    assert reused["visual_tokens_kept"] == direct["visual_tokens_kept"]


@pytest.mark.parametrize("family", FAMILIES)
def test_summarize(model_dirs, clips_dir, tmp_path, family):
    rows = _run(
        ["summarize", clips_dir / "a.mp4", clips_dir / "b.mp4", "--model", model_dirs[family]]
        + ["--method", "fastv", "--keep", "0.5", "--frames", "4", "--max-new-tokens", "4", "--workers", "0"]
        + ["--out", tmp_path / "s.parquet", "-q"]
    )
    assert len(rows) == 2 and all(r["summary"] for r in rows)
    assert all(r["visual_tokens_kept"] < r["visual_tokens_in"] for r in rows)
