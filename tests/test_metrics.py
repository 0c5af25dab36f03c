"""Aggregates against hand-worked values and scipy."""

import math

import pytest

from evalsuite.metrics import accuracy, distribution, mean_stderr, percentile, wilson_interval


def test_mean_stderr_hand_worked():
    # values 1,0,1,1: mean 0.75, sample variance 0.25, stderr sqrt(0.25/4) = 0.25
    assert mean_stderr([1, 0, 1, 1]) == pytest.approx(0.25)
    assert mean_stderr([1]) is None


@pytest.mark.parametrize("k, n", [(0, 10), (3, 10), (10, 10), (37, 120), (1, 1319)])
def test_wilson_interval_matches_scipy(k, n):
    scipy_stats = pytest.importorskip("scipy.stats")
    ci = scipy_stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(ci.low, abs=1e-9) and hi == pytest.approx(ci.high, abs=1e-9)


def test_accuracy_row():
    row = accuracy([1.0, 0.0, 0.0, 1.0], [True, True, False, True])
    assert row["value"] == 0.5 and row["n"] == 4
    assert row["extraction_failure_rate"] == 0.25
    assert row["stderr"] == pytest.approx(math.sqrt((4 * 0.25) / 3 / 4))
    assert accuracy([], [])["value"] is None


def test_percentile_linear_interpolation():
    xs = [1.0, 2.0, 3.0, 4.0]
    # numpy linear: position (n-1)q = 3 * 0.5 = 1.5 -> 2.5; q=90 -> 2.7 -> 3.7
    assert percentile(xs, 50) == 2.5
    assert percentile(xs, 90) == pytest.approx(3.7)
    assert percentile([5.0], 99) == 5.0


def test_distribution_skips_missing_and_reports_none_when_empty():
    d = distribution([0.1, None, 0.3], "ttft_ms", 1000)
    assert d["ttft_ms_n"] == 2 and d["ttft_ms_mean"] == pytest.approx(200.0)
    empty = distribution([None, None], "ttft_ms", 1000)
    assert empty["ttft_ms_p50"] is None and empty["ttft_ms_mean"] is None
