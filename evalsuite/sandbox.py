"""Running untrusted programs: a pool of warm sandboxed workers that fork per program.

Each worker is one Python interpreter started once inside a sandbox; for every
program it forks a child that runs the program and reports back. Starting the
interpreter once per worker instead of once per program is what makes scoring
fast (see ``benchmarks/bench_humaneval.py``).

Isolation (``isolation=``):

- ``"bwrap"`` (bubblewrap, https://github.com/containers/bubblewrap): no network
  (own network namespace with only a loopback of its own), own PID, IPC and UTS
  namespaces, the whole file system read-only, ``/root`` and ``/home`` hidden
  (except the Python installation), a private writable ``/tmp`` (tmpfs, 64 MiB).
  When the harness runs as root, each worker drops to its own unprivileged uid
  (``SANDBOX_UID_BASE + worker index``) so that ``RLIMIT_NPROC`` applies (the
  kernel never applies it to root) and workers cannot signal each other. After
  each program every other process in the worker's PID namespace is killed.
- ``"none"``: no isolation, only the limits below. Refused by
  :func:`resolve_isolation` unless the caller allows running unsandboxed.

In both modes every program runs in its own session and process group, in a
fresh temporary directory (its ``HOME`` and ``TMPDIR``), with ``stdin`` from
``/dev/null`` and these resource limits (``setrlimit(2)``): CPU time, address
space, processes (threads count), file size, open files, no core files. A
wall-clock limit SIGKILLs the whole group; output beyond a cap kills it too.

A program passes when it runs to its end without an exception and exits with
status 0; ``os._exit(0)`` half-way does not pass, because the child reports
completion on a separate pipe with a per-program token. This is a guard against
accidents, not against a program that searches its own memory for the token.
"""

from __future__ import annotations

import atexit
import inspect
import json
import math
import os
import select
import shutil
import signal
import subprocess
import sys
import time
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cache

from evalsuite.errors import UsageError

ISOLATIONS = ("bwrap", "none")
SANDBOX_UID_BASE = 1_999_990_000
"""First uid given to workers when the harness runs as root; worker i gets base + i."""

HIDDEN_DIRS = ("/root", "/home")
"""Directories replaced by an empty tmpfs inside the sandbox (user files, keys)."""

TMP_SIZE_BYTES = 64 << 20
KEEP_OUTPUT_BYTES = 8 << 10
"""Captured stdout+stderr kept per program (the first bytes); more is read and dropped."""

_GRACE_S = 5.0  # harness-side slack over a program's wall-clock limit before a worker counts as hung


@dataclass(frozen=True)
class Limits:
    """Per-program limits.

    ``timeout_s``: wall clock, seconds (SIGKILL to the process group).
    ``cpu_s``: CPU seconds (``RLIMIT_CPU``; SIGXCPU, then SIGKILL one second later);
    default: ``ceil(timeout_s)``. ``memory_bytes``: address space (``RLIMIT_AS``).
    ``processes``: processes and threads the program may add (``RLIMIT_NPROC``).
    ``file_size_bytes``: largest file it may write (``RLIMIT_FSIZE``).
    ``open_files``: ``RLIMIT_NOFILE``. ``max_output_bytes``: stdout+stderr after
    which the program is killed.
    """

    timeout_s: float = 5.0
    cpu_s: int | None = None
    memory_bytes: int = 2 << 30
    processes: int = 32
    file_size_bytes: int = 16 << 20
    open_files: int = 64
    max_output_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise UsageError(f"sandbox timeout must be positive, got {self.timeout_s}")


