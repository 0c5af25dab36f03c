"""``evalsuite bench``: load a served endpoint and print the latency percentile table."""

from __future__ import annotations

import json
import math
from pathlib import Path


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("bench", help="latency/throughput of a served endpoint under load (TTFT, TPOT, ITL, E2E)")
    p.add_argument("--base-url", action="append", default=[], help="endpoint URL; repeat for replicas")
    p.add_argument("--model", default=None, help="served model name (default: the one the server lists)")
    src = p.add_argument_group("prompts (a task's prompts, or random ones)")
    src.add_argument("--tasks", default=None, help="take prompts from these tasks (comma-separated)")
    src.add_argument("--data-dir", default=None)
    src.add_argument("--prompts-file", type=Path, default=None, help="JSONL with a 'prompt' field per line")
    src.add_argument("--num-prompts", type=int, default=100)
    src.add_argument("--random-input-len", type=int, default=None, help="random prompts of this many tokens")
    src.add_argument("--tokenizer", default=None, help="tokenizer for random prompts (default: the embedded model's)")
    load = p.add_argument_group("load")
    load.add_argument("--request-rate", type=float, default=math.inf, help="Poisson arrivals per second (default: all at once)")
    load.add_argument("--max-concurrency", type=int, default=None, help="requests in flight at once (default 16)")
    load.add_argument("--max-tokens", type=int, default=128)
    load.add_argument("--temperature", type=float, default=0.0)
    load.add_argument("--ignore-eos", action="store_true", help="generate exactly --max-tokens (vLLM servers)")
    load.add_argument("--seed", type=int, default=0)
    load.add_argument("--request-timeout", type=float, default=None)
    p.add_argument("--slo", action="append", default=[], metavar="KEY=MS",
                   help="goodput target, e.g. --slo ttft_ms=500 --slo tpot_ms=50 (keys: ttft_ms, tpot_ms, e2e_ms)")
    p.add_argument("--output", type=Path, default=None, help="write the summary as JSON here")
    p.set_defaults(handler=handle)


def _prompts(args) -> list:
    from evalsuite.data import read_jsonl
    from evalsuite.errors import UsageError

    if args.num_prompts < 1:
        raise UsageError(f"--num-prompts must be a positive integer, got {args.num_prompts}")
    if args.prompts_file is not None:
        if not args.prompts_file.is_file():
            raise UsageError(f"prompts file not found: {args.prompts_file}")
        rows = list(read_jsonl(args.prompts_file))
        bad = next((i for i, row in enumerate(rows, 1) if not isinstance(row, dict) or "prompt" not in row), None)
        if bad is not None:
            raise UsageError(f"{args.prompts_file}:{bad}: no 'prompt' field")
        return [row["prompt"] for row in rows][: args.num_prompts]
    if args.random_input_len is not None:
        from transformers import AutoTokenizer

        from evalsuite.metrics.load import random_prompts
        from evalsuite.models import embedded_model_dir

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or str(embedded_model_dir()))
        return random_prompts(tokenizer, args.num_prompts, args.random_input_len, args.seed)
    if args.tasks:
        from evalsuite.task import build_task

        prompts = []
        for name in (t.strip() for t in args.tasks.split(",") if t.strip()):
            task = build_task(name, data_dir=args.data_dir, seed=args.seed)
            prompts.extend(s.input for s in task.samples[: args.num_prompts])
        return prompts[: args.num_prompts]
    raise UsageError("choose prompts: --tasks NAME, --prompts-file FILE or --random-input-len N")


def handle(args) -> int:
    from evalsuite.backends.openai import OpenAIBackend
    from evalsuite.errors import UsageError
    from evalsuite.metrics.load import build_requests, format_table, parse_slo, run_load, summarize

    if not args.request_rate > 0:  # also rejects nan
        raise UsageError(f"--request-rate must be > 0, got {args.request_rate}")
    if args.max_tokens < 1:
        raise UsageError(f"--max-tokens must be a positive integer, got {args.max_tokens}")
    if args.random_input_len is not None and args.random_input_len < 1:
        raise UsageError(f"--random-input-len must be a positive integer, got {args.random_input_len}")
    slo = parse_slo(args.slo)
    if args.output is not None:  # checked before the load runs, not after
        from evalsuite.paths import check_output_file

        check_output_file(args.output, "--output")
    prompts = _prompts(args)
    backend = OpenAIBackend(args.model, base_urls=tuple(args.base_url) or None, max_concurrency=args.max_concurrency,
                            request_timeout=args.request_timeout, max_retries=0,
                            extra_body={"ignore_eos": True} if args.ignore_eos else None)
    requests = build_requests(prompts, args.max_tokens, args.temperature)
    generations, wall_s = run_load(backend, requests, args.request_rate, args.seed)
    summary = summarize(generations, wall_s, slo)
    summary["load"] = {"request_rate": None if math.isinf(args.request_rate) else args.request_rate,
                       "max_concurrency": backend.max_concurrency, "num_prompts": len(prompts),
                       "max_tokens": args.max_tokens, "ignore_eos": args.ignore_eos, "model": backend.model}
    print(format_table(summary))
    if args.output is not None:
        from evalsuite.paths import make_dir

        make_dir(args.output.parent, "--output")
        args.output.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"summary: {args.output}")
    return 0
