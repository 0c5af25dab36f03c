"""Fault injection: a real ``evalsuite run`` (real vLLM engine) is SIGKILLed at each
kill point, then resumed; every resumed run must end with the sample ids and
verdicts of an uninterrupted run, without duplicates.

Engine starts are the cost here (about 30 s each on 2 cores), so one run directory
is killed four times in a chain, each resume going one stage further; only two of
those processes start the engine (the others find what they need in the response
cache). A copy of the directory is taken after each kill and resumed to completion
at the end, when the cache holds every output, so each kill point is also checked
on its own without another engine start.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from contextlib import suppress

import pytest

from evalsuite.results.store import read_samples  # samples.jsonl is in completion order

pytestmark = pytest.mark.engine

LIMIT, BATCH, MAX_TOKENS = 4, 2, 24  # BATCH: the reference run's batch size


def evalsuite_run(args, env, kill_at=None, timeout=300):
    """Runs the CLI in its own session; with ``kill_at`` it must die of SIGKILL there.
    Whatever it left running (engine workers) is killed with its process group."""
    env = {k: v for k, v in env.items() if k != "EVALSUITE_TEST_KILL_AT"}
    if kill_at:
        env["EVALSUITE_TEST_KILL_AT"] = kill_at
    # Output goes to a file, not a pipe: engine workers orphaned by the kill keep a
    # pipe open, so reading it to the end would wait for them.
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen([sys.executable, "-m", "evalsuite.cli", "run", *args, "--no-progress"], env=env,
                                stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            proc.wait(timeout=timeout)
        finally:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        log.seek(0)
        out = log.read()
    expected = -signal.SIGKILL if kill_at else 0
    assert proc.returncode == expected, f"exit {proc.returncode} (wanted {expected}) at {kill_at}:\n{out[-3000:]}"
    return out


def outcome(run_dir):
    """(task, sample id, repeat) -> verdicts, failing on duplicates."""
    records = read_samples(run_dir, ordered=True)
    keys = [(r["task"], r["sample_id"], r["repeat"]) for r in records]
    assert len(keys) == len(set(keys)), f"duplicate records in {run_dir}"
    return {k: (r["verdicts"], r["answers"]) for k, r in zip(keys, records)}


def test_killed_runs_resume_to_the_uninterrupted_result(tmp_path, vllm_backend, run_with, gsm8k_data_dir, embedded_model):
    # The uninterrupted reference, on the session's engine with the same engine settings.
    reference = run_with(vllm_backend, ["gsm8k"], limit=LIMIT, batch_size=BATCH, max_tokens=MAX_TOKENS,
                         data_dir=str(gsm8k_data_dir), cache=False)
    expected = outcome(reference.run_dir)
    assert [k[1] for k in expected] == [f"test-{i}" for i in range(LIMIT)]

    env = {**os.environ, "EVALSUITE_RESPONSE_CACHE": str(tmp_path / "responses.sqlite"), "VLLM_CPU_KVCACHE_SPACE": "2"}
    run_dir = tmp_path / "results" / "chain"
    # One sequence at a time: generations finish one by one, so the first scored micro-batch
    # (the kill at "batch_written") cannot already hold every sample.
    common = ["--tasks", "gsm8k", "--model", embedded_model, "--limit", str(LIMIT), "--engine-arg", "max_num_seqs=1",
              "--max-tokens", str(MAX_TOKENS), "--data-dir", str(gsm8k_data_dir), "--max-model-len", "8192",
              "--dtype", "float32", "--enforce-eager", "--output-dir", str(tmp_path / "results"), "--run-id", "chain"]
    snapshots = {}

    def snapshot(stage):
        snapshots[stage] = tmp_path / f"after-{stage}"
        shutil.copytree(run_dir, snapshots[stage])

    evalsuite_run(common, env, kill_at="started")  # early: nothing generated yet
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"
    snapshot("started")

    evalsuite_run(["--resume", str(run_dir)], env, kill_at="batch_written")  # mid: engine start 1
    written = len(outcome(run_dir))
    assert 1 <= written < LIMIT
    snapshot("batch_written")
    with open(run_dir / "samples.jsonl", "a") as f:  # and a write torn by the kill
        f.write('{"task": "gsm8k", "sample_id": "test-2", "rep')

    evalsuite_run(["--resume", str(run_dir)], env, kill_at="scoring")  # engine start 2; the rest cached
    assert len(outcome(run_dir)) == written  # killed before its first record was written
    snapshot("scoring")

    evalsuite_run(["--resume", str(run_dir)], env, kill_at="final_write")  # the rest from the cache
    assert len(outcome(run_dir)) == LIMIT
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"
    snapshot("final_write")

    evalsuite_run(["--resume", str(run_dir)], env)
    finished = {"chain": run_dir}
    for stage, copy in snapshots.items():
        evalsuite_run(["--resume", str(copy)], env)
        finished[stage] = copy
    for name, directory in finished.items():
        run = json.loads((directory / "run.json").read_text())
        assert run["status"] == "complete", name
        assert outcome(directory) == expected, name
        assert run["metrics"]["gsm8k"]["scores"] == reference.metrics["gsm8k"]["scores"], name
        assert run["cache"]["misses"] == 0, name  # the final resumes never started the engine
