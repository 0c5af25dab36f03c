"""JSON output validity and field-level correctness: pure functions.

Parsing follows RFC 8259 (The JavaScript Object Notation Data Interchange
Format) more strictly than Python's :mod:`json`, which accepts ``NaN``,
``Infinity`` and ``-Infinity`` (not JSON) and keeps the last of duplicate keys
(RFC 8259 §4: names SHOULD be unique; I-JSON, RFC 7493 §2.3, MUST). Here both
make an output invalid.

- :func:`strict_parse`: the whole output is one JSON value (JSON whitespace
  around it allowed, as in RFC 8259's ``JSON-text = ws value ws``).
- :func:`lenient_parse`: the whole output, else the body of the output's only
  fenced code block (```` ```json ... ``` ````), else the first brace-balanced
  ``{...}`` in the output.
- :func:`schema_errors` / :func:`schema_valid`: JSON Schema Draft 2020-12 through
  ``jsonschema`` with format checking on (``format`` is only an annotation unless
  a checker asserts it). ``email`` and ``idn-email`` are checked with
  ``email-validator`` (syntax only, no DNS), because jsonschema's own check is
  ``"@" in value``; the other formats use jsonschema's checkers, several of which
  need its ``format-nongpl`` extra (:func:`unchecked_formats` names any format a
  schema uses that this installation cannot check).
- :func:`field_scores`: field-level exact accuracy, precision, recall and F1 of a
  predicted object against a gold object, guided by the schema.
- :func:`classify_output`: ``valid`` / ``invalid`` / ``truncated`` / ``error``.

Schema annotation ``"x-unordered": true`` on an array marks its order as
irrelevant: it is compared as a multiset. (JSON Schema has no keyword for this;
unknown keywords are annotations in Draft 2020-12, so validators ignore it.)
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any

from evalsuite.scoring.normalize import bracket_pairs, outside_json_strings

UNORDERED = "x-unordered"

_FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\r?\n(.*?)```", re.DOTALL)


class DuplicateKeyError(ValueError):
    """An object has the same name twice."""


class NonFiniteNumberError(ValueError):
    """``NaN``, ``Infinity`` or ``-Infinity``: accepted by Python's json, not JSON."""


class NestingError(ValueError):
    """Arrays and objects nested deeper than :data:`MAX_DEPTH`."""


MAX_DEPTH = 100
"""Deepest nesting of arrays and objects read (RFC 8259 §9: "An implementation may
set limits on the maximum depth of nesting"). Deeper text is invalid output: every
later step (schema validation, field comparison) recurses once or more per level,
and a model's answer has no use for 100 levels."""


def nesting_depth(text: str) -> int:
    """The deepest nesting of ``[``/``{`` in ``text``, brackets inside JSON strings
    not counted; linear in the length of ``text``, with no recursion."""
    depth = deepest = 0
    for _, ch in outside_json_strings(text):
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth = max(0, depth - 1)
    return deepest


@dataclass(frozen=True)
class Parsed:
    """The outcome of a parse.

    ``ok`` tells whether a JSON value was found (``value`` may itself be ``None``
    for the JSON text ``null``). ``source`` says where it was found: ``whole``,
    ``fence`` or ``object``; ``error`` explains a failure in one line.
    """

    ok: bool
    value: Any = None
    source: str | None = None
    error: str | None = None


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKeyError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise NonFiniteNumberError(f"{name} is not a JSON number")


def loads(text: str) -> Any:
    """``json.loads`` that rejects duplicate keys, NaN/Infinity and nesting deeper
    than :data:`MAX_DEPTH`.

    Raises ``json.JSONDecodeError`` (syntax), :class:`DuplicateKeyError`,
    :class:`NonFiniteNumberError` or :class:`NestingError`; all are ``ValueError``.
    """
    # Fewer brackets than the limit cannot nest past it: counting is C-fast, scanning is not.
    depth = nesting_depth(text) if text.count("[") + text.count("{") > MAX_DEPTH else 0
    if depth > MAX_DEPTH:
        raise NestingError(f"nested {depth} levels deep (more than {MAX_DEPTH})")
    return json.loads(text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)


def _try(text: str, source: str) -> Parsed:
    try:
        return Parsed(True, loads(text), source)
    except json.JSONDecodeError as e:
        return Parsed(False, source=source, error=f"{e.msg} at line {e.lineno} column {e.colno}")
    except ValueError as e:
        return Parsed(False, source=source, error=str(e))


def strict_parse(output: str) -> Parsed:
    """The whole output as one JSON value; anything else around it fails.

    >>> strict_parse('{"a": 1}').value
    {'a': 1}
    >>> strict_parse('{"a": 1,}').ok
    False
    """
    if not output.strip():
        return Parsed(False, source="whole", error="empty output")
    return _try(output, "whole")


