"""Resume through the real runner with a scripted backend (pure logic). The real
engine and real SIGKILLs are in test_resume_faults.py."""

import json
from dataclasses import replace

import pytest

from evalsuite.cli import main
from evalsuite.config import EngineConfig, RunConfig
from evalsuite.errors import UsageError
from evalsuite.pipeline.runner import run
from evalsuite.results.resume import config_from_dict, record_from_dict, repair_samples
from evalsuite.types import Generation, SampleRecord, Score, Timings


def line(task="gsm8k", sid="test-0", repeat=0, **extra) -> str:
    return json.dumps({"task": task, "sample_id": sid, "repeat": repeat, **extra}) + "\n"


# --- samples.jsonl repair ---------------------------------------------------------------


def test_torn_last_line_is_dropped_and_the_file_repaired(tmp_path):
    whole = line(sid="test-0") + line(sid="test-1")
    (tmp_path / "samples.jsonl").write_text(whole + line(sid="test-2")[:17])
    records = repair_samples(tmp_path)
    assert [r["sample_id"] for r in records] == ["test-0", "test-1"]
    assert (tmp_path / "samples.jsonl").read_text() == whole


def test_duplicates_keep_their_first_copy(tmp_path):
    text = line(sid="test-0", output="a") + line(sid="test-0", repeat=1) + line(sid="test-0", output="b")
    (tmp_path / "samples.jsonl").write_text(text)
    records = repair_samples(tmp_path)
    assert [(r["sample_id"], r["repeat"], r.get("output")) for r in records] == [
        ("test-0", 0, "a"), ("test-0", 1, None)]
    assert (tmp_path / "samples.jsonl").read_text() == line(sid="test-0", output="a") + line(sid="test-0", repeat=1)


def test_a_clean_file_is_left_alone(tmp_path):
    path = tmp_path / "samples.jsonl"
    path.write_text(line(sid="test-0"))
    before = path.stat().st_mtime_ns
    assert len(repair_samples(tmp_path)) == 1
    assert path.stat().st_mtime_ns == before
    assert repair_samples(tmp_path / "none") == []


# --- round trips ------------------------------------------------------------------------


def test_config_round_trips_through_run_json_form():
    config = RunConfig(tasks=("gsm8k", "equations"), limit=5, max_tokens=64, temperature=0.5, seed=3,
                       engine=EngineConfig(max_model_len=2048, enforce_eager=True, extra={"revision": "x"}),
                       task_args={"gsm8k": {"prompt": "fewshot"}}, backend_args={"max_concurrency": 4},
                       cache=False)
    assert config_from_dict(json.loads(json.dumps(config.to_dict(), default=str))) == config


def test_record_round_trips_through_samples_jsonl_form():
    record = SampleRecord("gsm8k", "test-3", 1, "p", "The answer is 5", "5",
                          {"strict-match": Score(1.0, "5"), "flexible-extract": Score(0.0, None, "no number")},
                          10, 4, "stop", Timings(e2e_s=0.25, itl_s=(0.1, 0.15)), None, {"question": "q"})
    assert record_from_dict(json.loads(json.dumps(record.to_dict()))) == record


# --- resume through the runner -----------------------------------------------------------


class Scripted:
    """Answers 'The answer is 18' (right only for test-0, whose gold answer is 18);
    raises KeyboardInterrupt on call number ``interrupt_on`` (1-based)."""

    name = "scripted"

    def __init__(self, interrupt_on=None):
        self.batches: list[list[str]] = []
        self.interrupt_on = interrupt_on

    def generate(self, requests):
        self.batches.append([r.sample_id for r in requests])
        if len(self.batches) == self.interrupt_on:
            raise KeyboardInterrupt
        return [Generation("Step... The answer is 18", "stop", output_tokens=6,
                           timings=Timings(e2e_s=0.5)) for _ in requests]

    def describe(self):
        return {"backend": self.name, "engine": {}}

    def close(self):
        pass


