"""What people see: failures named in cron mode, answers on the terminal, `mlb show`, the loading line,
device/dtype/method errors, `mlb methods`, help layout (issue 13, findings U2 U4 U11 F1 F2 F8 F9 F10)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlbcli.cli.app import app
from mlbcli.io.writers import read_results

FAST = ["--workers", "0", "--frames", "4", "--max-new-tokens", "3"]


def run(args: list, input: str | None = None, env: dict | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], input=input, env=env, catch_exceptions=False)


def run_in_subprocess(code: str) -> str:
    """Run `code` in a fresh interpreter (so that sys.modules shows what a command imported)."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={**os.environ}
    ).stdout


@pytest.fixture()
def broken_folder(clips_dir: Path, tmp_path: Path) -> Path:
    """Two good clips and one broken (empty) one."""
    folder = tmp_path / "cams"
    folder.mkdir()
    shutil.copy(clips_dir / "a.mp4", folder / "a.mp4")
    shutil.copy(clips_dir / "b.mp4", folder / "b.mp4")
    (folder / "broken.mp4").write_bytes(b"")
    return folder


# -- 1. cron: failures are named, with and without -q (U2), each path once (F10) ------------------------


@pytest.mark.parametrize("quiet", [True, False])
def test_cron_run_names_each_failed_item_on_stderr(tiny_model_dir, broken_folder, tmp_path, quiet):
    out = tmp_path / "summaries.parquet"
    args = ["summarize", broken_folder, "--model", tiny_model_dir, "--out", out, *FAST]
    result = run([*args, "-q"] if quiet else args)
    assert result.exit_code == 1
    assert result.stdout == ""  # everything on stderr: stdout stays for --out -
    broken = broken_folder / "broken.mp4"
    errors = [line for line in result.stderr.splitlines() if "broken.mp4" in line]
    assert len(errors) == 1, result.stderr
    # id, path and reason on one line, the path said once (F10)
    assert "error: broken.mp4 (" in errors[0] and "empty file (0 bytes)" in errors[0]
    assert errors[0].count(str(broken)) == 1
    assert "summarize finished: items 3, ok 2, failed 1" in result.stderr.splitlines()[-1]
    if quiet:  # nothing but the failure and the summary
        assert len(result.stderr.splitlines()) == 2, result.stderr


def test_rich_reporter_names_every_failure(tmp_path):
    from rich.console import Console

    from mlbcli.api import RunSummary
    from mlbcli.runners.progress import RichReporter

    for quiet in (False, True):
        reporter = RichReporter(quiet=quiet)
        reporter.console = Console(file=io.StringIO(), width=200)
        summary = RunSummary("answer", total=7, out=str(tmp_path / "x.parquet"))
        reporter.start("answer", total=7, skipped=0)
        for i in range(7):  # more failures than the old table listed (5)
            row = {"video_id": f"v{i}.mp4", "video_path": f"/d/v{i}.mp4", "error": f"/d/v{i}.mp4: broken {i}"}
            summary.record(row)
            reporter.advance(row)
        reporter.finish(summary)
        text = reporter.console.file.getvalue()
        for i in range(7):
            assert f"v{i}.mp4 (/d/v{i}.mp4): broken {i}" in text, (quiet, text)
        assert "failed 7" in text.replace("│", " ").replace("  ", " ") or "7 failed" in text


# -- 2. answers on the terminal (F1) and `mlb show` ---------------------------------------------------------


def test_short_run_on_a_terminal_shows_its_answers(tiny_model_dir, broken_folder, tmp_path, monkeypatch):
    import mlbcli.cli.common

    monkeypatch.setattr(mlbcli.cli.common, "stdout_is_terminal", lambda: True)
    out = tmp_path / "answers.parquet"
    base = ["answer", broken_folder, "--question", "What is in view?", "--model", tiny_model_dir, *FAST]
    result = run([*base, "--out", out])
    assert result.exit_code == 1
    table = result.stdout
    assert "video_id" in table and "answer" in table and "What is in view?" in table
    assert "a.mp4" in table and "b.mp4" in table and "broken.mp4" not in table  # failures: on stderr
    # not in quiet mode, and never mixed into JSON lines on stdout
    assert run([*base, "--out", tmp_path / "q.parquet", "-q"]).stdout == ""
    piped = run([*base, "--out", "-"]).stdout.splitlines()
    assert piped and all(line.startswith("{") for line in piped)


