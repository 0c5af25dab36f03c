"""A run as a straight line of small stages.

``prepare`` (resolve_model -> load_tasks -> build_requests) -> ``generate_and_score``
(one streaming engine queue: generate -> extract + score -> write, concurrently) ->
``finish`` (aggregate -> run.json). Every pending request of every task (and of every
run sharing the engine, :func:`run_many`) goes to the engine at once; each
generation is scored by a stage thread beside the engine and appended to
``samples.jsonl`` as soon as it is scored, so that file is in completion order and
a kill loses no scored sample. Misconfiguration raises
:class:`~evalsuite.errors.UsageError` before the engine starts; a failed request
is recorded on its sample and the run goes on.

Generation goes through the response cache (:mod:`evalsuite.results.cache`): the engine
starts only when some request is not cached. A resumed run (:mod:`evalsuite.results.resume`)
keeps the records its directory already holds and generates only the rest.
"""

from __future__ import annotations

import hashlib
import signal
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from evalsuite.backends.queue import stream
from evalsuite.config import RunConfig
from evalsuite.errors import UsageError
from evalsuite.metrics.aggregate import accuracy, latency_summary, throughput
from evalsuite.metrics.memory import MemoryMonitor, estimate_for_model
from evalsuite.models import ModelRef, model_fingerprint, resolve_model
from evalsuite.paths import check_output_dir
from evalsuite.pipeline import guard, lifecycle
from evalsuite.pipeline.stages import BatchingWorker
from evalsuite.provenance import git_revision, host_description, library_versions
from evalsuite.registry import backends
from evalsuite.results import resume as resuming
from evalsuite.results.cache import (
    CachedBackend,
    chat_template_sha256,
    default_path,
    open_cache,
    run_identity,
)
from evalsuite.results.store import RunWriter, new_run_id
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
    UsageError, as does an unknown backend name, or a value the backend's
    ``check_settings(kwargs)`` (where it has one) refuses.
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
    kwargs = {k: v for k, v in {**common, **config.backend_args}.items() if k in accepted}
    check = getattr(factory, "check_settings", None)  # a backend's own checks that need no engine
    if check is not None:
        check(kwargs)
    return kwargs


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
    (:func:`evalsuite.pipeline.guard.score_guarded`): a scorer that raises is an error on
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


