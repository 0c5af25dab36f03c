"""Equation solving, verified with sympy.

Data: problems generated from the run's seed (deterministic), one block of
``count`` per family, plus optional problems from a user JSONL file, plus the
fixed case of the product brief, ``x^2 - 5x + 6 = 0`` -> {2, 3}, always first.

Families (``FAMILIES``): ``linear``; ``quadratic-real`` (two real roots: integer,
rational, then irrational as ``difficulty`` rises); ``quadratic-repeated`` (one
double root, multiplicity counts); ``quadratic-complex`` (a conjugate pair,
complex domain); ``cubic`` and ``quartic`` (distinct integer or rational
roots); ``rational-extraneous`` (a rational equation whose cleared form has a
root that makes a denominator 0 and must be rejected); ``system-2x2`` and
``system-3x3`` (one integer solution); ``exponential`` and ``logarithmic``
(real domain; the logarithmic ones from difficulty 2 have an extraneous root).
Samples are interleaved across families so ``--limit`` takes a mix.

User file (``data_file``), one JSON object a line::

    {"equation": "x^2 - 4 = 0", "variables": ["x"], "solutions": ["2", "-2"],
     "multiplicity": false, "domain": "real", "id": "my-1", "family": "mine"}

``equation`` may be a list (a system); ``solutions`` holds value strings, or
lists of them (one per variable) for systems; ``variables`` defaults to
``["x"]``, ``domain`` to ``complex``, ``multiplicity`` to false.

Scorers: ``exact-solution-set`` (primary): the stated solutions, read with the
restricted grammar of :mod:`evalsuite.scoring.equations`, equal the gold set
(multiset when multiplicity counts); ``substitution-check`` (diagnostic): every
stated solution satisfies the equations. Checks run in killable workers
(``time_limit_s``, default 5 s); a check over a cap or the limit scores 0 with
detail ``unverifiable``. Extra metrics: accuracy per family, and the counts and
rates of right / wrong / no-answer / unverifiable verdicts and timeouts.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from evalsuite.errors import UsageError
from evalsuite.metrics import accuracy
from evalsuite.task import Scorer, Task, task
from evalsuite.types import Generation, Message, Sample, SampleRecord, SamplingParams, Score

VERSION = "2"
PRIMARY = "exact-solution-set"
SUBSTITUTION = "substitution-check"
FAMILIES = (
    "linear", "quadratic-real", "quadratic-repeated", "quadratic-complex", "cubic", "quartic",
    "rational-extraneous", "system-2x2", "system-3x3", "exponential", "logarithmic",
)
_POLYNOMIAL_DOMAIN_FAMILIES = FAMILIES[:9]  # exp/log stay real: complex logs have infinitely many branches


@dataclass(frozen=True)
class Problem:
    """One equation problem; ``solutions`` are tuples of plain value strings."""

    id: str
    family: str
    equations: tuple[str, ...]
    variables: tuple[str, ...]
    solutions: tuple[tuple[str, ...], ...]
    domain: str = "real"
    multiplicity: bool = False


# ---------------------------------------------------------------------------
# Writing numbers and polynomials

def _q(value: Fraction | int) -> str:
    value = Fraction(value)
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def _poly_text(coeffs: Sequence[int], var: str = "x") -> str:
    """Integer coefficients, highest degree first, as ``3x^2 - x + 6``."""
    degree = len(coeffs) - 1
    parts: list[str] = []
    for k, c in enumerate(coeffs):
        power = degree - k
        if c == 0:
            continue
        mono = "" if power == 0 else var if power == 1 else f"{var}^{power}"
        mag = abs(c)
        body = str(mag) if power == 0 or mag != 1 else ""
        term = f"{body}{mono}"
        if not parts:
            parts.append(f"-{term}" if c < 0 else term)
        else:
            parts.append(f"- {term}" if c < 0 else f"+ {term}")
    return " ".join(parts) if parts else "0"


def _linear_text(coeffs: Sequence[int], names: Sequence[str]) -> str:
    parts: list[str] = []
    for c, name in zip(coeffs, names):
        if c == 0:
            continue
        body = f"{'' if abs(c) == 1 else abs(c)}{name}"
        parts.append((f"-{body}" if c < 0 else body) if not parts else (f"- {body}" if c < 0 else f"+ {body}"))
    return " ".join(parts) if parts else "0"


def _expand(roots: Sequence[Fraction]) -> list[int]:
    """Integer coefficients of prod(q x - p) over roots p/q, highest degree first."""
    coeffs = [1]
    for r in roots:
        p, q = r.numerator, r.denominator
        nxt = [0] * (len(coeffs) + 1)
        for k, c in enumerate(coeffs):
            nxt[k] += c * q
            nxt[k + 1] -= c * p
        coeffs = nxt
    return coeffs


def _offset(text: str, k: int) -> str:
    """``x + 3`` / ``x - 3`` / ``x``."""
    return text if k == 0 else f"{text} + {k}" if k > 0 else f"{text} - {-k}"


# ---------------------------------------------------------------------------
# Families: each takes (rng, difficulty 1..3) and returns (equations, solutions, domain, multiplicity)

def _span(d: int) -> int:
    return 3 + 3 * d


def _nonzero(rng: random.Random, span: int) -> int:
    return rng.choice([k for k in range(-span, span + 1) if k != 0])


def _root(rng: random.Random, d: int, rational: bool) -> Fraction:
    span = _span(d)
    if rational and rng.random() < 0.5:
        q = rng.randint(2, 1 + d)
        return Fraction(_nonzero(rng, span), q)
    return Fraction(rng.randint(-span, span))


def _distinct_roots(rng: random.Random, d: int, n: int, rational: bool) -> list[Fraction]:
    roots: list[Fraction] = []
    while len(roots) < n:
        r = _root(rng, d, rational and not roots)  # at most one rational root keeps coefficients small
        if r not in roots:
            roots.append(r)
    return roots


def _linear(rng, d):
    span = _span(d)
    x0 = Fraction(rng.randint(-span, span)) if d == 1 else _root(rng, d, True)
    a = _nonzero(rng, span)
    c = 0 if d == 1 else rng.choice([k for k in range(-span, span + 1) if k != a])
    b = rng.randint(-span, span)
    # a x + b = c x + e with e chosen so that x0 solves it; scale to integers
    e = (a - c) * x0 + b
    scale = e.denominator
    lhs = _poly_text([a * scale, b * scale])
    rhs = _poly_text([c * scale, int(e * scale)])
    return (f"{lhs} = {rhs}",), [(_q(x0),)], "real", False


def _quadratic_real(rng, d):
    if d < 3 or rng.random() < 0.5:
        r1, r2 = _distinct_roots(rng, d, 2, d >= 2)
        return (f"{_poly_text(_expand([r1, r2]))} = 0",), [(_q(r1),), (_q(r2),)], "real", False
    m = rng.randint(-_span(d), _span(d))
    n = rng.choice([2, 3, 5, 6, 7, 10, 11, 13])
    coeffs = [1, -2 * m, m * m - n]  # roots m ± sqrt(n)
    return (f"{_poly_text(coeffs)} = 0",), [(f"{m} + sqrt({n})",), (f"{m} - sqrt({n})",)], "real", False


def _quadratic_repeated(rng, d):
    r = _root(rng, d, d >= 2)
    return (f"{_poly_text(_expand([r, r]))} = 0",), [(_q(r),), (_q(r),)], "real", True


def _quadratic_complex(rng, d):
    p = rng.randint(-_span(d), _span(d))
    q = rng.randint(1, _span(d))
    coeffs = [1, -2 * p, p * p + q * q]  # roots p ± q i
    return (f"{_poly_text(coeffs)} = 0",), [(f"{p} + {q}*I",), (f"{p} - {q}*I",)], "complex", False


def _polynomial(n):
    def family(rng, d):
        roots = _distinct_roots(rng, min(d, 2), n, d >= 2)
        return (f"{_poly_text(_expand(roots))} = 0",), [(_q(r),) for r in roots], "real", False
    return family


def _rational_extraneous(rng, d):
    span = _span(d)
    a = _nonzero(rng, span)  # makes the denominator 0: extraneous
    r = rng.choice([k for k in range(-span, span + 1) if k != a])
    den = _offset("x", -a)
    if rng.random() < 0.5:
        # (x^2 - (a+r)x)/(x - a) = -ar/(x - a)  clears to (x - a)(x - r) = 0
        num = _poly_text([1, -(a + r), 0])
        rhs = -a * r
        text = f"({num})/({den}) = {rhs}/({den})" if rhs else f"({num})/({den}) = 0"
    else:
        # x^2/(x - a) = a^2/(x - a) + (r + a)  clears to (x - a)(x + a - (r + a)) = 0
        text = f"x^2/({den}) = {a * a}/({den})" + (f" + {r + a}" if r + a > 0 else f" - {-(r + a)}" if r + a else "")
    return (text,), [(str(r),)], "real", False


def _system(n):
    names = ("x", "y", "z")[:n]

    def family(rng, d):
        span = _span(d)
        while True:
            rows = [[rng.randint(-span // 2 - 1, span // 2 + 1) for _ in range(n)] for _ in range(n)]
            if _det(rows) != 0:
                break
        solution = [rng.randint(-span, span) for _ in range(n)]
        eqs = tuple(f"{_linear_text(row, names)} = {sum(c * s for c, s in zip(row, solution))}" for row in rows)
        return eqs, [tuple(str(s) for s in solution)], "real", False

    return family


def _det(m: list[list[int]]) -> int:
    if len(m) == 1:
        return m[0][0]
    return sum((-1) ** j * m[0][j] * _det([row[:j] + row[j + 1:] for row in m[1:]]) for j in range(len(m)))


def _exponential(rng, d):
    kind = rng.randrange(2 if d == 1 else 3)
    if kind == 2:
        # e^(k x) = c  ->  x = ln(c)/k
        k, c = rng.randint(1, 3), rng.choice([2, 3, 5, 7, 10])
        arg = "x" if k == 1 else f"{k}x"
        return (f"e^({arg}) = {c}",), [(f"log({c})/{k}",)], "real", False
    b = rng.choice([2, 3, 5])
    n = rng.randint(1, {2: 6, 3: 4, 5: 3}[b])
    if kind == 0:
        # b^(x + k) = b^n  ->  x = n - k
        k = _nonzero(rng, 3)
        return (f"{b}^({_offset('x', k)}) = {b ** n}",), [(str(n - k),)], "real", False
    # b^(p x + k) = b^n  ->  x = (n - k)/p
    p, k = rng.randint(2, 3), _nonzero(rng, 3)
    return (f"{b}^({_offset(f'{p}x', k)}) = {b ** n}",), [(_q(Fraction(n - k, p)),)], "real", False


_LOG_PAIRS = [(b, n, r) for b in (2, 3, 5, 10) for n in range(1, 7) if b ** n <= 100_000
              for r in range(1, b ** n + 1) if (b ** n) % r == 0 and r * r > b ** n]


def _logarithmic(rng, d):
    if d == 1 or rng.random() < 0.3:
        b, n, k = rng.choice([2, 3, 5]), rng.randint(1, 4), _nonzero(rng, 6)
        # log_b(x + k) = n  ->  x = b^n - k
        return (f"log_{b}({_offset('x', k)}) = {n}",), [(str(b ** n - k),)], "real", False
    # log_b(x) + log_b(x - k) = n with x(x - k) = b^n: roots r and -(b^n / r); the negative one is extraneous
    b, n, r = rng.choice(_LOG_PAIRS)
    k = r - b ** n // r
    return (f"log_{b}(x) + log_{b}({_offset('x', -k)}) = {n}",), [(str(r),)], "real", False


GENERATORS = {
    "linear": _linear, "quadratic-real": _quadratic_real, "quadratic-repeated": _quadratic_repeated,
    "quadratic-complex": _quadratic_complex, "cubic": _polynomial(3), "quartic": _polynomial(4),
    "rational-extraneous": _rational_extraneous, "system-2x2": _system(2), "system-3x3": _system(3),
    "exponential": _exponential, "logarithmic": _logarithmic,
}

BRIEF_PROBLEM = Problem("brief-0", "quadratic-real", ("x^2 - 5x + 6 = 0",), ("x",), (("2",), ("3",)), "real", False)


def generate(count: int, difficulty: int = 1, seed: int = 0, families: Sequence[str] = FAMILIES,
             domain: str | None = None) -> list[Problem]:
    """``count`` problems per family, deterministic in ``seed``, interleaved by family.

    ``difficulty`` 1..3 widens coefficient ranges and brings in rational and
    irrational roots. ``domain`` (``real``/``complex``) overrides the family's own
    for the polynomial, rational and system families; a complex pair asked for
    in the real domain then has no solution. Raises UsageError on bad arguments.
    """
    if not 1 <= difficulty <= 3:
        raise UsageError(f"equations: difficulty must be 1, 2 or 3, got {difficulty}")
    if count < 0:
        raise UsageError(f"equations: count must be >= 0, got {count}")
    unknown = [f for f in families if f not in GENERATORS]
    if unknown:
        raise UsageError(f"equations: unknown family {unknown[0]!r}; known: {', '.join(FAMILIES)}")
    blocks = []
    for family in families:
        rng = random.Random(f"equations:{seed}:{difficulty}:{family}")
        block = []
        for k in range(count):
            eqs, sols, dom, mult = GENERATORS[family](rng, difficulty)
            if domain is not None and family in _POLYNOMIAL_DOMAIN_FAMILIES and domain != dom:
                if domain == "real" and family == "quadratic-complex":
                    sols = []
                dom = domain
            variables = ("x", "y", "z")[: len(sols[0])] if sols else ("x",)
            if family.startswith("system"):
                variables = ("x", "y", "z")[: len(eqs)]
            block.append(Problem(f"{family}-{k}", family, tuple(eqs), variables,
                                 tuple(tuple(s) for s in sols), dom, mult))
        blocks.append(block)
    return [p for row in zip(*blocks) for p in row] if blocks else []


# ---------------------------------------------------------------------------
# Prompts

def prompt_text(problem: Problem) -> str:
    """The instruction: show steps, give exact values, end with one stated line."""
    where = "real" if problem.domain == "real" else "complex"
    if len(problem.variables) > 1:
        names = ", ".join(problem.variables)
        system = "\n".join(f"  {e}" for e in problem.equations)
        example = f"({names}) = ({', '.join(['...'] * len(problem.variables))})"
        head = f"Solve this system of equations for {names} over the {where} numbers:\n{system}\n"
    else:
        v = problem.variables[0]
        example = f"{v} = ..., {v} = ..."
        head = f"Solve the equation {problem.equations[0]} for {v}. Find all {where} solutions.\n"
    lines = [
        head,
        ("Show your steps. Give exact values (fractions, square roots, i for the imaginary unit, "
         "ln for natural logarithms), not decimals."),
    ]
    if problem.multiplicity:
        lines.append("Count multiplicity: list a repeated solution once for each time it occurs.")
    lines.append(f"End with one line of the form\nFinal answer: {example}\n"
                 "or, if there is no solution, the line\nFinal answer: no solution")
    return "\n".join(lines)


def to_sample(problem: Problem) -> Sample:
    target = [list(s) if len(s) > 1 else s[0] for s in problem.solutions]
    meta = {"family": problem.family, "equations": list(problem.equations), "variables": list(problem.variables),
            "domain": problem.domain, "multiplicity": problem.multiplicity}
    return Sample(problem.id, (Message("user", prompt_text(problem)),), target, meta)


def spec_of(sample: Sample):
    """The verifier's view of a sample (plain data, sent to the workers)."""
    from evalsuite.scoring.equations import EquationSpec

    meta = sample.metadata
    sols = tuple(tuple(s) if isinstance(s, (list, tuple)) else (s,) for s in sample.target)
    return EquationSpec(tuple(meta["equations"]), tuple(meta["variables"]), sols, meta["domain"], meta["multiplicity"])


