"""Generated equation problems with exact solution sets, for :mod:`tasks.equations`.

One generator per family (:data:`GENERATORS`); :func:`generate` draws ``count``
problems per family from a seeded ``random.Random``, interleaved by family. The
solutions are exact strings (integers, fractions, surds, complex numbers, logs)
that :mod:`evalsuite.scoring.equations` reads back with sympy.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from evalsuite.errors import UsageError

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
