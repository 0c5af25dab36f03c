r"""Text normalisation for every answer reader: one place, one order of steps.

The GSM8K extractors, the equations reader and the needle matcher all read model
text through :func:`normalize_text` (the needle matcher through
:func:`match_key`). The steps, in order:

1. **Explicit Unicode map, before NFKC** (:data:`UNICODE_MAP`). NFKC alone would
   lose meaning in a few places, so these characters are rewritten first:

   - minus signs and dashes -> ``-``: U+2212 minus sign, U+2012 figure dash,
     U+2013 en dash, U+2014 em dash, U+2010 hyphen, U+2011 non-breaking hyphen,
     U+FE63 small hyphen-minus, U+FF0D full-width hyphen-minus, U+02D7 modifier
     minus, U+2796 heavy minus sign, U+2052 commercial minus sign. Whether a dash
     is a sign is then decided by position, exactly as for ``-`` (step 5);
   - superscript and subscript runs -> ``^{...}`` / ``_{...}`` (``x²`` is
     ``x^{2}``, not ``x2``; ``10⁻³`` is ``10^{-3}``; ``x₁`` is ``x_{1}``);
   - vulgar fractions -> ``(1/2)``, a mixed number ``1½`` -> ``(1+1/2)``
     (NFKC would make ``1½`` into ``11⁄2``); U+2044 fraction slash and U+2215
     division slash -> ``/``;
   - zero-width characters (U+200B-U+200D, U+2060, U+FEFF, U+2061-U+2064) ->
     removed.

2. **NFKC** (Unicode Standard Annex #15): full-width forms, ligatures, and every
   space character (no-break, thin, narrow no-break, figure, ideographic) become
   their ASCII forms; then every decimal digit of any script (category ``Nd``:
   Arabic-Indic, Devanagari ...) becomes its ASCII digit.

3. **LaTeX forms of numbers** (:func:`_latex_numbers`): ``{,}`` (also ``{, }``) and ``,\!`` are
   thousands separators (how LaTeX typesets them); ``\$`` and ``\%`` are ``$`` and
   ``%``; ``\text{..}``, ``\textbf``, ``\textnormal``, ``\mathrm``, ``\mathbf``,
   ``\mbox``, ``\operatorname`` are replaced by their contents; ``\left``/``\right``
   and the spacing commands ``\, \; \: \! \ ~ \quad \qquad`` become a space;
   ``^\circ`` and ``°`` (degrees) are dropped; ``\dfrac``/``\tfrac``/``\cfrac``
   are ``\frac``.

4. **Currency signs and math delimiters**: every currency sign (Unicode category
   ``Sc``) other than ``$`` is dropped (``1,000.99€`` reads as ``1,000.99``); a
   ``$`` before a number (``$5``, ``-$5``, ``$ 5``) is a currency sign and is
   dropped; every other ``$`` is a LaTeX math delimiter and becomes a space.

5. **A sign separated from its number** joins it: ``- 5``, ``−\,3`` and
   ``= − 5`` read as ``-5`` where a sign can stand (start of a line, after
   ``= : ( [ { $ ,`` or the words *is, are, was, were, be, equals, equal*);
   elsewhere ``10 - 5`` stays a subtraction.

6. **Thousands separators** (:func:`join_digit_groups`), the comma rule shared by
   every task: a comma, ``{,}``, ``,\!`` or a single space between digits is a
   thousands separator exactly when it splits a run into a first group of 1-3
   digits (not starting with 0) followed by groups of exactly 3 digits, all with
   the same separator, and no digit or further separator-plus-digit follows.
   ``7,425,000`` and ``7 425 000`` read as 7425000. Every other comma separates
   items: ``x = 1, 2``, ``{1,2}``, ``32, 349`` (comma then space) and ``1,22`` are
   lists. A decimal comma (``1,5`` for 1.5) is not supported: it is ambiguous with
   a list of roots written without spaces, which models write far more often.
   Sources: the SI Brochure (BIPM, 9th ed., 2019, §5.4.4) groups digits in threes
   with a thin space; English prose and the GSM8K answers use the comma.

The steps are pure string edits, linear in the length of the text (every pattern
is anchored so that a failed match is not retried inside the same run of
digits, and braces are matched with a stack), so even a megabyte of hostile
output is read in seconds (``tests/test_scoring_properties.py``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator

__all__ = [
    "UNICODE_MAP",
    "bracket_pairs",
    "canonical_decimal",
    "join_digit_groups",
    "last_boxed",
    "match_key",
    "normalize_text",
    "normalize_unicode",
    "outside_json_strings",
    "unbox",
]

_MINUS_SIGNS = "\u2212\u2012\u2013\u2014\u2010\u2011\ufe63\uff0d\u02d7\u2796\u2052"
_ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff\u2061\u2062\u2063\u2064"
_VULGAR = {
    "\u00bd": "1/2", "\u2153": "1/3", "\u2154": "2/3", "\u00bc": "1/4", "\u00be": "3/4", "\u2155": "1/5",
    "\u2156": "2/5", "\u2157": "3/5", "\u2158": "4/5", "\u2159": "1/6", "\u215a": "5/6", "\u2150": "1/7",
    "\u215b": "1/8", "\u215c": "3/8", "\u215d": "5/8", "\u215e": "7/8", "\u2151": "1/9", "\u2152": "1/10",
}
_SUPERSCRIPTS = dict(zip("\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079\u207a\u207b\u207c\u207d\u207e",
                         "0123456789+-=()"))
_SUBSCRIPTS = dict(zip("\u2080\u2081\u2082\u2083\u2084\u2085\u2086\u2087\u2088\u2089\u208a\u208b\u208c\u208d\u208e",
                       "0123456789+-=()"))

UNICODE_MAP: dict[str, str] = {
    **{c: "-" for c in _MINUS_SIGNS},
    **{c: "" for c in _ZERO_WIDTH},
    "\u2044": "/", "\u2215": "/",
}
"""Single characters rewritten before NFKC (runs of super/subscripts and vulgar
fractions are rewritten by their own rules, see the module docstring)."""

_MAP_RE = re.compile("[" + re.escape("".join(UNICODE_MAP)) + "]")
_SUPER_RE = re.compile("[" + "".join(_SUPERSCRIPTS) + "]+")
_SUB_RE = re.compile("[" + "".join(_SUBSCRIPTS) + "]+")
_VULGAR_ANY_RE = re.compile("[" + "".join(_VULGAR) + "]")
_VULGAR_RE = re.compile(r"(?<!\d)(\d*)[ \u00a0\u2009\u202f]?([" + "".join(_VULGAR) + "])")
_OTHER_DIGIT_RE = re.compile(r"(?![0-9])\d")  # str patterns: \d is every Unicode Nd digit
# Currency signs outside the BMP are all in rare historic scripts; the BMP scan is cheap at import.
_CURRENCY_RE = re.compile("[" + re.escape("".join(
    chr(c) for c in range(128, 0x10000) if unicodedata.category(chr(c)) == "Sc")) + "]")


def _vulgar(m: re.Match) -> str:
    whole, frac = m.group(1), _VULGAR[m.group(2)]
    return f"({whole}+{frac})" if whole else f"({frac})"


def normalize_unicode(text: str) -> str:
    """Steps 1 and 2: the explicit map, then NFKC, then every ``Nd`` digit as ASCII."""
    text = _MAP_RE.sub(lambda m: UNICODE_MAP[m.group()], text)
    text = _SUPER_RE.sub(lambda m: "^{" + "".join(_SUPERSCRIPTS[c] for c in m.group()) + "}", text)
    text = _SUB_RE.sub(lambda m: "_{" + "".join(_SUBSCRIPTS[c] for c in m.group()) + "}", text)
    if _VULGAR_ANY_RE.search(text):
        text = _VULGAR_RE.sub(_vulgar, text)
    text = unicodedata.normalize("NFKC", text)
    if text.isascii():
        return text
    return _OTHER_DIGIT_RE.sub(lambda m: str(unicodedata.digit(m.group())), text)


_TEXT_CMD_RE = re.compile(
    r"\\(?:text|textbf|textit|textrm|textnormal|textsf|texttt|mathrm|mathbf|mathit|mathsf|mathtt|mbox|operatorname)"
    r"\s*\{([^{}]*)\}")
_LATEX_GROUP_RE = re.compile(r"(?<=\d)(?:\s?\{\s?,\s?\}\s?|,\\!\s*)(?=\d{3}(?!\d))")
_SPACING_RE = re.compile(r"\\[,;:! ]|\\q?quad(?![a-zA-Z])|\\(?:left|right)(?![a-zA-Z])\.?|~|\\displaystyle(?![a-zA-Z])")
_DEGREE_RE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°")


def _latex_numbers(text: str) -> str:
    """Step 3: LaTeX number forms as plain text (see the module docstring)."""
    if "\\" not in text and "{," not in text and "°" not in text and "~" not in text:
        return text
    text = _LATEX_GROUP_RE.sub("", text)
    for _ in range(3):  # \text{\mathrm{..}} nests rarely and shallowly
        new = _TEXT_CMD_RE.sub(lambda m: f" {m.group(1)} ", text)
        if new == text:
            break
        text = new
    text = text.replace("\\$", "$").replace("\\%", "%")
    text = re.sub(r"\\[dtc]frac(?![a-zA-Z])", r"\\frac", text)
    text = _DEGREE_RE.sub(" ", text)
    return _SPACING_RE.sub(" ", text)


_DOLLAR_RE = re.compile(r"\$[ \t]?(?=-?\.?\d)")
# A sign may stand at the start, after = : ( [ { $ , or a newline, or after is/are/was/were/be/equal(s).
_SIGN_RE = re.compile(r"(^|[\n=:(\[{$,]|\b(?:is|are|was|were|be|equals?))([ \t]*)-[ \t]+(?=\.?\d)", re.IGNORECASE)


# A first group of 1-3 digits (no leading 0), then groups of exactly 3 after one
# kind of separator, and no further digit (or separator and digit) after them.
_GROUPS = {
    sep: re.compile(rf"(?<![\d.,])[1-9]\d{{0,2}}(?:{re.escape(sep)}\d{{3}})+(?!\d|{re.escape(sep)}\d)")
    for sep in (",", " ")
}


def join_digit_groups(text: str) -> str:
    """Step 6: thousands separators removed under the comma rule (module docstring).

    ``"7,425,000"`` -> ``"7425000"``; ``"1,22"``, ``"1, 000"`` and ``"0,111"`` are
    left alone (lists, read item by item).
    """
    if "," in text:
        text = _GROUPS[","].sub(lambda m: m.group().replace(",", ""), text)
    if " " in text:
        text = _GROUPS[" "].sub(lambda m: m.group().replace(" ", ""), text)
    return text


def normalize_text(text: str) -> str:
    """Every step of the module docstring, in order: the text the answer readers read."""
    text = normalize_unicode(text)
    text = _latex_numbers(text)
    if not text.isascii():
        text = _CURRENCY_RE.sub(" ", text)
    if "$" in text:
        text = _DOLLAR_RE.sub("", text).replace("$", " ")
    if "-" in text:
        text = _SIGN_RE.sub(r"\1\2-", text)
    return join_digit_groups(text)


def match_key(text: str) -> tuple[str, ...]:
    """The words of ``text`` as the needle matcher compares them.

    :func:`normalize_text`, then case-folded, then split into maximal runs of
    letters and digits (everything else: punctuation, spaces, markup, separates).
    ``"Amber-Falcon: 4,829,173."`` -> ``("amber", "falcon", "4829173")``.
    """
    return tuple(re.findall(r"[^\W_]+", normalize_text(text).casefold()))


# ---------------------------------------------------------------------------
# Braces

def outside_json_strings(text: str) -> Iterator[tuple[int, str]]:
    """``(index, character)`` of every character of ``text`` outside JSON strings
    (double quotes, backslash escapes; the quotes themselves left out): what a
    bracket counter reads in JSON text."""
    in_string = escaped = False
    for j, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        else:
            yield j, ch


def bracket_pairs(text: str, json_strings: bool = False) -> dict[int, int]:
    """Every ``{`` of ``text`` that closes, mapped to the index of its ``}``: the one
    bracket matcher of evalsuite (LaTeX groups, JSON objects). One pass, a stack,
    no recursion, so any nesting depth is safe.

    ``json_strings``: braces inside JSON strings (:func:`outside_json_strings`) are
    text, not brackets. A ``}`` with no open ``{`` is ignored.
    """
    stack: list[int] = []
    pairs: dict[int, int] = {}
    for j, ch in outside_json_strings(text) if json_strings else enumerate(text):
        if ch == "{":
            stack.append(j)
        elif ch == "}" and stack:
            pairs[stack.pop()] = j
    return pairs


_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")


def last_boxed(text: str) -> str | None:
    """Contents of the last ``\\boxed{...}`` (or ``\\fbox``) whose braces close; None if none."""
    if "box" not in text:
        return None
    pairs = bracket_pairs(text)
    for m in reversed(list(_BOXED_RE.finditer(text))):
        end = pairs.get(m.end() - 1)
        if end is not None:
            return text[m.end(): end]
    return None


def unbox(text: str) -> str:
    """Every ``\\boxed{X}`` replaced by ``X`` (nested ones too); an unclosed ``\\boxed{``
    is dropped. Linear in the length of the text (no recursion)."""
    if "box" not in text:
        return text
    pairs = bracket_pairs(text)
    cuts = []  # (start, stop) spans to delete: each "\boxed{" and its closing brace
    for m in _BOXED_RE.finditer(text):
        cuts.append((m.start(), m.end()))
        end = pairs.get(m.end() - 1)
        if end is not None:
            cuts.append((end, end + 1))
    out, pos = [], 0
    for start, stop in sorted(cuts):
        out.append(text[pos:start])
        pos = stop
    out.append(text[pos:])
    return "".join(out)


# ---------------------------------------------------------------------------
# Decimals

_DECIMAL_RE = re.compile(r"(-?)(\d*)(?:\.(\d*))?", re.ASCII)


def canonical_decimal(text: str) -> str | None:
    """The canonical string of a plain decimal number, or None if ``text`` is not one.

    No leading zeros, no trailing fractional zeros, no ``-0``; exact at any number
    of digits (no rounding to a context precision): ``"018.50"`` -> ``"18.5"``,
    ``"18.00000000000000000000000000001"`` stays as it is, ``"-0.0"`` -> ``"0"``.
    """
    m = _DECIMAL_RE.fullmatch(text.strip())
    if m is None or not (m.group(2) or m.group(3)):
        return None
    sign, whole, frac = m.group(1), m.group(2).lstrip("0") or "0", (m.group(3) or "").rstrip("0")
    out = f"{whole}.{frac}" if frac else whole
    return "0" if out == "0" else sign + out
