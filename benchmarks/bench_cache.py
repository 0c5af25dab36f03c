"""Wall time of a cold GSM8K run against the same run answered from the response cache.

Both runs are the real CLI (``python -m evalsuite.cli run``) in a subprocess, timed
from process start to exit, so the cached figure includes interpreter start-up,
task loading and the model fingerprint. The cache starts empty (a fresh
``$EVALSUITE_RESPONSE_CACHE`` file in the output folder). Target: cached <= 10% of cold.

Start engines under the machine lock on shared hosts:

    flock /tmp/evalsuite-engine.lock python benchmarks/bench_cache.py --limit 100
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def timed_run(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "evalsuite.cli", "run", *args, "--no-progress"], env=env,
                          capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"evalsuite run failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return elapsed


def outputs(run_dir: Path) -> list[str]:
    return [json.loads(line)["output"] for line in (run_dir / "samples.jsonl").read_text().splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=100, help="GSM8K samples (default 100)")
    parser.add_argument("--max-tokens", type=int, default=None, help="default: the task's (512)")
    parser.add_argument("--model", default=None, help="model directory (default: the embedded SmolLM2)")
    parser.add_argument("--data-dir", default=os.environ.get("EVALSUITE_DATA_DIR"))
    parser.add_argument("--output-dir", type=Path, default=Path("results") / f"bench-cache-{time.strftime('%Y%m%d-%H%M%S')}")
    args = parser.parse_args()

    from evalsuite.models import embedded_model_dir

    model = args.model or str(embedded_model_dir())
    env = {**os.environ, "EVALSUITE_RESPONSE_CACHE": str(args.output_dir / "responses.sqlite")}
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    common = ["--tasks", "gsm8k", "--model", model, "--limit", str(args.limit), "--output-dir", str(args.output_dir)]
    common += ["--max-tokens", str(args.max_tokens)] if args.max_tokens else []
    common += ["--data-dir", args.data_dir] if args.data_dir else []

    cold = timed_run([*common, "--run-id", "cold"], env)
    cached = timed_run([*common, "--run-id", "cached"], env)
    cold_dir, cached_dir = args.output_dir / "cold", args.output_dir / "cached"
    cache = json.loads((cached_dir / "run.json").read_text())["cache"]
    same = outputs(cold_dir) == outputs(cached_dir)

    print(f"gsm8k, {args.limit} samples, model {model}")
    print(f"cold run:   {cold:8.2f} s")
    print(f"cached run: {cached:8.2f} s  (cache hits {cache['hits']}, misses {cache['misses']})")
    print(f"ratio:      {cached / cold:8.2%}  (target <= 10%)")
    print(f"outputs identical: {same}")


if __name__ == "__main__":
    main()
