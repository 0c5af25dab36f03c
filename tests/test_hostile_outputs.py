"""A hostile model server cannot stop a run: real ``evalsuite run`` processes against
``tests/fault_servers.py`` on loopback, sending the outputs that used to end a run.

- a JSON-task answer nested 100,000 levels deep (was: RecursionError, the whole
  batch lost, and ``--resume`` crashing again on it);
- stream events that are JSON but not completion events (was: ``data: [1,2,3]``
  -> AttributeError, the run failed with nothing written);
- a lone surrogate in the text (cannot be written as UTF-8 as it is).

Each run completes with every sample written; a failed request is an error on its
sample, counted in ``run.json``, and ``--max-error-rate`` decides the exit code.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_openai_backend import FaultServer

from evalsuite.results.store import read_samples
from tasks.json_extraction import generate_cases

REPO = Path(__file__).resolve().parent.parent
DEEP = 100_000


def evalsuite(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "evalsuite.cli", "run", "--no-progress", *args], capture_output=True,
                          text=True, timeout=300, env=env, cwd=REPO, check=False)


def untimed(run_dir: Path) -> dict[str, dict]:
    return {r["sample_id"]: {k: v for k, v in r.items() if k != "timings"} for r in read_samples(run_dir)}


@pytest.fixture
def deep_json_server(tmp_path):
    """Serves 'fake'; the 6th JSON case (order-1) is answered with 100,000-deep JSON."""
    cases = generate_cases(seed=0, num_cases=16)
    marker = cases[5].metadata["text"]
    assert sum(marker in c.input[0].content for c in cases) == 1
    (tmp_path / "deep.json").write_text("[" * DEEP + "]" * DEEP)
    with FaultServer("--model-id", "fake", "--reply", marker, str(tmp_path / "deep.json")) as server:
        yield server, cases[5].id


def json_run(server, tmp_path: Path, run_id: str, *extra: str, env: dict | None = None):
    return evalsuite("--tasks", "json_extraction", "--task-arg", "json_extraction.num_cases=16", "--backend", "openai",
                     "--model", "fake", "--base-url", server.url, "--output-dir", str(tmp_path / "results"),
                     "--run-id", run_id, *extra, env=env)


def test_a_100000_deep_json_answer_is_an_invalid_answer_and_the_run_completes(deep_json_server, tmp_path):
    server, deep_id = deep_json_server
    proc = json_run(server, tmp_path, "deep", "--batch-size", "16", "--no-cache")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    records = untimed(tmp_path / "results" / "deep")
    assert len(records) == 16  # the hostile sample's batch is written whole
    deep = records[deep_id]
    assert deep["error"] is None and set(deep["verdicts"].values()) == {0.0}
    assert f"nested {DEEP} levels deep" in deep["details"]["strict-parse"]
    run = json.loads((tmp_path / "results" / "deep" / "run.json").read_text())
    assert run["status"] == "complete"
    assert run["metrics"]["json_extraction"]["outcomes"]["invalid"] == 16  # the server never answers with JSON


def test_resume_after_a_kill_goes_past_the_deep_answer(deep_json_server, tmp_path):
    """Killed after generations were cached, before the first was scored; the resumed
    run scores them from the cache (the deep answer included) and completes."""
    server, _ = deep_json_server
    env = {"EVALSUITE_RESPONSE_CACHE": str(tmp_path / "responses.sqlite")}
    killed = json_run(server, tmp_path, "killed", "--batch-size", "8", env={**env, "EVALSUITE_TEST_KILL_AT": "scoring"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    run_dir = tmp_path / "results" / "killed"
    assert read_samples(run_dir) == []
    resumed = evalsuite("--resume", str(run_dir), env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "Traceback" not in resumed.stderr
    reference = json_run(server, tmp_path, "reference", "--batch-size", "8", "--no-cache")
    assert reference.returncode == 0, reference.stderr
    assert untimed(run_dir) == untimed(tmp_path / "results" / "reference")
    run = json.loads((run_dir / "run.json").read_text())
    # what was generated before the kill came from the cache: with a streaming backend at least the
    # generation whose scoring was killed, and every request exactly once in all
    assert run["status"] == "complete" and run["cache"]["hits"] >= 1
    assert run["cache"]["hits"] + run["cache"]["misses"] == 16


# Events sent before the normal reply, one hostile kind per GSM8K sample (sample 0 is left alone).
EVENTS = {
    1: "[1,2,3]",
    2: '{"choices": "abc"}',
    3: '{"choices": [{"delta": "x"}]}',
    4: '{"usage": [1]}',
    5: '{"choices": [{"index": 0, "delta": {"content": 5}}]}',
    6: "[" * DEEP,
    7: '{"choices": [{"index": 0, "delta": {"content": "\\ud800 "}, "finish_reason": null}]}',
}


@pytest.fixture
def event_server(gsm8k_data_dir):
    lines = (gsm8k_data_dir / "gsm8k" / "test.jsonl").read_text().splitlines()[:8]
    markers = {i: json.loads(line)["question"][:50] for i, line in enumerate(lines)}
    args = [a for i, data in EVENTS.items() for a in ("--event", markers[i], data)]
    with FaultServer("--model-id", "fake", *args) as server:
        yield server


@pytest.mark.parametrize("max_error_rate, code", [(None, 0), ("0.5", 1), ("0.8", 0)])
def test_hostile_stream_events_are_failed_requests_and_the_run_completes(event_server, gsm8k_data_dir, tmp_path,
                                                                         max_error_rate, code):
    extra = ["--max-error-rate", max_error_rate] if max_error_rate else []
    proc = evalsuite("--tasks", "gsm8k", "--limit", "8", "--data-dir", str(gsm8k_data_dir), "--backend", "openai",
                     "--model", "fake", "--base-url", event_server.url, "--output-dir", str(tmp_path / "results"),
                     "--run-id", "events", "--max-retries", "0", *extra,
                     env={"EVALSUITE_RESPONSE_CACHE": str(tmp_path / "responses.sqlite")})
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    assert ("error rate 0.750 (6/8) exceeds --max-error-rate 0.5" in proc.stderr) == (code == 1)
    records = read_samples(tmp_path / "results" / "events", ordered=True)  # written in completion order
    assert [r["sample_id"] for r in records] == [f"test-{i}" for i in range(8)]
    for i, r in enumerate(records):
        if i in (0, 7):
            assert r["error"] is None
        else:
            assert r["error"].startswith("malformed event in the response stream"), r["error"]
    assert records[7]["output"].startswith("\ud800 I counted the prompt")  # written, and read back, as JSON escapes
    run = json.loads((tmp_path / "results" / "events" / "run.json").read_text())
    perf = run["metrics"]["gsm8k"]["performance"]
    assert run["status"] == "complete"
    assert perf["errors"] == 6 and perf["errors_by_stage"] == {"request": 6, "scoring": 0, "record": 0}
    assert run["cache"]["misses"] == 8


def test_malformed_event_errors_name_the_problem(event_server, gsm8k_data_dir, tmp_path):
    proc = evalsuite("--tasks", "gsm8k", "--limit", "8", "--data-dir", str(gsm8k_data_dir), "--backend", "openai",
                     "--model", "fake", "--base-url", event_server.url, "--output-dir", str(tmp_path / "results"),
                     "--run-id", "why", "--no-cache")
    assert proc.returncode == 0, proc.stderr
    errors = {r["sample_id"]: r["error"] for r in read_samples(tmp_path / "results" / "why")}
    assert "a JSON list, not an object" in errors["test-1"]
    assert "choices: should be a valid list, got 'abc'" in errors["test-2"]
    assert "choices[0].delta: should be a valid mapping" in errors["test-3"]
    assert "usage: should be a valid mapping" in errors["test-4"]
    assert "choices[0].delta.content: should be a valid string, got 5" in errors["test-5"]
    assert "not JSON" in errors["test-6"] or "nested too deeply" in errors["test-6"]
