"""Stop a run on SIGINT, SIGTERM or SIGHUP the same way: commit finished rows, one line, exit 128 + signal.

Why: batch schedulers and service managers (SLURM preemption, ``docker stop``, systemd, a closed
terminal) send SIGTERM or SIGHUP, not Ctrl-C. Python's default for those two is to die at once, so the
rows buffered in the writer (up to 15 rows or 30 s of work) were redone and no final file was written.

How: ``stop_on_signals()`` installs one handler for the three signals and restores the previous
handlers when the block ends (nothing global is patched). The first signal raises ``Interrupted``, a
``KeyboardInterrupt`` subclass, in the main thread, so every cleanup path that already handles Ctrl-C
(the writer's ``close`` merges parts and buffer into the final file, ``prefetch`` reaps its workers) runs
unchanged.

Repeated signals: once the first one has been raised the run is already stopping, and what remains is
the commit of finished rows. Later signals are *deferred*, i.e. noted once on stderr and otherwise
ignored until the block ends, instead of raising a second exception in the middle of the commit (which
used to print a KeyboardInterrupt traceback and leave the final file unwritten). A user who really
cannot wait can still use SIGKILL (or Ctrl-\\ for SIGQUIT): the part-file protocol of
``mlbcli.io.writers`` is kill-safe, and the next run resumes from the committed parts.

A signal whose handler was SIG_IGN when the block started stays ignored: ``nohup`` ignores SIGHUP, and
shells start background jobs with SIGINT ignored; those choices are the user's.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["STOP_SIGNALS", "Interrupted", "StopState", "exit_code_of", "reason_of", "stop_on_signals"]

# SIGHUP does not exist on Windows; there only SIGINT (and SIGTERM, which Windows never delivers) apply.
STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)

_REASONS = {"SIGINT": "interrupted", "SIGTERM": "terminated (SIGTERM)", "SIGHUP": "hung up (SIGHUP)"}


class Interrupted(KeyboardInterrupt):
    """The run was asked to stop by signal ``signum``. A KeyboardInterrupt, so Ctrl-C's cleanup applies."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = int(signum)

    def __str__(self) -> str:
        return reason_of(self)


def exit_code_of(exc: BaseException) -> int:
    """The shell convention 128 + signal number: 130 for Ctrl-C (also a plain KeyboardInterrupt),
    143 for SIGTERM, 129 for SIGHUP."""
    signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
    return 128 + int(signum)


def reason_of(exc: BaseException) -> str:
    """A few words for the user's message: "interrupted", "terminated (SIGTERM)", "hung up (SIGHUP)"."""
    signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
    try:
        name = signal.Signals(signum).name
    except ValueError:
        return f"stopped by signal {signum}"
    return _REASONS.get(name, f"stopped by {name}")


@dataclass
class StopState:
    """What the handlers saw inside one ``stop_on_signals`` block."""

    signum: int | None = None  # the first signal (the one raised as Interrupted); None = no signal yet
    deferred: list[int] = field(default_factory=list)  # later signals, deferred until the block ends

    @property
    def exit_code(self) -> int | None:
        return None if self.signum is None else 128 + self.signum


@contextlib.contextmanager
def stop_on_signals(
    signums: tuple[int, ...] = STOP_SIGNALS, *, exit_status: bool = False
) -> Iterator[StopState]:
    """Within the block, the first of ``signums`` raises ``Interrupted``; later ones are deferred.

    ``exit_status=True`` (the CLI's ``main``) makes the process exit with 128 + the first signal when the
    block ends after one was received, whatever exit status the code inside chose while unwinding
    (typer maps every KeyboardInterrupt to 130, click's abort to 1). Other exceptions pass unchanged.

    Signal handlers can only be installed from the main thread; elsewhere the block runs without them.
    """
    state = StopState()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handle(signum: int, frame: Any) -> None:
        if state.signum is None:
            state.signum = signum
            raise Interrupted(signum)
        if not state.deferred:
            _note("mlb: still saving finished rows; exiting when that is done")
        state.deferred.append(signum)

    previous: dict[int, Any] = {}
    try:
        for signum in signums:
            old = signal.getsignal(signum)
            if old is signal.SIG_IGN:  # nohup, a background job: the user asked to ignore it
                continue
            signal.signal(signum, handle)
            previous[signum] = old
        try:
            yield state
        except (SystemExit, KeyboardInterrupt):
            if not (exit_status and state.exit_code is not None):
                raise
        if exit_status and state.exit_code is not None:
            raise SystemExit(state.exit_code)
    finally:
        exiting = exit_status and state.signum is not None
        for signum, old in previous.items():
            if exiting:
                # The process exits next: a late signal during interpreter shutdown would only print a
                # traceback from wherever it lands (atexit hooks) and change the exit status.
                signal.signal(signum, signal.SIG_IGN)
            else:
                # getsignal() gives None for a handler not installed from Python; SIG_DFL is closest.
                signal.signal(signum, old if old is not None else signal.SIG_DFL)


def _note(text: str) -> None:
    """Write one line to stderr from a signal handler (os.write: no buffered-stream re-entrancy)."""
    with contextlib.suppress(OSError):
        os.write(2, (text + "\n").encode())