@dataclass(frozen=True)
class Outcome:
    """The verdict on one program.

    ``status`` is one of ``passed``, ``failed`` (an exception or a non-zero exit),
    ``timeout`` (wall clock), ``killed`` (a signal: CPU limit, file-size limit,
    segmentation fault ...), ``output-limit`` or ``sandbox-error`` (the worker
    died or hung; the program is failed and the worker replaced). ``reason`` says
    why in one line (``None`` when passed). ``output``: the first
    :data:`KEEP_OUTPUT_BYTES` of stdout+stderr. ``wall_s``: seconds from fork to end.
    """

    status: str
    reason: str | None = None
    output: str = ""
    wall_s: float | None = None

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def _worker_main() -> None:  # pragma: no cover - runs inside the sandbox, in its own interpreter
    """The worker: reads one JSON job per line on stdin, answers one JSON line on stdout.

    Sent as source text to ``python -I -c``, so it imports only the standard library
    and defines its helpers inside. ``sys.argv[1]``: JSON with ``uid`` (drop to it,
    or null), ``nproc_base`` (processes the uid already has) and ``sweep`` (kill
    every other process of the PID namespace after each program).
    """
    import builtins
    import json
    import os
    import resource
    import select
    import shutil
    import signal
    import sys
    import tempfile
    import time

    cfg = json.loads(sys.argv[1])
    if cfg["uid"] is not None:
        os.setgroups([])
        os.setgid(cfg["uid"])
        os.setuid(cfg["uid"])
    me = os.getpid()
    # In the sandbox we are pid 1: the kernel drops signals from inside the namespace that
    # we do not handle, so a program cannot kill us; SIGINT is handled by Python, so ignore it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def send(obj):
        data = (json.dumps(obj) + "\n").encode()
        while data:
            data = data[os.write(1, data):]

    def sweep():
        # Kill every other process of the namespace (we are its pid 1), until none is left alive.
        for _ in range(200):
            alive = 0
            for name in os.listdir("/proc"):
                if not name.isdigit() or int(name) == me:
                    continue
                try:
                    with open(f"/proc/{name}/stat", "rb") as f:
                        state = f.read().rsplit(b")", 1)[1].split()[0]
                    if state != b"Z":
                        alive += 1
                        os.kill(int(name), signal.SIGKILL)
                except (OSError, IndexError):
                    pass
            if not alive:
                return
            time.sleep(0.005)

    def reap_orphans():
        # As pid 1 we inherit the program's orphans; collect their exit statuses.
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    return
            except ChildProcessError:
                return

    def child(program, token, tmp, lim, st_w, out_w):
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.setsid()
        os.chdir(tmp)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_w, 1)
        os.dup2(out_w, 2)
        os.dup2(st_w, 3)
        os.closerange(4, 1 << 16)
        os.environ.update(HOME=tmp, TMPDIR=tmp)
        tempfile.tempdir = tmp
        cpu = lim["cpu_s"]
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_AS, (lim["memory_bytes"],) * 2)
        nproc = cfg["nproc_base"] + lim["processes"]
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
        resource.setrlimit(resource.RLIMIT_FSIZE, (lim["file_size_bytes"],) * 2)
        resource.setrlimit(resource.RLIMIT_NOFILE, (lim["open_files"],) * 2)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        sys.argv = ["program.py"]
        me = os.getpid()  # processes the program forks must not report in its name
        try:
            code = compile(program, "program.py", "exec")
            exec(code, {"__name__": "__main__", "__builtins__": builtins})  # noqa: S102 - the point
            sys.stdout.flush()
            sys.stderr.flush()
            if os.getpid() == me:
                os.write(3, token.encode())
            os._exit(0)
        except BaseException as e:  # noqa: BLE001 - the program's own failure, reported to the worker
            line = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            try:
                if os.getpid() == me:
                    os.write(3, ("FAIL " + line[:500]).encode("utf-8", "replace"))
            finally:
                os._exit(1)

    def run(job):
        lim = job["limits"]
        token = os.urandom(16).hex()
        tmp = tempfile.mkdtemp(prefix="sample-")
        out_r, out_w = os.pipe()
        st_r, st_w = os.pipe()
        start = time.monotonic()
        pid = os.fork()
        if pid == 0:
            try:
                child(job["program"], token, tmp, lim, st_w, out_w)
            finally:
                os._exit(70)
        os.close(out_w)
        os.close(st_w)
        pidfd = os.pidfd_open(pid)
        poller = select.poll()
        for fd in (out_r, st_r, pidfd, 0):
            poller.register(fd, select.POLLIN)
        kept, total, status, verdict = bytearray(), 0, bytearray(), None
        deadline = start + lim["timeout_s"]
        open_fds = {out_r, st_r}
        while verdict is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                verdict = ("timeout", f"timed out after {lim['timeout_s']:g} s (wall clock)")
                break
            events = poller.poll(remaining * 1000)
            exited = False
            for fd, _ in events:
                if fd == 0:
                    if not os.read(0, 1):  # harness gone: stop everything
                        os.killpg(pid, signal.SIGKILL)
                        if cfg["sweep"]:
                            sweep()
                        os._exit(0)
                elif fd == pidfd:
                    exited = True
                elif fd in open_fds:
                    data = os.read(fd, 1 << 16)
                    if not data:
                        poller.unregister(fd)
                        open_fds.discard(fd)
                    elif fd == out_r:
                        total += len(data)
                        kept += data[: max(0, job["keep_output"] - len(kept))]
                        if total > lim["max_output_bytes"]:
                            verdict = ("output-limit", f"output limit exceeded (> {lim['max_output_bytes']} bytes)")
                    else:
                        status += data[:4096]
            if exited and verdict is None:
                break
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if cfg["sweep"]:
            sweep()
        _, wait_status = os.waitpid(pid, 0)
        wall = time.monotonic() - start
        if cfg["sweep"]:
            reap_orphans()
        poller.unregister(pidfd)
        poller.unregister(0)
        # Every writer is dead now; read what is left without waiting for escaped processes.
        drain_until = time.monotonic() + 0.2
        while open_fds and time.monotonic() < drain_until:
            for fd, _ in poller.poll(50):
                if fd in open_fds:
                    data = os.read(fd, 1 << 16)
                    if not data:
                        poller.unregister(fd)
                        open_fds.discard(fd)
                    elif fd == st_r:
                        status += data[:4096]
                    else:
                        kept += data[: max(0, job["keep_output"] - len(kept))]
        for fd in (out_r, st_r, pidfd):
            os.close(fd)
        shutil.rmtree(tmp, ignore_errors=True)
        if verdict is None:
            if os.WIFSIGNALED(wait_status):
                sig = os.WTERMSIG(wait_status)
                names = {signal.SIGXCPU: "CPU time limit exceeded", signal.SIGXFSZ: "file size limit exceeded"}
                verdict = ("killed", names.get(sig, f"killed by signal {signal.Signals(sig).name}"))
            elif bytes(status) == token.encode() and os.WEXITSTATUS(wait_status) == 0:
                verdict = ("passed", None)
            elif status.startswith(b"FAIL "):
                verdict = ("failed", status[5:].decode("utf-8", "replace"))
            else:
                verdict = ("failed", f"exited with status {os.WEXITSTATUS(wait_status)} before the end of the program")
        return {"id": job["id"], "status": verdict[0], "reason": verdict[1],
                "output": kept.decode("utf-8", "replace"), "wall_s": wall}

    buffer = b""
    while True:
        chunk = os.read(0, 1 << 16)
        if not chunk:
            return
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            send(run(json.loads(line)))


