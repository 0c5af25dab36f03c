"""The paired tests against hand-worked values, scipy and statsmodels."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evalsuite.metrics.stats import (
    mcnemar_exact,
    newcombe_paired_interval,
    paired_bootstrap,
    paired_difference,
    paired_test,
)


def _pairs(b: int, c: int, both_right: int, both_wrong: int) -> tuple[list[float], list[float]]:
    base = [1.0] * b + [0.0] * c + [1.0] * both_right + [0.0] * both_wrong
    cand = [0.0] * b + [1.0] * c + [1.0] * both_right + [0.0] * both_wrong
    return base, cand


@pytest.mark.parametrize(
    "b, c, expected",
    [
        (5, 0, 2 / 2**5),                  # 2 * P[X <= 0], X ~ Bin(5, 1/2)
        (6, 0, 2 / 2**6),
        (0, 6, 2 / 2**6),                  # symmetric in b and c
        (7, 2, 2 * (1 + 9 + 36) / 2**9),   # 2 * P[X <= 2], X ~ Bin(9, 1/2) = 0.1796875
        (3, 3, 1.0),                       # 2 * P[X <= 3] > 1, capped
        (0, 0, 1.0),                       # no discordant pair
    ],
)
def test_mcnemar_exact_hand_worked(b, c, expected):
    base, cand = _pairs(b, c, both_right=4, both_wrong=3)
    r = mcnemar_exact(base, cand)
    assert (r.b, r.c, r.n) == (b, c, b + c + 7)
    assert r.p_value == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("b, c", [(1, 0), (10, 3), (12, 25), (40, 41), (0, 17), (100, 70)])
def test_mcnemar_exact_matches_statsmodels_and_scipy(b, c):
    from scipy.stats import binomtest
    from statsmodels.stats.contingency_tables import mcnemar

    base, cand = _pairs(b, c, both_right=11, both_wrong=5)
    ours = mcnemar_exact(base, cand).p_value
    table = [[11, b], [c, 5]]  # rows: baseline right/wrong; columns: candidate right/wrong
    assert ours == pytest.approx(mcnemar(table, exact=True).pvalue, rel=1e-12, abs=1e-15)
    assert ours == pytest.approx(binomtest(min(b, c), b + c, 0.5).pvalue, rel=1e-9)


def test_mcnemar_rejects_non_binary_and_unequal_lengths():
    with pytest.raises(ValueError, match="0/1"):
        mcnemar_exact([1.0, 0.5], [1.0, 0.0])
    with pytest.raises(ValueError, match="length"):
        mcnemar_exact([1.0], [1.0, 0.0])


def test_paired_bootstrap_interval_matches_scipy_bootstrap():
    from scipy.stats import bootstrap

    rng = np.random.default_rng(7)
    base = rng.uniform(0, 1, 200)
    cand = np.clip(base - 0.1 + rng.normal(0, 0.2, 200), 0, 1)
    ours = paired_bootstrap(list(base), list(cand), resamples=20_000, seed=1)
    ref = bootstrap((base, cand), lambda x, y, axis=-1: np.mean(y - x, axis=axis), paired=True,
                    vectorized=True, n_resamples=20_000, method="percentile", random_state=2)
    assert ours.mean_diff == pytest.approx(float(np.mean(cand - base)), abs=1e-12)
    # Two independent Monte-Carlo estimates of the same percentiles.
    assert ours.ci95[0] == pytest.approx(ref.confidence_interval.low, abs=0.004)
    assert ours.ci95[1] == pytest.approx(ref.confidence_interval.high, abs=0.004)


def test_paired_bootstrap_p_value_matches_the_normal_test_on_a_large_sample():
    from scipy.stats import norm

    rng = np.random.default_rng(3)
    d = rng.normal(0.05, 0.3, 400)  # mean / stderr ~ 3.3 -> p ~ 1e-3
    base = [0.5] * len(d)
    cand = list(0.5 + d)
    r = paired_bootstrap(base, cand, resamples=50_000, seed=0)
    z = d.mean() / (d.std(ddof=0) / math.sqrt(len(d)))
    expected = 2 * norm.sf(abs(z))
    assert r.p_value == pytest.approx(expected, rel=0.35, abs=2e-4)


def test_paired_bootstrap_degenerate_cases():
    same = paired_bootstrap([0.2, 0.5, 0.9], [0.2, 0.5, 0.9], resamples=999)
    assert same.mean_diff == 0.0 and same.p_value == 1.0 and same.ci95 == (0.0, 0.0)
    # Every pair loses exactly 0.25: no resample reaches the shifted null, p = 1 / (B + 1).
    shifted = paired_bootstrap([0.5, 0.75, 1.0], [0.25, 0.5, 0.75], resamples=999)
    assert shifted.mean_diff == pytest.approx(-0.25)
    assert shifted.p_value == pytest.approx(1 / 1000)
    assert shifted.ci95 == pytest.approx((-0.25, -0.25))
    with pytest.raises(ValueError):
        paired_bootstrap([], [])


def test_paired_bootstrap_is_deterministic_for_a_seed():
    base, cand = [0.1, 0.4, 0.3, 0.9, 0.5], [0.2, 0.1, 0.3, 0.7, 0.6]
    assert paired_bootstrap(base, cand, seed=5) == paired_bootstrap(base, cand, seed=5)


def test_paired_test_picks_the_test_from_the_scores():
    assert paired_test([1.0, 0.0, 1.0], [0.0, 0.0, 1.0])["test"] == "mcnemar-exact"
    r = paired_test([1.0, 0.5, 1.0], [0.0, 0.5, 1.0], resamples=500)
    assert r["test"] == "paired-bootstrap" and r["n"] == 3


# --------------------------------------------------------------------------- the difference and its interval

def test_newcombe_interval_matches_the_published_example():
    """Cavo et al. (2012) in Fagerland, Lydersen & Laake, "Statistical Analysis of Contingency
    Tables" (2017), ch. 8: 59 both, 6 first only, 16 second only, 80 neither; the Newcombe
    square-and-add interval is -0.0621 (-0.1186 to -0.0046)."""
    lo, hi = newcombe_paired_interval(both_right=59, wins=6, losses=16, both_wrong=80)
    assert (round(lo, 4), round(hi, 4)) == (-0.1186, -0.0046)


def test_newcombe_interval_is_antisymmetric_and_stays_in_range():
    for table in [(59, 6, 16, 80), (0, 5, 0, 0), (3, 0, 4, 0), (10, 10, 10, 10), (1, 0, 0, 0)]:
        lo, hi = newcombe_paired_interval(*table)
        both_right, wins, losses, both_wrong = table
        flo, fhi = newcombe_paired_interval(both_right, losses, wins, both_wrong)
        assert (flo, fhi) == pytest.approx((-hi, -lo), abs=1e-12)
        d = (wins - losses) / sum(table)
        assert -1 <= lo <= d <= hi <= 1
    with pytest.raises(ValueError):
        newcombe_paired_interval(0, 0, 0, 0)


def test_newcombe_interval_covers_the_true_difference_95_percent_of_the_time():
    """Monte Carlo on a known joint distribution of paired verdicts (n = 80): the
    interval holds the true difference p(win) - p(loss) in about 95% of samples
    (Newcombe, 1998, reports coverage close to nominal for method 10)."""
    rng = np.random.default_rng(11)
    probs = [0.45, 0.15, 0.08, 0.32]  # both right, win, loss, both wrong
    truth = probs[1] - probs[2]
    tables = rng.multinomial(80, probs, size=4000)
    covered = sum(lo <= truth <= hi for lo, hi in (newcombe_paired_interval(*map(int, t)) for t in tables))
    assert 0.93 <= covered / len(tables) <= 0.975


def test_paired_difference_for_verdicts_and_for_partial_credit():
    base, cand = _pairs(b=7, c=2, both_right=4, both_wrong=3)  # 16 pairs, 2 wins, 7 losses
    r = paired_difference(base, cand)
    assert (r.test, r.n, r.wins, r.losses) == ("mcnemar-exact", 16, 2, 7)
    assert r.diff == pytest.approx((2 - 7) / 16) == r.candidate_mean - r.baseline_mean
    assert r.p_value == pytest.approx(2 * (1 + 9 + 36) / 2**9)
    assert r.ci95 == newcombe_paired_interval(4, 2, 7, 3)
    assert not r.significant(0.05) and r.significant(0.2)
    scores = ([0.5, 1.0, 0.25, 0.75], [0.25, 1.0, 0.0, 0.5])
    r = paired_difference(*scores, resamples=2000, seed=3)
    boot = paired_bootstrap(*scores, resamples=2000, seed=3)
    assert (r.test, r.diff, r.ci95, r.p_value, r.resamples) == (
        "paired-bootstrap", boot.mean_diff, boot.ci95, boot.p_value, 2000)
    as_dict = paired_test(*scores, resamples=2000, seed=3)
    assert as_dict["mean_diff"] == as_dict["diff"] == boot.mean_diff and as_dict["ci95"] == list(boot.ci95)
    with pytest.raises(ValueError):
        paired_difference([], [])
