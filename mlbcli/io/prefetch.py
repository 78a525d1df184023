"""Decode videos ahead of the model, in order, with bounded memory, in crash-proof worker processes.

Why processes, not threads: decoders are C code that can segfault or hang on a pathological file. In a
worker process a crash or a hang costs one item (it becomes an error) and a worker restart; in the main
process it would cost the whole batch. Workers are started with the ``spawn`` method because the parent
may hold torch's thread pools, which ``fork`` would copy in a broken state.

Structure: the consumer's generator pulls inputs and queues at most ``depth`` of them ahead of the item
it will yield next, then waits for that item's result. A background thread in the parent hands queued
tasks to idle workers, collects results, enforces the per-task deadline and replaces dead workers, so
decoding continues while the consumer is busy with the model. Input iteration stays in the consumer's
thread, so exceptions from a lazy input (e.g. a bad source) surface where the caller expects them.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from mlbcli.errors import DecodeTimeout, VideoDecodeError
from mlbcli.io.spawning import needs_main, without_main

__all__ = ["prefetch"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# A worker that has not said hello within this time is considered broken (spawn re-imports modules).
_START_TIMEOUT_S = 60.0
# After this many workers in a row die before becoming ready, stop spawning and decode in-thread.
_MAX_START_FAILURES = 3
# How long a worker gets to exit on its own at shutdown before it is terminated.
_JOIN_GRACE_S = 1.0

_READY = "ready"


# --------------------------------------------------------------------------------------------------
# Worker side
# --------------------------------------------------------------------------------------------------


def _worker_main(conn: multiprocessing.connection.Connection, log_level: int, parent_pid: int) -> None:
    """Entry point of a decode worker: receive ``(seq, fn, arg)``, send back ``(seq, ok, payload)``.

    Top level so ``spawn`` can import it. Stop signals (Ctrl-C, and SIGTERM/SIGHUP sent to the whole
    process group by a terminal, systemd or a scheduler) are ignored here: the parent handles them,
    commits its rows and kills its workers; a worker dying on its own would turn its item into a
    "crashed" error row and print a traceback that buries the parent's message.
    """
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    _die_with_parent(parent_pid)
    _configure_worker_logging(log_level)
    conn.send_bytes(pickle.dumps(_READY))
    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):
            return  # the parent is gone
        task = pickle.loads(message)
        if task is None:
            return
        seq, fn, arg = task
        try:
            payload = pickle.dumps((seq, True, fn(arg)), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # one bad item must not end the worker
            logger.debug("decode task %s failed", seq, exc_info=True)
            payload = pickle.dumps((seq, False, _portable_exception(exc)), protocol=pickle.HIGHEST_PROTOCOL)
        try:
            conn.send_bytes(payload)
        except (EOFError, OSError):
            return


_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _die_with_parent(parent_pid: int) -> None:
    """Make sure this worker never outlives the process that started it, even if that one is SIGKILLed.

    A worker normally exits when its pipe to the parent reaches EOF, but a worker stuck in C code (a
    decoder blocked on a FIFO, an endless demux loop) never reads the pipe, and would stay alive
    forever, reparented to init, together with multiprocessing's resource tracker (which exits only when
    every holder of its pipe, this worker included, is gone). On Linux, PR_SET_PDEATHSIG makes the
    kernel SIGKILL us when the parent *thread* that spawned us ends: that is the pool's dispatcher
    thread, which lives exactly as long as the pool (its end at ``close()`` kills idle workers a moment
    early, which is harmless). Elsewhere this is a no-op and only the pipe EOF applies.

    The parent may already have died before the prctl call took effect: then we have been reparented,
    ``getppid()`` differs, and we leave at once.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
                logger.debug("prctl(PR_SET_PDEATHSIG) failed: errno %s", ctypes.get_errno())
        except (OSError, AttributeError):  # no usable libc (unusual builds): keep the pipe-EOF exit
            logger.debug("prctl unavailable", exc_info=True)
    if os.getppid() != parent_pid:
        os._exit(0)


def _configure_worker_logging(level: int) -> None:
    """Mirror the parent's mlbcli log level. In DEBUG, show worker logs on stderr tagged with the pid;
    otherwise drop them (a NullHandler stops logging's last-resort stderr output), because worker
    lines would tear the parent's progress display and what matters reaches the parent in the result
    (errors, ``Frames.warning``)."""
    root = logging.getLogger("mlbcli")
    root.setLevel(level)
    if root.handlers:
        return
    if level <= logging.DEBUG:
        handler: logging.Handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(f"[decode-worker {os.getpid()}] %(name)s: %(message)s"))
    else:
        handler = logging.NullHandler()
    root.addHandler(handler)


