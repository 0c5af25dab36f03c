"""``evalsuite rescore RUN_DIR``: extraction, scoring and aggregates again, no model.

After a scorer fix, or to add an extractor, the stored outputs of a finished run
are scored again with the tasks as they are now: every record of
``samples.jsonl`` gets new answers and verdicts, ``run.json`` gets new metrics
(performance figures are measurements of the original run and are kept), and the
task's artifacts are written again. Both files are replaced atomically. On an
unchanged task the aggregates come out identical.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from evalsuite.errors import UsageError
from evalsuite.types import Generation


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "rescore", help="score a finished run's stored outputs again and rewrite its aggregates (no model)")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.set_defaults(handler=cmd_rescore)


def cmd_rescore(args: argparse.Namespace) -> int:
    from evalsuite.results.summary import format_summary

    metrics, changed = rescore(args.run_dir)
    print(format_summary(metrics))
    print(f"\nrescored: {args.run_dir} ({changed} verdicts changed)")
    return 0


def rescore(run_dir: Path) -> tuple[dict[str, Any], int]:
    """Re-scores ``run_dir`` in place; returns its new metrics and how many
    ``(record, scorer)`` verdicts changed.

    Raises UsageError for a directory that is not a finished run, or whose records
    name a task or sample the task no longer has.
    """
    from evalsuite.models import ModelRef
    from evalsuite.pipeline.runner import load_tasks
    from evalsuite.results.resume import config_from_dict, load_run, repair_samples
    from evalsuite.results.store import SCHEMA_VERSION, write_json_atomic

    run_dir = Path(run_dir)
    run = load_run(run_dir)
    if run.get("status") != "complete":
        raise UsageError(f"{run_dir} is not a finished run (status {run.get('status')!r}); "
                         "finish it first with: evalsuite run --resume " + str(run_dir))
    config = config_from_dict(run["config"])
    m = run.get("model") or {}
    model = ModelRef(m.get("name", ""), m.get("path", ""), m.get("source", "local"))
    tasks = {t.name: t for t in load_tasks(config, model)}
    stored = repair_samples(run_dir)

    by_task: dict[str, list[dict[str, Any]]] = {}
    for d in stored:
        if d["task"] not in tasks:
            raise UsageError(f"{run_dir}/samples.jsonl has records of task {d['task']!r}, which the run's config does not name")
        by_task.setdefault(d["task"], []).append(d)

    new_lines: dict[tuple[str, str, int], str] = {}
    metrics: dict[str, Any] = {}
    changed = 0
    old_metrics = run.get("metrics") or {}
    for name, task in tasks.items():
        old_perf = (old_metrics.get(name) or {}).get("performance") or {}
        metrics[name], lines, n = _rescore_task(task, by_task.get(name, []), config, old_perf, run_dir)
        new_lines.update(lines)
        changed += n
    _rewrite_samples(run_dir / "samples.jsonl", stored, new_lines)
    run = {k: v for k, v in run.items() if k != "schema_version"}
    write_json_atomic(run_dir / "run.json", {"schema_version": SCHEMA_VERSION, **run, "metrics": metrics,
                                             "rescored_at": time.time()})
    return metrics, changed


def _rescore_task(task: Any, dicts: list[dict[str, Any]], config: Any, old_perf: dict[str, Any],
                  run_dir: Path) -> tuple[dict[str, Any], dict[tuple[str, str, int], str], int]:
    """One task's stored records scored again: ``(metrics, new samples.jsonl lines by
    record key, verdicts changed)``; its artifacts are written again. The stored
    performance figures are kept (nothing was generated)."""
    from evalsuite.pipeline.guard import record_and_line
    from evalsuite.pipeline.runner import aggregate, build_requests, in_request_order, score
    from evalsuite.types import GenerationRequest, SamplingParams

    ids = {s.id for s in task.samples}
    missing = next((d["sample_id"] for d in dicts if d["sample_id"] not in ids), None)
    if missing is not None:
        raise UsageError(f"sample {missing!r} of task {task.name!r} is not in the task's data any more")
    requests = [GenerationRequest(task.name, d["sample_id"], d.get("prompt", ""), SamplingParams(), d.get("repeat", 0))
                for d in dicts]
    records = score(task, requests, [stored_generation(d) for d in dicts])
    lines, changed = {}, 0
    for i, (d, r) in enumerate(zip(dicts, records)):
        r, line = record_and_line(r)
        records[i] = r
        changed += sum(d.get("verdicts", {}).get(k) != s.value for k, s in r.scores.items())
        lines[(r.task, r.sample_id, r.repeat)] = line
    ordered = in_request_order(build_requests(task, config), records)
    metrics = aggregate(task, ordered, old_perf.get("wall_s") or 0.0)
    metrics["performance"] = {**old_perf, **metrics["performance"]}
    if task.write_artifacts is not None:
        task.write_artifacts(ordered, run_dir)
    return metrics, lines, changed


def _rewrite_samples(samples: Path, stored: list[dict[str, Any]], new_lines: dict[tuple[str, str, int], str]) -> None:
    """``samples.jsonl`` replaced (write, then rename) by the new lines, in the stored order."""
    tmp = samples.with_name(f".{samples.name}.rescore.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(new_lines[(d["task"], d["sample_id"], d.get("repeat", 0))] + "\n" for d in stored)
    tmp.replace(samples)


def stored_generation(d: dict[str, Any]) -> Generation:
    """The :class:`Generation` a ``samples.jsonl`` record was scored from (its error
    is the request's own, without a previous scoring's)."""
    from evalsuite.pipeline.guard import request_error
    from evalsuite.results.resume import timings_from_dict

    return Generation(
        text=d.get("output", ""), finish_reason=d.get("finish_reason"), prompt_text=d.get("prompt"),
        prompt_tokens=d.get("prompt_tokens"), output_tokens=d.get("output_tokens"),
        timings=timings_from_dict(d.get("timings")), error=request_error(d.get("error")),
    )
