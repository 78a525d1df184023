"""The local task's functions (lmms-eval loads them through `!function utils.NAME` in mlb_toy.yaml)."""

from __future__ import annotations

from typing import Any


def doc_to_visual(doc: dict[str, Any]) -> list[str]:
    """One video per doc: the clip path the test wrote into the doc."""
    return [doc["video"]]


def doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None) -> str:
    return doc["question"]


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """Exact match of the reply with the doc's target (the test makes targets from mlb's own replies)."""
    return {"exact_match": float(results[0] == doc["target"])}
