"""Shared fixtures.

The real vLLM engine (CPU build, embedded SmolLM2-135M-Instruct) is started once per
test session by the ``vllm_backend`` fixture and shared by every engine test; its
context length (8,192) covers every task, the needle task included. It runs in
float32 so that its greedy outputs can be compared token for token with transformers.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
# A fixed, small KV cache keeps the shared engine's memory bounded on 2-core CI hosts.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")



def data_dir() -> Path:
    path = Path(os.environ.get("EVALSUITE_DATA_DIR") or SHARED_DATA)
    if not (path / "gsm8k" / "test.jsonl").exists():
        pytest.skip(f"GSM8K data not found under {path} (set EVALSUITE_DATA_DIR)")
    return path


@pytest.fixture(autouse=True)
def fresh_response_cache(monkeypatch, tmp_path_factory):
    """Each test gets its own empty response cache (subprocesses inherit it): a test
    must exercise its backend, not replay what another test or session stored."""
    monkeypatch.setenv("EVALSUITE_RESPONSE_CACHE", str(tmp_path_factory.mktemp("cache") / "responses.sqlite"))


@pytest.fixture(scope="session")
def gsm8k_data_dir() -> Path:
    return data_dir()


@pytest.fixture(scope="session")
def embedded_model() -> str:
    from evalsuite.models import embedded_model_dir

    return str(embedded_model_dir())


@pytest.fixture(scope="session")
def vllm_backend(embedded_model):
    """One real in-process vLLM engine for the whole session."""
    pytest.importorskip("vllm")
    from evalsuite.backends.vllm import VLLMBackend

    backend = VLLMBackend(embedded_model, max_model_len=8192, dtype="float32", seed=0, enforce_eager=True)
    yield backend
    backend.close()


@pytest.fixture
def run_with(tmp_path):
    """Runs tasks through the real runner with a given backend; returns the RunResult."""
    from evalsuite.config import RunConfig
    from evalsuite.pipeline.runner import run

    def _run(backend, tasks, **config):
        cfg = RunConfig(tasks=tuple(tasks), output_dir=tmp_path / "results", **config)
        return run(cfg, progress=False, backend=backend)

    return _run
