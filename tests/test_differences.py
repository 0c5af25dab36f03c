"""What differs between runs, their labels, and the paired difference that
``report`` and ``compare`` share: on run directories written by the runner's stages."""

from __future__ import annotations

import json

import pytest
from test_report_data import write_run

from evalsuite.report.build import build_report, headline_rows, load_run
from evalsuite.report.compare import compare_runs, load_thresholds, to_markdown
from evalsuite.report.differences import (
    ABSENT,
    not_comparable,
    run_labels,
    task_difference,
    what_differs,
)


def _load(*paths):
    return [load_run(p) for p in paths]


def test_runs_that_differ_only_in_dtype_differ_in_dtype_only(tmp_path):
    runs = _load(write_run(tmp_path, "a", {"t": {"verdicts": [1.0, 0.0]}}, dtype="bfloat16"),
                 write_run(tmp_path, "b", {"t": {"verdicts": [1.0, 1.0]}}, dtype="float32"))
    (d,) = what_differs(runs)
    assert (d.field, d.group, d.short, d.values, d.not_comparable) == (
        "engine.dtype", "config", "dtype", ("bfloat16", "float32"), ())
    assert run_labels(runs) == ["tiny-model · dtype=bfloat16", "tiny-model · dtype=float32"]


def test_provenance_environment_and_backend_fields_are_listed(tmp_path):
    h100 = [{"index": i, "name": "NVIDIA H100 80GB HBM3", "memory_gib": 79.1} for i in range(2)]
    a = write_run(tmp_path, "a", {"t": {"verdicts": [1.0]}}, header={
        "provenance": {"versions": {"vllm": "0.8.5"}, "host": {"gpus": h100}},
        "backend": {"chat_template_sha256": "ab" * 32}})
    b = write_run(tmp_path, "b", {"t": {"verdicts": [1.0]}}, header={
        "provenance": {"versions": {"vllm": "0.9.0"}, "host": {"gpus": []}},
        "backend": {"chat_template_sha256": "cd" * 32}})
    found = {d.field: (d.group, d.short, d.values) for d in what_differs(_load(a, b))}
    assert found == {
        "backend.chat_template_sha256": ("backend", "chat_template_sha256", ("ab" * 32, "cd" * 32)),
        "provenance.versions.vllm": ("provenance", "vllm version", ("0.8.5", "0.9.0")),
        "provenance.host.gpus": ("environment", "gpus",
                                 ("NVIDIA H100 80GB HBM3 (79.1 GiB), NVIDIA H100 80GB HBM3 (79.1 GiB)", "none")),
    }


def test_task_version_or_data_that_differ_make_the_task_not_comparable(tmp_path):
    a = write_run(tmp_path, "a", {"t": {"verdicts": [1.0], "version": "1"}, "u": {"verdicts": [1.0], "data": "x"},
                                  "only_a": {"verdicts": [1.0]}})
    b = write_run(tmp_path, "b", {"t": {"verdicts": [1.0], "version": "2"}, "u": {"verdicts": [1.0], "data": "y"}})
    differences = what_differs(_load(a, b))
    assert not_comparable(differences) == {"t": ["tasks.t.version"], "u": ["tasks.u.data.u.jsonl"]}
    # A task one run does not have is no difference of its fields.
    assert not [d for d in differences if "only_a" in d.field]
    shorts = {d.field: d.short for d in differences}
    assert shorts == {"tasks.t.version": "t version", "tasks.u.data.u.jsonl": "u data"}


def test_a_suite_member_that_disagrees_is_listed_per_entry(tmp_path):
    def suite(name, hot):
        root = tmp_path / name
        write_run(root, "gsm8k", {"gsm8k": {"verdicts": [1.0]}})
        write_run(root, "gsm8k-hot", {"gsm8k": {"verdicts": [0.0]}}, temperature=hot)
        (root / "suite.json").write_text(json.dumps({"suite": "s", "runs": ["gsm8k", "gsm8k-hot"]}))
        return root

    runs = _load(suite("one", 1.0), suite("two", 0.5))
    found = {d.field: d.values for d in what_differs(runs)}
    assert found == {"temperature [gsm8k-hot]": (1.0, 0.5), "tasks.gsm8k-hot.sampling.temperature": (1.0, 0.5)}


