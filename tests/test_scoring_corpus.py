"""The hand-checked scoring corpus (``tests/data/scoring_corpus.jsonl``): hard cases
public harnesses have been burned by, each with its source (a paper, a spec or a
public bug report), run through the reader it is about."""

import json
from pathlib import Path

import pytest

from evalsuite.scoring.equations import EquationSpec, verify
from evalsuite.scoring.needle import found_values
from tasks.gsm8k import flexible_extract, strict_match

CORPUS = [json.loads(line) for line in
          (Path(__file__).parent / "data" / "scoring_corpus.jsonl").read_text(encoding="utf-8").splitlines()]


def test_every_case_names_its_source_and_the_ids_are_unique():
    assert len(CORPUS) >= 40
    assert all(c["source"].strip() for c in CORPUS)
    assert len({c["id"] for c in CORPUS}) == len(CORPUS)
    assert {c["reader"] for c in CORPUS} == {"gsm8k", "equations", "needle"}


@pytest.mark.parametrize("case", [c for c in CORPUS if c["reader"] == "gsm8k"], ids=lambda c: c["id"])
def test_gsm8k_cases(case):
    assert strict_match(case["output"]) == case["strict"]
    assert flexible_extract(case["output"]) == case["flexible"]


@pytest.mark.parametrize("case", [c for c in CORPUS if c["reader"] == "equations"], ids=lambda c: c["id"])
def test_equations_cases(case):
    spec = EquationSpec(tuple(case["equations"]), tuple(case["variables"]),
                        tuple(tuple(s) for s in case["solutions"]), case["domain"], case["multiplicity"])
    assert verify(case["output"], spec).status == case["status"]


@pytest.mark.parametrize("case", [c for c in CORPUS if c["reader"] == "needle"], ids=lambda c: c["id"])
def test_needle_cases(case):
    assert bool(found_values(case["output"], [case["needle"]])) is case["found"]
