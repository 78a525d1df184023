"""Start ``spawn`` worker processes without re-running the caller's script in them.

A ``spawn`` child first re-executes the parent's ``__main__`` (as ``__mp_main__``) so that functions
defined there can be unpickled. For a script written as the README shows it (``api.answer(...)`` at
the top level, no ``if __name__ == "__main__":`` guard) that re-runs the whole script in every decode
worker, which then tries to start workers of its own and dies. mlb's workers need nothing from
``__main__`` (their entry and the decode function live in ``mlbcli``), so while mlb starts one, the
preparation data it sends leaves ``__main__`` out. Other ``spawn`` users are not affected: the filter
applies only inside `without_main` and only to the thread that entered it.
"""

from __future__ import annotations

import contextlib
import multiprocessing.spawn
import threading
from collections.abc import Callable, Iterator
from typing import Any

_local = threading.local()
_install_lock = threading.Lock()
#: The keys through which a spawn child re-runs the parent's main module (CPython 3.8-3.13).
_MAIN_KEYS = ("init_main_from_path", "init_main_from_name")


def _filtered(original: Callable[[str], dict[str, Any]]) -> Callable[[str], dict[str, Any]]:
    def get_preparation_data(name: str) -> dict[str, Any]:
        data = original(name)
        if getattr(_local, "without_main", False):
            for key in _MAIN_KEYS:
                data.pop(key, None)
        return data

    get_preparation_data.mlb_filtered = True  # type: ignore[attr-defined]
    return get_preparation_data


def _install() -> None:
    """Wrap `multiprocessing.spawn.get_preparation_data` once (it is what spawn and forkserver call)."""
    with _install_lock:
        current = multiprocessing.spawn.get_preparation_data
        if not getattr(current, "mlb_filtered", False):
            multiprocessing.spawn.get_preparation_data = _filtered(current)  # type: ignore[assignment]


@contextlib.contextmanager
def without_main(enabled: bool = True) -> Iterator[None]:
    """Processes started by this thread inside the block do not re-run ``__main__``."""
    if not enabled:
        yield
        return
    _install()
    _local.without_main = True
    try:
        yield
    finally:
        _local.without_main = False


def needs_main(payload: Any) -> bool:
    """Whether pickling `payload` refers to ``__main__`` (a decode function the caller's script
    defined): the child must then import the script, as plain ``spawn`` does."""
    import pickle

    try:
        return b"__main__" in pickle.dumps(payload)
    except Exception:
        return True  # unpicklable: leave spawn as it is (the caller gets its own error)
