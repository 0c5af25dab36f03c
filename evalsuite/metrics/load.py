"""Load mode: latency and throughput of a served endpoint under a given load.

Requests arrive as a Poisson process at ``request_rate`` per second (gaps drawn from
an exponential distribution with a fixed seed; ``inf`` sends them all at once), with
at most ``max_concurrency`` in flight, as in vLLM's ``vllm bench serve``. Prompts come
from any task or are random token sequences of a given length. Each request is
streamed, so TTFT, TPOT, ITL and E2E follow the definitions of ``vllm bench serve``
(see :func:`evalsuite.metrics.aggregate.latency_summary`); goodput counts the requests per
second that met every SLO target (DistServe, Zhong et al., 2024).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evalsuite.errors import UsageError
from evalsuite.metrics.aggregate import latency_summary, throughput, tpot_s
from evalsuite.types import Generation, GenerationRequest, SamplingParams

SLO_KEYS = ("ttft_ms", "tpot_ms", "e2e_ms")


def arrival_times(n: int, request_rate: float, seed: int = 0) -> list[float]:
    """Send offsets in seconds of ``n`` requests of a Poisson process with
    ``request_rate`` requests/s; all zeros for ``inf``. Raises ValueError for a
    rate <= 0."""
    if request_rate <= 0:
        raise ValueError(f"request rate must be > 0, got {request_rate}")
    if math.isinf(request_rate):
        return [0.0] * n
    rng = random.Random(seed)
    t, times = 0.0, []
    for _ in range(n):
        times.append(t)
        t += rng.expovariate(request_rate)
    return times


def random_prompts(tokenizer: Any, n: int, input_len: int, seed: int = 0) -> list[str]:
    """``n`` prompts of random vocabulary tokens, each re-encoding to ``input_len``
    tokens with ``tokenizer`` (decoding can merge or split tokens, so the text is
    trimmed or padded until the count is exact, or as close as the tokenizer allows)."""
    rng = random.Random(seed)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    vocab = [i for i in range(len(tokenizer)) if i not in special]
    prompts = []
    for _ in range(n):
        ids = [rng.choice(vocab) for _ in range(input_len)]
        text = tokenizer.decode(ids)
        for _ in range(8):
            count = len(tokenizer.encode(text, add_special_tokens=False))
            if count == input_len:
                break
            ids = ids[: input_len - (count - input_len)] if count > input_len else ids + [rng.choice(vocab) for _ in range(input_len - count)]
            text = tokenizer.decode(ids)
        prompts.append(text)
    return prompts


@dataclass(frozen=True)
class Slo:
    """Per-request targets in milliseconds; None means no target."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None

    def met(self, g: Generation) -> bool:
        if g.error is not None:
            return False
        t = g.timings
        figures = {
            "ttft_ms": None if t.ttft_s is None else t.ttft_s * 1000,
            "tpot_ms": None if (v := tpot_s(t.e2e_s, t.ttft_s, g.output_tokens)) is None else v * 1000,
            "e2e_ms": None if t.e2e_s is None else t.e2e_s * 1000,
        }
        for key in SLO_KEYS:
            target = getattr(self, key)
            if target is not None and (figures[key] is None or figures[key] > target):
                return False
        return True


async def _send_all(backend, requests: Sequence[GenerationRequest], offsets: Sequence[float]) -> list[Generation]:
    import httpx

    limits = httpx.Limits(max_connections=backend.max_concurrency, max_keepalive_connections=backend.max_concurrency)
    slots = asyncio.Semaphore(backend.max_concurrency)
    timeout = httpx.Timeout(backend.request_timeout, connect=min(10.0, backend.request_timeout))
    start = time.perf_counter()

    async def at(offset: float, request: GenerationRequest) -> Generation:
        await asyncio.sleep(max(0.0, start + offset - time.perf_counter()))
        return await backend.request_one(client, slots, request)

    async with httpx.AsyncClient(limits=limits, timeout=timeout, headers=backend.headers) as client:
        return list(await asyncio.gather(*(at(o, r) for o, r in zip(offsets, requests))))


