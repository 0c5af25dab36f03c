"""Reading and checking a model's solutions to an equation, without ``eval``.

``sympify`` and ``parse_expr`` run Python on their input, and math-verify's plain
(non-LaTeX) path calls ``parse_expr``; model text therefore goes through a small
restricted grammar of our own, which builds sympy numbers directly and refuses
anything outside its caps. The grammar covers what models write:

- numbers (decimals are read as exact fractions), ``+ - * / ^ **``, implicit
  products (``2\\sqrt{3}``, ``3i``), ``!``, parentheses, ``\\frac``, ``\\sqrt[n]{}``,
  ``sqrt()``, ``\\pi``, ``e``, ``i``/``I`` (imaginary unit), ``ln``, ``log_b``, ``exp``;
- answers as ``x = 2 or x = 3``, ``x_1 = ..., x_2 = ...``, ``x = 1 \\pm \\sqrt{2}``,
  ``\\boxed{}``, sets ``{2, 3}`` / ``\\{2, 3\\}`` / ``x \\in \\{...\\}``, tuples
  ``(x, y) = (1, 2)`` for systems, ``x = 3 (multiplicity 2)``, "no solution".

Caps (:class:`Limits`): output size, answer size, bracket depth, power-tower
height, integer size and exponent size. An answer over a cap is *unverifiable*,
as is one whose check outlives the time limit: :class:`VerifierPool` runs each
check in a worker process that is killed and replaced when it overruns.

Comparison (:func:`compare`): every claimed solution is matched to a gold one,
exactly where sympy's automatic simplification makes the difference 0, else
numerically (relative difference <= 1e-9 at 30 digits). Without multiplicity the
claims are compared as a set, with it as a multiset; in the real domain a
non-real claim is an extra root. Substituting each claim back into the
equations is reported separately (:func:`substitution_check`).
"""

from __future__ import annotations

import atexit
import functools
import importlib
import math
import multiprocessing
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import wait as wait_for
from typing import Any, Self

import sympy
from sympy.core.evalf import PrecisionExhausted

from evalsuite.scoring.normalize import last_boxed, normalize_text, normalize_unicode, unbox

__all__ = [
    "CapExceeded",
    "EquationSpec",
    "Limits",
    "ParseError",
    "Verdict",
    "VerifierPool",
    "compare",
    "extract_answer",
    "parse_answer",
    "parse_equation",
    "parse_value",
    "substitution_check",
    "verify",
]

RELATIVE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Limits:
    """Caps on one verification; anything over a cap is "unverifiable".

    ``time_limit_s``: wall seconds a worker may spend on one answer.
    ``max_output_chars`` / ``max_answer_chars``: sizes of the whole output and of
    the extracted answer. ``max_depth``: bracket nesting. ``max_power_height``:
    nested exponents (``a^{b^{c}}`` has height 2). ``max_int_bits``: size of any
    exact numerator or denominator. ``max_exponent``: largest exponent on a
    non-rational base. ``memory_mib``: address-space cap of a worker process.
    """

    time_limit_s: float = 5.0
    max_output_chars: int = 100_000
    max_answer_chars: int = 2_000
    max_depth: int = 50
    max_power_height: int = 3
    max_int_bits: int = 128
    max_exponent: int = 64
    memory_mib: int = 2048


@dataclass(frozen=True)
class EquationSpec:
    """A problem as the verifier needs it (plain data, picklable).

    ``equations``: one or more ``lhs = rhs`` strings in the plain grammar.
    ``variables``: the unknowns, in the order of solution tuples.
    ``solutions``: the gold solutions, each a tuple of value strings (one per
    variable); a repeated root appears once per multiplicity when ``multiplicity``.
    ``domain``: ``real`` or ``complex``.
    """

    equations: tuple[str, ...]
    variables: tuple[str, ...]
    solutions: tuple[tuple[str, ...], ...]
    domain: str = "complex"
    multiplicity: bool = False


@dataclass(frozen=True)
class Verdict:
    """The outcome of one verification.

    ``status``: ``right``, ``wrong``, ``no-answer`` or ``unverifiable``.
    ``answer``: the claimed solutions as strings (``"2"``, ``"(1, -2)"``), or None
    when none were read. ``detail``: why. ``substitution``: 1.0 when at least one
    solution was claimed and every claim satisfies every equation, 0.0 when not,
    None when nothing could be checked; ``substitution_detail`` explains it.
    """

    status: str
    answer: list[str] | None
    detail: str
    substitution: float | None = None
    substitution_detail: str = ""


class ParseError(ValueError):
    """The text is not an answer in the grammar."""


class CapExceeded(ValueError):
    """The text is over one of the :class:`Limits`: its check is refused."""


# ---------------------------------------------------------------------------
# Normalisation and tokens

# Math symbols of the grammar (after evalsuite.scoring.normalize has mapped signs,
# dashes, spaces, digits, super/subscripts and LaTeX number forms).
_SYMBOLS = {
    "\u00b7": "*", "\u00d7": "*", "\u22c5": "*", "\u2219": "*", "\u00f7": "/", "\u00b1": "\\pm ",
    "\u2213": "\\mp ", "\u221a": "\\sqrt ", "\u03c0": "\\pi ", "\u2208": " \\in ", "\u2205": "\\emptyset ",
    "\u2248": " \\approx ", "%": " ",
}
_SYMBOLS_RE = re.compile("|".join(map(re.escape, _SYMBOLS)))
_SEPARATOR_RE = re.compile(r"\\q?quad(?![a-zA-Z])|\\\\")
_LATEX_NOISE_RE = re.compile(r"\\(?:big|Big|bigg|Bigg)(?![a-zA-Z])\.?|\\limits(?![a-zA-Z])|&")

_TOKEN_RE = re.compile(
    r"(?P<ws>\s+)|(?P<num>\d+(?:\.\d+)?|\.\d+)|(?P<cmd>\\[a-zA-Z]+)|(?P<word>[a-zA-Z]+)"
    r"|(?P<op>\*\*|[-+*/^()\[\]{},;=!_|<>:\u00b1\u2213\u2248])"
)
_COMMANDS = {
    "\\frac": "frac", "\\dfrac": "frac", "\\tfrac": "frac", "\\cfrac": "frac", "\\sqrt": "sqrt",
    "\\pi": "pi", "\\ln": "ln", "\\log": "log", "\\exp": "exp", "\\cdot": "*", "\\times": "*",
    "\\div": "/", "\\pm": "\u00b1", "\\mp": "\u2213", "\\in": "=", "\\approx": "\u2248", "\\e": "e",
    "\\emptyset": "emptyset", "\\varnothing": "emptyset", "\\infty": "infty", "\\lor": "or",
    "\\vee": "or", "\\land": "and", "\\wedge": "and", "\\mathrm": "", "\\iota": "i",
}
_OPEN, _CLOSE = "([{", ")]}"


@dataclass(frozen=True)
class _Tok:
    kind: str  # num, word, op
    text: str
    glued: bool = False  # no space before it in the text ("AZYUK2": the 2 is glued)


