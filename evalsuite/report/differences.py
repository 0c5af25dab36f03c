"""How runs differ: in what produced them, and in their scores.

``report`` and ``compare`` both read runs through this module, so they name the
same differences and compute the same numbers:

- :func:`what_differs`: every config, model, task, provenance and environment
  field of ``run.json`` whose value is not the same in all runs (dtype, engine
  arguments, evalsuite revision, library versions, host and GPUs, data file
  hashes...). A difference in a task's version or data files makes the runs
  not comparable on that task (:attr:`Difference.not_comparable`).
- :func:`run_labels`: a short name per run: its ``--label`` (or a suite's
  ``label:``), else the model name followed by the config fields that differ
  (``SmolLM2-135M-Instruct · dtype=float32``). Run ids stay in the runs table.
- :func:`task_difference`: the paired difference of one task's scores between a
  baseline and a candidate, with its 95% interval and p-value
  (:func:`evalsuite.metrics.stats.paired_difference`), on the samples both runs scored.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from evalsuite.metrics.stats import PairedDifference, paired_difference

if TYPE_CHECKING:
    from evalsuite.report.build import RunData

ABSENT = object()  # a task field of a run that does not have the task
GROUPS = ("config", "model", "task", "data", "backend", "provenance", "environment")
# Config fields that say where a run is, not how it ran; the label is the run's name.
_CONFIG_SKIPPED = frozenset({"output_dir", "run_id", "tasks", "resume", "label", "data_dir", "model"})
# Backend description keys that are outcomes (KV cache size) or already in the config.
_BACKEND_SKIPPED = frozenset({"kv_cache", "replicas", "engine"})
LABEL_FIELDS = 3  # config fields named in a derived label at most
# Config fields that rarely explain a score: named in a label only after the others.
_LABEL_LAST = frozenset({"batch_size", "cache", "max_error_rate", "allow_unsandboxed"})


@dataclass(frozen=True)
class Difference:
    """One field whose value is not the same in every run.

    ``field``: its dotted path in ``run.json`` (config fields without the
    ``config.`` prefix, data files as ``tasks.<task>.data.<file name>``; a suite
    member's own value gets `` [entry id]``); ``group``: one of :data:`GROUPS`;
    ``values``: one per run, in the runs' order (``None``: not recorded,
    :data:`ABSENT`: the run does not have the task); ``not_comparable``: the
    tasks on which the runs cannot be compared because of this field (a task
    version or a data file hash).
    """

    field: str
    group: str
    values: tuple[Any, ...]
    not_comparable: tuple[str, ...] = ()

    @property
    def short(self) -> str:
        """The field in a word or two: ``engine.dtype`` -> ``dtype``,
        ``model.sha256`` -> ``model hash``, ``provenance.versions.vllm`` ->
        ``vllm version``, ``tasks.gsm8k.data.test.jsonl`` -> ``gsm8k data``."""
        name, _, entry = self.field.partition(" [")
        suffix = f" [{entry}" if entry else ""
        task = _task_of(name)
        if self.group == "model":
            short = {"model.name": "model", "model.sha256": "model hash"}.get(name, name.replace(".", " "))
        elif task is not None:
            rest = name[len(f"tasks.{task}."):]
            short = f"{task} data" if self.group == "data" else f"{task} {rest.rsplit('.', 1)[-1]}"
        elif name == "provenance.git_revision":
            short = "evalsuite revision"
        elif name.startswith("provenance.versions."):
            short = name.rsplit(".", 1)[-1] + " version"
        else:
            short = name.rsplit(".", 1)[-1]
        return short + suffix


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping) and value:
        for key, inner in value.items():
            _flatten(inner, f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix] = value


def _gpus(gpus: Any) -> Any:
    if not isinstance(gpus, list):
        return gpus
    if not gpus:
        return "none"
    return ", ".join(f"{g.get('name')} ({g.get('memory_gib')} GiB)" if isinstance(g, Mapping) else str(g)
                     for g in gpus)


def header_fields(header: Mapping[str, Any], task_keys: Mapping[str, str] | None = None) -> dict[str, tuple[str, Any]]:
    """The comparable fields of one ``run.json`` header: ``{field: (group, value)}``.

    ``task_keys`` renames the header's tasks to the keys the report uses (a
    suite entry's id). Data files are keyed by file name, so the same file read
    from another folder is the same field.
    """
    task_keys = task_keys or {}
    out: dict[str, tuple[str, Any]] = {}

    def put(group: str, flat: dict[str, Any]) -> None:
        out.update({name: (group, value) for name, value in flat.items()})

    config = {k: v for k, v in (header.get("config") or {}).items() if k not in _CONFIG_SKIPPED}
    flat: dict[str, Any] = {}
    _flatten(config, "", flat)
    put("config", flat)
    model = header.get("model") or {}
    put("model", {f"model.{k}": model.get(k) for k in ("name", "source", "sha256") if k in model})
    backend = header.get("backend") or {}
    flat = {}
    _flatten({k: v for k, v in backend.items() if k not in _BACKEND_SKIPPED}, "backend", flat)
    # Engine settings the backend reports beyond those the config asked for.
    asked = (header.get("config") or {}).get("engine") or {}
    for key, value in (backend.get("engine") or {}).items():
        if key not in asked or asked[key] != value:
            flat[f"backend.engine.{key}"] = value
    put("backend", flat)
    for name, info in (header.get("tasks") or {}).items():
        key = task_keys.get(name, name)
        info = info or {}
        out[f"tasks.{key}.version"] = ("task", info.get("version"))
        flat = {}
        _flatten({k: info.get(k) for k in ("source", "args", "num_samples", "repeats", "sampling") if k in info},
                 f"tasks.{key}", flat)
        put("task", flat)
        for path, digest in (info.get("data_files") or {}).items():
            out[f"tasks.{key}.data.{PurePath(path).name}"] = ("data", digest)
    provenance = header.get("provenance") or {}
    flat = {"provenance.git_revision": provenance.get("git_revision")}
    _flatten(provenance.get("versions") or {}, "provenance.versions", flat)
    put("provenance", flat)
    host = dict(provenance.get("host") or {})
    if "gpus" in host:
        host["gpus"] = _gpus(host["gpus"])
    flat = {}
    _flatten(host, "provenance.host", flat)
    put("environment", flat)
    return out


def run_fields(run: RunData) -> dict[str, tuple[str, Any]]:
    """:func:`header_fields` of a run; for a suite, a field on which member runs
    disagree is kept once per member as ``field [entry id]``."""
    members = [header_fields(h, keys) for h, keys in zip(run.headers, run.task_keys or [{}] * len(run.headers))]
    if len(members) == 1:
        return members[0]
    merged: dict[str, tuple[str, Any]] = {}
    names = list(dict.fromkeys(name for m in members for name in m))
    for name in names:
        values = [m[name] for m in members if name in m]
        if all(_same(v[1], values[0][1]) for v in values):
            merged[name] = values[0]
            continue
        for header, m in zip(run.headers, members):
            if name in m:
                entry = (header.get("config") or {}).get("run_id") or "?"
                merged[f"{name} [{entry}]"] = m[name]
    return merged


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


_TASK_FIELD = re.compile(r"tasks\.(.+?)\.(?:version|source|args|num_samples|repeats|sampling|data)(?:\.|$)")


def _task_of(name: str) -> str | None:
    """The task key a ``tasks.<key>.<field>`` name belongs to, or None."""
    found = _TASK_FIELD.match(name)
    return found.group(1) if found else None


def what_differs(runs: Sequence[RunData]) -> list[Difference]:
    """Every field (see :func:`header_fields`) whose value is not the same in all
    runs, grouped in the order of :data:`GROUPS`, then by field name.

    A task field is compared only between the runs that have the task. A task
    version or data file that differs (or is recorded in one run only) lists
    the task in ``not_comparable``.
    """
    fields = [run_fields(run) for run in runs]
    names = list(dict.fromkeys(name for f in fields for name in f))
    out = []
    for name in names:
        group = next(f[name][0] for f in fields if name in f)
        task = _task_of(name)
        values = []
        for run, f in zip(runs, fields):
            if name in f:
                values.append(f[name][1])
            elif task is not None and task not in run.metrics:
                values.append(ABSENT)
            else:
                values.append(None)
        present = [v for v in values if v is not ABSENT]
        if len(present) < 2 or all(_same(v, present[0]) for v in present):
            continue
        breaking = group == "data" or name.endswith(".version")
        out.append(Difference(name, group, tuple(values), (task,) if breaking and task else ()))
    return sorted(out, key=lambda d: (GROUPS.index(d.group), d.field))


def not_comparable(differences: Sequence[Difference]) -> dict[str, list[str]]:
    """``{task: [fields]}``: the tasks the runs cannot be compared on, and why."""
    out: dict[str, list[str]] = {}
    for d in differences:
        for task in d.not_comparable:
            out.setdefault(task, []).append(d.field)
    return out


_HASH = re.compile(r"[0-9a-f]{40,64}(-dirty)?")


def describe_value(value: Any, width: int = 0) -> str:
    """A field value as a cell: ``-`` when not recorded, ``(no such task)`` when
    absent, a hex digest (SHA-256, git commit) cut to 12 digits, JSON for lists
    and mappings; cut to ``width`` characters when given."""
    if isinstance(value, str) and _HASH.fullmatch(value):
        return value[:12] + ("-dirty" if value.endswith("-dirty") else "")
    if value is ABSENT:
        return "(no such task)"
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple, Mapping)):
        text = json.dumps(value, sort_keys=True, default=str)
    else:
        text = str(value)
    return text if not width or len(text) <= width else text[: width - 1] + "…"


def differing_names(differences: Sequence[Difference], limit: int = 6) -> str:
    """The differing fields in a few words (``dtype, vllm, hostname``), at most
    ``limit`` named, then ``and N more``; ``nothing recorded`` when none."""
    names = list(dict.fromkeys(d.short for d in differences))
    if not names:
        return "nothing recorded (same config, code, environment and data)"
    text = ", ".join(names[:limit])
    return text + (f" and {len(names) - limit} more" if len(names) > limit else "")


# --------------------------------------------------------------------------- labels

def given_label(run: RunData) -> str | None:
    """The label a run was given (``--label``, a suite's ``label:``; read by
    :func:`evalsuite.report.build.load_run`), or None."""
    return run.given_label or None


def _started(run: RunData) -> str | None:
    started = run.info("started_at")
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(started)) if isinstance(started, (int, float)) else None


def run_labels(runs: Sequence[RunData], differences: Sequence[Difference] | None = None) -> list[str]:
    """One short, unique label per run, never its generated id.

    A run's given label wins. Otherwise: the model name (with the first 8 hex
    digits of its hash when runs share a name but not the weights), then up to
    :data:`LABEL_FIELDS` config fields that differ, as ``name=value``, joined by
    `` · ``. Runs whose labels still coincide get their start time (UTC), then
    ``#2``, ``#3``...
    """
    differences = what_differs(runs) if differences is None else differences
    by_field = {d.field: d for d in differences}
    config = sorted((d for d in differences if d.group == "config"),
                    key=lambda d: d.field in _LABEL_LAST)[:LABEL_FIELDS]
    labels = []
    for i, run in enumerate(runs):
        given = given_label(run)
        if given:
            labels.append(given)
            continue
        name = str(run.info("model", "name") or run.label)
        name = name.rsplit("/", 1)[-1] if "/" in name and not name.startswith(("/", ".")) else name
        sha = by_field.get("model.sha256")
        if sha is not None and "model.name" not in by_field and isinstance(sha.values[i], str):
            name += f"@{sha.values[i][:8]}"
        labels.append(" · ".join([name] + [f"{d.short}={describe_value(d.values[i], 24)}" for d in config]))
    first = list(labels)
    for i, label in enumerate(first):
        if first.count(label) > 1 and not given_label(runs[i]) and _started(runs[i]):
            labels[i] = f"{label} · {_started(runs[i])}"
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return out


# --------------------------------------------------------------------------- scores

RecordKey = tuple[str, str, int]


def verdict_index(run: RunData) -> dict[RecordKey, Mapping[str, Any]]:
    """Sample records by ``(task, sample_id, repeat)``: the pairing key of a comparison."""
    return {(str(r.get("task")), str(r.get("sample_id")), int(r.get("repeat") or 0)): r for r in run.samples}


def primary_scorer(run: RunData, task: str) -> str | None:
    """The task's primary metric (its first scorer when none is marked)."""
    m = run.metrics.get(task) or {}
    return m.get("primary") or next(iter(m.get("scores") or {}), None)


