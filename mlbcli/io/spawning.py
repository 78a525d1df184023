"""Start ``spawn`` worker processes without re-running the caller's script in them.

A ``spawn`` child first re-executes the parent's ``__main__`` (as ``__mp_main__``) so that functions
defined there can be unpickled. For a script written as the README shows it (``api.answer(...)`` at
the top level, no ``if __name__ == "__main__":`` guard) that re-runs the whole script in every decode
worker, which then tries to start workers of its own and dies. mlb's workers need nothing from
``__main__`` (their entry and the decode function live in ``mlbcli``), so while mlb starts one, the
preparation data it sends leaves ``__main__`` out.

How, and why this way: the stdlib has no per-process hook for the preparation data. Every start method
that sends it (``popen_spawn_posix``, ``popen_spawn_win32``, ``popen_forkserver``) calls the module
function ``multiprocessing.spawn.get_preparation_data`` from inside its private ``Popen._launch``, so a
``Process``/``Popen`` subclass could change it only by copying ``_launch`` (private code that differs
between CPython versions). Instead `without_main` wraps that module function for as long as at least
one block is open (reference-counted, so nested and concurrent blocks share one wrapper) and puts the
original back when the last one closes. While installed the wrapper filters only for threads inside a
block; for anyone else it returns the stdlib's data unchanged.
"""

from __future__ import annotations

import contextlib
import multiprocessing.spawn
import threading
from collections.abc import Callable, Iterator
from typing import Any

_PreparationData = Callable[[str], dict[str, Any]]

_local = threading.local()
_lock = threading.Lock()  # guards _depth, _original and _installed together
_depth = 0  # open `without_main` blocks, all threads together
_original: _PreparationData | None = None  # what `_installed` replaced
_installed: _PreparationData | None = None  # our wrapper, while _depth > 0
#: The keys through which a spawn child re-runs the parent's main module (CPython 3.8-3.13).
_MAIN_KEYS = ("init_main_from_path", "init_main_from_name")


def _filtered(original: _PreparationData) -> _PreparationData:
    def get_preparation_data(name: str) -> dict[str, Any]:
        data = original(name)
        if getattr(_local, "without_main", False):
            for key in _MAIN_KEYS:
                data.pop(key, None)
        return data

    return get_preparation_data


def _acquire() -> None:
    global _depth, _original, _installed
    with _lock:
        if _depth == 0:
            _original = multiprocessing.spawn.get_preparation_data
            _installed = _filtered(_original)
            multiprocessing.spawn.get_preparation_data = _installed  # type: ignore[assignment]
        _depth += 1


def _release() -> None:
    global _depth, _original, _installed
    with _lock:
        _depth -= 1
        if _depth > 0:
            return
        # If someone wrapped the function after us, putting the original back would drop their hook;
        # ours then stays beneath theirs, where (no thread inside a block) it only passes data through.
        if multiprocessing.spawn.get_preparation_data is _installed:
            multiprocessing.spawn.get_preparation_data = _original  # type: ignore[assignment]
        _original = _installed = None


@contextlib.contextmanager
def without_main(enabled: bool = True) -> Iterator[None]:
    """Processes started by this thread inside the block do not re-run ``__main__``.

    Blocks nest and may be open in several threads at once; the stdlib function is restored when the
    last one closes.
    """
    if not enabled:
        yield
        return
    _acquire()
    previous = getattr(_local, "without_main", False)  # an outer block keeps filtering after ours
    _local.without_main = True
    try:
        yield
    finally:
        _local.without_main = previous
        _release()


def needs_main(payload: Any) -> bool:
    """Whether pickling `payload` refers to ``__main__`` (a decode function the caller's script
    defined): the child must then import the script, as plain ``spawn`` does."""
    import pickle

    try:
        return b"__main__" in pickle.dumps(payload)
    except Exception:
        return True  # unpicklable: leave spawn as it is (the caller gets its own error)
