"""Bad input, one case per test: one line on stderr naming the file, key or flag,
exit code 2, no traceback, and nothing written outside the output directory.

Every case runs the real ``evalsuite`` command in a subprocess (against a real
OpenAI-compatible server on loopback where a server is needed). The stderr of every
run is collected; the last test checks that none holds a traceback, and writes
them all to ``$EVALSUITE_CLI_LOG_DIR/cli-errors.log`` when that is set, so CI can
``grep -rn Traceback`` over the logs (``make test`` does).

Read-only and unreadable paths mean nothing to root: when the tests run as root,
those cases run the command as ``nobody`` (``setpriv``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from test_openai_backend import FaultServer
from test_report_data import write_run

REPO = Path(__file__).resolve().parent.parent
LOGS: list[tuple[str, list[str], int, str]] = []  # (test, argv, exit code, stderr) of every run


def evalsuite(*args: str, env: dict | None = None, cwd: Path | None = None, unprivileged: bool = False,
              timeout: float = 180) -> subprocess.CompletedProcess:
    """Runs ``python -m evalsuite.cli ARGS`` and records its stderr."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    argv = [sys.executable, "-m", "evalsuite.cli", *args]
    if unprivileged and os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: permissions cannot be tested")
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=cwd or REPO,
                          check=False)
    LOGS.append((os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0], argv, proc.returncode, proc.stderr))
    return proc


