"""A run killed midway leaves every finished sample readable (real run, real files).

Uses the hf backend on the embedded model: a real engine that starts in seconds, so
the kill lands mid-run without the cost of a second vLLM start-up.
"""

import json
import os
import signal
import subprocess
import sys
import time

from evalsuite.host import choose_dtype


def test_sigkill_midway_keeps_finished_samples(tmp_path, gsm8k_data_dir, embedded_model):
    out = tmp_path / "results"
    cmd = [sys.executable, "-m", "evalsuite.cli", "run", "--tasks", "gsm8k", "--backend", "hf",
           "--limit", "40", "--batch-size", "2", "--max-tokens", "4", "--data-dir", str(gsm8k_data_dir),
           "--output-dir", str(out), "--run-id", "killed", "--no-progress", "--no-cache"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    samples = out / "killed" / "samples.jsonl"
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:
            if samples.exists() and len(samples.read_text().splitlines()) >= 4:
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.2)
        else:
            raise AssertionError("no samples written within 180 s")
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    lines = samples.read_text().splitlines()
    assert 4 <= len(lines) < 40
    records = [json.loads(line) for line in lines]  # every line is a whole record
    assert [r["sample_id"] for r in records] == [f"test-{i}" for i in range(len(records))]
    for r in records:
        assert set(r["verdicts"]) == {"strict-match", "flexible-extract"}
        assert r["output_tokens"] is not None and r["prompt"].startswith("<|im_start|>")
    run = json.loads((out / "killed" / "run.json").read_text())
    assert run["status"] == "running"  # never finalised: the kill was real
    # No --dtype given: the host's choice, recorded with its reason.
    chosen = choose_dtype("auto", on_cpu=True)
    engine = run["backend"]["engine"]
    assert (engine["dtype"], engine["dtype_reason"]) == (chosen.value, chosen.reason)
