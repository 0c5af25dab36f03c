"""Suites: several tasks, each with its own generation settings, in one YAML file.

A suite names a model, a backend and its engine settings once, and lists task
entries; each entry becomes one :class:`~evalsuite.config.RunConfig` (one task
per run, because sampling settings are per run). ``evalsuite run --suite FILE``
runs them all, sharing one engine between entries whose engine settings agree,
and writes ``<output_dir>/<suite_run_id>/<entry id>/`` plus ``suite.json``.
``evalsuite report`` and ``evalsuite compare`` read such a directory as one run.

Format (every key but ``tasks`` optional)::

    name: smoke
    label: null                  # the suite's name in reports (default: derived from what differs)
    model: null                  # a local directory or hub id; null: the embedded model
    backend: vllm
    data_dir: null               # else EVALSUITE_DATA_DIR
    seed: 0
    batch_size: null             # requests per generate call, batch-only backends (hf); null: 256
    max_error_rate: null
    backend_args: {}             # e.g. {base_urls: [http://...], max_concurrency: 8}
    engine:                      # EngineConfig fields; other engine arguments under extra
      tensor_parallel_size: 1
      max_model_len: 8192
      extra: {}
    defaults:                    # task settings every entry starts from
      limit: 10
    tasks:
      - name: gsm8k              # a registered task
        id: gsm8k-fewshot        # run directory name; default: name (must be unique)
        limit: 20
        num_fewshot: 5
        max_tokens: 256
        temperature: 0.0
        top_p: 1.0
        seed: 0
        system_prompt: null
        num_samples: null        # generations per sample (pass@k)
        allow_unsandboxed: false
        args: {prompt: fewshot}  # the task factory's own arguments
        engine: {}               # engine overrides for this entry (runs on its own engine)
        optional: false          # true: skipped, with a note, when the task is not installed
"""

from __future__ import annotations

import difflib
import hashlib
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from evalsuite.config import EngineConfig, RunConfig
from evalsuite.errors import UsageError
from evalsuite.pipeline import lifecycle

SUITE_FILE = "suite.json"

_SUITE_KEYS = {"name", "label", "description", "model", "backend", "data_dir", "seed", "batch_size",
               "max_error_rate", "backend_args", "engine", "defaults", "tasks"}
_ENTRY_KEYS = {"name", "id", "limit", "num_fewshot", "max_tokens", "temperature", "top_p", "seed",
               "system_prompt", "num_samples", "allow_unsandboxed", "args", "engine", "optional"}
_ENGINE_KEYS = {f.name for f in fields(EngineConfig)}


@dataclass(frozen=True)
class Suite:
    """A loaded suite: its ``name``, the file it came from, one RunConfig per
    entry (``run_id`` set to the entry id) and the optional entries skipped
    because their task is not installed; ``label``: its name in reports."""

    name: str
    path: Path
    configs: tuple[RunConfig, ...]
    skipped: tuple[str, ...] = ()
    description: str = ""
    label: str | None = None


def _check_keys(where: str, given: Mapping[str, Any], allowed: set[str]) -> None:
    for key in given:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), sorted(allowed), n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise UsageError(f"{where}: unknown key '{key}'{hint}; allowed: {', '.join(sorted(allowed))}")


