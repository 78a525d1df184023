"""End-to-end tests of the `mlb` command line on a tiny random checkpoint and generated clips."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mlbcli.cli.app import app
from mlbcli.io.kept_tokens import decode_kept
from mlbcli.io.writers import read_results

FAST = ["--workers", "0", "--frames", "6", "--max-new-tokens", "4", "-q"]

# config.json of LLaVA-OneVision-7B (SigLIP-384 + Qwen2-7B): enough for `mlb flops`, no weights.
OV_7B_CONFIG = {
    "model_type": "llava_onevision",
    "vision_config": {"model_type": "siglip_vision_model", "image_size": 384, "patch_size": 14},
    "text_config": {
        "model_type": "qwen2",
        "num_hidden_layers": 28,
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
    },
}


def run(args: list[str], input: str | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], input=input, catch_exceptions=False)


@pytest.fixture()
def clips(clips_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the shared clips (tests may add, change or break files)."""
    return Path(shutil.copytree(clips_dir, tmp_path / "clips"))


def rows(path: Path) -> list[dict]:
    return read_results(path).to_pylist()


def test_help_lists_commands_and_examples_without_torch():
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom mlbcli.cli.app import app\n"
        "r = CliRunner().invoke(app, ['--help'])\nassert r.exit_code == 0, r.output\n"
        "r2 = CliRunner().invoke(app, ['answer', '--help'])\nassert r2.exit_code == 0, r2.output\n"
        "heavy = {'torch', 'transformers', 'ray'} & set(sys.modules)\nassert not heavy, heavy\nprint(r.output)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for word in ("answer", "compress", "summarize", "sample", "doctor", "flops", "Examples"):
        assert word in out
    for command in ("answer", "compress", "summarize", "sample"):
        assert "Example" in run([command, "--help"]).output


def test_answer_folder_writes_one_row_per_video(tiny_model_dir, clips, tmp_path):
    out = tmp_path / "answers.parquet"
    result = run(
        [
            "answer",
            clips,
            "--question",
            "What is happening?",
            "--model",
            tiny_model_dir,
            "--method",
            "uniform",
            "--keep",
            "0.25",
            "--out",
            out,
            *FAST,
        ]
    )
    assert result.exit_code == 0, result.output
    table = rows(out)
    assert sorted(r["video_id"] for r in table) == ["a.mp4", "b.mp4", "sub/c.mp4"]
    for row in table:
        assert row["error"] is None and isinstance(row["answer"], str)
        assert row["visual_tokens_in"] == 6 * 16 and row["visual_tokens_kept"] == 24
        assert row["keep_realized"] == pytest.approx(0.25) and row["flops_ratio"] < 0.3
        assert len(row["kept_per_frame"]) == 6 and sum(row["kept_per_frame"]) == 24
        assert row["frames"] == 6 and len(row["frame_timestamps_s"]) == 6
        assert row["choice"] is None and row["correct"] is None
        assert row["mlb_version"] and json.loads(row["options_json"])["keep"] == 0.25
    metadata = pq.read_schema(out).metadata
    assert metadata[b"mlb.schema_version"] == b"1" and metadata[b"mlb.kind"] == b"answer"


def test_uniform_keep_one_equals_none_from_the_cli(tiny_model_dir, clips, tmp_path):
    answers = {}
    for method in ("none", "uniform"):
        out = tmp_path / f"{method}.parquet"
        assert (
            run(
                [
                    "answer",
                    clips / "a.mp4",
                    "--question",
                    "What is happening?",
                    "--model",
                    tiny_model_dir,
                    "--method",
                    method,
                    *(["--keep", "1.0"] if method != "none" else []),  # none takes no --keep
                    "--out",
                    out,
                    *FAST,
                ]
            ).exit_code
            == 0
        )
        answers[method] = rows(out)[0]["answer"]
    assert answers["none"] == answers["uniform"]


