"""Where a benchmark number came from: the machine line and the spread of repeated runs.

Every bench prints `machine_line()` before and after its runs (the load average may change while it
runs: a number measured under load is not the machine's) and the spread of each measurement over its
runs (`spread_text`), so a README number can be traced and judged.
"""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Sequence
from pathlib import Path


def machine_line() -> str:
    """One line: OS/arch, CPU model, cores (usable/total), load average, memory, Python."""
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    try:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "unknown"
    return (
        f"machine: {platform.system()} {platform.machine()}, {_cpu_model()}, {usable}/{cores} cores usable, "
        f"load average {load} (1/5/15 min), {_memory_gib()}, Python {platform.python_version()}"
    )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu unknown"


def _memory_gib() -> str:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.0f} GiB RAM"
    except OSError:
        pass
    return "RAM unknown"


def spread_text(values: Sequence[float], unit: str = "s", digits: int = 2) -> str:
    """'median 1.23 s (min 1.10, max 1.40 over 5 runs; +-12%)': what a reader needs to judge a number."""
    if not values:
        return "no runs"
    median = statistics.median(values)
    low, high = min(values), max(values)
    half = (high - low) / 2 / median * 100 if median else 0.0
    return (
        f"median {median:.{digits}f} {unit} (min {low:.{digits}f}, max {high:.{digits}f} over "
        f"{len(values)} run{'s' if len(values) != 1 else ''}; +-{half:.0f}%)"
    )
