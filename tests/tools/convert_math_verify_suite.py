"""Converts the scalar-answer cases of Math-Verify's own test suite into
``tests/data/math_verify_scalar_cases.json`` (run by ``tests/test_math_verify_suite.py``).

Source: https://github.com/huggingface/Math-Verify, ``tests/*.py`` at commit
5d148cfaaf99214c2e4ffb4bc497ab042c592a7a (2025-07-02), MIT licence
(Copyright (c) 2024 The HuggingFace Team). Only the case data (gold, prediction,
expected verdict) is taken, with its file and line.

Usage (needs a checkout of that commit and the ``math-verify`` package, which
classifies the golds)::

    git clone https://github.com/huggingface/Math-Verify /tmp/mv && git -C /tmp/mv checkout 5d148cf
    python tests/tools/convert_math_verify_suite.py /tmp/mv/tests > tests/data/math_verify_scalar_cases.json

Which cases: every ``(gold, pred, expected)`` row of a ``pytest.mark.parametrize``
whose gold denotes one number: math-verify's parse of it is a closed expression
(no free symbol, finite value, percent included) or names one (``x = 11``,
``z = 1 + 1 = 2``). ``GOLD_VALUES`` gives the gold as evalsuite's grammar reads it
where that differs from the expression math-verify printed (hand-checked, reason
given); ``EXCLUDED`` lists rows that pass the test above but whose gold is not
one number.
"""

from __future__ import annotations

import ast
import json
import math
import sys
from pathlib import Path

COMMIT = "5d148cfaaf99214c2e4ffb4bc497ab042c592a7a"

PERCENT = "a percentage: evalsuite reads % as a unit (28% is 28), math-verify as 1/100 (28% is 7/25)"
# (file, gold or its first 40 characters) -> (gold value in evalsuite's grammar, why)
GOLD_VALUES = {
    ("test_all.py", "1,22"): ("1.22", "decimal comma in the gold: the suite means 1.22"),
    ("test_all.py", "0,111"): ("0.111", "decimal comma in the gold: the suite means 0.111"),
    ("test_all.py", "$28\\%$"): ("28", PERCENT),
    ("test_all.py", "$20\\%$"): ("20", PERCENT),
    ("test_all.py", "$100%$"): ("100", PERCENT),
    ("test_all.py", "Let's assume the stock's value at the be"): ("28", PERCENT),
    ("test_all.py", "Let the percentage of people in Mathopol"): ("20", PERCENT),
    ("test_all.py", "$204_5$"): ("204_5", "a base-5 numeral (54); math-verify drops the base"),
    ("test_all.py", "$1112112_3$"): ("1112112_3", "a base-3 numeral; math-verify drops the base"),
    ("test_yujianll.py", "$1 - \\frac{1}{\\mathrm{e}}$"):
        ("1 - 1/e", "math-verify parses \\mathrm{e} so that the whole gold reads as 1"),
}
# (file, gold) -> why the row is left out although math-verify parses one number
EXCLUDED = {
    ("test_numina_cases.py", "\\\\boxed{W(n) = 1 \\\\text{ and } W(n) = -1"):
        "two values (1 and -1); math-verify's parse keeps only the last",
    ("test_open_thoughts.py", "\\boxed{1} no no no no no \\boxed{2}"):
        "two values (1 and 2); math-verify's parse keeps only the last",
}


def parametrized_rows(folder: Path):
    """``(file, line, test, row dict)`` for every parametrize row with a gold."""
    for path in sorted(folder.glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef):
                continue
            for dec in fn.decorator_list:
                if not (isinstance(dec, ast.Call) and getattr(dec.func, "attr", "") == "parametrize"):
                    continue
                names = ast.literal_eval(dec.args[0])
                names = [n.strip() for n in (names.split(",") if isinstance(names, str) else names)]
                if "gold" not in names:
                    continue
                for node in dec.args[1].elts:
                    try:
                        values = ast.literal_eval(node)
                    except ValueError:  # an f-string row (test_float_precision): our own checkout's literal
                        values = eval(compile(ast.Expression(node), str(path), "eval"), {"math": math})
                    row = dict(zip(names, values if isinstance(values, tuple) else (values,)))
                    yield path.name, node.lineno, fn.name, row


def scalar_gold(gold: str):
    """The number math-verify reads the gold as, or None when it is not one number."""
    import sympy
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    parsed = parse(gold, [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()])
    if not parsed:
        return None
    e = parsed[0]
    if isinstance(e, sympy.And) and all(isinstance(a, sympy.Eq) for a in e.args):
        # a chain z = 1 + 1 = 2 is a conjunction of equalities: its last side is no left side
        ends = {a.rhs for a in e.args} - {a.lhs for a in e.args}
        if len(ends) != 1:
            return None
        e = sympy.Eq(sympy.Symbol("_"), ends.pop())
    if isinstance(e, sympy.Eq) and isinstance(e.lhs, sympy.Symbol):
        e = e.rhs
    if not isinstance(e, sympy.Expr) or isinstance(e, sympy.MatrixBase) or e.free_symbols:
        return None
    e = e.doit()  # percent is 28 * UnevaluatedExpr(1/100)
    try:
        z = complex(sympy.N(e))
    except (TypeError, ValueError):
        return None
    return e if math.isfinite(z.real) and math.isfinite(z.imag) else None


def as_grammar(value) -> str:
    """A sympy number as evalsuite's grammar writes it (floats without padding zeros)."""
    import re

    import sympy

    text = sympy.sstr(value)
    return re.sub(r"(\.\d*?)0+(?!\d)", lambda m: m.group(1) if len(m.group(1)) > 1 else ".0", text)


def main(folder: str) -> None:
    out = []
    for name, line, test, row in parametrized_rows(Path(folder)):
        gold, pred = row["gold"], row["pred"]
        if test == "test_boxed":  # that file passes the long text as gold: the roles are swapped
            gold, pred = pred, gold
        expected = row.get("expected", row.get("result"))
        if (name, gold) in EXCLUDED:
            continue
        value = scalar_gold(gold)
        if value is None:
            continue
        gold_value, note = GOLD_VALUES.get((name, gold), GOLD_VALUES.get((name, gold[:40]), (None, None)))
        if gold_value is None:
            gold_value = as_grammar(value)
        out.append({"source": f"tests/{name}:{line}", "test": test, "gold": gold,
                    "gold_value": gold_value, "math_verify_gold": str(value),
                    "pred": pred, "expected": int(expected), "note": note})
    header = {"source": "https://github.com/huggingface/Math-Verify", "commit": COMMIT, "licence": "MIT",
              "converted_by": "tests/tools/convert_math_verify_suite.py"}
    json.dump({"about": header, "cases": out}, sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
