"""The openai backend: pure helpers, then fault tests against real server processes.

The fault servers (``tests/fault_servers.py``) are small real HTTP servers run as
separate processes, so killing one is a real connection loss. They need no
engine and no lock; the runs go through the real runner and the real GSM8K task.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.timeout(120)

from evalsuite.backends.openai import (
    OpenAIBackend,
    _Replica,
    backoff_s,
    choose_model,
    normalize_base_url,
    parse_sse_line,
    request_body,
)
from evalsuite.backends.serving import free_port
from evalsuite.errors import UsageError
from evalsuite.types import GenerationRequest, Message, SamplingParams

FAULT_SERVER = Path(__file__).with_name("fault_servers.py")


# --- pure helpers -------------------------------------------------------------------


def test_base_url_gets_v1_only_when_it_has_no_path():
    assert normalize_base_url("http://h:8000") == "http://h:8000/v1"
    assert normalize_base_url("http://h:8000/v1/") == "http://h:8000/v1"
    assert normalize_base_url("https://api.example.com/openai/v1") == "https://api.example.com/openai/v1"
    with pytest.raises(UsageError, match="http://"):
        normalize_base_url("h:8000")


def test_backoff_doubles_from_the_base_and_stops_at_the_cap():
    assert [backoff_s(a, 0.5, 4.0) for a in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert backoff_s(0, 0.5, 4.0, retry_after_s=3.0) == 3.0
    assert backoff_s(0, 0.5, 4.0, retry_after_s=60.0) == 4.0


def test_model_is_matched_by_id_then_by_last_path_component():
    served = ["Qwen/Qwen2.5-7B-Instruct", "other"]
    assert choose_model("other", served, default_requested=False) == "other"
    assert choose_model("/models/Qwen2.5-7B-Instruct", served, default_requested=False) == "Qwen/Qwen2.5-7B-Instruct"
    with pytest.raises(UsageError, match="serves: Qwen/Qwen2.5-7B-Instruct, other"):
        choose_model("/models/llama", served, default_requested=False)


def test_without_a_model_the_single_served_one_is_taken():
    assert choose_model(None, ["m"], default_requested=True) == "m"
    with pytest.raises(UsageError):
        choose_model(None, ["a", "b"], default_requested=True)


def test_conversations_go_to_chat_and_strings_to_completions():
    params = SamplingParams(max_tokens=7, temperature=0.5, top_p=0.9, stop=("\n\n",), seed=42)
    path, body = request_body(GenerationRequest("t", "s", (Message("user", "hi"),), params), "m")
    assert path == "/chat/completions"
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert (body["model"], body["max_tokens"], body["temperature"], body["top_p"], body["stop"], body["seed"]) == (
        "m", 7, 0.5, 0.9, ["\n\n"], 42)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    path, body = request_body(GenerationRequest("t", "s", "2+2=", SamplingParams(), json_schema={"type": "object"}), "m")
    assert path == "/completions" and body["prompt"] == "2+2="
    assert body["response_format"]["json_schema"]["schema"] == {"type": "object"}
    assert "seed" not in body and "stop" not in body


def test_sse_lines():
    assert parse_sse_line('data: {"a": 1}') == {"a": 1}
    assert parse_sse_line("data: [DONE]") is None
    assert parse_sse_line(": keep-alive") is None
    assert parse_sse_line("") is None


def test_least_loaded_replica_is_picked_and_a_failed_one_avoided():
    backend = OpenAIBackend.__new__(OpenAIBackend)
    a, b, c = _Replica("a", in_flight=2, sent=5), _Replica("b", in_flight=1, sent=9), _Replica("c", in_flight=1, sent=3)
    backend.replicas = [a, b, c]
    assert backend._pick(None) is c  # fewest in flight, then fewest sent
    assert backend._pick(c) is b
    backend.replicas = [a]
    assert backend._pick(a) is a  # a single replica is retried anyway


def test_bad_settings_are_usage_errors():
    with pytest.raises(UsageError, match="--max-concurrency"):
        OpenAIBackend("m", base_urls=("http://127.0.0.1:1/v1",), max_concurrency=0)
    with pytest.raises(UsageError, match="no endpoint answered"):
        OpenAIBackend("m", base_urls=(f"http://127.0.0.1:{free_port()}/v1",))


# --- real fault servers ---------------------------------------------------------------


class FaultServer:
    """One ``tests/fault_servers.py`` process that can be killed and started again."""

    def __init__(self, *args: str) -> None:
        self.args, self.port = args, free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen([sys.executable, str(FAULT_SERVER), "--port", str(self.port), *self.args],
                                        stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/models", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("fault server did not start")

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def stats(self) -> dict:
        return httpx.get(f"http://127.0.0.1:{self.port}/stats", timeout=5).json()

    def __enter__(self) -> FaultServer:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.kill()


@pytest.fixture
def model_dir(tmp_path) -> Path:
    """A local 'model' for --model; the fault servers serve it under its path."""
    path = tmp_path / "served-model"
    path.mkdir()
    (path / "config.json").write_text("{}")
    return path


@pytest.fixture
def run_openai(tmp_path):
    """Runs tasks through the real runner on an open openai backend; returns the RunResult."""
    from evalsuite.config import RunConfig
    from evalsuite.pipeline.runner import run

    def _run(backend: OpenAIBackend, tasks, **config):
        cfg = RunConfig(tasks=tuple(tasks), backend="openai", output_dir=tmp_path / "results", cache=False,
                        **config)
        return run(cfg, progress=False, backend=backend)

    return _run


def questions(data_dir: Path, n: int) -> list[str]:
    lines = (data_dir / "gsm8k" / "test.jsonl").read_text().splitlines()[:n]
    return [json.loads(line)["question"] for line in lines]


def samples(run_dir: Path) -> list[dict]:
    """The run's records in sample order (samples.jsonl is in completion order)."""
    from evalsuite.results.store import sample_order

    return sorted((json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()),
                  key=sample_order)


