"""Running untrusted programs: a pool of warm sandboxed workers that fork per program.

Each worker is one Python interpreter started once inside a sandbox (its program is
:mod:`evalsuite.execution.sandbox_worker`; the pool around it, :class:`evalsuite.execution.workers.KillablePool`). It forks a
*starter* before it reads any job; for every program the starter forks the
process that runs it, so a program starts from the starter's pristine memory and
never holds the worker's jobs, results or pipes, nor another program's data.
Starting the interpreter once per worker instead of once per program is what makes
scoring fast (see ``benchmarks/bench_humaneval.py``).

Two kinds of job:

- :meth:`SandboxPool.call` runs a program, calls one of its functions on given
  inputs and brings back the return values as plain data (:func:`encode_plain`:
  JSON with exact type tags for None, bool, int, float, complex, str, bytes, list,
  tuple, dict, set and frozenset; anything else comes back as an :class:`Opaque`
  type name). The caller decides what the values mean, in its own process. A
  program can make the values say whatever it likes (it owns its process), but it
  cannot make them be anything but plain data, so a verdict computed from them
  outside the sandbox is the program's answer and nothing more.
- :meth:`SandboxPool.run` runs a program and reports how it ended (``passed``: it
  ran to its last line and exited with status 0). That report comes from the
  program's own process, so it is evidence about trusted programs (a dataset's
  reference solution with its tests), not a verdict on untrusted ones.

Isolation (``isolation=``):

- ``"bwrap"`` (bubblewrap, https://github.com/containers/bubblewrap): no network
  (own network namespace with only a loopback of its own), own PID, IPC and UTS
  namespaces. The file system is an allow-list: ``/usr``, ``/etc``, the top-level
  links or directories into them (``/bin``, ``/lib`` ...) and the Python
  installation, all read-only; nothing else of the host exists inside (no home
  directories, no checkouts, no results, no caches). Paths given in ``hide=``
  (a dataset file, a cache) are masked even when they lie under those. Every
  program gets a fresh ``/tmp`` (a tmpfs limited in bytes and inodes; its working
  directory, ``HOME`` and ``TMPDIR``), mounted by the worker before the program
  starts and detached once its last process is gone, which frees its files and
  memory; nothing one program leaves there is seen by the next. When the harness
  runs as root, programs run as an unprivileged uid of their own
  (``SANDBOX_UID_BASE + worker index``), so that ``RLIMIT_NPROC`` applies (the
  kernel never applies it to root) and they cannot signal or trace the worker, the
  starter or other workers. Without root the sandbox runs in a user namespace and
  programs run with every capability dropped, under the worker's uid: a program
  may then stop or kill the starter, which the worker wakes or replaces before the
  next program (the program itself times out or loses its exit status). The worker
  and the starter are not dumpable, so a
  program cannot read their memory or open their file descriptors through
  ``/proc``. Each program also gets an IPC namespace of its own (System V shared
  memory, semaphores and message queues die with it) and may not use the kernel's
  keyrings (a seccomp filter refuses ``add_key``, ``request_key`` and ``keyctl``:
  keyrings are not namespaced, so a key would outlive the program). After each
  program every other process of the sandbox is killed.
- ``"none"``: no isolation, only the limits below and a fresh temporary directory
  per program (no size or inode limit). A program runs as the harness's user and
  can reach the harness and its files, so nothing it returns can be trusted.
  Refused by :func:`resolve_isolation` unless the caller allows running unsandboxed.

In both modes every program runs in its own session and process group, with
``stdin`` from ``/dev/null``, an environment of ``PATH``, ``HOME`` and ``TMPDIR``
only, and these resource limits (``setrlimit(2)``): CPU
time, address space, processes (threads count), file size, open files, no core
files. A wall-clock limit SIGKILLs the whole group; output beyond a cap kills it
too, and so do return values beyond their cap.
"""

from __future__ import annotations

import atexit
import inspect
import json
import math
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import Any

from evalsuite.errors import UsageError
from evalsuite.execution import sandbox_worker
from evalsuite.execution.sandbox_worker import (  # noqa: F401 -- the codec is re-exported: the harness reads plain data here
    PLAIN_MAX_DEPTH,
    Opaque,
    decode_plain,
    encode_plain,
)
from evalsuite.execution.workers import Ended, KillablePool
from evalsuite.pipeline.lifecycle import parent_death_argv

ISOLATIONS = ("bwrap", "none")
SANDBOX_UID_BASE = 1_999_990_000
"""First uid given to programs when the harness runs as root; worker i's get base + i."""

