"""Rewrite the README's generated blocks from the code (`make readme`; a test checks they are current).

A block stands between `<!-- generated: NAME -->` and `<!-- end: NAME -->`; NAME picks its generator.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def generators() -> dict[str, Callable[[], str]]:
    from mlbcli.selection.registry import methods_markdown, parameters_markdown

    return {"methods": methods_markdown, "parameters": parameters_markdown}


def render(text: str) -> str:
    """`text` with every generated block replaced by its generator's current output."""
    for name, generate in generators().items():
        pattern = re.compile(rf"(<!-- generated: {name} -->\n).*?(<!-- end: {name} -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md has no generated block {name!r}")
        text = pattern.sub(lambda m, g=generate: m.group(1) + g() + m.group(2), text)
    return text


if __name__ == "__main__":
    current = README.read_text(encoding="utf-8")
    updated = render(current)
    if "--check" in sys.argv[1:]:
        sys.exit(0 if updated == current else "README.md is out of date: run `make readme`")
    README.write_text(updated, encoding="utf-8")
