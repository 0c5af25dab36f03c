"""Memory: measured per GPU (NVML) and on the host (psutil), and estimated from the
model config.

:class:`MemoryMonitor` samples in a background thread while a run goes on: GPU
memory in use per device (baseline before the model loads, peak and mean during
the run), the resident set size of this process and all its children (vLLM's
engine core and workers are children), and any extra probe a backend offers (vLLM's
KV-cache usage). A figure that cannot be measured here is ``None``, never 0.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GIB = 2**30
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "fp8": 1, "int8": 1, "auto": 2}


def _nvml_handles() -> list[Any] | None:
    """NVML device handles, or None where no NVIDIA driver/GPU is present."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())] or None
    except Exception:  # pynvml raises NVMLError_* subclasses, or ImportError: no GPU path here
        return None


def gpu_used_bytes(handles: list[Any]) -> list[int]:
    import pynvml

    return [pynvml.nvmlDeviceGetMemoryInfo(h).used for h in handles]


def process_tree_rss(pid: int | None = None) -> int:
    """Resident set size in bytes of a process and all its descendants (the stop
    watchdog of :mod:`evalsuite.pipeline.lifecycle` left out: it is not part of the run)."""
    import psutil

    from evalsuite.pipeline.lifecycle import watchdog_pids

    root = psutil.Process(pid or os.getpid())
    skip = set(watchdog_pids())
    total = 0
    for proc in [root, *(c for c in root.children(recursive=True) if c.pid not in skip)]:
        try:
            total += proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


