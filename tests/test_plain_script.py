"""A library script written like the README's example, with no `if __name__ == "__main__":` guard.

Decode workers are `spawn` processes; a spawn child re-runs the parent's script unless mlb leaves
`__main__` out of what it sends (`io.spawning`). Each run of the script's top level prints a line, so
the count says whether the workers re-ran it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
