"""A library script written like the README's example, with no `if __name__ == "__main__":` guard.

Decode workers are `spawn` processes; a spawn child re-runs the parent's script unless mlb leaves
`__main__` out of what it sends (`io.spawning`). Each run of the script's top level prints a line, so
the count says whether the workers re-ran it.
"""

from __future__ import annotations

import json
import multiprocessing.spawn
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from helpers_video import scripted_decode

from mlbcli.io.prefetch import prefetch
from mlbcli.io.spawning import without_main

SCRIPT = """
from mlbcli import api

print("top level ran", flush=True)
summary = api.answer(
    [{clips!r}],
    question="What is shown?",
    model={model!r},
    method="uniform",
    keep=0.5,
    progress=False,
    run=api.RunOptions(out="answers.jsonl", workers=2),
)
print("ok", summary.ok, flush=True)
"""


def _run(script: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, str(script)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_a_script_without_a_main_guard_runs_once(tiny_model_dir, clips_dir, tmp_path):
    script = tmp_path / "answer_clips.py"
    script.write_text(SCRIPT.format(clips=str(clips_dir), model=str(tiny_model_dir)))
    result = _run(script, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["top level ran", "ok 3"], result.stdout  # not once per worker
    assert "keep dying" not in result.stderr  # the workers started: no fall back to inline decoding
    rows = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert sorted(Path(row["video_path"]).name for row in rows) == ["a.mp4", "b.mp4", "c.mp4"]
    assert all(row["error"] is None for row in rows)


def test_a_decode_function_from_the_script_still_reaches_the_workers(tmp_path):
    """Workers skip `__main__` only for mlb's own decode functions: one the script defines needs it."""
    script = tmp_path / "own_decode.py"
    script.write_text(
        "from mlbcli.io.prefetch import prefetch\n"
        "def square(x):\n    return x * x\n"
        "if __name__ == '__main__':\n"
        "    print([r for _, r in prefetch([1, 2, 3], square, workers=2, depth=2, timeout_s=60)])\n"
    )
    result = _run(script, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[1, 4, 9]"
    assert "keep dying" not in result.stderr


# --------------------------------------------------------------------------------------------------
# `without_main` itself: the stdlib function is wrapped only while a block is open.
# --------------------------------------------------------------------------------------------------

_MAIN_KEYS = {"init_main_from_path", "init_main_from_name"}


def _reruns_main() -> bool:
    """Whether a spawn child started now by this thread would re-run ``__main__`` (pytest's here)."""
    return bool(_MAIN_KEYS & multiprocessing.spawn.get_preparation_data("probe").keys())


def test_the_stdlib_function_is_the_original_again_after_a_run():
    original = multiprocessing.spawn.get_preparation_data
    assert _reruns_main()  # the premise: under pytest a plain spawn child would import __main__
    out = list(prefetch([("ok", 1, None), ("ok", 2, None)], scripted_decode, workers=2, timeout_s=60))
    assert [result for _, result in out] == [2, 4]
    assert multiprocessing.spawn.get_preparation_data is original
    assert _reruns_main()


def test_nested_blocks_keep_filtering_until_the_outer_one_ends():
    original = multiprocessing.spawn.get_preparation_data
    with without_main():
        assert not _reruns_main()
        with without_main():
            assert not _reruns_main()
        assert not _reruns_main()  # the inner block put back the outer one's setting, not False
        with without_main(enabled=False):  # off means "leave spawn alone", not "switch the outer off"
            assert not _reruns_main()
        assert multiprocessing.spawn.get_preparation_data is not original
    assert multiprocessing.spawn.get_preparation_data is original
    assert _reruns_main()


def test_concurrent_blocks_filter_only_their_own_thread_and_restore_after_the_last():
    original = multiprocessing.spawn.get_preparation_data
    seen: dict[str, Any] = {}
    entered, first_left, release = threading.Event(), threading.Event(), threading.Event()

    def long_block() -> None:
        with without_main():
            entered.set()
            first_left.wait(10)
            seen["after the other block ended"] = _reruns_main()
            release.wait(10)

    thread = threading.Thread(target=long_block)
    thread.start()
    try:
        assert entered.wait(10)
        assert _reruns_main()  # another thread's block does not change what this thread sends
        with without_main():
            assert not _reruns_main()
        first_left.set()
        assert multiprocessing.spawn.get_preparation_data is not original  # one block is still open
    finally:
        first_left.set()
        release.set()
        thread.join(10)
    assert seen == {"after the other block ended": False}
    assert multiprocessing.spawn.get_preparation_data is original


def test_a_hook_installed_over_ours_is_not_dropped():
    original = multiprocessing.spawn.get_preparation_data
    calls: list[str] = []
    try:
        with without_main():
            ours = multiprocessing.spawn.get_preparation_data

            def theirs(name: str) -> dict[str, Any]:
                calls.append(name)
                return ours(name)

            multiprocessing.spawn.get_preparation_data = theirs  # type: ignore[assignment]
        assert multiprocessing.spawn.get_preparation_data is theirs
        assert _reruns_main()  # ours, left beneath theirs, only passes data through
        assert calls == ["probe"]
    finally:
        multiprocessing.spawn.get_preparation_data = original  # type: ignore[assignment]
