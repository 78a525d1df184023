"""DyCoke `--variant official` equals the official code (KD-TAO/DyCoke at the commit in the provenance) on
the golden fixtures `tests/golden/methods/dycoke_*` (made by `dycoke_generate.py`, which runs that code).

TTM: the same kept set, the same states (within 1e-5), the same order where no similarities tie, and
contiguous positions (the code concatenates). KV: the same visible video keys at every decode step.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mlbcli import replay_kv, select_tokens

HERE = Path(__file__).parent / "golden" / "methods"


@cache
def provenance() -> dict[str, Any]:
    return json.loads((HERE / "dycoke_provenance.json").read_text())


@cache
def arrays(name: str) -> dict[str, np.ndarray]:
    with np.load(HERE / name) as data:
        return {key: data[key] for key in data.files}


def ttm_case(case: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """(features [T, N, D], official ids [K] in the code's order, mlb's official selection)."""
    data = arrays("dycoke_ttm.npz")
    features = torch.from_numpy(data[case["features"]])
    expected = torch.from_numpy(data[f"{case['name']}_ids"]).long()
    params = {"merge_ratio": case["merge_ratio"]} if "merge_ratio" in case else {}
    sel = select_tokens("dycoke", features, case.get("keep"), variant="official", **params)
    return features, expected, sel


def kv_case(case: dict[str, Any]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(official visible keys per step, mlb's replay) of one recorded attention sequence."""
    data = arrays("dycoke_kv.npz")
    attention = torch.from_numpy(data[f"{case['name']}_attention"])  # [S, n]
    counts = data[f"{case['name']}_counts"].tolist()
    flat = torch.from_numpy(data[f"{case['name']}_visible"]).long()
    expected = list(torch.split(flat, counts))
    replayed = replay_kv(
        "dycoke", attention, variant="official", dycoke_kv_ratio=case["P"], dycoke_kv_layer=case["L"]
    )
    return expected, replayed


TTM = provenance()["ttm_cases"]
KV = provenance()["kv_cases"]


def test_the_fixtures_name_the_official_commit_and_cover_the_cases_asked_for():
    p = provenance()
    assert p["repository"].endswith("KD-TAO/DyCoke") and len(p["commit"]) == 40
    assert {c["video"] for c in TTM} == {"random", "static", "drifting", "cut"}
    assert {c.get("keep") for c in TTM} >= {0.1, 0.25, 0.5}
    assert {c["T"] % 2 for c in TTM} == {0, 1}  # odd lengths: the code drops the last frame
    pruned = [flag for c in KV for flag in c["pruned"]]
    assert any(pruned) and not all(pruned)  # steps below and above the threshold
    assert all(c["pruned"][0] for c in KV)  # the first step has nothing to compare with: it prunes


@pytest.mark.parametrize("case", TTM, ids=[c["name"] for c in TTM])
def test_ttm_official_keeps_the_official_tokens_states_order_and_positions(case: dict[str, Any]):
    features, expected, sel = ttm_case(case)
    assert set(sel.ids.tolist()) == set(expected.tolist())
    flat = features.reshape(-1, features.shape[-1])
    official_states = flat[expected]  # the code copies rows (asserted by the generator)
    order = {int(i): r for r, i in enumerate(expected)}
    mine = sel.states[[order[int(i)] for i in sel.ids]]  # mlb's states, rows matched by id
    assert torch.allclose(mine, official_states, atol=1e-5, rtol=0)
    assert torch.equal(sel.positions, torch.arange(len(sel)))  # concatenated: contiguous
    if case["tie_free"]:
        assert torch.equal(sel.ids, expected)
        assert torch.allclose(sel.states, official_states, atol=1e-5, rtol=0)


def test_ttm_official_reports_when_keep_is_below_its_floor():
    notes = [ttm_case(c)[2].keep_note for c in TTM if c.get("keep") == 0.1]
    assert notes and all(note and "whole" in note for note in notes)
    met = [ttm_case(c)[2].keep_note for c in TTM if c.get("keep") == 0.5]
    assert met and all(note is None for note in met)


@pytest.mark.parametrize("case", KV, ids=[c["name"] for c in KV])
def test_kv_official_shows_the_official_keys_at_every_step(case: dict[str, Any]):
    expected, replayed = kv_case(case)
    assert len(replayed) == len(expected)
    for step, (mine, theirs) in enumerate(zip(replayed, expected, strict=True)):
        assert torch.equal(mine, theirs), f"step {step}"
