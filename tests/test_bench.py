"""Load mode: arrivals, SLOs and the summary, against hand-worked values."""

import math

import pytest

from evalsuite.errors import UsageError
from evalsuite.metrics.load import Slo, arrival_times, parse_slo, summarize
from evalsuite.types import Generation, Timings


def test_infinite_rate_sends_everything_at_once():
    assert arrival_times(4, math.inf) == [0.0, 0.0, 0.0, 0.0]


def test_poisson_arrivals_are_seeded_and_have_the_right_mean_gap():
    a = arrival_times(20000, 5.0, seed=1)
    assert a == arrival_times(20000, 5.0, seed=1) and a != arrival_times(20000, 5.0, seed=2)
    gaps = [y - x for x, y in zip(a, a[1:])]
    assert a[0] == 0.0 and all(g >= 0 for g in gaps)
    mean = sum(gaps) / len(gaps)
    assert mean == pytest.approx(0.2, rel=0.03)  # 1 / rate; stderr of the mean ~0.7% here
    # exponential: the share of gaps above the mean is e^-1
    assert sum(g > 0.2 for g in gaps) / len(gaps) == pytest.approx(math.exp(-1), abs=0.015)


def test_rate_must_be_positive():
    with pytest.raises(ValueError):
        arrival_times(3, 0)


def _gen(ttft, e2e, out, error=None):
    return Generation("x", "stop", None, 10, out, Timings(e2e_s=e2e, ttft_s=ttft), error)


def test_slo_and_goodput():
    slo = Slo(ttft_ms=100, tpot_ms=20)
    fast = _gen(0.05, 0.05 + 0.01 * 9, 10)  # TTFT 50 ms, TPOT 10 ms
    slow_first = _gen(0.2, 0.29, 10)  # TTFT 200 ms
    slow_tokens = _gen(0.05, 0.05 + 0.03 * 9, 10)  # TPOT 30 ms
    failed = _gen(None, None, None, error="HTTP 500")
    assert slo.met(fast) and not slo.met(slow_first) and not slo.met(slow_tokens) and not slo.met(failed)
    s = summarize([fast, slow_first, slow_tokens, failed], wall_s=2.0, slo=slo)
    assert s["goodput_requests_per_s"] == pytest.approx(0.5)  # 1 good request in 2 s
    assert s["slo_attainment"] == pytest.approx(0.25)
    assert s["errors"] == 1 and s["completed"] == 3
    assert s["request_throughput_per_s"] == pytest.approx(1.5)
    assert s["output_tokens_per_s"] == pytest.approx(15.0)
    assert s["ttft_ms_p50"] == pytest.approx(50.0)


def test_one_token_request_has_no_tpot():
    s = summarize([_gen(0.1, 0.1, 1)], wall_s=1.0)
    assert s["tpot_ms_p50"] is None and s["ttft_ms_p50"] == pytest.approx(100.0)


def test_parse_slo():
    assert parse_slo(["ttft_ms=500", "e2e_ms=2000"]) == Slo(ttft_ms=500, e2e_ms=2000)
    assert parse_slo([]) is None
    with pytest.raises(UsageError, match="--slo takes"):
        parse_slo(["latency=3"])
