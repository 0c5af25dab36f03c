"""Stopping a run: SIGINT/SIGTERM/SIGHUP and SIGKILL leave no process behind.

Real processes throughout: the ``evalsuite`` command in a subprocess, answered by
the scripted HTTP server of ``tests/fault_servers.py`` (no engine needed), its
verifier pool (equations) and sandbox pool (HumanEval) doing real work. Every
check of "no process left" is by PID: the command's process tree is read
(psutil) before the signal, and each of those PIDs must be gone (or a zombie
awaiting its reaper) within 10 s. The same check on the real vLLM engine is in
``test_stop_signals_engine.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import psutil
import pytest

from evalsuite.backends.serving import free_port

FAULT_SERVER = Path(__file__).with_name("fault_servers.py")
ROOT = Path(__file__).resolve().parents[1]
STOP_S = 10.0  # the bound: signal -> every process of the run gone


def alive(pids) -> list[int]:
    """The pids among ``pids`` still running (a zombie has ended: only its reaper is late)."""
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def wait_gone(pids, timeout_s: float = STOP_S) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive(pids)


def tree(pid: int) -> list[int]:
    try:
        return [pid] + [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


# HumanEval prompts all hold "def ": each gets a program that spins until its time limit,
# so a sandbox worker is busy when the command is killed.
SPIN = [["def ", "```python\nwhile True:\n    pass\n```"]]


@pytest.fixture
def served(tmp_path):
    """A fault server answering slowly (one word per 50 ms), and a 'model' directory it serves."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (tmp_path / "replies.json").write_text(json.dumps(SPIN))
    port = free_port()
    server = subprocess.Popen([sys.executable, str(FAULT_SERVER), "--port", str(port), "--model-id", str(model),
                               "--word-delay", "0.05", "--replies", str(tmp_path / "replies.json")],
                              stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(400):
            try:
                if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        yield url, model
    finally:
        server.kill()
        server.wait()


def start_run(url: str, model: Path, out: Path, task: str, *extra: str, new_session: bool = False) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "evalsuite.cli", "run", "--tasks", task, "--backend", "openai",
           "--base-url", url, "--model", str(model), "--max-concurrency", "2", "--limit", "40",
           "--output-dir", str(out), "--run-id", "r", "--no-progress", "--no-cache", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env(),
                            start_new_session=new_session)