def outputs(run_dir: Path) -> list[tuple[str, str]]:
    return [(s["sample_id"], s["output"]) for s in samples(run_dir)]


def test_run_completes_through_retries_when_the_server_is_killed_and_restarted(model_dir, gsm8k_data_dir, run_openai):
    with FaultServer("--model-id", str(model_dir), "--word-delay", "0.04") as server:
        backend = OpenAIBackend(str(model_dir), base_urls=(server.url,), max_concurrency=4, request_timeout=30,
                                max_retries=8, backoff_base_s=0.2, backoff_cap_s=2.0)
        common = {"model": str(model_dir), "limit": 16, "data_dir": str(gsm8k_data_dir)}
        reference = run_openai(backend, ["gsm8k"], run_id="reference", **common)
        served_before = server.stats()["served"]

        def kill_and_restart() -> None:
            while server.stats()["served"] < served_before + 4:
                time.sleep(0.01)
            server.kill()
            time.sleep(1.0)
            server.start()

        chaos = threading.Thread(target=kill_and_restart)
        chaos.start()
        result = run_openai(backend, ["gsm8k"], run_id="killed", **common)
        chaos.join()
    assert backend.replica_counts()[server.url]["failed"] >= 1  # the kill did cut requests off
    assert result.metrics["gsm8k"]["performance"]["errors"] == 0
    assert outputs(result.run_dir) == outputs(reference.run_dir)
    assert all("The answer is" in s["output"] for s in samples(result.run_dir))


