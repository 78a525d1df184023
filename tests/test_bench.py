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


def _machine_module():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import machine
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return machine


def test_every_bench_says_which_machine_and_how_spread():
    """A number in the README can be traced: the machine line (cores, load) and the spread over runs."""
    machine = _machine_module()
    line = machine.machine_line()
    cores = os.cpu_count()
    assert line.startswith("machine: ") and f"/{cores} cores usable" in line and "load average" in line
    values = [1.0, 3.0, 2.0]
    text = machine.spread_text(values)
    assert text.startswith("median 2.00 s (min 1.00, max 3.00 over 3 runs")
    assert "+-50%" in text  # half the range, relative to the median
    for script in ("bench_prefill.py", "bench_throughput.py", "bench_runners.py"):
        source = (ROOT / "bench" / script).read_text()
        assert "machine_line()" in source and "spread_text(" in source, script


def test_bench_runners_measures_local_and_ray(tmp_path):
    pytest.importorskip("ray")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_runners.py"), "--videos", "2", "--runs", "1"]
        + ["--work", str(tmp_path), "--json", str(tmp_path / "r.json")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.startswith("machine: ") and "| 2 | ray |" in proc.stdout
    results = json.loads((tmp_path / "r.json").read_text())["results"]
    assert {(r["runner"], r["videos"]) for r in results} == {("local", 2), ("ray", 2)}
    for result in results:
        (run,) = result["runs"]
        assert 0 < run["first_row"] <= run["total"]
        assert (run["start"] > 0) == (result["runner"] == "ray")