@cache
def bwrap_available() -> str | None:
    """Why bubblewrap cannot be used here, or ``None`` when it works.

    Runs ``bwrap`` once with the namespaces the sandbox uses (cached).
    """
    exe = shutil.which("bwrap")
    if exe is None:
        return "bwrap is not installed (apt-get install bubblewrap)"
    try:
        proc = subprocess.run(_bwrap_argv(exe) + ["/bin/true"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"bwrap failed to start: {e}"
    if proc.returncode != 0:
        return "bwrap failed: " + proc.stderr.decode(errors="replace").strip()[:200]
    return None


def resolve_isolation(requested: str = "auto", allow_unsandboxed: bool = False) -> str:
    """The isolation to use: ``auto`` means ``bwrap`` when it works here.

    Raises :class:`UsageError` for an unknown name, for ``bwrap`` when it cannot run,
    and for running without a sandbox (``none``, or ``auto`` with no sandbox) unless
    ``allow_unsandboxed``.
    """
    if requested not in ("auto", *ISOLATIONS):
        raise UsageError(f"unknown sandbox {requested!r} (use auto, {', '.join(ISOLATIONS)})")
    if requested in ("auto", "bwrap"):
        problem = bwrap_available()
        if problem is None:
            return "bwrap"
        if requested == "bwrap" or not allow_unsandboxed:
            raise UsageError(f"no sandbox for running generated code: {problem}; "
                             "install bubblewrap or pass --allow-unsandboxed to run it unisolated")
    if not allow_unsandboxed:
        raise UsageError("running generated code without a sandbox needs --allow-unsandboxed")
    return "none"


def _bwrap_argv(exe: str) -> list[str]:
    argv = [exe, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
            "--perms", "1777", "--size", str(TMP_SIZE_BYTES), "--tmpfs", "/tmp",
            "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--new-session", "--as-pid-1", "--chdir", "/tmp", "--clearenv",
            "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin", "--setenv", "HOME", "/tmp"]
    if os.geteuid() != 0:
        argv.append("--unshare-user")
    hidden = [d for d in HIDDEN_DIRS if os.path.isdir(d)]
    for d in hidden:
        argv += ["--tmpfs", d]
    # The Python installation stays visible under every directory a tmpfs masks,
    # /tmp included (a checkout and its venv may live there).
    for keep in _python_dirs():
        parent = next((d for d in ("/tmp", *hidden) if keep.startswith(d + "/")), None)
        if parent is None:
            continue
        parts = keep[len(parent) + 1:].split("/")
        for i in range(1, len(parts)):
            argv += ["--perms", "0755", "--dir", "/".join([parent, *parts[:i]])]
        argv += ["--ro-bind", keep, keep]
    return argv


def _python_dirs() -> list[str]:
    """The interpreter's installation and environment, which must stay visible."""
    dirs = {os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, sys.exec_prefix)}
    dirs.add(os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))))
    outermost = []
    for d in sorted(dirs):
        if not any(d.startswith(o + "/") or d == o for o in outermost):
            outermost.append(d)
    return outermost