def performance(records: Sequence[SampleRecord], wall_s: float) -> dict[str, Any]:
    """Throughput over ``wall_s`` seconds (:func:`evalsuite.metrics.aggregate.throughput`) and
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
    the KV bytes per token from ``config.json`` (:mod:`evalsuite.metrics.memory`), and the
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


def replica_failures(cached: CachedBackend, earlier: Sequence[dict] | None = None, skip: int = 0) -> dict[str, Any]:
    """``{"replica_failures": [...]}`` for ``run.json`` when the run's backend runs
    replicas (``--data-parallel-size``, ``--ray-address``): each replica lost or
    abandoned, with its reason and the requests that went back on the queue, after
    those an ``earlier`` (resumed) part of the run recorded, less the first ``skip``
    (a shared backend's losses during earlier runs); empty when there are neither
    replicas nor earlier records."""
    failures = getattr(cached.inner, "replica_failures", None) if cached.opened else None
    failures = failures[skip:] if failures is not None else None
    if failures is None and earlier is None:
        return {}
    return {"replica_failures": [*(earlier or []), *(failures or [])]}


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
    files (:func:`evalsuite.results.cache.run_identity`), so a fully cached run never starts
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


@dataclass
class RunState:
    """One run's share of a shared engine queue: what it asks for, what it already has,
    where it writes, and what it scored so far (filled in by the scoring stage)."""

    config: RunConfig
    model: ModelRef
    tasks: dict[str, Task]
    requests: dict[str, list[GenerationRequest]]
    kept: dict[tuple[str, str, int], SampleRecord]
    cached: CachedBackend
    writer: RunWriter
    header: dict[str, Any]
    started: float
    monitor: MemoryMonitor
    new: dict[str, list[SampleRecord]] = field(default_factory=dict)
    last_scored: dict[str, float] = field(default_factory=dict)
    hits: Counter = field(default_factory=Counter)
    bars: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    measured: dict[str, Any] | None = None
    start: float = 0.0  # perf_counter when the queue started generating
    remaining: int = 0  # requests of this run not yet scored
    result: RunResult | None = None  # set when the run is finished
    failures_before: int = 0  # replica losses a shared backend had before this run
    earlier_failures: list | None = None  # those a resumed run's earlier part recorded

    def record_replica_failures(self) -> None:
        """Puts the replicas lost so far into the header (:func:`replica_failures`)."""
        self.header.update(replica_failures(self.cached, self.earlier_failures, skip=self.failures_before))

    def todo(self) -> list[GenerationRequest]:
        """The requests that have no record yet, task by task in request order."""
        return [q for reqs in self.requests.values() for q in reqs
                if (q.task, q.sample_id, q.repeat) not in self.kept]

    def write_status(self, status: str, **extra: Any) -> None:
        self.writer.write_run({**self.header, "status": status, "started_at": self.started, **extra})

    def backend_opened(self, inner) -> None:
        self.header["backend"] = inner.describe()
        self.watch(inner)
        self.write_status("running")

    def watch(self, inner) -> None:
        if hasattr(inner, "kv_cache_usage"):
            self.monitor.probes["kv_cache_usage"] = inner.kv_cache_usage

    def stop_monitor(self) -> dict[str, Any]:
        if self.measured is None:
            self.measured = self.monitor.stop()
        return self.measured


def run_directory(config: RunConfig, model: ModelRef) -> Path:
    """Where the run writes: ``--resume``'s directory, or a new ``<output_dir>/<run_id>``
    (UsageError if that exists)."""
    if config.resume:
        return Path(config.resume)
    run_dir = Path(config.output_dir) / (config.run_id or new_run_id(model.name))
    if run_dir.exists():
        raise UsageError(f"run directory already exists: {run_dir} (choose another --run-id)")
    return run_dir


def prepare(config: RunConfig, announce=None, backend=None) -> RunState | RunResult:
    """Checks the configuration, builds the tasks and opens the run directory.

    Returns a :class:`RunResult` straight away for a ``--resume`` of a complete run.
    Raises UsageError for bad configuration before any engine starts or anything is
    written; ``run.json`` says ``running`` once this returns a state.
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
    run_dir = run_directory(config, model)
    cached = cached_backend(config, model, backend)  # a cache that cannot be used stops the run here
    header = describe_run(config, model, tasks)
    if "backend" in previous:
        header["backend"] = previous["backend"]
    if config.resume:
        header["resumed_at"] = [*previous.get("resumed_at", []), time.time()]
    kept = {resuming.record_key(d): resuming.record_from_dict(d) for d in resuming.repair_samples(run_dir)}
    failures_before = len(getattr(backend, "replica_failures", None) or [])  # a shared backend's earlier losses
    monitor = MemoryMonitor().start()  # the baseline is read before any model loads
    writer = resuming.AppendWriter(run_dir) if config.resume else RunWriter(run_dir)
    state = RunState(config, model, {t.name: t for t in tasks}, {t.name: build_requests(t, config) for t in tasks},
                     kept, cached, writer, header, previous.get("started_at", time.time()), monitor,
                     failures_before=failures_before, earlier_failures=previous.get("replica_failures"))
    if backend is not None:
        state.watch(backend)
    cached.on_open = state.backend_opened
    state.write_status("running")
    if announce is not None:  # once the directory is this run's own
        sizes = ", ".join(f"{name} ({info['num_samples']} samples)" for name, info in header["tasks"].items())
        verb = "resuming" if config.resume else "results in"
        announce(f"evalsuite: {sizes} on {model.name} with {config.backend}; {verb} {run_dir}")
    resuming.kill_point("started")
    return state


def score_and_write(batch: Sequence[tuple[RunState, GenerationRequest, Generation]]) -> None:
    """The scoring stage's step: extract + score a micro-batch of finished generations
    (grouped by run and task, so a task's batch scorer sees them together), append
    each record to its run's ``samples.jsonl`` and advance its task's progress bar.
    A run whose last sample this was is finished at once (:func:`finish`)."""
    groups: dict[tuple[int, str], list[tuple[RunState, GenerationRequest, Generation]]] = {}
    for item in batch:
        groups.setdefault((id(item[0]), item[1].task), []).append(item)
    for items in groups.values():
        state, task = items[0][0], items[0][0].tasks[items[0][1].task]
        resuming.kill_point("scoring")
        records = state.writer.append(score(task, [r for _, r, _ in items], [g for _, _, g in items]))
        resuming.kill_point("batch_written")
        state.new.setdefault(task.name, []).extend(records)
        state.last_scored[task.name] = time.perf_counter()
        if task.name in state.bars:
            state.bars[task.name].update(len(records))
        state.remaining -= len(records)
        if state.remaining == 0:  # this run is done while the engine works for the others
            state.result = finish(state)


def shared_backend(states: Sequence[RunState]):
    """The one backend every run with an uncached request streams through, opened now
    (engine start-up is not timed as generation); None when everything is cached."""
    needing = [s for s in states if s.cached.misses]
    if not needing:
        return None
    backend = needing[0].cached.backend()
    for state in needing[1:]:
        if state.cached.inner is None:
            state.cached.open_backend = lambda: backend
        if state.cached.backend() is not backend:
            raise RuntimeError("runs that share one engine queue need one backend")
    return backend


def open_bars(states: Sequence[RunState], todo: Sequence[Sequence[GenerationRequest]], progress: bool) -> None:
    """One progress bar per task of every run, advancing per scored sample."""
    if not progress:
        return
    from tqdm import tqdm

    for state, requests in zip(states, todo):
        counts = Counter(q.task for q in requests)
        state.bars = {name: tqdm(total=counts[name], desc=name, unit="sample", dynamic_ncols=True)
                      for name in state.tasks}


def generate_and_score(states: Sequence[RunState], progress: bool) -> None:
    """Generation and scoring of every pending request of every run, as one queue.

    Cached generations go to the scoring stage at once; every other request of every
    run is streamed through the shared backend (:func:`evalsuite.backends.queue.stream`),
    each generation stored in its run's response cache as it arrives and handed to a
    :class:`~evalsuite.pipeline.stages.BatchingWorker` that scores and writes it while the
    engine goes on; a run is finished as soon as its last sample is scored. Each
    state's ``start`` is the ``time.perf_counter()`` at which generation started (after
    the engine was up). Raises whatever the backend or the scoring stage raised.
    """
    todo = [s.todo() for s in states]
    cached_items, pending = [], []
    for state, requests in zip(states, todo):
        hits, misses = state.cached.split(requests)
        state.hits = Counter(requests[i].task for i in hits)
        cached_items += [(state, requests[i], g) for i, g in sorted(hits.items())]
        pending += [(state, requests[i]) for i in misses]
    backend = shared_backend(states)
    open_bars(states, todo, progress)
    start = time.perf_counter()
    for state, requests in zip(states, todo):
        state.start, state.remaining = start, len(requests)
    worker = BatchingWorker(score_and_write, name="evalsuite-scoring")
    try:
        for item in cached_items:
            worker.put(item)
        if pending:
            with closing(stream(backend, [r for _, r in pending], states[0].config.batch_size)) as finished:
                for index, generation in finished:
                    state, request = pending[index]
                    state.cached.store(request, generation)
                    worker.put((state, request, generation))
        worker.close()
    except BaseException:
        try:  # what was generated is still scored and written (a second interrupt drops it)
            worker.close()
        except BaseException:  # noqa: BLE001 -- the first exception is the one raised
            worker.abandon()
        raise
    finally:
        for state in states:
            for bar in state.bars.values():
                bar.close()


def finish(state: RunState) -> RunResult:
    """Aggregates each task over its kept and new records (in request order), writes
    the task's artifacts and the final ``run.json``. A task's ``wall_s`` runs from the
    queue's start (``state.start``) to its last sample scored."""
    start = state.start
    all_records: list[SampleRecord] = []
    for name, task in state.tasks.items():
        requests = state.requests[name]
        done = [state.kept[k] for k in ((q.task, q.sample_id, q.repeat) for q in requests) if k in state.kept]
        new = state.new.get(name, [])
        records = in_request_order(requests, done, new)
        all_records.extend(records)
        state.metrics[name] = aggregate(task, records, state.last_scored.get(name, start) - start, timed=new)
        state.metrics[name]["performance"].update(cache_hits=state.hits[name], resumed_records=len(done))
        if task.write_artifacts is not None:
            task.write_artifacts(records, state.writer.run_dir)
    measured = state.stop_monitor()
    config, header = state.config, state.header
    header["performance"] = performance(all_records, time.perf_counter() - start)
    header["memory"] = memory_report(measured, state.model, config, header.get("backend"))
    header["cache"] = {"enabled": config.cache, "path": str(default_path()) if config.cache else None,
                       "identity_sha256": state.cached.identity or None, "hits": state.cached.hits,
                       "misses": state.cached.misses}
    state.record_replica_failures()
    resuming.kill_point("final_write")
    state.write_status("complete", finished_at=time.time(), metrics=state.metrics)
    return RunResult(state.writer.run_dir, state.metrics, config.limit, header["memory"])


def run_many(configs: Sequence[RunConfig], progress: bool = True, announce=None, backend=None) -> list[RunResult]:
    """Runs several configs on one engine queue: every pending request of every run
    goes to the engine at once (a suite's entries that share an engine).

    Each run writes its own directory as :func:`run` does. ``backend``: an open
    backend to use and leave open; by default one is built from the first config when
    the first uncached request needs it, and closed at the end. If the runs fail, every
    unfinished run's ``run.json`` says ``failed`` (``interrupted`` for Ctrl-C or a stop
    signal, :func:`ending_status`) and the exception propagates.
    """
    prepared: list[RunState | RunResult] = []
    states: list[RunState] = []
    results: dict[int, RunResult] = {}
    hard_stop = lambda why: mark_unfinished([p for p in prepared if isinstance(p, RunState)], results,
                                            {"status": "interrupted", "error": why})
    try:
        with lifecycle.last_words(hard_stop):
            try:
                for config in configs:
                    prepared.append(prepare(config, announce, backend))
                    states = [p for p in prepared if isinstance(p, RunState)]
                generate_and_score(states, progress)
                for state in states:  # the runs with nothing left to generate finish here
                    results[id(state)] = state.result or finish(state)
            except BaseException as e:
                # Written before the engine is shut down, so a stop that runs out of time
                # still leaves the run's status on disk.
                mark_unfinished(states, results, ending_status(e))
                if lifecycle.stopping():
                    # A stop signal: end the children now. vLLM's own shutdown sends SIGTERM,
                    # which its engine core and workers ignore, and waits 5 s before SIGKILL.
                    lifecycle.stop_children(grace_s=1.0)
                raise
            finally:
                for state in states:
                    state.stop_monitor()
                if backend is None:
                    for inner in {id(s.cached.inner): s.cached.inner for s in states if s.cached.opened}.values():
                        inner.close()
                for state in states:
                    state.cached.close()
    finally:
        for state in states:
            state.writer.close()
    return [results[id(p)] if isinstance(p, RunState) else p for p in prepared]


def mark_unfinished(states: Sequence[RunState], results: dict[int, RunResult], status: dict[str, Any]) -> None:
    """Writes ``status`` (:func:`ending_status`) into the ``run.json`` of every run of
    ``states`` that did not finish (a finished run stays complete)."""
    for state in states:
        if id(state) not in results and state.result is None:
            state.record_replica_failures()
            state.write_status(**status, finished_at=time.time(), metrics=state.metrics)


def run(config: RunConfig, progress: bool = True, announce=None, backend=None) -> RunResult:
    """Runs every task of ``config`` and writes ``<output_dir>/<run_id>/``.

    Stages: ``prepare`` (check, load tasks, open the directory) -> ``generate_and_score``
    (one streaming engine queue for every task; each sample extracted, scored and
    appended to ``samples.jsonl`` as its generation finishes, so the file is in
    completion order) -> ``finish`` (aggregate in request order, artifacts, ``run.json``).

    Raises UsageError for bad configuration (before loading the model). If the run
    is interrupted, ``run.json`` says so and ``samples.jsonl`` keeps every sample
    scored so far; ``config.resume`` (a run directory) finishes such a run, keeping
    its records and generating only the missing ones. ``backend``: an already open
    backend to use (and leave open), e.g. one engine shared by a test session; by
    default one is built from config when the first uncached request needs it.
    """
    return run_many([config], progress, announce, backend)[0]
