"""The streaming engine queue on the real vLLM engine (CPU build, embedded model)."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from evalsuite.types import GenerationRequest, Message, SamplingParams

pytestmark = pytest.mark.engine


def chat(text: str) -> tuple[Message, ...]:
    return (Message("user", text),)


def test_stream_yields_each_request_once_matching_generate_and_a_bad_one_as_data(vllm_backend):
    greedy = SamplingParams(max_tokens=16, temperature=0.0)
    requests = [GenerationRequest("t", f"s{i}", chat(f"Count to {i + 2}."), greedy) for i in range(4)]
    too_long = GenerationRequest("t", "long", "word " * 9000, greedy)  # over max_model_len (8192)
    requests.insert(2, too_long)

    got = dict(vllm_backend.stream(iter(requests)))
    assert sorted(got) == [0, 1, 2, 3, 4]
    assert got[2].error is not None and got[2].finish_reason == "error" and got[2].text == ""
    assert got[2].prompt_tokens > 8192
    batch = vllm_backend.generate([r for r in requests if r is not too_long])
    assert [got[i].text for i in (0, 1, 3, 4)] == [g.text for g in batch]  # greedy: same outputs
    for i in (0, 1, 3, 4):
        g = got[i]
        assert g.error is None and 0 < g.output_tokens <= 16 and g.prompt_text.startswith("<|im_start|>")
        assert 0 < g.timings.ttft_s <= g.timings.e2e_s


def test_stream_stopped_early_aborts_what_is_in_flight(vllm_backend):
    requests = [GenerationRequest("t", f"s{i}", chat("Tell a story."), SamplingParams(max_tokens=64))
                for i in range(6)]
    finished = vllm_backend.stream(requests)
    first = next(finished)
    finished.close()
    assert first[1].error is None
    assert not vllm_backend.llm.llm_engine.has_unfinished_requests()


def _progress_reader(stream, seen: list[int]) -> None:
    """Keeps the largest ``n`` of tqdm's ``gsm8k: ... n/40`` lines in ``seen[0]``."""
    buffer = b""
    while chunk := stream.read1(4096) if hasattr(stream, "read1") else stream.read(4096):
        buffer = (buffer + chunk)[-4096:]
        counts = [int(m) for m in re.findall(rb"gsm8k:[^\r\n]*?\| *(\d+)/40", buffer)]
        if counts:
            seen[0] = max(seen[0], *counts)


def test_sigkill_after_n_samples_reported_scored_keeps_all_n(tmp_path, gsm8k_data_dir, embedded_model):
    out = tmp_path / "results"
    cmd = [sys.executable, "-m", "evalsuite.cli", "run", "--tasks", "gsm8k", "--backend", "vllm",
           "--model", embedded_model, "--limit", "40", "--max-tokens", "48", "--dtype", "float32",
           "--enforce-eager", "--max-model-len", "2048", "--data-dir", str(gsm8k_data_dir),
           "--engine-arg", "max_num_seqs=4",  # completions come in waves of 4, not all at one step
           "--output-dir", str(out), "--run-id", "killed", "--no-cache"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                            env={**os.environ, "COLUMNS": "120"})
    seen = [0]
    threading.Thread(target=_progress_reader, args=(proc.stderr, seen), daemon=True).start()
    deadline = time.monotonic() + 400
    try:
        while seen[0] < 5:
            assert proc.poll() is None, "the run ended before 5 samples were reported"
            assert time.monotonic() < deadline, "no 5 samples reported scored within 400 s"
            time.sleep(0.05)
        reported = seen[0]
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    records = [json.loads(line) for line in (out / "killed" / "samples.jsonl").read_text().splitlines()]
    assert reported <= len(records) < 40  # every sample reported scored was on disk
    keys = [(r["sample_id"], r["repeat"]) for r in records]
    assert len(set(keys)) == len(keys)
    assert all(set(r["verdicts"]) == {"strict-match", "flexible-extract"} for r in records)
    assert json.loads((out / "killed" / "run.json").read_text())["status"] == "running"