def _portable_exception(exc: BaseException) -> BaseException:
    """The exception itself if it survives a pickle round trip, else a VideoDecodeError with its text.

    Exceptions with custom ``__init__`` signatures often pickle but fail to unpickle, which would break the
    result channel in the parent.
    """
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return VideoDecodeError(f"{type(exc).__name__}: {exc}")


# --------------------------------------------------------------------------------------------------
# Parent side
# --------------------------------------------------------------------------------------------------


@dataclass
class _Worker:
    process: Any  # multiprocessing.process.BaseProcess
    conn: multiprocessing.connection.Connection
    started_at: float
    ready: bool = False
    task: int | None = None  # seq in flight
    deadline: float | None = None


@dataclass
class _State(Generic[T]):
    queue: deque[int] = field(default_factory=deque)  # seqs waiting for a worker
    inputs: dict[int, T] = field(default_factory=dict)  # seq -> input, until its result is taken
    results: dict[int, Any] = field(default_factory=dict)  # seq -> result or exception
    closing: bool = False
    fatal: BaseException | None = None


class _Pool(Generic[T, R]):
    """Worker processes plus the dispatcher thread; all shared state is guarded by ``self._cond``."""

    def __init__(self, decode: Callable[[T], R], workers: int, timeout_s: float | None) -> None:
        self._decode = decode
        self._max_workers = workers
        self._timeout_s = timeout_s
        self._ctx = multiprocessing.get_context("spawn")
        # mlb's own decode functions need nothing from the caller's script: workers do not re-run it
        self._needs_main = needs_main(decode)
        self._workers: list[_Worker] = []
        self._start_failures = 0
        self._inline = False  # workers cannot start here: decode in the dispatcher thread instead
        self._state: _State[T] = _State()
        self._cond = threading.Condition()
        self._wake_r, self._wake_w = multiprocessing.Pipe(duplex=False)
        self._thread: threading.Thread | None = None
        self._log_level = logging.getLogger("mlbcli").getEffectiveLevel()

    # -- consumer API ------------------------------------------------------------------------------

    def submit(self, seq: int, item: T) -> None:
        with self._cond:
            self._state.inputs[seq] = item
            self._state.queue.append(seq)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="mlb-prefetch", daemon=True)
            self._thread.start()
        self._wake()

    def take(self, seq: int) -> tuple[T, Any]:
        """Block until ``seq`` has a result; return (input, result or exception)."""
        with self._cond:
            while seq not in self._state.results:
                if self._state.fatal is not None:
                    raise RuntimeError("prefetch dispatcher failed") from self._state.fatal
                self._cond.wait(timeout=1.0)
            return self._state.inputs.pop(seq), self._state.results.pop(seq)

    def close(self) -> None:
        with self._cond:
            self._state.closing = True
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        for worker in list(self._workers):
            self._stop_worker(worker, graceful=True)
        self._workers.clear()
        for conn in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                conn.close()

    # -- dispatcher thread -------------------------------------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send_bytes(b"")

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    if self._state.closing:
                        return
                    if self._inline:
                        seq = self._state.queue.popleft() if self._state.queue else None
                    else:
                        self._dispatch()
                        seq = None
                if seq is not None:
                    self._decode_here(seq)
                    continue
                ready = multiprocessing.connection.wait(self._waitables(), timeout=self._wait_timeout())
                with self._cond:
                    self._handle(ready)
                    self._enforce_deadlines()
                    self._cond.notify_all()
        except BaseException as exc:  # a bug here must not leave the consumer waiting forever
            logger.exception("prefetch dispatcher crashed")
            with self._cond:
                self._state.fatal = exc
                self._cond.notify_all()

    def _decode_here(self, seq: int) -> None:
        """Fallback when no worker process can start: decode in this thread (no timeout, no isolation)."""
        with self._cond:
            item = self._state.inputs[seq]
        try:
            result: Any = self._decode(item)
        except Exception as exc:
            result = exc
        with self._cond:
            self._state.results[seq] = result
            self._cond.notify_all()

    def _waitables(self) -> list[Any]:
        objs: list[Any] = [self._wake_r]
        for w in self._workers:
            objs.append(w.conn)
            objs.append(w.process.sentinel)
        return objs

    def _wait_timeout(self) -> float | None:
        """Sleep until the nearest deadline (task timeout or worker start-up), or until woken."""
        now = time.monotonic()
        limits = [w.deadline for w in self._workers if w.deadline is not None]
        limits += [w.started_at + _START_TIMEOUT_S for w in self._workers if not w.ready]
        if not limits:
            return None
        return max(0.0, min(limits) - now)

    def _dispatch(self) -> None:
        """Hand queued tasks to idle ready workers; start workers (lazily, up to the maximum) as needed."""
        state = self._state
        for worker in list(self._workers):  # _send_task may retire a worker
            if not state.queue:
                return
            if worker.ready and worker.task is None:
                self._send_task(worker, state.queue.popleft())
        starting = sum(1 for w in self._workers if not w.ready)
        while len(self._workers) < self._max_workers and len(state.queue) > starting and not self._inline:
            self._start_worker()
            starting += 1

    def _send_task(self, worker: _Worker, seq: int) -> None:
        item = self._state.inputs[seq]
        try:
            message = pickle.dumps((seq, self._decode, item), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            self._state.results[seq] = VideoDecodeError(f"cannot send task to decode worker: {exc}")
            return
        try:
            worker.conn.send_bytes(message)
        except OSError:
            self._state.queue.appendleft(seq)  # the worker died before taking it: not the item's fault
            self._retire(worker)
            return
        worker.task = seq
        worker.deadline = time.monotonic() + self._timeout_s if self._timeout_s is not None else None

    def _start_worker(self) -> None:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=_worker_main,
            args=(child_conn, self._log_level, os.getpid()),
            name="mlb-decode",
            daemon=True,
        )
        with without_main(not self._needs_main):
            process.start()
        child_conn.close()  # the child has its own copy; closing ours lets us see EOF when it dies
        self._workers.append(_Worker(process=process, conn=parent_conn, started_at=time.monotonic()))
        logger.debug("started decode worker pid %s", process.pid)

    def _handle(self, ready: list[Any]) -> None:
        if self._wake_r in ready:
            while self._wake_r.poll():
                self._wake_r.recv_bytes()
        for worker in list(self._workers):
            if worker.conn in ready:
                self._receive(worker)
            elif worker.process.sentinel in ready and worker in self._workers:
                self._on_death(worker)

    def _receive(self, worker: _Worker) -> None:
        try:
            data = worker.conn.recv_bytes()
        except (EOFError, OSError):
            self._on_death(worker)
            return
        try:
            message = pickle.loads(data)
        except Exception as exc:
            message = (worker.task, False, VideoDecodeError(f"cannot read decode result: {exc}"))
        if isinstance(message, str) and message == _READY:
            worker.ready = True
            self._start_failures = 0
            return
        seq, ok, payload = message
        self._state.results[seq] = payload
        worker.task = None
        worker.deadline = None

    def _on_death(self, worker: _Worker) -> None:
        worker.process.join(timeout=_JOIN_GRACE_S)
        code = worker.process.exitcode
        if worker.task is not None:
            self._state.results[worker.task] = VideoDecodeError(
                f"decoder process crashed ({_describe_exit(code)})"
            )
            logger.warning("decode worker pid %s crashed (%s)", worker.process.pid, _describe_exit(code))
        if not worker.ready:
            self._start_failures += 1
            if self._start_failures >= _MAX_START_FAILURES:
                # Only a decode function from the caller's script makes workers re-run it (`spawning`)
                hint = (
                    " The decode function comes from your script, which each worker re-runs: guard "
                    "its top level with `if __name__ == '__main__':`."
                    if self._needs_main
                    else ""
                )
                logger.warning(
                    "decode workers keep dying at start-up (%s); decoding in the main process instead.%s",
                    _describe_exit(code),
                    hint,
                )
                self._inline = True
        self._retire(worker)

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        for worker in list(self._workers):
            if worker.task is not None and worker.deadline is not None and now >= worker.deadline:
                self._state.results[worker.task] = DecodeTimeout(
                    f"decoding took longer than {self._timeout_s:g}s and was abandoned"
                )
                logger.warning("decode worker pid %s timed out; killing it", worker.process.pid)
                worker.task = None
                self._retire(worker, kill=True)
            elif not worker.ready and now - worker.started_at >= _START_TIMEOUT_S:
                self._start_failures += 1
                self._inline = self._start_failures >= _MAX_START_FAILURES
                self._retire(worker, kill=True)

    def _retire(self, worker: _Worker, *, kill: bool = False) -> None:
        if worker in self._workers:
            self._workers.remove(worker)
        self._stop_worker(worker, graceful=not kill)

    def _stop_worker(self, worker: _Worker, *, graceful: bool) -> None:
        process = worker.process
        if graceful and process.is_alive():
            with contextlib.suppress(OSError):
                worker.conn.send_bytes(pickle.dumps(None))
            process.join(timeout=_JOIN_GRACE_S if worker.task is None else 0)
        if process.is_alive():
            process.kill()  # SIGKILL: a hung decoder may sit in C code that ignores SIGTERM's handler
            process.join(timeout=_JOIN_GRACE_S)
        with contextlib.suppress(OSError):
            worker.conn.close()
        with contextlib.suppress(Exception):
            process.close()


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


