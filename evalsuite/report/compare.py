"""``compare BASE CAND``: is the candidate run worse than the baseline, and where?

Three kinds of check, each against a thresholds file (YAML, see
``thresholds/default.yaml``):

- **accuracy**, per task and extractor, on the samples both runs scored
  (paired by task, sample id and repeat): the exact McNemar test for 0/1
  verdicts, the paired bootstrap otherwise, with the difference's 95%
  interval (:func:`evalsuite.report.differences.task_difference`, the computation the
  report's headline uses). A drop is a regression when it is larger than
  ``max_drop`` (absolute, in the metric's units) *and* significant
  (``p < alpha``): a drop that small samples cannot tell from noise is
  reported, not failed. A task whose data files or version differ between the
  runs is not comparable: its checks read ``n/a``, with a warning.
- **latency**, per task: the relative increase of a performance figure
  (default ``e2e_ms_p95``) above ``max_increase`` (0.5 = +50%, as in
  ``thresholds/default.yaml``).
- **memory**: the relative increase of each memory figure named in
  ``metrics`` (names as the report shows them, e.g. ``peak_rss_gib``; a name
  matches any figure ending in it) above ``max_increase``.

A check whose figure is missing from either run is reported as ``n/a``, never
failed. The outcome: ``regression`` when any check regressed (exit code 1).
The output also lists what differs between the runs (the report's "what
differs" table, :func:`evalsuite.report.differences.what_differs`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evalsuite.errors import UsageError
from evalsuite.report.build import RunData, differences_table, fmt, load_run, memory_figures
from evalsuite.report.differences import (
    ABSENT,
    Difference,
    not_comparable,
    primary_scorer,
    relative_change,
    run_labels,
    task_difference,
    verdict_index,
    what_differs,
)

PASS, REGRESSION, IMPROVED, NA = "pass", "REGRESSION", "improved", "n/a"
_EPS = 1e-9  # an increase exactly at the limit passes, whatever the float rounding

DEFAULT_THRESHOLDS: dict[str, Any] = {
    "accuracy": {"max_drop": 0.02, "alpha": 0.05, "scorers": "primary", "resamples": 10_000},
    "latency": {"metric": "e2e_ms_p95", "max_increase": 0.50},
    "memory": {"metrics": ["peak_gpu_mem_gib", "host_peak_rss_gib"], "max_increase": 0.10},
    "tasks": {"needle": {"max_drop": 0.05}},
}
"""The limits without ``--thresholds``: those of ``thresholds/default.yaml`` (a test holds them equal)."""
_SECTIONS = {"accuracy": {"max_drop", "alpha", "scorers", "resamples"},
             "latency": {"metric", "max_increase"},
             "memory": {"metrics", "max_increase"}}


def _task_overrides(path: Path, values: Any) -> dict[str, dict[str, Any]]:
    """The ``tasks`` section: per-task ``max_drop``/``alpha``/``max_increase``, each a
    number >= 0; UsageError naming the task and key otherwise."""
    if not isinstance(values, dict):
        raise UsageError(f"{path}: 'tasks' maps task names to limits")
    for name, override in values.items():
        if override is not None and not isinstance(override, dict):
            raise UsageError(f"{path}: tasks.{name} maps limit names to numbers")
        for key, value in (override or {}).items():
            if key not in ("max_drop", "alpha", "max_increase"):
                raise UsageError(f"{path}: unknown key '{key}' in tasks.{name} (known: alpha, max_drop, max_increase)")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise UsageError(f"{path}: tasks.{name}.{key} must be a number >= 0")
    return {str(k): dict(v or {}) for k, v in values.items()}


def _check_limits(path: Path, merged: Mapping[str, Any]) -> None:
    """UsageError for a merged limit out of its range (negative limits, alpha outside
    (0, 1], a latency metric that is not a percentile, ...)."""
    for section, key in (("accuracy", "max_drop"), ("latency", "max_increase"), ("memory", "max_increase")):
        if not isinstance(merged[section][key], (int, float)) or merged[section][key] < 0:
            raise UsageError(f"{path}: {section}.{key} must be a number >= 0")
    alpha, resamples = merged["accuracy"]["alpha"], merged["accuracy"]["resamples"]
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha <= 1:
        raise UsageError(f"{path}: accuracy.alpha must be in (0, 1]")
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise UsageError(f"{path}: accuracy.resamples must be a whole number >= 1")
    if not isinstance(merged["latency"]["metric"], str) or not merged["latency"]["metric"].endswith(
            ("_mean", "_p50", "_p90", "_p95", "_p99")):
        raise UsageError(f"{path}: latency.metric names a percentile such as e2e_ms_p95 or ttft_ms_p50")
    metrics = merged["memory"]["metrics"]
    if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
        raise UsageError(f"{path}: memory.metrics is a list of figure names, e.g. [host_peak_rss_gib]")
    if merged["accuracy"]["scorers"] not in ("primary", "all"):
        raise UsageError(f"{path}: accuracy.scorers must be 'primary' or 'all'")


def load_thresholds(path: str | Path | None) -> dict[str, Any]:
    """The thresholds file merged over :data:`DEFAULT_THRESHOLDS`.

    ``tasks: {NAME: {max_drop: ..., alpha: ..., max_increase: ...}}`` overrides
    the accuracy and latency limits for one task. Raises UsageError for a
    missing file, an unknown key or a negative limit.
    """
    import yaml

    merged = copy.deepcopy(DEFAULT_THRESHOLDS)
    if path is None:
        return merged
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"thresholds file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise UsageError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    except (OSError, UnicodeError, RecursionError) as err:
        raise UsageError(f"cannot read {path}: {type(err).__name__} (fix the file given to --thresholds)") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: thresholds are a mapping with accuracy/latency/memory sections")
    for section, values in data.items():
        if section == "tasks":
            merged["tasks"] = _task_overrides(path, values)
            continue
        if section not in _SECTIONS:
            raise UsageError(f"{path}: unknown section '{section}' (known: accuracy, latency, memory, tasks)")
        values = values or {}
        if not isinstance(values, dict):
            raise UsageError(f"{path}: '{section}' must be a mapping of limit names to values")
        unknown = set(values) - _SECTIONS[section]
        if unknown:
            raise UsageError(f"{path}: unknown key '{min(unknown)}' in '{section}' "
                             f"(known: {', '.join(sorted(_SECTIONS[section]))})")
        merged[section].update(values)
    _check_limits(path, merged)
    _check_thresholds_schema(data, path)
    return merged


def _check_thresholds_schema(data: dict[str, Any], path: Path) -> None:
    """Types and ranges of every value against :class:`evalsuite.schemas.ThresholdsFile`,
    after :func:`load_thresholds`'s own checks (which name unknown keys)."""
    from evalsuite.schemas import ThresholdsFile, check

    check(ThresholdsFile, data, str(path), "fix the file given to --thresholds")


