"""A hostile server, hostile run directories and stop signals against the streaming runner.

Real ``evalsuite`` processes against ``tests/fault_servers.py`` on loopback. What a
server sends is data: whatever it is, the run completes, the sample records what
went wrong, and nothing the server claims (a token count past a float's range, an
answer without end) can stop the run or fill the memory.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_openai_backend import FaultServer

from evalsuite.backends.openai import MAX_RESPONSE_CHARS, _Fatal, backoff_s, capped_lines
from evalsuite.results.store import read_samples

REPO = Path(__file__).resolve().parent.parent
MiB = 2**20


def evalsuite(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "evalsuite.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO, check=False)


def questions(data_dir: Path, n: int) -> list[str]:
    lines = (data_dir / "gsm8k" / "test.jsonl").read_text().splitlines()[:n]
    return [json.loads(line)["question"][:20] for line in lines]


# --- the response stream, piece by piece ---------------------------------------------------


def lines_of(chunks: list[str], limit: int = 1000) -> list[str]:
    async def chunked():
        for c in chunks:
            yield c

    async def collect():
        return [line async for line in capped_lines(chunked(), limit)]

    return asyncio.run(collect())


def test_lines_end_at_any_line_break_wherever_the_chunks_are_cut():
    assert lines_of(["data: a\n\nda", "ta: b\r\ndata: c\rdata:", " d"]) == [
        "data: a", "", "data: b", "data: c", "data: d"]
    assert lines_of(["x" * 10, "y" * 10, "\n"]) == ["x" * 10 + "y" * 10]


@pytest.mark.parametrize("chunks", [["z" * 600, "z" * 600], ["data: ok\n" * 200]])
def test_a_response_past_the_limit_is_refused_with_or_without_line_breaks(chunks):
    with pytest.raises(_Fatal, match="went past 1000 characters"):
        lines_of(chunks, limit=1000)


@pytest.mark.parametrize("retry_after", [1e30, math.inf, math.nan, -5.0])
def test_an_absurd_retry_after_waits_between_zero_and_the_cap(retry_after):
    assert 0.0 <= backoff_s(0, 0.5, 10.0, retry_after) <= 10.0


# --- whole runs against a hostile server -------------------------------------------------------

H = b"HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"


def event(content: str, finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": {"content": content}, "finish_reason": finish}
    return b"data: " + json.dumps({"choices": [choice]}).encode() + b"\n\n"


END = event("", "stop") + b"data: [DONE]\n\n"
BIG = "1" + "0" * 400  # a count no float holds

RAW = {  # sample index -> the whole HTTP response
    1: H + event("The answer is 5") + (b'data: {"choices": [], "usage": {"prompt_tokens": ' + BIG.encode()
                                        + b', "completion_tokens": ' + BIG.encode() + b"}}\n\n") + END,
    2: H + b'data: {"choices":[{"index":0,"delta":{"content":"ab\xff\xfe\xc3cd"},"finish_reason":null}]}\n\n' + END,
    3: H + event("a\x00b") + END,
    4: b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n<html><body>Bad gateway</body></html>",
    5: H + event("hello") + b'data: {"choices":[{"index":0,"del',
    6: H + event("x" * (8 * MiB)) + END,
}
FOREVER = 7  # streams 64 KiB events without end


@pytest.fixture(scope="module")
def hostile_run(gsm8k_data_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    marks = questions(gsm8k_data_dir, 8)
    args = ["--forever", marks[FOREVER]]
    for i, data in RAW.items():
        (tmp / f"raw{i}").write_bytes(data)
        args += ["--raw", marks[i], str(tmp / f"raw{i}")]
    with FaultServer("--model-id", "fake", *args) as server:
        start = time.monotonic()
        proc = evalsuite("run", "--no-progress", "--tasks", "gsm8k", "--limit", "8", "--data-dir",
                         str(gsm8k_data_dir), "--backend", "openai", "--model", "fake", "--base-url", server.url,
                         "--output-dir", str(tmp / "results"), "--run-id", "hostile", "--no-cache",
                         "--max-retries", "0", "--request-timeout", "100")
        took = time.monotonic() - start
    run_dir = tmp / "results" / "hostile"
    return proc, took, {r["sample_id"]: r for r in read_samples(run_dir)}, json.loads((run_dir / "run.json").read_text())


def test_the_run_completes_with_every_sample_written(hostile_run):
    proc, took, records, run = hostile_run
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(records) == [f"test-{i}" for i in range(8)]
    assert run["status"] == "complete"
    assert took < 60  # the endless answer was cut by its size, long before the 100 s timeout


def test_token_counts_past_a_floats_range_are_a_malformed_reply(hostile_run):
    _, _, records, run = hostile_run
    r = records["test-1"]
    assert r["error"].startswith("malformed event in the response stream")
    assert "usage.prompt_tokens: should be less than or equal to 9007199254740992" in r["error"]
    assert r["prompt_tokens"] is None and r["output_tokens"] is None
    perf = run["metrics"]["gsm8k"]["performance"]
    assert perf["errors"] == 4  # the counts, the HTML page, the cut event, the endless answer


def test_an_endless_answer_is_cut_at_the_response_limit(hostile_run):
    _, _, records, _ = hostile_run
    r = records[f"test-{FOREVER}"]
    assert r["error"].startswith(f"the response went past {MAX_RESPONSE_CHARS} characters")
    assert r["output"] == ""


def test_odd_text_is_kept_as_text(hostile_run):
    _, _, records, _ = hostile_run
    assert records["test-2"]["output"] == "ab\ufffd\ufffd\ufffdcd" and records["test-2"]["error"] is None
    assert records["test-3"]["output"] == "a\x00b" and records["test-3"]["error"] is None
    assert records["test-6"]["output"] == "x" * (8 * MiB) and records["test-6"]["error"] is None
    assert records["test-0"]["output"].startswith("I counted the prompt")


def test_an_html_page_or_a_cut_event_is_a_failed_request(hostile_run):
    _, _, records, _ = hostile_run
    assert records["test-4"]["error"].startswith("the response stream ended before the model finished")
    assert records["test-5"]["error"].startswith("malformed event in the response stream")


# --- stop signals ------------------------------------------------------------------------------

SECOND_SIGNAL = """
import os, signal, sys, time
from evalsuite.pipeline import lifecycle
from evalsuite.backends.scripted import ScriptedBackend
from evalsuite.config import RunConfig
from evalsuite.pipeline.runner import run

