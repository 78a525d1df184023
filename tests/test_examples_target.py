"""`make examples` leaves a clean checkout clean: what it writes is ignored by git.

The Makefile, .gitignore and examples/ go into a fresh git repository (a stand-in for a clone), the
`examples` target runs there with its `install` prerequisite taken as done, and `git status` must show
nothing. Writing over the committed clips (as it did) shows them modified: the encoder stamps each file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t"}
    env["GIT_COMMITTER_EMAIL"] = "t@t"
    done = subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True)
    return done.stdout


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("git") is None, reason="needs make and git")
def test_make_examples_leaves_the_tree_clean(tmp_path):
    clone = tmp_path / "clone"
    clone.mkdir()
    for name in ("Makefile", ".gitignore", "constraints.txt"):
        shutil.copy(ROOT / name, clone / name)
    shutil.copytree(ROOT / "examples", clone / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    _git(clone, "init", "-q")
    _git(clone, "add", "-A")
    _git(clone, "commit", "-qm", "clone")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    bin_dir = str(Path(sys.executable).parent)
    done = subprocess.run(
        ["make", "-o", "install", "examples", f"BIN={bin_dir}"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    written = sorted(clone.glob("build/examples/clips/**/*.mp4"))
    assert len(written) == len(list((clone / "examples" / "clips").glob("**/*.mp4")))  # it did make them
    assert _git(clone, "status", "--porcelain", "--untracked-files=all") == ""
