"""Pure tests of the equations task and its verifier (no model; real worker processes)."""

import json
import os
import time
from collections import Counter

import pytest
import sympy

from evalsuite.errors import UsageError
from evalsuite.scoring.equations import (
    CapExceeded,
    EquationSpec,
    Limits,
    ParseError,
    VerifierPool,
    compare,
    parse_answer,
    parse_equation,
    parse_value,
    verify,
    verify_many,
)
from evalsuite.task import build_task
from evalsuite.types import Generation
from tasks.equations import (
    BRIEF_PROBLEM,
    FAMILIES,
    PRIMARY,
    SUBSTITUTION,
    generate,
    load_problems,
    spec_of,
    to_sample,
)

QUADRATIC = EquationSpec(("x^2 - 5x + 6 = 0",), ("x",), (("2",), ("3",)), "real")
CUBIC = EquationSpec(("x^3 - 6x^2 + 11x - 6 = 0",), ("x",), (("1",), ("2",), ("3",)), "real")
EXTRANEOUS = EquationSpec(("(x^2 - 7x)/(x - 2) = -10/(x - 2)",), ("x",), (("5",),), "real")
COMPLEX = EquationSpec(("x^2 - 2x + 5 = 0",), ("x",), (("1 + 2*I",), ("1 - 2*I",)), "complex")
LINEAR = EquationSpec(("3x = 2",), ("x",), (("2/3",),), "real")
REPEATED = EquationSpec(("x^2 - 6x + 9 = 0",), ("x",), (("3",), ("3",)), "real", multiplicity=True)
SYSTEM = EquationSpec(("x + y = 3", "x - y = -1"), ("x", "y"), (("1", "2"),), "real")


@pytest.fixture(scope="module")
def pool():
    with VerifierPool(workers=2, time_limit_s=5.0) as p:
        yield p


# --- exact verdicts named in the issue -------------------------------------

def test_brief_quadratic_answered_in_words_is_right():
    v = verify("x^2 - 5x + 6 = (x - 2)(x - 3)\nSo x = 2 or x = 3", QUADRATIC)
    assert (v.status, v.answer) == ("right", ["2", "3"])
    assert v.substitution == 1.0


def test_one_root_missing_is_wrong():
    v = verify("Final answer: x = 1, x = 2", CUBIC)
    assert v.status == "wrong" and v.detail == "missing 3"


def test_an_extra_root_is_wrong():
    v = verify("Final answer: x = 2, x = 3, x = 4", QUADRATIC)
    assert v.status == "wrong" and v.detail == "extra 4"
    assert v.substitution == 0.0  # 4 does not satisfy x^2 - 5x + 6 = 0


def test_an_extraneous_root_kept_is_wrong_and_fails_substitution():
    v = verify("Final answer: x = 2, x = 5", EXTRANEOUS)
    assert v.status == "wrong" and v.detail == "extra 2"
    assert v.substitution == 0.0  # x = 2 makes the denominator 0
    assert verify("Final answer: x = 5", EXTRANEOUS).status == "right"


def test_a_flipped_sign_is_wrong():
    v = verify("Final answer: x = -2, x = 3", QUADRATIC)
    assert v.status == "wrong" and v.detail == "missing 2; extra -2"


def test_a_missing_conjugate_is_wrong():
    v = verify("Final answer: x = 1 + 2i", COMPLEX)
    assert v.status == "wrong" and v.detail == "missing 1 - 2*I"
    assert verify(r"Final answer: $x = 1 \pm 2i$", COMPLEX).status == "right"


def test_latex_fraction_equals_plain_fraction():
    v = verify(r"Final answer: $x = \frac{2}{3}$", LINEAR)
    assert (v.status, v.detail) == ("right", "equal (exact)")
    assert parse_value(r"\frac{2}{3}") == parse_value("2/3") == sympy.Rational(2, 3)


# --- further verdicts -------------------------------------------------------

@pytest.mark.parametrize("answer", [
    r"\boxed{x = 2, x = 3}", "x_1 = 2, x_2 = 3", r"x \in \{2, 3\}", "{3, 2}", r"x = 2 \text{ or } x = 3",
    "**Final answer:** x = 2 and x = 3.", r"x = \frac{5 \pm 1}{2}", "x = 2.0, x = 3", "x₁ = 2; x₂ = 3",
])
def test_forms_models_write_are_read(answer):
    assert verify(answer, QUADRATIC).status == "right"


def test_multiplicity_counts_when_asked():
    assert verify("Final answer: x = 3", REPEATED).status == "wrong"
    assert verify("Final answer: x = 3, x = 3", REPEATED).status == "right"
    assert verify("Final answer: x_1 = x_2 = 3", REPEATED).status == "right"
    assert verify("Final answer: x = 3 (multiplicity 2)", REPEATED).status == "right"
    assert verify("Final answer: x = 3, x = 3, x = 3", REPEATED).status == "wrong"
    # without multiplicity a repeated claim is the same set
    assert verify("Final answer: x = 2, x = 2, x = 3", QUADRATIC).status == "right"


