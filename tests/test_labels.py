"""Run labels: ``--label`` on ``run`` and ``label:`` in suites reach ``run.json``
(and ``suite.json``) and name the run in reports; a bad label is a usage error."""

from __future__ import annotations

from argparse import Namespace

import pytest

from evalsuite.backends.scripted import ScriptedBackend
from evalsuite.cli import build_parser, config_from_args, main
from evalsuite.config import MAX_LABEL, RunConfig
from evalsuite.errors import UsageError
from evalsuite.pipeline.suite import read_suite, run_suite
from evalsuite.report.build import build_report, load_run


@pytest.mark.parametrize("label", ["", "   ", "two\nlines", "x" * (MAX_LABEL + 1), 7])
def test_a_bad_label_is_a_usage_error(label):
    with pytest.raises(UsageError, match="--label must be one line"):
        RunConfig(tasks=("gsm8k",), label=label)


def test_a_bad_label_on_the_command_line_ends_with_one_line(tmp_path, capsys):
    assert main(["run", "--tasks", "gsm8k", "--label", "a\nb", "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("evalsuite: error: --label must be one line")
    assert not any(tmp_path.iterdir())


def test_label_flag_reaches_run_json_and_the_report(tmp_path, embedded_model, gsm8k_data_dir):
    from evalsuite.pipeline.runner import run

    args = build_parser().parse_args(["run", "--tasks", "gsm8k", "--limit", "2", "--model", embedded_model,
                                      "--data-dir", str(gsm8k_data_dir), "--output-dir", str(tmp_path),
                                      "--label", "fp32 rerun", "--run-id", "r1", "--no-cache"])
    config = config_from_args(args)
    assert config.label == "fp32 rerun"
    result = run(config, progress=False, backend=ScriptedBackend(outputs={"*": "The answer is 18"}))
    loaded = load_run(result.run_dir)
    assert loaded.given_label == "fp32 rerun" and loaded.label == "r1"
    assert build_report([loaded], "r").labels == ["fp32 rerun"]


def test_suite_label_and_its_override(tmp_path, gsm8k_data_dir, capsys):
    path = tmp_path / "s.yaml"
    path.write_text("name: tiny\nlabel: nightly 2026-12-02\ntasks:\n  - {name: gsm8k, limit: 2}\n"
                    "  - {name: gsm8k, id: gsm8k-hot, limit: 2, temperature: 1.0}\n")
    suite = read_suite(path)
    assert suite.label == "nightly 2026-12-02" and {c.label for c in suite.configs} == {"nightly 2026-12-02"}
    assert read_suite(path, {"label": "other"}).label == "other"
    args = Namespace(model=None, data_dir=str(gsm8k_data_dir), limit=None, run_id="s1", label=None,
                     output_dir=tmp_path / "results", no_progress=True, no_cache=True, max_error_rate=None)
    assert run_suite(path, args, backend=ScriptedBackend(outputs={"*": "The answer is 18"})) == 0
    assert load_run(tmp_path / "results" / "s1").given_label == "nightly 2026-12-02"
    path.write_text("name: tiny\nlable: x\ntasks: [gsm8k]\n")
    with pytest.raises(UsageError, match="did you mean 'label'"):
        read_suite(path)


def test_label_applies_beside_a_suite_and_not_beside_resume(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text("name: tiny\ntasks: [{name: gsm8k, limit: 1}]\n")
    assert main(["run", "--suite", str(path), "--label", "x", "--data-dir", str(tmp_path / "nowhere"),
                 "--output-dir", str(tmp_path)]) == 2
    assert "--label" not in capsys.readouterr().err  # refused for the missing data, not for the flag
    assert main(["run", "--resume", str(tmp_path), "--label", "x"]) == 2
    assert "drop --label" in capsys.readouterr().err


def test_a_label_edited_into_run_json_is_still_one_short_line(tmp_path):
    import json

    from test_report_data import write_run

    run_dir = write_run(tmp_path, "a", {"t": {"verdicts": [1.0]}})
    data = json.loads((run_dir / "run.json").read_text())
    data["config"]["label"] = "first line\nsecond line"
    (run_dir / "run.json").write_text(json.dumps(data))
    assert load_run(run_dir).given_label == "first line"
    data["config"]["label"] = 12345
    (run_dir / "run.json").write_text(json.dumps(data))
    assert load_run(run_dir).given_label == "12345"
