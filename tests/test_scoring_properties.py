"""Differential and property-based tests of the answer readers.

- GSM8K: all 1,319 gold answers rendered in 9 final-line forms; both extractors must
  read the gold. 600 generated wrong answers (small and large offsets, sign flips,
  powers of ten): neither extractor may score them right, and both must read the
  wrong value itself.
- Equations: 5,000+ generated (answer, gold) pairs, right ones rewritten into
  equivalent forms, wrong ones perturbed by tiny relative amounts and at tiny and
  huge magnitudes; the verifier's verdict must equal the reference, computed
  independently of sympy (Python fractions and mpmath at 80 digits) under the
  documented rule (exact unless a side is a float; a float within 1e-9 relative).
  On a seeded sample, math-verify's verdict is taken too: where it is right,
  evalsuite agrees; where it is wrong, that is counted.
- Hypothesis: the readers never raise and finish in time on arbitrary text, and
  on 1 MB inputs and deep nesting.

Everything is generated from seeds here; nothing large is committed.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from fractions import Fraction

import mpmath
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evalsuite.scoring.equations import EquationSpec, Limits, VerifierPool, verify, verify_many
from evalsuite.scoring.needle import found_values
from evalsuite.scoring.normalize import match_key, normalize_text
from tasks.gsm8k import (
    flexible_extract,
    gsm8k,
    lm_eval_flexible_extract,
    lm_eval_strict_match,
    strict_match,
)

mpmath.mp.dps = 80
FULL_WIDTH = str.maketrans("0123456789", "\uff10\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19")


# --------------------------------------------------------------------------- GSM8K

def _grouped(a: int, sep: str) -> str:
    return f"{a:,}".replace(",", sep)


def final_lines(value: str) -> list[str]:
    """Nine final-answer lines stating ``value`` (an integer or a decimal string)."""
    neg = value.startswith("-")
    mag = value.lstrip("-")
    whole, _, frac = mag.partition(".")
    tail = f".{frac}" if frac else ""
    a = int(whole)
    sign = "-" if neg else ""
    return [
        f"The answer is {value}.",
        f"The answer is {sign}{a:,}{tail}.",                                           # commas
        f"The answer is $\\boxed{{{sign}{_grouped(a, '{,}')}{tail}}}$.",               # LaTeX grouping, boxed
        f"**Final answer:** **{value}**",                                              # bold
        f"The answer is {sign}\\${a:,}{tail} in total.",                               # currency, LaTeX dollar
        f"Final answer: {chr(0x2212) if neg else ''}{_grouped(a, chr(0x2009))}{tail} dollars",  # minus, thin space
        f"The answer is {(chr(0x2212) if neg else '') + mag.translate(FULL_WIDTH)}.",  # full-width digits
        f"#### {value}\nI hope it is correct.",                                        # trailing prose
        (f"The answer is $-\\,{mag}$ exactly." if neg else f"The answer is ${mag}\\text{{ units}}$. Done."),
    ]


@pytest.fixture(scope="module")
def gsm8k_task(gsm8k_data_dir):
    task = gsm8k(data_dir=str(gsm8k_data_dir), second_opinion=False)
    lines = (gsm8k_data_dir / "gsm8k" / "test.jsonl").read_text().splitlines()
    bodies = [json.loads(line)["answer"].rsplit("####", 1)[0] for line in lines]
    return task, bodies


def test_gsm8k_gold_in_nine_surface_forms_is_read_by_both_extractors(gsm8k_task):
    task, bodies = gsm8k_task
    assert len(task.samples) == 1319
    failures, checked = [], 0
    for sample, body in zip(task.samples, bodies):
        for line in final_lines(sample.target):
            text = body + line
            for extract in (strict_match, flexible_extract):
                checked += 1
                if extract(text) != sample.target:
                    failures.append((sample.id, extract.__name__, line, extract(text)))
    assert checked == 1319 * 9 * 2
    assert failures == []


def wrong_values(gold: str, rng: random.Random) -> list[str]:
    """Wrong answers near and far from ``gold`` (an integer string), never equal to it."""
    g = Fraction(gold)
    out = [g + rng.randint(1, 9), g - rng.randint(1, 9), g + 10 ** rng.randint(3, 9) * rng.randint(1, 9),
           g * 10 ** rng.randint(1, 3), g / 10 ** rng.randint(1, 3), -g]
    return [_decimal(v) for v in out if v != g]


def _decimal(v: Fraction) -> str:
    """A terminating fraction as a plain decimal string."""
    sign = "-" if v < 0 else ""
    v = abs(v)
    whole, rest = divmod(v, 1)
    digits = ""
    while rest:
        rest *= 10
        d, rest = divmod(rest, 1)
        digits += str(int(d))
    return f"{sign}{int(whole)}" + (f".{digits}" if digits else "")


def test_gsm8k_generated_wrong_answers_are_never_scored_right(gsm8k_task):
    task, bodies = gsm8k_task
    rng = random.Random(1914)
    scorers = {s.name: s for s in task.scorers}
    cases = 0
    problems = []
    for k in rng.sample(range(1319), 110):
        sample, body = task.samples[k], bodies[k]
        for wrong in wrong_values(sample.target, rng):
            line = rng.choice(final_lines(wrong))
            cases += 1
            for name, scorer in scorers.items():
                score = scorer.score(body + line, sample)
                if score.value != 0.0 or score.answer != wrong:
                    problems.append((sample.id, wrong, line, name, score))
    assert cases >= 500
    assert problems == []


# --------------------------------------------------------------------------- equations

@dataclass(frozen=True)
class Pair:
    kind: str
    answer: str        # text in the grammar (plain or LaTeX)
    gold: str          # gold value string
    right: bool        # the reference verdict


def _close(a, b) -> bool:
    """The documented float rule, in mpmath at 80 digits."""
    return abs(a - b) <= mpmath.mpf("1e-9") * max(abs(a), abs(b))


def _exactly_equal(a, b) -> bool:
    """Exact equality of two closed forms evaluated at 80 digits: every generated
    difference is either 0 or above 1e-40 relative, so 1e-70 decides it."""
    return abs(a - b) <= mpmath.mpf(10) ** -70 * max(abs(a), abs(b))


def _float_text(value, digits: int) -> str:
    """``value`` to ``digits`` significant digits, fixed-point, with at least one digit after the point."""
    text = mpmath.nstr(value, digits, min_fixed=-100, max_fixed=100, strip_zeros=False)
    return text + "0" if text.endswith(".") else text


def _frac_text(v: Fraction, rng: random.Random) -> str:
    if v.denominator == 1:
        return str(v.numerator)
    return rng.choice([f"\\frac{{{v.numerator}}}{{{v.denominator}}}", f"{v.numerator}/{v.denominator}",
                       f"({v.numerator})/({v.denominator})"])


def _rational_pairs(rng: random.Random) -> list[Pair]:
    kind = rng.choice(["integer", "rational", "tiny", "huge"])
    if kind == "integer":
        g = Fraction(rng.randint(-10**6, 10**6))
    elif kind == "rational":
        g = Fraction(rng.randint(-999, 999) or 1, rng.randint(2, 97))
    else:  # m x 10^(+-e): tiny and huge magnitudes
        m, e = rng.randint(1, 999) * rng.choice([-1, 1]), rng.randint(15, 30)
        g = Fraction(m, 10 ** e) if kind == "tiny" else Fraction(m * 10 ** e)
    gold = f"{g.numerator}/{g.denominator}" if g.denominator != 1 else str(g.numerator)
    n, d = g.numerator, g.denominator
    rights = [
        _frac_text(g, rng), f"\\dfrac{{{2 * n}}}{{{2 * d}}}", f"-\\left(\\frac{{{-n}}}{{{d}}}\\right)",
        f"{n} \\cdot \\frac{{1}}{{{d}}}", f"\\boxed{{{_frac_text(g, rng)}}}",
    ]
    if d == 1 and abs(n) >= 1000:
        rights.append(("-" if n < 0 else "") + f"{abs(n):,}".replace(",", "{,}"))
    if kind in ("tiny", "huge"):
        rights.append(f"{m} \\times 10^{{{-e if kind == 'tiny' else e}}}")
    if 10 ** 40 % d == 0 and len(_decimal(g)) <= 40:
        rights.append(_decimal(g))                                     # an exact decimal: a float, still right
    k = rng.randint(3, 6) if kind in ("tiny", "huge") else rng.randint(6, 25)  # stay inside the 128-bit cap
    wrongs = [g * (1 + Fraction(1, 10 ** k)), g * (1 - Fraction(1, 10 ** k)), -g, g + 1, g * 10]
    if kind == "tiny":
        wrongs += [g / 1000, g * 2, Fraction(0)]                       # an absolute tolerance would call these equal
    if kind == "huge":
        wrongs += [g + 10 ** rng.randint(1, 5)]                        # far beyond an absolute tolerance
    pairs = [Pair(kind, r, gold, True) for r in rights]       # equal by the identity each form applies
    pairs += [Pair(kind, _frac_text(w, rng), gold, w == g) for w in wrongs]
    # floats against the exact gold: right within 1e-9 relative, wrong beyond
    for digits in (12, 6):
        approx = _float_text(mpmath.mpf(n) / d, digits)
        if "e" not in approx and len(approx) <= 40 and "." in approx:
            pairs.append(Pair(kind + "-float", approx, gold, _close(mpmath.mpf(approx), mpmath.mpf(n) / d)))
    return pairs


SQUAREFREE = (2, 3, 5, 6, 7, 10, 11, 13)


def _irrational_pairs(rng: random.Random) -> list[Pair]:
    kind = rng.choice(["radical", "pi", "exp", "log"])
    if kind == "radical":
        a, b, c = rng.randint(-20, 20), rng.choice([k for k in range(-9, 10) if k]), rng.choice(SQUAREFREE)
        gold = f"{a} + {b}*sqrt({c})"
        value = a + b * mpmath.sqrt(c)
        sb = "-" if b < 0 else "+"
        rights = [f"{a} {sb} {abs(b)}\\sqrt{{{c}}}", f"{b}\\sqrt{{{c}}} + {a}" if b > 0 else f"{a} - \\sqrt{{{b * b * c}}}",
                  f"\\frac{{{2 * a} {sb} {2 * abs(b)}\\sqrt{{{c}}}}}{{2}}", f"{a} {sb} \\frac{{{abs(b) * c}}}{{\\sqrt{{{c}}}}}"]
        wrongs = [(f"{a} {sb} {abs(b)}\\sqrt{{{c + 1}}}", a + b * mpmath.sqrt(c + 1)),
                  (f"{a} {'+' if b < 0 else '-'} {abs(b)}\\sqrt{{{c}}}", a - b * mpmath.sqrt(c)),
                  (f"{a} {sb} {abs(b)}\\sqrt{{{c}}} + 10^{{-25}}", value + mpmath.mpf(10) ** -25)]
    elif kind == "pi":
        p, q = rng.randint(1, 12) * rng.choice([-1, 1]), rng.randint(1, 12)
        gold = f"{p}*pi/{q}"
        value = p * mpmath.pi / q
        rights = [f"\\frac{{{p}\\pi}}{{{q}}}", f"\\frac{{{p}}}{{{q}}}\\pi", f"{p}\\pi/{q}", f"{2 * p}\\pi / {2 * q}"]
        wrongs = [(f"\\frac{{{p * 355}}}{{{q * 113}}}", mpmath.mpf(p * 355) / (q * 113)),     # a close rational
                  (f"\\frac{{{p}\\pi}}{{{q}}} + 10^{{-20}}", value + mpmath.mpf(10) ** -20),
                  (f"\\frac{{{p}\\pi}}{{{q + 1}}}", p * mpmath.pi / (q + 1))]
    elif kind == "exp":
        k = rng.randint(-40, 40) or 1
        gold = f"exp({k})"
        value = mpmath.e ** k
        rights = [f"e^{{{k}}}", f"\\exp({k})", f"e^{{{2 * k}/2}}", f"\\frac{{e^{{{k + 1}}}}}{{e}}"]
        wrongs = [(f"e^{{{k + 1}}}", mpmath.e ** (k + 1)), (f"e^{{{k}}} + 10^{{-30}}", value + mpmath.mpf(10) ** -30),
                  (f"e^{{{k}}} \\cdot \\frac{{10^{{12}} + 1}}{{10^{{12}}}}", value * (1 + mpmath.mpf(10) ** -12))]
    else:
        c = rng.randint(2, 50)
        gold = f"log({c})"
        value = mpmath.log(c)
        rights = [f"\\ln {c}", f"\\ln({c})", f"\\frac{{\\ln({c * c})}}{{2}}", f"\\log({c})"]
        wrongs = [(f"\\ln({c + 1})", mpmath.log(c + 1)), (f"\\ln({c}) + 10^{{-25}}", value + mpmath.mpf(10) ** -25),
                  (f"\\log_{{10}}({c})", mpmath.log10(c))]
    pairs = [Pair(kind, r, gold, True) for r in rights]       # equal by the identity each form applies
    pairs += [Pair(kind, w, gold, _exactly_equal(v, value)) for w, v in wrongs]
    for digits in (15, 12, 6):
        approx = _float_text(value, digits)
        if "e" not in approx and len(approx) <= 40:
            pairs.append(Pair(kind + "-float", approx, gold, _close(mpmath.mpf(approx), value)))
    return pairs


def equation_pairs(seed: int = 5000, minimum: int = 5000) -> list[Pair]:
    rng = random.Random(seed)
    pairs: list[Pair] = []
    while len(pairs) < minimum:
        pairs += _rational_pairs(rng) if rng.random() < 0.6 else _irrational_pairs(rng)
    return pairs


def test_the_generated_pairs_cover_both_verdicts_and_every_kind():
    pairs = equation_pairs()
    kinds = {p.kind for p in pairs}
    assert {"integer", "rational", "tiny", "huge", "radical", "pi", "exp", "log"} <= kinds
    assert {"tiny-float", "radical-float", "pi-float"} <= kinds
    assert sum(p.right for p in pairs) > 1500 and sum(not p.right for p in pairs) > 1500
    assert any(p.kind.endswith("-float") and p.right for p in pairs)
    assert any(p.kind.endswith("-float") and not p.right for p in pairs)


def _evalsuite(p: Pair) -> bool:
    spec = EquationSpec((), ("x",), ((p.gold,),), "complex")
    return verify(f"Final answer: $x = {p.answer}$", spec).status == "right"


def test_equations_verdicts_agree_with_exact_arithmetic_on_5000_pairs():
    pairs = equation_pairs()
    assert len(pairs) >= 5000
    verdicts = [(p, _evalsuite(p)) for p in pairs]
    assert [(p, got) for p, got in verdicts if got != p.right] == []


def test_equations_agree_with_math_verify_wherever_math_verify_is_right():
    """A seeded sample of 200 pairs (math-verify costs ~0.1 s each here), the gold handed
    to math-verify as a sympy value: wherever math-verify's verdict matches the
    reference, evalsuite's does too. math-verify's misses are of two kinds: a wrong
    answer within its 6-decimal rounding of the gold (an absolute tolerance: 1e-25
    off, or e^-10 off by a relative 1e-12), and a negative LaTeX-grouped number
    (``-9{,}600``) it misreads."""
    import sympy
    from math_verify import parse
    from math_verify import verify as mv_verify

    from evalsuite.scoring.equations import parse_value

    pairs = random.Random(400).sample(equation_pairs(), 200)
    mv_wrong = []
    for p in pairs:
        theirs = mv_verify([parse_value(p.gold)], parse(f"Final answer: $x = {p.answer}$"))
        if theirs == p.right:
            assert _evalsuite(p) == theirs, p
        else:
            mv_wrong.append(p)
    assert 0 < len(mv_wrong) < len(pairs) / 10
    for p in mv_wrong:
        if p.right:
            assert "{,}" in p.answer, p
        else:
            gap = abs(sympy.N(parse_value(p.answer) - parse_value(p.gold), 30))
            assert gap < 1e-6, p


# --------------------------------------------------------------------------- never raise, finish in time

READERS = {
    "strict_match": strict_match, "flexible_extract": flexible_extract,
    "lm_eval_strict_match": lm_eval_strict_match, "lm_eval_flexible_extract": lm_eval_flexible_extract,
    "normalize_text": normalize_text, "match_key": match_key,
    "needle": lambda text: found_values(text, ["4829173", "amber-falcon"]),
}

ANSWERISH = st.lists(st.sampled_from([
    "The answer is ", "Final answer: ", "x = ", "x_1 = ", "(x, y) = ", "\\boxed{", "}", "{", "(", ")", "\\frac{",
    "\\sqrt[3]{", "^", "^{", "_", "-", "\u2212", "\u2013", " ", "\u2009", ",", "{,}", ",\\!", ".", "$", "\\$", "%",
    "\\text{", "\\left(", "\\right)", "\\pm", "\u00b1", "\u00b2", "\u00bd", "\uff17", "e", "i", "\\pi", "\\ln",
    "\\log_", "!", "or", "and", "not", "is", "\n", "0", "1", "7", "9", "12", "1000", "3.5", "10^{", "\\infty",
]), max_size=80).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(st.text(max_size=3000), ANSWERISH))
def test_text_readers_never_raise_on_arbitrary_text(text):
    for name, reader in READERS.items():
        start = time.monotonic()
        reader(text)
        assert time.monotonic() - start < 2.0, name


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(st.text(max_size=600), ANSWERISH))
def test_the_equations_verifier_returns_a_verdict_on_arbitrary_text(text):
    spec = EquationSpec(("x^2 - 5x + 6 = 0",), ("x",), (("2",), ("3",)), "real")
    v = verify(text, spec)
    assert v.status in ("right", "wrong", "no-answer", "unverifiable")


MEGABYTE = 1_000_000
HUGE = {
    "digits": "7" * MEGABYTE,
    "signs and spaces": "- 1" * (MEGABYTE // 3),
    "grouped": "1,000," * (MEGABYTE // 6),
    "nested braces": "{" * (MEGABYTE // 2) + "}" * (MEGABYTE // 2),
    "nested boxes": "\\boxed{" * (MEGABYTE // 14) + "1" + "}" * (MEGABYTE // 14),
    "unclosed boxes": "\\boxed{" * (MEGABYTE // 7),
    "anchors": "The answer is " * (MEGABYTE // 14),
    "unicode": "\u2212\u00b2\u00bd\uff17\u2009" * (MEGABYTE // 5),
    "dollars": "$" * MEGABYTE,
}


@pytest.mark.parametrize("name", HUGE)
def test_text_readers_finish_on_a_megabyte(name):
    """Linear-time readers: a megabyte of hostile text is read in seconds (the
    bound is loose because CI hosts are slow and shared). normalize_text runs
    inside each of the first three; the needle matcher is match_key plus a search."""
    text = HUGE[name]
    for reader_name in ("strict_match", "flexible_extract", "match_key", "lm_eval_strict_match",
                        "lm_eval_flexible_extract"):
        reader = READERS[reader_name]
        start = time.monotonic()
        reader(text)
        assert time.monotonic() - start < 20.0, reader_name


def test_the_equations_verifier_bounds_megabyte_and_nested_inputs():
    spec = EquationSpec(("x^2 - 5x + 6 = 0",), ("x",), (("2",), ("3",)), "real")
    texts = [HUGE[k] for k in ("digits", "nested braces", "nested boxes", "signs and spaces")]
    texts += ["(" * 90_000 + "2" + ")" * 9_000, "Final answer: x = " + "2^{" * 30_000 + "2" + "}" * 30_000]
    with VerifierPool(workers=1, time_limit_s=5.0) as pool:
        start = time.monotonic()
        verdicts = verify_many(texts, [spec] * len(texts), pool, Limits(time_limit_s=5.0))
        elapsed = time.monotonic() - start
    assert [v.status for v in verdicts] == ["unverifiable"] * len(texts)
    assert elapsed < 2 * 5.0 * len(texts)
