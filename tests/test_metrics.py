"""Aggregates against hand-worked values and scipy."""

import math

import pytest

from evalsuite.metrics.aggregate import (
    accuracy,
    distribution,
    mean_stderr,
    percentile,
    wilson_interval,
)


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


def test_tpot_definition():
    from evalsuite.metrics.aggregate import tpot_s

    # E2E 1.0 s, TTFT 0.2 s, 5 output tokens: (1.0 - 0.2) / 4 = 0.2 s
    assert tpot_s(1.0, 0.2, 5) == pytest.approx(0.2)
    assert tpot_s(1.0, 0.2, 1) is None  # one token: no gap after the first
    assert tpot_s(None, 0.2, 5) is None


def test_latency_summary_hand_worked():
    from types import SimpleNamespace

    from evalsuite.metrics.aggregate import latency_summary
    from evalsuite.types import Timings

    records = [
        SimpleNamespace(timings=Timings(e2e_s=1.0, ttft_s=0.1, itl_s=(0.2, 0.3)), output_tokens=3),
        SimpleNamespace(timings=Timings(e2e_s=2.0, ttft_s=0.3, itl_s=(0.4,)), output_tokens=2),
        SimpleNamespace(timings=Timings(), output_tokens=None),
    ]
    s = latency_summary(records)
    assert s["ttft_ms_n"] == 2 and s["ttft_ms_mean"] == pytest.approx(200.0)
    # TPOT: (1.0-0.1)/2 = 0.45 s and (2.0-0.3)/1 = 1.7 s -> p50 = 1075 ms
    assert s["tpot_ms_p50"] == pytest.approx(1075.0)
    # ITL pooled: 200, 300, 400 ms -> p50 300
    assert s["itl_ms_p50"] == pytest.approx(300.0) and s["itl_ms_n"] == 3
    assert s["e2e_ms_p99"] == pytest.approx(1000 + 1000 * 0.99)


def test_partial_credit_interval_stays_in_unit_range():
    row = accuracy([0.5, 1.0, 1.0], [True, True, True])
    assert 0.0 <= row["ci95"][0] <= row["ci95"][1] == 1.0


def test_throughput_counts_completed_requests_and_leaves_unmeasured_rates_none():
    from types import SimpleNamespace as Row

    from evalsuite.metrics.aggregate import throughput

    rows = [Row(error=None, prompt_tokens=10, output_tokens=5), Row(error=None, prompt_tokens=20, output_tokens=15),
            Row(error="timeout", prompt_tokens=None, output_tokens=None)]
    t = throughput(rows, 2.0)
    # vllm bench serve: completed requests / duration; tokens of completed requests / duration.
    assert t == {"prompt_tokens": 30, "output_tokens": 20, "request_throughput_per_s": 1.0,
                 "output_tokens_per_s": 10.0, "total_tokens_per_s": 25.0}
    unmeasured = throughput([Row(error=None, prompt_tokens=None, output_tokens=None)], 1.0)
    assert unmeasured["request_throughput_per_s"] == 1.0
    assert unmeasured["output_tokens_per_s"] is None and unmeasured["total_tokens_per_s"] is None
    assert throughput(rows, 0.0)["request_throughput_per_s"] is None