def normalize(text: str) -> str:
    """Model or problem text in the grammar's spelling (pure string edits).

    :func:`evalsuite.scoring.normalize.normalize_text` first (after ``\\quad`` and
    ``\\\\`` become list separators), then the grammar's own symbols, ``\\boxed``
    unwrapped, ``\\{ \\}`` as braces, ``\\( \\) \\[ \\]`` dropped, ``%`` dropped
    (a unit, as in Hendrycks et al.'s MATH answer normaliser).
    """
    text = _SEPARATOR_RE.sub(", ", text)
    text = normalize_text(text)
    text = _SYMBOLS_RE.sub(lambda m: _SYMBOLS[m.group()], text)
    text = unbox(text)
    text = text.replace("\\{", "{").replace("\\}", "}")
    text = re.sub(r"\\[\[\]()]", " ", text)
    return _LATEX_NOISE_RE.sub(" ", text)


def check_size(text: str, limits: Limits) -> None:
    """Raises CapExceeded when ``text`` is too long or its brackets nest too deep."""
    if len(text) > limits.max_answer_chars:
        raise CapExceeded(f"answer of {len(text)} characters exceeds {limits.max_answer_chars}")
    depth = deepest = 0
    for ch in text:
        if ch in _OPEN:
            depth += 1
            deepest = max(deepest, depth)
        elif ch in _CLOSE:
            depth -= 1
    if deepest > limits.max_depth:
        raise CapExceeded(f"brackets nest {deepest} deep, over {limits.max_depth}")


def tokenize(text: str) -> list[_Tok]:
    """Tokens of normalised text; a character outside the grammar raises ParseError."""
    out: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            raise ParseError(f"unexpected character {text[pos]!r}")
        glued = pos > 0 and not text[pos - 1].isspace()
        pos = m.end()
        kind = m.lastgroup
        if kind == "ws":
            continue
        value = m.group()
        if kind == "cmd":
            if value not in _COMMANDS:
                raise ParseError(f"unknown command {value}")
            value = _COMMANDS[value]
            if not value:
                continue
            kind = "op" if value in ("*", "/", "=", "\u00b1", "\u2213", "\u2248") else "word"
        elif kind == "op" and value == "**":
            value = "^"
        out.append(_Tok(kind, value, glued))
    return out


# ---------------------------------------------------------------------------
# Values: a recursive-descent parser that builds sympy numbers under caps

_FUNCTIONS = ("sqrt", "ln", "log", "exp")
_CONSTANTS = {"pi": sympy.pi, "e": sympy.E, "i": sympy.I, "I": sympy.I}


class _Parser:
    """Expression grammar (precedence low to high)::

        expr    := term (("+" | "-") term)*
        term    := unary (("*" | "/" | <implicit>) unary)*
        unary   := ("+" | "-") unary | power
        power   := postfix ("^" unary)?          right-associative
        postfix := atom "!"*
        atom    := number | constant | variable | "(" expr ")" | "{" expr "}"
                 | frac{a}{b} | sqrt[n]{a} | ln a | log_b a | exp a

    ``variables`` maps names to symbols (trusted equations only); model answers
    are parsed without variables.
    """

    def __init__(self, tokens: list[_Tok], limits: Limits, variables: dict[str, sympy.Symbol] | None = None):
        self.toks = tokens
        self.i = 0
        self.limits = limits
        self.vars = variables or {}
        self.height = 0

    def peek(self, k: int = 0) -> _Tok | None:
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else None

    def take(self, text: str | None = None) -> _Tok:
        tok = self.peek()
        if tok is None or (text is not None and tok.text != text):
            raise ParseError(f"expected {text or 'more input'}, found {tok.text if tok else 'end'}")
        self.i += 1
        return tok

    def at(self, *texts: str) -> bool:
        tok = self.peek()
        return tok is not None and tok.kind != "num" and tok.text in texts

    def parse(self) -> sympy.Expr:
        value = self.expr()
        if self.peek() is not None:
            raise ParseError(f"unexpected {self.peek().text!r}")
        return value

    def expr(self) -> sympy.Expr:
        value = self.term()
        while self.at("+", "-"):
            op = self.take().text
            right = self.term()
            value = self.check(value + right if op == "+" else value - right)
        return value

    def starts_atom(self) -> bool:
        tok = self.peek()
        if tok is None or tok.kind == "num":
            return False  # "2 3" is not a product
        if tok.kind == "word":
            return tok.text in _FUNCTIONS or tok.text in _CONSTANTS or tok.text in self.vars or tok.text in ("pi", "frac")
        return tok.text in ("(", "{")

    def term(self) -> sympy.Expr:
        value = self.unary()
        while True:
            if self.at("*", "/"):
                op = self.take().text
                right = self.unary()
                value = self.check(value * right if op == "*" else value / right)
            elif self.starts_atom():
                value = self.check(value * self.power())
            else:
                return value

    def unary(self) -> sympy.Expr:
        if self.at("-"):
            self.take()
            return -self.unary()
        if self.at("+"):
            self.take()
            return self.unary()
        return self.power()

    def power(self) -> sympy.Expr:
        base = self.postfix()
        if not self.at("^"):
            return base
        self.take()
        self.height += 1
        if self.height > self.limits.max_power_height:
            raise CapExceeded(f"powers nest deeper than {self.limits.max_power_height}")
        exponent = self.unary()
        self.height -= 1
        return self.pow(base, exponent)

    def pow(self, base: sympy.Expr, exponent: sympy.Expr) -> sympy.Expr:
        lim = self.limits
        if exponent.free_symbols:
            if not self.vars or base.free_symbols or not (base.is_Rational or base == sympy.E):
                raise ParseError("a variable exponent needs a number base")
            return sympy.Pow(base, exponent)
        if not exponent.is_Rational:
            size = _magnitude(exponent)
            if size is None or size > (700 if base == sympy.E else lim.max_exponent):
                raise CapExceeded("exponent too large to evaluate")
            return self.check(sympy.Pow(base, exponent))
        p, q = int(exponent.p), int(exponent.q)
        if q > lim.max_exponent:
            raise CapExceeded(f"root of order {q} exceeds {lim.max_exponent}")
        if base.is_Rational:
            bits = max(int(base.p).bit_length(), int(base.q).bit_length(), 1)
            if base not in (0, 1, -1) and abs(p) * (bits - 1) > lim.max_int_bits * q:
                raise CapExceeded(f"power exceeds {lim.max_int_bits}-bit integers")
            if abs(p) > 100_000:
                raise CapExceeded("exponent too large")
        elif abs(p) > lim.max_exponent * q:
            raise CapExceeded(f"exponent {exponent} exceeds {lim.max_exponent}")
        if base.is_zero and exponent.is_negative:
            return sympy.zoo
        return self.check(sympy.Pow(base, exponent))

    def postfix(self) -> sympy.Expr:
        value = self.atom()
        while self.at("!"):
            self.take()
            if not (value.is_Integer and value >= 0):
                raise ParseError("factorial of a non-natural number")
            if value > 200:
                raise CapExceeded("factorial too large")
            value = self.check(sympy.factorial(value))
        return value

    def group(self) -> sympy.Expr:
        """A braced or parenthesised sub-expression, or else one atom-level factor."""
        if self.at("{", "(", "["):
            opener = self.take().text
            value = self.expr()
            self.take(_CLOSE[_OPEN.index(opener)])
            return value
        return self.power()

    def atom(self) -> sympy.Expr:
        tok = self.take()
        if tok.kind == "num":
            if len(tok.text) > 40:
                raise CapExceeded("number literal longer than 40 digits")
            if "." in tok.text:  # a decimal is a float: compared with the relative tolerance
                return sympy.Float(tok.text, max(30, len(tok.text) + 5))
            return self.check(sympy.Integer(self.numeral_base(tok.text)))
        if tok.text in ("(", "{", "["):
            value = self.expr()
            self.take(_CLOSE[_OPEN.index(tok.text)])
            return value
        if tok.kind != "word":
            raise ParseError(f"unexpected {tok.text!r}")
        name = tok.text
        if name in self.vars:
            return self.vars[name]
        if name in _CONSTANTS:
            return _CONSTANTS[name]
        if name == "frac":
            if self.peek() is not None and self.peek().kind == "num":
                return self.digit_frac()
            num = self.group()
            den = self.group()
            return self.check(num / den)
        if name == "sqrt":
            index = sympy.Integer(2)
            if self.at("["):
                self.take()
                index = self.expr()
                self.take("]")
                if not (index.is_Integer and 2 <= index <= self.limits.max_exponent):
                    raise ParseError("root index must be a small integer")
            return self.pow(self.group(), 1 / index)
        if name in ("ln", "log", "exp"):
            base = None
            if name == "log" and self.at("_"):
                self.take()
                base = self.group() if self.at("{", "(") else self.atom()
            arg = self.group()
            if name == "exp":
                return self.pow(sympy.E, arg)
            value = sympy.log(arg) if base is None else sympy.log(arg) / sympy.log(base)
            return self.check(value)
        raise ParseError(f"unknown name {name!r}")

    def numeral_base(self, digits: str) -> int:
        """``204_5`` and ``204_{5}`` are base-5 numerals (54); plain digits are decimal."""
        if not self.at("_"):
            return int(digits)
        k = 2 if self.peek(1) is not None and self.peek(1).text == "{" else 1
        base_tok = self.peek(k)
        if base_tok is None or base_tok.kind != "num" or not base_tok.text.isdigit() \
                or (k == 2 and (self.peek(3) is None or self.peek(3).text != "}")):
            raise ParseError("a subscript after a number must be its base")
        base = int(base_tok.text)
        if not 2 <= base <= 36:
            raise ParseError(f"base {base} is not 2 to 36")
        try:
            value = int(digits, base)
        except ValueError:
            raise ParseError(f"{digits} is not a base-{base} numeral") from None
        self.i += 2 if k == 1 else 4
        return value

    def digit_frac(self) -> sympy.Expr:
        r"""``\frac12`` = 1/2: LaTeX takes single characters as arguments."""
        digits = self.take().text
        if len(digits) >= 2 and digits.isdigit():
            rest = digits[2:]
            if rest:
                raise ParseError("ambiguous \\frac")
            return sympy.Rational(int(digits[0]), int(digits[1]))
        num = sympy.Integer(int(digits)) if digits.isdigit() else None
        if num is None:
            raise ParseError("bad \\frac")
        return self.check(num / self.group())

    def check(self, value: sympy.Expr) -> sympy.Expr:
        bits = self.limits.max_int_bits
        atoms = (value,) if value.is_Rational else value.atoms(sympy.Rational)
        for r in atoms:
            if int(r.p).bit_length() > bits or int(r.q).bit_length() > bits:
                raise CapExceeded(f"number exceeds {bits}-bit integers")
        return value


