"""Hostile programs in the real bubblewrap sandbox: each is contained, failed with a
reason, and the pool goes on. Every test is bounded by pytest-timeout; the whole
suite, run as one batch, by ``SUITE_BOUND_S``."""

import os
import socket
import time
import uuid
from pathlib import Path

import pytest

from evalsuite.execution import sandbox
from evalsuite.execution.sandbox import Limits, SandboxPool

pytestmark = [
    pytest.mark.skipif(sandbox.bwrap_available() is not None,
                       reason=f"bubblewrap unusable here: {sandbox.bwrap_available()}"),
    pytest.mark.timeout(30),
]

TIMEOUT_S = 2.0
SUITE_BOUND_S = 30.0

FORK_BOMB = "import os\nwhile True:\n    os.fork()"
INFINITE_LOOP = "while True:\n    pass"
IGNORES_SIGTERM = ("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                   "while True:\n    time.sleep(0.01)")
ALLOCATES_50_GB = "block = bytearray(50 * 2**30)"
PRINTS_1_GB = "import sys\nblock = 'x' * (1 << 20)\nfor _ in range(1024):\n    sys.stdout.write(block)"
KILLS_WORKER = "import os, signal\nos.kill(1, signal.SIGKILL)\nimport time\ntime.sleep(5)"
KILLS_PARENT = "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nimport time\ntime.sleep(5)"
THOUSAND_THREADS = ("import threading, time\nthreads = [threading.Thread(target=time.sleep, args=(1,)) "
                    "for _ in range(1000)]\nfor t in threads:\n    t.start()")
DEEP_RECURSION = "import sys\nsys.setrecursionlimit(10**9)\ndef f(n):\n    return f(n + 1)\nf(0)"
C_STACK_RECURSION = ("import sys\nsys.setrecursionlimit(10**6)\n"
                     "class Loop:\n    def __repr__(self):\n        return repr(Loop())\nrepr(Loop())")


def connects_to(port):
    return f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)"


def writes_to(path):
    return f"open({str(path)!r}, 'w').write('escaped')"


@pytest.fixture(scope="module")
def pool():
    with SandboxPool("bwrap", workers=2, limits=Limits(timeout_s=TIMEOUT_S)) as p:
        yield p


def contained(pool, program, statuses):
    """Runs the program, checks it failed as expected, then that the pool still works."""
    start = time.monotonic()
    outcome = pool.run([program])[0]
    elapsed = time.monotonic() - start
    assert outcome.status in statuses, outcome
    assert outcome.reason, outcome
    assert elapsed < TIMEOUT_S + 5
    assert [o.status for o in pool.run(["assert sum(range(4)) == 6"] * 2)] == ["passed", "passed"]
    return outcome


def processes_inside(pool):
    """Per started worker: the processes under its bwrap (the worker itself and anything left)."""
    import psutil

    return [len(psutil.Process(w.proc.pid).children(recursive=True)) for w in pool._workers if w is not None]


def test_fork_bomb(pool):
    contained(pool, FORK_BOMB, {"failed", "timeout", "killed"})
    assert processes_inside(pool) == [2, 2]  # only the two workers and their starters are left


def test_infinite_loop(pool):
    outcome = contained(pool, INFINITE_LOOP, {"timeout", "killed"})
    assert outcome.wall_s < TIMEOUT_S + 1


def test_process_ignoring_sigterm(pool):
    outcome = contained(pool, IGNORES_SIGTERM, {"timeout"})
    assert outcome.reason == f"timed out after {TIMEOUT_S:g} s (wall clock)"


def test_allocating_50_gb(pool):
    outcome = contained(pool, ALLOCATES_50_GB, {"failed"})
    assert outcome.reason == "MemoryError"


def test_printing_1_gb(pool):
    outcome = contained(pool, PRINTS_1_GB, {"output-limit"})
    assert len(outcome.output) == sandbox.KEEP_OUTPUT_BYTES


def test_network_connection_to_loopback_fails():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        with SandboxPool("bwrap", workers=1, limits=Limits(timeout_s=TIMEOUT_S)) as pool:
            outcome = contained(pool, connects_to(port), {"failed"})
        assert "ConnectionRefusedError" in outcome.reason or "Network is unreachable" in outcome.reason
        with pytest.raises(BlockingIOError):  # nothing reached the listener outside
            listener.accept()
        probe = socket.create_connection(("127.0.0.1", port), timeout=1)  # the port is reachable outside
        probe.close()
    finally:
        listener.close()


def test_killing_the_worker(pool):
    # The worker is pid 1 of the sandbox's PID namespace: as root the program runs under
    # another uid and may not signal it; in a user namespace the kernel drops the SIGKILL
    # (pid 1 has no handler for it) and the program sleeps past its wall-clock limit.
    before = pool.restarts
    outcome = contained(pool, KILLS_WORKER, {"failed", "timeout"})
    if os.geteuid() == 0:
        assert outcome.reason == "PermissionError: [Errno 1] Operation not permitted"
    assert pool.restarts == before
    assert outcome.wall_s < TIMEOUT_S + 1


def test_killing_its_parent(pool):
    # Its parent is the worker's starter: as root the program runs under another uid and may
    # not signal it; in a user namespace (same uid) it may, and the worker starts a new one.
    before = pool.restarts
    outcome = contained(pool, KILLS_PARENT, {"failed", "timeout"})
    if os.geteuid() == 0:
        assert outcome.reason == "PermissionError: [Errno 1] Operation not permitted"
    assert pool.restarts == before


def test_writing_outside_its_temp_dir(pool, tmp_path):
    targets = [Path(__file__).parent / f"escaped-{uuid.uuid4().hex}.txt", tmp_path / "escaped.txt"]
    try:
        for target in targets:
            outcome = contained(pool, writes_to(target), {"failed"})
            assert "Read-only file system" in outcome.reason or "No such file" in outcome.reason
            assert not target.exists()
    finally:
        for target in targets:
            target.unlink(missing_ok=True)


def test_spawning_1000_threads():
    # Its own pool with a longer time limit: on a loaded host, starting threads up to
    # the task limit can outlast the shared pool's 2 s, which would hide the verdict.
    with SandboxPool("bwrap", workers=1, limits=Limits(timeout_s=30)) as own:
        outcome = contained(own, THOUSAND_THREADS, {"failed"})
    assert "can't start new thread" in outcome.reason


def test_deep_recursion(pool):
    contained(pool, DEEP_RECURSION, {"failed", "timeout", "killed"})
    outcome = contained(pool, C_STACK_RECURSION, {"failed", "killed"})
    assert outcome.reason in ("killed by signal SIGSEGV", "RecursionError: maximum recursion depth exceeded")


@pytest.mark.timeout(SUITE_BOUND_S + 10)
def test_whole_hostile_suite_in_one_batch_is_bounded(tmp_path):
    programs = [FORK_BOMB, INFINITE_LOOP, IGNORES_SIGTERM, ALLOCATES_50_GB, PRINTS_1_GB, connects_to(9),
                KILLS_WORKER, writes_to(tmp_path / "escaped.txt"), THOUSAND_THREADS, DEEP_RECURSION,
                C_STACK_RECURSION, "assert True"]
    start = time.monotonic()
    with SandboxPool("bwrap", workers=2, limits=Limits(timeout_s=TIMEOUT_S)) as pool:
        outcomes = pool.run(programs)
    elapsed = time.monotonic() - start
    assert [o.passed for o in outcomes] == [False] * 11 + [True]
    assert all(o.reason for o in outcomes[:-1])
    assert not (tmp_path / "escaped.txt").exists()
    assert elapsed < SUITE_BOUND_S
