"""Needle-in-a-haystack scoring: recall of the hidden values and the effective
context length.

Deterministic string matching, no model as judge. A value counts as recalled when
it occurs in the output case-insensitively and word-bounded (not inside a longer
word or number): ``4829173`` is found in ``"It is 4829173."`` but not in
``"48291730"``. The effective context length follows RULER (Hsieh et al., 2024,
"RULER: What's the Real Context Size of Your Long-Context Language Models?",
arXiv:2404.06654): the longest tested length up to which the score stays at or
above a threshold (RULER uses about 0.85; so does this module by default).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

DEFAULT_THRESHOLD = 0.85


def _value_pattern(value: str) -> re.Pattern[str]:
    return re.compile(rf"(?<!\w){re.escape(value)}(?!\w)", re.IGNORECASE)


def found_values(output: str, expected: Sequence[str]) -> list[str]:
    """The expected values that occur in ``output``, in the order of ``expected``.

    Matching is case-insensitive and word-bounded (``\\w`` may not touch the value
    on either side). Raises ValueError for an empty ``expected``.
    """
    if not expected:
        raise ValueError("needle recall needs at least one expected value")
    return [v for v in expected if _value_pattern(v).search(output)]


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