def _magnitude(value: sympy.Expr) -> float | None:
    try:
        return abs(complex(sympy.N(value, 15)))
    except (TypeError, ValueError, OverflowError):
        return None


def parse_value(text: str, limits: Limits = Limits()) -> sympy.Expr:
    """A number written in the grammar (plain or LaTeX) as a sympy expression.

    Raises ParseError when the text is not a value, CapExceeded when it is over
    a cap. Never evaluates Python.
    """
    text = normalize(text)
    check_size(text, limits)
    return _Parser(tokenize(text), limits).parse()


def _split_juxtaposed(tokens: list[_Tok], names: set[str]) -> list[_Tok]:
    """``xy`` -> ``x y`` when every letter is a variable (trusted equations only)."""
    out = []
    for tok in tokens:
        if tok.kind == "word" and tok.text not in names and tok.text not in _FUNCTIONS and tok.text not in _CONSTANTS \
                and tok.text not in ("pi", "frac") and all(c in names for c in tok.text):
            out.extend(_Tok("word", c) for c in tok.text)
        else:
            out.append(tok)
    return out


def parse_equation(text: str, variables: Sequence[str], limits: Limits = Limits()) -> sympy.Expr:
    """``lhs = rhs`` as the sympy expression ``lhs - rhs`` in the named variables.

    Meant for problem text (generated or from the user's file), not model output.
    Raises ParseError when there is not exactly one ``=`` or a side does not parse.
    """
    symbols = {v: sympy.Symbol(v) for v in variables}
    text = normalize(text)
    check_size(text, Limits(max_answer_chars=max(limits.max_answer_chars, 10_000)))
    tokens = _split_juxtaposed(tokenize(text), set(symbols))
    cut = [k for k, t in enumerate(tokens) if t.text == "="]
    if len(cut) != 1:
        raise ParseError(f"an equation needs exactly one '=', found {len(cut)}: {text!r}")
    lhs = _Parser(tokens[: cut[0]], limits, symbols).parse()
    rhs = _Parser(tokens[cut[0] + 1:], limits, symbols).parse()
    return lhs - rhs


# ---------------------------------------------------------------------------
# Answers: which solutions the text claims

_NO_SOLUTION_RE = re.compile(
    r"\bno\s+(?:real\s+|complex\s+)?(?:solutions?|roots?)\b|\bemptyset\b|\\emptyset|\bnone\b|^\s*\{\s*\}\s*\.?\s*$",
    re.IGNORECASE,
)
_LEAD_RE = re.compile(
    r"^\s*(?:(?:the|final|answers?|solutions?|roots?|real|complex|set|sets|is|are|of|so|thus|therefore|hence"
    r"|we|get|have|equation|system|values?|obtain|gives?)\b\s*|[:*_#>]\s*|-\s+(?=[A-Za-z]))+",
    re.IGNORECASE,
)
_MULTIPLICITY_WORDS = {"double": 2, "twice": 2, "triple": 3, "thrice": 3, "repeated": 2}
_SEPARATORS = {",", ";", "or", "and"}