@dataclass(frozen=True)
class Check:
    """One row of the verdict table. ``delta`` is candidate minus baseline
    (absolute for accuracy, relative for latency and memory)."""

    kind: str
    task: str
    metric: str
    base: float | None
    cand: float | None
    delta: float | None
    limit: str
    verdict: str
    test: str | None = None
    p_value: float | None = None
    n: int | None = None
    detail: str = ""


@dataclass(frozen=True)
class Comparison:
    """Everything ``compare`` found; ``regressed`` decides the exit code.

    ``base``/``cand``: the run ids; ``labels``: their labels (baseline first);
    ``differences``: what differs between them; ``config_changes``: the same,
    as ``{field: (baseline value, candidate value)}``.
    """

    base: str
    cand: str
    checks: Sequence[Check]
    warnings: Sequence[str] = ()
    config_changes: Mapping[str, tuple[Any, Any]] = field(default_factory=dict)
    differences: Sequence[Difference] = ()
    labels: tuple[str, str] = ("baseline", "candidate")

    @property
    def regressed(self) -> bool:
        return any(c.verdict == REGRESSION for c in self.checks)

    @property
    def outcome(self) -> str:
        return "regression" if self.regressed else "pass"

    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base, "candidate": self.cand, "outcome": self.outcome,
                "labels": {"base": self.labels[0], "candidate": self.labels[1]},
                "checks": [asdict(c) for c in self.checks], "warnings": list(self.warnings),
                "config_changes": {k: {"base": a, "candidate": b} for k, (a, b) in self.config_changes.items()},
                "not_comparable": not_comparable(self.differences)}


def _task_limit(thresholds: Mapping[str, Any], task: str, section: str, key: str) -> Any:
    override = thresholds.get("tasks", {}).get(task) or {}
    return override.get(key, thresholds[section][key])


