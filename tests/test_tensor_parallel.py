"""Tensor parallelism on the CPU: the miniature Qwen2 model split over 2 ranks.

Each engine runs in its own subprocess (this file run as a script), because a
process holds one vLLM engine configuration and TP=2 needs its own thread
binding: ``VLLM_CPU_OMP_THREADS_BIND="0|1"`` puts one rank on each core.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROMPTS = (
    "Question: Natalia sold clips to 48 of her friends. How many clips did she sell?\nAnswer:",
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time",
)
MAX_TOKENS = 16


def _greedy_outputs(model: Path, tensor_parallel_size: int, binding: str) -> list[dict]:
    env = {**os.environ, "VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_OMP_THREADS_BIND": binding,
           "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    done = subprocess.run([sys.executable, __file__, str(model), str(tensor_parallel_size)],
                          check=False, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def miniature(tmp_path_factory) -> Path:
    pytest.importorskip("transformers")
    from miniature import build_miniature

    return build_miniature(tmp_path_factory.mktemp("miniature") / "qwen2-mini", seed=0)


def test_miniature_is_qwen2_gqa_with_qkv_bias_and_even_head_counts(miniature):
    from safetensors import safe_open

    config = json.loads((miniature / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForCausalLM"]
    assert config["num_attention_heads"] % 2 == 0 and config["num_key_value_heads"] % 2 == 0
    assert config["num_key_value_heads"] < config["num_attention_heads"]  # grouped-query attention
    with safe_open(miniature / "model.safetensors", "pt") as f:
        names = set(f.keys())
    for proj in ("q_proj", "k_proj", "v_proj"):
        assert f"model.layers.0.self_attn.{proj}.bias" in names
    assert "model.layers.0.self_attn.o_proj.bias" not in names  # Qwen2 has no output-projection bias


def test_miniature_weights_depend_only_on_the_seed(miniature, tmp_path):
    from miniature import build_miniature

    def digest(d: Path) -> str:
        return hashlib.sha256((d / "model.safetensors").read_bytes()).hexdigest()

    assert digest(build_miniature(tmp_path / "again", seed=0)) == digest(miniature)
    assert digest(build_miniature(tmp_path / "other", seed=1)) != digest(miniature)


@pytest.mark.engine
def test_tensor_parallel_2_gives_the_same_greedy_outputs_as_1(miniature):
    pytest.importorskip("vllm")
    if (os.cpu_count() or 1) < 2:
        pytest.skip("tensor_parallel_size=2 on the CPU needs two cores")
    tp1 = _greedy_outputs(miniature, 1, "0")
    tp2 = _greedy_outputs(miniature, 2, "0|1")
    assert [o["output_tokens"] for o in tp1] == [MAX_TOKENS] * len(PROMPTS)  # no early stop: a full comparison
    assert tp2 == tp1


if __name__ == "__main__":  # one engine in this process; prints its outputs as one JSON line
    from evalsuite.backends.vllm import VLLMBackend
    from evalsuite.types import GenerationRequest, SamplingParams

    model, tp = sys.argv[1], int(sys.argv[2])
    backend = VLLMBackend(model, tensor_parallel_size=tp, max_model_len=512, dtype="float32",
                          seed=0, enforce_eager=True)
    # ignore_eos is not a SamplingParams field here, so a random model may stop early;
    # the test checks it did not.
    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0)
    requests = [GenerationRequest("tp", str(i), p, params) for i, p in enumerate(PROMPTS)]
    generations = backend.generate(requests)
    backend.close()
    print(json.dumps([{"text": g.text, "output_tokens": g.output_tokens, "error": g.error} for g in generations]))