def test_no_answers_table_when_stdout_is_not_a_terminal(tiny_model_dir, clips_dir, tmp_path):
    args = ["answer", clips_dir / "a.mp4", "--question", "q", "--model", tiny_model_dir, *FAST]
    assert run([*args, "--out", tmp_path / "a.parquet"]).stdout == ""


@pytest.fixture(scope="module")
def answers_file(tiny_model_dir, clips_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("show")
    shutil.copy(clips_dir / "a.mp4", folder / "a.mp4")
    shutil.copy(clips_dir / "b.mp4", folder / "b.mp4")
    (folder / "broken.mp4").write_bytes(b"")
    out = folder / "answers.parquet"
    args = ["answer", folder, "--question", "What is in view?", "--model", tiny_model_dir, "--out", out]
    assert run([*args, *FAST, "-q"]).exit_code == 1
    return out


def test_show_prints_a_results_file_without_torch(answers_file):
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom mlbcli.cli.app import app\n"
        f"r = CliRunner().invoke(app, ['show', {str(answers_file)!r}], env={{'COLUMNS': '160'}})\n"
        "assert r.exit_code == 0, r.output\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\nprint(r.stdout)"
    )
    text = run_in_subprocess(code)
    assert "answers.parquet: 3 answer results" in text
    for word in ("video_id", "question", "answer", "What is in view?", "a.mp4", "b.mp4", "broken.mp4"):
        assert word in text
    assert "empty file (0 bytes)" in text and str(answers_file.parent / "broken.mp4") not in text


def test_show_columns_limit_json_and_failed(answers_file):
    rows = read_results(answers_file).to_pylist()
    result = run(["show", answers_file, "--json", "--columns", "video_id,answer"])
    assert result.exit_code == 0
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines == [{"video_id": r["video_id"], "answer": r["answer"]} for r in rows]
    assert len(run(["show", answers_file, "--json", "--limit", "1"]).stdout.splitlines()) == 1
    failed = [
        json.loads(line) for line in run(["show", answers_file, "--json", "--failed"]).stdout.splitlines()
    ]
    assert [r["video_id"] for r in failed] == ["broken.mp4"] and failed[0]["error"]
    limited = run(["show", answers_file, "--limit", "1"], env={"COLUMNS": "160"}).stdout
    assert "2 more (--limit 0 for all)" in limited
    typo = run(["show", answers_file, "--columns", "video_id,anwser"])
    assert typo.exit_code == 2 and "did you mean 'answer'" in typo.stderr
    missing = run(["show", answers_file.parent / "nope.parquet"])
    assert missing.exit_code == 2 and missing.stderr.startswith("mlb: error:")


# -- 3. the loading line (F2) --------------------------------------------------------------------------------


def test_loading_line_names_model_family_device_and_dtype(tiny_model_dir, clips_dir, tmp_path):
    args = ["answer", clips_dir / "a.mp4", "--question", "q", "--model", tiny_model_dir, *FAST]
    lines = run([*args, "--out", tmp_path / "a.parquet"]).stderr.splitlines()
    loading = [i for i, line in enumerate(lines) if "loading model" in line]
    assert loading, lines
    assert f"loading model {tiny_model_dir} (llava_onevision) on cpu/float32" in lines[loading[0]]
    started = [i for i, line in enumerate(lines) if "items to process" in line]
    assert loading[0] < started[0]  # shown while the model loads, before progress starts


# -- 4. device and dtype (U4) --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "gpu"], "unknown --device 'gpu'"),
        (["--device", "cuda:x"], "unknown --device 'cuda:x'"),
        (["--device", "tpu"], "unknown --device 'tpu'"),
        (["--dtype", "float8"], "unknown --dtype 'float8'"),
        (["--dtype", "nonsense", "--device", "cpu"], "unknown --dtype 'nonsense'"),
    ],
)
def test_bad_device_or_dtype_is_one_line_before_the_model_loads(tiny_model_dir, clips_dir, args, message):
    result = run(["answer", clips_dir / "a.mp4", "--question", "q", "--model", tiny_model_dir, *FAST, *args])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [result.stderr.strip()]  # one line
    assert result.stderr.startswith("mlb: error: ") and message in result.stderr
    assert "loading model" not in result.output