def fenced_blocks(output: str) -> list[str]:
    """Bodies of the Markdown fenced code blocks in ``output``, in order."""
    return [m.group(2) for m in _FENCE_RE.finditer(output)]


def first_balanced_object(output: str) -> str | None:
    """The text from the first ``{`` to the brace that closes it, or None.

    Braces inside JSON strings (double quotes, backslash escapes) are not
    counted. None when there is no ``{`` or it is never closed (a truncated object).
    """
    start = output.find("{")
    if start < 0:
        return None
    end = bracket_pairs(output[start:], json_strings=True).get(0)
    return None if end is None else output[start : start + end + 1]


def lenient_parse(output: str) -> Parsed:
    """The first of these that parses: the whole output; the body of the output's
    only fenced block (several blocks are ambiguous and skipped); the first
    balanced ``{...}``. The error of the last candidate tried is kept.

    >>> lenient_parse('Here:\\n```json\\n{"a": 1}\\n```').source
    'fence'
    """
    attempt = strict_parse(output)
    if attempt.ok:
        return attempt
    blocks = fenced_blocks(output)
    if len(blocks) == 1:
        attempt = _try(blocks[0], "fence")
        if attempt.ok:
            return attempt
    obj = first_balanced_object(output)
    if obj is None:
        return Parsed(False, source="object", error=attempt.error if output.strip() else "empty output")
    return _try(obj, "object")


# --- JSON Schema -------------------------------------------------------------


def _email(value: object, smtputf8: bool) -> bool:
    from email_validator import EmailNotValidError, validate_email

    if not isinstance(value, str):
        return True  # formats apply to strings only (JSON Schema 2020-12 §7.1)
    try:
        validate_email(value, check_deliverability=False, allow_smtputf8=smtputf8,
                       allow_quoted_local=True, allow_domain_literal=True, globally_deliverable=False)
    except EmailNotValidError:
        return False
    return True


@lru_cache(maxsize=1)
def format_checker():
    """Draft 2020-12's format checker with ``email``/``idn-email`` made real.

    ``email``: RFC 5321 mailbox syntax (ASCII); ``idn-email``: RFC 6531 (UTF-8).
    Checked by ``email-validator`` without DNS; special-use domains such as
    ``localhost`` and ``.test`` are rejected.
    """
    from jsonschema import Draft202012Validator, FormatChecker

    checker = FormatChecker()
    checker.checkers = dict(Draft202012Validator.FORMAT_CHECKER.checkers)
    checker.checks("email")(lambda v: _email(v, smtputf8=False))
    checker.checks("idn-email")(lambda v: _email(v, smtputf8=True))
    return checker


@lru_cache(maxsize=256)
def _validator(schema_json: str):
    from jsonschema import Draft202012Validator

    return Draft202012Validator(json.loads(schema_json), format_checker=format_checker())


def schema_key(schema: Mapping[str, Any]) -> str:
    """A canonical JSON text of ``schema`` (sorted keys), usable as a cache key."""
    return json.dumps(schema, sort_keys=True, ensure_ascii=False)


def check_schema(schema: Mapping[str, Any]) -> str | None:
    """None if ``schema`` is a valid Draft 2020-12 schema, else the reason."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as e:
        return e.message
    return None


def schema_errors(value: Any, schema: Mapping[str, Any]) -> list[str]:
    """Every way ``value`` breaks ``schema`` (Draft 2020-12, formats asserted),
    one ``"<json path>: <message>"`` line each, in jsonschema's order; ``[]`` if valid."""
    validator = _validator(schema_key(schema))
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(value)]


def schema_valid(value: Any, schema: Mapping[str, Any]) -> bool:
    """True when ``value`` follows ``schema`` (Draft 2020-12, formats asserted)."""
    return _validator(schema_key(schema)).is_valid(value)


