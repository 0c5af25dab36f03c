"""``benchmarks/gpu_check.py`` in CPU mode: the checks that need CUDA are skipped
visibly, the rest run for real (seeded Qwen2 miniature, hf backend, run.json)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.mark.timeout(600)
def test_gpu_check_in_cpu_mode_prints_one_json_document(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "EVALSUITE_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--max-tokens", "8"],
                          check=False, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)  # the whole of stdout is one JSON document
    assert (doc["schema"], doc["mode"]) == ("evalsuite-gpu-check/1", "cpu")
    checks = doc["checks"]
    assert list(checks) == ["miniature", "hf_backend_run", "nvml_vs_torch", "run_json_gpus", "placement"]
    mini = checks["miniature"]
    # 2 layers, hidden 128, 4 heads / 2 KV heads (head dim 32), MLP 256, tied embeddings, vocab 320:
    # embeddings 320*128 + per layer (q 128*128+128, k 128*64+64, v 128*64+64, o 128*128,
    # MLP 3*128*256, two norms 2*128) + final norm 128.
    per_layer = (128 * 128 + 128) + 2 * (128 * 64 + 64) + 128 * 128 + 3 * 128 * 256 + 2 * 128
    assert (mini["status"], mini["architecture"], mini["vocab_size"]) == ("pass", "Qwen2ForCausalLM", 320)
    assert mini["parameters"] == 320 * 128 + 2 * per_layer + 128
    run = checks["hf_backend_run"]
    assert (run["status"], run["device"], run["requests"], run["errors"]) == ("pass", "cpu", 4, 0)
    assert 0 < run["output_tokens"] <= 4 * 8 and run["peak_gpu_mem_gib"] is None
    assert checks["run_json_gpus"] == {"status": "pass", "run_json": [], "torch_gpus": 0}
    for name in ("nvml_vs_torch", "placement"):
        assert checks[name] == {"status": "skipped", "reason": "--device cpu"}
    assert doc["summary"] == {"pass": 3, "fail": 0, "skipped": 2}