# ---------------------------------------------------------------------------
# User problems

class UserProblem(BaseModel):
    """One line of a user problem file (format in the module docstring)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    equation: str | list[str]
    solutions: list[str | int | float | list[str | int | float]]
    variables: str | list[str] = ["x"]
    domain: Literal["real", "complex"] = "complex"
    multiplicity: bool = False
    id: str | int | None = None
    family: str = "user"


def load_problems(path: str | Path) -> list[Problem]:
    """Problems from a JSONL file (format in the module docstring).

    Each line is checked against :class:`UserProblem`, then its equations and
    solutions with the restricted grammar; any problem raises UsageError naming
    the file and line.
    """
    from evalsuite.data import numbered_jsonl, require_file
    from evalsuite.scoring.equations import CapExceeded, ParseError, parse_equation, parse_value

    flag = "--task-arg equations.data_file"
    path = require_file(Path(path), flag)
    problems = []
    for lineno, row in numbered_jsonl(path, flag, schema=UserProblem):
        where = f"{path}:{lineno}"
        doc = UserProblem.model_validate(row)
        eqs = doc.equation if isinstance(doc.equation, list) else [doc.equation]
        variables = [doc.variables] if isinstance(doc.variables, str) else list(doc.variables)
        sols = []
        for s in doc.solutions:
            values = [str(v) for v in s] if isinstance(s, list) else [str(s)]
            if len(values) != len(variables):
                raise UsageError(f"{where}: solution {s!r} has {len(values)} values for {len(variables)} variables")
            sols.append(tuple(values))
        try:
            for e in eqs:
                parse_equation(e, variables)
            for s in sols:
                for v in s:
                    parse_value(v)
        except (ParseError, CapExceeded) as e:
            raise UsageError(f"{where}: {e}") from None
        problems.append(Problem(str(doc.id) if doc.id is not None else f"user-{lineno}", doc.family,
                                tuple(eqs), tuple(variables), tuple(sols), doc.domain, doc.multiplicity))
    return problems


# ---------------------------------------------------------------------------
# Scoring

def scores_of(verdict) -> dict[str, Score]:
    """A verdict as the two scorers' rows."""
    primary = Score(1.0 if verdict.status == "right" else 0.0, verdict.answer, verdict.detail)
    sub = verdict.substitution
    check = Score(sub or 0.0, verdict.answer if sub is not None else None, verdict.substitution_detail)
    return {PRIMARY: primary, SUBSTITUTION: check}


