"""The benchmark scripts run end to end (tiny shapes, CPU): `make bench-gpu` must work the first time
it meets a GPU. Their numbers are not checked here (timings belong in bench/, not in tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # `make test-fast` skips it; `make test` and CI run it


ROOT = Path(__file__).resolve().parents[1]


def test_bench_gpu_smoke_writes_every_part(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_gpu.py"), "--smoke", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (report,) = tmp_path.glob("gpu-*-smoke.json")
    parts = json.loads(report.read_text())["parts"]
    assert len(parts) == 4 and all("result" in part for part in parts.values())
    fastv = parts["3 fastv vs reference-style fastv"]["result"]
    assert fastv["ours_peak_mib"] >= 0 and fastv["reference_ms"] > 0
    assert parts["4 engine vs stock generate (keep 1.0)"]["result"]["same_tokens"] is True
    assert "| answer | fastv | 2 |" in parts["5 throughput vs batch size"]["result"]
    assert (tmp_path / report.name.replace(".json", ".md")).exists()


def test_bench_resize_runs_and_the_two_paths_agree_to_a_few_levels():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_resize.py"), "--frames", "2", "--rounds", "1"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [
        line
        for line in proc.stdout.splitlines()
        if line.startswith("| 384x384") or line.startswith("| 812x448")
    ]
    assert len(rows) == 2
    assert all(0 < float(row.split("|")[6]) < 32 for row in rows)  # both resize: close, not identical