def wait_for_samples(proc: subprocess.Popen, samples: Path, at_least: int, workers: int) -> list[int]:
    """Waits until ``at_least`` samples are written and the command has ``workers``
    children besides the watchdog; returns the command's process tree then."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()
        written = len(samples.read_text().splitlines()) if samples.exists() else 0
        pids = tree(proc.pid)
        if written >= at_least and len(pids) >= 2 + workers:  # the command, the watchdog, the workers
            return pids
        time.sleep(0.1)
    raise AssertionError(f"fewer than {at_least} samples or {workers} workers within 120 s")


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("sig", "group"), [(signal.SIGTERM, False), (signal.SIGINT, False),
                                           (signal.SIGHUP, False), (signal.SIGINT, True)],
                         ids=["SIGTERM", "SIGINT", "SIGHUP", "Ctrl-C"])
def test_a_stop_signal_ends_every_process_and_marks_the_run_interrupted(tmp_path, served, sig, group):
    """``group``: the signal goes to the whole process group, as Ctrl-C on a terminal
    sends it (the verifier workers and vLLM's processes get it too)."""
    url, model = served
    out = tmp_path / "results"
    proc = start_run(url, model, out, "equations", new_session=group)
    samples = out / "r" / "samples.jsonl"
    try:
        pids = wait_for_samples(proc, samples, at_least=4, workers=1)
        before = samples.read_text().splitlines()
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        left = wait_gone(pids)
        code = proc.wait(timeout=5)
    finally:
        proc.kill()
        proc.wait()
    assert left == []
    assert code == 128 + sig
    stderr = proc.stderr.read().decode()
    assert "interrupted" in stderr and "Traceback" not in stderr
    run = json.loads((out / "r" / "run.json").read_text())
    assert (run["status"], run["error"]) == ("interrupted", f"interrupted by {signal.Signals(sig).name}")
    lines = samples.read_text().splitlines()
    assert lines[: len(before)] == before  # every sample written before the signal is still there
    records = [json.loads(line) for line in lines]
    assert len({r["sample_id"] for r in records}) == len(records) < 40
    if sig != signal.SIGTERM:
        return
    resumed = subprocess.run([sys.executable, "-m", "evalsuite.cli", "run", "--resume", str(out / "r"),
                              "--no-progress", "--no-cache"], check=False, capture_output=True, env=env(), timeout=240)
    assert resumed.returncode == 0, resumed.stderr.decode()
    run = json.loads((out / "r" / "run.json").read_text())
    assert run["status"] == "complete" and run["metrics"]["equations"]["performance"]["requests"] == 40
    assert len(samples.read_text().splitlines()) == 40


@pytest.mark.timeout(300)
@pytest.mark.parametrize("task", ["equations", "humaneval"])
def test_sigkill_of_the_command_leaves_no_worker_behind(tmp_path, served, task):
    """equations: the sympy/math-verify verifier pool; humaneval: the sandbox pool."""
    url, model = served
    out = tmp_path / "results"
    extra = ("--task-arg", "humaneval.timeout_s=2") if task == "humaneval" else ()
    proc = start_run(url, model, out, task, *extra)
    try:
        pids = wait_for_samples(proc, out / "r" / "samples.jsonl", at_least=2, workers=1)
        time.sleep(1.0)  # the next batch is being checked
        proc.send_signal(signal.SIGKILL)
        assert wait_gone(pids) == []
    finally:
        proc.kill()
        proc.wait()


POOLS_SCRIPT = textwrap.dedent("""
    import os, sys, time
    from evalsuite.execution.sandbox import SandboxPool, resolve_isolation
    from evalsuite.scoring.equations import VerifierPool
    verifiers = VerifierPool(workers=1, time_limit_s=60, preload=())
    verifiers.map(os.getpid, [()])
    sandbox = SandboxPool(resolve_isolation("auto", allow_unsandboxed=True), workers=1)
    sandbox.run(["print(1)"])
    print(os.getpid(), flush=True)
    verifiers.map(time.sleep, [(600,)])  # busy for ten minutes, as a runaway check would be
""")


@pytest.mark.timeout(120)
def test_pool_workers_die_with_their_parent_without_a_watchdog(tmp_path):
    """PR_SET_PDEATHSIG alone (no signal handler, no watchdog): the verifier worker
    busy on a job and the idle sandbox worker end when their parent is SIGKILLed."""
    proc = subprocess.Popen([sys.executable, "-c", POOLS_SCRIPT], stdout=subprocess.PIPE, env=env())
    try:
        assert int(proc.stdout.readline()) == proc.pid
        time.sleep(0.5)
        pids = tree(proc.pid)
        assert len(pids) >= 3  # the script, a verifier worker, a sandbox worker (and its helpers)
        proc.send_signal(signal.SIGKILL)
        assert wait_gone(pids) == []
    finally:
        proc.kill()
        proc.wait()


HANDLER_SCRIPT = textwrap.dedent("""
    import os, sys, time
    from evalsuite.pipeline import lifecycle
    lifecycle.install_signal_handlers()
    child = __import__("subprocess").Popen([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
    try:
        print(child.pid, flush=True)  # inside the try: the test signals as soon as it reads this
        time.sleep(600)
    except KeyboardInterrupt:
        time.sleep(600)  # an unwinding that hangs (an engine that does not shut down)
""")


@pytest.mark.timeout(60)
def test_a_second_signal_stops_at_once_and_kills_children_that_ignore_sigterm():
    proc = subprocess.Popen([sys.executable, "-c", HANDLER_SCRIPT], stdout=subprocess.PIPE, env=env())
    try:
        child = int(proc.stdout.readline())
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        assert proc.poll() is None  # the first one unwinds
        start = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=5) == 128 + signal.SIGINT
        assert time.monotonic() - start < 3
        assert wait_gone([child], 3) == []
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.timeout(60)
def test_an_unwinding_that_hangs_is_cut_at_the_deadline():
    from evalsuite.pipeline.lifecycle import STOP_DEADLINE_S

    proc = subprocess.Popen([sys.executable, "-c", HANDLER_SCRIPT], stdout=subprocess.PIPE, env=env())
    try:
        child = int(proc.stdout.readline())
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=STOP_S + 5) == 128 + signal.SIGTERM
        took = time.monotonic() - start
        assert STOP_DEADLINE_S - 0.5 < took < STOP_S
        assert wait_gone([child], 3) == []
    finally:
        proc.kill()
        proc.wait()


WATCHED_SCRIPT = textwrap.dedent("""
    import os, subprocess, sys, time
    from evalsuite.pipeline import lifecycle
    lifecycle.start_watchdog()
    # A child in its own session that ignores SIGTERM: as vLLM's EngineCore does.
    child = subprocess.Popen([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"],
        start_new_session=True)
    print(child.pid, flush=True)
    time.sleep(600)
""")


@pytest.mark.timeout(60)
def test_the_watchdog_kills_what_a_killed_parent_left():
    proc = subprocess.Popen([sys.executable, "-c", WATCHED_SCRIPT], stdout=subprocess.PIPE, env=env())
    try:
        child = int(proc.stdout.readline())
        time.sleep(1.5)  # the watchdog notes its parent's children every 0.5 s
        pids = tree(proc.pid)
        assert child in pids and len(pids) == 3  # the script, the watchdog, the child
        proc.send_signal(signal.SIGKILL)
        assert wait_gone(pids, 5) == []
    finally:
        proc.kill()
        proc.wait()


LAUNCHED_SCRIPT = textwrap.dedent("""
    import subprocess, sys, time
    from evalsuite.pipeline.lifecycle import parent_death_argv
    # As evalsuite.backends.serving starts a managed `vllm serve`: its own session, argv through the launcher.
    child = subprocess.Popen(parent_death_argv(["sleep", "600"]), start_new_session=True)
    print(child.pid, flush=True)
    time.sleep(600)
""")


@pytest.mark.timeout(60)
def test_a_command_started_through_the_launcher_dies_with_its_parent():
    proc = subprocess.Popen([sys.executable, "-c", LAUNCHED_SCRIPT], stdout=subprocess.PIPE, env=env())
    try:
        child = int(proc.stdout.readline())
        deadline = time.monotonic() + 10
        while psutil.Process(child).name() != "sleep" and time.monotonic() < deadline:
            time.sleep(0.05)  # the launcher has exec'd the command: same pid, new program
        assert psutil.Process(child).cmdline() == ["sleep", "600"]
        proc.send_signal(signal.SIGKILL)
        assert wait_gone([child], 5) == []
    finally:
        proc.kill()
        proc.wait()
