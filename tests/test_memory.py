"""Memory: the config estimate against hand-worked values, and real sampling."""

import pytest

from evalsuite.metrics.memory import (
    MemoryMonitor,
    _nvml_handles,
    estimate_from_config,
    process_tree_rss,
)

# Qwen2.5-7B-Instruct's config.json (the published values).
QWEN25_7B = {
    "model_type": "qwen2", "hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28,
    "num_key_value_heads": 4, "intermediate_size": 18944, "vocab_size": 152064,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}


def test_qwen25_7b_kv_bytes_per_token():
    # 2 (K, V) x 28 layers x 4 KV heads x 128 head dim x 2 bytes
    assert estimate_from_config(QWEN25_7B, "bfloat16").kv_bytes_per_token == 2 * 28 * 4 * 128 * 2 == 57_344


def test_qwen25_7b_parameter_count():
    # Per layer: q 3584*3584 + 3584 bias; k and v 3584*512 + 512 bias each; o 3584*3584;
    # MLP 3 * 3584 * 18944; two RMSNorms 2 * 3584.
    per_layer = (3584 * 3584 + 3584) + 2 * (3584 * 512 + 512) + 3584 * 3584 + 3 * 3584 * 18944 + 2 * 3584
    expected = 2 * 152064 * 3584 + 28 * per_layer + 3584  # untied embeddings + final norm
    est = estimate_from_config(QWEN25_7B, "bfloat16")
    assert est.parameters == expected == 7_615_616_512
    assert est.weight_bytes == 2 * expected


def test_fits_on_gpus():
    est = estimate_from_config(QWEN25_7B, "bfloat16")
    # 32K context x 8 sequences = 262,144 tokens x 57,344 B = 14 GiB of KV + 14.18 GiB weights
    one = est.fits(32768, 8, num_gpus=1, gpu_mem_gib=24)
    assert one["kv_cache_gib_per_gpu"] == pytest.approx(14.0)
    assert not one["fits"]
    four = est.fits(32768, 8, num_gpus=4, gpu_mem_gib=24)
    assert four["fits"] and four["need_gib_per_gpu"] == pytest.approx((est.weight_bytes + 14 * 2**30) / 4 / 2**30)


def test_host_rss_is_measured_and_gpu_is_none_without_one():
    with MemoryMonitor(interval_s=0.01) as monitor:
        block = bytearray(64 * 2**20)  # touch 64 MiB so the peak moves
        block[::4096] = b"x" * len(block[::4096])
        import time

        time.sleep(0.1)
    summary = monitor.summary()
    assert summary["host_peak_rss_gib"] >= summary["host_baseline_rss_gib"] > 0
    assert summary["host_peak_rss_gib"] - summary["host_baseline_rss_gib"] >= 0.05
    if _nvml_handles() is None:
        assert summary["gpus"] is None and summary["peak_gpu_mem_gib"] is None
    del block


def test_process_tree_rss_counts_children():
    import subprocess
    import sys
    import time

    before = process_tree_rss()  # before the child exists: it may allocate before it is read
    child = subprocess.Popen([sys.executable, "-c", "b = bytearray(200 * 2**20); import time; time.sleep(60)"])
    try:
        deadline = time.monotonic() + 45  # a loaded host starts Python slowly
        while process_tree_rss() - before < 150 * 2**20 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert process_tree_rss() - before >= 150 * 2**20
    finally:
        child.kill()
        child.wait()


@pytest.mark.gpu
@pytest.mark.skipif(_nvml_handles() is None, reason="no NVIDIA GPU: NVML path not exercised on this host")
def test_nvml_sampling_sees_an_allocation():
    torch = pytest.importorskip("torch")
    with MemoryMonitor(interval_s=0.01) as monitor:
        x = torch.empty(2 * 2**30, dtype=torch.uint8, device="cuda")
        x.fill_(1)
        torch.cuda.synchronize()
        import time

        time.sleep(0.2)
    summary = monitor.summary()
    gpu0 = summary["gpus"][0]
    assert gpu0["peak_gib"] - gpu0["baseline_gib"] >= 1.9
    assert summary["peak_gpu_mem_gib"] >= gpu0["peak_gib"]
