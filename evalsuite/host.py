"""What this host can do, and the engine settings chosen from it.

A setting the user gives is kept as given; one left unset (``dtype="auto"``,
``enforce_eager=None``) is chosen here from the host, and the choice is recorded
with its reason (``run.json`` -> ``engine.dtype_reason``).

Figures behind the CPU defaults, measured on a 2-core AMD EPYC with AVX2 only
(no AVX-512), embedded SmolLM2-135M-Instruct, 8 GSM8K prompts, in-process vLLM
(``benchmarks/bench_host_defaults.py`` re-measures them on any host):

- bfloat16 without native support: vLLM logs "Failed to create oneDNN linear,
  fallback to torch linear"; TTFT p50 37.1 s and 13.8 output tok/s, against
  3.6 s and 29.5 tok/s in float32. Native bfloat16 needs ``avx512_bf16`` or AMX.
- Compilation (vLLM's default) took about 2.5 minutes of start-up on every run
  (its compile cache fails to load in the CPU build) for at most 5% faster
  decoding of the runs evalsuite makes; eager mode is the CPU default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@dataclass(frozen=True)
class Choice:
    """A chosen setting and why: ``reason`` is one line for ``run.json``."""

    value: object
    reason: str


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU feature flags of the first processor in ``/proc/cpuinfo`` (empty
    where the file does not exist, as on macOS)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name, or the machine type where cpuinfo has none."""
    try:
        text = cpuinfo if cpuinfo is not None else Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return os.uname().machine


def _cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by the cgroup v2 ``cpu.max`` quota, None when unlimited or unknown."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup quota (>= 1)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_cpu_quota()
    return max(1, min(cpus, int(quota)) if quota else cpus)


def available_memory_bytes(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Memory this process can still take, in bytes: ``MemAvailable`` from
    ``/proc/meminfo``, capped by the cgroup v2 limit minus its usage. None when unknown."""
    found: list[int] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError):
        pass
    try:
        limit = (root / "memory.max").read_text().strip()
        if limit != "max":
            found.append(int(limit) - int((root / "memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def native_bf16(flags: frozenset[str]) -> bool:
    """True where the CPU computes bfloat16 natively (``avx512_bf16`` or AMX)."""
    return bool(flags & NATIVE_BF16_FLAGS)


def choose_dtype(requested: str, *, on_cpu: bool, flags: frozenset[str] | None = None,
                 gpu_bf16: bool | None = None) -> Choice:
    """The engine dtype: ``requested`` unless it is ``auto``.

    CPU: bfloat16 where the CPU has native bfloat16, else float32 (emulated
    bfloat16 runs several times slower, see the module docstring). GPU: bfloat16
    where the device supports it (``torch.cuda.is_bf16_supported``), else float16.
    """
    if requested != "auto":
        return Choice(requested, "set by the user")
    if on_cpu:
        flags = cpu_flags() if flags is None else flags
        if native_bf16(flags):
            return Choice("bfloat16", "CPU with native bfloat16 (" + ", ".join(sorted(flags & NATIVE_BF16_FLAGS)) + ")")
        return Choice("float32", "CPU without native bfloat16 (no avx512_bf16/amx)")
    if gpu_bf16 is None:
        import torch

        gpu_bf16 = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if gpu_bf16:
        return Choice("bfloat16", "GPU with bfloat16 support")
    return Choice("float16", "GPU without bfloat16 support")


def choose_enforce_eager(requested: bool | None, *, on_cpu: bool) -> Choice:
    """Eager mode: as requested, else on for the CPU (compilation costs minutes of
    start-up there for a few percent, see the module docstring), off on a GPU
    (CUDA graphs and compilation pay off)."""
    if requested is not None:
        return Choice(bool(requested), "set by the user")
    if on_cpu:
        return Choice(True, "CPU: compilation costs ~2.5 min of start-up per run for <= 5% faster decoding")
    return Choice(False, "GPU: CUDA graphs and compilation pay off")


def engine_defaults(dtype: str, enforce_eager: bool | None, *, on_cpu: bool) -> dict[str, object]:
    """``dtype`` and ``enforce_eager`` resolved for this host, each with ``*_reason``."""
    d = choose_dtype(dtype, on_cpu=on_cpu)
    e = choose_enforce_eager(enforce_eager, on_cpu=on_cpu)
    return {"dtype": d.value, "dtype_reason": d.reason, "enforce_eager": e.value, "enforce_eager_reason": e.reason}


def describe() -> dict[str, object]:
    """What ``evalsuite doctor`` prints: the host as detected and the engine settings
    a run with no engine flags would choose (CPU and, where present, GPU)."""
    flags = cpu_flags()
    memory = available_memory_bytes()
    out: dict[str, object] = {
        "cpu": cpu_model(),
        "cpus_available": available_cpus(),
        "native_bf16": native_bf16(flags),
        "simd": sorted(f for f in flags if f in {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "neon", "asimd"}),
        "memory_available_gib": None if memory is None else round(memory / 2**30, 1),
    }
    try:
        import torch

        out["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        out["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        out["cuda_devices"] = []
    on_cpu = not out["cuda_devices"]
    out["device"] = "cpu" if on_cpu else "cuda"
    out["chosen"] = engine_defaults("auto", None, on_cpu=on_cpu)
    return out
