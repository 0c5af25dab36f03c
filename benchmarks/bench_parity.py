"""Wall time of evalsuite and lm-evaluation-harness on the same GSM8K items, side by side.

Runs ``evalsuite.interop.parity.run_parity`` once (evalsuite's gsm8k in lm-eval's
5-shot format, then lm-eval's own gsm8k, each with its own vLLM engine on the
same model and settings) and prints, per harness, the engine start-up time, the
evaluation time (task loading, prompts, generation, scoring) and their sum, in
seconds, plus items per second, next to the agreement figures.

Usage (engine work: take the machine-wide lock)::

    VLLM_CPU_KVCACHE_SPACE=2 flock /tmp/evalsuite-engine.lock \\
        python benchmarks/bench_parity.py --limit 100 --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--data-dir", default=os.environ.get("EVALSUITE_DATA_DIR", "../shared/data"))
    parser.add_argument("--model", default=None)
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--output-dir", type=Path, default=Path("results"))
    args = parser.parse_args()

    from evalsuite.interop.parity import EngineSettings, format_report, run_parity
    from evalsuite.models import resolve_model

    settings = EngineSettings(model=resolve_model(args.model).path, max_model_len=args.max_model_len)
    out = args.output_dir / time.strftime("bench-parity-%Y%m%d-%H%M%S")
    report = run_parity(settings, Path(args.data_dir), args.limit, out)
    print(format_report(report))
    print()
    print(f"wall time, {report['n']} GSM8K items (5-shot, greedy, max 256 output tokens), seconds:")
    print(f"  {'':<22} {'evalsuite':>10} {'lm-eval':>10}")
    ours, theirs = report["runs"]["evalsuite"], report["runs"]["lm-eval"]
    rows = [
        ("engine start", ours["engine_s"], theirs["engine_s"]),
        ("evaluation", ours["eval_s"], theirs["eval_s"]),
        ("total", ours["engine_s"] + ours["eval_s"], theirs["engine_s"] + theirs["eval_s"]),
        ("items/s (evaluation)", report["n"] / ours["eval_s"], report["n"] / theirs["eval_s"]),
    ]
    for name, a, b in rows:
        print(f"  {name:<22} {a:>10.1f} {b:>10.1f}")
    print(f"\nreport: {out / 'parity.json'}")


if __name__ == "__main__":
    main()
