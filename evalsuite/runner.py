"""A run as a straight line of small stages.

``resolve_model -> load_tasks -> open_backend -> build_requests -> generate ->
score -> write -> aggregate -> finish``. Misconfiguration raises
:class:`~evalsuite.errors.UsageError` before the engine starts; a failed request
is recorded on its sample and the run goes on.

Generation goes through the response cache (:mod:`evalsuite.cache`): the engine
starts only when some request is not cached. A resumed run (:mod:`evalsuite.resume`)
keeps the records its directory already holds and generates only the rest.
"""

from __future__ import annotations

import hashlib
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from evalsuite import guard, lifecycle
from evalsuite import resume as resuming
from evalsuite.cache import (
    CachedBackend,
    chat_template_sha256,
    default_path,
    open_cache,
    run_identity,
)
from evalsuite.config import RunConfig
from evalsuite.errors import UsageError
from evalsuite.memory import MemoryMonitor, estimate_for_model
from evalsuite.metrics import accuracy, latency_summary, throughput
from evalsuite.models import ModelRef, model_fingerprint, resolve_model
from evalsuite.paths import check_output_dir
from evalsuite.provenance import git_revision, host_description, library_versions
from evalsuite.registry import backends
from evalsuite.results import RunWriter, new_run_id
from evalsuite.task import Task, build_task, file_sha256
from evalsuite.types import Generation, GenerationRequest, Message, SampleRecord, SamplingParams


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]
    limit: int | None
    memory: dict[str, Any] | None = None


def load_tasks(config: RunConfig, model: ModelRef) -> list[Task]:
    """Builds every task (reads its data) before any model is loaded.

    Factories receive the common arguments they declare: ``num_fewshot``,
    ``data_dir``, ``seed``, ``model_path`` (to count tokens with the model's own
    tokenizer), ``max_model_len``, ``max_tokens`` and ``system_prompt`` (for tasks
    that must fit prompts to a context), ``num_samples`` and ``allow_unsandboxed``;
    ``--task-arg`` values are passed as given.
    """
    return [
        build_task(name, num_fewshot=config.num_fewshot, data_dir=config.data_dir, seed=config.seed,
                   model_path=model.path, max_model_len=config.engine.max_model_len,
                   num_samples=config.num_samples, allow_unsandboxed=config.allow_unsandboxed or None,
                   max_tokens=config.max_tokens, system_prompt=config.system_prompt,
                   explicit=dict(config.task_args.get(name, {})))
        for name in config.tasks
    ]


def sampling_params(task: Task, config: RunConfig) -> SamplingParams:
    """The task's defaults with the run's overrides applied."""
    overrides = {
        k: v for k, v in {"max_tokens": config.max_tokens, "temperature": config.temperature,
                          "top_p": config.top_p}.items() if v is not None
    }
    return replace(task.params, **overrides)