def test_cuda_without_cuda_is_a_usage_error(tiny_model_dir, clips_dir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    result = run(
        [
            "answer",
            clips_dir / "a.mp4",
            "--question",
            "q",
            "--model",
            tiny_model_dir,
            "--device",
            "cuda",
            *FAST,
        ]
    )
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("mlb: error: --device cuda:") and "--device cpu" in result.stderr


# -- 5. method names: case-insensitive, did-you-mean, the same in the library and the CLI (F9) -------------


def test_method_names_case_insensitive_with_did_you_mean():
    from mlbcli.errors import UsageError
    from mlbcli.selection import MethodOptions, get_method

    assert get_method("FastV", MethodOptions(keep=0.5)).name == "fastv"
    assert get_method(" ADATP ").name == "adatp"
    with pytest.raises(UsageError, match="did you mean 'fastv'"):
        get_method("fastvv")
    with pytest.raises(UsageError, match="available: none, uniform, random, fastv, "):
        get_method("zzz")


def test_cli_method_typo_and_case(tiny_model_dir, clips_dir, tmp_path):
    base = [
        "answer",
        clips_dir / "a.mp4",
        "--question",
        "q",
        "--model",
        tiny_model_dir,
        *FAST,
        "--keep",
        "0.5",
    ]
    typo = run([*base, "--method", "fastvv"])
    assert (
        typo.exit_code == 2 and "did you mean 'fastv'?" in typo.stderr and "loading model" not in typo.output
    )
    out = tmp_path / "f.parquet"
    assert run([*base, "--method", "FastV", "--out", out, "-q"]).exit_code == 0
    row = read_results(out).to_pylist()[0]
    assert row["method"] == "fastv" and json.loads(row["options_json"])["method"] == "fastv"
    flops = run(["flops", "--model", tiny_model_dir, "--method", "UNIFORM", "--keep", "0.5"])
    assert flops.exit_code == 0 and "uniform" in flops.stdout
    assert "did you mean 'adatp'" in run(["flops", "--model", tiny_model_dir, "--method", "adtp"]).stderr


# -- 6. `mlb methods`: fast, with hyperparameters and defaults (F8) ----------------------------------------


def test_methods_lists_hyperparameters_without_torch():
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom mlbcli.cli.app import app\n"
        "r = CliRunner().invoke(app, ['methods'])\nassert r.exit_code == 0, r.output\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\nprint(r.stdout)"
    )
    text = run_in_subprocess(code)
    from mlbcli.selection import describe_methods
    from mlbcli.selection.params import default_text, parameter_declarations
    from mlbcli.selection.registry import describe_debiasers

    for name in (*(row.name for row in describe_methods()), *(row[0] for row in describe_debiasers())):
        assert f"\n{name} " in text
    for hp in parameter_declarations().values():  # every hyperparameter, with its default
        assert f"--{hp.name.replace('_', '-')} {default_text(hp)} " in text
    assert "--dedup-threshold 0.9 " in text and "--merge-ratio derived " in text


def test_method_rows_are_the_classes():
    """`mlb methods` and the README table read the classes themselves: nothing to drift."""
    from mlbcli.selection import METHODS, available_methods, describe_methods

    rows = describe_methods()
    assert available_methods() == {row.name: row.description for row in rows}
    for row in rows:
        cls = METHODS[row.name]
        assert tuple(getattr(cls, "default_debias", ())) == row.default_debias, row.name
        assert cls.prune_point == row.prune_point, row.name
        assert ("debias" in cls.options_used) == row.takes_debias, row.name


def test_method_completion_offers_names():
    # "fa" completes to fastv and fastvid
    env = {"_MLB_COMPLETE": "complete_bash", "COMP_WORDS": "mlb answer --method fa", "COMP_CWORD": "3"}
    result = CliRunner().invoke(app, [], env=env, prog_name="mlb")
    assert result.stdout.split() == ["fastv", "fastvid"]


# -- 7. help: panels, readable metavars, examples that fit 80 columns (F9) --------------------------------


