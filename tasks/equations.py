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

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    StrictBool,
)

from evalsuite.datasets.equations import (  # noqa: F401 -- the generator is re-exported for tests
    BRIEF_PROBLEM,
    FAMILIES,
    GENERATORS,
    Problem,
    generate,
)
from evalsuite.errors import UsageError
from evalsuite.task import Scorer, Task, grouped, task
from evalsuite.types import Generation, Message, Sample, SampleRecord, SamplingParams, Score

VERSION = "2"
PRIMARY = "exact-solution-set"
SUBSTITUTION = "substitution-check"
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
    """Verdict counts and rates, timeouts, and math-verify's agreement with the
    primary row (``math_verify``, when it ran); accuracy per family is declared
    (:func:`evalsuite.task.grouped`)."""
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
        "verification": {
            "n": n, "right": right, "wrong": n - right - unverifiable - no_answer, "no_answer": no_answer,
            "unverifiable": unverifiable, "timeouts": timeouts,
            "unverifiable_rate": unverifiable / n if n else None,
            "extraction_failure_rate": no_answer / n if n else None,
            "timeout_rate": timeouts / n if n else None,
        },
    }


def _problems(count: int, difficulty: int, seed: int, families: tuple[str, ...], domain: str | None,
              data_file: str | None) -> list[Problem]:
    """The brief's case, the generated problems, then the user file's; UsageError for a repeated id."""
    problems = [BRIEF_PROBLEM, *generate(count, difficulty, seed, families, domain)]
    if data_file:
        problems += load_problems(data_file)
    ids = [p.id for p in problems]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise UsageError(f"equations: duplicate problem id {dupes[0]!r}")
    return problems


@task("equations")
def equations(
    count: NonNegativeInt = 10,
    difficulty: Annotated[int, Field(ge=1, le=3)] = 1,
    seed: int = 0,
    data_file: str | None = None,
    domain: Literal["real", "complex"] | None = None,
    families: str | None = None,
    time_limit_s: PositiveFloat = 5.0,
    workers: PositiveInt | None = None,
    max_tokens: PositiveInt = 768,
    second_opinion: StrictBool = True,
) -> Task:
    """Generated equations (``count`` per family) plus the brief's fixed case.

    ``families``: comma-separated subset of ``FAMILIES``. ``data_file``: user
    JSONL problems appended after the generated ones (``count=0`` keeps only
    them and the fixed case). ``domain``: ``real``/``complex`` override. Checks
    use ``workers`` processes (default: CPU count), ``time_limit_s`` each.
    ``second_opinion``: also run math-verify on every output (its verdict is
    recorded and its agreement counted; it never changes a score). Arguments are
    checked from the annotations.
    """
    import os

    chosen = tuple(f.strip() for f in families.split(",")) if families else FAMILIES
    workers = workers or max(1, os.cpu_count() or 1)
    samples = [to_sample(p) for p in _problems(count, difficulty, seed, chosen, domain, data_file)]

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
        metrics=(grouped("family", name="families", default="user"),),
        data_files=(Path(data_file),) if data_file else (),
        source=f"generated (seed {seed}, difficulty {difficulty})" + (f" + {data_file}" if data_file else ""),
        args={"count": count, "difficulty": difficulty, "seed": seed, "data_file": data_file, "domain": domain,
              "families": ",".join(chosen), "time_limit_s": time_limit_s, "workers": workers,
              "max_tokens": max_tokens, "second_opinion": second_opinion},
    )
