"""``compare``: verdicts from paired tests and thresholds, on run directories written to disk."""

from __future__ import annotations

import json

import pytest
from test_report_data import write_run

from evalsuite.cli import main
from evalsuite.errors import UsageError
from evalsuite.report.build import load_run
from evalsuite.report.compare import REGRESSION, compare_runs, load_thresholds

# 30 samples; the candidate loses 8 that the baseline got right and gains none:
# exact McNemar p = 2 / 2**8 = 0.0078 < 0.05, drop 8/30 = 0.267 > 0.02.
BASE = [1.0] * 20 + [0.0] * 10
WORSE = [0.0] * 8 + [1.0] * 12 + [0.0] * 10
# Loses 2 and gains 1: p = 2 * P[X <= 1], X ~ Bin(3, 1/2) = 1.0, a drop that is not significant.
NOISY = [0.0, 0.0] + [1.0] * 18 + [1.0] + [0.0] * 9


def _thresholds(tmp_path, text: str):
    path = tmp_path / "t.yaml"
    path.write_text(text)
    return load_thresholds(path)


def test_significant_accuracy_drop_is_a_regression(tmp_path):
    base = load_run(write_run(tmp_path, "base", {"gsm8k": {"verdicts": BASE, "e2e_ms": 1000.0}}))
    cand = load_run(write_run(tmp_path, "cand", {"gsm8k": {"verdicts": WORSE, "e2e_ms": 1000.0}},
                              temperature=1.5))
    c = compare_runs(base, cand, load_thresholds(None))
    acc = next(x for x in c.checks if x.kind == "accuracy")
    assert (acc.test, acc.n, acc.verdict) == ("mcnemar-exact", 30, REGRESSION)
    assert acc.p_value == pytest.approx(2 / 2**8)
    assert acc.delta == pytest.approx(-8 / 30)
    assert c.regressed and c.outcome == "regression"
    assert c.config_changes["temperature"] == (0.0, 1.5)


def test_unchanged_rerun_and_insignificant_drop_pass(tmp_path):
    base = load_run(write_run(tmp_path, "base", {"t": {"verdicts": BASE}}))
    same = load_run(write_run(tmp_path, "same", {"t": {"verdicts": BASE}}))
    noisy = load_run(write_run(tmp_path, "noisy", {"t": {"verdicts": NOISY}}))
    assert not compare_runs(base, same, load_thresholds(None)).regressed
    c = compare_runs(base, noisy, load_thresholds(None))
    acc = c.checks[0]
    assert acc.verdict == "pass" and acc.p_value == 1.0 and "not significant" in acc.detail


def test_partial_credit_uses_the_paired_bootstrap(tmp_path):
    base = load_run(write_run(tmp_path, "base", {"needle": {"verdicts": [1.0, 0.5] * 20}}))
    cand = load_run(write_run(tmp_path, "cand", {"needle": {"verdicts": [0.5, 0.0] * 20}}))
    acc = compare_runs(base, cand, load_thresholds(None)).checks[0]
    assert acc.test == "paired-bootstrap"
    assert acc.delta == pytest.approx(-0.5)
    assert acc.p_value < 0.001 and acc.verdict == REGRESSION


def test_latency_and_memory_thresholds(tmp_path):
    t = _thresholds(tmp_path, "latency: {max_increase: 0.5}\nmemory: {metrics: [host_peak_rss_gib], max_increase: 0.1}\n")
    base = load_run(write_run(tmp_path, "base", {"t": {"verdicts": BASE, "e2e_ms": 1000.0}},
                              memory={"host_peak_rss_gib": 4.0}))
    ok = load_run(write_run(tmp_path, "ok", {"t": {"verdicts": BASE, "e2e_ms": 1400.0}},
                            memory={"host_peak_rss_gib": 4.4}))
    slow = load_run(write_run(tmp_path, "slow", {"t": {"verdicts": BASE, "e2e_ms": 1600.0}},
                              memory={"host_peak_rss_gib": 4.8}))
    by = lambda c: {x.kind: x for x in c.checks}
    passed = by(compare_runs(base, ok, t))
    assert passed["latency"].verdict == "pass" and passed["latency"].delta == pytest.approx(0.4)
    assert passed["memory"].verdict == "pass"
    failed = by(compare_runs(base, slow, t))
    assert failed["latency"].verdict == REGRESSION and failed["latency"].delta == pytest.approx(0.6)
    assert failed["memory"].verdict == REGRESSION and failed["memory"].delta == pytest.approx(0.2)


def test_missing_figures_read_na_and_never_fail(tmp_path):
    t = _thresholds(tmp_path, "memory: {metrics: [peak_gpu_mem_gib]}\n")
    # Answered from the response cache: no per-request timings, so no latency figure.
    base = load_run(write_run(tmp_path, "base", {"t": {"verdicts": BASE, "e2e_ms": None}}))
    cand = load_run(write_run(tmp_path, "cand", {"t": {"verdicts": BASE, "e2e_ms": None}}))
    c = compare_runs(base, cand, t)
    assert {x.kind: x.verdict for x in c.checks} == {"accuracy": "pass", "latency": "n/a", "memory": "n/a",
                                                     "run": "pass"}
    assert not c.regressed