def test_real_domain_rejects_complex_claims_and_accepts_no_solution():
    real = EquationSpec(("x^2 + 1 = 0",), ("x",), (), "real")
    assert verify("Final answer: no real solution", real).status == "right"
    assert verify(r"Final answer: $\emptyset$", real).status == "right"
    v = verify("Final answer: x = i, x = -i", real)
    assert v.status == "wrong" and "not real" in v.detail
    assert verify("Final answer: no solution", QUADRATIC).detail == "missing 2, 3"


@pytest.mark.parametrize("answer", [
    "(x, y) = (1, 2)", "x = 1, y = 2", r"\boxed{(1, 2)}", r"\{(1, 2)\}", "(y, x) = (2, 1)", "y = 2 and x = 1",
])
def test_system_answers_are_tuples(answer):
    assert verify(f"Final answer: {answer}", SYSTEM).status == "right"


def test_system_with_swapped_values_is_wrong():
    assert verify("Final answer: (x, y) = (2, 1)", SYSTEM).status == "wrong"


def test_irrational_and_transcendental_values_compare_exactly_or_numerically():
    spec = EquationSpec(("e^(2x) = 3",), ("x",), (("log(3)/2",),), "real")
    assert verify(r"Final answer: x = \frac{\ln 3}{2}", spec).status == "right"
    assert verify(r"Final answer: x = \frac{1}{2}\ln(3)", spec).status == "right"
    assert verify("Final answer: x = 0.549", spec).status == "wrong"  # a 3-digit decimal is not the value
    root = EquationSpec(("x^2 - 2 = 0",), ("x",), (("sqrt(2)",), ("-sqrt(2)",)), "real")
    assert verify(r"Final answer: x = \pm \frac{2}{\sqrt{2}}", root).status == "right"


def test_compare_proves_equality_exactly_when_sympy_does_not_cancel_at_once():
    # log(8)/3 - log(2) does not reduce automatically; the exact-first rule proves it is 0
    assert compare([(sympy.log(8) / 3,)], [(sympy.log(2),)]) == (True, "equal (exact)")


def test_no_answer_is_an_extraction_failure():
    v = verify("I am not sure how to solve this.", QUADRATIC)
    assert (v.status, v.answer) == ("no-answer", None)


def test_model_text_is_never_evaluated_as_python(tmp_path):
    marker = tmp_path / "pwned"
    v = verify(f"Final answer: x = __import__('os').system('touch {marker}')", QUADRATIC)
    assert v.status == "no-answer" and not marker.exists()
    with pytest.raises(ParseError):
        parse_value("(lambda: 1)()")


# --- caps and hostile answers ----------------------------------------------