class MemoryMonitor:
    """Samples memory every ``interval_s`` seconds between :meth:`start` and :meth:`stop`.

    ``start`` reads the baseline (call it before the model loads). ``probes`` maps a
    name to a callable returning a float or None (e.g. vLLM's KV-cache usage
    fraction); its peak is reported. Use as a context manager.
    """

    def __init__(self, interval_s: float = 0.2) -> None:
        self.interval_s = interval_s
        self.probes: dict[str, Callable[[], float | None]] = {}
        self._handles = _nvml_handles()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._gpu_baseline: list[int] | None = None
        self._gpu_peak: list[int] | None = None
        self._gpu_sum: list[int] | None = None
        self._gpu_samples = 0
        self._rss_baseline = 0
        self._rss_peak = 0
        self._probe_peak: dict[str, float] = {}

    def start(self) -> MemoryMonitor:
        if self._handles:
            self._gpu_baseline = gpu_used_bytes(self._handles)
            self._gpu_peak = list(self._gpu_baseline)
            self._gpu_sum = [0] * len(self._handles)
        self._rss_baseline = self._rss_peak = process_tree_rss()
        self._thread = threading.Thread(target=self._loop, name="evalsuite-memory", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        rss = process_tree_rss()
        gpu = gpu_used_bytes(self._handles) if self._handles else None
        probed = {}
        for name, probe in list(self.probes.items()):
            try:
                value = probe()
            except Exception:  # a probe that fails once is skipped, not fatal to the run
                value = None
            if value is not None:
                probed[name] = value
        with self._lock:
            self._rss_peak = max(self._rss_peak, rss)
            if gpu is not None:
                self._gpu_peak = [max(a, b) for a, b in zip(self._gpu_peak, gpu)]
                self._gpu_sum = [a + b for a, b in zip(self._gpu_sum, gpu)]
                self._gpu_samples += 1
            for name, value in probed.items():
                self._probe_peak[name] = max(self._probe_peak.get(name, value), value)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def stop(self) -> dict[str, Any]:
        """Stops sampling and returns the figures (GiB; None where not measurable)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self._sample()
        return self.summary()

    def summary(self) -> dict[str, Any]:
        with self._lock:
            gpus = None
            if self._handles and self._gpu_baseline is not None:
                n = max(self._gpu_samples, 1)
                gpus = [
                    {"index": i, "baseline_gib": b / GIB, "peak_gib": p / GIB, "mean_gib": s / n / GIB}
                    for i, (b, p, s) in enumerate(zip(self._gpu_baseline, self._gpu_peak, self._gpu_sum))
                ]
            return {
                "gpus": gpus,
                "peak_gpu_mem_gib": max(g["peak_gib"] for g in gpus) if gpus else None,
                "host_baseline_rss_gib": self._rss_baseline / GIB,
                "host_peak_rss_gib": self._rss_peak / GIB,
                "probes_peak": dict(self._probe_peak),
            }

    def __enter__(self) -> MemoryMonitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a decoder-only transformer needs: weights plus KV cache.

    ``kv_bytes_per_token = 2 (K and V) x layers x kv_heads x head_dim x dtype bytes``
    (e.g. Qwen2.5-7B in bf16: 2 x 28 x 4 x 128 x 2 = 57,344). Activations, CUDA
    graphs and allocator slack are not included, which is why ``fits`` leaves
    ``1 - gpu_memory_utilization`` of each GPU free, as vLLM does.
    """

    parameters: int
    weight_bytes: int
    kv_bytes_per_token: int

    def total_bytes(self, tokens: int) -> int:
        return self.weight_bytes + self.kv_bytes_per_token * tokens

    def fits(self, context_len: int, concurrency: int, num_gpus: int, gpu_mem_gib: float,
             gpu_memory_utilization: float = 0.9) -> dict[str, Any]:
        """Whether ``concurrency`` sequences of ``context_len`` tokens fit on
        ``num_gpus`` GPUs of ``gpu_mem_gib`` each, with tensor parallelism splitting
        weights and KV cache evenly. Returns the per-GPU need and budget in GiB."""
        tokens = context_len * concurrency
        per_gpu = self.total_bytes(tokens) / num_gpus
        budget = gpu_mem_gib * GIB * gpu_memory_utilization
        return {
            "context_len": context_len, "concurrency": concurrency, "num_gpus": num_gpus,
            "gpu_mem_gib": gpu_mem_gib, "gpu_memory_utilization": gpu_memory_utilization,
            "weights_gib_per_gpu": self.weight_bytes / num_gpus / GIB,
            "kv_cache_gib_per_gpu": self.kv_bytes_per_token * tokens / num_gpus / GIB,
            "need_gib_per_gpu": per_gpu / GIB, "budget_gib_per_gpu": budget / GIB,
            "fits": per_gpu <= budget,
            "max_tokens_in_kv_cache": max(0, math.floor((budget * num_gpus - self.weight_bytes) / self.kv_bytes_per_token)),
        }


def estimate_from_config(config: dict[str, Any], dtype: str = "bfloat16") -> MemoryEstimate:
    """Parameter count and KV bytes per token of a Llama/Qwen2-style decoder from its
    ``config.json`` fields (``hidden_size``, ``num_hidden_layers``,
    ``num_attention_heads``, ``num_key_value_heads``, ``intermediate_size``,
    ``vocab_size``, ``tie_word_embeddings``, ``head_dim``; QKV bias for ``qwen2``).

    Raises KeyError naming a missing field.
    """
    h = config["hidden_size"]
    layers = config["num_hidden_layers"]
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or h // heads
    inter = config["intermediate_size"]
    vocab = config["vocab_size"]
    qkv_bias = config.get("attention_bias", config.get("model_type") == "qwen2")
    attn = h * heads * head_dim + 2 * h * kv_heads * head_dim + heads * head_dim * h
    if qkv_bias:
        attn += heads * head_dim + 2 * kv_heads * head_dim
    per_layer = attn + 3 * h * inter + 2 * h
    embeddings = vocab * h * (1 if config.get("tie_word_embeddings", False) else 2)
    params = embeddings + layers * per_layer + h
    width = DTYPE_BYTES.get(str(dtype).replace("torch.", ""), 2)
    return MemoryEstimate(params, params * width, 2 * layers * kv_heads * head_dim * width)


def estimate_for_model(model_path: str, dtype: str = "auto") -> MemoryEstimate | None:
    """The estimate for a local model directory (dtype ``auto`` reads the config's
    ``torch_dtype``/``dtype``); None when there is no readable config."""
    config_file = Path(model_path) / "config.json"
    try:
        config = json.loads(config_file.read_text())
        if dtype == "auto":
            dtype = str(config.get("torch_dtype") or config.get("dtype") or "bfloat16")
        return estimate_from_config(config, dtype)
    except (OSError, ValueError, KeyError):
        return None
