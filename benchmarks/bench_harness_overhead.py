"""How much time evalsuite adds around the engine.

Sends the same 100 GSM8K prompts (zero-shot CoT, chat template applied, greedy)
through ``vllm.LLM.generate`` directly and through evalsuite's runner on the same
engine instance (so the engine settings are identical and start-up is excluded),
alternating A/B/A/B, and prints both wall times and their ratio. evalsuite's time
covers everything ``evalsuite run`` does after the engine is up: loading the task,
hashing the model and data for provenance, building requests, generating, scoring,
writing samples.jsonl and run.json. Prefix caching is off so that repeated passes
cost the same. Target: the harness adds at most 5%.

    python benchmarks/bench_harness_overhead.py [--limit 100] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data-dir", default=os.environ.get("EVALSUITE_DATA_DIR", "../shared/data"))
    args = parser.parse_args()
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")

    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from evalsuite.backends import render_prompt
    from evalsuite.backends.vllm import VLLMBackend
    from evalsuite.config import RunConfig
    from evalsuite.models import embedded_model_dir
    from evalsuite.pipeline.runner import run
    from tasks.gsm8k import gsm8k

    backend = VLLMBackend(str(embedded_model_dir()), max_model_len=2048, enforce_eager=True,
                          engine_args={"enable_prefix_caching": False})
    task = gsm8k(data_dir=args.data_dir)
    prompts = [TokensPrompt(prompt_token_ids=render_prompt(backend.tokenizer, s.input)[1])
               for s in task.samples[: args.limit]]
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0.0)
    backend.llm.generate(prompts[:4], params, use_tqdm=False)  # warm-up

    out = Path(tempfile.mkdtemp(prefix="evalsuite-bench-"))
    direct, harness = [], []
    for i in range(args.rounds):
        start = time.perf_counter()
        backend.llm.generate(prompts, params, use_tqdm=False)
        direct.append(time.perf_counter() - start)

        config = RunConfig(tasks=("gsm8k",), limit=args.limit, max_tokens=args.max_tokens,
                           data_dir=args.data_dir, output_dir=out, run_id=f"round-{i}", cache=False)
        start = time.perf_counter()
        run(config, progress=False, backend=backend)
        harness.append(time.perf_counter() - start)
        print(f"round {i}: vllm.LLM.generate {direct[-1]:.2f} s, evalsuite run {harness[-1]:.2f} s")
    backend.close()

    d, h = statistics.median(direct), statistics.median(harness)
    print(f"\n{args.limit} GSM8K prompts, max_tokens {args.max_tokens}, greedy, engine start excluded")
    print(f"  vllm.LLM.generate directly : {d:8.2f} s (median of {args.rounds})")
    print(f"  evalsuite run (same engine): {h:8.2f} s (median of {args.rounds})")
    print(f"  ratio evalsuite / direct   : {h / d:8.3f}  (target <= 1.05)")


if __name__ == "__main__":
    main()
