"""Does the streaming pipeline keep the engine busy? (issue 16's acceptance)

On one in-process vLLM engine (embedded model, started once; its start-up is not
timed), for (a) the smoke suite (``suites/smoke.yaml``) and (c) a HumanEval run with
10 samples a problem (sandboxed scoring, the heavy case), prints:

- the wall time of the evalsuite run (the suite through ``run_suite``: task loading,
  generation, extraction, scoring, writing, aggregation) against one raw
  ``LLM.generate`` call over exactly the same requests (same rendered prompts, same
  sampling parameters, constrained decoding where the task asks for it) on the same
  engine; target: ratio <= 1.05;
- (b) the engine's idle share while requests remained: the engine's own
  ``vllm:num_requests_running`` gauge, sampled every ``--sample-ms``, between the
  first and the last sample with a request running; the share of samples at 0;
  target <= 2%.

Prefix caching is off so the two passes cost the same; the raw pass runs first, the
harness second (the harness pays for any warm-up left). Engine: float32 +
enforce_eager (the CPU defaults of this project), ``max_model_len`` 8192.

    python benchmarks/bench_pipeline.py [--humaneval-problems 20] [--num-samples 10]
        [--gsm8k-limit 100] [--skip-humaneval] [--skip-smoke]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parent.parent


class IdleSampler:
    """Samples ``probe()`` (requests running in the engine) every ``period_s`` seconds
    in a thread; :meth:`idle_share` is the share of samples at 0 between the first and
    the last sample above 0 (None with fewer than two such samples)."""

    def __init__(self, probe, period_s: float) -> None:
        self.probe, self.period_s = probe, period_s
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            value = self.probe()
            self.samples.append(float(value) if value is not None else float("nan"))
            self._stop.wait(self.period_s)

    def __enter__(self) -> IdleSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def idle_share(self) -> tuple[float | None, int]:
        busy = [i for i, v in enumerate(self.samples) if v > 0]
        if len(busy) < 2:
            return None, len(busy)
        window = self.samples[busy[0] : busy[-1] + 1]
        return sum(v == 0 for v in window) / len(window), len(window)


def raw_inputs(backend, configs):
    """The rendered prompts and vLLM sampling parameters of every request the runs ask for."""
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import RequestOutputKind

    from evalsuite.backends import render_prompt
    from evalsuite.models import resolve_model
    from evalsuite.pipeline.runner import build_requests, load_tasks

    prompts, params = [], []
    for config in configs:
        for task in load_tasks(config, resolve_model(config.model, config.backend)):
            for request in build_requests(task, config):
                prompts.append(TokensPrompt(prompt_token_ids=render_prompt(backend.tokenizer, request.prompt)[1]))
                p = backend._sampling_params(request)
                p.output_kind = RequestOutputKind.FINAL_ONLY
                params.append(p)
    return prompts, params


def measure(name: str, backend, configs, harness, sample_s: float) -> None:
    """Times the raw ``LLM.generate`` pass, then ``harness()``, both under an idle sampler."""
    prompts, params = raw_inputs(backend, configs)
    with IdleSampler(backend.num_requests_running, sample_s) as raw_idle:
        start = time.perf_counter()
        backend.llm.generate(prompts, params, use_tqdm=False)
        raw_s = time.perf_counter() - start
    with IdleSampler(backend.num_requests_running, sample_s) as run_idle:
        start = time.perf_counter()
        harness()
        run_s = time.perf_counter() - start
    share, n = run_idle.idle_share()
    raw_share, raw_n = raw_idle.idle_share()
    print(f"\n{name}: {len(prompts)} requests, engine start excluded")
    print(f"  raw LLM.generate (one call)  : {raw_s:8.2f} s   engine idle {_pct(raw_share)} of {raw_n} samples")
    print(f"  evalsuite (scoring included) : {run_s:8.2f} s   engine idle {_pct(share)} of {n} samples")
    print(f"  (a) ratio evalsuite / raw    : {run_s / raw_s:8.3f}  (target <= 1.05)")
    print(f"  (b) engine idle share        : {_pct(share)}  (target <= 2%)", flush=True)


def _pct(share: float | None) -> str:
    return "  n/a" if share is None else f"{100 * share:5.2f}%"


def smoke(backend, out: Path, args) -> None:
    import yaml

    from evalsuite.pipeline.suite import read_suite, run_suite

    path = REPO / "suites" / "smoke.yaml"
    if args.gsm8k_limit is not None:  # the same suite with a smaller GSM8K share
        text = yaml.safe_load(path.read_text())
        for entry in text["tasks"]:
            if entry["name"] == "gsm8k":
                entry["limit"] = args.gsm8k_limit
        out.mkdir(parents=True, exist_ok=True)
        path = out / "smoke.yaml"
        path.write_text(yaml.safe_dump(text))
    configs = read_suite(path, {"data_dir": args.data_dir}).configs
    ns = SimpleNamespace(data_dir=args.data_dir, output_dir=out, run_id="smoke", no_cache=True, no_progress=True)
    measure("smoke suite", backend, configs, lambda: run_suite(path, ns, backend=backend), args.sample_ms / 1000)


def humaneval(backend, out: Path, args) -> None:
    from evalsuite.config import RunConfig
    from evalsuite.pipeline.runner import run

    config = RunConfig(tasks=("humaneval",), limit=args.humaneval_problems, num_samples=args.num_samples,
                       max_tokens=256, cache=False, output_dir=out, run_id="humaneval",
                       data_dir=args.data_dir)
    measure(f"humaneval, {args.num_samples} samples a problem", backend, [config],
            lambda: run(config, progress=False, backend=backend), args.sample_ms / 1000)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gsm8k-limit", type=int, default=None, help="override the smoke suite's GSM8K limit")
    parser.add_argument("--humaneval-problems", type=int, default=20)
    parser.add_argument("--num-samples", type=int, default=10)
    parser.add_argument("--sample-ms", type=float, default=50.0)
    parser.add_argument("--skip-smoke", action="store_true")
    parser.add_argument("--skip-humaneval", action="store_true")
    parser.add_argument("--data-dir", default=os.environ.get("EVALSUITE_DATA_DIR", str(REPO.parent / "shared" / "data")))
    args = parser.parse_args()
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")

    from evalsuite.backends.vllm import VLLMBackend
    from evalsuite.models import embedded_model_dir

    backend = VLLMBackend(str(embedded_model_dir()), max_model_len=8192, dtype="float32", seed=0,
                          enforce_eager=True, engine_args={"enable_prefix_caching": False})
    backend.llm.generate(["Hello"], use_tqdm=False)  # warm-up
    out = Path(tempfile.mkdtemp(prefix="evalsuite-bench-pipeline-"))
    try:
        if not args.skip_smoke:
            smoke(backend, out / "smoke", args)
        if not args.skip_humaneval:
            humaneval(backend, out / "humaneval", args)
    finally:
        backend.close()
    print(f"\nresults: {out}")


if __name__ == "__main__":
    main()