def test_labels_are_given_derived_or_dated_and_never_ids(tmp_path):
    given = write_run(tmp_path, "20261202-010831-x-2ee09b", {"t": {"verdicts": [1.0]}}, label="nightly 12-02")
    rerun1 = write_run(tmp_path, "20261202-020000-x-aaaaaa", {"t": {"verdicts": [1.0]}}, started_at=1_800_000_000.0)
    rerun2 = write_run(tmp_path, "20261202-030000-x-bbbbbb", {"t": {"verdicts": [1.0]}}, started_at=1_800_003_600.0)
    assert run_labels(_load(given, rerun1, rerun2)) == [
        "nightly 12-02", "tiny-model · 2027-01-15 08:00", "tiny-model · 2027-01-15 09:00"]
    other = write_run(tmp_path, "c", {"t": {"verdicts": [1.0]}}, model="Qwen2.5-0.5B")
    assert run_labels(_load(rerun1, other)) == ["tiny-model", "Qwen2.5-0.5B"]
    retrained = write_run(tmp_path, "d", {"t": {"verdicts": [1.0]}}, header={"model": {"sha256": "9f" * 32}})
    same_time = write_run(tmp_path, "e", {"t": {"verdicts": [1.0]}}, started_at=1_800_000_000.0)
    labels = run_labels(_load(rerun1, retrained, same_time))
    assert labels[1] == "tiny-model@9f9f9f9f"
    assert labels[0] != labels[2] and labels[2].endswith("#2")  # same model, same start minute


def test_report_and_compare_share_the_paired_numbers(tmp_path):
    """The headline and compare print the same difference, interval, p-value and n,
    for 0/1 verdicts (McNemar) and for partial credit (bootstrap)."""
    base = write_run(tmp_path, "a", {"bin": {"verdicts": [1.0] * 14 + [0.0] * 16},
                                     "part": {"verdicts": [1.0, 0.5, 0.25] * 10}})
    cand = write_run(tmp_path, "b", {"bin": {"verdicts": [0.0] * 6 + [1.0] * 8 + [1.0] * 2 + [0.0] * 14},
                                     "part": {"verdicts": [0.5, 0.5, 0.0] * 10}}, temperature=0.3)
    runs = _load(base, cand)
    checks = {c.task: c for c in compare_runs(*runs, load_thresholds(None)).checks if c.kind == "accuracy"}
    rows = {r.task: r for r in headline_rows(runs, ["a", "b"], ["bin", "part"], what_differs(runs))}
    for task, test in (("bin", "mcnemar-exact"), ("part", "paired-bootstrap")):
        r = rows[task].difference.result
        assert r == task_difference(*runs, task).result
        c = checks[task]
        assert (c.test, c.n, c.base, c.cand, c.delta, c.p_value) == (
            test, r.n, r.baseline_mean, r.candidate_mean, r.diff, r.p_value)
        assert f"diff 95% CI [{r.ci95[0]:+.3f}, {r.ci95[1]:+.3f}]" in c.detail
    # bin: 6 losses, 2 wins of 30: diff -4/30, p = 2 * P[X <= 2], X ~ Bin(8, 1/2) = 2 * 37 / 256.
    assert rows["bin"].difference.result.diff == pytest.approx(-4 / 30)
    assert rows["bin"].difference.result.p_value == pytest.approx(74 / 256)
    # The same "what differs" table, rendered by the same function, in both outputs.
    report_md = build_report(runs, "r").markdown()
    table = report_md[report_md.index("### What differs"):].split("\n\n### ")[0].strip()
    assert "| config | temperature | 0 | 0.3 |  |" in table
    assert table in to_markdown(compare_runs(*runs, load_thresholds(None)))


def test_values_absent_and_missing_are_told_apart(tmp_path):
    from evalsuite.report.differences import describe_value

    assert describe_value(ABSENT) == "(no such task)" and describe_value(None) == "-"
    assert describe_value("f" * 64) == "f" * 12 and describe_value("a" * 40 + "-dirty") == "a" * 12 + "-dirty"
    assert describe_value({"b": 1, "a": [2]}) == '{"a": [2], "b": 1}' and describe_value(0.25) == "0.25"
    assert describe_value("x" * 100, 10) == "x" * 9 + "…"
