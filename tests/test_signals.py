"""`mlbcli.runners.signals.stop_on_signals`: first signal raises, later ones wait, handlers come back."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator

import pytest

from mlbcli.runners.signals import Interrupted, exit_code_of, reason_of, stop_on_signals

STOP = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@pytest.fixture(autouse=True)
def _keep_handlers() -> Iterator[None]:
    """Whatever a test does, pytest's own handlers are back afterwards."""
    saved = {signum: signal.getsignal(signum) for signum in STOP}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.mark.parametrize(
    ("signum", "code", "reason"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated (SIGTERM)"), (signal.SIGHUP, 129, "hung up (SIGHUP)")],
)  # fmt: skip
def test_first_signal_raises_a_keyboard_interrupt_that_knows_its_signal(signum, code, reason) -> None:
    with pytest.raises(KeyboardInterrupt) as caught, stop_on_signals() as state:
        signal.raise_signal(signum)
    assert isinstance(caught.value, Interrupted)
    assert caught.value.signum == state.signum == signum
    assert exit_code_of(caught.value) == state.exit_code == code
    assert reason_of(caught.value) == reason


def test_a_plain_keyboard_interrupt_is_ctrl_c() -> None:
    assert exit_code_of(KeyboardInterrupt()) == 130
    assert reason_of(KeyboardInterrupt()) == "interrupted"


def test_repeated_signals_during_the_commit_are_deferred(capfd: pytest.CaptureFixture[str]) -> None:
    """Finding R15: a second Ctrl-C during the writer's close raised again and printed a traceback."""
    committed = False
    with stop_on_signals() as state:
        try:
            signal.raise_signal(signal.SIGTERM)
        except Interrupted:
            # The cleanup path (the writer's close): more signals arrive, nothing may interrupt it.
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
                signal.raise_signal(signum)
            committed = True
    assert committed
    assert state.signum == signal.SIGTERM
    assert state.deferred == [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGINT]
    assert capfd.readouterr().err.count("still saving finished rows") == 1


def test_previous_handlers_are_restored() -> None:
    def mine(signum, frame) -> None:
        raise AssertionError("not expected")

    signal.signal(signal.SIGTERM, mine)
    before = {signum: signal.getsignal(signum) for signum in STOP}
    with stop_on_signals():
        assert all(signal.getsignal(signum) is not before[signum] for signum in STOP)
    assert {signum: signal.getsignal(signum) for signum in STOP} == before
    with pytest.raises(Interrupted), stop_on_signals():
        signal.raise_signal(signal.SIGHUP)
    assert {signum: signal.getsignal(signum) for signum in STOP} == before


def test_an_ignored_signal_stays_ignored() -> None:
    """`nohup` ignores SIGHUP; a shell's background job ignores SIGINT: the user's choice stands."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    with stop_on_signals() as state:
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        signal.raise_signal(signal.SIGHUP)  # ignored: no exception
    assert state.signum is None
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN


def test_exit_status_is_128_plus_the_first_signal_whatever_the_code_inside_chose() -> None:
    # typer turns any KeyboardInterrupt into exit 130 (click's abort into 1): the signal decides.
    with pytest.raises(SystemExit) as caught, stop_on_signals(exit_status=True):
        try:
            signal.raise_signal(signal.SIGTERM)
        except KeyboardInterrupt:
            raise SystemExit(130) from None
    assert caught.value.code == 143
    # The process exits next: late signals must not land a traceback in interpreter shutdown.
    assert all(signal.getsignal(signum) is signal.SIG_IGN for signum in STOP)


def test_exit_status_leaves_runs_without_signals_and_other_errors_alone() -> None:
    with pytest.raises(SystemExit) as caught, stop_on_signals(exit_status=True):
        raise SystemExit(2)
    assert caught.value.code == 2
    with pytest.raises(ValueError), stop_on_signals(exit_status=True):
        raise ValueError("a bug keeps its traceback")
    with pytest.raises(OSError), stop_on_signals(exit_status=True):  # ... also while stopping
        try:
            signal.raise_signal(signal.SIGTERM)
        except KeyboardInterrupt:
            raise OSError("disk full during the commit") from None


def test_outside_the_main_thread_nothing_is_installed() -> None:
    seen: list[object] = []

    def body() -> None:
        with stop_on_signals() as state:
            seen.append(state)

    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen and seen[0].signum is None
    assert signal.getsignal(signal.SIGTERM) is before