def request_seed(run_seed: int, task: str, sample_id: str, repeat: int) -> int:
    """A per-request seed that depends only on the run seed and the request's identity,
    so sampled outputs do not depend on batching, ordering or replicas."""
    digest = hashlib.sha256(f"{run_seed}:{task}:{sample_id}:{repeat}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def with_system_prompt(prompt, system_prompt: str | None):
    if system_prompt is None or isinstance(prompt, str):
        return prompt
    if prompt and prompt[0].role == "system":
        return prompt
    return (Message("system", system_prompt), *prompt)


def build_requests(task: Task, config: RunConfig) -> list[GenerationRequest]:
    params = sampling_params(task, config)
    samples = task.samples[: config.limit] if config.limit else task.samples
    return [
        GenerationRequest(
            task=task.name,
            sample_id=sample.id,
            prompt=with_system_prompt(sample.input, config.system_prompt),
            params=replace(params, seed=request_seed(config.seed, task.name, sample.id, repeat)),
            repeat=repeat,
            json_schema=task.json_schema(sample) if task.json_schema else None,
        )
        for sample in samples
        for repeat in range(task.repeats)
    ]


def backend_kwargs(config: RunConfig) -> dict[str, Any]:
    """The settings the chosen backend's constructor declares.

    Engine settings a backend does not take are left out; a backend-specific flag
    given to a backend that does not take it (``--base-url`` with ``vllm``) raises
    UsageError, as does an unknown backend name.
    """
    import inspect

    factory = backends.get(config.backend)
    e = config.engine
    common = {
        "tensor_parallel_size": e.tensor_parallel_size, "max_model_len": e.max_model_len,
        "gpu_memory_utilization": e.gpu_memory_utilization, "dtype": e.dtype, "seed": config.seed,
        "enforce_eager": e.enforce_eager, "engine_args": dict(e.extra),
    }
    accepted = inspect.signature(factory).parameters
    for key in config.backend_args:
        if key not in accepted:
            flag = "--" + key.replace("_", "-").replace("base-urls", "base-url")
            raise UsageError(f"{flag} does not apply to the {config.backend} backend")
    return {k: v for k, v in {**common, **config.backend_args}.items() if k in accepted}


def check_constrained_decoding(config: RunConfig, tasks: Sequence[Task]) -> None:
    """UsageError when a task needs constrained decoding the backend cannot do."""
    if getattr(backends.get(config.backend), "supports_json_schema", True):
        return
    for task in tasks:
        if task.json_schema is not None:
            raise UsageError(f"task '{task.name}' needs constrained decoding, which the {config.backend} "
                             "backend does not support (use --backend vllm or openai)")


def open_backend(config: RunConfig, model: ModelRef):
    """Builds the run's backend; a missing library is a UsageError naming the extra."""
    kwargs = backend_kwargs(config)
    try:
        backend = backends.get(config.backend)(model.path, **kwargs)
    except ImportError as err:
        raise UsageError(
            f"the {config.backend} backend needs a library that is not installed ({err.name}); "
            "on CPU hosts: pip install 'evalsuite[cpu]', on GPU hosts: pip install 'evalsuite[vllm]'"
        ) from None
    announce_settings(getattr(backend, "settings", None) or {})
    return backend


def announce_settings(settings: dict[str, Any]) -> None:
    """Prints the engine settings chosen for the user, with their reasons, to stderr
    (``dtype=float32 (CPU without native bfloat16 ...)``); nothing when none was chosen."""
    import sys

    chosen = [f"{key}={settings[key]} ({settings[key + '_reason']})"
              for key in ("dtype", "enforce_eager") if key + "_reason" in settings]
    if chosen:
        print("evalsuite: engine settings: " + "; ".join(chosen), file=sys.stderr)


def score(task: Task, requests: Sequence[GenerationRequest], generations: Sequence[Generation]) -> list[SampleRecord]:
    """One record per generation, scored under the per-sample guard
    (:func:`evalsuite.guard.score_guarded`): a scorer that raises is an error on
    its sample's record, never an exception here."""
    by_id = {s.id: s for s in task.samples}
    samples = [by_id[r.sample_id] for r in requests]
    scored = guard.score_guarded(task, samples, generations)
    return [
        SampleRecord(
            task=task.name, sample_id=r.sample_id, repeat=r.repeat,
            prompt=g.prompt_text if g.prompt_text is not None else _prompt_as_text(r.prompt),
            output=g.text, target=s.target, scores=sc, prompt_tokens=g.prompt_tokens,
            output_tokens=g.output_tokens, finish_reason=g.finish_reason, timings=g.timings,
            error=guard.joined(g.error, scoring_error), metadata=s.metadata,
        )
        for r, g, s, (sc, scoring_error) in zip(requests, generations, samples, scored)
    ]


def _prompt_as_text(prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"[{m.role}] {m.content}" for m in prompt)


def generate(task: Task, requests: list[GenerationRequest], backend, writer: RunWriter,
             batch_size: int, progress: bool) -> tuple[list[SampleRecord], float]:
    """Generates and scores batch by batch, writing each batch as it is scored."""
    from tqdm import tqdm

    records: list[SampleRecord] = []
    start = time.perf_counter()
    with tqdm(total=len(requests), desc=task.name, unit="sample", disable=not progress, dynamic_ncols=True) as bar:
        for i in range(0, len(requests), batch_size):
            batch = requests[i : i + batch_size]
            generations = backend.generate(batch)
            if len(generations) != len(batch):
                raise RuntimeError(f"backend {backend.name} returned {len(generations)} generations for {len(batch)} requests")
            resuming.kill_point("scoring")
            batch_records = writer.append(score(task, batch, generations))
            resuming.kill_point("batch_written")
            records.extend(batch_records)
            bar.update(len(batch))
    return records, time.perf_counter() - start


def performance(records: Sequence[SampleRecord], wall_s: float) -> dict[str, Any]:
    """Throughput over ``wall_s`` seconds (:func:`evalsuite.metrics.throughput`) and
    latency percentiles of ``records``."""
    return {
        "wall_s": wall_s,
        "requests": len(records),
        "errors": sum(r.error is not None for r in records),
        "finish_length": sum(r.finish_reason == "length" for r in records),
        **throughput(records, wall_s),
        **latency_summary(records),
    }


def aggregate(task: Task, records: Sequence[SampleRecord], wall_s: float,
              timed: Sequence[SampleRecord] | None = None) -> dict[str, Any]:
    """Per-scorer accuracy rows, performance figures and the task's own extras.

    Throughput and latency cover ``timed`` (the records generated in this process's
    ``wall_s``; by default all), so a resumed run does not divide earlier samples
    by the resumed part's time; request and error counts cover every record.
    """
    rows = {
        scorer.name: accuracy(
            [r.scores[scorer.name].value for r in records],
            [r.scores[scorer.name].extracted for r in records],
        )
        for scorer in task.scorers
        if all(scorer.name in r.scores for r in records)
    }
    perf = {**performance(records if timed is None else timed, wall_s),
            "requests": len(records), "errors": sum(r.error is not None for r in records),
            "errors_by_stage": guard.errors_by_stage(records),
            "finish_length": sum(r.finish_reason == "length" for r in records)}
    primary = next((s.name for s in task.scorers if s.primary), task.scorers[0].name if task.scorers else None)
    extras = task.aggregate(records) if task.aggregate else {}
    return {"version": task.version, "primary": primary, "scores": rows, "performance": perf, **extras}


def memory_report(measured: dict[str, Any], model: ModelRef, config: RunConfig,
                  backend_description: dict[str, Any] | None) -> dict[str, Any]:
    """Measured memory beside the estimate from the model config.

    The KV-cache capacity comes from the backend (vLLM); its peak usage from the
    sampled ``vllm:kv_cache_usage_perc`` gauge. The estimate gives the weights and
    the KV bytes per token from ``config.json`` (:mod:`evalsuite.memory`), and the
    bytes the measured KV-cache capacity takes at that rate.
    """
    kv = dict((backend_description or {}).get("kv_cache") or {}) or None
    usage = measured.get("probes_peak", {}).get("kv_cache_usage")
    if kv is not None:
        kv["peak_usage_fraction"] = usage
        kv["peak_usage_tokens"] = round(usage * kv["tokens"]) if usage is not None else None
    engine = (backend_description or {}).get("engine") or {}
    estimate = estimate_for_model(model.path, engine.get("dtype") or config.engine.dtype)
    est = None
    if estimate is not None:
        est = {"parameters": estimate.parameters, "weights_gib": estimate.weight_bytes / 2**30,
               "kv_bytes_per_token": estimate.kv_bytes_per_token}
        if kv is not None:
            est["kv_cache_capacity_gib"] = estimate.kv_bytes_per_token * kv["tokens"] / 2**30
    return {**{k: v for k, v in measured.items() if k != "probes_peak"}, "kv_cache": kv, "estimate": est}


def describe_run(config: RunConfig, model: ModelRef, tasks: Sequence[Task]) -> dict[str, Any]:
    return {
        "config": config.to_dict(),
        "model": {"name": model.name, "path": model.path, "source": model.source,
                  "sha256": model_fingerprint(model)},
        "tasks": {
            t.name: {"version": t.version, "source": t.source, "args": dict(t.args),
                     "num_samples": len(t.samples[: config.limit] if config.limit else t.samples),
                     "repeats": t.repeats,
                     "sampling": sampling_params(t, config).to_dict(),
                     "data_files": {str(p): file_sha256(p) for p in t.data_files}}
            for t in tasks
        },
        "provenance": {"git_revision": git_revision(), "versions": library_versions(),
                       "host": host_description()},
    }


def _resolved_dtype(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with ``dtype="auto"`` replaced by what the engine will choose on
    this host (:func:`evalsuite.host.choose_dtype`): a cached response is keyed by
    the dtype that made it, not by ``auto``."""
    if kwargs.get("dtype") != "auto":
        return kwargs
    import os

    from evalsuite.host import choose_dtype

    on_cpu = os.environ.get("VLLM_TARGET_DEVICE") == "cpu"
    if not on_cpu:
        import torch

        on_cpu = not torch.cuda.is_available()
    return {**kwargs, "dtype": choose_dtype("auto", on_cpu=on_cpu).value}


def cached_backend(config: RunConfig, model: ModelRef, backend=None) -> CachedBackend:
    """The run's backend behind the response cache, opened on the first cache miss.

    The cache key's model and engine identity comes from the config and the model's
    files (:func:`evalsuite.cache.run_identity`), so a fully cached run never starts
    the engine; an already open ``backend`` is described by itself instead.
    """
    cache = open_cache(default_path()) if config.cache else None
    identity = ""
    if cache is not None and backend is not None:
        d = backend.describe()
        identity = run_identity(model, d.get("backend", backend.name), d.get("engine") or {},
                                d.get("chat_template_sha256"))
    elif cache is not None:
        identity = run_identity(model, config.backend, _resolved_dtype(backend_kwargs(config)),
                                chat_template_sha256(model.path))
    opener = (lambda: backend) if backend is not None else (lambda: open_backend(config, model))
    return CachedBackend(opener, identity, cache, name=config.backend)


def in_request_order(requests: Sequence[GenerationRequest], *groups: Sequence[SampleRecord]) -> list[SampleRecord]:
    """The records of ``groups`` that answer ``requests``, in the requests' order
    (aggregates then sum in the same order however the records were produced)."""
    by_key = {(r.task, r.sample_id, r.repeat): r for group in groups for r in group}
    return [by_key[(q.task, q.sample_id, q.repeat)] for q in requests if (q.task, q.sample_id, q.repeat) in by_key]


def ending_status(error: BaseException) -> dict[str, Any]:
    """``run.json``'s status for a run that ended by ``error``: ``interrupted`` for
    Ctrl-C or a stop signal (with the signal's name), else ``failed``."""
    if isinstance(error, KeyboardInterrupt):
        name = getattr(error, "signum", None)
        return {"status": "interrupted",
                "error": f"interrupted by {signal.Signals(name).name if name else 'KeyboardInterrupt'}"}
    return {"status": "failed", "error": f"{type(error).__name__}: {error}"}


def run(config: RunConfig, progress: bool = True, announce=None, backend=None) -> RunResult:
    """Runs every task of ``config`` and writes ``<output_dir>/<run_id>/``.

    Raises UsageError for bad configuration (before loading the model). If the run
    is interrupted, ``run.json`` says so and ``samples.jsonl`` keeps every sample
    scored so far; ``config.resume`` (a run directory) finishes such a run, keeping
    its records and generating only the missing ones. ``backend``: an already open
    backend to use (and leave open), e.g. one engine shared by a test session; by
    default one is built from config when the first uncached request needs it.
    """
    previous: dict[str, Any] = resuming.load_run(Path(config.resume)) if config.resume else {}
    if previous.get("status") == "complete":
        return RunResult(Path(config.resume), previous.get("metrics") or {}, config.limit, previous.get("memory"))
    backends.get(config.backend)  # an unknown backend is named ("did you mean") before the model is looked for
    if not config.resume:
        check_output_dir(config.output_dir)
    model = resolve_model(config.model, config.backend)
    tasks = load_tasks(config, model)
    backend_kwargs(config)  # fail on a bad backend flag before anything is written
    check_constrained_decoding(config, tasks)
    if config.resume:
        run_dir = Path(config.resume)
    else:
        run_dir = Path(config.output_dir) / (config.run_id or new_run_id(model.name))
        if run_dir.exists():
            raise UsageError(f"run directory already exists: {run_dir} (choose another --run-id)")
    cached = cached_backend(config, model, backend)  # a cache that cannot be used stops the run here
    header = describe_run(config, model, tasks)
    if "backend" in previous:
        header["backend"] = previous["backend"]
    started = previous.get("started_at", time.time())
    if config.resume:
        header["resumed_at"] = [*previous.get("resumed_at", []), time.time()]
    kept = {resuming.record_key(d): resuming.record_from_dict(d) for d in resuming.repair_samples(run_dir)}
    owned = backend is None
    monitor = MemoryMonitor().start()  # the baseline is read before any model loads

    def watch(inner) -> None:
        if hasattr(inner, "kv_cache_usage"):
            monitor.probes["kv_cache_usage"] = inner.kv_cache_usage

    def backend_opened(inner) -> None:
        header["backend"] = inner.describe()
        watch(inner)
        writer.write_run({**header, "status": "running", "started_at": started})

    if backend is not None:
        watch(backend)

    cached.on_open = backend_opened
    with (resuming.AppendWriter(run_dir) if config.resume else RunWriter(run_dir)) as writer:
        writer.write_run({**header, "status": "running", "started_at": started})
        if announce is not None:  # once the directory is this run's own
            sizes = ", ".join(f"{name} ({info['num_samples']} samples)" for name, info in header["tasks"].items())
            verb = "resuming" if config.resume else "results in"
            announce(f"evalsuite: {sizes} on {model.name} with {config.backend}; {verb} {run_dir}")
        resuming.kill_point("started")
        metrics: dict[str, Any] = {}
        all_records: list[SampleRecord] = []
        run_start = time.perf_counter()
        try:
            for task in tasks:
                requests = build_requests(task, config)
                done = [kept[k] for k in ((q.task, q.sample_id, q.repeat) for q in requests) if k in kept]
                todo = [q for q in requests if (q.task, q.sample_id, q.repeat) not in kept]
                hits_before = cached.hits
                cached.open_if_needed(todo)
                new, wall_s = generate(task, todo, cached, writer, config.batch_size, progress)
                records = in_request_order(requests, done, new)
                all_records.extend(records)
                metrics[task.name] = aggregate(task, records, wall_s, timed=new)
                metrics[task.name]["performance"].update(
                    cache_hits=cached.hits - hits_before, resumed_records=len(done))
                if task.write_artifacts is not None:
                    task.write_artifacts(records, run_dir)
        except BaseException as e:
            # Written before the engine is shut down, so a stop that runs out of time
            # still leaves the run's status on disk.
            writer.write_run({**header, **ending_status(e), "started_at": started,
                              "finished_at": time.time(), "metrics": metrics})
            if lifecycle.stopping():
                # A stop signal: end the children now. vLLM's own shutdown sends SIGTERM,
                # which its engine core and workers ignore, and waits 5 s before SIGKILL.
                lifecycle.stop_children(grace_s=1.0)
            raise
        finally:
            measured = monitor.stop()
            if owned and cached.opened:
                cached.inner.close()
            cached.close()
        header["performance"] = performance(all_records, time.perf_counter() - run_start)
        header["memory"] = memory_report(measured, model, config, header.get("backend"))
        header["cache"] = {"enabled": config.cache, "path": str(default_path()) if config.cache else None,
                           "identity_sha256": cached.identity or None, "hits": cached.hits,
                           "misses": cached.misses}
        resuming.kill_point("final_write")
        writer.write_run({**header, "status": "complete", "started_at": started,
                          "finished_at": time.time(), "metrics": metrics})
    return RunResult(run_dir, metrics, config.limit, header["memory"])