def run_load(backend, requests: Sequence[GenerationRequest], request_rate: float = math.inf,
             seed: int = 0) -> tuple[list[Generation], float]:
    """Sends ``requests`` through an :class:`~evalsuite.backends.openai.OpenAIBackend`
    on the arrival schedule; returns the generations (in order) and the wall time in
    seconds from the first send to the last completion."""
    offsets = arrival_times(len(requests), request_rate, seed)
    start = time.perf_counter()
    generations = asyncio.run(_send_all(backend, requests, offsets))
    return generations, time.perf_counter() - start


def summarize(generations: Sequence[Generation], wall_s: float, slo: Slo | None = None) -> dict[str, Any]:
    """Throughput, the latency percentile table and goodput of a load run."""

    class _Row:  # latency_summary reads .timings and .output_tokens
        def __init__(self, g: Generation) -> None:
            self.timings, self.output_tokens = g.timings, g.output_tokens

    ok = [g for g in generations if g.error is None]
    summary = {
        "requests": len(generations),
        "completed": len(ok),
        "errors": len(generations) - len(ok),
        "wall_s": wall_s,
        **throughput(generations, wall_s),
        **latency_summary([_Row(g) for g in ok]),
    }
    if slo is not None:
        good = sum(slo.met(g) for g in generations)
        summary["slo"] = {k: getattr(slo, k) for k in SLO_KEYS}
        summary["goodput_requests_per_s"] = good / wall_s if wall_s > 0 else None
        summary["slo_attainment"] = good / len(generations) if generations else None
    return summary


def format_table(summary: Mapping[str, Any]) -> str:
    """The percentile table printed by ``evalsuite bench``."""
    def f(v: Any, d: int = 1) -> str:
        return "-" if v is None else f"{v:.{d}f}"

    lines = [
        f"requests {summary['requests']} (errors {summary['errors']}), wall {f(summary['wall_s'], 2)} s, "
        f"{f(summary['request_throughput_per_s'], 2)} req/s, {f(summary['output_tokens_per_s'])} output tok/s, "
        f"{f(summary['total_tokens_per_s'])} total tok/s",
        f"{'metric (ms)':<12} {'mean':>9} {'p50':>9} {'p90':>9} {'p95':>9} {'p99':>9}",
    ]
    for name in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
        lines.append(f"{name.split('_')[0].upper():<12} " + " ".join(
            f"{f(summary.get(f'{name}_{q}')):>9}" for q in ("mean", "p50", "p90", "p95", "p99")))
    if "goodput_requests_per_s" in summary:
        lines.append(f"goodput {f(summary['goodput_requests_per_s'], 2)} req/s "
                     f"({f(100 * (summary['slo_attainment'] or 0))}% of requests met {summary['slo']})")
    return "\n".join(lines)


def build_requests(prompts: Sequence[Any], max_tokens: int, temperature: float = 0.0) -> list[GenerationRequest]:
    params = SamplingParams(max_tokens=max_tokens, temperature=temperature)
    return [GenerationRequest("bench", str(i), p, params) for i, p in enumerate(prompts)]


def parse_slo(items: Sequence[str]) -> Slo | None:
    """``["ttft_ms=500", "tpot_ms=50"]`` -> Slo; UsageError for an unknown key."""
    if not items:
        return None
    values: dict[str, float] = {}
    for item in items:
        key, _, raw = item.partition("=")
        if key not in SLO_KEYS:
            raise UsageError(f"--slo takes {', '.join(SLO_KEYS)}; got {key!r}")
        try:
            values[key] = float(raw)
        except ValueError:
            raise UsageError(f"--slo {key} needs a number of milliseconds, got {raw!r}") from None
    return Slo(**values)
