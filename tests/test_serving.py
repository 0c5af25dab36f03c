"""Real ``vllm serve`` (the CPU build) on loopback with the embedded model.

Two server processes start once for this module, side by side (about 60-90 s on
two cores). GSM8K runs through the openai backend against one of them and its
greedy outputs are compared with the shared in-process engine's on the same
prompts; then both serve one run as replicas. Run under the engine lock.

The servers run in the in-process engine's dtype. An earlier version served
bfloat16 against a float32 in-process engine: on a CPU without native bfloat16
(vLLM's fallback to torch linear) one fewshot prompt's served output was empty
(it stopped at its first token) where the float32 engine began with a space
(token 216), a near-tie that the two dtypes decide differently. Comparing
engines token for token is meaningful only in the same dtype.

Greedy outputs are not bit-identical across vLLM engines on this CPU build even
so: vLLM does not promise batch invariance (the logits of a step depend on the
batch shape and on which prompt blocks came from the prefix cache), and a later
near-tie can go the other way. The test therefore checks what must hold exactly
(no errors, the same prompt, the same first token) and writes the per-sample
differences to ``served-vs-in-process.json``. Two replicas with prefix caching
off, one request at a time each, must match one endpoint exactly.
"""

from __future__ import annotations

import json
import os
import re

import httpx
import pytest

from evalsuite.errors import UsageError
from evalsuite.results.store import read_samples  # samples.jsonl is in completion order

pytestmark = pytest.mark.engine

LIMIT = 6
MAX_TOKENS = 48
# Both prompt formats: "cot" is a chat conversation (/v1/chat/completions), "fewshot"
# a plain completion prompt (/v1/completions).
PROMPTS = ("cot", "fewshot")


@pytest.fixture(scope="module")
def servers(embedded_model, vllm_backend, tmp_path_factory):
    pytest.importorskip("vllm")
    from evalsuite.backends.serving import start_server

    logs = tmp_path_factory.mktemp("vllm-serve")
    dtype = vllm_backend.settings["dtype"]  # the in-process engine's: outputs are compared with it
    launched = [
        start_server(embedded_model, max_model_len=2048,
                     extra_args=("--dtype", dtype, "--seed", "0", "--no-enable-prefix-caching"),
                     log_path=logs / f"replica-{i}.log", wait=False)
        for i in range(2)
    ]
    try:
        for server in launched:
            server.wait(600)
        yield launched
    finally:
        for server in launched:
            server.stop()


def run_gsm8k(backend, name: str, prompt: str, out_dir, data_dir, model: str, batch_size: int = 256):
    from evalsuite.config import RunConfig
    from evalsuite.pipeline.runner import run

    config = RunConfig(tasks=("gsm8k",), backend=name, model=model, limit=LIMIT, max_tokens=MAX_TOKENS,
                       data_dir=str(data_dir), output_dir=out_dir, cache=False, batch_size=batch_size,
                       task_args={"gsm8k": {"prompt": prompt}}, num_fewshot=2 if prompt == "fewshot" else None)
    result = run(config, progress=False, backend=backend)
    return read_samples(result.run_dir, ordered=True)


def success_count(server) -> float:
    """vLLM's own counter of finished requests (Prometheus text at /metrics)."""
    text = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=10).text
    return sum(float(m) for m in re.findall(r'^vllm:request_success_total\{[^}]*\} ([0-9.e+]+)$', text, re.MULTILINE))


@pytest.fixture(scope="module")
def single_endpoint_runs(servers, embedded_model, gsm8k_data_dir, tmp_path_factory):
    from evalsuite.backends.openai import OpenAIBackend

    backend = OpenAIBackend(embedded_model, base_urls=(servers[0].base_url,), max_concurrency=1)
    out = tmp_path_factory.mktemp("single")
    return {p: run_gsm8k(backend, "openai", p, out, gsm8k_data_dir, embedded_model) for p in PROMPTS}


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_outputs_through_vllm_serve_equal_the_in_process_engine(
        prompt, single_endpoint_runs, vllm_backend, embedded_model, gsm8k_data_dir, tmp_path):
    served = single_endpoint_runs[prompt]
    local = run_gsm8k(vllm_backend, "vllm", prompt, tmp_path, gsm8k_data_dir, embedded_model, batch_size=1)
    assert [s["error"] for s in served] == [None] * LIMIT
    # The server rendered the same prompt: same chat template, same token count.
    assert [s["prompt_tokens"] for s in served] == [s["prompt_tokens"] for s in local]
    tokenizer = vllm_backend.tokenizer
    first = [(tokenizer.encode(a["output"], add_special_tokens=False)[:1],
              tokenizer.encode(b["output"], add_special_tokens=False)[:1]) for a, b in zip(served, local)]
    assert all(x == y for x, y in first), first  # same prompt and template: the first greedy token agrees
    differences = [
        {"sample_id": a["sample_id"], "served": a["output"], "in_process": b["output"],
         "shared_prefix_chars": len(os.path.commonprefix([a["output"], b["output"]]))}
        for a, b in zip(served, local) if a["output"] != b["output"]
    ]
    report = tmp_path / "served-vs-in-process.json"
    report.write_text(json.dumps({"prompt": prompt, "equal": LIMIT - len(differences),
                                  "differences": differences}, indent=1))
    print(f"{prompt}: {LIMIT - len(differences)}/{LIMIT} outputs equal; differences in {report}")
    assert all(s["timings"]["ttft_s"] is not None and s["timings"]["ttft_s"] <= s["timings"]["e2e_s"] for s in served)


def test_two_replicas_both_serve_and_results_equal_a_single_endpoint_run(
        servers, single_endpoint_runs, embedded_model, gsm8k_data_dir, tmp_path):
    from evalsuite.backends.openai import OpenAIBackend

    before = [success_count(s) for s in servers]
    # Two in flight over two least-loaded replicas: one request at a time on each, as
    # in the single-endpoint run, so batch effects (see the module docstring) stay out.
    backend = OpenAIBackend(embedded_model, base_urls=tuple(s.base_url for s in servers), max_concurrency=2)
    both = run_gsm8k(backend, "openai", "cot", tmp_path, gsm8k_data_dir, embedded_model)
    gained = [success_count(s) - b for s, b in zip(servers, before)]
    assert all(g > 0 for g in gained) and sum(gained) == LIMIT, gained
    assert [(s["sample_id"], s["output"]) for s in both] == [
        (s["sample_id"], s["output"]) for s in single_endpoint_runs["cot"]]


def test_the_served_model_name_comes_from_v1_models(servers, embedded_model):
    from evalsuite.backends.openai import OpenAIBackend

    assert OpenAIBackend(None, base_urls=(servers[0].base_url,)).model == embedded_model
    with pytest.raises(UsageError, match="does not serve"):
        OpenAIBackend("/elsewhere/Qwen2.5-7B-Instruct", base_urls=(servers[0].base_url,))


def test_json_schema_is_enforced_by_the_server(servers, embedded_model):
    from evalsuite.backends.openai import OpenAIBackend
    from evalsuite.types import GenerationRequest, Message, SamplingParams

    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"],
              "additionalProperties": False}
    backend = OpenAIBackend(embedded_model, base_urls=(servers[0].base_url,))
    [g] = backend.generate([GenerationRequest(
        "t", "s", (Message("user", "What is 2 + 3? Reply in JSON."),), SamplingParams(max_tokens=32),
        json_schema=schema)])
    assert g.error is None
    value = json.loads(g.text)
    assert set(value) == {"answer"} and isinstance(value["answer"], int)