def _split_top(tokens: list[_Tok], seps: set[str]) -> list[list[_Tok]]:
    parts: list[list[_Tok]] = [[]]
    depth = 0
    for tok in tokens:
        if tok.kind == "op" and tok.text in _OPEN:
            depth += 1
        elif tok.kind == "op" and tok.text in _CLOSE:
            depth -= 1
        if depth == 0 and tok.kind != "num" and tok.text in seps:
            parts.append([])
        else:
            parts[-1].append(tok)
    return [p for p in parts if p]


def _enclosed(tokens: list[_Tok]) -> bool:
    """True when the whole token list is one bracketed group."""
    if len(tokens) < 2 or tokens[0].text not in _OPEN or tokens[-1].text != _CLOSE[_OPEN.index(tokens[0].text)]:
        return False
    depth = 0
    for k, tok in enumerate(tokens):
        if tok.kind == "op" and tok.text in _OPEN:
            depth += 1
        elif tok.kind == "op" and tok.text in _CLOSE:
            depth -= 1
            if depth == 0 and k < len(tokens) - 1:
                return False
    return True


def _strip_multiplicity(tokens: list[_Tok]) -> tuple[list[_Tok], int]:
    """Drops a trailing "(multiplicity 2)" / "(double root)" / "with multiplicity 2"."""
    words = [t.text.lower() for t in tokens]
    for k, w in enumerate(words):
        if w == "multiplicity" and k + 1 < len(tokens) and tokens[k + 1].kind == "num" and tokens[k + 1].text.isdigit():
            cut = k - 1 if k > 0 and words[k - 1] in ("(", "with", "of") else k
            cut = cut - 1 if cut > 0 and words[cut] == "with" and words[cut - 1] == "(" else cut
            return tokens[:cut], min(int(tokens[k + 1].text), 16)
        if w in _MULTIPLICITY_WORDS and (k == 0 or words[k - 1] in ("(", "a", "with")):
            cut = k - 1 if k > 0 else k
            return tokens[:cut], _MULTIPLICITY_WORDS[w]
    return tokens, 1


def _variable_name(tokens: list[_Tok]) -> str | None:
    """``x``, ``x_1``, ``x_{1}``, ``x1`` -> the base name; None if not a name."""
    if not tokens or tokens[0].kind != "word" or tokens[0].text in _FUNCTIONS or tokens[0].text in ("pi", "frac"):
        return None
    name = tokens[0].text
    rest = tokens[1:]
    if not rest:
        return re.sub(r"\d+$", "", name) or None
    if rest[0].text == "_" and (len(rest) == 2 and rest[1].kind in ("num", "word")
                                or len(rest) == 4 and rest[1].text == "{" and rest[3].text == "}"):
        return name
    return None


def _plus_minus_variants(tokens: list[_Tok]) -> list[list[_Tok]]:
    if not any(t.text in ("\u00b1", "\u2213") for t in tokens):
        return [tokens]
    plus = [_Tok("op", "+" if t.text == "\u00b1" else "-") if t.text in ("\u00b1", "\u2213") else t for t in tokens]
    minus = [_Tok("op", "-" if t.text == "\u00b1" else "+") if t.text in ("\u00b1", "\u2213") else t for t in tokens]
    return [plus, minus]


def _values(tokens: list[_Tok], limits: Limits) -> list[sympy.Expr]:
    out = []
    for variant in _plus_minus_variants(tokens):
        out.append(_Parser(variant, limits).parse())
    return out


def _elements(tokens: list[_Tok]) -> list[list[_Tok]] | None:
    """The comma-separated members of a bracketed list, or None if not one."""
    if not _enclosed(tokens):
        return None
    inner = _split_top(tokens[1:-1], {",", ";"})
    if tokens[0].text == "{" or len(inner) > 1:
        return inner
    return None


_NEGATIONS = {"not", "no", "never", "nor", "neither", "except", "without"}


def _strip_trailing_prose(tokens: list[_Tok], known: set[str]) -> list[_Tok]:
    """Drops trailing words outside the grammar and the powers and slashes of units
    (``cm^2``, ``m/s``): "x = 2 and x = 3 are the solutions", "125 miles", "28 percent".

    Raises ParseError when the dropped prose negates the answer ("x = 2 is not a root").
    """
    def prose(k: int) -> bool:
        return k >= 0 and tokens[k].kind == "word" and tokens[k].text not in known

    end = len(tokens)
    while end:
        if prose(end - 1):
            end -= 1
            continue
        tail = [t.text if t.kind != "num" else "N" for t in tokens[max(0, end - 5): end]]
        power = next((len(p) for p in (["^", "{", "-", "N", "}"], ["^", "{", "N", "}"], ["^", "N"])
                      if tail[-len(p):] == p), 0)
        if power and prose(end - power - 1):
            end -= power
        elif tokens[end - 1].text in ("/", "*") and prose(end - 2):
            end -= 1
        else:
            break
    dropped = {t.text.lower() for t in tokens[end:] if t.kind == "word"}
    if dropped & _NEGATIONS:
        raise ParseError("the answer is negated")
    if any(t.kind == "num" or t.text == "=" for t in tokens[:end]):
        return tokens[:end]
    return tokens


def _strip_leading_prose(tokens: list[_Tok], known: set[str]) -> list[_Tok]:
    """Drops leading words outside the grammar (and commas between them) when a
    number follows: "Jane started growing Sphere 3" -> ``3``. Raises ParseError when
    the dropped words negate what follows ("not 5") or the number is glued to the
    last of them ("AZYUK2A")."""
    k = 0
    while k < len(tokens) and (tokens[k].kind == "word" and tokens[k].text not in known or tokens[k].text == ","):
        k += 1
    if k == 0 or k == len(tokens) or not (tokens[k].kind == "num" or tokens[k].text == "-"):
        return tokens
    if tokens[k].glued and tokens[k - 1].kind == "word":
        raise ParseError("digits glued to a word are part of it")  # "AZYUK2A" holds no number
    if {t.text.lower() for t in tokens[:k]} & _NEGATIONS:
        raise ParseError("the answer is negated")
    return tokens[k:]


def _cut_approximation(item: list[_Tok]) -> list[_Tok]:
    """``x = 1/3 ≈ 0.33`` -> ``x = 1/3`` (the exact value stated first is the answer);
    ``x ≈ 0.33`` -> ``x = 0.33`` (only an approximation was stated)."""
    cut = next((k for k, t in enumerate(item) if t.text == "\u2248"), None)
    if cut is None:
        return item
    before = item[:cut]
    sides = _split_top(before, {"="})
    if sides and len(sides) > 1 or (len(sides) == 1 and _variable_name(sides[0]) is None):
        return before
    return [*before, _Tok("op", "="), *[t for t in item[cut + 1:] if t.text != "\u2248"]]


def _mentions(tokens: list[_Tok], variables: Sequence[str]) -> bool:
    return any(t.kind == "word" and (t.text in variables or (len(t.text) > 1 and set(t.text) <= set(variables)))
               for t in tokens)


