"""Aggregates: accuracy with its uncertainty, pass@k, and latency percentiles.

Every metric carries its ``n``; missing measurements stay ``None``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def mean_stderr(values: Sequence[float]) -> float | None:
    """Standard error of the mean, ``s / sqrt(n)`` with the sample standard deviation
    (``ddof=1``), as lm-evaluation-harness reports it. None for ``n < 2``."""
    n = len(values)
    if n < 2:
        return None
    m = sum(values) / n
    var = sum((v - m) ** 2 for v in values) / (n - 1)
    return math.sqrt(var / n)


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval for a binomial proportion (Wilson, 1927, JASA 22:209).

    ``(center ± half) `` with ``center = (p + z²/2n) / (1 + z²/n)`` and
    ``half = z / (1 + z²/n) · sqrt(p(1-p)/n + z²/4n²)``. Unlike the normal interval
    it stays inside [0, 1] and is informative at p = 0 or 1. None for ``n == 0``.
    """
    if n == 0:
        return None
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


def accuracy(values: Sequence[float], extracted: Sequence[bool]) -> dict[str, Any]:
    """One metric row: mean, stderr, 95% interval, n and extraction-failure rate.

    For 0/1 verdicts the interval is Wilson's; for partial credit it is the normal
    interval ``mean ± 1.96·stderr``.
    """
    n = len(values)
    if n == 0:
        return {"value": None, "stderr": None, "ci95": None, "n": 0, "extraction_failure_rate": None}
    mean = sum(values) / n
    se = mean_stderr(values)
    if all(v in (0.0, 1.0) for v in values):
        ci = wilson_interval(int(sum(values)), n)
    else:
        # Scores live in [0, 1]: the normal interval is clipped to that range.
        ci = None if se is None else (max(0.0, mean - Z95 * se), min(1.0, mean + Z95 * se))
    return {
        "value": mean,
        "stderr": se,
        "ci95": list(ci) if ci else None,
        "n": n,
        "extraction_failure_rate": 1 - sum(extracted) / n,
    }


def pass_at_k(n: int, c: int, k: int) -> float | None:
    """Unbiased estimate of pass@k from ``n`` samples of which ``c`` passed.

    ``1 - C(n-c, k) / C(n, k)`` (Chen et al., 2021, "Evaluating Large Language
    Models Trained on Code", arXiv:2107.03374, eq. 1), in its numerically stable
    product form ``1 - prod_{i=n-c+1}^{n} (1 - k/i)``. ``None`` when ``k > n``
    (not estimable). Raises ValueError unless ``0 <= c <= n`` and ``k >= 1``.
    """
    if k < 1 or n < 0 or not 0 <= c <= n:
        raise ValueError(f"pass@k needs k >= 1 and 0 <= c <= n, got n={n}, c={c}, k={k}")
    if k > n:
        return None
    if n - c < k:
        return 1.0
    product = 1.0
    for i in range(n - c + 1, n + 1):
        product *= 1.0 - k / i
    return 1.0 - product


def pass_at_k_table(passed: Mapping[str, Sequence[bool]], ks: Sequence[int]) -> dict[str, Any]:
    """pass@k per k over problems: the mean of the per-problem unbiased estimates
    (:func:`pass_at_k`).

    ``passed`` maps a problem to the verdicts of its samples. Each row: ``value``,
    ``stderr`` (over problems), ``n`` (problems), ``k`` and ``samples_per_problem``
    (the smallest n over problems). A k larger than some problem's n is not reported.
    """
    if not passed:
        return {}
    n_min = min(len(v) for v in passed.values())
    table = {}
    for k in ks:
        if k > n_min:
            continue
        values = [pass_at_k(len(v), sum(v), k) for v in passed.values()]
        table[f"pass@{k}"] = {"value": sum(values) / len(values), "stderr": mean_stderr(values),
                              "n": len(values), "k": k, "samples_per_problem": n_min}
    return table


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default, ``method="linear"``) of an
    ascending sequence; ``q`` in [0, 100]."""
    if not sorted_values:
        raise ValueError("percentile of an empty sequence")
    pos = (len(sorted_values) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def distribution(values: Iterable[float | None], prefix: str, scale: float = 1.0) -> dict[str, Any]:
    """Mean and p50/p90/p95/p99 of the measured values (``None`` skipped), scaled
    (e.g. seconds to ms with ``scale=1000``). Keys are ``{prefix}_mean`` etc.;
    every figure is None when nothing was measured."""
    xs = sorted(v * scale for v in values if v is not None)
    out: dict[str, Any] = {f"{prefix}_n": len(xs)}
    out[f"{prefix}_mean"] = sum(xs) / len(xs) if xs else None
    for q in (50, 90, 95, 99):
        out[f"{prefix}_p{q}"] = percentile(xs, q) if xs else None
    return out


def tpot_s(e2e_s: float | None, ttft_s: float | None, output_tokens: int | None) -> float | None:
    """Time per output token after the first, as ``vllm bench serve`` defines it:
    ``TPOT = (E2E - TTFT) / (output tokens - 1)``. None when a figure is missing or
    the request produced fewer than two tokens (no gap to measure)."""
    if e2e_s is None or ttft_s is None or output_tokens is None or output_tokens < 2:
        return None
    return (e2e_s - ttft_s) / (output_tokens - 1)


def throughput(rows: Sequence[Any], wall_s: float) -> dict[str, Any]:
    """Request and token throughput over ``wall_s`` seconds, as ``vllm bench serve``
    defines them: completed requests (``error`` None) and their prompt and output
    tokens, divided by the wall time. ``rows`` have ``error``, ``prompt_tokens`` and
    ``output_tokens`` (records or generations). A rate is None when the wall time
    is 0 or no row measured its tokens (never 0 for "not measured").
    """
    ok = [r for r in rows if r.error is None]
    out = [r.output_tokens for r in ok if r.output_tokens is not None]
    prompt = [r.prompt_tokens for r in ok if r.prompt_tokens is not None]
    timed = wall_s > 0
    return {
        "prompt_tokens": sum(prompt),
        "output_tokens": sum(out),
        "request_throughput_per_s": len(ok) / wall_s if timed else None,
        "output_tokens_per_s": sum(out) / wall_s if timed and out else None,
        "total_tokens_per_s": (sum(prompt) + sum(out)) / wall_s if timed and (out or prompt) else None,
    }


def latency_summary(records: Sequence[Any]) -> dict[str, Any]:
    """TTFT, TPOT, ITL and end-to-end latency distributions in milliseconds.

    ``records`` have ``timings`` (:class:`~evalsuite.types.Timings`) and
    ``output_tokens``. Definitions follow vLLM's ``vllm bench serve``: TTFT is the
    time from sending a request to its first output token; TPOT as :func:`tpot_s`;
    ITL pools every gap between consecutive output tokens of every request;
    E2E is the time from sending a request to its last token.
    """
    ttft = [r.timings.ttft_s for r in records]
    e2e = [r.timings.e2e_s for r in records]
    tpot = [tpot_s(r.timings.e2e_s, r.timings.ttft_s, r.output_tokens) for r in records]
    itl = [gap for r in records if r.timings.itl_s for gap in r.timings.itl_s]
    return {
        **distribution(ttft, "ttft_ms", 1000.0),
        **distribution(tpot, "tpot_ms", 1000.0),
        **distribution(itl, "itl_ms", 1000.0),
        **distribution(e2e, "e2e_ms", 1000.0),
    }
