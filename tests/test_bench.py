"""The benchmark scripts run end to end (tiny shapes, CPU): `make bench-gpu` must work the first time
it meets a GPU. Their numbers are not checked here (timings belong in bench/, not in tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