@pytest.fixture
def config(tmp_path, gsm8k_data_dir, embedded_model, monkeypatch):
    monkeypatch.setenv("EVALSUITE_CACHE", str(tmp_path / "cache"))
    return RunConfig(tasks=("gsm8k",), model=embedded_model, limit=6, batch_size=2, max_tokens=8,
                     data_dir=str(gsm8k_data_dir), output_dir=tmp_path / "results")


def verdicts(run_dir):
    lines = (run_dir / "samples.jsonl").read_text().splitlines()
    return sorted((r["sample_id"], r["repeat"], r["verdicts"]["strict-match"]) for r in map(json.loads, lines))


@pytest.mark.parametrize("cache", [True, False])
def test_interrupted_run_resumes_without_regenerating_finished_samples(config, cache):
    config = replace(config, cache=cache)
    reference = run(replace(config, run_id="reference", cache=False), progress=False, backend=Scripted())

    interrupted = Scripted(interrupt_on=2)
    with pytest.raises(KeyboardInterrupt):
        run(replace(config, run_id="cut"), progress=False, backend=interrupted)
    cut = config.output_dir / "cut"
    stopped = json.loads((cut / "run.json").read_text())
    assert (stopped["status"], stopped["error"]) == ("interrupted", "interrupted by KeyboardInterrupt")

    finisher = Scripted()
    result = run(replace(config, resume=str(cut)), progress=False, backend=finisher)
    assert finisher.batches == [["test-2", "test-3"], ["test-4", "test-5"]]
    assert verdicts(cut) == verdicts(reference.run_dir)
    assert [v for _, _, v in verdicts(cut)] == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert result.metrics["gsm8k"]["scores"] == reference.metrics["gsm8k"]["scores"]
    assert result.metrics["gsm8k"]["performance"]["resumed_records"] == 2
    final = json.loads((cut / "run.json").read_text())
    assert final["status"] == "complete" and len(final["resumed_at"]) == 1


def test_resume_takes_the_generated_but_unwritten_batch_from_the_cache(config):
    interrupted = Scripted(interrupt_on=3)  # batches 1 and 2 answered and cached; 3 cut
    with pytest.raises(KeyboardInterrupt):
        run(replace(config, run_id="cut"), progress=False, backend=interrupted)
    cut = config.output_dir / "cut"
    # A kill between generation and the write loses batch 2's records, not its outputs:
    lines = (cut / "samples.jsonl").read_text().splitlines(keepends=True)
    (cut / "samples.jsonl").write_text("".join(lines[:2]))

    finisher = Scripted()
    result = run(replace(config, resume=str(cut)), progress=False, backend=finisher)
    assert finisher.batches == [["test-4", "test-5"]]
    assert result.metrics["gsm8k"]["performance"]["cache_hits"] == 2
    assert [s for s, _, _ in verdicts(cut)] == [f"test-{i}" for i in range(6)]


def test_resuming_a_finished_run_changes_nothing(config):
    done = run(replace(config, run_id="done"), progress=False, backend=Scripted())
    before = (done.run_dir / "samples.jsonl").read_text(), (done.run_dir / "run.json").read_text()
    again = run(replace(config, resume=str(done.run_dir)), progress=False, backend=Scripted(interrupt_on=1))
    assert again.metrics == done.metrics
    assert ((done.run_dir / "samples.jsonl").read_text(), (done.run_dir / "run.json").read_text()) == before


def test_resume_of_a_missing_directory_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        run(RunConfig(tasks=("gsm8k",), resume=str(tmp_path / "nope")), progress=False, backend=Scripted())


def test_cli_refuses_flags_that_would_change_a_resumed_run(tmp_path, capsys):
    assert main(["run", "--resume", str(tmp_path), "--limit", "5"]) == 2
    assert "drop --limit" in capsys.readouterr().err
    assert main(["run", "--resume", str(tmp_path / "nope"), "--no-cache", "--no-progress"]) == 2
    assert "does not exist" in capsys.readouterr().err