def test_answer_help_groups_options_with_readable_metavars():
    text = run(["answer", "--help"], env={"COLUMNS": "100", "TERMINAL_WIDTH": "100"}).stdout
    for panel in ("Input", "Model", "Pruning", "Method hyperparameters", "Output", "Run"):
        assert f"─ {panel}" in text, panel
    for odd in ("<list[str]>", "<str>", "{sources}", "<int>", "<float>", "<bool>"):
        assert odd not in text, odd
    flat = " ".join(text.replace("│", " ").split())  # (cells wrap at any width)
    assert "SOURCE..." in flat and "[default: answer.parquet]" in flat
    assert "[global, adatp] a new segment starts" in flat  # brackets survive rich markup...
    assert "[default: 0.9]" in flat  # ...as do hyperparameter defaults


def test_top_level_examples_do_not_wrap_at_80_columns():
    result = run(["--help"], env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"})
    shown = [line.strip() for line in result.stdout.splitlines()]
    commands = [
        line.strip()
        for line in (app.info.help or "").splitlines()
        if line.strip().startswith(("mlb ", "find "))
    ]
    assert len(commands) >= 5
    for command in commands:
        assert command in shown, command


# -- 8. small messages: U11, warnings (F10), the lock ----------------------------------------------------------


def test_sample_summary_has_no_mean_keep(clips_dir, tmp_path):
    result = run(["sample", clips_dir, "--frames", "3", "--workers", "0", "--out", tmp_path / "s.parquet"])
    assert result.exit_code == 0
    last = result.stderr.strip().splitlines()[-1]
    assert "sample finished: items 3, ok 3" in last and "mean keep" not in last


def test_warnings_use_the_mlb_prefix(tiny_model_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "mlbcli", "summarize", str(empty), "--model", str(tiny_model_dir), "-q"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ},
    )
    assert proc.returncode == 0
    assert f"mlb: warning: {empty}: no video files found" in proc.stderr
    assert "WARNING" not in proc.stderr


def test_locked_output_says_what_to_do(tiny_model_dir, clips_dir, tmp_path):
    from mlbcli.io import schema
    from mlbcli.io.writers import ResultWriter

    out = tmp_path / "locked.parquet"
    with ResultWriter(out, schema=schema.SUMMARIZE, kind="summarize", skip_key=("video_id",)):
        result = run(["summarize", clips_dir, "--model", tiny_model_dir, "--out", out, *FAST])
    assert result.exit_code == 1
    assert result.stderr.startswith("mlb: error: another mlb run is writing")
    assert "wait for it to finish" in result.stderr and "another --out" in result.stderr


# -- mlb show on a narrow terminal: nothing cropped (issue 22) ------------------------------------------------
LONG_ANSWER = "The person walks a brown dog along the beach at sunset while waves crash behind them END{}"


@pytest.fixture()
def long_answers(tmp_path: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mlbcli.io import schema

    rows = [
        {
            "video_id": f"clip_{i}",
            "question_id": f"q{i}",
            "question": "What is the person doing in this rather long clip?",
            "answer": LONG_ANSWER.format(i),
            "keep_realized": 0.25,
            "flops_ratio": 0.3,
            "method": "fastv",
        }
        for i in range(2)
    ]
    path = tmp_path / "long.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=schema.ANSWER), path)
    return path


def _flat(text: str) -> str:
    """The output without box drawing and whitespace: a wrapped cell reads as one run of characters."""
    return "".join(c for c in text if not c.isspace() and not 0x2500 <= ord(c) <= 0x257F)


@pytest.mark.parametrize(
    "columns", ["video_id,answer", "video_id,answer,question,keep_realized,method,flops_ratio"]
)
def test_show_on_a_narrow_terminal_prints_the_full_text_of_a_chosen_column(long_answers, columns):
    """Before: at COLUMNS=50 the table ran past the terminal and was cropped (columns and text lost)."""
    result = run(["show", long_answers, "--columns", columns], env={"COLUMNS": "50"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert all(len(line) <= 50 for line in lines), "\n".join(lines)
    for i in range(2):
        assert _flat(LONG_ANSWER.format(i)) in _flat(result.stdout)
    for name in columns.split(","):
        assert name in result.stdout
