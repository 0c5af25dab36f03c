"""Comparison reports over finished runs: ``reports/<name>/report.md`` and ``report.html``.

A report only reads results directories (never calls a model). It opens with
what a reviewer needs first: a one-line verdict (better / worse / no
significant change against the first run, the baseline), what differs between
the runs (config, model, provenance, environment, data; a task whose data or
version differs is flagged as not comparable) and the headline table: per task,
the paired difference of the primary metric with its 95% interval and p-value
(the same computation as ``compare``, :mod:`evalsuite.report.differences`), and the
latency and memory changes. With three runs or more it adds a runs x tasks
matrix (best per task marked) and, when the runs were given in the order they
ran, a trend plot per task. Then the detailed tables (accuracy per extractor,
latency percentiles, throughput, memory), figures (accuracy with intervals,
latency distributions, memory, needle heatmaps, and any PNG a task wrote into
its run directory), and in HTML the samples whose verdict flipped, prompts and
outputs side by side. Runs are named by labels (:func:`evalsuite.report.differences.run_labels`),
not ids; ``report.html`` is self-contained (images embedded as base64 PNG).

A "run" here is a run directory (``run.json`` + ``samples.jsonl``) or a suite
directory (``suite.json`` and one run directory per entry), read as one run.
Figures a run does not have (older schema, another backend) show as "-".
"""

from __future__ import annotations

import base64
import html
import itertools
import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalsuite.config import MAX_LABEL
from evalsuite.errors import UsageError
from evalsuite.metrics.stats import PairedDifference
from evalsuite.report.differences import (
    Difference,
    TaskDifference,
    describe_value,
    differing_names,
    not_comparable,
    primary_scorer,
    relative_change,
    run_labels,
    task_difference,
    verdict_index,
    what_differs,
)

MISSING = "-"
ALPHA = 0.05  # significance level of the headline's paired tests
LATENCY_METRIC = "e2e_ms_p95"  # the headline's latency figure (compare's default)
MEMORY_FIGURES = ("peak_gpu_mem_gib", "host_peak_rss_gib")  # the headline's memory figure, first found
WIDE_MAX_RUNS = 3  # up to this many runs, tables give each run its own column(s); beyond, its own row(s)
MAX_FLIPS_SHOWN = 40  # per task and run pair; the count of the rest is shown
_PERF_COLUMNS = (
    ("requests", "requests", 0), ("errors", "errors", 0), ("wall_s", "wall s", 1),
    ("request_throughput_per_s", "req/s", 2), ("output_tokens_per_s", "out tok/s", 1),
    ("ttft_ms_p50", "TTFT p50 ms", 0), ("ttft_ms_p95", "TTFT p95 ms", 0),
    ("tpot_ms_p50", "TPOT p50 ms", 1), ("tpot_ms_p95", "TPOT p95 ms", 1),
    ("itl_ms_p50", "ITL p50 ms", 1),
    ("e2e_ms_p50", "E2E p50 ms", 0), ("e2e_ms_p90", "E2E p90 ms", 0),
    ("e2e_ms_p95", "E2E p95 ms", 0), ("e2e_ms_p99", "E2E p99 ms", 0),
)
_METRIC_KEYS = {"version", "primary", "scores", "performance", "memory"}
_MEMORY_WORDS = re.compile(r"(mem|rss|kv_cache|gib|mib|bytes)", re.IGNORECASE)


# --------------------------------------------------------------------------- loading

@dataclass(frozen=True)
class RunData:
    """One run as a report sees it.

    ``label``: the directory name (the run id); ``given_label``: the label the
    run was given (``--label``, a suite's ``label:``) or None; ``metrics[task]``:
    the task's metrics block from ``run.json`` (for a suite, entries whose id
    differs from the task name are keyed by their id); ``samples``: every
    sample record, its ``task`` set to that same key; ``headers``: the member
    ``run.json`` dicts without metrics; ``task_keys``: per header, its task
    names to those keys; ``memory``: run-level memory figures, flattened to
    ``{dotted name: number}``; ``artifacts``: PNG files found in the run dirs.
    """

    label: str
    path: Path
    metrics: Mapping[str, Any]
    samples: Sequence[Mapping[str, Any]]
    headers: Sequence[Mapping[str, Any]]
    memory: Mapping[str, float] = field(default_factory=dict)
    artifacts: Sequence[Path] = ()
    given_label: str | None = None
    task_keys: Sequence[Mapping[str, str]] = ()

    @property
    def tasks(self) -> list[str]:
        return list(self.metrics)

    def info(self, *keys: str) -> Any:
        """A header value of the first member run, e.g. ``info("model", "name")``."""
        value: Any = self.headers[0] if self.headers else None
        for key in keys:
            value = value.get(key) if isinstance(value, Mapping) else None
        return value