def _user_tasks(uid: int) -> int:
    """Processes plus threads the uid has now (what ``RLIMIT_NPROC`` counts)."""
    import psutil

    total = 0
    for p in psutil.process_iter(["uids", "num_threads"]):
        info = p.info
        if info["uids"] is not None and info["uids"].real == uid:
            total += info["num_threads"] or 1
    return total


class _Worker:
    """One sandboxed interpreter and the pipes to it."""

    def __init__(self, isolation: str, index: int) -> None:
        as_root = os.geteuid() == 0
        uid = SANDBOX_UID_BASE + index if (as_root and isolation == "bwrap") else None
        # The worker and its child count too; a non-root user's other processes count as well.
        base = 2 + (_user_tasks(uid if uid is not None else os.geteuid()) + 16 if uid is None else 0)
        cfg = {"uid": uid, "nproc_base": base, "sweep": isolation == "bwrap"}
        source = inspect.getsource(_worker_main) + "\n_worker_main()\n"
        python = [sys.executable, "-I", "-c", source, json.dumps(cfg)]
        argv = python
        if isolation == "bwrap":
            argv = _bwrap_argv(shutil.which("bwrap"))
            if uid is not None:
                argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
            argv += ["--", *python]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, start_new_session=True, bufsize=0)
        self.fd = self.proc.stdout.fileno()
        self.buffer = b""

    def send(self, job: dict) -> None:
        self.proc.stdin.write((json.dumps(job) + "\n").encode())

    def read_lines(self) -> list[bytes] | None:
        """Complete lines that arrived; ``None`` at end of file (the worker died)."""
        data = os.read(self.fd, 1 << 16)
        if not data:
            return None
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        return lines

    def kill(self) -> None:
        """Kills the worker (the PID namespace dies with its pid 1) and waits for bwrap,
        which reaps it, to exit."""
        import psutil

        try:
            inside = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            inside = []
        for p in inside:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait()


