"""Paired significance tests for comparing two runs sample by sample.

Both tests take the two runs' scores on the *same* samples, in the same order:
pairing removes the between-sample variance (some problems are hard for every
model), which is most of the variance in an accuracy comparison.

- :func:`mcnemar_exact` for 0/1 verdicts (McNemar, 1947, Psychometrika 12:153;
  the exact form is a two-sided binomial test on the discordant pairs).
- :func:`paired_bootstrap` for any other score (partial credit, recall): a
  bootstrap of the per-sample differences (Efron & Tibshirani, 1993, "An
  Introduction to the Bootstrap", ch. 13 and 16.4).

:func:`paired_difference` picks the test from the scores and gives the
difference of the means with its 95% interval: Newcombe's square-and-add
interval for 0/1 verdicts (:func:`newcombe_paired_interval`), the bootstrap's
percentile interval otherwise. ``compare`` and ``report`` both call it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from evalsuite.metrics.aggregate import Z95, wilson_interval


@dataclass(frozen=True)
class McNemarResult:
    """``b``: pairs right in the baseline and wrong in the candidate (losses);
    ``c``: wrong in the baseline and right in the candidate (wins);
    ``p_value``: two-sided exact p-value; ``n``: pairs compared."""

    b: int
    c: int
    n: int
    p_value: float


@dataclass(frozen=True)
class BootstrapResult:
    """``mean_diff``: mean of ``candidate - baseline`` over the pairs;
    ``ci95``: percentile 95% interval of that mean; ``p_value``: two-sided
    p-value of "no difference"; ``n``: pairs; ``resamples``: bootstrap draws."""

    mean_diff: float
    ci95: tuple[float, float]
    p_value: float
    n: int
    resamples: int


def _is_binary(values: Sequence[float]) -> bool:
    return all(v in (0.0, 1.0) for v in values)


def mcnemar_exact(baseline: Sequence[float], candidate: Sequence[float]) -> McNemarResult:
    """Exact McNemar test on paired 0/1 verdicts.

    With ``b`` losses and ``c`` wins, under the null each discordant pair is a
    fair coin, so ``p = min(1, 2 · P[X <= min(b, c)])`` for ``X ~ Binomial(b + c, 1/2)``
    (the same figure as ``statsmodels.stats.contingency_tables.mcnemar(table,
    exact=True)``). With no discordant pair ``p = 1``.

    Raises ValueError when the sequences differ in length or hold a value
    other than 0 or 1.
    """
    from scipy.stats import binom

    if len(baseline) != len(candidate):
        raise ValueError(f"paired sequences differ in length: {len(baseline)} vs {len(candidate)}")
    if not (_is_binary(baseline) and _is_binary(candidate)):
        raise ValueError("mcnemar_exact takes 0/1 verdicts only; use paired_bootstrap for other scores")
    b = sum(1 for x, y in zip(baseline, candidate) if x == 1.0 and y == 0.0)
    c = sum(1 for x, y in zip(baseline, candidate) if x == 0.0 and y == 1.0)
    if b + c == 0:
        p = 1.0
    else:
        p = min(1.0, 2.0 * float(binom.cdf(min(b, c), b + c, 0.5)))
    return McNemarResult(b=b, c=c, n=len(baseline), p_value=p)


def paired_bootstrap(baseline: Sequence[float], candidate: Sequence[float],
                     resamples: int = 10_000, seed: int = 0) -> BootstrapResult:
    """Paired bootstrap of the mean difference ``candidate - baseline``.

    Resamples the ``n`` per-sample differences ``d`` with replacement
    ``resamples`` times. The 95% interval is the 2.5th and 97.5th percentiles
    of the resampled means (percentile method). The p-value tests "mean
    difference is 0" by resampling the differences shifted to mean 0
    (Efron & Tibshirani, 1993, algorithm 16.2):
    ``p = (1 + #{|mean*| >= |mean(d)|}) / (resamples + 1)``. Deterministic for a
    given ``seed``.

    Raises ValueError for sequences of different lengths or of length 0.
    """
    if len(baseline) != len(candidate):
        raise ValueError(f"paired sequences differ in length: {len(baseline)} vs {len(candidate)}")
    if not baseline:
        raise ValueError("paired_bootstrap needs at least one pair")
    if resamples < 1:
        raise ValueError(f"resamples must be positive, got {resamples}")
    d = np.asarray(candidate, dtype=float) - np.asarray(baseline, dtype=float)
    observed = float(d.mean())
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(d), size=(resamples, len(d)))
    means = d[idx].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    null_means = means - observed  # the same draws, shifted so the null holds
    # A tolerance keeps float noise in the shift from deciding ties (all d equal).
    extreme = int(np.sum(np.abs(null_means) >= abs(observed) - 1e-12))
    p = (1 + extreme) / (resamples + 1)
    return BootstrapResult(mean_diff=observed, ci95=(float(lo), float(hi)), p_value=min(1.0, p),
                           n=len(d), resamples=resamples)


def newcombe_paired_interval(both_right: int, wins: int, losses: int, both_wrong: int,
                             z: float = Z95) -> tuple[float, float]:
    """95% interval of ``p_candidate - p_baseline`` for paired 0/1 verdicts.

    Newcombe's square-and-add (hybrid score) interval for paired proportions,
    method 10 of Newcombe (1998), Statistics in Medicine 17:2635-2650, as
    recommended by Fagerland, Lydersen & Laake (2014), Stat Med 33:2850. The
    counts are the paired 2x2 table: ``wins`` = wrong in the baseline and right
    in the candidate, ``losses`` = the reverse. With Wilson intervals
    ``[l1, u1]`` of the candidate's rate ``p1`` and ``[l2, u2]`` of the
    baseline's ``p2``, and the correlation estimate ``phi`` of the table
    (corrected towards 0 as in the paper)::

        lower = d - sqrt((p1-l1)^2 - 2 phi (p1-l1)(u2-p2) + (u2-p2)^2)
        upper = d + sqrt((p2-l2)^2 - 2 phi (p2-l2)(u1-p1) + (u1-p1)^2)

    Raises ValueError for a negative count or an empty table.
    """
    counts = (both_right, wins, losses, both_wrong)
    if min(counts) < 0:
        raise ValueError(f"table counts must be >= 0, got {counts}")
    n = sum(counts)
    if n == 0:
        raise ValueError("newcombe_paired_interval needs at least one pair")
    cand_right, base_right = both_right + wins, both_right + losses
    p1, p2 = cand_right / n, base_right / n
    l1, u1 = wilson_interval(cand_right, n, z)
    l2, u2 = wilson_interval(base_right, n, z)
    margins = cand_right * (n - cand_right) * base_right * (n - base_right)
    phi = 0.0
    if margins > 0:
        a = both_right * both_wrong - wins * losses
        # Newcombe's continuity correction: a positive association is shrunk by n/2.
        corrected = a - n / 2 if a > n / 2 else (0.0 if a >= 0 else a)
        phi = corrected / math.sqrt(margins)
    d = p1 - p2
    lower = d - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    upper = d + math.sqrt(max(0.0, (p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2))
    return max(-1.0, lower), min(1.0, upper)


@dataclass(frozen=True)
class PairedDifference:
    """Candidate minus baseline over ``n`` paired scores.

    ``diff``: ``candidate_mean - baseline_mean``, in the metric's units;
    ``ci95``: its 95% interval (Newcombe for 0/1 verdicts, paired-bootstrap
    percentile otherwise); ``p_value``: two-sided p of "no difference" from
    ``test`` (``mcnemar-exact`` or ``paired-bootstrap``); ``wins``/``losses``:
    pairs the candidate got right/wrong against the baseline (0/1 verdicts
    only); ``resamples``: bootstrap draws (bootstrap only).
    """

    test: str
    n: int
    baseline_mean: float
    candidate_mean: float
    diff: float
    ci95: tuple[float, float]
    p_value: float
    wins: int | None = None
    losses: int | None = None
    resamples: int | None = None

    def significant(self, alpha: float = 0.05) -> bool:
        return self.p_value < alpha


def paired_difference(baseline: Sequence[float], candidate: Sequence[float],
                      resamples: int = 10_000, seed: int = 0) -> PairedDifference:
    """The difference of two runs' mean scores on the same samples, with its 95%
    interval and the paired test's p-value: exact McNemar and Newcombe's interval
    when every score is 0 or 1, the paired bootstrap otherwise (deterministic for
    a ``seed``).

    Raises ValueError for sequences of different lengths or of length 0.
    """
    if len(baseline) != len(candidate):
        raise ValueError(f"paired sequences differ in length: {len(baseline)} vs {len(candidate)}")
    if not baseline:
        raise ValueError("paired_difference needs at least one pair")
    n = len(baseline)
    base_mean, cand_mean = sum(baseline) / n, sum(candidate) / n
    if _is_binary(baseline) and _is_binary(candidate):
        r = mcnemar_exact(baseline, candidate)
        both_right = sum(1 for x, y in zip(baseline, candidate) if x == 1.0 and y == 1.0)
        ci = newcombe_paired_interval(both_right, r.c, r.b, n - both_right - r.b - r.c)
        return PairedDifference("mcnemar-exact", n, base_mean, cand_mean, (r.c - r.b) / n, ci, r.p_value,
                                wins=r.c, losses=r.b)
    r = paired_bootstrap(baseline, candidate, resamples=resamples, seed=seed)
    return PairedDifference("paired-bootstrap", n, base_mean, cand_mean, r.mean_diff, r.ci95, r.p_value,
                            resamples=r.resamples)


def paired_test(baseline: Sequence[float], candidate: Sequence[float],
                resamples: int = 10_000, seed: int = 0) -> dict:
    """:func:`paired_difference` as a JSON-ready dict: ``test``, ``p_value``,
    ``n``, ``diff``, ``ci95`` and the test's own figures (``wins``/``losses``
    for McNemar; ``mean_diff``/``resamples`` for the bootstrap)."""
    r = paired_difference(baseline, candidate, resamples=resamples, seed=seed)
    out = {"test": r.test, "p_value": r.p_value, "n": r.n, "diff": r.diff, "ci95": list(r.ci95)}
    if r.test == "mcnemar-exact":
        return {**out, "losses": r.losses, "wins": r.wins}
    return {**out, "mean_diff": r.diff, "resamples": r.resamples}