def accuracy_checks(base: RunData, cand: RunData, thresholds: Mapping[str, Any],
                    differences: Sequence[Difference] | None = None) -> tuple[list[Check], list[str]]:
    """Paired tests per task and extractor on the samples both runs scored
    (:func:`evalsuite.report.differences.task_difference`); ``n/a`` on a task the runs
    are not comparable on (``differences``: :func:`what_differs` of the two runs)."""
    checks, warnings = [], []
    indexes = (verdict_index(base), verdict_index(cand))
    blocked = not_comparable(what_differs([base, cand]) if differences is None else differences)
    for task in [t for t in base.tasks if t in cand.metrics]:
        primary = primary_scorer(base, task)
        scorers = list(base.metrics[task].get("scores") or {}) if thresholds["accuracy"]["scorers"] == "all" \
            else [primary] if primary else []
        max_drop = _task_limit(thresholds, task, "accuracy", "max_drop")
        alpha = _task_limit(thresholds, task, "accuracy", "alpha")
        limit = f"drop <= {max_drop:g} or p >= {alpha:g}"
        if task in blocked:
            warnings.append(f"{task}: not comparable ({', '.join(blocked[task])} differ); its accuracy is not checked")
        for i, scorer in enumerate(scorers):
            d = task_difference(base, cand, task, scorer, resamples=int(thresholds["accuracy"]["resamples"]),
                                indexes=indexes)
            if i == 0 and d.unpaired:
                warnings.append(f"{task}: {d.unpaired} samples are in only one run and are left out of the paired test")
            r = d.result
            if r is None:
                checks.append(Check("accuracy", task, scorer, None, None, None, limit, NA, detail="no paired samples"))
                continue
            significant = r.significant(alpha)
            if task in blocked:
                verdict = NA
            elif -r.diff > max_drop + _EPS and significant:
                verdict = REGRESSION
            elif r.diff > max_drop + _EPS and significant:
                verdict = IMPROVED
            else:
                verdict = PASS
            detail = f"diff 95% CI [{r.ci95[0]:+.3f}, {r.ci95[1]:+.3f}]"
            if r.test == "mcnemar-exact":
                detail = f"{r.losses} lost, {r.wins} gained; " + detail
            if task in blocked:
                detail += "; not comparable: " + ", ".join(blocked[task])
            elif verdict == PASS and -r.diff > max_drop + _EPS:
                detail += "; drop not significant"
            checks.append(Check("accuracy", task, scorer, r.baseline_mean, r.candidate_mean, r.diff, limit, verdict,
                                r.test, r.p_value, r.n, detail))
    for task in base.tasks:
        if task not in cand.metrics:
            warnings.append(f"{task}: in the baseline only; not compared")
    for task in cand.tasks:
        if task not in base.metrics:
            warnings.append(f"{task}: in the candidate only; not compared")
    return checks, warnings


def latency_checks(base: RunData, cand: RunData, thresholds: Mapping[str, Any]) -> list[Check]:
    """Relative increase of the latency figure per task."""
    metric = thresholds["latency"]["metric"]
    checks = []
    for task in [t for t in base.tasks if t in cand.metrics]:
        b = (base.metrics[task].get("performance") or {}).get(metric)
        c = (cand.metrics[task].get("performance") or {}).get(metric)
        limit_value = _task_limit(thresholds, task, "latency", "max_increase")
        rel = relative_change(b, c)
        verdict = NA if rel is None else REGRESSION if rel > limit_value + _EPS else PASS
        checks.append(Check("latency", task, metric, b, c, rel, f"increase <= {limit_value:.0%}", verdict,
                            detail="" if rel is not None else "not measured in both runs"))
    return checks


def _all_memory(run: RunData) -> dict[str, float]:
    out = dict(run.memory)
    for task, m in run.metrics.items():
        out.update(memory_figures({"metrics": {task: m}}))
    return out


def memory_checks(base: RunData, cand: RunData, thresholds: Mapping[str, Any]) -> list[Check]:
    """Relative increase of each named memory figure (matched by name suffix)."""
    limit_value = thresholds["memory"]["max_increase"]
    b_all, c_all = _all_memory(base), _all_memory(cand)
    checks = []
    for wanted in thresholds["memory"]["metrics"] or []:
        names = [n for n in b_all if n == wanted or n.endswith("." + wanted)]
        if not names:
            checks.append(Check("memory", "-", wanted, None, c_all.get(wanted), None, f"increase <= {limit_value:.0%}",
                                NA, detail="not recorded in the baseline"))
        for name in names:
            b, c = b_all.get(name), c_all.get(name)
            rel = relative_change(b, c)
            verdict = NA if rel is None else REGRESSION if rel > limit_value + _EPS else PASS
            checks.append(Check("memory", "-", name, b, c, rel, f"increase <= {limit_value:.0%}", verdict,
                                detail="" if rel is not None else "not recorded in both runs"))
    return checks


def config_changes(base: RunData, cand: RunData,
                   differences: Sequence[Difference] | None = None) -> dict[str, tuple[Any, Any]]:
    """What differs between the runs (:func:`evalsuite.report.differences.what_differs`)
    as ``{field: (baseline value, candidate value)}``."""
    differences = what_differs([base, cand]) if differences is None else differences
    return {d.field: (_value(d.values[0]), _value(d.values[1])) for d in differences}


def _value(value: Any) -> Any:
    return None if value is ABSENT else value


