"""Helpers for tests that run the CLI as a real process and watch its children (Linux /proc).

Not a conftest: test modules import this by name (pytest puts ``tests/`` on ``sys.path``). The decode
function lives at module top level so ``spawn`` worker processes can unpickle it.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

# Generous liveness deadlines: they only fail when something is broken, never because a run was slow.
DEADLINE_S = 60.0


def mlb_process(*args: str | os.PathLike[str], cwd: Path) -> subprocess.Popen[str]:
    """Start ``python -m mlbcli ARGS`` with this checkout first on the path, in its own session (so no
    terminal signal reaches it by accident), stdout and stderr captured."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, "-m", "mlbcli", *map(str, args)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def make_hanging_clip(folder: Path, name: str = "hang.mp4") -> tuple[Path, Path]:
    """A ``*.mp4`` that is an ffconcat list naming a FIFO: FFmpeg probes it by content, opens the FIFO
    and blocks in C code until someone writes to it (finding R10). Returns (clip, fifo)."""
    fifo = folder / f"{Path(name).stem}_segment.ts"
    os.mkfifo(fifo)
    clip = folder / name
    clip.write_text(f"ffconcat version 1.0\nfile {fifo.name}\n")
    return clip, fifo


def wait_until(condition: Callable[[], Any], what: str, proc: subprocess.Popen[str] | None = None) -> Any:
    """Poll ``condition`` until it returns something truthy (returned); fail after DEADLINE_S, or at once
    if ``proc`` exits meanwhile (its stderr then says why)."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) before {what}: {proc.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def open_fifo_writer_once_read(fifo: Path) -> int | None:
    """A write fd on ``fifo`` if some process is (blocked) opening it for reading, else None.

    Holding the write end open keeps the reader blocked in ``read()``: the decoder stays hung.
    """
    try:
        return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # no reader yet
            return None
        raise


def children_of(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")".
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def is_gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie waiting for a reaper that is not ours counts as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] in "ZX"


def marked_decode(task: tuple[int, str]) -> int:
    """Decode stand-in for ordering tests: ``(value, marker_dir)`` -> ``2 * value``, leaving
    ``started-<value>`` before and ``done-<value>`` after the work, so a test can see what a worker did
    and when, relative to the consumer, without looking at a clock."""
    value, marker_dir = task
    Path(marker_dir, f"started-{value}").write_text(str(os.getpid()))
    result = value * 2
    Path(marker_dir, f"done-{value}").touch()
    return result


class SummaryCollector:
    """A progress reporter that keeps the final `RunSummary` of each run (for tests of the counts)."""

    def __init__(self) -> None:
        self.finished: list = []

    def start(self, kind, *, total, skipped) -> None:
        pass

    def advance(self, row) -> None:
        pass

    def finish(self, summary) -> None:
        self.finished.append(summary)