def usage_error(proc: subprocess.CompletedProcess, *needles: str, after_start: bool = False) -> str:
    """Asserts exit code 2 and one stderr line holding every needle; returns the line.

    ``after_start``: the error comes once the run has started (a served endpoint is
    first asked for its models when the first request needs it), so the run's own
    first line ("evalsuite: <task> (<n> samples) on ...; results in DIR") may precede it.
    """
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    if after_start and len(lines) == 2:
        assert " samples) on " in lines[0] and "; results in " in lines[0], lines[0]
        lines = lines[1:]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("evalsuite: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


@pytest.fixture
def open_dir():
    """A folder everyone may enter (pytest's own tmp folders are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="evalsuite-cli-"))
    path.chmod(0o755)
    yield path
    for p in path.rglob("*"):
        if p.is_dir() and not p.is_symlink():
            p.chmod(0o755)
    shutil.rmtree(path, ignore_errors=True)


def gsm8k_dir(root: Path, test_lines: bytes) -> Path:
    folder = root / "data"
    (folder / "gsm8k").mkdir(parents=True)
    (folder / "gsm8k" / "test.jsonl").write_bytes(test_lines)
    return folder


GOOD = b'{"question": "What is 2 + 2?", "answer": "2 + 2 = 4\\n#### 4"}\n'
OFFLINE = ["--backend", "openai", "--model", "fake", "--base-url", "http://127.0.0.1:9"]


def run_gsm8k(tmp_path: Path, data: Path, *extra: str) -> subprocess.CompletedProcess:
    return evalsuite("run", "--tasks", "gsm8k", "--data-dir", str(data), "--output-dir", str(tmp_path / "results"),
                     *OFFLINE, *extra)


# --- data files --------------------------------------------------------------------------


@pytest.mark.parametrize("content, needles", [
    (GOOD + b'{"question": "caf\xe9?", "answer": "#### 1"}\n', ["test.jsonl:2: not UTF-8 text (byte 0xe9"]),
    (b'{"answer": "#### 4"}\n', ["test.jsonl:1: missing key 'question'"]),
    (b'[1, 2, 3]\n', ["test.jsonl:1: a record must be a JSON object, got an array"]),
    (b'{"question": 7, "answer": "#### 4"}\n', ["test.jsonl:1: question: should be a valid string, got 7"]),
    (b'{"question": "q", "answer": "no final number"}\n', ["test.jsonl:1: answer: GSM8K solution has no final"]),
    (GOOD + b'{"question": "q", "answer": \n', ["test.jsonl:2: not valid JSON"]),
    (b"[" * 100_000 + b"\n", ["test.jsonl:1: JSON nested too deeply to read"]),
    (b"", ["test.jsonl: no records (an empty file)"]),
], ids=["non-utf8", "missing-field", "list-record", "wrong-type", "no-final-number", "torn-json", "deep", "empty"])
def test_bad_gsm8k_file(tmp_path, content, needles):
    data = gsm8k_dir(tmp_path, content)
    usage_error(run_gsm8k(tmp_path, data), *needles, "--data-dir")
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("name, content, needle", [
    ("problems.jsonl.gz", b"not gzip at all", "cannot read"),
    ("problems.jsonl", b"[1, 2]\n", "problems.jsonl:1: a problem must be a JSON object, got list"),
    ("problems.jsonl", b'{"prompt": "caf\xe9"}\n', "cannot read"),
], ids=["not-gzip", "list", "non-utf8"])
def test_bad_humaneval_file(tmp_path, name, content, needle):
    (tmp_path / name).write_bytes(content)
    proc = evalsuite("run", "--tasks", "humaneval", "--task-arg", f"humaneval.data_file={tmp_path / name}",
                     "--allow-unsandboxed", "--output-dir", str(tmp_path / "r"), *OFFLINE)
    usage_error(proc, needle, str(tmp_path / name))


# --- suites ------------------------------------------------------------------------------


def suite_file(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.mark.parametrize("text, needles", [
    ("tasks:\n  - {name: gsm8k, limit: abc}\n", ["tasks[0].limit: should be a valid integer, got 'abc'"]),
    ("engine: {tensor_parallel_size: two}\ntasks: [gsm8k]\n",
     ["engine.tensor_parallel_size: should be a valid integer, got 'two'"]),
    ("tasks:\n  - {name: gsm8k, engine: {tensor_parallel_size: '2'}}\n",
     ["tasks[0].engine.tensor_parallel_size: should be a valid integer, got '2'"]),
    ("backend: openai\nbackend_args: {max_concurrency: lots}\ntasks: [gsm8k]\n",
     ["backend_args.max_concurrency: should be a valid integer, got 'lots'"]),
    ("backend_args: {base_urls: http://127.0.0.1:8000}\ntasks: [gsm8k]\n", ["backend_args.base_urls: should be a valid list"]),
    ("seed: 1.5\ntasks: [gsm8k]\n", ["seed: should be a valid integer, got 1.5"]),
    ("defaults: {temperature: hot}\ntasks: [gsm8k]\n", ["defaults.temperature: should be a valid number"]),
    ("tasks:\n  - {name: 5}\n", ["tasks[0].name: should be a valid string, got 5"]),
    ("max_error_rate: 2\ntasks: [gsm8k]\n", ["max_error_rate: should be less than or equal to 1"]),
    (b"name: caf\xe9\ntasks: [gsm8k]\n", ["not UTF-8 text (byte 0xe9"]),
], ids=["limit-abc", "tp-two", "entry-engine-str", "concurrency-lots", "base-urls-str", "seed-float",
        "defaults-temperature", "name-int", "error-rate-2", "non-utf8"])
def test_bad_suite_value(tmp_path, text, needles):
    path = suite_file(tmp_path, text)
    usage_error(evalsuite("run", "--suite", str(path), "--output-dir", str(tmp_path / "results")),
                str(path), *needles)
    assert not (tmp_path / "results").exists()


def test_suite_with_an_unknown_backend(tmp_path):
    path = suite_file(tmp_path, "backend: vlm\nmodel: fake\ntasks: [gsm8k]\n")
    usage_error(evalsuite("run", "--suite", str(path), "--output-dir", str(tmp_path / "r")),
                "unknown backend 'vlm' (did you mean 'vllm'?)")


@pytest.mark.parametrize("entry_id", ["../../x", "a/b", "..", "x\\y"])
def test_suite_entry_id_is_a_name_not_a_path(tmp_path, entry_id):
    out = tmp_path / "deep" / "results"
    path = suite_file(tmp_path, f"tasks:\n  - {{name: gsm8k, id: {json.dumps(entry_id)}}}\n")
    usage_error(evalsuite("run", "--suite", str(path), "--output-dir", str(out)),
                "tasks[0]: id must be a name, not a path")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["suite.yaml"]  # nothing created anywhere


# --- run flags --------------------------------------------------------------------------------


@pytest.mark.parametrize("run_id", ["../../../x", "a/b", "..", "/abs"])
def test_run_id_is_a_name_not_a_path(tmp_path, gsm8k_data_dir, run_id):
    out = tmp_path / "a" / "b" / "results"
    proc = evalsuite("run", "--tasks", "gsm8k", "--data-dir", str(gsm8k_data_dir), "--output-dir", str(out),
                     "--run-id", run_id, *OFFLINE)
    usage_error(proc, "--run-id must be a name, not a path")
    assert list(tmp_path.iterdir()) == []


def test_suite_run_id_is_a_name_not_a_path(tmp_path):
    path = suite_file(tmp_path, "tasks: [gsm8k]\n")
    usage_error(evalsuite("run", "--suite", str(path), "--output-dir", str(tmp_path / "r"), "--run-id", "../x"),
                "--run-id must be a name, not a path")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["suite.yaml"]


@pytest.mark.parametrize("task, arg, needle", [
    ("needle", "needle.samples_per_cell=abc", "task 'needle': argument samples_per_cell: should be a valid integer"),
    ("needle", "needle.threshold=[1]", "argument threshold: should be a valid number"),
    ("humaneval", "humaneval.ks=[1, \"ten\"]", "argument ks"),
    ("gsm8k", "gsm8k.fewshot_seed=1.5", "argument fewshot_seed: should be a valid integer"),
])
def test_task_argument_of_the_wrong_type(tmp_path, gsm8k_data_dir, task, arg, needle):
    proc = evalsuite("run", "--tasks", task, "--task-arg", arg, "--data-dir", str(gsm8k_data_dir),
                     "--output-dir", str(tmp_path / "r"), *OFFLINE)
    usage_error(proc, needle, f"--task-arg {task}.{arg.split('.')[1].split('=')[0]}")


def test_suite_task_args_of_the_wrong_type(tmp_path):
    path = suite_file(tmp_path, "backend: openai\nmodel: fake\ntasks:\n  - {name: needle, args: {samples_per_cell: lots}}\n")
    usage_error(evalsuite("run", "--suite", str(path), "--output-dir", str(tmp_path / "r")),
                "task 'needle': argument samples_per_cell: should be a valid integer")


def test_unknown_backend_is_named_before_the_model_path(tmp_path, gsm8k_data_dir):
    proc = evalsuite("run", "--tasks", "gsm8k", "--backend", "vlm", "--model", "fake",
                     "--data-dir", str(gsm8k_data_dir), "--output-dir", str(tmp_path / "r"))
    usage_error(proc, "unknown backend 'vlm' (did you mean 'vllm'?)")


def test_output_dir_that_is_a_file(tmp_path, gsm8k_data_dir):
    (tmp_path / "file").write_text("x")
    proc = evalsuite("run", "--tasks", "gsm8k", "--data-dir", str(gsm8k_data_dir),
                     "--output-dir", str(tmp_path / "file"), *OFFLINE)
    usage_error(proc, f"--output-dir {tmp_path / 'file'} is a file")


def test_output_dir_under_a_file(tmp_path, gsm8k_data_dir):
    (tmp_path / "file").write_text("x")
    proc = evalsuite("run", "--tasks", "gsm8k", "--data-dir", str(gsm8k_data_dir),
                     "--output-dir", str(tmp_path / "file" / "results"), *OFFLINE)
    usage_error(proc, "lies under a file", "--output-dir")


def test_output_dir_read_only(open_dir, gsm8k_data_dir):
    locked = open_dir / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    proc = evalsuite("run", "--tasks", "gsm8k", "--data-dir", str(gsm8k_data_dir),
                     "--output-dir", str(locked / "results"), *OFFLINE, "--no-cache",
                     env={"HOME": str(open_dir)}, unprivileged=True)
    usage_error(proc, "cannot be created", "is read-only", "--output-dir")
    assert list(locked.iterdir()) == []


# --- --resume --------------------------------------------------------------------------------


def resumable(tmp_path: Path, run_json: str) -> Path:
    run_dir = tmp_path / "results" / "old"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(run_json)
    return run_dir


@pytest.mark.parametrize("run_json, needles", [
    (json.dumps({"status": "running", "config": {"tasks": ["gsm8k"], "limit": "abc"}}),
     ["run.json: config.limit: should be a valid integer, got 'abc'"]),
    (json.dumps({"status": "running", "config": {"tasks": "gsm8k"}}), ["config.tasks: should be a valid list"]),
    (json.dumps({"status": "running", "config": {"tasks": ["gsm8k"], "engine": {"tensor_parallel_size": "two"}}}),
     ["config.engine.tensor_parallel_size: should be a valid integer"]),
    (json.dumps({"status": "running", "config": [1, 2]}), ["config: should be a valid mapping"]),
    (json.dumps({"status": "running"}), ["missing key 'config'"]),
    (json.dumps([1, 2, 3]), ["run.json must be a mapping"]),
    ('{"status": "runn', ["cannot read", "run.json"]),
], ids=["limit-abc", "tasks-str", "tp-two", "config-list", "no-config", "list", "torn"])
def test_resume_with_a_bad_run_json(tmp_path, run_json, needles):
    run_dir = resumable(tmp_path, run_json)
    usage_error(evalsuite("run", "--resume", str(run_dir)), *needles, "instead of --resume")
    assert sorted(p.name for p in run_dir.iterdir()) == ["run.json"]


# --- the response cache ------------------------------------------------------------------------


def test_cache_path_that_is_a_directory(tmp_path, gsm8k_data_dir):
    (tmp_path / "cache").mkdir()
    proc = evalsuite("run", "--tasks", "gsm8k", "--data-dir", str(gsm8k_data_dir), "--output-dir", str(tmp_path / "r"),
                     *OFFLINE, env={"EVALSUITE_RESPONSE_CACHE": str(tmp_path / "cache")})
    usage_error(proc, "cannot use the response cache", "it is a directory", "--no-cache")
    assert not (tmp_path / "r").exists()


def test_cache_path_under_a_file(tmp_path, gsm8k_data_dir):
    (tmp_path / "file").write_text("x")
    proc = evalsuite("run", "--tasks", "gsm8k", "--data-dir", str(gsm8k_data_dir), "--output-dir", str(tmp_path / "r"),
                     *OFFLINE, env={"EVALSUITE_RESPONSE_CACHE": str(tmp_path / "file" / "responses.sqlite")})
    usage_error(proc, "cannot use the response cache", "its folder cannot be created", "--no-cache")


def test_cache_file_unreadable(open_dir, gsm8k_data_dir):
    cache = open_dir / "responses.sqlite"
    cache.write_bytes(b"")
    cache.chmod(0)
    out = open_dir / "results"
    out.mkdir()
    out.chmod(0o777)
    proc = evalsuite("run", "--tasks", "gsm8k", "--data-dir", str(gsm8k_data_dir), "--output-dir", str(out),
                     *OFFLINE, env={"EVALSUITE_RESPONSE_CACHE": str(cache), "HOME": str(open_dir)}, unprivileged=True)
    usage_error(proc, "cannot use the response cache", "--no-cache")
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_damaged_cache_is_moved_aside_and_the_run_goes_on(tmp_path, gsm8k_data_dir, damage):
    from evalsuite.results.cache import ResponseCache
    from evalsuite.types import Generation

    cache = tmp_path / "cache" / "responses.sqlite"
    cache.parent.mkdir()
    if damage == "garbage":
        cache.write_bytes(b"this is not a database " * 200)
    else:
        store = ResponseCache(cache)
        store.put_many([(f"k{i}", Generation("x" * 4000, "stop")) for i in range(300)])
        store.close()
        data = cache.read_bytes()
        cache.write_bytes(data[: len(data) // 2])
    with FaultServer("--model-id", "fake") as server:
        proc = evalsuite("run", "--tasks", "gsm8k", "--data-dir", str(gsm8k_data_dir), "--limit", "2",
                         "--backend", "openai", "--model", "fake", "--base-url", server.url, "--no-progress",
                         "--output-dir", str(tmp_path / "r"), "--run-id", "x",
                         env={"EVALSUITE_RESPONSE_CACHE": str(cache)})
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "warning: the response cache" in proc.stderr and "moved it to" in proc.stderr
    aside = [p.name for p in cache.parent.iterdir() if ".corrupt-" in p.name]
    assert len([name for name in aside if not name.endswith(("-wal", "-shm"))]) == 1
    run = json.loads((tmp_path / "r" / "x" / "run.json").read_text())
    assert run["status"] == "complete" and run["cache"]["misses"] == 2
    assert len(ResponseCache(cache)) == 2  # a new cache was started and filled


def test_unreadable_cache_entries_are_generated_again(tmp_path, gsm8k_data_dir):
    import sqlite3

    cache = tmp_path / "responses.sqlite"
    args = ["run", "--tasks", "gsm8k", "--data-dir", str(gsm8k_data_dir), "--limit", "2", "--backend", "openai",
            "--model", "fake", "--no-progress", "--output-dir", str(tmp_path / "r")]
    with FaultServer("--model-id", "fake") as server:
        first = evalsuite(*args, "--base-url", server.url, "--run-id", "a", env={"EVALSUITE_RESPONSE_CACHE": str(cache)})
        assert first.returncode == 0, first.stderr
        db = sqlite3.connect(cache)
        db.execute("UPDATE responses SET generation = '[1, 2, 3]' WHERE rowid = 1")
        db.commit()
        db.close()
        second = evalsuite(*args, "--base-url", server.url, "--run-id", "b", env={"EVALSUITE_RESPONSE_CACHE": str(cache)})
    assert second.returncode == 0 and "Traceback" not in second.stderr, second.stderr
    assert "1 unreadable response-cache entries" in second.stderr
    run = json.loads((tmp_path / "r" / "b" / "run.json").read_text())
    assert (run["cache"]["hits"], run["cache"]["misses"]) == (1, 1)
    rows = [r[0] for r in sqlite3.connect(cache).execute("SELECT generation FROM responses")]
    assert all(json.loads(r)["text"].startswith("I counted the prompt") for r in rows)  # repaired in place


# --- served endpoints ---------------------------------------------------------------------


@pytest.mark.parametrize("body, needle", [
    ('[{"id": "fake"}]', "should be a valid mapping"),
    ('{"data": "fake"}', "data: should be a valid list, got 'fake'"),
    ('{"data": [{"id": 5}]}', "data[0].id: should be a valid string, got 5"),
    ('{"object": "list"}', "missing key 'data'"),
    ("not json", "JSONDecodeError"),
], ids=["list", "string-data", "int-id", "no-data", "not-json"])
def test_odd_models_replies(tmp_path, gsm8k_data_dir, body, needle):
    with FaultServer("--models-json", body) as server:
        proc = evalsuite("run", "--tasks", "gsm8k", "--data-dir", str(gsm8k_data_dir), "--backend", "openai",
                         "--model", "fake", "--base-url", server.url, "--output-dir", str(tmp_path / "r"))
    usage_error(proc, "no endpoint answered GET /models", needle, after_start=True)
    [run_dir] = list((tmp_path / "r").iterdir())  # the run says why it stopped
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"


def test_served_model_name_needs_no_path_in_a_suite(tmp_path, gsm8k_data_dir):
    with FaultServer("--model-id", "fake") as server:
        path = suite_file(tmp_path, f"backend: openai\nmodel: fake\nbackend_args: {{base_urls: [{server.url}]}}\n"
                                    "tasks:\n  - {name: gsm8k, limit: 2}\n")
        proc = evalsuite("run", "--suite", str(path), "--data-dir", str(gsm8k_data_dir), "--no-progress",
                         "--no-cache", "--output-dir", str(tmp_path / "r"), "--run-id", "s")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "r" / "s" / "gsm8k" / "run.json").read_text())["status"] == "complete"


def test_two_runs_with_one_run_id_at_once(tmp_path, gsm8k_data_dir):
    """Both start together; one gets the directory, the other one line and exit code 2."""
    with FaultServer("--model-id", "fake", "--word-delay", "0.05") as server:
        argv = [sys.executable, "-m", "evalsuite.cli", "run", "--tasks", "gsm8k", "--data-dir", str(gsm8k_data_dir),
                "--limit", "2", "--backend", "openai", "--model", "fake", "--base-url", server.url, "--no-progress",
                "--no-cache", "--output-dir", str(tmp_path / "r"), "--run-id", "same"]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
                 for _ in range(2)]
        results = [(p.wait(timeout=180), p.stderr.read()) for p in procs]
        for p in procs:
            p.stdout.close()
            p.stderr.close()
    for code, err in results:
        LOGS.append(("test_two_runs_with_one_run_id_at_once", argv, code, err))
    assert sorted(code for code, _ in results) == [0, 2], results
    [loser] = [err for code, err in results if code == 2]
    usage_error(subprocess.CompletedProcess(argv, 2, "", loser), "already exists", "--run-id")
    assert json.loads((tmp_path / "r" / "same" / "run.json").read_text())["status"] == "complete"


# --- compare and report ------------------------------------------------------------------------


def test_compare_into_a_file(tmp_path):
    write_run(tmp_path, "base", {"gsm8k": {"verdicts": [1.0, 0.0]}})
    write_run(tmp_path, "cand", {"gsm8k": {"verdicts": [1.0, 0.0]}})
    (tmp_path / "file").write_text("x")
    proc = evalsuite("compare", "base", "cand", "--results-dir", str(tmp_path), "--output-dir", str(tmp_path / "file"))
    usage_error(proc, "--output-dir", "is a file")


def test_report_into_a_file_or_outside_its_folder(tmp_path):
    write_run(tmp_path, "base", {"gsm8k": {"verdicts": [1.0, 0.0]}})
    (tmp_path / "file").write_text("x")
    usage_error(evalsuite("report", "base", "--results-dir", str(tmp_path), "--output-dir", str(tmp_path / "file")),
                "--output-dir", "is a file")
    usage_error(evalsuite("report", "base", "--results-dir", str(tmp_path), "--output-dir", str(tmp_path / "reports"),
                          "--name", "../escaped"), "--name must be a name, not a path")
    assert not (tmp_path / "escaped").exists()


def test_bench_output_under_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    proc = evalsuite("bench", "--base-url", "http://127.0.0.1:9", "--prompts-file", str(tmp_path / "p.jsonl"),
                     "--output", str(tmp_path / "file" / "summary.json"))
    usage_error(proc, "--output", "lies under a file")


def test_bad_prompts_file_for_bench(tmp_path):
    (tmp_path / "p.jsonl").write_bytes(b'{"prompt": "caf\xe9"}\n')
    proc = evalsuite("bench", "--base-url", "http://127.0.0.1:9", "--prompts-file", str(tmp_path / "p.jsonl"))
    usage_error(proc, "p.jsonl:1: not UTF-8 text")


@pytest.mark.parametrize("text, needle", [
    ("latency: 5\n", "'latency' must be a mapping"),
    ("latency: {max_increase: lots}\n", "latency.max_increase must be a number"),
    (b"latency: {metric: caf\xe9}\n", "cannot read"),
], ids=["section-int", "limit-str", "non-utf8"])
def test_bad_thresholds_file(tmp_path, text, needle):
    write_run(tmp_path, "base", {"gsm8k": {"verdicts": [1.0]}})
    path = tmp_path / "t.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    proc = evalsuite("compare", "base", "base", "--results-dir", str(tmp_path), "--thresholds", str(path),
                     "--output-dir", str(tmp_path / "cmp"))
    usage_error(proc, str(path), needle)


def test_compare_default_latency_limit_is_the_documented_50_percent():
    from evalsuite.report.compare import load_thresholds

    assert load_thresholds(None) == load_thresholds(REPO / "thresholds" / "default.yaml")
    assert load_thresholds(None)["latency"]["max_increase"] == 0.5
    proc = evalsuite("compare", "--help")
    assert proc.returncode == 0 and "latency (e2e_ms_p95) increase > 50%" in " ".join(proc.stdout.split())


# --- last: the collected stderr ------------------------------------------------------------------


def test_no_cli_run_printed_a_traceback(tmp_path):
    assert LOGS, "run this module whole: the cases above collect the logs"
    text = "".join(f"=== {name} (exit {code}): {' '.join(argv[2:])}\n{err}\n" for name, argv, code, err in LOGS)
    folder = os.environ.get("EVALSUITE_CLI_LOG_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with open(Path(folder) / "cli-errors.log", "a", encoding="utf-8") as f:
            f.write(text)
    assert "Traceback" not in text
    assert all(code in (0, 2) for _, _, code, _ in LOGS), [(n, c) for n, _, c, _ in LOGS if c not in (0, 2)]
