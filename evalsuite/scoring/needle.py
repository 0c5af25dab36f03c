"""Needle-in-a-haystack scoring: recall of the hidden values and the effective
context length.

Deterministic string matching, no model as judge. The matching rule, applied in
:func:`found_values` and nowhere else: the output and the needle value are both
read through :func:`evalsuite.scoring.normalize.match_key` (the shared
normalisation, so Unicode digits and dashes, thousands separators and LaTeX
are undone; then case-folded and cut into runs of letters and digits), and the
value is found when its runs occur in the output's runs consecutively. So case,
punctuation and whitespace do not matter, and a value quoted inside more text
counts: ``4829173`` is found in ``"It is 4,829,173."`` and in ``"**4829173**"``,
``amber-falcon`` in ``"Amber Falcon"``; but a value is never found inside a longer
word or number: not in ``"48291730"`` nor in ``"x4829173"``. The effective
context length follows RULER (Hsieh et al., 2024, "RULER: What's the Real
Context Size of Your Long-Context Language Models?", arXiv:2404.06654): the
longest tested length up to which the score stays at or above a threshold
(RULER uses about 0.85; so does this module by default).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from evalsuite.scoring.normalize import match_key

DEFAULT_THRESHOLD = 0.85


def found_values(output: str, expected: Sequence[str]) -> list[str]:
    """The expected values that occur in ``output``, in the order of ``expected``
    (the matching rule of the module docstring).

    Raises ValueError for an empty ``expected`` or a value with no letter or digit.
    """
    if not expected:
        raise ValueError("needle recall needs at least one expected value")
    haystack = "\0" + "\0".join(match_key(output)) + "\0"
    found = []
    for value in expected:
        key = match_key(value)
        if not key:
            raise ValueError(f"needle value {value!r} has no letter or digit to match")
        if "\0" + "\0".join(key) + "\0" in haystack:
            found.append(value)
    return found


def needle_recall(output: str, expected: Sequence[str]) -> float:
    """Fraction of ``expected`` values found in ``output`` (0.0 to 1.0).

    One value asked for gives 0 or 1; ``k`` values give partial credit in steps of
    ``1/k``. Raises ValueError for an empty ``expected``.
    """
    return len(found_values(output, expected)) / len(expected)


def effective_context_length(recall_by_length: Mapping[int, float | None],
                             threshold: float = DEFAULT_THRESHOLD) -> int | None:
    """The longest length whose recall, and that of every shorter length, is at
    or above ``threshold``.

    ``recall_by_length``: tested length in tokens -> mean recall (lengths with no
    evaluated cells, ``None``, are left out). Returns None when the shortest
    tested length already falls below the threshold or nothing was tested.
    """
    best = None
    for length in sorted(k for k, v in recall_by_length.items() if v is not None):
        if recall_by_length[length] < threshold:
            break
        best = length
    return best