SYSTEM_DIRS = ("/usr", "/etc")
"""Host directories visible (read-only) inside the bubblewrap sandbox, besides Python's."""
SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
"""Top-level entries kept as they are on the host (merged-/usr links, or directories)."""

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
    which the program is killed. ``tmp_bytes`` and ``tmp_inodes``: size and inode
    count of the program's private ``/tmp`` (bubblewrap only). ``max_return_bytes``:
    encoded return values (:meth:`SandboxPool.call`) after which it is killed.
    """

    timeout_s: float = 5.0
    cpu_s: int | None = None
    memory_bytes: int = 2 << 30
    processes: int = 32
    file_size_bytes: int = 16 << 20
    open_files: int = 64
    max_output_bytes: int = 1 << 20
    tmp_bytes: int = 64 << 20
    tmp_inodes: int = 4096
    max_return_bytes: int = 4 << 20

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise UsageError(f"sandbox timeout must be positive, got {self.timeout_s}")
        if self.tmp_bytes < 4096 or self.tmp_inodes < 2:
            raise UsageError(f"sandbox /tmp needs >= 4096 bytes and >= 2 inodes, got {self.tmp_bytes}, {self.tmp_inodes}")


@dataclass(frozen=True)
class Returned:
    """What one call returned: ``value`` (plain data, or an :class:`Opaque`) when it
    returned; when it raised, ``raised`` is the exception's type name and
    ``message`` its text (both as the program reported them) and ``value`` None."""

    value: Any = None
    raised: str | None = None
    message: str = ""


@dataclass(frozen=True)
class Outcome:
    """How one program ended.

    ``status`` is one of ``passed`` (:meth:`SandboxPool.run`: the program ran to
    its end and exited with status 0), ``returned`` (:meth:`SandboxPool.call`: the
    program loaded and every call came back, in ``returns``), ``failed`` (an
    exception while loading, a non-zero exit, an exit before the end, malformed
    return values), ``timeout`` (wall clock), ``killed`` (a signal: CPU limit,
    file-size limit, segmentation fault ...), ``output-limit`` (output or return
    values over their cap) or ``sandbox-error`` (the worker died or hung, or the
    program's sandbox could not be prepared; the worker is replaced). ``reason``
    says why in one line (``None`` for passed and returned). ``output``: the first
    :data:`KEEP_OUTPUT_BYTES` of stdout+stderr. ``wall_s``: seconds from start to end.
    ``returns``: one :class:`Returned` per input, in order (``returned`` only).
    """

    status: str
    reason: str | None = None
    output: str = ""
    wall_s: float | None = None
    returns: tuple[Returned, ...] | None = None

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass(frozen=True)
class CallJob:
    """Load ``program`` (Python source), then call its ``function`` once per input.

    ``inputs``: ``(args, kwargs)`` pairs of plain data (:func:`encode_plain`).
    """

    program: str
    function: str
    inputs: Sequence[tuple[Sequence[Any], Mapping[str, Any]]] = field(default_factory=tuple)


# --- plain data: the only thing that crosses back from a program ---------------------------
# The codec (Opaque, encode_plain, decode_plain) lives in evalsuite.execution.sandbox_worker, whose
# text is also the worker's program: both sides use the same code.


def plain_key(args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    """A canonical string for one call's inputs (equal inputs, equal strings)."""
    return json.dumps([encode_plain(tuple(args)), encode_plain(dict(kwargs))], separators=(",", ":"))


def decode_returns(report: str, count: int) -> tuple[Returned, ...]:
    """The return values of ``count`` calls from a worker's report (JSON text).

    Each entry is ``["ok", encoded value]`` or ``["raised", type name, message]``.
    Raises ValueError (or TypeError, RecursionError) when the report is anything else.
    """

    def no_constants(name: str) -> None:
        raise ValueError(f"{name} is not plain data")

    entries = json.loads(report, parse_constant=no_constants)
    if type(entries) is not list or len(entries) != count:
        raise ValueError(f"expected {count} return values")
    out = []
    for entry in entries:
        if type(entry) is list and len(entry) == 2 and entry[0] == "ok":
            out.append(Returned(decode_plain(entry[1])))
        elif (type(entry) is list and len(entry) == 3 and entry[0] == "raised"
              and type(entry[1]) is str and type(entry[2]) is str):
            out.append(Returned(None, entry[1][:100], entry[2][:500]))
        else:
            raise ValueError("malformed return entry")
    return tuple(out)


@cache
def _worker_source() -> str:
    """The worker's program: the text of :mod:`evalsuite.execution.sandbox_worker` (the sandbox shows no checkout)."""
    return inspect.getsource(sandbox_worker)


# --- the harness side --------------------------------------------------------------------------


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


def _inside(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _bwrap_argv(exe: str, hide: Sequence[str] = ()) -> list[str]:
    """bubblewrap's command line: an allow-listed, read-only file system (see the module doc)."""
    argv = [exe, "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--new-session", "--as-pid-1", "--die-with-parent", "--clearenv",
            "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin", "--setenv", "HOME", "/tmp"]
    if os.geteuid() == 0:
        # Keep only what the worker needs to prepare each program, which then drops them all.
        argv += ["--cap-drop", "ALL"] + [a for c in ("SYS_ADMIN", "SETUID", "SETGID", "KILL")
                                          for a in ("--cap-add", f"CAP_{c}")]
    else:
        argv += ["--unshare-user", "--cap-add", "CAP_SYS_ADMIN"]
    visible = []
    for d in SYSTEM_DIRS:
        if os.path.isdir(d):
            argv += ["--ro-bind", d, d]
            visible.append(d)
    for entry in SYSTEM_LINKS:
        if os.path.islink(entry):
            argv += ["--symlink", os.readlink(entry), entry]
        elif os.path.isdir(entry):
            argv += ["--ro-bind", entry, entry]
            visible.append(entry)
    argv += ["--dev", "/dev", "--proc", "/proc", "--perms", "1777", "--size", str(1 << 20), "--tmpfs", "/tmp",
             "--chdir", "/tmp"]
    # The Python installation stays visible, under /tmp too (a checkout and its venv may live there).
    for keep in _python_dirs():
        if _inside(keep, visible):
            continue
        parts = keep.strip("/").split("/")
        for i in range(1, len(parts)):  # parents readable by the programs' uid (bwrap makes them 0700)
            argv += ["--perms", "0755", "--dir", "/" + "/".join(parts[:i])]
        argv += ["--ro-bind", keep, keep]
        visible.append(keep)
    for path in sorted({os.path.realpath(p) for p in hide}):
        if not _inside(path, visible):
            continue  # not bound, so not there
        if os.path.isdir(path):
            argv += ["--perms", "0555", "--tmpfs", path]
        elif os.path.exists(path):
            argv += ["--ro-bind", "/dev/null", path]
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


def start_worker_process(isolation: str, index: int, hide: Sequence[str] = ()) -> subprocess.Popen:
    """Starts sandboxed worker ``index``: bwrap (or nothing) around ``python -I -c <worker>``.

    Its stdin takes one JSON job per line and its stdout answers one JSON line per
    job; it exits at end of file on stdin. All worker start-up lives here.
    """
    as_root = os.geteuid() == 0
    isolated = isolation == "bwrap"
    uid = SANDBOX_UID_BASE + index if (as_root and isolated) else None
    # The program counts itself; a non-root user's other processes (the worker and its
    # starter among them) count as well.
    base = 1 if uid is not None else _user_tasks(os.geteuid()) + 16
    under_tmp = [d for d in _python_dirs() if d.startswith("/tmp/")] if isolated else []
    cfg = {"uid": uid, "isolated": isolated, "nproc_base": base, "under_tmp": under_tmp}
    argv = [sys.executable, "-I", "-c", _worker_source(), json.dumps(cfg)]
    if isolated:  # bwrap --die-with-parent: the sandbox ends with this process
        argv = [*_bwrap_argv(shutil.which("bwrap"), hide), "--", *argv]
    else:
        argv = parent_death_argv(argv)
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, start_new_session=True, bufsize=0)


class _Worker:
    """One sandboxed interpreter and the pipes to it (a :class:`~evalsuite.execution.workers.Worker`).

    It takes a job as soon as it is started: a job's hand-over time includes the
    interpreter's start, which :data:`_GRACE_S` covers.
    """

    ready = True

    def __init__(self, isolation: str, index: int, hide: Sequence[str]) -> None:
        self.proc = start_worker_process(isolation, index, hide)
        self.fd = self.proc.stdout.fileno()
        self.buffer = b""

    def waitables(self) -> list[int]:
        return [self.fd]  # end of file when the worker dies

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, job: dict) -> None:
        self.proc.stdin.write((json.dumps(job) + "\n").encode())

    def receive(self) -> list[bytes] | None:
        """Complete reply lines that arrived; ``None`` at end of file (the worker died)."""
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
    ``workers``: default the number of CPU cores; ``hide``: files or directories
    that programs must not read (masked inside the bubblewrap sandbox: a dataset
    with its reference solutions, a cache of expected outputs). Use as a context
    manager or call :meth:`close`; workers also exit when the harness process ends
    (end of file on their stdin). Not thread-safe: one :meth:`run` or :meth:`call`
    at a time. The workers live in a :class:`~evalsuite.execution.workers.KillablePool`,
    which starts one when a job first needs it and replaces one that dies or hangs
    (``restarts`` counts them).
    """

    def __init__(self, isolation: str, workers: int | None = None, limits: Limits = Limits(),
                 hide: Sequence[str | os.PathLike] = ()) -> None:
        if isolation not in ISOLATIONS:
            raise UsageError(f"unknown sandbox {isolation!r} (use {', '.join(ISOLATIONS)})")
        self.isolation = isolation
        self.size = workers or os.cpu_count() or 1
        if self.size < 1:
            raise UsageError(f"sandbox workers must be >= 1, got {self.size}")
        self.limits = limits
        self.hide = tuple(sorted({os.fspath(p) for p in hide}))
        self._pool = KillablePool(lambda index: _Worker(self.isolation, index, self.hide), self.size)

    @property
    def restarts(self) -> int:
        """Workers replaced so far (they died, hung, or could not be reached)."""
        return self._pool.restarts

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> SandboxPool:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def run(self, programs: Sequence[str], limits: Limits | None = None) -> list[Outcome]:
        """Runs each program (Python source) once; one :class:`Outcome` each, in order.

        ``passed`` means the program's process ran to the end and exited 0: trust it
        for trusted programs only (see the module doc). Never raises for a program's
        behaviour: a worker that dies or hangs fails its program with status
        ``sandbox-error`` and is replaced.
        """
        return [outcome for outcome, _ in self._dispatch([{"program": p} for p in programs], limits)]

    def call(self, jobs: Sequence[CallJob], limits: Limits | None = None) -> list[Outcome]:
        """Loads each job's program and calls its function on every input, in the sandbox.

        One :class:`Outcome` per job, in order: status ``returned`` with ``returns``
        (one :class:`Returned` per input, decoded strictly in this process), or why
        not (an exception while loading the program, a missing function, limits,
        return values that are not a well-formed report). Raises ValueError for an
        input that is not plain data; never raises for a program's behaviour.
        """
        wire = []
        for job in jobs:
            inputs = []
            for args, kwargs in job.inputs:
                encoded = [encode_plain(tuple(args)), encode_plain(dict(kwargs))]
                if _has_opaque(encoded):
                    raise ValueError(f"an input of {job.function}() is not plain data")
                inputs.append(encoded)
            wire.append({"program": job.program, "calls": {"function": job.function, "inputs": inputs}})
        replies = self._dispatch(wire, limits)
        return [_decode_outcome(o, report, len(job.inputs)) for (o, report), job in zip(replies, jobs)]

    def _dispatch(self, jobs: list[dict], limits: Limits | None) -> list[tuple[Outcome, str | None]]:
        """Runs the jobs in the workers; per job its Outcome and the raw report of a call job.

        The worker enforces each program's limits itself; the pool's limit, ``_GRACE_S``
        longer, catches a worker that hangs.
        """
        lim = limits or self.limits
        wire = {**asdict(lim), "cpu_s": lim.cpu_s or max(1, math.ceil(lim.timeout_s))}
        sent = [{**job, "id": k, "limits": wire, "keep_output": KEEP_OUTPUT_BYTES} for k, job in enumerate(jobs)]
        return [_reply_outcome(ended) for ended in self._pool.map(sent, lim.timeout_s + _GRACE_S)]


def _reply_outcome(ended: Ended) -> tuple[Outcome, str | None]:
    """A job's Outcome (and a call job's raw report) from how it ended in the pool."""
    if ended.status == "timeout":
        return Outcome("sandbox-error", "the sandbox worker stopped answering"), None
    if ended.status == "died":
        return Outcome("sandbox-error", f"the sandbox worker died ({ended.value or 'killed by the program?'})"), None
    reply = json.loads(ended.value)
    return Outcome(reply["status"], reply["reason"], reply["output"], reply["wall_s"]), reply.get("report")


def _has_opaque(node: Any) -> bool:
    if isinstance(node, list) and node and node[0] == "opaque" and len(node) == 2:
        return True
    return isinstance(node, list) and any(_has_opaque(n) for n in node if isinstance(n, list))


def _decode_outcome(outcome: Outcome, report: str | None, count: int) -> Outcome:
    """A call job's outcome with its raw report decoded strictly into ``returns``."""
    if outcome.status != "returned" or report is None:
        return outcome
    try:
        returns = decode_returns(report, count)
    except (ValueError, TypeError, RecursionError, OverflowError) as e:
        return Outcome("failed", f"malformed return values ({type(e).__name__}: {str(e)[:200]})",
                       outcome.output, outcome.wall_s)
    return Outcome("returned", None, outcome.output, outcome.wall_s, returns)


_shared: dict[tuple, SandboxPool] = {}


def shared_pool(isolation: str, workers: int | None = None, hide: Sequence[str | os.PathLike] = ()) -> SandboxPool:
    """One pool per (isolation, workers, hidden paths) for the whole process, closed at exit."""
    key = (isolation, workers, tuple(sorted({os.fspath(p) for p in hide})))
    if key not in _shared:
        _shared[key] = SandboxPool(isolation, workers, hide=key[2])
    return _shared[key]


@atexit.register
def _close_shared() -> None:
    for pool in _shared.values():
        pool.close()
