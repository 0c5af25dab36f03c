import json

import pytest

from evalsuite.backends.scripted import ScriptedBackend
from evalsuite.cli import main
from evalsuite.cli.commands.rescore import rescore
from evalsuite.config import RunConfig
from evalsuite.errors import UsageError
from evalsuite.pipeline.runner import run


@pytest.fixture
def finished(tmp_path, gsm8k_data_dir, embedded_model):
    config = RunConfig(tasks=("gsm8k",), model=embedded_model, limit=5, batch_size=2, data_dir=str(gsm8k_data_dir),
                       output_dir=tmp_path / "results", run_id="r", cache=False)
    return run(config, progress=False, backend=ScriptedBackend(outputs={"*": "so... The answer is 18"}))


def test_rescore_of_a_finished_run_reproduces_its_aggregates(finished):
    before = json.loads((finished.run_dir / "run.json").read_text())
    samples_before = (finished.run_dir / "samples.jsonl").read_text()
    metrics, changed = rescore(finished.run_dir)
    after = json.loads((finished.run_dir / "run.json").read_text())
    assert changed == 0
    assert after["metrics"] == before["metrics"] == json.loads(json.dumps(metrics))
    assert (finished.run_dir / "samples.jsonl").read_text() == samples_before
    assert after["metrics"]["gsm8k"]["scores"]["strict-match"]["value"] == pytest.approx(1 / 5)


def test_rescore_picks_up_changed_outputs(finished):
    """Stands in for a scorer fix: the stored text of test-1 (gold 3) is edited so that
    both extractors now find 3 there."""
    path = finished.run_dir / "samples.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    records[1]["output"] = "The answer is 3"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    metrics, changed = rescore(finished.run_dir)
    assert changed == 2  # strict-match and flexible-extract of test-1
    assert metrics["gsm8k"]["scores"]["strict-match"]["value"] == pytest.approx(2 / 5)
    assert metrics["gsm8k"]["scores"]["flexible-extract"]["value"] == pytest.approx(2 / 5)
    rewritten = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["sample_id"] for r in rewritten] == [f"test-{i}" for i in range(5)]
    assert rewritten[1]["verdicts"] == {"strict-match": 1.0, "flexible-extract": 1.0}
    assert rewritten[1]["answers"]["strict-match"] == "3"


def test_rescore_refuses_an_unfinished_run(finished):
    run_json = finished.run_dir / "run.json"
    data = json.loads(run_json.read_text())
    run_json.write_text(json.dumps({**data, "status": "running"}))
    with pytest.raises(UsageError, match="--resume"):
        rescore(finished.run_dir)


def test_rescore_command(finished, capsys):
    assert main(["rescore", str(finished.run_dir)]) == 0
    assert "0 verdicts changed" in capsys.readouterr().out
    assert main(["rescore", str(finished.run_dir / "missing")]) == 2
