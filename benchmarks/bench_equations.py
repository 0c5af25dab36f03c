"""How many equation answers per second the verifier checks on this machine.

Builds 1,000 mixed answers to generated problems (right answers in plain, LaTeX
and set notation, wrong ones, prose without an answer, and hostile ones over
the caps), verifies them in a pool of worker processes, and prints answers/s
and per-answer latency percentiles. Pool start-up is excluded (timed apart).

    python benchmarks/bench_equations.py [--answers 1000] [--workers N] [--time-limit-s 5]
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections import Counter

import sympy

from evalsuite.metrics.aggregate import percentile
from evalsuite.scoring.equations import Limits, VerifierPool, parse_value, verify
from tasks.equations import FAMILIES, generate, spec_of, to_sample

HOSTILE = ["2**30**5", r"10^{5^{5^{5^{5}}}}", r"24! \times 24!", "(" * 10_000 + "2" + ")" * 10_000,
           "Final answer: x = " + "1" * 1_000_000]


def _answer(problem, rng: random.Random) -> tuple[str, str]:
    """(kind, model-like output) for one problem."""
    values = [tuple(parse_value(v) for v in s) for s in problem.solutions]
    names = problem.variables
    kind = rng.choices(["plain", "latex", "set", "wrong", "prose", "hostile"], [25, 25, 20, 20, 9, 1])[0]
    steps = "We move every term to one side and factor.\nChecking each candidate in the original equation.\n"
    if kind == "hostile":
        return kind, rng.choice(HOSTILE)
    if kind == "prose" or not values:
        return "prose", steps + "I could not finish this one."
    if kind == "wrong":
        values = [tuple(-v + 1 for v in s) for s in values]
    if len(names) > 1:
        body = ", ".join(f"{n} = {sympy.sstr(v)}" for n, v in zip(names, values[0]))
        if kind == "latex":
            body = r"\boxed{(" + ", ".join(names) + ") = (" + ", ".join(sympy.latex(v) for v in values[0]) + ")}"
    elif kind == "latex":
        body = "$" + r", \quad ".join(f"x_{k + 1} = {sympy.latex(v)}" for k, (v,) in enumerate(values)) + "$"
    elif kind == "set":
        body = "x \\in \\{" + ", ".join(sympy.latex(v) for (v,) in values) + "\\}"
    else:
        body = " or ".join(f"x = {sympy.sstr(v)}" for (v,) in values)
    return kind, f"{steps}Final answer: {body}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--time-limit-s", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    per_family = -(-args.answers // len(FAMILIES))
    problems = [p for d in (1, 2, 3) for p in generate(-(-per_family // 3), d, seed=args.seed)]
    rng.shuffle(problems)
    problems = problems[: args.answers]
    specs = [spec_of(to_sample(p)) for p in problems]
    kinds, outputs = zip(*(_answer(p, rng) for p in problems))
    limits = Limits(time_limit_s=args.time_limit_s)

    start = time.perf_counter()
    pool = VerifierPool(workers=args.workers, time_limit_s=args.time_limit_s)
    pool.map(abs, [(-1,)] * args.workers)  # start every worker
    startup_s = time.perf_counter() - start
    try:
        start = time.perf_counter()
        outcomes = pool.map(verify, [(o, s, limits) for o, s in zip(outputs, specs)])
        wall_s = time.perf_counter() - start
    finally:
        pool.close()

    serial = min(200, len(outputs))
    start = time.perf_counter()
    for o, s in zip(outputs[:serial], specs[:serial]):
        verify(o, s, limits)
    serial_rate = serial / (time.perf_counter() - start)

    verdicts = Counter(o.value.status if o.status == "ok" else o.status for o in outcomes)
    latencies = sorted(o.seconds * 1000 for o in outcomes)
    print(f"answers: {len(outputs)} ({', '.join(f'{k} {v}' for k, v in sorted(Counter(kinds).items()))})")
    print(f"workers: {args.workers} on {os.cpu_count()} CPUs, time limit {args.time_limit_s:g} s")
    print(f"pool start-up: {startup_s:.2f} s")
    print(f"verified: {len(outcomes)} in {wall_s:.2f} s = {len(outcomes) / wall_s:.1f} answers/s")
    print(f"in-process, one core ({serial} answers): {serial_rate:.1f} answers/s")
    print(f"latency per answer (ms): p50 {percentile(latencies, 50):.1f}  p90 {percentile(latencies, 90):.1f}  "
          f"p99 {percentile(latencies, 99):.1f}  max {latencies[-1]:.1f}")
    print("verdicts: " + ", ".join(f"{k} {v}" for k, v in sorted(verdicts.items())))


if __name__ == "__main__":
    main()