def completeness_checks(base: RunData, cand: RunData) -> list[Check]:
    """The candidate must have finished, and scored every task and sample the
    baseline scored: a crashed or partial candidate is a regression, not a pass."""
    checks = []
    statuses = [h.get("status") for h in cand.headers]
    unfinished = [s for s in statuses if s != "complete"]
    checks.append(Check("run", "*", "status", None, None, None, "complete",
                        REGRESSION if unfinished or not statuses else PASS,
                        detail=", ".join(str(s) for s in statuses) or "no run.json"))
    b_index, c_index = verdict_index(base), verdict_index(cand)
    for task in base.tasks:
        if task not in cand.metrics:
            checks.append(Check("run", task, "samples", None, None, None, "task present", REGRESSION,
                                detail="task missing from the candidate"))
            continue
        keys = [k for k in b_index if k[0] == task]
        missing = sum(1 for k in keys if k not in c_index)
        checks.append(Check("run", task, "samples", float(len(keys)), float(len(keys) - missing), None,
                            "every baseline sample scored", REGRESSION if missing else PASS,
                            detail=f"{missing} baseline samples missing from the candidate" if missing else ""))
    return checks


def compare_runs(base: RunData, cand: RunData, thresholds: Mapping[str, Any]) -> Comparison:
    """Every check of ``thresholds`` on two loaded runs, after the completeness checks."""
    differences = what_differs([base, cand])
    acc, warnings = accuracy_checks(base, cand, thresholds, differences)
    return Comparison(base=base.label, cand=cand.label,
                      checks=acc + latency_checks(base, cand, thresholds) + memory_checks(base, cand, thresholds)
                      + completeness_checks(base, cand),
                      warnings=warnings, config_changes=config_changes(base, cand, differences),
                      differences=differences, labels=tuple(run_labels([base, cand], differences)))


def _delta(check: Check) -> str:
    if check.delta is None:
        return "-"
    return f"{check.delta:+.3f}" if check.kind == "accuracy" else f"{check.delta:+.1%}"


def to_markdown(comparison: Comparison) -> str:
    """The verdict table and notes, for a CI comment."""
    mark = {REGRESSION: "❌ REGRESSION", PASS: "✅ pass", IMPROVED: "🟢 improved", NA: "n/a"}
    base_label, cand_label = comparison.labels
    lines = [f"## evalsuite compare: `{cand_label}` vs baseline `{base_label}`", "",
             f"Runs: baseline `{comparison.base}`, candidate `{comparison.cand}`.", "",
             f"**Outcome: {comparison.outcome.upper()}**", "",
             "| check | task | metric | baseline | candidate | change | limit | test | p | n | verdict | detail |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in comparison.checks:
        p = "-" if c.p_value is None else (f"{c.p_value:.2e}" if c.p_value < 1e-3 else f"{c.p_value:.3f}")
        lines.append(f"| {c.kind} | {c.task} | {c.metric} | {fmt(c.base)} | {fmt(c.cand)} | {_delta(c)} | {c.limit} | "
                     f"{c.test or '-'} | {p} | {fmt(c.n)} | {mark[c.verdict]} | {c.detail} |")
    lines += ["", differences_table(comparison.differences, comparison.labels).markdown().rstrip("\n")]
    if comparison.warnings:
        lines += [""] + [f"- ⚠ {w}" for w in comparison.warnings]
    lines += ["", ("Accuracy: paired by task, sample id and repeat; exact McNemar and Newcombe's 95% interval "
                   "for 0/1 verdicts, paired bootstrap otherwise (as in `evalsuite report`). A drop fails only "
                   "when it exceeds the limit and is significant.")]
    return "\n".join(lines) + "\n"


def write_comparison(base_ref: str | Path, cand_ref: str | Path, thresholds_path: str | Path | None,
                     output_dir: str | Path | None = None, results_dir: str | Path = "results") -> tuple[Comparison, Path]:
    """Loads both runs, compares them and writes ``compare.json`` and ``compare.md``
    into ``output_dir`` (default ``reports/compare_<base>_vs_<cand>/``)."""
    from evalsuite.paths import check_output_dir, make_dir

    if output_dir:
        check_output_dir(output_dir)
    thresholds = load_thresholds(thresholds_path)
    base, cand = load_run(base_ref, results_dir), load_run(cand_ref, results_dir)
    comparison = compare_runs(base, cand, thresholds)
    folder = make_dir(Path(output_dir) if output_dir else Path("reports") / f"compare_{base.label}_vs_{cand.label}")
    data = {**comparison.to_dict(), "thresholds": thresholds,
            "paths": {"base": str(base.path), "candidate": str(cand.path)}}
    (folder / "compare.json").write_text(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n",
                                         encoding="utf-8")
    (folder / "compare.md").write_text(to_markdown(comparison), encoding="utf-8")
    return comparison, folder
