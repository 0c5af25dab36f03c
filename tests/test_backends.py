"""The vllm and hf backends on the real embedded model."""

import pytest

from evalsuite.types import GenerationRequest, Message, SamplingParams

pytestmark = pytest.mark.engine


def _requests(task, n=5, max_tokens=48):
    return [GenerationRequest("gsm8k", s.id, s.input, SamplingParams(max_tokens=max_tokens)) for s in task.samples[:n]]


@pytest.fixture(scope="module")
def hf_backend(embedded_model):
    from evalsuite.backends.hf import HFBackend

    return HFBackend(embedded_model, dtype="float32", device="cpu")


def test_vllm_and_hf_greedy_outputs_are_identical(vllm_backend, hf_backend, gsm8k_data_dir):
    """Same five GSM8K prompts, greedy, float32 on both sides: the same text.

    In bfloat16 the two differ after a few dozen tokens (seen here on 4 of 5
    prompts): near-tied logits round differently in vLLM's CPU kernels and in
    PyTorch's, and greedy decoding then follows another branch. float32 leaves no
    such ties at this length.
    """
    from tasks.gsm8k import gsm8k

    requests = _requests(gsm8k(data_dir=str(gsm8k_data_dir)))
    from_vllm = vllm_backend.generate(requests)
    from_hf = hf_backend.generate(requests)
    for v, h in zip(from_vllm, from_hf):
        assert v.prompt_text == h.prompt_text
        assert v.prompt_tokens == h.prompt_tokens
        assert v.text == h.text, f"first difference at char {next(i for i, (a, b) in enumerate(zip(v.text, h.text)) if a != b)}"
        assert v.output_tokens == h.output_tokens == 48 and v.finish_reason == h.finish_reason == "length"


def test_stop_sequences_and_system_prompt(vllm_backend, hf_backend):
    prompt = (Message("system", "Answer with one word."), Message("user", "Name a colour."))
    params = SamplingParams(max_tokens=16, stop=("\n",))
    request = GenerationRequest("t", "0", prompt, params)
    for g in (vllm_backend.generate([request])[0], hf_backend.generate([request])[0]):
        assert "\n" not in g.text
        assert g.prompt_text.startswith("<|im_start|>system\nAnswer with one word.")
        assert "You are a helpful AI assistant" not in g.prompt_text


def test_vllm_records_a_failed_request_and_goes_on(vllm_backend):
    too_long = "word " * 9000  # more tokens than max_model_len (8192)
    requests = [
        GenerationRequest("t", "ok", "Hello", SamplingParams(max_tokens=4)),
        GenerationRequest("t", "bad", too_long, SamplingParams(max_tokens=4)),
    ]
    ok, bad = vllm_backend.generate(requests)
    assert ok.error is None and ok.output_tokens == 4
    assert bad.error is not None and bad.text == "" and bad.finish_reason == "error"


def test_hf_batches_requests_that_differ_only_in_seed(hf_backend):
    calls = []
    original = hf_backend._generate_batch

    def spy(requests, params):
        calls.append((len(requests), params.seed))
        return original(requests, params)

    hf_backend._generate_batch = spy
    try:
        requests = [GenerationRequest("t", str(i), "Hi", SamplingParams(max_tokens=2, seed=100 + i)) for i in range(3)]
        out = hf_backend.generate(requests)
    finally:
        del hf_backend._generate_batch
    assert len(out) == 3 and calls == [(3, 100)]
