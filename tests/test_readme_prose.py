"""The README's prose (outside its generated tables) agrees with the code.

Issue 22 found the prose contradicting the code: a relevance temperature of 1.0 (the code's is 0.05),
FastV's default query the wrong way round, "DyCoke KV not implemented" and "GAPool pool mode not built"
while both run. The generated tables are checked by `docs/update_readme.py`'s own test; these check the
sentences around them against the same declarations.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mlbcli.selection import describe_methods
from mlbcli.selection.registry import parameter_declarations

README = Path(__file__).resolve().parents[1] / "README.md"


def prose() -> str:
    """The README without its generated blocks."""
    text = README.read_text()
    return re.sub(r"<!-- generated: (\w+) -->.*?<!-- end: \1 -->", "", text, flags=re.S)


def sentences(text: str) -> list[str]:
    return [" ".join(part.split()) for part in re.split(r"(?<=[.;])\s+|\n\n|\n- ", text)]


# How the reconstruction notes name AdaTP's parameters besides their own names (algorithms.md's symbols).
ALIASES = {
    "relevance_temperature": ("T", "T_r"),
    "segment_threshold": ("τ_s",),
    "min_segment_budget": ("floor",),
    "dedup_threshold": ("dedup",),
}


def test_parameter_values_named_in_prose_are_the_defaults():
    """`name` 0.05, `--name` = 0.05 or T = 1.0 in prose must be the declared default."""
    text = prose()
    declared = parameter_declarations()
    for name, info in declared.items():
        if info.default is None or isinstance(info.default, bool):
            continue
        names = [f"`{re.escape(name)}`", f"`--{re.escape(name.replace('_', '-'))}`"]
        names += [rf"(?<![\w`]){re.escape(alias)}" for alias in ALIASES.get(name, ())]
        pattern = rf"(?:{'|'.join(names)})\s*(?:=\s*)?(-?\d+(?:\.\d+)?)(?![\d.])"
        for match in re.finditer(pattern, text):
            assert float(match.group(1)) == pytest.approx(float(info.default)), (name, match.group(0))


def test_the_reconstruction_notes_name_the_parameters_whose_defaults_the_tables_give():
    """AdaTP's thresholds are named, not restated: the generated tables hold their values."""
    adatp = next(s for s in prose().split("\n- ") if s.startswith("**adatp**"))
    declared = parameter_declarations()
    for name in ALIASES:
        assert name in declared and "adatp" in declared[name].methods
        assert f"`{name}`" in adatp, name


def test_default_query_rows_as_the_code_says():
    """Where the prose says which query rows FastV uses by default, they are the code's default."""
    defaults = {row.name: row.default_query for row in describe_methods() if row.default_query}
    said = [s for s in sentences(prose()) if "FastV" in s and "--query" in s and "default" in s]
    assert said, "the README says nowhere which query rows FastV uses by default"
    for sentence in said:
        for default in re.finditer(r"\bdefault\b", sentence):
            named = re.findall(r"--query (\w+)", sentence[: default.start()])
            if named:  # the query named nearest before "default" is the one said to be the default
                assert named[-1] == defaults["fastv"], sentence


# A feature the code runs (its switch is a declared parameter) must not be called missing.
FEATURES = [("dycoke_kv", r"\bKV\b"), ("pool_temperature", r"pool\W* mode")]


@pytest.mark.parametrize(("parameter", "feature"), FEATURES)
def test_features_that_run_are_not_called_missing(parameter, feature):
    assert parameter in parameter_declarations()  # the feature is built: its switch exists
    for sentence in sentences(prose()):
        for clause in re.split(r"[;,]", sentence):
            missing = re.search(r"not (implemented|built)", clause)
            assert not (missing and re.search(feature, clause, re.I)), sentence
