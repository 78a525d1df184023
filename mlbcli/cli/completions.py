"""Shell completion scripts for `mlb` (bash, zsh, fish), generated from the Typer app.

`python -m mlbcli.cli.completions completions/` rewrites the committed scripts; a test fails when they are
not current. Install: `source completions/mlb.bash` (bash), copy `completions/_mlb` into a folder of
`$fpath` (zsh), or `completions/mlb.fish` into `~/.config/fish/completions/` (fish). The scripts call
back into `mlb` for the candidates, so new options complete without regenerating them.
"""

from __future__ import annotations

import sys
from pathlib import Path

FILES = {"bash": "mlb.bash", "zsh": "_mlb", "fish": "mlb.fish"}


def render(shell: str) -> str:
    from typer._completion_shared import get_completion_script

    return get_completion_script(prog_name="mlb", complete_var="_MLB_COMPLETE", shell=shell).rstrip() + "\n"


def write_all(folder: str | Path) -> list[Path]:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for shell, name in FILES.items():
        (out / name).write_text(render(shell))
        written.append(out / name)
    return written


if __name__ == "__main__":
    for path in write_all(sys.argv[1] if len(sys.argv) > 1 else "completions"):
        print(path)