def _numeric_leaves(data: Any, prefix: str = "") -> Iterable[tuple[str, float]]:
    if isinstance(data, bool):
        return
    if isinstance(data, (int, float)):
        yield prefix, data
    elif isinstance(data, Mapping):
        for key, value in data.items():
            yield from _numeric_leaves(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(data, list) and data and all(isinstance(v, Mapping) for v in data):
        for i, value in enumerate(data):
            yield from _numeric_leaves(value, f"{prefix}.{i}" if prefix else str(i))


def memory_figures(run_json: Mapping[str, Any]) -> dict[str, float]:
    """Every numeric memory figure of one ``run.json``, flattened to dotted names.

    Read from a top-level ``memory`` block and from each task's ``memory``
    block and memory-named ``performance`` keys (``peak_rss_gib``...); the
    schema of these blocks belongs to the runner, so this reads them generically.
    """
    out = dict(_numeric_leaves(run_json.get("memory") or {}))
    for task, m in (run_json.get("metrics") or {}).items():
        if not isinstance(m, Mapping):
            continue
        for name, value in _numeric_leaves(m.get("memory") or {}):
            out[f"{task}.{name}"] = value
        for name, value in (m.get("performance") or {}).items():
            if _MEMORY_WORDS.search(name) and isinstance(value, (int, float)) and not isinstance(value, bool):
                out[f"{task}.{name}"] = float(value)
    return out


READ_RUN_WHAT = "report and compare take run or suite directories"
READ_FIX = "not a file evalsuite wrote; give another run"


def resolve_run_dir(ref: str | Path, results_dir: str | Path = "results") -> Path:
    """A run reference to its directory: a path, or a run id under ``results_dir``.

    Raises UsageError when neither holds a ``run.json`` or ``suite.json``.
    """
    for candidate in (Path(ref), Path(results_dir) / str(ref)):
        if (candidate / "run.json").is_file() or (candidate / "suite.json").is_file():
            return candidate
    raise UsageError(f"no run found at '{ref}' (give a results directory with run.json or suite.json, "
                     f"or a run id under {results_dir}/)")


def load_run(ref: str | Path, results_dir: str | Path = "results") -> RunData:
    """Reads a run or suite directory (see :func:`resolve_run_dir`) into a RunData.

    For a suite, memory figures of member runs are prefixed by the entry id.
    """
    from evalsuite.results.store import read_json_file, read_run, read_samples
    from evalsuite.schemas import ReportedRun, ReportedSuite

    path = resolve_run_dir(ref, results_dir)
    suite: dict[str, Any] = {}
    if (path / "suite.json").is_file():
        suite = read_json_file(path / "suite.json", ReportedSuite, READ_FIX)
        members = [path / run_id for run_id in suite.get("runs", []) if (path / run_id / "run.json").is_file()]
        if not members:
            raise UsageError(f"suite directory {path} has no finished member run")
    else:
        members = [path]
    metrics: dict[str, Any] = {}
    samples: list[dict[str, Any]] = []
    headers: list[dict[str, Any]] = []
    memory: dict[str, float] = {}
    artifacts: list[Path] = []
    task_keys: list[dict[str, str]] = []
    for member in members:
        run_json = read_run(member, READ_RUN_WHAT, READ_FIX, ReportedRun)
        run_id = member.name
        renames = {}
        for task, m in (run_json.get("metrics") or {}).items():
            key = task if (member == path or run_id == task) else run_id
            key = key if key not in metrics else f"{run_id}/{task}"
            renames[task] = key
            metrics[key] = m
        for name, value in memory_figures({"memory": run_json.get("memory")}).items():
            memory[name if member == path else f"{run_id}.{name}"] = value
        if (member / "samples.jsonl").is_file():
            samples.extend({**r, "task": renames.get(r.get("task"), r.get("task"))} for r in read_samples(member, ordered=True))
        headers.append({k: v for k, v in run_json.items() if k != "metrics"})
        task_keys.append(renames)
        artifacts.extend(sorted(member.rglob("*.png")))
    labels = {str((h.get("config") or {}).get("label") or "") for h in headers}
    given = str(suite.get("label") or "") or (labels.pop() if len(labels) == 1 else "")
    # A label edited into run.json by hand is still one short line in the report.
    given = given.strip().splitlines()[0][:MAX_LABEL] if given.strip() else None
    return RunData(label=path.name, path=path, metrics=metrics, samples=samples, headers=headers,
                   memory=memory, artifacts=tuple(artifacts), given_label=given, task_keys=task_keys)


# --------------------------------------------------------------------------- tables

def fmt(value: Any, digits: int = 3) -> str:
    """A cell: ``-`` for a missing value, fixed digits for floats."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:,.{digits}f}" if digits else f"{value:,.0f}"
    return str(value)


@dataclass(frozen=True)
class Table:
    """A titled table of text cells, rendered to Markdown or HTML.

    ``marked``: ``(row, column)`` cells to emphasise (bold; ``best`` class in
    HTML); ``row_classes``: a CSS class per row (HTML only), e.g. a verdict.
    """

    title: str
    header: Sequence[str]
    rows: Sequence[Sequence[str]]
    note: str = ""
    css_id: str = ""
    marked: frozenset[tuple[int, int]] = frozenset()
    row_classes: Sequence[str] = ()

    def markdown(self) -> str:
        esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")
        lines = [f"### {self.title}", ""]
        if self.note:
            lines += [self.note, ""]
        lines.append("| " + " | ".join(esc(h) for h in self.header) + " |")
        lines.append("|" + "|".join("---" for _ in self.header) + "|")
        lines += ["| " + " | ".join(f"**{esc(c)}**" if (i, j) in self.marked else esc(c) for j, c in enumerate(row))
                  + " |" for i, row in enumerate(self.rows)]
        return "\n".join(lines) + "\n"

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in self.header)
        body = []
        for i, row in enumerate(self.rows):
            klass = self.row_classes[i] if i < len(self.row_classes) and self.row_classes[i] else ""
            cells = "".join(f"<td class='best'>{html.escape(str(c))}</td>" if (i, j) in self.marked
                            else f"<td>{html.escape(str(c))}</td>" for j, c in enumerate(row))
            body.append(f"<tr class='{html.escape(klass)}'>{cells}</tr>" if klass else f"<tr>{cells}</tr>")
        note = f"<p class='note'>{html.escape(self.note)}</p>" if self.note else ""
        ident = f" id='{self.css_id}'" if self.css_id else ""
        return (f"<h3>{html.escape(self.title)}</h3>{note}<table class='data'{ident}>"
                f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def _started(run: RunData) -> str:
    started = run.info("started_at")
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(started)) if isinstance(started, (int, float)) else MISSING


def runs_table(runs: Sequence[RunData], labels: Sequence[str]) -> Table:
    """One row per run: its label, run id, model, backend, tasks, status, git
    revision, start time and directory."""
    rows = []
    for label, run in zip(labels, runs):
        rows.append([
            label, run.label, fmt(run.info("model", "name")),
            fmt(run.info("backend", "backend") or run.info("config", "backend")),
            ", ".join(run.tasks) or MISSING, ", ".join(sorted({str(h.get("status")) for h in run.headers})),
            fmt((run.info("provenance", "git_revision") or "")[:12] or None), _started(run), str(run.path),
        ])
    return Table("Runs", ["run", "id", "model", "backend", "tasks", "status", "git", "started (UTC)", "directory"],
                 rows, css_id="runs")


def differences_table(differences: Sequence[Difference], labels: Sequence[str]) -> Table:
    """The "what differs" table (:func:`evalsuite.report.differences.what_differs`): a
    row per field and a column per run, or, with more than :data:`WIDE_MAX_RUNS`
    runs, a row per run and a column per field. ``compare`` prints the same table."""
    note = ("Every config, model, task, backend, provenance and environment field of run.json that is "
            "not the same in all runs (hashes cut to 12 digits); a task whose version or data files "
            "differ cannot be compared between the runs.")
    if len(labels) > WIDE_MAX_RUNS and differences:
        header = ["run"] + [d.field + (" (not comparable)" if d.not_comparable else "") for d in differences]
        rows = [[label] + [describe_value(d.values[i], 40) for d in differences] for i, label in enumerate(labels)]
        return Table("What differs", header, rows, css_id="differences", note=note)
    rows = [[d.group, d.field] + [describe_value(v, 80) for v in d.values]
            + ["not comparable on " + ", ".join(d.not_comparable) if d.not_comparable else ""]
            for d in differences]
    if not rows:
        rows = [["-", "(nothing differs)"] + [MISSING] * len(labels) + [""]]
    return Table("What differs", ["group", "field"] + list(labels) + ["flag"], rows, css_id="differences",
                 row_classes=["not-comparable" if d.not_comparable else "" for d in differences], note=note)


# --------------------------------------------------------------------------- headline

BETTER, WORSE, SAME, NOT_COMPARABLE, NA = "better", "worse", "no significant change", "not comparable", "n/a"


@dataclass(frozen=True)
class HeadlineRow:
    """One run against the baseline on one task.

    ``difference``: the paired difference of the primary metric (shared with
    ``compare``); ``latency``/``memory``: ``(figure name, baseline, run,
    relative change)`` or None when not recorded in both runs; ``verdict``:
    better / worse / no significant change (``p >= alpha``) / not comparable
    (data or task version differs) / n/a (task or paired samples missing).
    """

    label: str
    task: str
    difference: TaskDifference | None
    latency: tuple[str, float, float, float] | None
    memory: tuple[str, float, float, float] | None
    verdict: str
    reason: str = ""


def _perf(run: RunData, task: str, key: str) -> float | None:
    value = ((run.metrics.get(task) or {}).get("performance") or {}).get(key)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _memory_for(run: RunData, task: str) -> dict[str, float]:
    """The memory figures a task ran with: its suite member's when the run is a
    suite, else the run's, plus figures in the task's own metrics."""
    figures = dict(run.memory)
    figures.update(memory_figures({"metrics": {task: run.metrics.get(task) or {}}}))
    out = {}
    for wanted in MEMORY_FIGURES:
        for name in (f"{task}.{wanted}", wanted):
            if figures.get(name) is not None:
                out[wanted] = figures[name]
                break
    return out


def _change(name: str, base: float | None, cand: float | None) -> tuple[str, float, float, float] | None:
    rel = relative_change(base, cand)
    return None if rel is None else (name, base, cand, rel)


def headline_rows(runs: Sequence[RunData], labels: Sequence[str], tasks: Sequence[str],
                  differences: Sequence[Difference], alpha: float = ALPHA) -> list[HeadlineRow]:
    """Each run after the first against the first, per task of the baseline.

    The accuracy figures come from :func:`evalsuite.report.differences.task_difference`
    (the primary metric, paired by sample; McNemar + Newcombe for 0/1 verdicts,
    paired bootstrap otherwise, 10,000 draws, seed 0: the numbers ``compare``
    prints). Latency: the relative change of ``e2e_ms_p95``; memory: of the peak
    GPU memory, else the host's peak RSS.
    """
    base = runs[0]
    blocked = not_comparable(differences)
    rows = []
    base_index = verdict_index(base)
    for label, run in zip(labels[1:], runs[1:]):
        indexes = (base_index, verdict_index(run))
        for task in tasks:
            if task not in base.metrics:
                continue
            if task not in run.metrics:
                rows.append(HeadlineRow(label, task, None, None, None, NA, "not in this run"))
                continue
            diff = task_difference(base, run, task, indexes=indexes)
            latency = _change(LATENCY_METRIC, _perf(base, task, LATENCY_METRIC), _perf(run, task, LATENCY_METRIC))
            b_mem, c_mem = _memory_for(base, task), _memory_for(run, task)
            name = next((n for n in MEMORY_FIGURES if n in b_mem and n in c_mem), None)
            memory = _change(name, b_mem[name], c_mem[name]) if name else None
            r = diff.result
            if task in blocked:
                verdict, reason = NOT_COMPARABLE, ", ".join(f.split(f"tasks.{task}.", 1)[-1] for f in blocked[task])
            elif r is None:
                verdict, reason = NA, "no paired samples"
            elif r.significant(alpha):
                verdict, reason = (BETTER if r.diff > 0 else WORSE), ""
            else:
                verdict, reason = SAME, ""
            rows.append(HeadlineRow(label, task, diff, latency, memory, verdict, reason))
    return rows


def _signed(value: float, digits: int = 3) -> str:
    return f"{value:+.{digits}f}"


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def difference_text(r: PairedDifference) -> str:
    """``+0.125 [-0.050, +0.300]``: a paired difference with its 95% interval."""
    return f"{_signed(r.diff)} [{_signed(r.ci95[0])}, {_signed(r.ci95[1])}]"


def headline_table(rows: Sequence[HeadlineRow], base_label: str) -> Table:
    """The headline rows as a table: baseline and run means on the paired
    samples, difference with 95% interval, p-value and test, n, latency and
    memory changes, verdict."""
    cells, classes = [], []
    for row in rows:
        r = row.difference.result if row.difference else None
        lat = f"{row.latency[3]:+.1%}" if row.latency else MISSING
        mem = f"{row.memory[3]:+.1%}" if row.memory else MISSING
        if r is None:
            cells.append([row.label, row.task, row.difference.scorer if row.difference else MISSING,
                          MISSING, MISSING, MISSING, MISSING, MISSING, lat, mem,
                          f"{row.verdict} ({row.reason})" if row.reason else row.verdict])
        else:
            n = f"{r.n}" + (f" ({row.difference.unpaired} unpaired)" if row.difference.unpaired else "")
            test = "McNemar" if r.test == "mcnemar-exact" else "bootstrap"
            cells.append([row.label, row.task, row.difference.scorer, f"{r.baseline_mean:.3f}",
                          f"{r.candidate_mean:.3f}", difference_text(r), f"{_p(r.p_value)} ({test})", n, lat, mem,
                          f"{row.verdict} ({row.reason})" if row.reason else row.verdict])
        classes.append({BETTER: "better", WORSE: "worse", NOT_COMPARABLE: "not-comparable"}.get(row.verdict, ""))
    memory_names = sorted({row.memory[0] for row in rows if row.memory})
    return Table(f"Headline: each run against the baseline ({base_label})",
                 ["run", "task", "metric", "baseline", "run value", "difference [95% CI]", "p (test)", "n",
                  f"latency ({LATENCY_METRIC})", "memory", "verdict"],
                 cells, css_id="headline", row_classes=classes,
                 note=f"Primary metric on the samples both runs scored, paired by sample: exact McNemar test and "
                      f"Newcombe's interval for 0/1 verdicts, paired bootstrap otherwise; significant when "
                      f"p < {ALPHA:g}. Latency and memory: relative change"
                      + (f" ({', '.join(memory_names)})." if memory_names else "."))


def run_verdict(rows: Sequence[HeadlineRow]) -> str:
    """better, worse, mixed or no significant change, from one run's rows."""
    verdicts = {row.verdict for row in rows}
    if BETTER in verdicts and WORSE in verdicts:
        return "mixed"
    return WORSE if WORSE in verdicts else BETTER if BETTER in verdicts else SAME


def verdict_line(rows: Sequence[HeadlineRow], labels: Sequence[str]) -> str:
    """The report's first line: the verdict of each run against the baseline.

    Two runs: ``No significant change: no task changed significantly between B
    and the baseline A (2 tasks tested; ...)``, or which tasks got better or
    worse, with the difference, its interval and p-value. More runs: how many
    got better, worse, mixed or stayed the same. Tasks that cannot be compared
    (data or task version differs) are named. One run: empty.
    """
    if len(labels) < 2:
        return ""  # one run: nothing to compare against
    tests = f"paired tests, p < {ALPHA:g}"
    per_run = {label: [r for r in rows if r.label == label] for label in labels[1:]}
    blocked = sorted({r.task for r in rows if r.verdict == NOT_COMPARABLE})
    tail = f"; not comparable on {', '.join(blocked)} (data or task version differs)" if blocked else ""
    if len(labels) == 2:
        mine = per_run[labels[1]]
        tested = [r for r in mine if r.verdict in (BETTER, WORSE, SAME)]
        changed = [r for r in tested if r.verdict != SAME]
        if not tested:
            return f"Not compared: no task of {labels[1]} could be paired with the baseline {labels[0]}{tail}."
        if not changed:
            return (f"No significant change: no task changed significantly between {labels[1]} and the "
                    f"baseline {labels[0]} ({len(tested)} task{'s' * (len(tested) != 1)} tested; {tests}){tail}.")
        rest = len(tested) - len(changed)
        return (f"{run_verdict(mine).capitalize()}: {labels[1]} against the baseline {labels[0]}: "
                + "; ".join(f"{r.verdict} on {r.task} ({difference_text(r.difference.result)}, p "
                            f"{'' if r.difference.result.p_value < 0.001 else '= '}{_p(r.difference.result.p_value)})"
                            for r in changed)
                + (f"; no significant change on {rest} other task{'s' * (rest != 1)}" if rest else "")
                + f" ({tests}){tail}.")
    counts = {v: sum(run_verdict(mine) == v for mine in per_run.values()) for v in (BETTER, WORSE, "mixed", SAME)}
    return (f"Against the baseline {labels[0]}: {counts[BETTER]} of {len(per_run)} runs better, "
            f"{counts[WORSE]} worse, {counts['mixed']} mixed, {counts[SAME]} with no significant change "
            f"on any task ({tests}){tail}.")


# --------------------------------------------------------------------------- many runs

def primary_value(run: RunData, task: str) -> tuple[float, float | None, float | None] | None:
    """``(value, ci_low, ci_high)`` of the task's primary metric, or None."""
    scorer = primary_scorer(run, task)
    s = ((run.metrics.get(task) or {}).get("scores") or {}).get(scorer) if scorer else None
    if not s or s.get("value") is None:
        return None
    ci = s.get("ci95") or [None, None]
    return s["value"], ci[0], ci[1]


def matrix_table(runs: Sequence[RunData], labels: Sequence[str], tasks: Sequence[str]) -> Table:
    """Runs x tasks: the primary metric with its 95% interval; the best value per
    task is marked (every run that reaches it; none when all runs tie)."""
    values = [[primary_value(run, task) for task in tasks] for run in runs]
    marked = set()
    for j in range(len(tasks)):
        column = [v[j][0] for v in values if v[j] is not None]
        if len(set(column)) < 2:
            continue  # a tie among all runs has no best
        marked |= {(i, j + 1) for i, v in enumerate(values) if v[j] is not None and v[j][0] == max(column)}
    rows = []
    for label, row in zip(labels, values):
        cells = [label]
        for (i, v) in enumerate(row):
            if v is None:
                cells.append(MISSING)
                continue
            ci = f" [{v[1]:.3f}, {v[2]:.3f}]" if v[1] is not None and v[2] is not None else ""
            cells.append(f"{v[0]:.3f}{ci}")
        rows.append(cells)
    rows = [[c + (" \u2605" if (i, j) in marked else "") for j, c in enumerate(r)] for i, r in enumerate(rows)]
    return Table("Runs x tasks", ["run"] + list(tasks), rows, css_id="matrix", marked=frozenset(marked),
                 note="Primary metric of each task with its 95% interval; \u2605 marks the best run per task.")


def in_time_order(runs: Sequence[RunData]) -> bool:
    """True when every run has a start time and they were given oldest first."""
    starts = [run.info("started_at") for run in runs]
    if not all(isinstance(s, (int, float)) for s in starts):
        return False
    return all(a < b for a, b in itertools.pairwise(starts))


# --------------------------------------------------------------------------- detail tables

def accuracy_table(runs: Sequence[RunData], labels: Sequence[str], tasks: Sequence[str]) -> Table:
    """Rows: task x extractor (primary first); a column per run with
    ``value [lo, hi]`` and one with ``n / no-answer rate``. With more than
    :data:`WIDE_MAX_RUNS` runs, one row per task, extractor and run instead."""
    long = len(runs) > WIDE_MAX_RUNS
    header = ["task", "metric"]
    for label in ([] if long else labels):
        header += [f"{label}", f"{label} n / no-answer"]
    header += ["run", "value [95% CI]", "n / no-answer"] if long else []
    rows = []
    for task in tasks:
        scorers: list[str] = []
        for run in runs:
            m = run.metrics.get(task) or {}
            primary = m.get("primary")
            for name in ([primary] if primary else []) + list(m.get("scores") or {}):
                if name and name not in scorers:
                    scorers.append(name)
        for scorer in scorers:
            row = [task, scorer]
            for label, run in zip(labels, runs):
                s = ((run.metrics.get(task) or {}).get("scores") or {}).get(scorer)
                if not s or s.get("value") is None:
                    cells = [MISSING, MISSING]
                else:
                    ci = s.get("ci95")
                    cells = [f"{s['value']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""),
                             f"{fmt(s.get('n'))} / {fmt(s.get('extraction_failure_rate'), 2)}"]
                if long:
                    rows.append([task, scorer, label] + cells)
                else:
                    row += cells
            if not long:
                rows.append(row)
    return Table("Accuracy", header, rows, css_id="accuracy",
                 note="Mean score with its 95% interval (Wilson for 0/1 verdicts, normal otherwise); "
                      "n samples; no-answer = share of outputs the extractor found no answer in.")


def performance_table(runs: Sequence[RunData], labels: Sequence[str], tasks: Sequence[str]) -> Table:
    """Rows: task x run; columns: the latency and throughput figures any run has."""
    present = [c for c in _PERF_COLUMNS
               if any(((r.metrics.get(t) or {}).get("performance") or {}).get(c[0]) is not None
                      for r in runs for t in tasks)]
    rows = []
    for task in tasks:
        for label, run in zip(labels, runs):
            perf = (run.metrics.get(task) or {}).get("performance")
            if perf is None:
                continue
            rows.append([task, label] + [fmt(perf.get(key), digits) for key, _, digits in present])
    return Table("Latency and throughput", ["task", "run"] + [h for _, h, _ in present], rows,
                 css_id="performance",
                 note="Per task: wall time, requests/s, output tokens/s and per-request latency "
                      "percentiles (TTFT, TPOT, ITL, end-to-end) as the backend measured them.")


def _by_run(title: str, names: Sequence[str], values: Mapping[str, Mapping[str, float]],
            labels: Sequence[str], first: str, **kwargs: Any) -> Table:
    """A table of named figures: a row per name and a column per run, or, with
    more than :data:`WIDE_MAX_RUNS` runs, a row per run and a column per name."""
    if len(labels) > WIDE_MAX_RUNS:
        rows = [[label] + [fmt(values[name].get(label), 3) for name in names] for label in labels]
        return Table(title, ["run"] + list(names), rows, **kwargs)
    rows = [[name] + [fmt(values[name].get(label), 3) for label in labels] for name in names]
    return Table(title, [first] + list(labels), rows, **kwargs)


def memory_table(runs: Sequence[RunData], labels: Sequence[str]) -> Table:
    """Every memory figure of every run (:func:`memory_figures`)."""
    figures = _memory_by_name(runs, labels)
    note = ("Memory as each run recorded it (GPU memory through NVML, host RSS, KV cache); "
            "units are in the names.")
    if not figures:
        return Table("Memory", ["figure"], [["(no memory figures recorded)"]], css_id="memory", note=note)
    return _by_run("Memory", list(figures), figures, labels, "figure", css_id="memory", note=note)


def _memory_by_name(runs: Sequence[RunData], labels: Sequence[str]) -> dict[str, dict[str, float]]:
    figures: dict[str, dict[str, float]] = {}
    for label, run in zip(labels, runs):
        merged = dict(run.memory)
        for task, m in run.metrics.items():
            merged.update({k: v for k, v in memory_figures({"metrics": {task: m}}).items()})
        for name, value in merged.items():
            figures.setdefault(name, {})[label] = value
    return figures


def extras_table(runs: Sequence[RunData], labels: Sequence[str], tasks: Sequence[str]) -> Table | None:
    """Task-specific scalar metrics (pass@k, effective context length, ...)."""
    names: dict[tuple[str, str], dict[str, float]] = {}
    for label, run in zip(labels, runs):
        for task in tasks:
            m = run.metrics.get(task) or {}
            extras = {k: v for k, v in m.items() if k not in _METRIC_KEYS}
            for name, value in _numeric_leaves(extras):
                if name.count(".") <= 1:
                    names.setdefault((task, name), {})[label] = value
    if not names:
        return None
    if len(labels) > WIDE_MAX_RUNS:
        flat = {f"{task} {name}": values for (task, name), values in names.items()}
        return _by_run("Task metrics", list(flat), flat, labels, "metric", css_id="extras")
    rows = [[task, name] + [fmt(values.get(label), 3) for label in labels]
            for (task, name), values in names.items()]
    return Table("Task metrics", ["task", "metric"] + list(labels), rows, css_id="extras")


def second_opinion_table(runs: Sequence[RunData], labels: Sequence[str], tasks: Sequence[str],
                         shown: int = 30) -> Table | None:
    """Where math-verify's verdict differs from evalsuite's (``metrics[task]["math_verify"]``,
    :func:`evalsuite.scoring.second_opinion.agreement`): one row per run and task, with
    the disagreeing sample ids (``id`` or ``id#repeat``; the first ``shown``)."""
    rows = []
    for label, run in zip(labels, runs):
        for task in tasks:
            mv = (run.metrics.get(task) or {}).get("math_verify")
            if not isinstance(mv, Mapping):
                continue
            ids = [f"{d['sample_id']}#{d['repeat']}" if d.get("repeat") else str(d["sample_id"])
                   for d in mv.get("disagreements") or []]
            more = (mv.get("disagree") or 0) - len(ids[:shown])
            rows.append([label, task, str(mv.get("scorer")), f"{fmt(mv.get('disagree'))} / {fmt(mv.get('n'))}",
                         fmt(mv.get("agreement"), 3), ", ".join(ids[:shown]) + (f" (+{more} more)" if more > 0 else "")
                         or "(none)"])
    if not rows:
        return None
    return Table("Second opinion: math-verify", ["run", "task", "row", "disagree / n", "agreement", "sample ids"],
                 rows, note="Samples where math-verify's verdict differs from evalsuite's (evalsuite's is the "
                 "score; see the README's scoring section).", css_id="second-opinion")


# --------------------------------------------------------------------------- flips

@dataclass(frozen=True)
class Flip:
    task: str
    sample_id: str
    repeat: int
    scorer: str
    base: Mapping[str, Any]
    cand: Mapping[str, Any]

    @property
    def direction(self) -> str:
        return "lost" if self.base["verdicts"][self.scorer] > self.cand["verdicts"][self.scorer] else "gained"


def flipped_samples(base: RunData, cand: RunData) -> list[Flip]:
    """Paired samples whose primary-metric verdict differs between two runs,
    in task order, then sample order of the baseline."""
    cand_index = verdict_index(cand)
    flips = []
    for key, b in verdict_index(base).items():
        c = cand_index.get(key)
        scorer = primary_scorer(base, key[0])
        if c is None or scorer is None:
            continue
        vb, vc = (b.get("verdicts") or {}).get(scorer), (c.get("verdicts") or {}).get(scorer)
        if vb is not None and vc is not None and vb != vc:
            flips.append(Flip(key[0], key[1], key[2], scorer, b, c))
    return flips


# --------------------------------------------------------------------------- figures

@dataclass(frozen=True)
class FigureItem:
    """A rendered figure: file name in the report folder, caption, PNG bytes, and
    the report section it belongs to (``overview`` or ``figures``)."""

    name: str
    caption: str
    png: bytes
    section: str = "figures"


def _needle_grid(samples: Sequence[Mapping[str, Any]], scorer: str | None):
    """(lengths, depths, recall grid) from needle-style sample metadata, or None."""
    cells: dict[tuple[int, float], list[float]] = {}
    for r in samples:
        meta = r.get("metadata") or {}
        length = next((meta[k] for k in ("context_length", "target_tokens", "length", "context_tokens")
                       if isinstance(meta.get(k), (int, float))), None)
        depth = next((meta[k] for k in ("depth_percent", "depth", "depth_pct")
                      if isinstance(meta.get(k), (int, float))), None)
        verdicts = r.get("verdicts") or {}
        value = verdicts.get(scorer) if scorer else next(iter(verdicts.values()), None)
        if length is None or depth is None or value is None:
            continue
        cells.setdefault((int(length), float(depth)), []).append(float(value))
    if len(cells) < 2:
        return None
    lengths = sorted({k[0] for k in cells})
    depths = sorted({k[1] for k in cells})
    grid = [[(sum(cells[(n, d)]) / len(cells[(n, d)])) if (n, d) in cells else None for d in depths]
            for n in lengths]
    return lengths, depths, grid


def build_figures(runs: Sequence[RunData], labels: Sequence[str], tasks: Sequence[str]) -> list[FigureItem]:
    """Every report figure that the runs have data for; runs are named by ``labels``
    in captions and on axes, by their ids in file names."""
    from evalsuite.report import plots

    items: list[FigureItem] = []

    def add(name: str, caption: str, fig, section: str = "figures") -> None:
        items.append(FigureItem(name, caption, plots.png_bytes(fig), section))

    acc = {(task, label): v for label, run in zip(labels, runs) for task in tasks
           if (v := primary_value(run, task)) is not None}
    if acc and len(runs) >= 3 and in_time_order(runs):
        add("trend.png", "Primary metric per task over the runs in the order they ran (oldest first), "
                         "with 95% intervals.", plots.trend_figure(tasks, labels, acc), section="overview")
    if acc:
        add("accuracy.png", "Primary metric per task and run with its 95% interval; the dashed line is "
                            "the baseline (first run).", plots.accuracy_figure(tasks, labels, acc))
    for key, unit, title in (("e2e_s", "ms", "End-to-end latency per request"),
                             ("ttft_s", "ms", "Time to first token per request")):
        data = {task: {label: [t[key] * 1000 for t in ((r.get("timings") or {}) for r in run.samples
                                                      if r.get("task") == task) if t.get(key) is not None]
                       for label, run in zip(labels, runs)} for task in tasks}
        if any(xs for per_run in data.values() for xs in per_run.values()):
            add(f"latency_{key[:-2]}.png", f"{title} (ms); boxes: quartiles, whiskers: 5th-95th percentile.",
                plots.distribution_figure(data, unit, title))
    # Only figures in GiB share an axis; counts and fractions stay in the table.
    figures = {name: v for name, v in _memory_by_name(runs, labels).items() if name.endswith("_gib")}
    if figures:
        add("memory.png", "Memory figures in GiB per run (GPU through NVML, host RSS, KV cache, estimates).",
            plots.memory_figure(figures, title="Memory (GiB)"))
    for label, run in zip(labels, runs):
        for task in tasks:
            grid = _needle_grid([r for r in run.samples if r.get("task") == task], primary_scorer(run, task))
            if grid:
                lengths, depths, values = grid
                add(f"heatmap_{_slug(task)}_{_slug(run.label)}.png",
                    f"Recall by context length and depth: {task}, {label}.",
                    plots.heatmap_figure([str(n) for n in lengths], [f"{d:g}" for d in depths], values,
                                         f"{task} recall: {label}"))
    for label, run in zip(labels, runs):
        for art in run.artifacts:
            rel = art.relative_to(run.path)
            items.append(FigureItem(f"artifact_{_slug(run.label)}_{_slug(str(rel))}",
                                    f"{label}: {rel} (written by the task)", art.read_bytes()))
    return items


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:60] or "x"


