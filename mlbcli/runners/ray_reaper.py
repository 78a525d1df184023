"""A watchdog for the local Ray instance a driver starts: when the driver dies, even by SIGKILL, the Ray
processes it started are stopped too.

Why: Ray's own reaper stops most of a local instance when its driver is killed, but not every helper (on
Ray 2.60 the `ray::RuntimeEnvAgent` stays), and a cron job killed every night would leave one behind
each time. A driver cannot clean up after a SIGKILL, so a small process outside it does: the driver
starts the watchdog before Ray, which then records the Ray processes below the driver (with their
start times, so a recycled id is never hit); when the pipe from the driver closes (it exited or died),
the watchdog terminates the ones still running, then kills what ignores SIGTERM. Linux only (it reads /proc); elsewhere it is not started.

Run as ``python -m mlbcli.runners.ray_reaper`` by `watch_descendants`; it imports nothing of mlb.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

#: Seconds between two looks at the driver's process tree (Ray starts workers during the run).
POLL_S = 0.2
_RAY_PARTS = (b"/ray/core/src/ray/", b"/ray/_private/", b"/ray/dashboard/", b"/ray/autoscaler/")

_WATCHDOGS: list[subprocess.Popen[bytes]] = []

#: Seconds the watchdog waits after SIGTERM before SIGKILL.
GRACE_S = 5.0


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks): with the pid, one process for sure."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _is_ray(pid: int) -> bool:
    """Whether `pid` is one of Ray's processes (raylet, gcs_server, `ray::` workers and agents): the
    watchdog never touches the driver's other children."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    # Ray's workers and agents retitle themselves `ray::...`; raylet and gcs_server are binaries inside the
    # package (`ray/core/src/ray/...`), its Python helpers modules of `ray/_private`, `ray/dashboard`,
    # `ray/autoscaler`. Not any "/ray/" (Ray's own images install Python under /home/ray): a user's
    # process must never match.
    return command.startswith(b"ray::") or any(part in command for part in _RAY_PARTS)


def descendants(pid: int) -> set[int]:
    """Every process below `pid`, now (/proc/PID/task/*/children)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


def watch_descendants() -> subprocess.Popen[bytes] | None:
    """Start the watchdog of this process's Ray descendants (call BEFORE `ray.init` of a local instance:
    a driver killed while Ray starts leaves helpers too); None where /proc is missing. The watchdog
    polls the driver's process tree itself; the driver only holds the pipe that tells it when to act."""
    if not Path("/proc/self/task").exists():
        return None
    watchdog = subprocess.Popen(
        [sys.executable, "-m", "mlbcli.runners.ray_reaper", str(os.getpid())],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C for the driver's terminal does not take the watchdog first
    )
    _WATCHDOGS.append(watchdog)  # held for the driver's life: its stdin closing is the signal to act
    return watchdog


def _track(driver: int, processes: dict[int, str], done: threading.Event) -> None:
    """Until `done`: record every Ray process below `driver` (pid -> start time), every POLL_S."""
    me = os.getpid()
    while not done.is_set():
        for pid in descendants(driver) - {me}:
            if pid not in processes and _is_ray(pid) and (start := _start_time(pid)) is not None:
                processes[pid] = start
        done.wait(POLL_S)


def _stop(processes: dict[int, str]) -> None:
    """SIGTERM the `processes` (pid -> start time) that are still the same processes, then SIGKILL."""

    def alive() -> list[int]:
        return [pid for pid, start in processes.items() if _start_time(pid) == start]

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in alive():
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        deadline = time.monotonic() + GRACE_S
        while alive() and time.monotonic() < deadline:
            time.sleep(0.1)


def main() -> int:
    """Track the driver's Ray processes until its end of the pipe closes (stdin EOF: it exited or was
    killed), then stop them and whatever they started that is still running."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver's Ctrl-C is the driver's to handle
    processes: dict[int, str] = {}
    done = threading.Event()
    tracker = threading.Thread(target=_track, args=(int(sys.argv[1]), processes, done), daemon=True)
    tracker.start()
    sys.stdin.buffer.read()  # blocks until the driver is gone
    done.set()
    tracker.join()
    for pid in [p for p, start in processes.items() if _start_time(p) == start]:  # orphans' children
        for child in descendants(pid):
            if child not in processes and (start := _start_time(child)) is not None:
                processes[child] = start
    _stop(processes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