def score_outputs(samples: Sequence[Sample], outputs: Sequence[str], time_limit_s: float, workers: int,
                  second_opinion: bool = True) -> list[dict[str, Score]]:
    """Both rows for each output, checked in the shared pool; with ``second_opinion``
    math-verify's verdict rides on the primary row (:mod:`evalsuite.scoring.second_opinion`)."""
    from evalsuite.scoring import second_opinion as mv
    from evalsuite.scoring.equations import Limits, math_verify_gold, shared_pool, verify_many

    pool = shared_pool(workers, time_limit_s)
    specs = [spec_of(s) for s in samples]
    rows = [scores_of(v) for v in verify_many(outputs, specs, pool, Limits(time_limit_s=time_limit_s))]
    if not second_opinion:
        return rows
    return mv.attach(rows, PRIMARY, mv.run(outputs, [math_verify_gold(s) for s in specs], pool))


def aggregate(records: Sequence[SampleRecord]) -> dict[str, Any]:
    """Accuracy per family, verdict counts and rates, timeouts, and math-verify's
    agreement with the primary row (``math_verify``, when it ran)."""
    families: dict[str, list[SampleRecord]] = {}
    for r in records:
        families.setdefault(str(r.metadata.get("family", "user")), []).append(r)
    per_family = {
        name: accuracy([r.scores[PRIMARY].value for r in rs], [r.scores[PRIMARY].extracted for r in rs])
        for name, rs in sorted(families.items())
    }
    n = len(records)

    def count(pred) -> int:
        return sum(1 for r in records if pred(r))

    unverifiable = count(lambda r: r.scores[PRIMARY].detail == "unverifiable")
    no_answer = count(lambda r: r.scores[PRIMARY].answer is None and r.scores[PRIMARY].detail != "unverifiable")
    timeouts = count(lambda r: (r.scores[SUBSTITUTION].detail or "").startswith("timeout"))
    right = count(lambda r: r.scores[PRIMARY].value == 1.0)
    from evalsuite.scoring.second_opinion import agreement

    second = agreement(records, PRIMARY)
    return {
        **({"math_verify": second} if second is not None else {}),
        "families": per_family,
        "verification": {
            "n": n, "right": right, "wrong": n - right - unverifiable - no_answer, "no_answer": no_answer,
            "unverifiable": unverifiable, "timeouts": timeouts,
            "unverifiable_rate": unverifiable / n if n else None,
            "extraction_failure_rate": no_answer / n if n else None,
            "timeout_rate": timeouts / n if n else None,
        },
    }