def test_unpaired_samples_and_tasks_are_reported(tmp_path):
    base = load_run(write_run(tmp_path, "base", {"a": {"verdicts": [1.0] * 6}, "b": {"verdicts": [1.0]}}))
    cand = load_run(write_run(tmp_path, "cand", {"a": {"verdicts": [1.0] * 4}}))
    c = compare_runs(base, cand, load_thresholds(None))
    assert c.checks[0].n == 4
    assert any("2 samples are in only one run" in w for w in c.warnings)
    assert any(w.startswith("b: in the baseline only") for w in c.warnings)
    # a partial candidate is a regression: 2 samples of 'a' and all of 'b' are missing
    runs = {(x.task, x.metric): x for x in c.checks if x.kind == "run"}
    assert runs[("a", "samples")].verdict == "REGRESSION" and "2 baseline samples missing" in runs[("a", "samples")].detail
    assert runs[("b", "samples")].verdict == "REGRESSION"
    assert c.regressed


def test_a_failed_candidate_is_a_regression(tmp_path):
    import json

    base = load_run(write_run(tmp_path, "base", {"t": {"verdicts": BASE}}))
    cand_dir = write_run(tmp_path, "cand", {"t": {"verdicts": BASE}})
    run_json = json.loads((cand_dir / "run.json").read_text())
    (cand_dir / "run.json").write_text(json.dumps({**run_json, "status": "failed"}))
    c = compare_runs(base, load_run(cand_dir), load_thresholds(None))
    status = next(x for x in c.checks if x.metric == "status")
    assert status.verdict == "REGRESSION" and status.detail == "failed"
    assert c.regressed


@pytest.mark.parametrize("text, message", [
    ("accuracy: {alpha: x}\n", "accuracy.alpha"),
    ("accuracy: {resamples: abc}\n", "accuracy.resamples"),
    ("tasks: {gsm8k: {max_drop: abc}}\n", "tasks.gsm8k.max_drop"),
    ("tasks: {gsm8k: 5}\n", "tasks.gsm8k maps"),
    ("memory: {metrics: peak_rss_gib}\n", "memory.metrics is a list"),
    ("latency: {metric: nosuch}\n", "latency.metric"),
])
def test_bad_threshold_values_are_usage_errors(tmp_path, text, message):
    from evalsuite.errors import UsageError

    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match=message.replace(".", r"\.")):
        load_thresholds(path)


def test_per_task_override(tmp_path):
    t = _thresholds(tmp_path, "tasks:\n  t: {max_drop: 0.5}\n")
    base = load_run(write_run(tmp_path, "base", {"t": {"verdicts": BASE}}))
    cand = load_run(write_run(tmp_path, "cand", {"t": {"verdicts": WORSE}}))
    assert compare_runs(base, cand, t).checks[0].verdict == "pass"  # drop 0.267 < 0.5


@pytest.mark.parametrize("text, message", [
    ("acuracy: {}\n", "unknown section 'acuracy'"),
    ("accuracy: {max_dorp: 1}\n", "unknown key 'max_dorp'"),
    ("latency: {max_increase: -1}\n", "latency.max_increase must be a number >= 0"),
    ("accuracy: {alpha: 0}\n", "alpha must be in"),
])
def test_bad_thresholds_are_usage_errors(tmp_path, text, message):
    with pytest.raises(UsageError, match=message):
        _thresholds(tmp_path, text)


def test_shipped_thresholds_load():
    t = load_thresholds("thresholds/default.yaml")
    assert t["accuracy"]["max_drop"] == 0.02 and t["latency"]["metric"] == "e2e_ms_p95"


def test_cli_exit_codes_and_outputs(tmp_path, capsys):
    write_run(tmp_path, "base", {"gsm8k": {"verdicts": BASE}})
    write_run(tmp_path, "same", {"gsm8k": {"verdicts": BASE}})
    write_run(tmp_path, "worse", {"gsm8k": {"verdicts": WORSE}})
    out = tmp_path / "cmp"
    args = ["--results-dir", str(tmp_path), "--thresholds", "thresholds/default.yaml", "--output-dir", str(out)]
    assert main(["compare", "base", "same", *args]) == 0
    assert main(["compare", "base", "worse", *args]) == 1
    printed = capsys.readouterr().out
    assert "Outcome: REGRESSION" in printed and "| accuracy | gsm8k | acc |" in printed
    data = json.loads((out / "compare.json").read_text())
    assert data["outcome"] == "regression" and data["checks"][0]["verdict"] == "REGRESSION"
    md = (out / "compare.md").read_text()
    assert md.startswith("## evalsuite compare: `tiny-model · 2023-")  # labels; ids on the next line
    assert "Runs: baseline `base`, candidate `worse`." in md
    assert main(["compare", "base", "nowhere", *args]) == 2
