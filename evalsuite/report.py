"""Comparison reports over finished runs: ``reports/<name>/report.md`` and ``report.html``.

A report only reads results directories (never calls a model). It shows, for
tasks x runs: accuracy with its 95% interval per extractor, latency
percentiles, throughput and memory; figures (accuracy with interval bars,
latency distributions, memory, needle heatmaps, and any PNG a task wrote into
its run directory); and, in HTML, the samples whose verdict flipped between the
first run (the baseline) and each other run, prompts and outputs side by side.
``report.html`` is self-contained: its images are embedded as base64 PNG.

A "run" here is a run directory (``run.json`` + ``samples.jsonl``) or a suite
directory (``suite.json`` and one run directory per entry), read as one run.
Figures a run does not have (older schema, another backend) show as "-".
"""

from __future__ import annotations

import base64
import html
import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalsuite.errors import UsageError

MISSING = "-"
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

    ``label``: short name (the directory name); ``metrics[task]``: the task's
    metrics block from ``run.json`` (for a suite, entries whose id differs from
    the task name are keyed by their id); ``samples``: every sample record,
    its ``task`` set to that same key; ``headers``: the member ``run.json``
    dicts without metrics; ``memory``: run-level memory figures, flattened to
    ``{dotted name: number}``; ``artifacts``: PNG files found in the run dirs.
    """

    label: str
    path: Path
    metrics: Mapping[str, Any]
    samples: Sequence[Mapping[str, Any]]
    headers: Sequence[Mapping[str, Any]]
    memory: Mapping[str, float] = field(default_factory=dict)
    artifacts: Sequence[Path] = ()

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


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise UsageError(f"cannot read {path}: {err}") from None


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
    from evalsuite.results import read_samples

    path = resolve_run_dir(ref, results_dir)
    if (path / "suite.json").is_file():
        suite = _read_json(path / "suite.json")
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
    for member in members:
        run_json = _read_json(member / "run.json")
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
            samples.extend({**r, "task": renames.get(r.get("task"), r.get("task"))} for r in read_samples(member))
        headers.append({k: v for k, v in run_json.items() if k != "metrics"})
        artifacts.extend(sorted(member.rglob("*.png")))
    return RunData(label=path.name, path=path, metrics=metrics, samples=samples, headers=headers,
                   memory=memory, artifacts=tuple(artifacts))


def unique_labels(runs: Sequence[RunData]) -> list[str]:
    """Run labels, made unique by a ``#2`` suffix where two runs share a name."""
    seen: dict[str, int] = {}
    out = []
    for run in runs:
        seen[run.label] = seen.get(run.label, 0) + 1
        out.append(run.label if seen[run.label] == 1 else f"{run.label}#{seen[run.label]}")
    return out


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
    """A titled table of text cells, rendered to Markdown or HTML."""

    title: str
    header: Sequence[str]
    rows: Sequence[Sequence[str]]
    note: str = ""
    css_id: str = ""

    def markdown(self) -> str:
        esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")
        lines = [f"### {self.title}", ""]
        if self.note:
            lines += [self.note, ""]
        lines.append("| " + " | ".join(esc(h) for h in self.header) + " |")
        lines.append("|" + "|".join("---" for _ in self.header) + "|")
        lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in self.header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                       for row in self.rows)
        note = f"<p class='note'>{html.escape(self.note)}</p>" if self.note else ""
        ident = f" id='{self.css_id}'" if self.css_id else ""
        return (f"<h3>{html.escape(self.title)}</h3>{note}<table class='data'{ident}>"
                f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def runs_table(runs: Sequence[RunData], labels: Sequence[str]) -> Table:
    rows = []
    for label, run in zip(labels, runs):
        started = run.info("started_at")
        rows.append([
            label, fmt(run.info("model", "name")), fmt(run.info("backend", "backend") or run.info("config", "backend")),
            ", ".join(run.tasks) or MISSING, ", ".join(sorted({str(h.get("status")) for h in run.headers})),
            fmt((run.info("provenance", "git_revision") or "")[:12] or None),
            time.strftime("%Y-%m-%d %H:%M", time.gmtime(started)) if isinstance(started, (int, float)) else MISSING,
            str(run.path),
        ])
    return Table("Runs", ["run", "model", "backend", "tasks", "status", "git", "started (UTC)", "directory"],
                 rows, css_id="runs")


def accuracy_table(runs: Sequence[RunData], labels: Sequence[str], tasks: Sequence[str]) -> Table:
    """Rows: task x extractor (primary first); a column per run with
    ``value [lo, hi]`` and one with ``n / no-answer rate``."""
    header = ["task", "metric"]
    for label in labels:
        header += [f"{label}", f"{label} n / no-answer"]
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
            for run in runs:
                s = ((run.metrics.get(task) or {}).get("scores") or {}).get(scorer)
                if not s or s.get("value") is None:
                    row += [MISSING, MISSING]
                    continue
                ci = s.get("ci95")
                row.append(f"{s['value']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""))
                row.append(f"{fmt(s.get('n'))} / {fmt(s.get('extraction_failure_rate'), 2)}")
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


def memory_table(runs: Sequence[RunData], labels: Sequence[str]) -> Table:
    figures = _memory_by_name(runs, labels)
    rows = [[name] + [fmt(figures[name].get(label), 3) for label in labels] for name in figures]
    if not rows:
        rows = [["(no memory figures recorded)"] + [MISSING] * len(labels)]
    return Table("Memory", ["figure"] + list(labels), rows, css_id="memory",
                 note="Memory as each run recorded it (GPU memory through NVML, host RSS, KV cache); "
                      "units are in the names.")


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

def verdict_index(run: RunData) -> dict[tuple[str, str, int], Mapping[str, Any]]:
    """Sample records by ``(task, sample_id, repeat)``: the pairing key of a comparison."""
    return {(str(r.get("task")), str(r.get("sample_id")), int(r.get("repeat") or 0)): r for r in run.samples}


def primary_scorer(run: RunData, task: str) -> str | None:
    m = run.metrics.get(task) or {}
    return m.get("primary") or next(iter(m.get("scores") or {}), None)


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
    """A rendered figure: file name in the report folder, caption, PNG bytes."""

    name: str
    caption: str
    png: bytes


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
    """Every report figure that the runs have data for."""
    from evalsuite import plots

    items: list[FigureItem] = []

    def add(name: str, caption: str, fig) -> None:
        items.append(FigureItem(name, caption, plots.png_bytes(fig)))

    acc = {}
    for label, run in zip(labels, runs):
        for task in tasks:
            scorer = primary_scorer(run, task)
            s = ((run.metrics.get(task) or {}).get("scores") or {}).get(scorer) if scorer else None
            if s and s.get("value") is not None:
                ci = s.get("ci95") or [None, None]
                acc[(task, label)] = (s["value"], ci[0], ci[1])
    if acc:
        add("accuracy.png", "Primary metric per task and run, with 95% interval bars.",
            plots.accuracy_figure(tasks, labels, acc))
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
                add(f"heatmap_{_slug(task)}_{_slug(label)}.png", f"Recall by context length and depth: {task}, {label}.",
                    plots.heatmap_figure([str(n) for n in lengths], [f"{d:g}" for d in depths], values,
                                         f"{task} recall: {label}"))
    for label, run in zip(labels, runs):
        for art in run.artifacts:
            rel = art.relative_to(run.path)
            items.append(FigureItem(f"artifact_{_slug(label)}_{_slug(str(rel))}",
                                    f"{label}: {rel} (written by the task)", art.read_bytes()))
    return items


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:60] or "x"


# --------------------------------------------------------------------------- rendering

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:1.5em auto;padding:0 1.5em;max-width:1400px;color:#222}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table.data{border-collapse:collapse;margin:.5em 0 1em;font-size:.9em}
table.data th,table.data td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
table.data th{background:#f2f2f2}.note{color:#555;font-size:.85em;margin:.2em 0}
figure{display:inline-block;margin:.5em 1em .5em 0}figcaption{font-size:.85em;color:#555;max-width:640px}
img{max-width:100%;border:1px solid #ddd}
table.flips{border-collapse:collapse;width:100%;table-layout:fixed;font-size:.85em;margin-bottom:1em}
table.flips td,table.flips th{border:1px solid #ccc;padding:.3em;vertical-align:top}
table.flips pre{white-space:pre-wrap;word-break:break-word;margin:0;max-height:22em;overflow:auto}
.lost{color:#b00020;font-weight:bold}.gained{color:#0a7d24;font-weight:bold}
"""


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


@dataclass(frozen=True)
class Report:
    """A built report: its name, tables, figures and flip lists, ready to render."""

    name: str
    labels: Sequence[str]
    tables: Sequence[Table]
    figures: Sequence[FigureItem]
    flips: Sequence[tuple[str, str, Sequence[Flip]]]  # (baseline label, other label, flips)

    def markdown(self) -> str:
        out = [f"# evalsuite report: {self.name}", "",
               f"Runs: {', '.join(self.labels)} (the first is the baseline).", ""]
        out += [t.markdown() for t in self.tables]
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
        if self.figures:
            out += ["### Figures", ""]
            out += [f"![{f.caption}]({f.name})\n\n{f.caption}\n" for f in self.figures]
        return "\n".join(out)

    def html(self) -> str:
        figures = "".join(
            f"<figure><img alt='{html.escape(f.caption)}' src='data:image/png;base64,"
            f"{base64.b64encode(f.png).decode('ascii')}'><figcaption>{html.escape(f.caption)}</figcaption></figure>"
            for f in self.figures)
        flips = "".join(f"<h3>{html.escape(b)} &rarr; {html.escape(o)}</h3>{_flip_html(fl, b, o)}"
                        for b, o, fl in self.flips)
        return (
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>evalsuite report: {html.escape(self.name)}</title><style>{_CSS}</style></head><body>"
            f"<h1>evalsuite report: {html.escape(self.name)}</h1>"
            f"<p>Runs: {html.escape(', '.join(self.labels))} (the first is the baseline). "
            f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.</p>"
            "<h2>Tables</h2>" + "".join(t.html() for t in self.tables)
            + "<h2>Figures</h2>" + (figures or "<p>No figure data.</p>")
            + ("<h2>Flipped samples</h2>" + flips if self.flips else "")
            + "</body></html>\n")


def build_report(runs: Sequence[RunData], name: str) -> Report:
    """Tables, figures and flips for ``runs`` (the first is the baseline)."""
    if not runs:
        raise UsageError("report needs at least one run")
    labels = unique_labels(runs)
    tasks = list(dict.fromkeys(t for run in runs for t in run.tasks))
    tables = [runs_table(runs, labels), accuracy_table(runs, labels, tasks),
              performance_table(runs, labels, tasks), memory_table(runs, labels)]
    extras = extras_table(runs, labels, tasks)
    if extras is not None:
        tables.append(extras)
    second = second_opinion_table(runs, labels, tasks)
    if second is not None:
        tables.append(second)
    flips = [(labels[0], label, flipped_samples(runs[0], run)) for label, run in zip(labels[1:], runs[1:])]
    return Report(name=name, labels=labels, tables=tables, figures=build_figures(runs, labels, tasks), flips=flips)


def default_name(runs: Sequence[RunData]) -> str:
    return _slug("_vs_".join(r.label for r in runs))[:80] if runs else "report"


def write_report(refs: Sequence[str | Path], name: str | None = None, output_dir: str | Path = "reports",
                 results_dir: str | Path = "results") -> Path:
    """Loads runs, builds the report and writes ``<output_dir>/<name>/``: ``report.md``,
    ``report.html`` and one PNG per figure. Returns the report folder.

    Raises UsageError for a run reference that holds no run.
    """
    runs = [load_run(ref, results_dir) for ref in refs]
    name = name or default_name(runs)
    report = build_report(runs, name)
    folder = Path(output_dir) / name
    folder.mkdir(parents=True, exist_ok=True)
    for f in report.figures:
        (folder / f.name).write_bytes(f.png)
    (folder / "report.md").write_text(report.markdown(), encoding="utf-8")
    (folder / "report.html").write_text(report.html(), encoding="utf-8")
    return folder