HOSTILE = {
    "power tower": "2**30**5",
    "latex tower": r"10^{5^{5^{5^{5}}}}",
    "factorials": r"24! \times 24!",
    "nested parentheses": "(" * 10_000 + "2" + ")" * 10_000,
    "one megabyte": "Final answer: x = " + "1" * 1_000_000,
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_answers_are_unverifiable_within_twice_the_limit(pool, name):
    start = time.monotonic()
    (v,) = verify_many([HOSTILE[name]], [QUADRATIC], pool, Limits(time_limit_s=pool.time_limit_s))
    assert time.monotonic() - start < 2 * pool.time_limit_s
    assert (v.status, v.detail) == ("unverifiable", "unverifiable")


@pytest.mark.parametrize("text", ["2^{2^{2^{2^{1}}}}", "(1 + sqrt(2))^1000", "10^200", "x = 1" + "0" * 60])
def test_caps_refuse_oversized_values(text):
    with pytest.raises(CapExceeded):
        parse_answer(text, ["x"])


def test_values_inside_the_caps_are_computed_exactly():
    assert parse_value("2^{2^{3}}") == 256
    assert parse_value("20!") == sympy.factorial(20)
    assert parse_value(r"\sqrt[3]{-8}") == 2 * sympy.root(-1, 3)


def test_pool_kills_an_overrunning_job_and_goes_on():
    with VerifierPool(workers=1, time_limit_s=0.5) as p:
        first = p.map(time.sleep, [(30,)])
        assert first[0].status == "timeout" and first[0].seconds < 1.0
        again = p.map(verify, [("x = 2 or x = 3", QUADRATIC)])
        assert again[0].status == "ok" and again[0].value.status == "right"


def test_pool_replaces_a_worker_that_dies():
    with VerifierPool(workers=1, time_limit_s=5.0) as p:
        outcomes = p.map(os._exit, [(3,)])
        assert outcomes[0].status == "died"
        assert p.map(abs, [(-4,)])[0].value == 4


def test_a_timeout_is_an_unverifiable_verdict():
    with VerifierPool(workers=1, time_limit_s=1e-4) as p:
        (v,) = verify_many(["x = 2 or x = 3"], [QUADRATIC], p)
    assert (v.status, v.detail) == ("unverifiable", "unverifiable")
    assert v.substitution_detail.startswith("timeout")


# --- generated problems ------------------------------------------------------

def _gold_styles(problem):
    """Gold solutions written plain, in LaTeX and in set notation."""
    values = [tuple(parse_value(v) for v in s) for s in problem.solutions]
    names = problem.variables
    if not values:
        return ["no solution", r"$\boxed{\emptyset}$", "{}"]
    if len(names) > 1:
        (sol,) = values
        plain = ", ".join(f"{n} = {sympy.sstr(v)}" for n, v in zip(names, sol))
        latex = r"\boxed{(" + ", ".join(names) + r") = \left(" + ", ".join(sympy.latex(v) for v in sol) + r"\right)}"
        sets = r"\{(" + ", ".join(sympy.sstr(v) for v in sol) + r")\}"
        return [plain, latex, sets]
    x = names[0]
    plain = " or ".join(f"{x} = {sympy.sstr(v)}" for (v,) in values)
    latex = r"$\boxed{" + r",\; ".join(f"{x}_{{{k + 1}}} = {sympy.latex(v)}" for k, (v,) in enumerate(values)) + "}$"
    counts = Counter(v for (v,) in values)
    sets = ", ".join(
        rf"{x} \in \{{{sympy.latex(v)}\}} (multiplicity {m})" if m > 1 else f"{x} = {sympy.sstr(v)}"
        for v, m in counts.items()
    )
    if all(m == 1 for m in counts.values()):
        sets = "{" + ", ".join(sympy.sstr(v) for v in counts) + "}"
    return [plain, latex, sets]


def _five_hundred():
    problems = [p for d in (1, 2, 3) for p in generate(15, d, seed=11)]  # 3 x 15 x 11 = 495
    return problems + [BRIEF_PROBLEM] + generate(1, 2, seed=3, families=FAMILIES[:4], domain="real")


def test_gold_in_three_styles_verifies_on_500_generated_problems():
    problems = _five_hundred()
    assert len(problems) == 500
    failures = []
    for p in problems:
        spec = spec_of(to_sample(p))
        for style, text in zip(("plain", "latex", "set"), _gold_styles(p)):
            v = verify(f"Steps...\nFinal answer: {text}", spec)
            if v.status != "right":
                failures.append((p.id, style, text, v.detail))
    assert failures == []


def test_generated_gold_agrees_with_sympy():
    for d in (1, 2, 3):
        for p in generate(2, d, seed=5):
            symbols = [sympy.Symbol(v) for v in p.variables]
            exprs = [parse_equation(e, p.variables) for e in p.equations]
            if len(symbols) > 1:
                found = [tuple(s) for s in sympy.linsolve(exprs, symbols)]
            elif p.multiplicity:
                poly = sympy.Poly(sympy.fraction(sympy.together(exprs[0]))[0], symbols[0])
                found = [(r,) for r, m in sympy.roots(poly).items() for _ in range(m)]
            else:
                real = sympy.Symbol(p.variables[0], real=True)
                field = sympy.S.Reals if p.domain == "real" else sympy.S.Complexes
                found = sympy.solveset(exprs[0], symbols[0], field)
                if isinstance(found, sympy.ConditionSet):  # sums of logs: solve checks the domain
                    found = sympy.solve(exprs[0].subs(symbols[0], real), real)
                found = [(s,) for s in found]
            gold = [tuple(parse_value(v) for v in s) for s in p.solutions]
            assert compare(found, gold, p.multiplicity, p.domain)[0], (p, found)


def test_generation_is_deterministic_and_interleaved():
    a, b = generate(3, 2, seed=42), generate(3, 2, seed=42)
    assert a == b
    assert a != generate(3, 2, seed=43)
    assert [p.family for p in a[: len(FAMILIES)]] == list(FAMILIES)
    assert Counter(p.family for p in a) == {f: 3 for f in FAMILIES}


def test_real_domain_override_empties_complex_pairs():
    (p,) = generate(1, 1, seed=0, families=["quadratic-complex"], domain="real")
    assert p.solutions == () and p.domain == "real"
    assert verify("Final answer: no solution", spec_of(to_sample(p))).status == "right"


@pytest.mark.parametrize("kwargs, message", [
    ({"difficulty": 4}, "difficulty"), ({"families": "quadratic"}, "unknown family"), ({"domain": "p-adic"}, "domain"),
])
def test_bad_task_arguments_raise_usage_errors(kwargs, message):
    with pytest.raises(UsageError, match=message):
        build_task("equations", **kwargs)


# --- the task ---------------------------------------------------------------

def test_task_puts_the_brief_case_first_and_counts_per_family():
    t = build_task("equations", count=2, seed=9, difficulty=1)
    assert len(t.samples) == 1 + 2 * len(FAMILIES)
    first = t.samples[0]
    assert first.id == "brief-0" and first.target == ["2", "3"]
    assert "x^2 - 5x + 6 = 0" in first.input[0].content and "Final answer:" in first.input[0].content
    assert build_task("equations", count=2, seed=9).samples == t.samples


def test_user_file_problems(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(json.dumps(d) for d in [
        {"id": "sq", "equation": "x^2 - 4 = 0", "solutions": ["2", "-2"], "domain": "real"},
        {"equation": ["x + y = 5", "x - y = 1"], "variables": ["x", "y"], "solutions": [["3", "2"]]},
    ]) + "\n")
    t = build_task("equations", count=0, data_file=str(path))
    assert [s.id for s in t.samples] == ["brief-0", "sq", "user-2"]
    gens = [Generation("x = 2 or x = 3"), Generation("x = \\pm 2"), Generation("(x, y) = (3, 2)")]
    scores = t.score_batch(t.samples, gens)
    assert [s[PRIMARY].value for s in scores] == [1.0, 1.0, 1.0]
    assert path in t.data_files


@pytest.mark.parametrize("line, message", [
    ('{"equation": "x = = 2", "solutions": ["2"]}', "exactly one"),
    ('{"equation": "x = 2"}', "bad.jsonl:1: missing key 'solutions'"),
    ('{"equation": "x + y = 2", "variables": ["x", "y"], "solutions": ["2"]}', "1 values for 2 variables"),
    ("not json", "not valid JSON"),
])
def test_bad_user_files_raise_usage_errors(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(UsageError, match=message):
        load_problems(path)


def test_score_batch_and_aggregate_count_every_verdict():
    from evalsuite.pipeline.runner import score as score_records
    from evalsuite.types import GenerationRequest, SamplingParams

    t = build_task("equations", count=1, families="linear,quadratic-complex", time_limit_s=5.0)
    texts = {"brief-0": "Final answer: x = 2, x = 3", "linear-0": "no idea",
             "quadratic-complex-0": "Final answer: x = " + "9" * 3000}
    requests = [GenerationRequest("equations", s.id, s.input, SamplingParams()) for s in t.samples]
    records = score_records(t, requests, [Generation(texts[s.id]) for s in t.samples])
    assert [r.scores[PRIMARY].value for r in records] == [1.0, 0.0, 0.0]
    assert records[0].scores[SUBSTITUTION].value == 1.0
    agg = t.aggregate(records)
    assert agg["verification"] == {
        "n": 3, "right": 1, "wrong": 0, "no_answer": 1, "unverifiable": 1, "timeouts": 0,
        "unverifiable_rate": 1 / 3, "extraction_failure_rate": 1 / 3, "timeout_rate": 0.0,
    }
    assert agg["families"]["quadratic-real"]["value"] == 1.0 and agg["families"]["linear"]["value"] == 0.0


def test_task_arguments_from_the_command_line_are_converted_or_refused():
    t = build_task("equations", explicit={"count": "1", "difficulty": "2", "time_limit_s": "2.5"})
    assert (len(t.samples), t.args["difficulty"], t.args["time_limit_s"]) == (1 + len(FAMILIES), 2, 2.5)
    with pytest.raises(UsageError, match="task 'equations': argument count: should be a valid integer"):
        build_task("equations", explicit={"count": "many"})


@pytest.mark.parametrize("name", ["power tower", "factorials", "nested parentheses"])
def test_hostile_answers_to_a_system_are_unverifiable(name):
    assert verify(HOSTILE[name], SYSTEM).status == "unverifiable"


@pytest.mark.parametrize("answer, status", [
    ("Final answer: -2/3", "wrong"), ("Final answer: 2/3", "right"), (r"Final answer: - \frac{2}{3}", "wrong"),
    ("Final answer:\n- x = 2/3", "right"),
])
def test_a_leading_minus_is_a_sign_and_a_bullet_is_not(answer, status):
    assert verify(answer, LINEAR).status == status


def test_trailing_prose_after_the_answer_is_ignored():
    assert verify("Final answer: x = 2 and x = 3 are the solutions.", QUADRATIC).status == "right"
    assert verify("Final answer: x = 2 is the only one", QUADRATIC).detail == "missing 3"