# --------------------------------------------------------------------------- rendering

def _pre(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return f"<pre>{html.escape(text)}</pre>"


def _flip_html(flips: Sequence[Flip], base_label: str, cand_label: str) -> str:
    if not flips:
        return "<p>No sample changed its primary-metric verdict.</p>"
    parts = []
    for task in dict.fromkeys(f.task for f in flips):
        group = [f for f in flips if f.task == task]
        lost = sum(f.direction == "lost" for f in group)
        parts.append(f"<h4>{html.escape(task)}: {len(group)} flipped ({lost} lost, {len(group) - lost} gained)"
                     f" on {html.escape(group[0].scorer)}</h4>")
        rows = []
        for f in group[:MAX_FLIPS_SHOWN]:
            def answers(record: Mapping[str, Any], scorer: str = f.scorer) -> str:
                return html.escape(str((record.get("answers") or {}).get(scorer)))

            rows.append(
                f"<tr class='flip'><td>{html.escape(f.sample_id)}"
                f"{'' if not f.repeat else f' (repeat {f.repeat})'}<br><span class='{f.direction}'>{f.direction}</span>"
                f"<br>target:{_pre(f.base.get('target'))}</td>"
                f"<td><details><summary>prompt</summary>{_pre(f.base.get('prompt') or '')}</details></td>"
                f"<td>verdict {fmt(f.base['verdicts'][f.scorer], 2)}, answer {answers(f.base)}{_pre(f.base.get('output') or '')}</td>"
                f"<td>verdict {fmt(f.cand['verdicts'][f.scorer], 2)}, answer {answers(f.cand)}{_pre(f.cand.get('output') or '')}</td></tr>")
        more = len(group) - MAX_FLIPS_SHOWN
        parts.append(
            "<table class='flips'><colgroup><col style='width:12%'><col style='width:22%'>"
            "<col style='width:33%'><col style='width:33%'></colgroup>"
            f"<thead><tr><th>sample</th><th>prompt</th><th>{html.escape(base_label)} (baseline)</th>"
            f"<th>{html.escape(cand_label)}</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
            + (f"<p class='note'>{more} more flipped samples not shown.</p>" if more > 0 else ""))
    return "".join(parts)


def differs_line(differences: Sequence[Difference], labels: Sequence[str]) -> str:
    """What differs, in one line: for two runs the fields with both values
    (``dtype (bfloat16 -> float32)``), for more runs the field names."""
    if len(labels) < 2:
        return ""
    if not differences:
        return "The runs differ in nothing recorded: same config, model, code, environment and data."
    if len(labels) == 2:
        shown = [f"{d.short} ({describe_value(d.values[0], 24)} \u2192 {describe_value(d.values[1], 24)})"
                 for d in differences[:4]]
        more = len(differences) - len(shown)
        return "The runs differ in " + ", ".join(shown) + (f" and {more} more field{'s' * (more != 1)}"
                                                           if more else "") + "."
    return f"The runs differ in {differing_names(differences)}."


@dataclass(frozen=True)
class Report:
    """A built report, ready to render.

    Top of the page: ``verdict`` (one line), ``differs`` (what differs, one
    line), ``warnings`` (tasks not comparable), ``summary_tables`` (runs x
    tasks, with three runs or more), the ``overview`` figures (the trend), the
    ``comparison_tables`` (headline, what differs); then the detail ``tables``,
    the other ``figures`` and the ``flips`` between the baseline and each other run.
    """

    name: str
    labels: Sequence[str]
    tables: Sequence[Table]
    figures: Sequence[FigureItem]
    flips: Sequence[tuple[str, str, Sequence[Flip]]]  # (baseline label, other label, flips)
    verdict: str = ""
    verdict_class: str = ""
    differs: str = ""
    warnings: Sequence[str] = ()
    summary_tables: Sequence[Table] = ()
    comparison_tables: Sequence[Table] = ()

    @property
    def title(self) -> str:
        if len(self.labels) == 2:
            return f"{self.labels[1]} vs {self.labels[0]}"
        return f"{len(self.labels)} runs" if len(self.labels) > 2 else self.labels[0]

    @property
    def overview_figures(self) -> list[FigureItem]:
        return [f for f in self.figures if f.section == "overview"]

    @property
    def detail_figures(self) -> list[FigureItem]:
        return [f for f in self.figures if f.section != "overview"]

    def markdown(self) -> str:
        out = [f"# evalsuite report: {self.title}", ""]
        if self.verdict:
            out += [f"**Verdict:** {self.verdict}", ""]
        if self.differs:
            out += [f"**What differs:** {self.differs}", ""]
        out += [f"> \u26a0 {w}" for w in self.warnings] + ([""] if self.warnings else [])
        out += [f"Runs: {', '.join(self.labels)} (the first is the baseline). Report: {self.name}.", ""]
        out += [t.markdown() for t in self.summary_tables]
        out += [f"![{f.caption}]({f.name})\n\n{f.caption}\n" for f in self.overview_figures]
        out += [t.markdown() for t in [*self.comparison_tables, *self.tables]]
        if self.flips:
            out += ["### Flipped samples", "",
                    "| baseline | run | task | lost | gained |", "|---|---|---|---|---|"]
            for base_label, label, flips in self.flips:
                for task in dict.fromkeys(f.task for f in flips):
                    lost = sum(f.task == task and f.direction == "lost" for f in flips)
                    gained = sum(f.task == task and f.direction == "gained" for f in flips)
                    out.append(f"| {base_label} | {label} | {task} | {lost} | {gained} |")
                if not flips:
                    out.append(f"| {base_label} | {label} | (none) | 0 | 0 |")
            out += ["", "The HTML report shows each flipped sample's prompt and both outputs.", ""]
        if self.detail_figures:
            out += ["### Figures", ""]
            out += [f"![{f.caption}]({f.name})\n\n{f.caption}\n" for f in self.detail_figures]
        return "\n".join(out)

    def html(self) -> str:
        """One self-contained page (``templates/report.html.j2``; images inline as
        base64 PNG; every run-provided string escaped)."""
        import jinja2

        env = jinja2.Environment(loader=jinja2.PackageLoader("evalsuite.report", "templates"), autoescape=True,
                                 trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
        env.filters["b64"] = lambda data: base64.b64encode(data).decode("ascii")
        flips = [(b, o, _flip_html(fl, b, o)) for b, o, fl in self.flips]
        return env.get_template("report.html.j2").render(
            report=self, flips=flips, generated=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))


def build_report(runs: Sequence[RunData], name: str) -> Report:
    """Verdict, differences, headline, tables, figures and flips for ``runs``
    (the first is the baseline). Raises UsageError for no runs."""
    if not runs:
        raise UsageError("report needs at least one run")
    differences = what_differs(runs)
    labels = run_labels(runs, differences)
    tasks = list(dict.fromkeys(t for run in runs for t in run.tasks))
    rows = headline_rows(runs, labels, tasks, differences)
    summary = [matrix_table(runs, labels, tasks)] if len(runs) > 2 else []
    comparison = [headline_table(rows, labels[0]), differences_table(differences, labels)] if len(runs) > 1 else []
    tables = [runs_table(runs, labels), accuracy_table(runs, labels, tasks),
              performance_table(runs, labels, tasks), memory_table(runs, labels)]
    extras = extras_table(runs, labels, tasks)
    if extras is not None:
        tables.append(extras)
    second = second_opinion_table(runs, labels, tasks)
    if second is not None:
        tables.append(second)
    flips = [(labels[0], label, flipped_samples(runs[0], run)) for label, run in zip(labels[1:], runs[1:])]
    verdicts = {run_verdict([r for r in rows if r.label == label]) for label in labels[1:]}
    verdict_class = ("mixed" if "mixed" in verdicts or {BETTER, WORSE} <= verdicts
                     else WORSE if WORSE in verdicts else BETTER if BETTER in verdicts else "")
    warnings = [f"{task}: not comparable between the runs ({', '.join(fields)} differ)"
                for task, fields in not_comparable(differences).items()]
    return Report(name=name, labels=labels, tables=tables, figures=build_figures(runs, labels, tasks), flips=flips,
                  verdict=verdict_line(rows, labels), verdict_class=verdict_class,
                  differs=differs_line(differences, labels), warnings=warnings, summary_tables=summary,
                  comparison_tables=comparison)


def default_name(runs: Sequence[RunData]) -> str:
    return _slug("_vs_".join(r.label for r in runs))[:80] if runs else "report"


def write_report(refs: Sequence[str | Path], name: str | None = None, output_dir: str | Path = "reports",
                 results_dir: str | Path = "results") -> Path:
    """Loads runs, builds the report and writes ``<output_dir>/<name>/``: ``report.md``,
    ``report.html`` and one PNG per figure. Returns the report folder.

    Raises UsageError for a run reference that holds no run, a ``name`` that is a
    path, or an ``output_dir`` that cannot be a writable directory.
    """
    from evalsuite.paths import check_name, check_output_dir, make_dir

    check_output_dir(output_dir)
    if name is not None:
        check_name(name, "--name")
    runs = [load_run(ref, results_dir) for ref in refs]
    name = name or default_name(runs)
    report = build_report(runs, name)
    folder = make_dir(Path(output_dir) / name)
    for f in report.figures:
        (folder / f.name).write_bytes(f.png)
    (folder / "report.md").write_text(report.markdown(), encoding="utf-8")
    (folder / "report.html").write_text(report.html(), encoding="utf-8")
    return folder
