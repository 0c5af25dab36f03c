"""SIGTERM and SIGKILL to ``evalsuite run`` on the real vLLM engine leave no process.

The command runs in a subprocess with the embedded model (float32, eager: the
fast settings on CPU hosts without native bfloat16). Its process tree (the
command, vLLM's ``EngineCore``/workers, the math-verify verifier pool, the
watchdog) is read by PID before each signal; 10 s later none of them may run.
Then ``--resume`` finishes the run from what is on disk.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from test_stop_signals import STOP_S, env, tree, wait_gone

pytestmark = pytest.mark.engine

LIMIT = 12  # each stop lands after 3 more samples: 3+ before SIGTERM, 3+ more before SIGKILL, the rest resumed


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "evalsuite.cli", "run", *args, "--no-progress", "--no-cache"]


def run_until_samples(cmd: list[str], samples, at_least: int) -> tuple[subprocess.Popen, list[int]]:
    """Starts ``cmd``; once ``samples`` has ``at_least`` more lines than now and the
    engine is up, returns the process and its process tree."""
    start = len(samples.read_text().splitlines()) if samples.exists() else 0
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env())
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        written = len(samples.read_text().splitlines()) if samples.exists() else 0
        if written >= start + at_least:
            return proc, tree(proc.pid)
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"{at_least} samples not written within 400 s")


@pytest.mark.timeout(1200)
def test_sigterm_then_sigkill_on_the_real_engine_leave_no_process_and_resume_completes(
        tmp_path, gsm8k_data_dir, embedded_model):
    out = tmp_path / "results"
    run_dir = out / "stopped"
    samples = run_dir / "samples.jsonl"
    first = command("--tasks", "gsm8k", "--backend", "vllm", "--limit", str(LIMIT), "--engine-arg", "max_num_seqs=2",
                    "--max-tokens", "32", "--dtype", "float32", "--enforce-eager", "--max-model-len", "4096",
                    "--data-dir", str(gsm8k_data_dir), "--output-dir", str(out), "--run-id", "stopped")

    proc, pids = run_until_samples(first, samples, at_least=3)
    try:
        names = " ".join(_names(pids))
        assert "EngineCore" in names, names  # the engine core is a process of its own, and is watched
        before = samples.read_text().splitlines()
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        left = wait_gone(pids, STOP_S)
        took = time.monotonic() - start
        code = proc.wait(timeout=5)
    finally:
        proc.kill()
        proc.wait()
    assert left == [], f"still running {STOP_S:g} s after SIGTERM: {_names(left)}"
    print(f"SIGTERM: {len(pids)} processes gone in {took:.1f} s")
    assert code == 128 + signal.SIGTERM
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "interrupted"
    after = samples.read_text().splitlines()
    assert after[: len(before)] == before and len(after) < LIMIT
    assert all(json.loads(line)["output_tokens"] is not None for line in after)

    # Resumed, then SIGKILLed outright: the watchdog ends the engine core and the workers.
    proc, pids = run_until_samples(command("--resume", str(run_dir)), samples, at_least=3)
    assert len(samples.read_text().splitlines()) < LIMIT  # still running when killed
    try:
        proc.send_signal(signal.SIGKILL)
        left = wait_gone(pids, STOP_S)
    finally:
        proc.kill()
        proc.wait()
    assert left == [], f"still running {STOP_S:g} s after SIGKILL: {_names(left)}"

    done = subprocess.run(command("--resume", str(run_dir)), check=False, capture_output=True, env=env(), timeout=900)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "complete"
    records = [json.loads(line) for line in samples.read_text().splitlines()]
    assert sorted(int(r["sample_id"].split("-")[1]) for r in records) == list(range(LIMIT))
    assert run["metrics"]["gsm8k"]["scores"]["strict-match"]["n"] == LIMIT


def _names(pids) -> list[str]:
    import psutil

    out = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            out.append(f"{pid}:{p.name()}:{' '.join(p.cmdline())[:60]}")
        except psutil.NoSuchProcess:
            out.append(f"{pid}:gone")
    return out
