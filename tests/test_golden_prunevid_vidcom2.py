"""The `official` variants of VidCom2 and PruneVid against the authors' code (tests/golden/methods/,
made by make_official_vidcom2_prunevid.py; provenance in vidcom2.json / prunevid.json).

VidCom2: xuyang-liu16/VidCom2's `vidcom2_compression` on LLaVA-OneVision's path. PruneVid:
Visual-AI/PruneVid's `merge_frames_dynamic` (before the LLM) and `VTPWindowCache.process_attention`
(after its layer 10, mlb's --layer 11) fed the same [n] attention as mlb; how that attention is
aggregated (PLLaVA and mlb's official variant: max over heads and query rows, `PrunePlan.probe_reduce`)
is outside these fixtures (tests/test_probe.py checks the reduction).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from mlbcli import select_tokens
from mlbcli.selection.ops.vidcom2 import vidcom2_count, vidcom2_scores

FOLDER = Path(__file__).parent / "golden" / "methods"
METHODS = ("vidcom2", "prunevid")


def cases(method: str) -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = torch.load(FOLDER / f"{method}.pt", weights_only=True)
    return loaded


def assert_same(sel: Any, reference: dict[str, Any], name: str) -> None:
    """Set-exact, order exact (the fixtures are tie-free), states within 1e-5, positions exact."""
    assert set(sel.ids.tolist()) == set(reference["ids"].tolist()), name
    assert torch.equal(sel.ids, reference["ids"]), name
    assert torch.allclose(sel.states, reference["states"].to(sel.states.dtype), atol=1e-5), name
    assert torch.equal(sel.positions, reference["positions"]), name


@pytest.mark.parametrize("method", METHODS)
def test_provenance_names_the_official_code(method):
    provenance = json.loads((FOLDER / f"{method}.json").read_text())
    assert len(provenance["commit"]) == 40 and provenance["file"] and provenance["how"]
    first, last = provenance["lines"]
    assert 0 < first < last
    assert provenance["cases"] == len(cases(method)) >= 12


def test_vidcom2_official_equals_the_authors_code_on_tie_free_cases():
    tie_free = [case for case in cases("vidcom2") if case["ordered"]]
    assert len(tie_free) >= 40
    for case in tie_free:
        sel = select_tokens("vidcom2", case["features"], keep=case["keep"], variant="official")
        assert_same(sel, case, f"vidcom2 {case['name']}")


def test_vidcom2_tied_cases_keep_equally_scored_tokens():
    """Equal scores at a frame's budget edge: the authors' set is torch.topk's choice, mlb's the lower
    index; the count per frame, the kept scores and the positions are the same."""
    tied = [case for case in cases("vidcom2") if not case["ordered"]]
    assert tied
    for case in tied:
        x = case["features"]
        T, N, _ = x.shape
        sel = select_tokens("vidcom2", x, keep=case["keep"], variant="official")
        name = f"vidcom2 {case['name']}"
        assert torch.equal(
            torch.bincount(sel.ids // N, minlength=T), torch.bincount(case["ids"] // N, minlength=T)
        )
        scores = vidcom2_scores(x, case["keep"])[0].flatten()
        assert torch.equal(scores[sel.ids].sort().values, scores[case["ids"]].sort().values), name
        assert torch.equal(sel.positions, case["positions"]), name


def test_vidcom2_official_misses_the_budget_where_the_authors_code_does():
    """The authors' count is the sum of the per-frame roundings; `vllm` keeps exactly its count."""
    off = 0
    for case in cases("vidcom2"):
        x, keep = case["features"], case["keep"]
        T, N, _ = x.shape
        official = select_tokens("vidcom2", x, keep=keep, variant="official")
        vllm = select_tokens("vidcom2", x, keep=keep, variant="vllm")
        assert len(official) == len(case["ids"])
        assert len(vllm) == vidcom2_count(T, N, keep)  # max(T, int(T*N*(1-q))), q = 1 - keep
        assert torch.equal(vllm.positions, vllm.ids)  # original positions
        off += len(official) != len(vllm)
    assert off > 0


def prunevid(case: dict[str, Any], attention: torch.Tensor | None = None) -> Any:
    return select_tokens(
        "prunevid",
        case["features"],
        variant="official",
        grid=tuple(case["grid"]),
        attention=attention,
        **case["params"],
    )


def test_prunevid_official_merge_equals_pllava():
    for case in cases("prunevid"):
        sel = prunevid(case)
        assert sel.layers == [0]
        assert_same(sel, case["merge"], f"prunevid merge {case['name']}")


def test_prunevid_official_selection_equals_pllava():
    """The same [n] attention over the merged tokens on both sides; official: alpha 0.4 after layer 11."""
    for case in cases("prunevid"):
        sel = prunevid(case, case["attention"])
        assert sel.layers == [0, 11]
        assert_same(sel, case, f"prunevid select {case['name']}")


def test_prunevid_fixtures_cover_static_dynamic_clustered_and_segmented_videos():
    merges = [case["merge"] for case in cases("prunevid")]
    assert any(sum(m["static_sizes"]) and sum(m["dynamic_sizes"]) for m in merges)
    assert any(len(m["windows"]) > 1 for m in merges)
    assert any(size > 14 for m in merges for size in m["static_sizes"])  # merged size > 14: clustered
    assert any(0 < size <= 14 for m in merges for size in m["static_sizes"])  # left as is