def _claimed_names(lhs: list[list[_Tok]], variables: Sequence[str], limits: Limits) -> list:
    """The unknowns the left sides of an ``=`` chain name (a name, or a tuple of names);
    a side that is working shown (``5 + 6 = 11``) is parsed and left out. ParseError
    when a side is neither (or, with several unknowns, is not a name)."""
    names = []
    for side in lhs:
        inner = _elements(side) if _enclosed(side) else None
        name = tuple(_variable_name(e) for e in inner) if inner is not None else _variable_name(side)
        if name is not None and not (isinstance(name, tuple) and None in name):
            names.append(name)
        elif len(variables) > 1 or _mentions(side, variables):
            raise ParseError("left side of '=' is not a variable")
        else:  # working shown in a chain ("5 + 6 = 11"): a closed value, not a claim
            _Parser(side, limits).parse()
    return names


def _system_member(member: list[_Tok], names: list, variables: Sequence[str], limits: Limits,
                   solutions: list[tuple[sympy.Expr, ...]], pending: dict[str, sympy.Expr]) -> None:
    """One member of a system's answer: a whole tuple (appended to ``solutions``, in
    the order its names give) or one named value (kept in ``pending`` until every
    unknown has one, then appended). ParseError for anything else."""
    n = len(variables)
    tuple_names = next((nm for nm in names if isinstance(nm, tuple)), None)
    inner = _elements(member) if _enclosed(member) else None
    if inner is not None:
        if len(inner) != n:
            raise ParseError(f"tuple of {len(inner)} values for {n} unknowns")
        values = [_Parser(p, limits).parse() for p in inner]
        order = list(tuple_names) if tuple_names and set(tuple_names) == set(variables) else list(variables)
        by_name = dict(zip(order, values))
        solutions.append(tuple(by_name[v] for v in variables))
    elif names and isinstance(names[0], str) and names[0] in variables:
        (value,) = [_Parser(member, limits).parse()]
        if names[0] in pending:
            raise ParseError(f"{names[0]} assigned twice before the tuple was complete")
        pending[names[0]] = value
        if len(pending) == n:
            solutions.append(tuple(pending[v] for v in variables))
            pending.clear()
    else:
        _Parser(member, limits).parse()  # an over-cap value is unverifiable, not merely unread
        raise ParseError("a system's answer needs a tuple or named values")


def parse_answer(segment: str, variables: Sequence[str], limits: Limits = Limits()) -> list[tuple[sympy.Expr, ...]]:
    """The solutions an answer segment claims, each a tuple over ``variables``.

    A repeated root is listed once per stated multiplicity (``x_1 = x_2 = 3``,
    ``x = 3 (multiplicity 2)``). With one unknown, an equality chain's last side
    is the value (``x = 5 + 6 = 11``; sides that are not names must not mention
    the unknown, so restating the equation is not an answer) and whatever follows
    ``≈`` after an exact value is dropped. Returns ``[]`` for "no solution" /
    ``\\emptyset``. Raises ParseError when the segment is not an answer,
    CapExceeded when it is over a cap.
    """
    text = normalize(segment)
    check_size(text, limits)
    text = text.strip().rstrip(".").strip()
    if _NO_SOLUTION_RE.search(text):
        return []
    text = _LEAD_RE.sub("", text).strip().strip("*").strip()
    tokens = tokenize(text)
    known = {*_FUNCTIONS, *_CONSTANTS, *variables, "pi", "frac", "or", "and", *_MULTIPLICITY_WORDS}
    tokens = _strip_leading_prose(_strip_trailing_prose(tokens, known), known)
    if not tokens:
        raise ParseError("empty answer")
    n = len(variables)
    solutions: list[tuple[sympy.Expr, ...]] = []
    pending: dict[str, sympy.Expr] = {}
    for item in _split_top(tokens, _SEPARATORS):
        item, repeat = _strip_multiplicity(_cut_approximation(item))
        sides = _split_top(item, {"="})
        if not sides:
            raise ParseError("empty item")
        lhs, rhs = sides[:-1], sides[-1]
        names = _claimed_names(lhs, variables, limits)
        if n > 1 and _enclosed(rhs) and rhs[0].text != "{":
            members = [rhs]  # one solution tuple
        else:
            members = _elements(rhs) or [rhs]
        if n == 1:
            count = max(repeat, len(names))
            for member in members:
                inner = _elements(member)
                for part in inner if inner is not None else [member]:
                    for value in _values(part, limits):
                        solutions.extend([(value,)] * count)
            continue
        for member in members:
            _system_member(member, names, variables, limits, solutions, pending)
    if pending:
        raise ParseError(f"values missing for {sorted(set(variables) - set(pending))}")
    return solutions


# ---------------------------------------------------------------------------
# Finding the answer in a model's output

_FINAL_RE = re.compile(r"final\s+answer\s*(?:is)?[\s*_:]*(?:is\b)?[\s:]*", re.IGNORECASE)
_SENTENCE_END_RE = re.compile(r"\.(?=\s)|\.?\$\$")
_COPULA_RE = re.compile(r"\b(?:is|are|was|were|be|equals?)\b|'s\b|:", re.IGNORECASE)
_NEGATED_RE = re.compile(r"^\W*(?:not|no|never|n't)\b", re.IGNORECASE)


def _last_display(text: str) -> str | None:
    """Contents of the last display-math block, ``\\[...\\]`` or ``$$...$$`` (found
    from the end: linear time)."""
    best = None
    for opener, closer in (("\\[", "\\]"), ("$$", "$$")):
        end = text.rfind(closer)
        start = text.rfind(opener, 0, end) if end > 0 else -1
        if start >= 0 and (best is None or end > best[1]):
            best = (start + len(opener), end)
    return text[best[0]: best[1]] if best else None


def _last_boxed_line(text: str) -> str | None:
    start = text.rfind("\\boxed")
    if start < 0:
        return None
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", start)
    return text[line_start: None if line_end < 0 else line_end]


def _clause(text: str) -> str | None:
    """What follows the last "is"/"are"/"equals"/":" of ``text``, unless negated."""
    cuts = list(_COPULA_RE.finditer(text))
    if not cuts:
        return None
    clause = text[cuts[-1].end():]
    return clause if clause.strip() and not _NEGATED_RE.match(clause) else None


def segment_variants(segment: str) -> list[str]:
    """Shorter readings of a candidate segment, each tried if the one before fails:
    its first sentence and the clause after that sentence's last "is"/"are"/":";
    then the same for its last sentence holding a digit.

    "$x = 3$. I hope it is correct." -> ``$x = 3$``; "The largest n is 34." ->
    `` 34``; "... there are 12 sequences. I hope it is correct." -> `` 12 sequences``.
    """
    sentences = [s for s in _SENTENCE_END_RE.split(segment) if s.strip()]
    if not sentences:
        return []
    with_digit = [s for s in sentences if any(c.isdigit() for c in s)]
    out: list[str] = []
    for sentence in (sentences[0], with_digit[-1] if with_digit else None):
        for text in (sentence, _clause(sentence) if sentence else None):
            if text and text != segment and text not in out:
                out.append(text)
    return out