class SandboxPool:
    """``workers`` warm sandboxed interpreters running programs in parallel.

    ``isolation``: ``bwrap`` or ``none`` (see :func:`resolve_isolation`);
    ``workers``: default the number of CPU cores. Use as a context manager or call
    :meth:`close`; workers also exit when the harness process ends (end of file
    on their stdin). Not thread-safe: one :meth:`run` at a time.
    """

    def __init__(self, isolation: str, workers: int | None = None, limits: Limits = Limits()) -> None:
        if isolation not in ISOLATIONS:
            raise UsageError(f"unknown sandbox {isolation!r} (use {', '.join(ISOLATIONS)})")
        self.isolation = isolation
        self.size = workers or os.cpu_count() or 1
        if self.size < 1:
            raise UsageError(f"sandbox workers must be >= 1, got {self.size}")
        self.limits = limits
        self.restarts = 0
        self._workers: list[_Worker | None] = [None] * self.size
        self._finalizer = weakref.finalize(self, SandboxPool._close_all, self._workers)

    @staticmethod
    def _close_all(workers: list) -> None:
        for i, w in enumerate(workers):
            if w is not None:
                w.kill()
                workers[i] = None

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> SandboxPool:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _worker(self, index: int) -> _Worker:
        if self._workers[index] is None:
            self._workers[index] = _Worker(self.isolation, index)
        return self._workers[index]

    def _replace(self, index: int) -> None:
        self._workers[index].kill()
        self._workers[index] = None
        self.restarts += 1

    def run(self, programs: Sequence[str], limits: Limits | None = None) -> list[Outcome]:
        """Runs each program (Python source) once; one :class:`Outcome` each, in order.

        Never raises for a program's behaviour: a worker that dies or hangs fails
        its program with status ``sandbox-error`` and is replaced.
        """
        lim = limits or self.limits
        wire = {**asdict(lim), "cpu_s": lim.cpu_s or max(1, math.ceil(lim.timeout_s))}
        results: list[Outcome | None] = [None] * len(programs)
        pending = deque(range(len(programs)))
        idle = deque(range(self.size))
        busy: dict[int, tuple[int, float]] = {}  # worker index -> (program index, deadline)
        while pending or busy:
            while pending and idle:
                w, p = idle.popleft(), pending.popleft()
                try:
                    self._worker(w).send({"id": p, "program": programs[p], "limits": wire,
                                          "keep_output": KEEP_OUTPUT_BYTES})
                    busy[w] = (p, time.monotonic() + lim.timeout_s + _GRACE_S)
                except OSError as e:
                    results[p] = Outcome("sandbox-error", f"could not reach the sandbox worker: {e}")
                    self._replace(w)
                    idle.append(w)
            now = time.monotonic()
            wait = max(0.0, min(deadline for _, deadline in busy.values()) - now) if busy else 0.0
            by_fd = {self._workers[w].fd: w for w in busy}
            ready, _, _ = select.select(list(by_fd), [], [], wait)
            for fd in ready:
                w = by_fd[fd]
                p = busy[w][0]
                lines = self._workers[w].read_lines()
                if lines is None:
                    results[p] = Outcome("sandbox-error", "the sandbox worker died (killed by the program?)")
                    self._replace(w)
                elif lines:
                    reply = json.loads(lines[-1])
                    results[p] = Outcome(reply["status"], reply["reason"], reply["output"], reply["wall_s"])
                else:
                    continue
                del busy[w]
                idle.append(w)
            now = time.monotonic()
            for w, (p, deadline) in list(busy.items()):
                if now > deadline:
                    results[p] = Outcome("sandbox-error", "the sandbox worker stopped answering")
                    self._replace(w)
                    del busy[w]
                    idle.append(w)
        return results  # type: ignore[return-value]


_shared: dict[tuple, SandboxPool] = {}


def shared_pool(isolation: str, workers: int | None = None) -> SandboxPool:
    """One pool per (isolation, workers) for the whole process, closed at exit."""
    key = (isolation, workers)
    if key not in _shared:
        _shared[key] = SandboxPool(isolation, workers)
    return _shared[key]


@atexit.register
def _close_shared() -> None:
    for pool in _shared.values():
        pool.close()
