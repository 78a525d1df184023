"""Helpers shared by the video/sources/prefetch tests.

Not a conftest (the lead owns ``tests/conftest.py``): test modules import this by name, which works
because pytest puts ``tests/`` on ``sys.path`` for rootdir-relative test modules without ``__init__.py``.
The decode functions live at module top level so ``spawn`` worker processes can unpickle them.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlbcli.io.video import make_test_video


def clip_factory(root: Path) -> Callable[..., Path]:
    """Return ``make(name, **kwargs) -> Path`` writing synthetic clips under ``root``."""

    def make(name: str = "clip.mp4", **kwargs: Any) -> Path:
        return make_test_video(root / name, **kwargs)

    return make


# --------------------------------------------------------------------------------------------------
# Decode functions for prefetch tests: a task is (action, value, marker_dir or None).
# --------------------------------------------------------------------------------------------------


def scripted_decode(task: tuple[str, Any, str | None]) -> Any:
    """Behave as the task says; leave a ``started-<value>`` marker first when a marker dir is given."""
    action, value, marker_dir = task
    if marker_dir is not None:
        Path(marker_dir, f"started-{value}").touch()
    if action == "ok":
        return value * 2
    if action == "slow":
        time.sleep(0.05)
        return value * 2
    if action == "raise":
        raise ValueError(f"bad item {value}")
    if action == "hang":
        time.sleep(3600)
    if action == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    if action == "exit":
        os._exit(7)
    if action == "unpicklable_error":
        raise _NeedsTwoArgs("a", "b")
    raise AssertionError(f"unknown action {action}")


class _NeedsTwoArgs(Exception):
    """Pickles, but unpickling calls ``__init__`` with one argument and fails."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a}-{b}")
        self.a, self.b = a, b


def decode_clip(path: str) -> Any:
    """Worker-side decode of a real clip (8 uniform frames)."""
    from mlbcli.io.video import decode_frames

    return decode_frames(path, num_frames=8)