def candidate_segments(output: str, variables: Sequence[str]) -> list[str]:
    """Places an answer may be, most explicit first.

    1. what follows the last "final answer" (the next line if that is empty);
    2. the line of the last ``\\boxed{}``, then that box's contents alone;
    3. the last line stating a solution (``x = ``, ``x_1 =``, ``(x, y) =``, a set,
       "no solution"), from that statement on;
    4. the last non-empty line;
    5. the contents of the last display-math block (``\\[...\\]``, ``$$...$$``,
       which may span lines, unlike inline math).

    Each is followed by its :func:`segment_variants`.
    """
    out: list[str] = []
    finals = list(_FINAL_RE.finditer(output))
    if finals:
        rest = output[finals[-1].end():]
        lines = [ln for ln in rest.split("\n") if ln.strip().strip("*$").strip()]
        if lines:
            out += [lines[0], *segment_variants(lines[0])]
    boxed = _last_boxed_line(output)
    if boxed is not None:
        inner = last_boxed(output)
        out += [boxed, *([inner] if inner is not None else []), *segment_variants(boxed)]
    names = "|".join(re.escape(v) for v in variables)
    statement = re.compile(
        rf"(?<![A-Za-z\\])(?:\(\s*(?:{names})\s*(?:,\s*(?:{names})\s*)+\)\s*=|(?:{names})(?:_\{{?\w+\}}?|\d)?\s*(?:=|\\in|∈)"
        rf"|(?:^|(?<=[\s=:]))\\?\{{|no\s+(?:real\s+|complex\s+)?solution)",
        re.IGNORECASE,
    )
    lines = [ln for ln in output.split("\n") if ln.strip()]
    for line in reversed(lines):
        m = statement.search(line)
        if m is not None:
            out += [line[m.start():], *segment_variants(line[m.start():])]
            break
    if lines:
        out += [lines[-1], *segment_variants(lines[-1])]
    display = _last_display(output)
    if display is not None:
        out.append(display.replace("\n", " "))
    return list(dict.fromkeys(out))


def extract_answer(output: str, variables: Sequence[str], limits: Limits = Limits()) -> list[tuple[sympy.Expr, ...]] | None:
    """The claimed solutions of the first candidate segment that parses, else None.

    Raises CapExceeded when the output is over the size cap, or when no candidate
    parses and one of them was over a cap.
    """
    if len(output) > limits.max_output_chars:
        raise CapExceeded(f"output of {len(output)} characters exceeds {limits.max_output_chars}")
    over: CapExceeded | None = None
    for segment in candidate_segments(normalize_unicode(output), variables):
        try:
            return parse_answer(segment, variables, limits)
        except (ParseError, ZeroDivisionError):
            continue
        except CapExceeded as e:  # a long prose line is not the answer; an over-cap one counts if nothing else parses
            over = over or e
    if over is not None:
        raise over
    return None


# ---------------------------------------------------------------------------
# Comparison: exact first, a relative tolerance only for floats

_X = sympy.Dummy("x")
_CERTIFY_DIGITS = 30
_MAX_WORKING_DIGITS = 300


def has_float(value: sympy.Expr) -> bool:
    """Whether ``value`` holds a float (a number the text wrote with a decimal point)."""
    return bool(value.atoms(sympy.Float))


def _defined(value: sympy.Expr) -> bool:
    return not value.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo)


def _certainly_nonzero(d: sympy.Expr) -> bool:
    """True when sympy's evalf certifies a nonzero digit of ``d`` (30 digits, working
    precision up to 300): a proof that ``d != 0``."""
    try:
        value = d.evalf(_CERTIFY_DIGITS, strict=True, maxn=_MAX_WORKING_DIGITS)
    except (PrecisionExhausted, TypeError, ValueError, ArithmeticError):
        return False
    return value != 0


def _algebraic(d: sympy.Expr) -> bool:
    return (not d.atoms(sympy.Function, sympy.NumberSymbol)
            and all(p.exp.is_Rational for p in d.atoms(sympy.Pow)))


def exact_zero(d: sympy.Expr) -> tuple[bool, str]:
    """Whether the closed-form number ``d`` is exactly 0, and how that was decided.

    In order: sympy's automatic simplification gives 0 (``exact``); an undefined
    value is not 0; a digit of ``d`` certified nonzero by evalf proves ``d != 0``;
    for an algebraic ``d`` (integers, rationals, radicals, ``i``) its minimal
    polynomial is ``x`` exactly when ``d = 0`` (``exact``); otherwise (``pi``, ``e``,
    logarithms) ``sympy.simplify`` reducing ``d`` to 0 (``exact``); failing that, a
    ``d`` without a nonzero digit at 300 digits of working precision counts as 0
    (``zero to 300 digits``). Returns ``(is_zero, how)``.
    """
    if d == 0:
        return True, "exact"
    if not _defined(d) or d.is_Rational:
        return False, "exact"
    if _certainly_nonzero(d):
        return False, "exact"
    if _algebraic(d):
        return sympy.minimal_polynomial(d, _X) == _X, "exact"
    if sympy.expand_log(d, force=True, factor=True) == 0 or sympy.simplify(d) == 0:
        return True, "exact"
    return True, f"zero to {_MAX_WORKING_DIGITS} digits"


def _close(a: sympy.Expr, b: sympy.Expr, tol: float = RELATIVE_TOLERANCE) -> bool:
    """``|a - b| <= tol * max(|a|, |b|)`` at 30 digits (a float is on a side)."""
    if not (_defined(a) and _defined(b)):
        return False
    try:
        diff = abs(sympy.N(a - b, _CERTIFY_DIGITS))
        scale = max(abs(sympy.N(a, _CERTIFY_DIGITS)), abs(sympy.N(b, _CERTIFY_DIGITS)))
        return bool(diff <= tol * scale)
    except (TypeError, ValueError, ArithmeticError):
        return False


def same_value(a: sympy.Expr, b: sympy.Expr) -> str | None:
    """How ``a`` equals ``b`` (``exact``, ``float`` or ``zero to 300 digits``), or None.

    The rule: two exact values (integers, rationals, radicals, ``pi``, ``e``,
    logarithms, ``i``) are equal only when their difference is exactly 0
    (:func:`exact_zero`); when either holds a float, they are equal when
    ``|a - b| <= 1e-9 * max(|a|, |b|)`` (Python's ``math.isclose`` default,
    PEP 485, with no absolute tolerance: 1e-20 is not 0 and 1e20 + 1e5 is not 1e20).
    """
    if has_float(a) or has_float(b):
        return "float" if _close(a, b) else None
    zero, how = exact_zero(a - b)
    return how if zero else None


def _same_tuple(a: tuple, b: tuple) -> str | None:
    hows = [same_value(x, y) for x, y in zip(a, b)]
    if None in hows or len(a) != len(b):
        return None
    return next((h for h in hows if h != "exact"), "exact")


_TRAILING_ZEROS_RE = re.compile(r"(\.\d*?)0+(?!\d)")


def _show(solution: tuple[sympy.Expr, ...]) -> str:
    def one(v: sympy.Expr) -> str:
        return _TRAILING_ZEROS_RE.sub(lambda m: m.group(1) if len(m.group(1)) > 1 else ".0", sympy.sstr(v))
    if len(solution) == 1:
        return one(solution[0])
    return "(" + ", ".join(one(v) for v in solution) + ")"