# --------------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------------


def prefetch(
    groups: Iterable[T],
    decode: Callable[[T], R],
    *,
    workers: int = 2,
    depth: int = 4,
    timeout_s: float | None = 120.0,
) -> Generator[tuple[T, R | BaseException], None, None]:
    """Yield ``(group, decode(group))`` in input order while later groups decode in the background.

    * ``depth``: how many groups may be queued, decoding or decoded ahead of the one the consumer takes
      next. Also the bound on decoded results held in memory.
    * ``workers``: decode processes (started lazily, reused). ``0`` decodes inline, one group at a time,
      without process isolation (a segfault ends the run), for tests and debugging. With
      ``timeout_s=None`` it runs in the caller's thread; with a timeout each decode runs in a helper
      thread that is abandoned (not killed: threads cannot be) when the timeout passes, so the group
      becomes a ``DecodeTimeout`` and the batch goes on, at the cost of one stuck daemon thread.
    * Errors are yielded as exception objects, never raised: ``decode``'s own exceptions, ``DecodeTimeout``
      when a decode runs past ``timeout_s`` (its worker is killed and replaced), ``VideoDecodeError`` when
      a worker crashes (segfault, ``os._exit``, out of memory).
    * ``decode`` and the groups must be picklable (a top-level function or a ``functools.partial`` of one).

    Closing the generator (or an exception in the consumer) stops and reaps all workers.
    """
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    if timeout_s is not None and not 0 < timeout_s < float("inf"):  # (inf overflows the waits)
        raise ValueError(f"timeout_s must be positive and finite, or None, got {timeout_s}")
    if workers == 0:
        return (
            _inline(groups, decode) if timeout_s is None else _inline_with_timeout(groups, decode, timeout_s)
        )
    _check_picklable(decode)
    return _pooled(groups, decode, workers=workers, depth=depth, timeout_s=timeout_s)