def test_server_errors_are_counted_and_the_exit_code_follows_the_threshold(model_dir, gsm8k_data_dir, tmp_path):
    from evalsuite.cli import main

    failing = [q[:40] for q in questions(gsm8k_data_dir, 10)[1::3]]  # samples 1, 4, 7: 3 of 10
    markers = [arg for q in failing for arg in ("--fail", q)]
    with FaultServer("--model-id", str(model_dir), *markers) as server:
        def cli(threshold: str, run_id: str) -> int:
            return main(["run", "--tasks", "gsm8k", "--backend", "openai", "--model", str(model_dir),
                         "--base-url", server.url, "--limit", "10", "--data-dir", str(gsm8k_data_dir),
                         "--output-dir", str(tmp_path / "results"), "--run-id", run_id, "--max-retries", "2",
                         "--max-error-rate", threshold, "--no-progress", "--no-cache"])

        assert cli("0.2", "strict") == 1  # 3/10 errors > 0.2
        assert cli("0.5", "lenient") == 0
        attempts = server.stats()["attempts"]
    records = samples(tmp_path / "results" / "strict")
    assert [s["sample_id"] for s in records if s["error"]] == ["test-1", "test-4", "test-7"]
    assert all("HTTP 500" in s["error"] and "gave up after 3 attempts" in s["error"] for s in records if s["error"])
    failing_attempts = [n for text, n in attempts.items() if any(m in text for m in failing)]
    assert failing_attempts == [6, 6, 6]  # 1 + 2 retries, in each of the two runs
    run = json.loads((tmp_path / "results" / "strict" / "run.json").read_text())
    assert run["metrics"]["gsm8k"]["performance"]["errors"] == 3


def test_requests_slower_than_the_timeout_are_counted_as_timeouts(model_dir, gsm8k_data_dir, run_openai):
    slow = [q[:40] for q in questions(gsm8k_data_dir, 4)[::2]]  # samples 0 and 2
    with FaultServer("--model-id", str(model_dir), "--slow", slow[0], "--slow", slow[1], "--slow-seconds", "20") as server:
        backend = OpenAIBackend(str(model_dir), base_urls=(server.url,), request_timeout=1.5, max_retries=3)
        start = time.perf_counter()
        result = run_openai(backend, ["gsm8k"], model=str(model_dir), limit=4,
                          data_dir=str(gsm8k_data_dir))
        elapsed = time.perf_counter() - start
    records = samples(result.run_dir)
    assert [s["sample_id"] for s in records if s["error"]] == ["test-0", "test-2"]
    assert all(s["error"].startswith("timeout: no complete response within 1.5 s") for s in records if s["error"])
    assert result.metrics["gsm8k"]["performance"]["errors"] == 2
    assert elapsed < 10  # timed out, not waited for (and timeouts are not retried)


def test_two_replicas_both_serve_and_results_equal_a_single_endpoint_run(model_dir, gsm8k_data_dir, run_openai):
    args = ("--model-id", str(model_dir), "--word-delay", "0.01")
    with FaultServer(*args) as first, FaultServer(*args) as second:
        common = {"model": str(model_dir), "limit": 12, "data_dir": str(gsm8k_data_dir)}
        single = run_openai(OpenAIBackend(str(model_dir), base_urls=(first.url,)), ["gsm8k"], run_id="one", **common)
        pair = OpenAIBackend(str(model_dir), base_urls=(first.url, second.url), max_concurrency=4)
        both = run_openai(pair, ["gsm8k"], run_id="two", **common)
        served = [first.stats()["served"], second.stats()["served"]]
    assert served[0] > 12 and served[1] > 0 and sum(served) == 24
    assert outputs(both.run_dir) == outputs(single.run_dir)


def test_a_model_the_server_does_not_serve_is_a_usage_error(model_dir):
    with FaultServer("--model-id", "someone-else") as server, pytest.raises(UsageError, match="serves: someone-else"):
        OpenAIBackend(str(model_dir), base_urls=(server.url,))


def test_streamed_timings_are_measured(model_dir):
    with FaultServer("--model-id", str(model_dir), "--word-delay", "0.05") as server:
        backend = OpenAIBackend(str(model_dir), base_urls=(server.url,))
        [g] = backend.generate([GenerationRequest("t", "s", "hello", SamplingParams(max_tokens=8))])
    words = len(["I", "counted", "the", "prompt.", "The", "answer", "is", "5."])
    assert g.error is None and g.text == "I counted the prompt. The answer is 5."
    assert (g.finish_reason, g.output_tokens, g.prompt_text) == ("stop", words, "hello")
    assert len(g.timings.itl_s) == words - 1
    assert all(gap >= 0.04 for gap in g.timings.itl_s)  # the server pauses 0.05 s between words
    assert 0 < g.timings.ttft_s < g.timings.e2e_s
