"""The watchdog that stops a killed driver's Ray helpers (`runners.ray_reaper`), without Ray: a fake
driver starts it, then two children, one that looks like a Ray process and one that does not."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="the watchdog reads /proc")

DRIVER = """
import subprocess, sys, time
from mlbcli.runners.ray_reaper import watch_descendants
watch_descendants()
sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
ray_like_exec = subprocess.Popen(["bash", "-c", "exec -a 'ray::IDLE' sleep 120"])
other = subprocess.Popen([*sleeper, "/home/ray/anaconda3/bin/user-job"])  # a path, not one of Ray's
print(ray_like_exec.pid, other.pid, flush=True)
time.sleep(120)
"""


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_killed_drivers_ray_processes_are_stopped_and_nothing_else():
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, text=True)
    assert driver.stdout is not None
    ray_like, other = map(int, driver.stdout.readline().split())
    try:
        time.sleep(1.0)  # the watchdog polls every 0.2 s
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
        deadline = time.monotonic() + 20
        while _running(ray_like) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _running(ray_like), "the Ray-like child outlived its killed driver"
        assert _running(other), "the watchdog stopped a process that is not Ray's"
    finally:
        for pid in (ray_like, other):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
