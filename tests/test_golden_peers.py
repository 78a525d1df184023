"""The `official` variants of the peers whose official code lives outside a model fork, against that
code (tests/golden/methods/, made by make_official_peers.py): EVS (vLLM's `compute_retention_mask`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from mlbcli import select_tokens

FOLDER = Path(__file__).parent / "golden" / "methods"
METHODS = ("evs",)


def cases(method: str) -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = torch.load(FOLDER / f"{method}.pt", weights_only=True)
    return loaded


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
        sel = select_tokens(
            method,
            case["features"],
            keep=case["keep"],
            variant="official",
            saliency=case["saliency"],
            grid=tuple(case["grid"]),
            **case["params"],
        )
        name = f"{method} {case['name']}"
        assert torch.equal(sel.ids, case["ids"]), name  # tie-free inputs: set and order
        assert torch.allclose(sel.states, case["states"].to(sel.states.dtype), atol=1e-5), name
        assert torch.equal(sel.positions, case["positions"]), name


def test_evs_cases_span_the_first_frame_floor_and_the_budget():
    """The fixtures exercise both of vLLM's counts: int(T*N*keep) and the whole-first-frame floor."""
    floors = budgets = 0
    for case in cases("evs"):
        T, N = case["features"].shape[:2]
        count = len(case["ids"])
        assert set(range(N)) <= set(case["ids"].tolist())  # the first frame, always
        floors += count == N > int(T * N * case["keep"])
        budgets += count == int(T * N * case["keep"]) > N
    assert floors and budgets