def _is_real(solution: tuple) -> bool:
    """Every value is real: exactly (imaginary part exactly 0), or for a float value
    with an imaginary part within the relative tolerance of its modulus."""
    for v in solution:
        im = sympy.im(v)
        if has_float(v):
            if not _close(v, sympy.re(v)):
                return False
        elif not exact_zero(im)[0]:
            return False
    return True


def compare(claimed: list[tuple[sympy.Expr, ...]], gold: list[tuple[sympy.Expr, ...]],
            multiplicity: bool = False, domain: str = "complex") -> tuple[bool, str]:
    """Whether the claimed solutions are exactly the gold ones, and why not.

    Each claim is matched to an unmatched gold solution of the same value
    (:func:`same_value`: exact unless a side is a float). Without
    ``multiplicity`` duplicates on either side are dropped first. In the ``real``
    domain, a claimed non-real value is an extra root. Returns ``(right, detail)``;
    detail names missing and extra roots, or how the values were found equal.
    """
    if not multiplicity:
        def dedupe(items):
            keep: list = []
            for item in items:
                if not any(_same_tuple(item, k) for k in keep):
                    keep.append(item)
            return keep
        claimed, gold = dedupe(claimed), dedupe(gold)
    unmatched_gold = list(range(len(gold)))
    extra: list[str] = []
    hows: list[str] = []
    for c in claimed:
        if domain == "real" and not _is_real(c):
            extra.append(_show(c) + " (not real)")
            continue
        hit = None
        for g in unmatched_gold:
            how = _same_tuple(c, gold[g])
            if how is not None:
                hit = g
                hows.append(how)
                break
        if hit is None:
            extra.append(_show(c))
        else:
            unmatched_gold.remove(hit)
    missing = [_show(gold[g]) for g in unmatched_gold]
    if not extra and not missing:
        if "float" in hows:
            return True, f"equal (float, relative tolerance {RELATIVE_TOLERANCE:g})"
        other = next((h for h in hows if h != "exact"), None)
        return True, f"equal ({other})" if other else "equal (exact)"
    parts = []
    if missing:
        parts.append("missing " + ", ".join(missing))
    if extra:
        parts.append("extra " + ", ".join(extra))
    return False, "; ".join(parts)


def substitution_check(claimed: list[tuple[sympy.Expr, ...]], equations: Sequence[sympy.Expr],
                       variables: Sequence[str]) -> tuple[float | None, str]:
    """Substitutes each claimed solution into every ``lhs - rhs``.

    A claim satisfies an equation when the residual is defined and exactly 0
    (:func:`exact_zero`), or, where the claim or the equation holds a float, when
    ``|residual| <= 1e-9 * sum(|term|)`` over the terms of ``lhs - rhs`` at the claim
    (a relative test: the scale is that of the terms that cancel). Returns
    ``(1.0, ...)`` when at least one claim was made and all satisfy, ``(0.0, ...)``
    otherwise, and ``(None, ...)`` for an empty claim (nothing to substitute).
    """
    if not claimed:
        return None, "no solution claimed"
    symbols = [sympy.Symbol(v) for v in variables]
    good = 0
    for solution in claimed:
        at = dict(zip(symbols, solution))
        ok = True
        for eq in equations:
            residual = eq.xreplace(at)
            if not _defined(residual):
                ok = False
            elif has_float(residual) or any(map(has_float, solution)) or has_float(eq):
                terms = [t.xreplace(at) for t in sympy.Add.make_args(eq)]
                ok = all(map(_defined, terms)) and bool(
                    abs(sympy.N(residual, _CERTIFY_DIGITS))
                    <= RELATIVE_TOLERANCE * sum(abs(sympy.N(t, _CERTIFY_DIGITS)) for t in terms))
            else:
                ok = exact_zero(residual)[0]
            if not ok:
                break
        good += ok
    return float(good == len(claimed)), f"{good}/{len(claimed)} claimed solutions satisfy the equations"


def verify(output: str, spec: EquationSpec, limits: Limits = Limits()) -> Verdict:
    """Extracts the model's solutions from ``output`` and checks them against ``spec``.

    Pure and in-process; use :class:`VerifierPool` (or :func:`verify_many`) to
    enforce ``limits.time_limit_s``. Over-cap inputs give ``unverifiable``.
    """
    try:
        claimed = extract_answer(output, spec.variables, limits)
    except CapExceeded as e:
        return Verdict("unverifiable", None, "unverifiable", None, f"refused: {e}")
    except (RecursionError, MemoryError) as e:
        return Verdict("unverifiable", None, "unverifiable", None, f"refused: {type(e).__name__}")
    if claimed is None:
        return Verdict("no-answer", None, "no answer found", None, "no answer found")
    answer = [_show(c) for c in claimed]
    gold, equations = _parsed_spec(spec)
    try:
        right, detail = compare(claimed, gold, spec.multiplicity, spec.domain)
        sub, sub_detail = substitution_check(claimed, equations, spec.variables)
    except (RecursionError, MemoryError, ArithmeticError, NotImplementedError, TypeError, ValueError) as e:
        # sympy failing on a claimed value is that sample's verdict, never the run's end
        return Verdict("unverifiable", answer, "unverifiable", None, f"comparison failed: {type(e).__name__}")
    return Verdict("right" if right else "wrong", answer, detail, sub, sub_detail)


# Gold values and equations come from the task, not the model: a wider integer cap.
_TRUSTED = Limits(max_int_bits=4096, max_answer_chars=10_000)


@functools.lru_cache(maxsize=512)
def _parsed_spec(spec: EquationSpec) -> tuple[list[tuple[sympy.Expr, ...]], list[sympy.Expr]]:
    gold = [tuple(parse_value(v, _TRUSTED) for v in s) for s in spec.solutions]
    return gold, [parse_equation(e, spec.variables, _TRUSTED) for e in spec.equations]


def math_verify_gold(spec: EquationSpec) -> sympy.Basic:
    """The gold solutions as math-verify compares them: one value, a ``FiniteSet`` of
    values, a ``Tuple`` (a system's one solution) or a ``FiniteSet`` of tuples, or
    ``EmptySet``. math-verify compares sets, so a repeated root appears once."""
    gold = _parsed_spec(spec)[0]
    items = [g[0] if len(g) == 1 else sympy.Tuple(*g) for g in gold]
    unique = list(dict.fromkeys(items))
    if not unique:
        return sympy.EmptySet
    return unique[0] if len(unique) == 1 else sympy.FiniteSet(*unique)


# ---------------------------------------------------------------------------
# Killable workers