def test_stdin_paths_and_json_lines_on_stdout(tiny_model_dir, clips):
    paths = f"{clips / 'a.mp4'}\n\n{clips / 'b.mp4'}\n"
    result = run(
        ["answer", "-", "--question", "Describe it.", "--model", tiny_model_dir, "--out", "-", *FAST],
        input=paths,
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [Path(line["video_path"]).name for line in lines] == ["a.mp4", "b.mp4"]


def test_manifest_multiple_choice_accuracy_and_per_row_questions(tiny_model_dir, clips, tmp_path):
    manifest = clips / "bench.jsonl"
    manifest.write_text(
        json.dumps({"video": "a.mp4", "question": "Colour?", "options": ["red", "blue"], "answer": "A"})
        + "\n"
        + json.dumps({"video": "a.mp4", "question": "Shape?", "options": ["disc", "cube"], "answer": "disc"})
        + "\n"
        + json.dumps({"video": "sub/c.mp4", "question": "Open question?"})
        + "\n"
    )
    out = tmp_path / "mc.parquet"
    result = run(["answer", manifest, "--model", tiny_model_dir, "--out", out, *FAST[:-1]])
    assert result.exit_code == 0, result.output
    table = rows(out)
    assert len(table) == 3 and len({r["question_id"] for r in table}) == 3
    graded = [r for r in table if r["options"]]
    assert all(isinstance(r["correct"], bool) for r in graded)
    assert table[2]["correct"] is None
    assert "accuracy" in result.output  # the final summary shows it


def test_csv_and_parquet_manifests(tiny_model_dir, clips, tmp_path):
    csv = clips / "m.csv"
    csv.write_text('video,question,options,answer\nb.mp4,Which?,"[""x"", ""y""]",B\n')
    import pyarrow as pa

    pq.write_table(pa.table({"video": ["sub/c.mp4"], "question": ["What?"]}), clips / "m.parquet")
    out = tmp_path / "both.jsonl"
    assert (
        run(["answer", csv, clips / "m.parquet", "--model", tiny_model_dir, "--out", out, *FAST]).exit_code
        == 0
    )
    table = rows(out)
    assert [r["video_id"] for r in table] == ["b.mp4", "sub/c.mp4"]
    assert table[0]["options"] == ["x", "y"] and table[0]["ground_truth"] == "B"


def test_missing_question_is_a_usage_error(tiny_model_dir, clips, tmp_path):
    result = run(["answer", clips, "--model", tiny_model_dir, "--out", tmp_path / "x.parquet", *FAST])
    assert result.exit_code == 2
    assert "--question" in result.output
    assert not (tmp_path / "x.parquet").exists()


@pytest.mark.parametrize("bad_keep", ["0", "1.5", "-0.1"])
def test_bad_keep_is_a_usage_error(tiny_model_dir, clips, bad_keep):
    result = run(["answer", clips, "--question", "q", "--model", tiny_model_dir, "--keep", bad_keep, *FAST])
    assert result.exit_code == 2 and "--keep" in result.output


def test_bad_inputs_become_error_rows_and_the_batch_completes(tiny_model_dir, clips, tmp_path):
    (clips / "empty.mp4").write_bytes(b"")
    (clips / "notes.mp4").write_text("this is not a video\n" * 50)
    good = (clips / "a.mp4").read_bytes()
    (clips / "truncated.mp4").write_bytes(good[: len(good) // 3])
    manifest = clips / "m.jsonl"
    manifest.write_text(
        json.dumps({"video": "a.mp4"})
        + "\n"
        + "{not json\n"
        + json.dumps({"video": "missing.mp4"})
        + "\n"
        + json.dumps({"video": "empty.mp4"})
        + "\n"
        + json.dumps({"video": "notes.mp4"})
        + "\n"
        + json.dumps({"video": "truncated.mp4"})
        + "\n"
        + json.dumps({"video": "sub/c.mp4"})
        + "\n"
    )
    out = tmp_path / "bad.parquet"
    result = run(["answer", manifest, "--question", "What?", "--model", tiny_model_dir, "--out", out, *FAST])
    assert result.exit_code == 1
    table = {r["video_id"]: r for r in rows(out)}
    assert len(table) == 7
    assert table["a.mp4"]["error"] is None and table["sub/c.mp4"]["error"] is None
    for name in ("missing.mp4", "empty.mp4", "notes.mp4"):
        assert table[name]["error"], name
    broken = [r for key, r in table.items() if key.endswith(":2")]
    assert len(broken) == 1 and broken[0]["error"]
    # A truncated file either decodes the frames that survive or fails with a clear message.
    assert (
        table["truncated.mp4"]["error"] is None
        or "truncated.mp4" in table["truncated.mp4"]["error"]
        or table["truncated.mp4"]["error"]
    )


def test_fail_fast_stops_at_the_first_error(tiny_model_dir, clips, tmp_path):
    (clips / "empty.mp4").write_bytes(b"")
    manifest = clips / "m.jsonl"
    manifest.write_text(json.dumps({"video": "empty.mp4"}) + "\n" + json.dumps({"video": "a.mp4"}) + "\n")
    out = tmp_path / "ff.parquet"
    result = run(
        ["answer", manifest, "--question", "q", "--model", tiny_model_dir, "--out", out, "--fail-fast", *FAST]
    )
    assert result.exit_code == 1
    assert [r["video_id"] for r in rows(out)] == ["empty.mp4"]


def test_resume_finishes_missing_rows_and_retries_failures(tiny_model_dir, clips, tmp_path):
    manifest = clips / "m.jsonl"
    manifest.write_text(json.dumps({"video": "a.mp4"}) + "\n" + json.dumps({"video": "late.mp4"}) + "\n")
    out = tmp_path / "resume.parquet"
    args = ["answer", manifest, "--question", "q", "--model", tiny_model_dir, "--out", out, *FAST]
    assert run(args).exit_code == 1  # late.mp4 does not exist yet
    first = {r["video_id"]: r for r in rows(out)}
    assert first["late.mp4"]["error"]
    shutil.copy(clips / "b.mp4", clips / "late.mp4")
    assert run(args).exit_code == 0
    second = rows(out)
    assert sorted(r["video_id"] for r in second) == ["a.mp4", "late.mp4"]  # no duplicates
    by_id = {r["video_id"]: r for r in second}
    assert by_id["late.mp4"]["error"] is None
    assert by_id["a.mp4"]["started_at_utc"] == first["a.mp4"]["started_at_utc"]  # not redone
    assert run([*args, "--no-resume"]).exit_code == 2  # refuses to clobber without --overwrite
    assert run([*args, "--overwrite"]).exit_code == 0 and len(rows(out)) == 2


def test_summarize_only_new_or_changed_videos(tiny_model_dir, clips, tmp_path):
    out = tmp_path / "summaries.parquet"
    args = ["summarize", clips, "--model", tiny_model_dir, "--out", out, *FAST]
    assert run(args).exit_code == 0
    first = {r["video_id"]: r for r in rows(out)}
    assert len(first) == 3 and all(r["summary"] is not None for r in first.values())
    shutil.copy(clips / "a.mp4", clips / "new.mp4")
    shutil.copy(clips / "sub" / "c.mp4", clips / "b.mp4")  # b.mp4 changes content (size and mtime)
    result = run(args)
    assert result.exit_code == 0
    second = {r["video_id"]: r for r in rows(out)}
    assert sorted(second) == ["a.mp4", "b.mp4", "new.mp4", "sub/c.mp4"]
    assert second["a.mp4"]["started_at_utc"] == first["a.mp4"]["started_at_utc"]
    assert second["b.mp4"]["fingerprint"] != first["b.mp4"]["fingerprint"]


def test_concurrent_run_on_the_same_output_is_refused(tiny_model_dir, clips, tmp_path):
    from mlbcli.io import schema
    from mlbcli.io.writers import ResultWriter

    out = tmp_path / "locked.parquet"
    with ResultWriter(out, schema=schema.SUMMARIZE, kind="summarize", skip_key=("video_id",)):
        result = run(["summarize", clips, "--model", tiny_model_dir, "--out", out, *FAST])
    assert result.exit_code == 1
    assert "another mlb run" in result.output


def test_sample_rows_and_contact_sheets(clips, tmp_path):
    out = tmp_path / "sample.parquet"
    sheets = tmp_path / "sheets"
    result = run(
        ["sample", clips, "--frames", "5", "--contact-sheet", sheets, "--out", out, "--workers", "0", "-q"]
    )
    assert result.exit_code == 0, result.output
    table = {r["video_id"]: r for r in rows(out)}
    assert table["a.mp4"]["num_frames_total"] == 24 and table["b.mp4"]["num_frames_total"] == 16
    for row in table.values():
        assert len(row["frame_indices"]) == 5 and row["frame_indices"] == sorted(row["frame_indices"])
        assert row["timestamps_s"] == sorted(row["timestamps_s"]) and row["width"] == 160
        assert Path(row["contact_sheet"]).is_file()
    assert len(list(sheets.iterdir())) == 3


def test_sample_with_background_workers_and_fps(clips, tmp_path):
    out = tmp_path / "fps.csv"
    result = run(["sample", clips / "a.mp4", clips / "b.mp4", "--fps", "2", "--out", out, "-q"])
    assert result.exit_code == 0, result.output
    table = rows(out)
    assert [len(r["frame_indices"]) for r in table] == [6, 4]  # 24 and 16 frames at 8 fps -> 2 fps


def test_compress_saves_tokens_that_answer_reuses(tiny_model_dir, clips, tmp_path):
    tokens = tmp_path / "tokens"
    stats = tmp_path / "stats.parquet"
    common = ["--model", tiny_model_dir, "--workers", "0", "--frames", "6", "-q"]
    result = run(
        [
            "compress",
            clips / "a.mp4",
            "--method",
            "uniform",
            "--keep",
            "0.5",
            "--save-tokens",
            tokens,
            "--out",
            stats,
            *common,
        ]
    )
    assert result.exit_code == 0, result.output
    row = rows(stats)[0]
    assert (
        row["visual_tokens_kept"] == 48 and row["keep_realized"] == 0.5 and Path(row["tokens_file"]).is_file()
    )
    direct, reused = tmp_path / "direct.parquet", tmp_path / "reused.parquet"
    assert (
        run(
            [
                "answer",
                clips / "a.mp4",
                "--question",
                "q",
                "--method",
                "uniform",
                "--keep",
                "0.5",
                "--out",
                direct,
                "--max-new-tokens",
                "6",
                *common,
            ]
        ).exit_code
        == 0
    )
    assert (
        run(
            [
                "answer",
                clips / "a.mp4",
                "--question",
                "q",
                "--tokens",
                tokens,
                "--out",
                reused,
                "--max-new-tokens",
                "6",
                *common,
            ]
        ).exit_code
        == 0
    )
    a, b = rows(direct)[0], rows(reused)[0]
    assert a["answer"] == b["answer"] and a["visual_tokens_kept"] == b["visual_tokens_kept"]
    assert b["encode_s"] == 0.0 and b["method"] == "stored:uniform"


def test_unreachable_model_fails_fast_naming_the_fix(clips, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = run(["answer", clips, "--question", "q", "--model", "nobody/not-a-cached-model", *FAST])
    assert result.exit_code == 2
    assert "--model PATH" in result.output and "MLB_MODEL" in result.output
    assert not Path("answer.parquet").exists()  # nothing half-done is left behind
    assert "items to process" not in result.output  # failed before any progress was shown


def test_model_from_environment(tiny_model_dir, clips, tmp_path, monkeypatch):
    monkeypatch.setenv("MLB_MODEL", str(tiny_model_dir))
    out = tmp_path / "env.parquet"
    assert run(["answer", clips / "a.mp4", "--question", "q", "--out", out, *FAST]).exit_code == 0
    assert rows(out)[0]["model"] == str(tiny_model_dir)


def test_flops_reproduces_the_fastvid_table(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(OV_7B_CONFIG))
    vanilla = run(["flops", "--model", tmp_path, "--frames", "32"]).output
    assert "6272 visual tokens" in vanilla and "48.82 TFLOPs" in vanilla
    pruned = run(
        ["flops", "--model", tmp_path, "--frames", "32", "--method", "uniform", "--keep", "0.25"]
    ).output
    assert "10.73 TFLOPs" in pruned


def test_doctor_passes_offline():
    result = run(["doctor"])
    assert result.exit_code == 0, result.output
    assert "all checks passed" in result.output


def test_completion_scripts_are_current():
    from mlbcli.cli.completions import FILES, render

    root = Path(__file__).resolve().parents[1] / "completions"
    for shell, name in FILES.items():
        assert (root / name).read_text() == render(shell), f"run `make completions` ({name} is stale)"


def test_python_dash_m_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "mlbcli", "--version"],
        capture_output=True,
        text=True,
        env={**os.environ},
        check=True,
    ).stdout
    assert out.startswith("mlb ")


def test_each_video_is_encoded_once_for_all_its_questions(tiny_model_dir, clips, tmp_path, monkeypatch):
    from mlbcli.engine.pipeline import Pipeline

    calls = []
    original = Pipeline.encode_many
    monkeypatch.setattr(
        Pipeline, "encode_many", lambda self, videos: calls.extend(videos) or original(self, videos)
    )
    manifest = clips / "m.jsonl"
    questions = [
        ("a.mp4", "One?"),
        ("b.mp4", "Two?"),
        ("a.mp4", "Three?"),
        ("b.mp4", "Four?"),
        ("a.mp4", "Five?"),
    ]
    manifest.write_text("".join(json.dumps({"video": v, "question": q}) + "\n" for v, q in questions))
    out = tmp_path / "once.parquet"
    assert run(["answer", manifest, "--model", tiny_model_dir, "--out", out, *FAST]).exit_code == 0
    assert len(calls) == 2
    assert len(rows(out)) == 5


def test_family_specific_option_on_the_wrong_family_is_a_usage_error(tiny_model_dir, clips):
    result = run(
        [
            "answer",
            clips / "a.mp4",
            "--question",
            "q",
            "--model",
            tiny_model_dir,
            "--max-pixels",
            "50000",
            *FAST,
        ]
    )
    assert result.exit_code == 2 and "--max-pixels does not apply to llava_onevision" in result.output


def test_named_hyperparameter_options_reach_the_method(tiny_model_dir, clips, tmp_path):
    out = tmp_path / "adatp.parquet"
    args = [
        "compress",
        clips / "b.mp4",
        "--model",
        tiny_model_dir,
        "--method",
        "adatp",
        "--keep",
        "0.25",
        "--workers",
        "0",
        "--frames",
        "8",
        "-q",
    ]
    assert run([*args, "--segment-threshold", "0.999", "--out", out]).exit_code == 0
    segments = json.loads(rows(out)[0]["segments"])
    assert any("segments" in step for step in segments.values())
    # A hyperparameter of another method is refused rather than silently ignored.
    wrong = run([*args, "--tail-size", "2", "--out", tmp_path / "x.parquet"])
    assert wrong.exit_code == 2 and "tail_size" in wrong.output


def test_layer_beyond_the_model_is_a_usage_error(tiny_model_dir, clips):
    result = run(
        [
            "answer",
            clips / "a.mp4",
            "--question",
            "q",
            "--model",
            tiny_model_dir,
            "--method",
            "fastv",
            "--keep",
            "0.5",
            "--layer",
            "4",
            *FAST,
        ]
    )
    assert result.exit_code == 2 and "choose 1..3" in result.output


@pytest.mark.parametrize(
    ("method", "debias"),
    [
        ("fastv", None),
        ("adatp", None),
        ("mlb", None),
        ("visionzip", None),
        ("dycoke", None),
        ("fastv", "local"),
        ("fastv", "global,grid"),
        ("adatp", "global,local,tail"),
        ("mlb", "grid"),
        ("mlb", "none"),
    ],
)
def test_every_method_end_to_end(tiny_model_dir, clips, tmp_path, method, debias):
    out = tmp_path / "m.parquet"
    args = [
        "answer",
        clips / "b.mp4",
        "--question",
        "What changes?",
        "--model",
        tiny_model_dir,
        "--method",
        method,
        "--keep",
        "0.25",
        "--out",
        out,
        *FAST,
    ]
    if debias:
        args += ["--debias", debias]
    result = run(args)
    assert result.exit_code == 0, result.output
    row = rows(out)[0]
    assert row["error"] is None and row["method"] == method
    # DyCoke keeps the first frame of every 4-frame window whole: with 6 frames that is 2/6 > 0.25.
    assert (
        0 < row["keep_realized"] <= (1 / 3 + 1e-9 if method == "dycoke" else 0.25)
        and row["flops_ratio"] < 1.0
    )
    # kept_tokens: the surviving original tokens themselves, frame by frame (what `mlb report` draws)
    mask = decode_kept(row["kept_tokens"])  # [frames, grid_h, grid_w]
    assert mask.shape[0] == 6 and mask.size == row["visual_tokens_in"]
    assert mask.sum(axis=(1, 2)).tolist() == row["kept_per_frame"]
    assert mask.sum() == row["visual_tokens_kept"] - row["appended_tokens"]
    if method in ("fastv", "adatp", "mlb"):
        assert row["attention_per_frame"] is not None and len(row["attention_per_frame"]) == 6
        after = row["attention_per_frame_debiased"]  # mass over the kept tokens, after debiasing
        assert after is not None and len(after) == 6 and sum(after) == pytest.approx(1.0, abs=1e-6)
        # a frame with no kept token has no mass after selection
        assert all(a == 0 for a, k in zip(after, row["kept_per_frame"], strict=True) if k == 0)
        assert row["tokens_per_layer"][-1] == row["visual_tokens_kept"]
        if method != "adatp" and "local" not in (debias or ""):  # no deduplication before the LLM
            assert row["tokens_per_layer"][0] >= row["visual_tokens_in"]  # full sequence before layer K=2


def test_bias_report_and_flops_for_attention_methods(tiny_model_dir, clips, tmp_path):
    report = tmp_path / "report"
    out = tmp_path / "c.parquet"
    result = run(
        [
            "compress",
            clips / "b.mp4",
            "--model",
            tiny_model_dir,
            "--method",
            "mlb",
            "--keep",
            "0.25",
            "--bias-report",
            report,
            "--out",
            out,
            "--workers",
            "0",
            "--frames",
            "8",
            "-q",
        ]
    )
    assert result.exit_code == 0, result.output
    pngs = list(report.glob("*.png"))
    assert len(pngs) == 1 and pngs[0].stat().st_size > 1000
    assert len(rows(out)[0]["attention_per_frame"]) == 8


def test_flops_for_attention_methods_from_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(OV_7B_CONFIG))
    fastv = run(
        [
            "flops",
            "--model",
            tmp_path,
            "--frames",
            "32",
            "--method",
            "fastv",
            "--keep",
            "0.25",
            "--layer",
            "2",
        ]
    ).output
    assert "13.45 TFLOPs" in fastv and "1568 from layer 2" in fastv
    assert "7.36 TFLOPs" in run(["flops", "--model", tmp_path, "--method", "fastv", "--keep", "0.1"]).output
    mlb = run(["flops", "--model", tmp_path, "--method", "mlb", "--keep", "0.25"]).output
    assert "6304 from layer 0" in mlb and "1568 from layer 2" in mlb  # 32 tail tokens before the cut


def test_readme_main_job_on_the_examples_with_a_tiny_checkpoint(tiny_model_dir, tmp_path):
    """`make demo` runs `mlb answer examples/manifest.jsonl --model M --out ...`: the same, on a tiny model."""
    examples = Path(__file__).resolve().parents[1] / "examples"
    out = tmp_path / "examples-answers.parquet"
    result = run(
        [
            "answer",
            examples / "manifest.jsonl",
            "--model",
            tiny_model_dir,
            "--out",
            out,
            "--frames",
            "8",
            "--max-new-tokens",
            "4",
        ]
    )
    assert result.exit_code == 0, result.output
    table = rows(out)
    assert len(table) == 5 and all(r["error"] is None for r in table)
    assert sum(r["correct"] is not None for r in table) == 4  # four rows have ground truth
    assert "accuracy" in result.output


def test_shards_partition_the_videos(clips, tmp_path):
    seen = []
    for index in range(3):
        out = tmp_path / f"shard{index}.parquet"
        result = run(
            [
                "sample",
                clips,
                "--frames",
                "2",
                "--out",
                out,
                "--workers",
                "0",
                "-q",
                "--num-shards",
                "3",
                "--shard-index",
                index,
            ]
        )
        assert result.exit_code == 0, result.output
        seen += [r["video_id"] for r in rows(out)] if out.exists() else []
    assert sorted(seen) == ["a.mp4", "b.mp4", "sub/c.mp4"]  # every video in exactly one shard
    bad = run(["sample", clips, "--num-shards", "2", "--shard-index", "2", "-q"])
    assert bad.exit_code == 2 and "--shard-index" in bad.output


@pytest.mark.parametrize("method", ["none", "uniform", "fastv", "mlb", "visionzip"])
def test_compress_at_keep_one_reports_full_statistics(tiny_model_dir, clips, tmp_path, method):
    out = tmp_path / "c.parquet"
    result = run(
        [
            "compress",
            clips / "a.mp4",
            "--model",
            tiny_model_dir,
            "--method",
            method,
            "--out",
            out,
            "--workers",
            "0",
            "--frames",
            "4",
            "-q",
        ]
    )
    assert result.exit_code == 0, result.output
    row = rows(out)[0]
    assert row["error"] is None and row["keep_realized"] == 1.0 and row["flops_ratio"] == 1.0
    assert row["tokens_per_layer"] == [64] * 4


def test_resume_with_other_options_is_refused(tiny_model_dir, clips, tmp_path):
    out = tmp_path / "r.parquet"
    base = ["answer", clips / "a.mp4", "--question", "q", "--model", tiny_model_dir, "--out", out, *FAST]
    assert run(base).exit_code == 0
    changed = run([*base, "--method", "uniform", "--keep", "0.25"])
    assert changed.exit_code == 2
    assert "method 'none' -> 'uniform'" in changed.output and "--overwrite" in changed.output
    assert [r["method"] for r in rows(out)] == ["none"]  # untouched
    assert run([*base, "--workers", "1"]).exit_code == 0  # run options do not change results


def test_resume_into_a_file_of_older_input_preparation_is_refused(tiny_model_dir, clips, tmp_path):
    """A file whose options predate `inputs` (mlb resized without rounding, timed Qwen otherwise) must
    not be completed with rows of today's inputs."""
    import json

    out = tmp_path / "r.jsonl"
    base = ["answer", clips / "a.mp4", clips / "b.mp4", "--question", "q", "--model", tiny_model_dir]
    assert run([*base, "--out", out, *FAST]).exit_code == 0
    meta_path = tmp_path / "r.jsonl.meta.json"
    meta = json.loads(meta_path.read_text())
    options = json.loads(meta["metadata"]["options"])
    assert options["inputs"] == 2
    del options["inputs"]  # as an older mlb wrote it
    meta["metadata"]["options"] = json.dumps(options)
    meta_path.write_text(json.dumps(meta))
    out.write_text(out.read_text().splitlines()[0] + "\n")  # one row left to do
    refused = run([*base, "--out", out, *FAST])
    assert refused.exit_code == 2
    assert "input preparation v1 -> v2" in refused.output and "--overwrite" in refused.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "uniform", "--keep", "0.5", "--dedup-threshold", "0.5"], "dedup_threshold"),
        (["--method", "random", "--param", "bogus=1"], "bogus"),
        (["--method", "uniform", "--debias", "local"], "--debias does not apply to --method uniform"),
        (["--decode-timeout", "0"], "--decode-timeout"),
        (["--fps", "nan"], "--fps"),
    ],
)
def test_more_usage_errors(tiny_model_dir, clips, args, message):
    result = run(["answer", clips / "a.mp4", "--question", "q", "--model", tiny_model_dir, *FAST, *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_no_videos_is_a_usage_error_except_for_summarize(tiny_model_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run(["answer", empty, "--question", "q", "--model", tiny_model_dir, *FAST])
    assert result.exit_code == 2 and "no videos found" in result.output
    nightly = run(["summarize", empty, "--model", tiny_model_dir, "--out", tmp_path / "s.parquet", *FAST])
    assert nightly.exit_code == 0  # an empty camera folder is a normal night


def test_failed_rows_keep_what_was_asked(tiny_model_dir, clips, tmp_path):
    (clips / "empty.mp4").write_bytes(b"")
    out = tmp_path / "f.parquet"
    run(
        [
            "answer",
            clips / "empty.mp4",
            "--question",
            "q",
            "--model",
            tiny_model_dir,
            "--method",
            "uniform",
            "--keep",
            "0.5",
            "--out",
            out,
            *FAST,
        ]
    )
    row = rows(out)[0]
    assert row["error"] and row["method"] == "uniform" and row["keep_requested"] == 0.5
    assert row["model"] == str(tiny_model_dir)
