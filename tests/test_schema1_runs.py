"""Results of schema 1, as the run writer writes them (not hand-written fixtures),
load in ``report`` and ``compare`` from the command line. The runs are real runs of
the gsm8k task on the scripted backend (fixed outputs), so their verdicts are known."""

from __future__ import annotations

import json

import pytest

from evalsuite.cli import main


@pytest.fixture
def two_runs(tmp_path, gsm8k_data_dir):
    """Run ``base`` answers test-0 right (gold 18); ``cand`` answers test-0 and test-1 (gold 3)."""
    outputs = {"base": {"gsm8k/test-0": "The answer is 18.", "*": "no idea"},
               "cand": {"gsm8k/test-0": "The answer is 18.", "gsm8k/test-1": "The answer is 3.", "*": "no idea"}}
    for name, script in outputs.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(script))
        assert main(["run", "--tasks", "gsm8k", "--backend", "scripted", "--model", str(path), "--limit", "4",
                     "--data-dir", str(gsm8k_data_dir), "--output-dir", str(tmp_path / "results"),
                     "--run-id", name, "--no-progress", "--task-arg", "gsm8k.second_opinion=false"]) == 0
    return tmp_path / "results"


def test_schema_1_runs_load_in_report_and_compare(two_runs, tmp_path, capsys):
    for name in ("base", "cand"):
        assert json.loads((two_runs / name / "run.json").read_text())["schema_version"] == 1
    capsys.readouterr()
    assert main(["report", "base", "cand", "--results-dir", str(two_runs), "--output-dir",
                 str(tmp_path / "reports"), "--name", "r"]) == 0
    assert (tmp_path / "reports" / "r" / "report.html").is_file()
    code = main(["compare", "base", "cand", "--results-dir", str(two_runs), "--output-dir", str(tmp_path / "cmp")])
    assert code == 0  # the candidate is better: no regression
    checks = json.loads((tmp_path / "cmp" / "compare.json").read_text())["checks"]
    strict = next(c for c in checks if c["kind"] == "accuracy" and c["metric"] == "strict-match")
    # base: 1 of 4 right, cand: 2 of 4; paired on 4 samples, one gained, none lost.
    assert (strict["base"], strict["cand"], strict["n"], strict["verdict"]) == (0.25, 0.5, 4, "pass")
    assert strict["detail"].startswith("0 lost, 1 gained")
