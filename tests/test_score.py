"""`mlb score`: statistics checked against hand-computed values, paired tests, JSON, plot, lmms-eval samples;
and the accuracy at the end of `mlb answer` covering the whole output file."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mlbcli.cli.app import app
from mlbcli.eval.score import clustered_stderr, mcnemar_exact, score_rows, wilson_interval
from mlbcli.io import schema

Z = 1.959963984540054


def write(path: Path, rows: list[dict]) -> Path:
    """An answer results file as `mlb answer` writes it (unknown columns null)."""
    full = []
    for i, row in enumerate(rows):
        base = {"question_id": f"q{i}", "keep_realized": 1.0, "flops_ratio": 1.0, "method": "none"}
        full.append({**base, **row})
    pq.write_table(pa.Table.from_pylist(full, schema=schema.ANSWER), path)
    return path


def run(args: list) -> any:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


# -- the statistics, by hand ----------------------------------------------------------------------------------
def test_wilson_interval_by_hand():
    # 3 of 4: z² = 3.841459; denominator 1 + z²/4 = 1.960365; centre (0.75 + z²/8) / 1.960365 = 0.627527;
    # half-width z / 1.960365 · sqrt(0.75·0.25/4 + z²/64) = 0.999795 · 0.326953 = 0.326886.
    low, high = wilson_interval(0.75, 4)
    assert low == pytest.approx(0.627527 - 0.326886, abs=2e-6)
    assert high == pytest.approx(0.627527 + 0.326886, abs=2e-6)
    assert wilson_interval(1.0, 5)[1] == 1.0 and wilson_interval(1.0, 5)[0] < 1.0  # never [1, 1]


def test_clustered_stderr_by_hand():
    # y = [1, 1, 0, 0], videos [a, a, b, b]; mean 0.5. CLT part: Σ(y−ȳ)²/((n−1)n) = 1/(3·4) = 1/12.
    # Cross terms: video a (0.5 + 0.5)² − 2·0.25 = 0.5, video b the same: (0.5 + 0.5)/16 = 1/16.
    assert clustered_stderr([1, 1, 0, 0], ["a", "a", "b", "b"]) == pytest.approx(math.sqrt(1 / 12 + 1 / 16))
    # One question per video: the plain standard error of the mean, sqrt(1/12).
    assert clustered_stderr([1, 1, 0, 0], ["a", "b", "c", "d"]) == pytest.approx(math.sqrt(1 / 12))
    assert clustered_stderr([1], ["a"]) is None


def test_mcnemar_exact_by_hand():
    # b = 5, c = 1: 2 · (C(6,0) + C(6,1)) / 2⁶ = 14/64.
    assert mcnemar_exact(5, 1) == pytest.approx(14 / 64)
    assert mcnemar_exact(1, 5) == pytest.approx(14 / 64)
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)
    assert mcnemar_exact(3, 3) == 1.0  # 2 · 42/64 > 1, capped
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 1000) == pytest.approx(2.0**-999)  # exact integers: no 0.5**n underflow


def test_file_accuracy_interval_and_costs():
    rows = [
        {"video_id": "v1", "correct": True, "keep_realized": 0.2, "flops_ratio": 0.1},
        {"video_id": "v2", "correct": True, "keep_realized": 0.4, "flops_ratio": 0.3},
        {"video_id": "v3", "correct": True, "keep_realized": 0.3, "flops_ratio": 0.2, "parse_failed": False},
        {"video_id": "v4", "correct": False, "keep_realized": 0.1, "flops_ratio": 0.2, "parse_failed": True},
        {"video_id": "v5", "error": "decode failed"},  # not graded, not in the means
        {"video_id": "v6", "correct": None, "keep_realized": 0.4, "flops_ratio": 0.2},  # no ground truth
    ]
    score = score_rows(rows)
    assert (score.n, score.correct, score.accuracy) == (4, 3, 0.75)
    assert (score.ci_low, score.ci_high) == pytest.approx((0.300642, 0.954413), abs=2e-6)  # Wilson, n = 4
    assert score.parse_failures == 1 and score.errors == 1 and score.excluded == 0
    assert score.keep == pytest.approx((0.2 + 0.4 + 0.3 + 0.1 + 0.4) / 5)
    assert score.flops_ratio == pytest.approx((0.1 + 0.3 + 0.2 + 0.2 + 0.2) / 5)


def test_interval_widens_when_questions_share_a_video():
    rows = [{"video_id": v, "correct": c} for v, c in [("a", True), ("a", True), ("b", False), ("b", False)]]
    score = score_rows(rows)
    # SE² = 1/12 + 1/16 = 7/48 against the i.i.d. 1/12: design effect 1.75, n_eff = 4/1.75 = 16/7.
    assert score.se == pytest.approx(math.sqrt(7 / 48))
    assert (score.ci_low, score.ci_high) == pytest.approx(wilson_interval(0.5, 16 / 7))
    assert (score.ci_low, score.ci_high) == pytest.approx((0.104098, 0.895902), abs=2e-6)
    unclustered = score_rows([{**row, "video_id": f"v{i}"} for i, row in enumerate(rows)])
    assert unclustered.ci_high - unclustered.ci_low < score.ci_high - score.ci_low


def test_macro_aggregation_of_a_benchmark():
    # MLVU averages its task types: X 4/4, Y 0/2 -> (1 + 0)/2 = 0.5 (micro would be 4/6).
    rows = [{"video_id": f"x{i}", "correct": True, "category": "X", "benchmark": "mlvu"} for i in range(4)]
    rows += [{"video_id": f"y{i}", "correct": False, "category": "Y", "benchmark": "mlvu"} for i in range(2)]
    score = score_rows(rows)
    assert score.accuracy == 0.5 and score.aggregation == "macro over 2 category values"
    # Agresti–Coull variances: X p̃ = (4 + z²/2)/(4 + z²), Y p̃ = (z²/2)/(2 + z²).
    px, py = (4 + Z * Z / 2) / (4 + Z * Z), (Z * Z / 2) / (2 + Z * Z)
    se = math.sqrt(px * (1 - px) / (4 + Z * Z) + py * (1 - py) / (2 + Z * Z)) / 2
    assert score.se == pytest.approx(se) and score.se == pytest.approx(0.123861, abs=1e-6)
    assert (score.ci_low, score.ci_high) == pytest.approx((0.5 - Z * se, 0.5 + Z * se))
    # The same rows under a micro benchmark (or none): 4/6.
    assert score_rows([{**r, "benchmark": "videomme"} for r in rows]).accuracy == pytest.approx(4 / 6)


def test_excluded_rows_leave_the_denominator():
    rows = [
        {"video_id": "a", "correct": True, "ground_truth": "A", "benchmark": "mvbench"},
        {"video_id": "b", "correct": None, "parse_failed": True, "ground_truth": "B", "benchmark": "mvbench"},
    ]
    score = score_rows(rows)
    assert (score.n, score.accuracy, score.excluded, score.parse_failures) == (1, 1.0, 1, 1)


def test_paired_comparison_by_hand():
    # 8 questions, one per video. Flipped to correct b = 5, to wrong c = 1, both right 1, both wrong 1.
    here = [True] * 6 + [False, False]
    base = [False] * 5 + [True, True, False]
    rows = [{"video_id": f"v{i}", "question_id": "q", "correct": c} for i, c in enumerate(here)]
    baseline = [{"video_id": f"v{i}", "question_id": "q", "correct": c} for i, c in enumerate(base)]
    baseline.append({"video_id": "only-in-baseline", "question_id": "q", "correct": True})  # not shared
    pair = score_rows(rows, baseline=baseline).paired
    assert (pair.n, pair.flipped_to_correct, pair.flipped_to_wrong) == (8, 5, 1)
    # d: five +1, one −1, two 0: mean 0.5; Σ(d − 0.5)² = 5·0.25 + 2.25 + 2·0.25 = 4; SE = sqrt(4/7/8).
    assert pair.delta == 0.5
    half = Z * math.sqrt(4 / 7 / 8)
    assert (pair.delta_ci_low, pair.delta_ci_high) == pytest.approx((0.5 - half, 0.5 + half))
    assert pair.p_value == pytest.approx(14 / 64)


# -- the command ----------------------------------------------------------------------------------------------
def _pair_of_files(tmp_path: Path) -> tuple[Path, Path]:
    rows = [
        {"video_id": "v1", "question_id": "q1", "correct": True, "category": "X", "choice": "A"},
        {"video_id": "v1", "question_id": "q2", "correct": False, "category": "Y", "choice": "B"},
        {"video_id": "v2", "question_id": "q1", "correct": True, "category": "X", "choice": "A"},
    ]
    pruned = write(
        tmp_path / "fastv.parquet", [{**r, "method": "fastv", "keep_requested": 0.25} for r in rows]
    )
    base = write(tmp_path / "none.parquet", [{**r, "correct": True} for r in rows])
    return pruned, base


def test_score_json_has_the_documented_keys(tmp_path):
    pruned, base = _pair_of_files(tmp_path)
    result = run(["score", pruned, "--against", base, "--by", "category", "--json"])
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    whole = records[0]
    for key in ("file", "n", "accuracy", "ci_low", "ci_high", "parse_failures", "flops_ratio", "keep"):
        assert key in whole
    for key in (
        "delta",
        "delta_ci_low",
        "delta_ci_high",
        "p_value",
        "flipped_to_correct",
        "flipped_to_wrong",
    ):
        assert key in whole
    assert whole["file"] == str(pruned) and whole["group"] is None and whole["n"] == 3
    assert whole["accuracy"] == pytest.approx(2 / 3) and whole["delta"] == pytest.approx(-1 / 3)
    assert (whole["flipped_to_correct"], whole["flipped_to_wrong"]) == (0, 1)
    assert whole["letters"] == {"A": 2, "B": 1}
    groups = {r["group"]: r for r in records[1:]}
    assert set(groups) == {"X", "Y"} and groups["Y"]["accuracy"] == 0.0 and groups["X"]["n"] == 2


def test_score_table_and_errors(tmp_path):
    pruned, base = _pair_of_files(tmp_path)
    result = run(["score", pruned, base, "--against", base])
    assert result.exit_code == 0, result.output
    assert "66.7" in result.stdout and "McNemar" in result.stdout
    missing = run(["score", tmp_path / "nope.parquet"])
    assert missing.exit_code == 2 and "no such results file" in missing.output
    bad_by = run(["score", pruned, "--by", "colour"])
    assert bad_by.exit_code == 2 and "no column 'colour'" in bad_by.output
    other = tmp_path / "s.parquet"
    pq.write_table(pa.table({"video_id": ["v"], "summary": ["x"]}), other)
    assert run(["score", other]).exit_code == 2


def test_score_does_not_import_torch(tmp_path):
    pruned, _ = _pair_of_files(tmp_path)
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom mlbcli.cli.app import app\n"
        f"r = CliRunner().invoke(app, ['score', {str(pruned)!r}, '--json'])\nassert r.exit_code == 0, r.output\n"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_lmms_eval_samples(tmp_path):
    rows = [
        {
            "video_id": "v1",
            "question_id": "q1",
            "question": "What?",
            "options": ["x", "y"],
            "ground_truth": "y",
            "answer": "B",
            "choice": "B",
            "correct": True,
            "parse_failed": False,
            "benchmark": "mvbench",
            "category": "action_count",
            "prompt": "Question:What?\nOption:\n(A) x\n(B) y\nOnly give the best option.\n",
        },
        {"video_id": "v2", "question_id": "q1", "error": "broken"},
    ]
    results = write(tmp_path / "run.parquet", rows)
    result = run(["score", results, "--lmms-eval-samples", tmp_path / "samples"])
    assert result.exit_code == 0, result.output
    files = sorted((tmp_path / "samples").iterdir())
    assert [f.name for f in files] == ["run_samples_mvbench_action_count.jsonl"]
    (sample,) = [json.loads(line) for line in files[0].read_text().splitlines()]
    # lmms-eval 0.7.3's saved layout: the target as MVBench stores it (the option text), one request's
    # reply unwrapped, `resps` dropped where it equals `filtered_resps`, the prompt as `input`.
    assert sample["doc_id"] == 0 and sample["target"] == "y"
    assert "resps" not in sample and sample["filtered_resps"] == "B"
    assert sample["input"] == rows[0]["prompt"]
    assert sample["mvbench_accuracy"]["score"] == 1.0 and sample["mvbench_accuracy"]["pred_answer"] == "B"
    assert len(sample["doc_hash"]) == 64


def test_plot_without_matplotlib_is_a_clear_error(tmp_path, monkeypatch):
    pruned, _ = _pair_of_files(tmp_path)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    result = run(["score", pruned, "--plot", tmp_path / "p.png"])
    assert result.exit_code == 2 and "needs matplotlib" in result.output


def test_plot_draws_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    pruned, base = _pair_of_files(tmp_path)
    result = run(["score", pruned, "--against", base, "--plot", tmp_path / "p.png"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- accuracy at the end of `mlb answer` --------------------------------------------------------------------------
def test_run_accuracy_covers_resumed_rows(tiny_model_dir, clips_dir, tmp_path):
    from mlbcli import api

    def item(name: str, truth: str) -> str:
        return json.dumps(
            {"video": str(clips_dir / name), "question": "Q?", "options": ["x", "y"], "answer": truth}
        )

    first, both = tmp_path / "first.jsonl", tmp_path / "both.jsonl"
    first.write_text(item("a.mp4", "A") + "\n")
    both.write_text(item("a.mp4", "A") + "\n" + item("b.mp4", "B") + "\n")
    out = str(tmp_path / "answers.parquet")
    options = {"model": str(tiny_model_dir), "frames": 2, "max_new_tokens": 2}
    api.answer([str(first)], run=api.RunOptions(out=out, workers=0), **options)
    summary = api.answer([str(both)], run=api.RunOptions(out=out, workers=0), **options)
    assert (summary.skipped, summary.ok) == (1, 1)
    rows = pq.read_table(out).to_pylist()
    assert summary.graded == 2  # this run answered one; the file holds two graded rows
    assert summary.accuracy == sum(bool(r["correct"]) for r in rows) / 2


# -- nothing to score: which file, why, exit 1 ----------------------------------------------------------------
def test_score_of_a_file_without_ground_truth_says_so_and_exits_1(tmp_path):
    """Before: `n=0` in a table and exit 0, as if 0 of 0 were a result."""
    open_ended = write(
        tmp_path / "open.parquet",
        [{"video_id": f"v{i}", "answer": "a dog", "correct": None, "ground_truth": None} for i in range(3)],
    )
    result = run(["score", open_ended])
    assert result.exit_code == 1, result.output
    assert f"{open_ended}: nothing to score" in result.output
    assert "none of its 3 answered rows has a ground truth" in result.output
    assert "n=0" not in result.output


def test_score_of_a_file_whose_rows_all_failed_says_so(tmp_path):
    failed = write(
        tmp_path / "failed.parquet", [{"video_id": "v0", "correct": None, "error": "DecodeError: x"}]
    )
    result = run(["score", failed])
    assert result.exit_code == 1
    assert "nothing to score: all 1 rows failed" in result.output
