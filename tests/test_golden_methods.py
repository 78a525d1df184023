"""Every pre-LLM peer's `official` variant against its official code (tests/golden/methods/).

The fixtures hold the official selection code's outputs on small random / static / drifting / cut
videos (inputs included, tie-free by construction); their provenance (repository, commit, file,
line range, how it was run) is the JSON beside each. `make_official.py` regenerates them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from mlbcli import select_tokens

FOLDER = Path(__file__).parent / "golden" / "methods"
METHODS = ("fastvid", "holitom", "visionzip")


def cases(method: str) -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = torch.load(FOLDER / f"{method}.pt", weights_only=True)
    return loaded


def select(method: str, case: dict[str, Any]) -> Any:
    grid = tuple(case["grid"]) if "grid" in case else None
    return select_tokens(
        method,
        case["features"],
        keep=case["keep"],
        variant="official",
        saliency=case["saliency"],
        frame_features=case.get("frame_features"),
        grid=grid,
        **case["params"],
    )


@pytest.mark.parametrize("method", METHODS)
def test_provenance_names_the_official_code(method):
    provenance = json.loads((FOLDER / f"{method}.json").read_text())
    assert len(provenance["commit"]) == 40 and provenance["file"] and provenance["how"]
    first, last = provenance["lines"]
    assert 0 < first < last
    assert provenance["cases"] == len(cases(method)) >= 12


@pytest.mark.parametrize("method", METHODS)
def test_official_variant_equals_the_official_code(method):
    for case in cases(method):
        sel = select(method, case)
        name = f"{method} {case['name']}"
        assert set(sel.ids.tolist()) == set(case["ids"].tolist()), name
        if case["ordered"]:  # tie-free inputs: the entry order is the official one
            assert torch.equal(sel.ids, case["ids"]), name
            assert torch.allclose(sel.states, case["states"].to(sel.states.dtype), atol=1e-5), name
        else:
            order = sel.ids.argsort()
            reference = case["ids"].argsort()
            assert torch.allclose(sel.states[order], case["states"][reference], atol=1e-5), name
        assert torch.equal(sel.positions, case["positions"]), name


@pytest.mark.parametrize("method", METHODS)
def test_the_saliency_given_is_the_saliency_read(method):
    """The fixtures' tower attention decides: the proxy instead of it changes what is kept."""
    changed = 0
    for case in cases(method)[:12]:
        proxy = select_tokens(
            method,
            case["features"],
            keep=case["keep"],
            variant="official",
            frame_features=case.get("frame_features"),
            grid=tuple(case["grid"]) if "grid" in case else None,
            **case["params"],
        )
        changed += set(proxy.ids.tolist()) != set(case["ids"].tolist())
    assert changed > 0