def _walk_schemas(schema: Any) -> Iterator[Mapping[str, Any]]:
    if isinstance(schema, Mapping):
        yield schema
        for value in schema.values():
            yield from _walk_schemas(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from _walk_schemas(item)


def unchecked_formats(schema: Mapping[str, Any]) -> list[str]:
    """Formats named in ``schema`` that this installation cannot assert (validation
    then passes them silently); sorted, ``[]`` when all are checked."""
    known = set(format_checker().checkers)
    used = {s["format"] for s in _walk_schemas(schema) if isinstance(s.get("format"), str)}
    return sorted(used - known)


# --- Field-level comparison ----------------------------------------------------


def _sub(schema: Any, key: str | int) -> Mapping[str, Any]:
    """The subschema for an object property or array item (``properties``,
    ``prefixItems``, ``items``); ``{}`` where the schema does not say."""
    if not isinstance(schema, Mapping):
        return {}
    if isinstance(key, str):
        return (schema.get("properties") or {}).get(key, {})
    prefix = schema.get("prefixItems") or []
    if key < len(prefix):
        return prefix[key]
    items = schema.get("items")
    return items if isinstance(items, Mapping) else {}


def canonical(value: Any, schema: Any = None) -> Any:
    """A hashable form in which equal JSON values are equal.

    Numbers become exact fractions (``7 == 7.0``; ``true`` is not ``1``); objects
    become sorted pairs with ``null`` members dropped (an absent optional field and
    ``null`` agree); arrays marked ``x-unordered`` become sorted multisets.
    """
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        # 1e400 parses to inf in Python; keep such numbers comparable without Fraction.
        return ("num", Fraction(value)) if math.isfinite(value) else ("num", repr(value))
    if isinstance(value, str):
        return ("str", value)
    if value is None:
        return ("null",)
    if isinstance(value, Mapping):
        return ("obj", tuple(sorted((k, canonical(v, _sub(schema, k))) for k, v in value.items() if v is not None)))
    if isinstance(value, list):
        items = [canonical(v, _sub(schema, i)) for i, v in enumerate(value)]
        if isinstance(schema, Mapping) and schema.get(UNORDERED):
            return ("set", tuple(sorted(items, key=repr)))
        return ("list", tuple(items))
    return ("other", repr(value))


def flatten(value: Any, schema: Any = None, path: str = "$") -> dict[str, Any]:
    """Fields of a JSON value: ``{json path: canonical leaf}``.

    Objects and ordered arrays are descended into (``$.a.b``, ``$.items[0]``);
    scalars and ``x-unordered`` arrays are leaves (the latter a multiset, so their
    order never matters); ``null`` counts as absent.
    """
    if value is None:
        return {}
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, _sub(schema, k), f"{path}.{k}"))
        return out
    if isinstance(value, list) and not (isinstance(schema, Mapping) and schema.get(UNORDERED)):
        out = {}
        for i, v in enumerate(value):
            out.update(flatten(v, _sub(schema, i), f"{path}[{i}]"))
        return out
    return {path: canonical(value, schema)}


def _facts(fields: Mapping[str, Any]) -> Counter:
    """Each scalar field is one fact; each item of an unordered array is one."""
    facts: Counter = Counter()
    for path, leaf in fields.items():
        if leaf[0] == "set":
            facts.update((path, item) for item in leaf[1])
        else:
            facts[(path, leaf)] += 1
    return facts


@dataclass(frozen=True)
class FieldScores:
    """Field-level agreement of one prediction with its gold object.

    - ``accuracy``: share of fields (json paths in gold or prediction; an unordered
      array is one field) whose predicted value equals the gold value exactly;
    - ``precision``/``recall``/``f1``: over facts (a scalar field, or one item of
      an unordered array): ``correct / predicted``, ``correct / gold`` and their
      harmonic mean, with ``correct`` the size of the multiset intersection.
    Each is 1.0 when both sides are empty and 0.0 when only one side is.
    """

    accuracy: float
    precision: float
    recall: float
    f1: float
    correct: int
    predicted: int
    gold: int


def field_scores(predicted: Any, gold: Any, schema: Mapping[str, Any] | None = None) -> FieldScores:
    """Compares ``predicted`` with ``gold`` field by field (see :class:`FieldScores`).

    >>> field_scores({"a": 1, "b": ["x", "y"]}, {"a": 1.0, "b": ["y", "x"]},
    ...              {"properties": {"b": {"type": "array", "x-unordered": True}}}).f1
    1.0
    """
    p_fields, g_fields = flatten(predicted, schema), flatten(gold, schema)
    paths = set(p_fields) | set(g_fields)
    same = sum(p_fields.get(p) == g_fields.get(p) for p in paths)
    accuracy = same / len(paths) if paths else 1.0
    p_facts, g_facts = _facts(p_fields), _facts(g_fields)
    correct = sum((p_facts & g_facts).values())
    n_pred, n_gold = sum(p_facts.values()), sum(g_facts.values())
    precision = correct / n_pred if n_pred else (1.0 if not n_gold else 0.0)
    recall = correct / n_gold if n_gold else (1.0 if not n_pred else 0.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return FieldScores(accuracy, precision, recall, f1, correct, n_pred, n_gold)


# --- Outcome of one generation ---------------------------------------------------

OUTCOMES = ("valid", "invalid", "truncated", "error")


def classify_output(output: str, schema: Mapping[str, Any], finish_reason: str | None,
                    error: str | None = None) -> str:
    """One of :data:`OUTCOMES` for a generation.

    ``valid``: the lenient parse follows the schema (whatever stopped generation);
    otherwise ``error`` when the request failed, ``truncated`` when generation hit
    the token limit (``finish_reason == "length"``), else ``invalid``.
    """
    parsed = lenient_parse(output)
    if parsed.ok and schema_valid(parsed.value, schema):
        return "valid"
    if error is not None:
        return "error"
    return "truncated" if finish_reason == "length" else "invalid"