def _worker_main(conn, memory_mib: int, preload: tuple[str, ...] = (), parent_pid: int | None = None) -> None:
    from evalsuite.pipeline.lifecycle import set_parent_death_signal

    set_parent_death_signal(parent_pid)  # a check must not outlive a killed harness (it may spin for minutes)
    # Ctrl-C on the terminal reaches the whole process group; the harness decides when we end.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import resource

        cap = memory_mib * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    except (ImportError, ValueError, OSError):
        pass
    for entry in preload:  # before "ready", so no job's time limit pays for imports and warm-up
        module, _, function = entry.partition(":")
        try:
            loaded = importlib.import_module(module)
            if function:
                getattr(loaded, function)()
        except Exception as e:  # noqa: BLE001 -- a failed warm-up only makes the first job slower
            print(f"evalsuite-verifier: preload {entry} failed: {type(e).__name__}", file=sys.stderr)
    conn.send(("ready", None))
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        fn, args = job
        try:
            result = ("ok", fn(*args))
        except BaseException as e:  # noqa: BLE001 -- any failure of a job is data; the worker lives on
            result = ("error", f"{type(e).__name__}: {e}"[:300])
        try:
            conn.send(result)
        except Exception as e:  # noqa: BLE001 -- an unpicklable result of any kind
            conn.send(("error", f"result not sendable: {type(e).__name__}"))


@dataclass
class _Worker:
    process: Any
    conn: Any
    ready: bool = False
    job: int | None = None
    deadline: float = math.inf


@dataclass(frozen=True)
class Outcome:
    """One job's end: ``status`` is ``ok`` (``value`` is the result), ``error``
    (``value`` is the exception text), ``timeout`` or ``died``; ``seconds`` is the
    wall time from dispatch to the end."""

    status: str
    value: Any = None
    seconds: float = 0.0


@dataclass
class VerifierPool:
    """Worker processes that run jobs under a per-job wall-clock limit.

    A job is dispatched only to a worker that has finished starting (so start-up
    is not charged to it); a job over ``time_limit_s`` has its worker killed
    (SIGKILL) and replaced; a worker that dies is replaced too. Workers are
    started with ``spawn``, so the pool is safe beside vLLM's threads; each
    imports the ``preload`` modules (``"module"`` or ``"module:function"``, the
    function called once) before it takes a job, and runs jobs on its main
    thread (where SIGALRM-based timeouts, such as math-verify's, work).
    """

    workers: int = field(default_factory=lambda: max(1, os.cpu_count() or 1))
    time_limit_s: float = 5.0
    memory_mib: int = 2048
    preload: tuple[str, ...] = ("sympy",)
    _pool: list[_Worker] = field(default_factory=list, init=False, repr=False)

    def _start(self) -> _Worker:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker_main, args=(child, self.memory_mib, self.preload, os.getpid()), daemon=True,
                           name="evalsuite-verifier")
        proc.start()
        child.close()
        return _Worker(proc, parent)

    def _replace(self, worker: _Worker) -> None:
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(timeout=5)
        worker.conn.close()
        self._pool[self._pool.index(worker)] = self._start()

    def map(self, fn: Callable, jobs: Sequence[tuple]) -> list[Outcome]:
        """Runs ``fn(*args)`` for each ``args`` in ``jobs`` in the workers.

        ``fn`` must be importable by name (a module-level function). Returns one
        :class:`Outcome` per job, in order. Never raises for a job's failure.
        """
        while len(self._pool) < self.workers:
            self._pool.append(self._start())
        results: list[Outcome | None] = [None] * len(jobs)
        queue = list(range(len(jobs)))[::-1]
        started: dict[int, float] = {}
        while any(r is None for r in results):
            now = time.monotonic()
            for w in self._pool:
                if w.ready and w.job is None and queue:
                    k = queue.pop()
                    try:
                        w.conn.send((fn, jobs[k]))
                    except (BrokenPipeError, OSError):
                        queue.append(k)
                        self._replace(w)
                        continue
                    w.job, started[k], w.deadline = k, now, now + self.time_limit_s
            busy = [w for w in self._pool if w.job is not None]
            next_deadline = min((w.deadline for w in busy), default=now + 1.0)
            ready = wait_for([w.conn for w in self._pool] + [w.process.sentinel for w in self._pool],
                             timeout=max(0.0, next_deadline - now))
            now = time.monotonic()
            for w in list(self._pool):
                if w.conn in ready:
                    try:
                        kind, value = w.conn.recv()
                    except (EOFError, OSError):
                        kind, value = "died", None
                    if kind == "ready":
                        w.ready = True
                        continue
                    if w.job is not None:
                        # A reply that lands after the deadline is over the limit all the
                        # same; the verdict must not depend on how promptly we polled.
                        late = kind != "died" and now > w.deadline
                        results[w.job] = Outcome("timeout" if late else kind, None if late else value,
                                                 now - started[w.job])
                        w.job, w.deadline = None, math.inf
                    if kind == "died":
                        self._replace(w)
                elif w.process.sentinel in ready and not w.process.is_alive():
                    if w.job is not None:
                        results[w.job] = Outcome("died", None, now - started[w.job])
                    self._replace(w)
                elif w.job is not None and now >= w.deadline:
                    results[w.job] = Outcome("timeout", None, now - started[w.job])
                    self._replace(w)
        return [r for r in results if r is not None]

    def close(self) -> None:
        """Stops every worker (politely, then by SIGKILL after a second)."""
        for w in self._pool:
            try:
                w.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        for w in self._pool:
            w.process.join(timeout=1)
            if w.process.is_alive():
                w.process.kill()
                w.process.join(timeout=5)
            w.conn.close()
        self._pool.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def verify_many(outputs: Sequence[str], specs: Sequence[EquationSpec], pool: VerifierPool,
                limits: Limits = Limits()) -> list[Verdict]:
    """Verifies ``outputs[k]`` against ``specs[k]`` in the pool's workers.

    A job over the pool's time limit, or one whose worker died or raised, is
    ``unverifiable`` (``substitution_detail`` says which); the rest are
    :func:`verify`'s verdicts.
    """
    outcomes = pool.map(verify, [(o, s, limits) for o, s in zip(outputs, specs)])
    verdicts = []
    for outcome in outcomes:
        if outcome.status == "ok":
            verdicts.append(outcome.value)
        elif outcome.status == "timeout":
            verdicts.append(Verdict("unverifiable", None, "unverifiable", None,
                                    f"timeout after {pool.time_limit_s:g} s"))
        else:
            verdicts.append(Verdict("unverifiable", None, "unverifiable", None,
                                    f"worker {outcome.status}: {outcome.value or ''}".strip()))
    return verdicts


_SHARED: dict[tuple[int, float], VerifierPool] = {}


def shared_pool(workers: int, time_limit_s: float) -> VerifierPool:
    """One pool per ``(workers, time_limit_s)`` for the process, reused across batches
    and tasks, closed at exit. Its workers preload sympy and warm math-verify up."""
    key = (workers, time_limit_s)
    if key not in _SHARED:
        _SHARED[key] = VerifierPool(workers=workers, time_limit_s=time_limit_s,
                                    preload=("sympy", "evalsuite.scoring.second_opinion:warm_up"))
    return _SHARED[key]


@atexit.register
def _close_shared_pools() -> None:
    for pool in _SHARED.values():
        pool.close()
    _SHARED.clear()
