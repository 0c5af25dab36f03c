import json

import pytest

from evalsuite.results.store import read_samples

pytestmark = pytest.mark.engine


def test_gsm8k_runs_end_to_end_on_real_vllm(vllm_backend, run_with, gsm8k_data_dir):
    result = run_with(vllm_backend, ["gsm8k"], limit=4, data_dir=str(gsm8k_data_dir), max_tokens=64,
                      cache=False)
    records = read_samples(result.run_dir, ordered=True)  # samples.jsonl is in completion order
    assert [r["sample_id"] for r in records] == ["test-0", "test-1", "test-2", "test-3"]
    run = json.loads((result.run_dir / "run.json").read_text())
    assert run["status"] == "complete"
    assert run["metrics"]["gsm8k"]["scores"]["strict-match"]["n"] == 4
    assert all(r["output_tokens"] > 0 for r in records)

    # math-verify's second opinion on flexible-extract: in every record, counted in run.json.
    assert all(r["second_opinions"]["flexible-extract"]["verifier"].startswith("math-verify") for r in records)
    mv = run["metrics"]["gsm8k"]["math_verify"]
    assert mv["scorer"] == "flexible-extract" and mv["n"] + mv["unavailable"] == 4
    assert mv["agree"] + mv["disagree"] == mv["n"] and len(mv["disagreements"]) == mv["disagree"]

    # Latency from vLLM's per-request stats: TTFT before E2E, both measured.
    for r in records:
        t = r["timings"]
        assert 0 < t["ttft_s"] <= t["e2e_s"]
    perf = run["metrics"]["gsm8k"]["performance"]
    assert perf["ttft_ms_n"] == 4 and perf["tpot_ms_p50"] > 0 and perf["e2e_ms_p95"] >= perf["e2e_ms_p50"]
    assert perf["output_tokens_per_s"] > 0

    # Memory: host RSS of the process tree, KV-cache capacity, no GPU here, the estimate.
    memory = run["memory"]
    assert memory["host_peak_rss_gib"] > 0.1
    kv = memory["kv_cache"]
    assert kv["tokens"] == kv["blocks"] * kv["block_size"] > 0
    assert kv["peak_usage_fraction"] is None or 0 <= kv["peak_usage_fraction"] <= 1
    # SmolLM2-135M: 30 layers x 3 KV heads x 64 head dim x 2 (K, V) x 4 bytes (float32 engine)
    assert memory["estimate"]["kv_bytes_per_token"] == 2 * 30 * 3 * 64 * 4
