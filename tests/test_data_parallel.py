"""Data-parallel replicas in-process: two real vLLM engines, one core each."""

import pytest

from evalsuite.backends.vllm_dp import replica_env
from evalsuite.types import GenerationRequest, SamplingParams


def test_replica_env_pins_device_subsets():
    assert replica_env(0, 2, on_cpu=False) == {"CUDA_VISIBLE_DEVICES": "0,1"}
    assert replica_env(1, 2, on_cpu=False) == {"CUDA_VISIBLE_DEVICES": "2,3"}
    assert replica_env(1, 1, on_cpu=True) == {"VLLM_CPU_OMP_THREADS_BIND": "1"}


@pytest.mark.engine
def test_two_replicas_give_the_single_engine_outputs(vllm_backend, embedded_model, gsm8k_data_dir):
    from evalsuite.backends.vllm import vllm_backend as build
    from tasks.gsm8k import gsm8k

    samples = gsm8k(data_dir=str(gsm8k_data_dir)).samples[:6]
    requests = [GenerationRequest("gsm8k", s.id, s.input, SamplingParams(max_tokens=24)) for s in samples]
    single = vllm_backend.generate(requests)
    dp = build(embedded_model, data_parallel_size=2, max_model_len=8192, dtype="float32", enforce_eager=True)
    try:
        parallel = dp.generate(requests)
        description = dp.describe()
    finally:
        dp.close()
    assert [g.text for g in parallel] == [g.text for g in single]
    assert [g.prompt_tokens for g in parallel] == [g.prompt_tokens for g in single]
    assert description["engine"]["data_parallel_size"] == 2
    assert description["replicas"] == [{"VLLM_CPU_OMP_THREADS_BIND": "0"}, {"VLLM_CPU_OMP_THREADS_BIND": "1"}]