class TwoSignals(ScriptedBackend):
    def generate(self, requests):  # the second signal lands while the first one unwinds
        try:
            os.kill(os.getpid(), signal.{sig})
            time.sleep(30)
        finally:
            os.kill(os.getpid(), signal.{sig})
            time.sleep(30)

lifecycle.install_signal_handlers()
backend = TwoSignals(outputs={{"*": "The answer is 5."}})
if sys.argv[4] == "run":
    run(RunConfig(tasks=("gsm8k",), backend="scripted", model=sys.argv[1], limit=4, data_dir=sys.argv[2],
                  output_dir=sys.argv[3], run_id="two", cache=False), progress=False, backend=backend)
else:
    from argparse import Namespace
    from evalsuite.pipeline.suite import run_suite
    run_suite(sys.argv[4], Namespace(output_dir=sys.argv[3], run_id="suite", no_progress=True), backend=backend)
"""
SUITE = """
backend: scripted
model: {answers}
data_dir: {data}
tasks:
  - name: gsm8k
    id: two
    limit: 4
"""


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM", "SIGHUP"])
@pytest.mark.parametrize("how", ["run", "suite"])
def test_a_second_signal_during_the_unwinding_still_marks_the_run_interrupted(tmp_path, gsm8k_data_dir, sig, how):
    answers = tmp_path / "answers.json"
    answers.write_text('{"*": "The answer is 5."}')
    (tmp_path / "suite.yaml").write_text(SUITE.format(answers=answers, data=gsm8k_data_dir))
    proc = subprocess.run([sys.executable, "-c", SECOND_SIGNAL.format(sig=sig), str(answers), str(gsm8k_data_dir),
                           str(tmp_path / "results"), how if how == "run" else str(tmp_path / "suite.yaml")],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)},
                          cwd=REPO, check=False)
    signum = getattr(__import__("signal"), sig)
    assert proc.returncode == 128 + signum, proc.stderr  # the hard stop's exit, not the unwinding's
    assert proc.stderr.strip().endswith("evalsuite: stopped")
    run_dir = tmp_path / "results" / ("two" if how == "run" else "suite/two")
    why = f"stopped at once by a second stop signal ({sig})"
    run = json.loads((run_dir / "run.json").read_text())
    assert (run["status"], run["error"]) == ("interrupted", why)
    assert not list(run_dir.glob(".*.tmp"))
    if how == "suite":
        suite = json.loads((tmp_path / "results" / "suite" / "suite.json").read_text())
        assert (suite["status"], suite["error"]) == ("interrupted", why)


# --- run directories with hostile contents -------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(gsm8k_data_dir, tmp_path_factory):
    """A complete 4-sample gsm8k run (scripted answers): ``(run_dir, run.json, samples lines)``."""
    tmp = tmp_path_factory.mktemp("finished")
    (tmp / "answers.json").write_text('{"*": "The answer is 18."}')
    proc = evalsuite("run", "--no-progress", "--tasks", "gsm8k", "--limit", "4", "--data-dir", str(gsm8k_data_dir),
                     "--backend", "scripted", "--model", str(tmp / "answers.json"), "--output-dir", str(tmp),
                     "--run-id", "base", "--no-cache")
    assert proc.returncode == 0, proc.stderr
    run_dir = tmp / "base"
    return run_dir, json.loads((run_dir / "run.json").read_text()), (run_dir / "samples.jsonl").read_bytes()


def copy_run(finished_run, dest: Path, run_json=None, samples: bytes | None = None) -> Path:
    import shutil

    run_dir, original, _ = finished_run
    shutil.copytree(run_dir, dest)
    if run_json is not None:
        text = run_json if isinstance(run_json, bytes) else json.dumps(run_json(original)).encode()
        (dest / "run.json").write_bytes(text)
    if samples is not None:
        (dest / "samples.jsonl").write_bytes(samples)
    return dest


def metrics_with(run: dict, **score) -> dict:
    m = run["metrics"]["gsm8k"]
    return {**run, "metrics": {"gsm8k": {**m, "scores": {"strict-match": {**m["scores"]["strict-match"], **score}}}}}


BAD_RUN_JSON = {
    "a list": (b"[1, 2]", "run.json must be a mapping (a JSON object), got list"),
    "100,000 deep": (b"[" * 100_000 + b"]" * 100_000, "cannot read"),
    "invalid UTF-8": (b'{"status": "\xff"}', "cannot read"),
    "metrics a list": (lambda r: {**r, "metrics": [1]}, "metrics: should be a valid mapping"),
    "a value as text": (lambda r: metrics_with(r, value="0.5"), "strict-match.value: should be a valid number"),
    "an infinite value": (lambda r: metrics_with(r, value=math.inf), "strict-match.value: should be a finite number"),
    "a one-ended interval": (lambda r: metrics_with(r, ci95=[0.1]), "strict-match.ci95: list should have at least 2"),
    "timing as text": (lambda r: {**r, "metrics": {"gsm8k": {**r["metrics"]["gsm8k"], "performance": {
        "ttft_ms_p50": "fast"}}}}, "performance.ttft_ms_p50: should be a valid number"),
    "infinite memory": (lambda r: {**r, "memory": {"host_peak_rss_gib": math.inf}},
                        "memory.host_peak_rss_gib: should be a finite number"),
    "tasks as text": (lambda r: {**r, "tasks": "x"}, "tasks: should be a valid mapping"),
    "provenance a list": (lambda r: {**r, "provenance": [1]}, "provenance: should be a valid mapping"),
    "backend engine a list": (lambda r: {**r, "backend": {"engine": [1]}}, "backend.engine: should be a valid mapping"),
}


@pytest.mark.parametrize("name", BAD_RUN_JSON)
def test_report_and_compare_refuse_a_bad_run_json_in_one_line(finished_run, tmp_path, name):
    content, needle = BAD_RUN_JSON[name]
    bad = copy_run(finished_run, tmp_path / "bad", run_json=content)
    base = finished_run[0]
    for args in (["report", str(bad), "--output-dir", str(tmp_path / "reports")], ["compare", str(base), str(bad)],
                 ["compare", str(bad), str(base)]):
        proc = evalsuite(*args)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("evalsuite: error: ") and needle in lines[0], proc.stderr
        assert str(bad / "run.json") in lines[0]


def bad_lines(good: bytes) -> bytes:
    """``good`` with every kind of line that is not a record between its lines, and a torn last line."""
    lines = good.split(b"\n")[:-1]
    nan = lines[0].replace(b'"strict-match": ', b'"strict-match": NaN, "x": ')
    junk = [b"\x00\xff\xfe garbage", b"[1, 2]", b"null", b"[" * 100_000 + b"]" * 100_000, nan,
            b'{"task": 5, "sample_id": [1], "verdicts": "x"}',
            lines[1].replace(b'"strict-match": ', b'"strict-match": 1e999, "x": '),
            lines[2].replace(b'"e2e_s": null', b'"e2e_s": -1.0')]
    assert all(line not in lines for line in junk)
    return b"\n".join([lines[0], *junk, *lines[1:]]) + b"\n" + lines[-1][:40]


def test_lines_that_are_not_records_are_skipped_by_report_and_compare(finished_run, tmp_path):
    run_dir, _, good = finished_run
    bad = copy_run(finished_run, tmp_path / "bad", samples=bad_lines(good))
    assert read_samples(bad) == read_samples(run_dir)  # the 4 records; no NaN or infinite verdict among them
    report = evalsuite("report", str(bad), "--output-dir", str(tmp_path / "reports"))
    assert report.returncode == 0 and "Traceback" not in report.stderr, report.stderr
    compare = evalsuite("compare", str(run_dir), str(bad))
    assert compare.returncode == 0 and "Traceback" not in compare.stderr, compare.stderr


def test_resume_generates_again_what_is_not_a_record(finished_run, tmp_path):
    _, original, good = finished_run
    test_1 = good.split(b"\n")[1] + b"\n"  # only its copy with an infinite verdict is left
    bad = copy_run(finished_run, tmp_path / "bad", run_json=lambda r: {**r, "status": "interrupted"},
                   samples=bad_lines(good).replace(test_1, b""))
    proc = evalsuite("run", "--no-progress", "--resume", str(bad))
    assert proc.returncode == 0, proc.stderr
    run = json.loads((bad / "run.json").read_text())
    assert run["status"] == "complete"
    assert run["metrics"]["gsm8k"]["scores"] == original["metrics"]["gsm8k"]["scores"]
    assert [json.loads(line)["sample_id"] for line in (bad / "samples.jsonl").read_bytes().splitlines()] == [
        "test-0", "test-2", "test-3", "test-1"]  # the records kept in file order, then test-1 generated again


# --- bad settings: one line, exit code 2, nothing written ------------------------------------------

BAD_SETTINGS = {
    "a control character in the URL": (["--base-url", "http://127.0.0.1:1\x01/v1"], "--base-url is not a valid URL"),
    "a broken IPv6 host": (["--base-url", "http://[::1/v1"], "--base-url is not a valid URL"),
    "no host": (["--base-url", "http:///v1"], "--base-url is not a valid URL"),
    "an infinite temperature": (["--temperature", "inf"], "--temperature must be a finite number >= 0, got inf"),
    "a NaN temperature": (["--temperature", "nan"], "--temperature must be a finite number >= 0, got nan"),
}


@pytest.mark.parametrize("name", BAD_SETTINGS)
def test_bad_settings_are_one_line_and_write_nothing(tmp_path, gsm8k_data_dir, name):
    args, needle = BAD_SETTINGS[name]
    settings = {"--base-url": "http://127.0.0.1:1/v1", **dict(zip(args[::2], args[1::2]))}
    proc = evalsuite("run", "--no-progress", "--tasks", "gsm8k", "--limit", "2", "--data-dir", str(gsm8k_data_dir),
                     "--backend", "openai", "--model", "fake", "--output-dir", str(tmp_path / "results"),
                     *[a for pair in settings.items() for a in pair])
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and proc.stderr.startswith(
        f"evalsuite: error: {needle}"), proc.stderr
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


@pytest.mark.parametrize("setting, needle", [
    ('backend_args:\n  base_urls: ["http://[::1/v1"]\n', "--base-url is not a valid URL"),
    ("defaults:\n  temperature: .inf\n", "--temperature must be a finite number >= 0, got inf"),
])
def test_a_suite_with_a_bad_setting_writes_nothing(tmp_path, gsm8k_data_dir, setting, needle):
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"backend: openai\nmodel: fake\ndata_dir: {gsm8k_data_dir}\n{setting}"
                     "tasks:\n  - name: gsm8k\n    limit: 2\n")
    proc = evalsuite("run", "--no-progress", "--suite", str(suite), "--output-dir", str(tmp_path / "results"),
                     "--run-id", "s")
    assert proc.returncode == 2 and proc.stderr.startswith(f"evalsuite: error: {needle}"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "results" / "s").exists()


def test_an_error_is_one_bounded_line_whatever_the_server_put_in_it(tmp_path, gsm8k_data_dir):
    forged = "fake\nevalsuite: error: forged\x1b[2J" + "x" * 5000
    with FaultServer("--models-json", json.dumps({"data": [{"id": forged}]})) as server:
        proc = evalsuite("run", "--no-progress", "--tasks", "gsm8k", "--limit", "1", "--data-dir",
                         str(gsm8k_data_dir), "--backend", "openai", "--model", "fake", "--base-url", server.url,
                         "--output-dir", str(tmp_path / "results"), "--no-cache")
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if "error: " in line]
    assert len(errors) == 1 and errors[0].startswith("evalsuite: error: the server does not serve model 'fake'")
    assert "fake\\nevalsuite: error: forged\\x1b[2J" in errors[0] and "\x1b" not in proc.stderr
    assert errors[0].endswith(" more characters)") and len(errors[0]) < 2100