def _inline(
    groups: Iterable[T], decode: Callable[[T], R]
) -> Generator[tuple[T, R | BaseException], None, None]:
    for group in groups:
        try:
            result: R | BaseException = decode(group)
        except Exception as exc:
            result = exc
        yield group, result


def _inline_with_timeout(
    groups: Iterable[T], decode: Callable[[T], R], timeout_s: float
) -> Generator[tuple[T, R | BaseException], None, None]:
    """Inline decoding that still honours the timeout (``--workers 0 --decode-timeout S``).

    Why a thread and not a refusal: ``--decode-timeout`` has a default, so the CLI cannot tell a chosen
    timeout from the default one, and silently dropping it let one hung file (an ffconcat list pointing
    at a FIFO) stall the whole batch with no row written. A hung decoder cannot be killed in-process, so
    its daemon thread is left behind, blocked; it does not keep the process alive at exit.
    """
    for group in groups:
        outcome: list[Any] = []  # [result] or [exception], filled by the helper thread

        def run(group: T = group, outcome: list[Any] = outcome) -> None:
            try:
                outcome.append(decode(group))
            except Exception as exc:
                outcome.append(exc)

        thread = threading.Thread(target=run, name="mlb-decode-inline", daemon=True)
        thread.start()
        thread.join(timeout_s)
        if thread.is_alive():
            logger.warning("inline decode timed out after %gs; its thread is abandoned", timeout_s)
            yield group, DecodeTimeout(f"decoding took longer than {timeout_s:g}s and was abandoned")
        elif not outcome:  # decode ended by a BaseException other than Exception (SystemExit)
            yield group, VideoDecodeError("decoder thread ended without a result")
        else:
            yield group, outcome[0]


def _check_picklable(decode: Callable[..., Any]) -> None:
    """Fail at the call, not deep in the dispatcher, when ``decode`` cannot go to a worker."""
    try:
        pickle.dumps(decode)
    except Exception as exc:
        raise TypeError(
            f"prefetch with workers>0 needs a picklable decode function (top-level or functools.partial): {exc}"
        ) from exc


def _pooled(
    groups: Iterable[T],
    decode: Callable[[T], R],
    *,
    workers: int,
    depth: int,
    timeout_s: float | None,
) -> Generator[tuple[T, R | BaseException], None, None]:
    pool: _Pool[T, R] = _Pool(decode, workers, timeout_s)
    source = iter(groups)
    queued = taken = 0
    exhausted = False
    try:
        while True:
            while not exhausted and queued < taken + depth:
                try:
                    group = next(source)
                except StopIteration:
                    exhausted = True
                    break
                pool.submit(queued, group)
                queued += 1
            if taken >= queued:
                return
            group, result = pool.take(taken)
            taken += 1
            yield group, result
    finally:
        pool.close()