def _mapping(where: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UsageError(f"{where} must be a mapping, got {type(value).__name__}")
    return value


FIX = "fix the suite file given to --suite"


def _engine(path: Path, where: str, base: Mapping[str, Any], override: Mapping[str, Any]) -> EngineConfig:
    from evalsuite.schemas import EngineSettings, check

    _check_keys(f"{path}: {where}", override, _ENGINE_KEYS)
    merged = {**base, **override}
    merged["extra"] = {**_mapping(f"{path}: engine.extra", base.get("extra")),
                       **_mapping(f"{path}: {where}.extra", override.get("extra"))}
    return EngineConfig(**check(EngineSettings, merged, str(path), FIX, at=where).model_dump())


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        raise UsageError(f"suite file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise UsageError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    except UnicodeDecodeError as err:
        raise UsageError(f"{path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start}); "
                         f"{FIX}") from None
    except RecursionError:
        raise UsageError(f"{path}: nested too deeply to read; {FIX}") from None
    except OSError as err:
        raise UsageError(f"cannot read the suite file {path}: {err.strerror or err}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: a suite is a mapping with a 'tasks' list")
    return data


# Run flags that place the suite's replicas (where it runs, not what it computes).
REPLICA_OVERRIDES = ("ray_address", "replica_timeout", "data_parallel_size")


def _suite_defaults(path: Path, suite: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The suite's ``defaults`` (entry settings) and ``engine`` mappings, checked."""
    from evalsuite.schemas import TaskEntry, check

    defaults = _mapping(f"{path}: defaults", suite.defaults)
    _check_keys(f"{path}: defaults", defaults, _ENTRY_KEYS - {"name", "id", "optional"})
    check(TaskEntry, defaults, str(path), FIX, at="defaults")
    engine_base = _mapping(f"{path}: engine", suite.engine)
    _check_keys(f"{path}: engine", engine_base, _ENGINE_KEYS)
    _engine(path, "engine", {}, engine_base)
    return defaults, engine_base


def _entry_config(path: Path, i: int, entry: Any, entry_id: str, suite: Any, over: Mapping[str, Any], backend: str,
                  backend_args: Mapping[str, Any], engine_base: Mapping[str, Any]) -> RunConfig:
    """The RunConfig of task entry ``i``: its own settings over the suite's, and the
    command line's ``over`` (model, data_dir, limit, label) over both."""
    args = entry.args or {}
    name = entry.name
    return RunConfig(
        tasks=(name,),
        model=over.get("model", suite.model),
        backend=backend,
        limit=over.get("limit", entry.limit),
        num_fewshot=entry.num_fewshot,
        data_dir=over.get("data_dir", suite.data_dir),
        max_tokens=entry.max_tokens,
        temperature=entry.temperature,
        top_p=entry.top_p,
        seed=entry.seed if entry.seed is not None else suite.seed,
        system_prompt=entry.system_prompt,
        batch_size=suite.batch_size,
        run_id=entry_id,
        engine=_engine(path, f"tasks[{i}].engine", engine_base, _mapping(f"{path}: tasks[{i}]: engine", entry.engine)),
        task_args={name: args} if args else {},
        num_samples=entry.num_samples,
        allow_unsandboxed=entry.allow_unsandboxed,
        backend_args={k: tuple(v) if k == "base_urls" else v for k, v in backend_args.items()},
        max_error_rate=suite.max_error_rate,
        label=over.get("label", suite.label),
    )


def read_suite(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Suite:
    """Reads and checks a suite file.

    ``overrides``: suite-level values that replace the file's (``model``,
    ``data_dir``, ``backend``, ``label``) or every entry's ``limit`` (``limit``); ``None``
    values are ignored. Output paths are not set here: :func:`run_suite` does that.

    Every value is checked against :mod:`evalsuite.schemas` (``SuiteFile``,
    ``TaskEntry``, ``EngineSettings``). Raises UsageError naming the file and key
    for a missing or malformed file, an unknown key (with a "did you mean"), a
    value of the wrong type or range, an unknown backend, an unknown task that is
    not ``optional``, an entry id that is not a plain name, or duplicate entry ids.
    """
    from evalsuite.paths import check_name
    from evalsuite.registry import backends
    from evalsuite.registry import tasks as task_registry
    from evalsuite.schemas import SuiteFile, TaskEntry, check

    path = Path(path)
    data = _read_yaml(path)
    _check_keys(str(path), data, _SUITE_KEYS)
    suite = check(SuiteFile, data, str(path), FIX)
    over = {k: v for k, v in (overrides or {}).items() if v is not None}
    if not isinstance(suite.tasks, list) or not suite.tasks:
        raise UsageError(f"{path}: 'tasks' must be a non-empty list of task entries")
    defaults, engine_base = _suite_defaults(path, suite)
    backend = over.get("backend", suite.backend)
    backends.get(backend)  # an unknown backend: "did you mean"
    backend_args = suite.backend_args.model_dump(exclude_none=True) if suite.backend_args else {}
    backend_args.update({k: over[k] for k in REPLICA_OVERRIDES if k in over})

    known = set(task_registry.names())
    configs: list[RunConfig] = []
    skipped: list[str] = []
    seen: set[str] = set()
    for i, raw in enumerate(suite.tasks):
        if isinstance(raw, str):
            raw = {"name": raw}
        where = f"{path}: tasks[{i}]"
        raw = _mapping(where, raw)
        _check_keys(where, raw, _ENTRY_KEYS)
        entry = check(TaskEntry, {**defaults, **raw}, str(path), FIX, at=f"tasks[{i}]")
        name = entry.name
        if not name:
            raise UsageError(f"{where}: every task entry needs a 'name'")
        if name not in known:
            if entry.optional:
                skipped.append(name)
                continue
            task_registry.get(name)  # raises with "did you mean"
        entry_id = check_name(entry.id if entry.id is not None else name, f"{where}: id")
        if entry_id in seen:
            raise UsageError(f"{where}: duplicate entry id '{entry_id}' (give each entry its own 'id')")
        seen.add(entry_id)
        configs.append(_entry_config(path, i, entry, entry_id, suite, over, backend, backend_args, engine_base))
    if not configs:
        raise UsageError(f"{path}: none of the suite's tasks is installed (skipped: {', '.join(skipped)})")
    return Suite(name=str(suite.name or path.stem), path=path, configs=tuple(configs),
                 skipped=tuple(skipped), description=str(suite.description or ""),
                 label=configs[0].label)


def load_suite(path: str | Path) -> list[RunConfig]:
    """One RunConfig per task entry of the suite file at ``path`` (see the module
    docstring for the format). Raises UsageError as :func:`read_suite` does."""
    return list(read_suite(path).configs)


def engine_group(config: RunConfig) -> str:
    """A key equal for configs that can share one backend instance."""
    e = config.engine
    return json.dumps([config.model, config.backend, e.tensor_parallel_size, e.max_model_len,
                       e.gpu_memory_utilization, e.dtype, e.enforce_eager, dict(e.extra),
                       dict(config.backend_args)], sort_keys=True, default=str)


def peak_memory(memories: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The suite's memory line: the largest host RSS and GPU peaks over its runs, and
    the KV-cache figures of the run whose cache was fullest."""
    found = [m for m in memories if m]
    if not found:
        return None

    def peak(key: str) -> float | None:
        values = [m[key] for m in found if m.get(key) is not None]
        return max(values) if values else None

    caches = [m["kv_cache"] for m in found if m.get("kv_cache")]
    kv = max(caches, key=lambda c: c.get("peak_usage_fraction") or 0.0) if caches else None
    return {"host_peak_rss_gib": peak("host_peak_rss_gib"), "peak_gpu_mem_gib": peak("peak_gpu_mem_gib"),
            "kv_cache": kv}


def run_suite(path: str | Path, args: Any, backend: Any = None) -> int:
    """Runs every entry of a suite; the handler of ``evalsuite run --suite FILE``.

    ``args`` is the ``run`` command's namespace: ``--model``, ``--data-dir``,
    ``--limit`` and ``--label`` override the suite's values when given, as do
    ``--ray-address``, ``--replica-timeout`` and ``--data-parallel-size`` its
    ``backend_args``; ``--no-cache`` bypasses the
    response cache (a real rerun, e.g. for a regression gate); the suite's directory is
    ``<--output-dir>/<--run-id or a new id>/``. Entries with the same model,
    backend and engine settings share one engine, opened once, and one request queue
    (:func:`evalsuite.pipeline.runner.run_many`): all their pending requests go to the engine at once. Returns the exit
    code: 1 when the share of failed requests over the suite exceeds the suite's
    ``max_error_rate`` (or ``--max-error-rate``), else 0. ``backend``: an already
    open backend to run every entry on (and leave open), e.g. a test session's engine.
    """
    from evalsuite.models import resolve_model
    from evalsuite.paths import claim_dir
    from evalsuite.pipeline.runner import backend_kwargs, load_tasks
    from evalsuite.results.store import write_json_atomic
    from evalsuite.results.summary import error_exit_code, format_summary

    suite = read_suite(path, {"model": getattr(args, "model", None), "data_dir": getattr(args, "data_dir", None),
                              "limit": getattr(args, "limit", None), "label": getattr(args, "label", None),
                              **{k: getattr(args, k, None) for k in REPLICA_OVERRIDES}})
    for name in suite.skipped:
        print(f"evalsuite: suite {suite.name}: task '{name}' is not installed; skipped", file=sys.stderr)
    suite_dir = _suite_dir(suite, args)
    cache = not getattr(args, "no_cache", False)
    configs = [replace(c, output_dir=suite_dir, cache=cache) for c in suite.configs]
    for config in configs:  # every entry's data and arguments are checked before any engine starts
        load_tasks(config, resolve_model(config.model, config.backend))
        backend_kwargs(config)
    claim_dir(suite_dir, "suite directory")
    text = suite.path.read_bytes()
    header = {"schema_version": 1, "suite": suite.name, "label": suite.label, "description": suite.description,
              "file": str(suite.path), "sha256": hashlib.sha256(text).hexdigest(),
              "runs": [c.run_id for c in configs], "skipped": list(suite.skipped), "started_at": time.time()}
    write_json_atomic(suite_dir / SUITE_FILE, {**header, "status": "running"})

    stopped = lambda why: write_json_atomic(suite_dir / SUITE_FILE, {**header, "status": "interrupted",
                                                                  "error": why, "finished_at": time.time()})
    try:
        with lifecycle.last_words(stopped):  # a hard stop cuts the except clause below short
            metrics, memories = _run_groups(configs, backend, progress=not getattr(args, "no_progress", False))
    except BaseException as e:
        status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
        write_json_atomic(suite_dir / SUITE_FILE, {**header, "status": status, "finished_at": time.time()})
        raise
    write_json_atomic(suite_dir / SUITE_FILE, {**header, "status": "complete", "finished_at": time.time()})
    print(format_summary(metrics, peak_memory(memories)))
    print(f"\nresults: {suite_dir}")
    limits = [c.max_error_rate for c in configs if c.max_error_rate is not None]
    cli_limit = getattr(args, "max_error_rate", None)
    return error_exit_code(metrics, cli_limit if cli_limit is not None else (min(limits) if limits else None))


def _suite_dir(suite: Suite, args: Any) -> Path:
    """``<--output-dir>/<--run-id or a new id>``; UsageError when it exists already."""
    from evalsuite.models import resolve_model
    from evalsuite.paths import check_name, check_output_dir
    from evalsuite.results.store import new_run_id

    output_dir = check_output_dir(getattr(args, "output_dir", None) or "results")
    run_id = getattr(args, "run_id", None)
    first_model = resolve_model(suite.configs[0].model, suite.configs[0].backend)
    suite_id = check_name(run_id, "--run-id") if run_id is not None else new_run_id(f"{suite.name}-{first_model.name}")
    suite_dir = output_dir / suite_id
    if suite_dir.exists():
        raise UsageError(f"suite directory already exists: {suite_dir} (choose another --run-id)")
    return suite_dir


def _run_groups(configs: Sequence[RunConfig], backend: Any, progress: bool,
                ) -> tuple[dict[str, Any], list[dict[str, Any] | None]]:
    """Runs the entries, one engine (``backend``, or one opened per group of entries
    with the same engine settings) and one request queue per group. Returns the
    suite's metrics (a name repeated across entries is prefixed ``<run_id>/``) and
    each entry's memory report."""
    from evalsuite.models import resolve_model
    from evalsuite.pipeline.runner import open_backend, run_many

    announce = lambda line: print(line, file=sys.stderr)
    metrics: dict[str, Any] = {}
    memories: list[dict[str, Any] | None] = []
    groups: dict[str, list[RunConfig]] = {}
    for config in configs:
        groups.setdefault(engine_group(config), []).append(config)
    for group in groups.values():
        shared = backend if backend is not None else open_backend(
            group[0], resolve_model(group[0].model, group[0].backend))
        try:
            for config, result in zip(group, run_many(group, progress=progress, announce=announce, backend=shared)):
                memories.append(result.memory)
                metrics.update({f"{config.run_id}/{k}" if k in metrics else k: v for k, v in result.metrics.items()})
        finally:
            if backend is None:
                shared.close()
    return metrics, memories
