"""math-verify as a second opinion beside evalsuite's own verifiers.

math-verify (Hugging Face, ``huggingface/Math-Verify``; Kydlíček et al.) extracts an
answer from the raw output by itself (LaTeX environments, ``\\boxed{}``, "final
answer is", plain numbers) and compares it with the gold using sympy. evalsuite
runs it beside the equations verifier (``exact-solution-set``) and GSM8K's
``flexible-extract`` on every sample and records its verdict in the sample record
(``second_opinions``); the task's metrics carry :func:`agreement` (``math_verify``).

evalsuite's own verdict stays primary: it never evaluates model text as Python
(math-verify's plain-expression path calls sympy's ``parse_expr``), compares exact
values exactly (math-verify rounds floats to 6 decimals), knows multiplicity and
the real domain, and reads the plain "Final answer: x = 2, x = 3" lines the
prompts ask for (math-verify reads LaTeX best). A disagreement is a sample to look
at, not a correction.

Bounds: math-verify's own timeouts use ``signal.alarm``, which works only on a
process's main thread and cannot interrupt a long call into C. Every check
therefore runs on the main thread of a :class:`~evalsuite.scoring.equations.VerifierPool`
worker (memory-capped, SIGKILLed past the pool's time limit, replaced when it
dies), with math-verify's own timeouts set below that limit. A check that times
out, fails or kills its worker is ``unavailable``: counted, never a verdict and
never the run's end.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from evalsuite.types import SampleRecord, Score

VERIFIER = "math-verify"
MAX_LISTED = 200  # disagreeing sample ids kept in run.json per task


def version() -> str | None:
    """The installed math-verify's version, or None."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("math-verify")
    except PackageNotFoundError:
        return None


def warm_up() -> None:
    """Imports math-verify and runs one check, so a worker's first real check does
    not pay for its lazy set-up (about 2 s) against the time limit."""
    math_verify_job("$1$", "$1$", 5)


def math_verify_job(output: str, gold: Any, timeout_s: int) -> dict[str, Any]:
    """math-verify's verdict on ``output`` against ``gold`` (runs inside a pool worker).

    ``gold`` is a LaTeX string (parsed by math-verify) or a sympy object (a number,
    ``FiniteSet`` of roots, ``Tuple`` for a system, ``EmptySet``). Returns
    ``{"status": "ok", "verdict": 1.0 or 0.0, "answer": its reading or None}``
    (nothing read is verdict 0.0), or ``{"status": "timeout", "verdict": None, ...}``
    when one of math-verify's own timeouts (``timeout_s`` >= 1 s each for parsing
    and comparing) fired: math-verify itself would report that as a plain "wrong".
    Any other error inside math-verify counts as it would by default (nothing read,
    or not equal).
    """
    for name in ("math_verify", "latex2sympy2_extended"):  # it logs whole inputs on a timeout
        logging.getLogger(name).setLevel(logging.CRITICAL)
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
    from math_verify.errors import TimeoutException

    targets = [LatexExtractionConfig(), ExprExtractionConfig()]

    def read(text: str) -> list:
        try:
            return parse(text, targets, parsing_timeout=timeout_s, raise_on_error=True)
        except TimeoutException:
            raise
        except Exception:  # noqa: BLE001 -- math-verify's own default: an unreadable text reads as nothing
            return []

    try:
        gold_parsed = read(gold) if isinstance(gold, str) else [gold]
        pred = read(output)
        if not pred or not gold_parsed:
            return {"status": "ok", "verdict": 0.0, "answer": None}
        try:
            right = verify(gold_parsed, pred, timeout_seconds=timeout_s, raise_on_error=True)
        except TimeoutException:
            raise
        except Exception:  # noqa: BLE001 -- math-verify's own default: a failed comparison is "not equal"
            right = False
    except TimeoutException:
        return {"status": "timeout", "verdict": None, "answer": None, "detail": "math-verify's own timeout"}
    return {"status": "ok", "verdict": 1.0 if right else 0.0, "answer": str(pred[-1])[:500]}


def run(outputs: Sequence[str], golds: Sequence[Any], pool) -> list[dict[str, Any]]:
    """math-verify's opinion on each ``(output, gold)`` pair, checked in ``pool``.

    Each opinion: ``verifier`` (name and version), ``status`` (``ok``; ``timeout``
    for math-verify's own timeout or the pool's kill; ``error`` or ``died``),
    ``verdict`` (1.0/0.0, None unless ``ok``), ``answer``, and ``detail`` for a
    failure. Never raises for a check's failure.
    """
    inner = max(1, int(pool.time_limit_s / 3))  # parse gold, parse output, compare: each below the kill
    outcomes = pool.map(math_verify_job, [(o, g, inner) for o, g in zip(outputs, golds)])
    name = f"{VERIFIER} {version() or '?'}"
    out = []
    for outcome in outcomes:
        if outcome.status == "ok":
            out.append({"verifier": name, **outcome.value})
        else:
            out.append({"verifier": name, "status": outcome.status, "verdict": None, "answer": None,
                        "detail": str(outcome.value or "")[:300] or None})
    return out


def attach(scores: Sequence[Mapping[str, Score]], scorer: str,
           opinions: Sequence[Mapping[str, Any]]) -> list[dict[str, Score]]:
    """The score rows with ``opinions[k]`` attached to row ``scorer`` of generation ``k``."""
    return [{name: replace(s, second_opinion=op) if name == scorer else s for name, s in row.items()}
            for row, op in zip(scores, opinions)]


def agreement(records: Sequence[SampleRecord], scorer: str) -> dict[str, Any] | None:
    """How often math-verify's verdict agrees with ``scorer``'s, for ``run.json``.

    A sample counts when both gave a 0/1 verdict (math-verify ran to the end and
    evalsuite's row was not ``unverifiable``). Returns ``scorer``, ``verifier``,
    ``n`` (compared), ``agree``, ``disagree``, ``agreement`` (agree / n, None when
    n is 0), ``unavailable`` (samples with no comparable verdict), and
    ``disagreements``: up to 200 ``{sample_id, repeat, evalsuite, math_verify}``.
    None when no record carries a math-verify opinion.
    """
    rows = [(r, r.scores[scorer]) for r in records if scorer in r.scores]
    opinions = [(r, s, s.second_opinion) for r, s in rows if s.second_opinion is not None]
    if not opinions:
        return None
    compared = [(r, s, op) for r, s, op in opinions
                if op.get("verdict") is not None and s.detail != "unverifiable"]
    differ = [(r, s, op) for r, s, op in compared if float(s.value) != float(op["verdict"])]
    n = len(compared)
    return {
        "scorer": scorer,
        "verifier": opinions[0][2].get("verifier", VERIFIER),
        "n": n,
        "agree": n - len(differ),
        "disagree": len(differ),
        "agreement": (n - len(differ)) / n if n else None,
        "unavailable": len(rows) - n,
        "disagreements": [{"sample_id": r.sample_id, "repeat": r.repeat, "evalsuite": s.value,
                           "math_verify": op["verdict"]} for r, s, op in differ[:MAX_LISTED]],
    }
