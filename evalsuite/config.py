"""The run configuration: built once from the CLI (or a suite), frozen, passed down."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

from evalsuite.errors import UsageError
from evalsuite.paths import check_name

MAX_LABEL = 80  # characters of a run label (--label): it must fit a table header


def _frozen(d: Mapping | None) -> Mapping:
    return MappingProxyType(dict(d or {}))


@dataclass(frozen=True)
class EngineConfig:
    """Engine settings; ``extra`` passes any other engine argument through."""

    tensor_parallel_size: int = 1
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None
    dtype: str = "auto"
    enforce_eager: bool | None = None  # None: chosen from the host (evalsuite.host)
    extra: Mapping[str, Any] = field(default_factory=lambda: _frozen({}))


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides what a run does.

    ``None`` sampling fields mean "the task's default". ``limit`` takes the first
    N samples of each task. ``task_args`` maps a task name to extra factory
    keyword arguments (``--task-arg gsm8k.prompt=fewshot``). ``cache`` reads and
    writes the response cache (``--no-cache`` turns it off); ``resume`` is the run
    directory being finished (``--resume``), None for a new run. ``label`` names
    the run in reports (``--label``); None lets the report derive one.
    """

    tasks: tuple[str, ...]
    model: str | None = None
    backend: str = "vllm"
    limit: int | None = None
    num_fewshot: int | None = None
    data_dir: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int = 0
    system_prompt: str | None = None
    batch_size: int | None = None  # requests per generate call, batch-only backends (None: 256)
    output_dir: Path = Path("results")
    run_id: str | None = None
    engine: EngineConfig = field(default_factory=EngineConfig)
    task_args: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: _frozen({}))
    num_samples: int | None = None
    allow_unsandboxed: bool = False
    backend_args: Mapping[str, Any] = field(default_factory=lambda: _frozen({}))
    max_error_rate: float | None = None
    cache: bool = True
    resume: str | None = None
    label: str | None = None

    def __post_init__(self) -> None:
        if not self.tasks:
            raise UsageError("no task given (use --tasks NAME[,NAME...]; `evalsuite list` shows them)")
        if self.limit is not None and self.limit < 1:
            raise UsageError(f"--limit must be a positive integer, got {self.limit}")
        if self.batch_size is not None and self.batch_size < 1:
            raise UsageError(f"--batch-size must be a positive integer, got {self.batch_size}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise UsageError(f"--max-tokens must be a positive integer, got {self.max_tokens}")
        if self.temperature is not None and not 0 <= self.temperature < math.inf:  # NaN fails too
            raise UsageError(f"--temperature must be a finite number >= 0, got {self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise UsageError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.num_samples is not None and self.num_samples < 1:
            raise UsageError(f"--num-samples must be a positive integer, got {self.num_samples}")
        if self.max_error_rate is not None and not 0 <= self.max_error_rate <= 1:
            raise UsageError(f"--max-error-rate must be in [0, 1], got {self.max_error_rate}")
        b = self.backend_args
        if b.get("max_concurrency") is not None and b["max_concurrency"] < 1:
            raise UsageError(f"--max-concurrency must be >= 1, got {b['max_concurrency']}")
        if b.get("request_timeout") is not None and not b["request_timeout"] > 0:
            raise UsageError(f"--request-timeout must be > 0 seconds, got {b['request_timeout']}")
        if b.get("max_retries") is not None and b["max_retries"] < 0:
            raise UsageError(f"--max-retries must be >= 0, got {b['max_retries']}")
        if b.get("data_parallel_size") is not None and b["data_parallel_size"] < 1:
            raise UsageError(f"--data-parallel-size must be >= 1, got {b['data_parallel_size']}")
        if b.get("replica_timeout") is not None and not b["replica_timeout"] > 0:
            raise UsageError(f"--replica-timeout must be > 0 seconds, got {b['replica_timeout']}")
        if b.get("ray_address") is not None and not str(b["ray_address"]).strip():
            raise UsageError("--ray-address must name a cluster (host:port, ray://host:port or auto)")
        if self.engine.max_model_len is not None and self.engine.max_model_len < 1:
            raise UsageError(f"--max-model-len must be a positive integer, got {self.engine.max_model_len}")
        mem = self.engine.gpu_memory_utilization
        if mem is not None and not 0 < mem <= 1:
            raise UsageError(f"--gpu-memory-utilization must be in (0, 1], got {mem}")
        if self.engine.tensor_parallel_size < 1:
            raise UsageError("--tensor-parallel-size must be >= 1")
        if self.run_id is not None:
            check_name(self.run_id, "--run-id")
        label = self.label
        if label is not None and (not isinstance(label, str) or not label.strip()
                                  or len(label.splitlines()) != 1 or len(label) > MAX_LABEL):
            raise UsageError(f"--label must be one line of 1 to {MAX_LABEL} characters, "
                             f"got {str(label)[:MAX_LABEL]!r}")

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["output_dir"] = str(self.output_dir)
        d["tasks"] = list(self.tasks)
        d["engine"] = {f.name: getattr(self.engine, f.name) for f in fields(self.engine)}
        d["engine"]["extra"] = dict(self.engine.extra)
        d["task_args"] = {k: dict(v) for k, v in self.task_args.items()}
        d["backend_args"] = dict(self.backend_args)
        return d
