"""Paired significance tests for comparing two runs sample by sample.

Both tests take the two runs' scores on the *same* samples, in the same order:
pairing removes the between-sample variance (some problems are hard for every
model), which is most of the variance in an accuracy comparison.

- :func:`mcnemar_exact` for 0/1 verdicts (McNemar, 1947, Psychometrika 12:153;
  the exact form is a two-sided binomial test on the discordant pairs).
- :func:`paired_bootstrap` for any other score (partial credit, recall): a
  bootstrap of the per-sample differences (Efron & Tibshirani, 1993, "An
  Introduction to the Bootstrap", ch. 13 and 16.4).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


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


def paired_test(baseline: Sequence[float], candidate: Sequence[float],
                resamples: int = 10_000, seed: int = 0) -> dict:
    """The right paired test for the scores: McNemar when every score is 0 or 1,
    the paired bootstrap otherwise. Returns a JSON-ready dict with ``test``,
    ``p_value``, ``n`` and the test's own figures."""
    if _is_binary(baseline) and _is_binary(candidate):
        r = mcnemar_exact(baseline, candidate)
        return {"test": "mcnemar-exact", "p_value": r.p_value, "n": r.n, "losses": r.b, "wins": r.c}
    r = paired_bootstrap(baseline, candidate, resamples=resamples, seed=seed)
    return {"test": "paired-bootstrap", "p_value": r.p_value, "n": r.n,
            "mean_diff": r.mean_diff, "ci95": list(r.ci95), "resamples": r.resamples}