def _as(name: str, value: Any, kind: type):
    """A task argument (a string when given on the command line) as ``kind``."""
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise UsageError(f"equations: {name} must be a{'n integer' if kind is int else ' number'}, got {value!r}") from None


@task("equations")
def equations(
    count: int = 10,
    difficulty: int = 1,
    seed: int = 0,
    data_file: str | None = None,
    domain: str | None = None,
    families: str | None = None,
    time_limit_s: float = 5.0,
    workers: int | None = None,
    max_tokens: int = 768,
    second_opinion: bool = True,
) -> Task:
    """Generated equations (``count`` per family) plus the brief's fixed case.

    ``families``: comma-separated subset of ``FAMILIES``. ``data_file``: user
    JSONL problems appended after the generated ones (``count=0`` keeps only
    them and the fixed case). ``domain``: ``real``/``complex`` override. Checks
    use ``workers`` processes (default: CPU count), ``time_limit_s`` each.
    ``second_opinion``: also run math-verify on every output (its verdict is
    recorded and its agreement counted; it never changes a score).
    """
    import os

    count, difficulty, seed = _as("count", count, int), _as("difficulty", difficulty, int), _as("seed", seed, int)
    time_limit_s, max_tokens = _as("time_limit_s", time_limit_s, float), _as("max_tokens", max_tokens, int)
    if domain not in (None, "real", "complex"):
        raise UsageError(f"equations: domain must be 'real' or 'complex', got {domain!r}")
    if time_limit_s <= 0:
        raise UsageError(f"equations: time_limit_s must be > 0, got {time_limit_s}")
    chosen = tuple(f.strip() for f in families.split(",")) if families else FAMILIES
    workers = _as("workers", workers, int) if workers else max(1, os.cpu_count() or 1)
    if workers < 1 or max_tokens < 1:
        raise UsageError("equations: workers and max_tokens must be >= 1")
    if not isinstance(second_opinion, bool):
        raise UsageError(f"equations: second_opinion must be true or false, got {second_opinion!r}")
    problems = [BRIEF_PROBLEM, *generate(count, difficulty, seed, chosen, domain)]
    if data_file:
        problems += load_problems(data_file)
    ids = [p.id for p in problems]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise UsageError(f"equations: duplicate problem id {dupes[0]!r}")
    samples = [to_sample(p) for p in problems]

    def score_batch(batch: Sequence[Sample], generations: Sequence[Generation]) -> list[dict[str, Score]]:
        return score_outputs(batch, [g.text for g in generations], time_limit_s, workers, second_opinion)

    def one(name):
        def score(output: str, sample: Sample) -> Score:
            return score_outputs([sample], [output], time_limit_s, workers, second_opinion=False)[0][name]
        return score

    return Task(
        name="equations",
        version=VERSION,
        samples=samples,
        scorers=(Scorer(PRIMARY, one(PRIMARY), primary=True), Scorer(SUBSTITUTION, one(SUBSTITUTION))),
        params=SamplingParams(max_tokens=max_tokens),
        score_batch=score_batch,
        aggregate=aggregate,
        data_files=(Path(data_file),) if data_file else (),
        source=f"generated (seed {seed}, difficulty {difficulty})" + (f" + {data_file}" if data_file else ""),
        args={"count": count, "difficulty": difficulty, "seed": seed, "data_file": data_file, "domain": domain,
              "families": ",".join(chosen), "time_limit_s": time_limit_s, "workers": workers,
              "max_tokens": max_tokens, "second_opinion": second_opinion},
    )
