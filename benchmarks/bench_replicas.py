"""Pulled work against dealt work, with one replica artificially slowed.

Two replicas answer the same requests: a fast one and one ``--slowdown`` times
slower. Four runs are timed (wall clock, seconds):

- ``alone``: the fast replica answers everything by itself (the reference);
- ``pulled``: both replicas behind :class:`evalsuite.backends.pool.ReplicaPool`
  (free replicas take the next chunk; the queue's last chunks backed up);
- ``pulled, no backups``: the same without backup copies of a straggler's chunk;
- ``dealt``: request ``i`` to replica ``i mod 2`` in advance, as
  ``--data-parallel-size`` did before (the slow replica sets the pace).

Target: ``pulled / alone <= 1.3``. By default the replicas are scripted, with a
sleep of ``--ms-per-request`` per request plus ``--ms-per-chunk`` per chunk (an
engine's batch overhead), so the figures are cheap and deterministic. With
``--engine``, the replicas are real vLLM engines with the embedded model in
worker processes (one core each, :mod:`evalsuite.backends.vllm_dp`), the slow one
slowed by a sleep before each chunk; start it under the machine lock:

    flock /tmp/evalsuite-engine.lock python benchmarks/bench_replicas.py --engine --requests 48
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Sequence

from evalsuite.backends.pool import ReplicaPool
from evalsuite.types import Generation, GenerationRequest, SamplingParams

TARGET = 1.3


class SleepReplica:
    """A scripted replica: ``ms_per_chunk + ms_per_request * len(chunk)`` milliseconds
    a chunk, times ``slowdown``."""

    def __init__(self, name: str, ms_per_request: float, ms_per_chunk: float, slowdown: float = 1.0) -> None:
        self.name = name
        self.seconds = (ms_per_request * slowdown / 1000, ms_per_chunk * slowdown / 1000)

    def run(self, requests: Sequence[GenerationRequest], timeout_s: float) -> list[Generation]:
        per_request, per_chunk = self.seconds
        time.sleep(per_chunk + per_request * len(requests))
        return [Generation(r.sample_id, "stop") for r in requests]

    def stop(self) -> None:
        pass


def dealt(replicas: Sequence, requests: Sequence[GenerationRequest]) -> list[Generation]:
    """Request ``i`` to replica ``i mod N``, each share as one batch, all at once."""
    n = len(replicas)
    out: list[Generation | None] = [None] * len(requests)

    def share(r: int) -> None:
        out[r::n] = replicas[r].run(list(requests[r::n]), timeout_s=3600)

    threads = [threading.Thread(target=share, args=(r,)) for r in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out  # type: ignore[return-value]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def scripted(args: argparse.Namespace, requests: list[GenerationRequest]) -> dict[str, float]:
    def fast():
        return SleepReplica("fast", args.ms_per_request, args.ms_per_chunk)

    def slow():
        return SleepReplica("slow", args.ms_per_request, args.ms_per_chunk, args.slowdown)

    figures = {}
    for label, replicas, backups in (("alone", [fast()], True), ("pulled", [fast(), slow()], True),
                                     ("pulled, no backups", [fast(), slow()], False)):
        pool = ReplicaPool(replicas, chunk_size=args.chunk_size, backups=backups)
        figures[label] = timed(lambda p=pool: p.generate(requests))
        pool.shutdown(wait_s=60)
    figures["dealt"] = timed(lambda: dealt([fast(), slow()], requests))
    return figures


def engine(args: argparse.Namespace, requests: list[GenerationRequest]) -> dict[str, float]:
    """Real engines: the fast replica alone (one core), then fast + slowed together."""
    from evalsuite.backends.vllm_dp import ProcessReplica
    from evalsuite.models import embedded_model_dir

    kwargs = {"max_model_len": 4096, "dtype": "float32", "enforce_eager": True, "tensor_parallel_size": 1}
    model = str(embedded_model_dir())
    replicas = [ProcessReplica(0, SlowedVLLM, model, {**kwargs, "delay_s": 0.0}, {"VLLM_CPU_OMP_THREADS_BIND": "0"}),
                ProcessReplica(1, SlowedVLLM, model, {**kwargs, "delay_s": args.engine_delay_s},
                               {"VLLM_CPU_OMP_THREADS_BIND": "1"})]
    try:
        for r in replicas:
            kind, value = r.ready()
            if kind != "ready":
                sys.exit(f"replica {r.name} did not start: {value}")
        figures = {}
        for label, members, backups in (("alone", replicas[:1], True), ("pulled", replicas, True),
                                        ("pulled, no backups", replicas, False)):
            pool = ReplicaPool(members, chunk_size=args.chunk_size, backups=backups)
            figures[label] = timed(lambda p=pool: p.generate(requests))
            pool.shutdown(wait_s=600)  # a backed-up straggler finishes its copy before the next run
        figures["dealt"] = timed(lambda: dealt(replicas, requests))
        return figures
    finally:
        for r in replicas:
            r.close()


class SlowedVLLM:
    """The vLLM backend with a sleep of ``delay_s`` seconds before each chunk."""

    def __init__(self, model: str, delay_s: float = 0.0, **kwargs) -> None:
        from evalsuite.backends.vllm import VLLMBackend

        self.inner = VLLMBackend(model, **kwargs)
        self.delay_s = delay_s

    def generate(self, requests):
        time.sleep(self.delay_s)
        return self.inner.generate(requests)

    def describe(self):
        return self.inner.describe()

    def close(self) -> None:
        self.inner.close()


def gsm8k_requests(n: int, max_tokens: int) -> list[GenerationRequest]:
    from tasks.gsm8k import gsm8k

    samples = gsm8k().samples[:n]
    return [GenerationRequest("gsm8k", s.id, s.input, SamplingParams(max_tokens=max_tokens)) for s in samples]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--slowdown", type=float, default=4.0, help="scripted: the slow replica's factor (default 4)")
    parser.add_argument("--ms-per-request", type=float, default=10.0)
    parser.add_argument("--ms-per-chunk", type=float, default=20.0)
    parser.add_argument("--chunk-size", type=int, default=None, help="requests per chunk (default: the pool's)")
    parser.add_argument("--engine", action="store_true", help="real vLLM engines instead of scripted replicas")
    parser.add_argument("--engine-delay-s", type=float, default=5.0, help="engine: sleep before each slow chunk")
    parser.add_argument("--max-tokens", type=int, default=64, help="engine: output tokens per request")
    args = parser.parse_args()
    if args.engine:
        figures = engine(args, gsm8k_requests(args.requests, args.max_tokens))
        print(f"real engines: {args.requests} GSM8K requests, max_tokens {args.max_tokens}, one replica slowed by "
              f"{args.engine_delay_s} s a chunk")
    else:
        requests = [GenerationRequest("bench", f"r{i}", "p", SamplingParams()) for i in range(args.requests)]
        figures = scripted(args, requests)
        print(f"scripted replicas: {args.requests} requests, {args.ms_per_request} ms/request + "
              f"{args.ms_per_chunk} ms/chunk, one replica {args.slowdown}x slower")
    alone = figures["alone"]
    for label, wall in figures.items():
        print(f"  {label:<20} wall {wall:8.2f} s   {wall / alone:5.2f}x alone")
    ratio = figures["pulled"] / alone
    verdict = "PASS" if ratio <= TARGET else "FAIL"
    print(f"pulled / alone = {ratio:.2f} (target <= {TARGET}): {verdict}")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
