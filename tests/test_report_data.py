"""Helpers that write small but complete run directories for the report and
compare tests, through the runner's own stages (no tests here).

A run is made as ``evalsuite.pipeline.runner.run`` makes it, minus the model: real
:class:`~evalsuite.task.Task` objects with in-memory samples and data files on
disk, ``describe_run`` for the header (config, model fingerprint, task
versions, data hashes, provenance), ``score`` and ``aggregate`` for records and
metrics, ``memory_report`` for memory, and :class:`~evalsuite.results.store.RunWriter`
for the files. Only the generations are scripted, so fixtures follow the results
format as it changes.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from evalsuite.config import EngineConfig, RunConfig
from evalsuite.models import ModelRef
from evalsuite.pipeline.runner import (
    aggregate,
    build_requests,
    describe_run,
    memory_report,
    performance,
    score,
)
from evalsuite.results.store import RunWriter
from evalsuite.task import Scorer, Task
from evalsuite.types import Generation, Sample, Score, Timings

WALL_S = 2.0
OUTPUT_TOKENS = 5
_clock = itertools.count()  # runs written later start later, one hour apart


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = _merge(out.get(key) or {}, value) if isinstance(value, Mapping) else value
    return out


def _model_dir(root: Path, name: str) -> Path:
    """A directory with a config.json, so the model fingerprint is real and per name."""
    path = root / ".models" / name
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama", "name": name}))
    return path


def _data_file(root: Path, task: str, text: str) -> Path:
    """The task's data file; the same text gives the same file name and hash."""
    path = root / ".data" / hashlib.sha256(text.encode()).hexdigest()[:8] / f"{task}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _task(root: Path, name: str, spec: Mapping[str, Any]) -> Task:
    verdicts: Sequence[float] = spec["verdicts"]
    n = len(verdicts)
    metadata = spec.get("metadata") or [{}] * n
    samples = [Sample(f"s{i}", f"question {i} <b>?</b>", str(i), metadata[i]) for i in range(n)]
    by_id = {s.id: v for s, v in zip(samples, verdicts)}
    scorer = Scorer(spec.get("scorer", "acc"),
                    lambda output, sample: Score(by_id[sample.id], sample.target if by_id[sample.id] else None),
                    primary=True)
    extras = spec.get("extras") or {}
    return Task(name=name, version=str(spec.get("version", "1")), samples=samples, scorers=(scorer,),
                data_files=(_data_file(root, name, spec.get("data", f"{name} problems v1\n")),),
                aggregate=(lambda records: dict(extras)) if extras else None, source="test fixture")


def write_run(root: Path, run_id: str, tasks: dict[str, dict[str, Any]], memory: dict | None = None,
              model: str = "tiny-model", temperature: float = 0.0, dtype: str = "auto",
              label: str | None = None, started_at: float | None = None,
              header: Mapping[str, Any] | None = None) -> Path:
    """Writes ``root/run_id/`` and returns it.

    ``tasks[name]``: ``verdicts`` (one per sample, in order), and optionally
    ``scorer`` (default ``acc``), ``e2e_ms`` (every request's end-to-end latency;
    default 100; None: not measured, as for cached answers), ``outputs``, ``metadata`` (per sample), ``extras`` (task
    metrics), ``version`` (default ``"1"``) and ``data`` (the data file's text).
    ``memory``: figures the memory monitor would have measured
    (``host_peak_rss_gib``, ``peak_gpu_mem_gib``); None writes no memory block,
    as older runs have none. ``header``: values merged over the written header
    (e.g. ``{"provenance": {"versions": {"vllm": "0.9"}}}``).
    """
    model_path = _model_dir(root, model)
    config = RunConfig(tasks=tuple(tasks), model=str(model_path), temperature=temperature,
                       engine=EngineConfig(dtype=dtype), label=label, output_dir=root, run_id=run_id, cache=False)
    ref = ModelRef(model, str(model_path), "local")
    task_objects = [_task(root, name, spec) for name, spec in tasks.items()]
    run_header = describe_run(config, ref, task_objects)
    run_header["backend"] = {"backend": "vllm", "engine": {"dtype": dtype, "seed": 0}}
    started = started_at if started_at is not None else 1_700_000_000.0 + 3600.0 * next(_clock)
    metrics, records = {}, []
    for task, (name, spec) in zip(task_objects, tasks.items()):
        requests = build_requests(task, config)
        outputs = spec.get("outputs") or [f"{run_id} answer {i}" for i in range(len(requests))]
        e2e_ms = spec.get("e2e_ms", 100.0)
        e2e_s = None if e2e_ms is None else e2e_ms / 1000
        generations = [Generation(outputs[i], "stop", prompt_tokens=10, output_tokens=OUTPUT_TOKENS,
                                  timings=Timings(e2e_s=e2e_s)) for i in range(len(requests))]
        task_records = score(task, requests, generations)
        metrics[name] = aggregate(task, task_records, WALL_S)
        records.extend(task_records)
    data = {**run_header, "status": "complete", "started_at": started, "finished_at": started + WALL_S,
            "performance": performance(records, WALL_S), "metrics": metrics}
    if memory is not None:
        measured = {"gpus": None, "peak_gpu_mem_gib": None, "host_baseline_rss_gib": 0.5, **memory}
        data["memory"] = memory_report(measured, ref, config, run_header["backend"])
    data = _merge(data, header or {})
    with RunWriter(root / run_id) as writer:
        writer.write_run(data)
        writer.append(records)
    return root / run_id
