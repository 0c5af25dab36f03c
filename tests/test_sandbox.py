"""The sandbox worker pool: verdicts, limits, temp dirs and isolation choice (real processes)."""

import os
import time

import pytest

from evalsuite import sandbox
from evalsuite.errors import UsageError
from evalsuite.sandbox import Limits, SandboxPool, resolve_isolation

needs_bwrap = pytest.mark.skipif(sandbox.bwrap_available() is not None,
                                 reason=f"bubblewrap unusable here: {sandbox.bwrap_available()}")


@pytest.fixture(scope="module", params=[pytest.param("bwrap", marks=needs_bwrap), "none"])
def pool(request):
    with SandboxPool(request.param, workers=2, limits=Limits(timeout_s=3.0)) as p:
        yield p


def run_one(pool, program, limits=None):
    return pool.run([program], limits)[0]


def test_a_program_that_ends_passes_and_its_output_is_captured(pool):
    outcome = run_one(pool, "print('hello', flush=True)\nimport sys\nprint('oops', file=sys.stderr)")
    assert outcome.status == "passed" and outcome.reason is None
    assert outcome.output == "hello\noops\n"


def test_an_exception_fails_with_its_type_and_message(pool):
    outcome = run_one(pool, "assert 1 + 1 == 3, 'arithmetic'")
    assert (outcome.status, outcome.reason) == ("failed", "AssertionError: arithmetic")


def test_exiting_early_with_status_zero_does_not_pass(pool):
    outcome = run_one(pool, "import os\nos._exit(0)\nassert False")
    assert outcome.status == "failed"
    assert "before the end" in outcome.reason
    assert run_one(pool, "import sys\nsys.exit(0)").status == "failed"


def test_results_come_back_in_order(pool):
    programs = [f"assert {i} % 3 != 0" for i in range(12)]
    assert [o.passed for o in pool.run(programs)] == [i % 3 != 0 for i in range(12)]


def test_each_program_gets_a_fresh_private_temp_dir(pool):
    writer = ("import os\nassert os.environ['HOME'] == os.getcwd() == os.environ['TMPDIR']\n"
              "open('mark.txt', 'w').write('x')")
    reader = "import os\nassert not os.path.exists('mark.txt'), os.listdir('.')"
    outcomes = pool.run([writer, reader, reader, reader])
    assert [o.status for o in outcomes] == ["passed"] * 4, outcomes


def test_cpu_time_limit_kills_a_busy_loop_before_the_wall_clock(pool):
    start = time.monotonic()
    outcome = run_one(pool, "while True: pass", Limits(timeout_s=20.0, cpu_s=1))
    assert (outcome.status, outcome.reason) == ("killed", "CPU time limit exceeded")
    assert time.monotonic() - start < 10


def test_file_size_limit(pool):
    outcome = run_one(pool, "open('big', 'wb').write(b'x' * (2 << 20))", Limits(file_size_bytes=1 << 20))
    # Python ignores SIGXFSZ, so the write fails with EFBIG instead of the process being killed.
    assert (outcome.status, outcome.reason) == ("failed", "OSError: [Errno 27] File too large")


def test_open_files_limit(pool):
    outcome = run_one(pool, "fs = [open('f%d' % i, 'w') for i in range(100)]", Limits(open_files=32))
    assert outcome.status == "failed" and "Too many open files" in outcome.reason


def test_workers_run_in_parallel(pool):
    start = time.monotonic()
    outcomes = pool.run(["import time\ntime.sleep(1)"] * 2)
    assert all(o.passed for o in outcomes)
    assert time.monotonic() - start < 1.8  # two 1 s sleeps on two workers, not 2 s in sequence


KILLS_WORKER = ("import os, signal\n"
                "starter = os.getppid()  # the worker's starter forked us; the worker forked it\n"
                "worker = int(open(f'/proc/{starter}/stat').read().rsplit(')', 1)[1].split()[1])\n"
                "os.kill(worker, signal.SIGKILL)")


def test_a_worker_killed_by_its_program_fails_it_and_is_replaced():
    # Without a PID namespace the program can kill its worker; the pool replaces it.
    with SandboxPool("none", workers=1, limits=Limits(timeout_s=3.0)) as pool:
        outcomes = pool.run([KILLS_WORKER, "assert True"])
        assert [o.status for o in outcomes] == ["sandbox-error", "passed"]
        assert "died" in outcomes[0].reason
        assert pool.restarts == 1


def test_a_starter_killed_by_its_program_is_restarted_for_the_next_one():
    # Unsandboxed, the program may kill the process that forked it (and with it, perhaps, the
    # report of its own exit status); the worker starts a new starter for the next program.
    with SandboxPool("none", workers=1, limits=Limits(timeout_s=3.0)) as pool:
        for _ in range(3):
            outcomes = pool.run(["import os, signal\nos.kill(os.getppid(), signal.SIGKILL)", "assert True", "pass"])
            assert outcomes[0].status in ("passed", "sandbox-error"), outcomes[0]
            assert [o.status for o in outcomes[1:]] == ["passed", "passed"]
        assert pool.restarts == 0


@needs_bwrap
def test_bwrap_program_runs_unprivileged_in_its_own_pid_namespace():
    # Only the worker (pid 1), its starter (our parent) and the program itself are there.
    program = ("import os\nassert os.getuid() != 0 or os.geteuid() != 0\n"
               "pids = {p for p in os.listdir('/proc') if p.isdigit()}\n"
               "assert pids == {'1', str(os.getppid()), str(os.getpid())}, pids")
    if os.geteuid() != 0:
        program = program.replace("os.getuid() != 0 or os.geteuid() != 0", "True")
    with SandboxPool("bwrap", workers=1) as pool:
        outcome = run_one(pool, program)
    assert outcome.passed, outcome


def test_unknown_isolation_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown sandbox"):
        resolve_isolation("docker")
    with pytest.raises(UsageError):
        SandboxPool("docker")


def test_running_unsandboxed_needs_permission(monkeypatch):
    monkeypatch.setattr(sandbox, "bwrap_available", lambda: "bwrap is not installed")
    with pytest.raises(UsageError, match="--allow-unsandboxed"):
        resolve_isolation("auto")
    with pytest.raises(UsageError, match="--allow-unsandboxed"):
        resolve_isolation("none")
    with pytest.raises(UsageError, match="bwrap is not installed"):
        resolve_isolation("bwrap", allow_unsandboxed=True)
    assert resolve_isolation("auto", allow_unsandboxed=True) == "none"


@needs_bwrap
def test_auto_prefers_bwrap_when_it_works():
    assert resolve_isolation("auto") == "bwrap"
    assert resolve_isolation("auto", allow_unsandboxed=True) == "bwrap"


def test_a_python_installation_under_tmp_stays_visible(monkeypatch):
    """/tmp is a fresh tmpfs inside the sandbox; a venv living there is bound back in."""
    from evalsuite import sandbox

    monkeypatch.setattr(sandbox, "_python_dirs", lambda: ["/tmp/ci/.venv", "/usr"])
    argv = sandbox._bwrap_argv("bwrap")
    tmpfs_at = argv.index("/tmp", argv.index("--tmpfs"))
    bind_at = max(i for i, a in enumerate(argv) if a == "--ro-bind" and argv[i + 1] == "/tmp/ci/.venv")
    assert bind_at > tmpfs_at
    assert ["--dir", "/tmp/ci"] == argv[argv.index("/tmp/ci") - 1 : argv.index("/tmp/ci") + 1]