@dataclass(frozen=True)
class TaskDifference:
    """A candidate against a baseline on one task and metric.

    ``result``: the paired difference (None when no sample was scored by both
    runs); ``unpaired``: samples scored by one run only, left out.
    """

    task: str
    scorer: str
    result: PairedDifference | None
    unpaired: int


def paired_scores(base: RunData, cand: RunData, task: str, scorer: str,
                  indexes: tuple[Mapping, Mapping] | None = None) -> tuple[list[float], list[float], int]:
    """The two runs' scores on the samples both scored, paired by ``(task,
    sample_id, repeat)`` in the baseline's order, and the count of samples in
    one run only. ``indexes``: the runs' :func:`verdict_index`, when at hand."""
    b_index, c_index = indexes or (verdict_index(base), verdict_index(cand))
    keys = [k for k in b_index if k[0] == task]
    paired = [k for k in keys if k in c_index]
    unpaired = len(keys) + sum(1 for k in c_index if k[0] == task) - 2 * len(paired)
    xs, ys = [], []
    for k in paired:
        x = (b_index[k].get("verdicts") or {}).get(scorer)
        y = (c_index[k].get("verdicts") or {}).get(scorer)
        if x is not None and y is not None:
            xs.append(float(x))
            ys.append(float(y))
    return xs, ys, unpaired


def task_difference(base: RunData, cand: RunData, task: str, scorer: str | None = None,
                    resamples: int = 10_000, indexes: tuple[Mapping, Mapping] | None = None) -> TaskDifference:
    """The paired difference ``candidate - baseline`` of ``scorer`` (default: the
    baseline's primary metric) on ``task``, with its 95% interval and p-value
    (:func:`evalsuite.metrics.stats.paired_difference`, seed 0)."""
    scorer = scorer or primary_scorer(base, task) or ""
    xs, ys, unpaired = paired_scores(base, cand, task, scorer, indexes)
    result = paired_difference(xs, ys, resamples=resamples) if xs else None
    return TaskDifference(task, scorer, result, unpaired)


def relative_change(base: float | None, cand: float | None) -> float | None:
    """``cand / base - 1``; None when either is missing or the base is not positive."""
    if base is None or cand is None or base <= 0:
        return None
    return cand / base - 1
