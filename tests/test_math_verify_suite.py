"""Math-Verify's own test suite, its scalar-answer cases, against evalsuite's equations reader.

The cases are in ``tests/data/math_verify_scalar_cases.json``, converted by
``tests/tools/convert_math_verify_suite.py`` from huggingface/Math-Verify at commit
5d148cfaaf99214c2e4ffb4bc497ab042c592a7a (MIT licence): each holds the gold as
written, its value in evalsuite's grammar, the prediction and the suite's
expected verdict. evalsuite reads the prediction with the equations reader (one
unknown, complex domain) and compares it with the gold value.
"""

import json
from pathlib import Path

import pytest

from evalsuite.scoring.equations import EquationSpec, verify

CASES = json.loads((Path(__file__).parent / "data" / "math_verify_scalar_cases.json").read_text(encoding="utf-8"))

# Every case where evalsuite's verdict differs from the suite's expected one, with the
# reason (the README's scoring section lists the same).
DISAGREEMENTS = {
    "tests/test_all.py:70": "'1000,99' uses a decimal comma; evalsuite's comma rule reads a list (1000 and 99)",
    "tests/test_all.py:72": "'Soucis : 2,74 $' uses a decimal comma; read as the list 2, 74",
    "tests/test_yujianll.py:28": "the suite is wrong: 1 + 1/e is not 1 - 1/e (math-verify reads both as 1)",
}


def evalsuite_verdict(case) -> int:
    spec = EquationSpec((), ("x",), ((case["gold_value"],),), "complex")
    return int(verify(case["pred"], spec).status == "right")


@pytest.fixture(scope="module")
def verdicts():
    return {c["source"]: (evalsuite_verdict(c), c["expected"]) for c in CASES["cases"]}


def test_the_conversion_names_its_source():
    about = CASES["about"]
    assert about["source"] == "https://github.com/huggingface/Math-Verify"
    assert about["commit"] == "5d148cfaaf99214c2e4ffb4bc497ab042c592a7a"
    assert len(CASES["cases"]) >= 100
    assert len({c["source"] for c in CASES["cases"]}) == len(CASES["cases"])


def test_at_least_95_percent_agree_with_the_suite(verdicts):
    agree = sum(ours == expected for ours, expected in verdicts.values())
    assert agree / len(verdicts) >= 0.95, agree


def test_no_answer_the_suite_calls_wrong_is_scored_right(verdicts):
    assert [s for s, (ours, expected) in verdicts.items() if expected == 0 and ours == 1] == []


def test_every_disagreement_is_the_documented_one(verdicts):
    assert {s for s, (ours, expected) in verdicts.items() if ours != expected} == set(DISAGREEMENTS)


def test_the_readme_lists_every_disagreement():
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    for source in DISAGREEMENTS:
        assert source in readme, source


def test_where_math_verify_itself_is_wrong_evalsuite_is_not():
    """1 + 1/e against the gold 1 - 1/e: math-verify (and its suite, which expects 1)
    calls it right; it is not, by exact arithmetic."""
    from math_verify import parse
    from math_verify import verify as mv_verify

    gold, pred = r"$1 - \frac{1}{\mathrm{e}}$", r"$1 + \frac{1}{\mathrm{e}}$"
    assert mv_verify(parse(gold), parse(pred)) is True      # math-verify's wrong verdict
    spec = EquationSpec((), ("x",), (("1 - 1/e",),), "complex")
    v = verify(pred, spec)
    assert (v.status, v.detail) == ("wrong", "missing 1 - exp(-1); extra exp(-1) + 1")
    assert verify(gold, spec).status == "right"
