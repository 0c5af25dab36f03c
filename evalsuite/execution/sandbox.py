"""Running untrusted programs: a pool of warm sandboxed workers that fork per program.

Each worker is one Python interpreter started once inside a sandbox. It forks a
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
import select
import shutil
import signal
import subprocess
import sys
import time
import weakref
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import Any

from evalsuite.errors import UsageError
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

PLAIN_MAX_DEPTH = 100
"""Deepest nesting of containers that :func:`encode_plain` and :func:`decode_plain` accept."""

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
# These three are also sent, as source, into the worker (see _worker_source).


class Opaque:
    """A value that was not plain data, known by its type's name only.

    Equal to nothing but itself, truthy, with no other behaviour; so a test that
    compares it with an expected value fails, as it should.
    """

    __slots__ = ("type_name",)

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name

    def __repr__(self) -> str:
        return f"<not plain data: {self.type_name}>"


def encode_plain(value, _depth=0):
    """``value`` as JSON-ready plain data with exact type tags.

    ``None -> ["none"]``, ``["bool", b]``, ``["int", hex]``, ``["float", repr]``,
    ``["complex", repr(re), repr(im)]``, ``["str", s]``, ``["bytes"|"bytearray", hex]``,
    ``["list"|"tuple"|"set"|"frozenset", [items]]`` (set items in a canonical
    order), ``["dict", [[key, value], ...]]``. Instances of subclasses of these
    (``IntEnum``, ``namedtuple``, ``Counter``, ``numpy.float64`` ...) are read
    through the base type's own methods, so they are encoded as the base value
    whatever they override; numpy scalars through ``.item()``. Anything else, and
    containers nested deeper than :data:`PLAIN_MAX_DEPTH`, becomes
    ``["opaque", type name]``. May raise for objects that lie about their class.
    """
    import json

    if _depth > 100:  # PLAIN_MAX_DEPTH (this function also runs, as source, in the worker)
        return ["opaque", "containers nested deeper than 100 levels"]
    kind = type(value)
    if value is None:
        return ["none"]
    if kind is bool:
        return ["bool", value]
    if isinstance(value, int):
        return ["int", int.__format__(value, "x")]  # hex: no limit on digits
    if isinstance(value, float):
        return ["float", float.__repr__(value)]
    if isinstance(value, complex):
        return ["complex", float.__repr__(complex.real.__get__(value)), float.__repr__(complex.imag.__get__(value))]
    if isinstance(value, str):
        return ["str", str.__str__(value)]
    if isinstance(value, bytes):
        return ["bytes", bytes.hex(value)]
    if isinstance(value, bytearray):
        return ["bytearray", bytearray.hex(value)]
    if isinstance(value, list):
        return ["list", [encode_plain(v, _depth + 1) for v in list.copy(value)]]
    if isinstance(value, tuple):
        return ["tuple", [encode_plain(v, _depth + 1) for v in tuple.__getitem__(value, slice(None))]]
    if isinstance(value, dict):
        return ["dict", [[encode_plain(k, _depth + 1), encode_plain(v, _depth + 1)] for k, v in dict.items(value)]]
    if isinstance(value, (set, frozenset)):
        items = [encode_plain(v, _depth + 1) for v in set(value)]
        return ["frozenset" if isinstance(value, frozenset) else "set", sorted(items, key=json.dumps)]
    if getattr(kind, "__module__", None) == "numpy" and hasattr(value, "item"):
        item = value.item()
        if type(item) in (bool, int, float, complex):
            return encode_plain(item, _depth)
    return ["opaque", f"{getattr(kind, '__module__', '?')}.{getattr(kind, '__qualname__', '?')}"[:200]]


def decode_plain(node, _depth=0):
    """The value :func:`encode_plain` encoded; ``["opaque", name]`` gives an :class:`Opaque`.

    Strict: raises ValueError for anything that is not such an encoding (a wrong
    tag, a payload of the wrong JSON type, nesting deeper than
    :data:`PLAIN_MAX_DEPTH`), and TypeError for an unhashable set item or dict key.
    Only builtin types come out, so comparing the result runs no foreign code.
    """
    if _depth > 100:  # PLAIN_MAX_DEPTH
        raise ValueError("plain data nested deeper than 100 levels")
    if type(node) is not list or not node or type(node[0]) is not str:
        raise ValueError("not a tagged plain value")
    tag, size = node[0], len(node)
    if tag == "none" and size == 1:
        return None
    if tag == "complex" and size == 3 and type(node[1]) is str and type(node[2]) is str:
        return complex(float(node[1][:40]), float(node[2][:40]))
    if size != 2:
        raise ValueError(f"malformed plain value with tag {tag[:20]!r}")
    payload = node[1]
    kind = type(payload)
    if tag == "bool" and kind is bool:
        return payload
    if tag == "int" and kind is str:
        return int(payload, 16)
    if tag == "float" and kind is str and len(payload) <= 40:
        return float(payload)
    if tag == "str" and kind is str:
        return payload
    if tag == "bytes" and kind is str:
        return bytes.fromhex(payload)
    if tag == "bytearray" and kind is str:
        return bytearray.fromhex(payload)
    if tag in ("list", "tuple", "set", "frozenset") and kind is list:
        items = [decode_plain(v, _depth + 1) for v in payload]
        return {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}[tag](items)
    if tag == "dict" and kind is list:
        out = {}
        for pair in payload:
            if type(pair) is not list or len(pair) != 2:
                raise ValueError("malformed dict entry")
            out[decode_plain(pair[0], _depth + 1)] = decode_plain(pair[1], _depth + 1)
        return out
    if tag == "opaque" and kind is str:
        return Opaque(payload[:200])
    raise ValueError(f"not plain data: tag {tag[:20]!r}")


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


# --- the worker, inside the sandbox ----------------------------------------------------------


def _worker_main() -> None:  # pragma: no cover - runs inside the sandbox, in its own interpreter
    """The worker: reads one JSON job per line on stdin, answers one JSON line on stdout.

    Sent as source text to ``python -I -c`` (with :func:`encode_plain` and
    :func:`decode_plain`), so it imports only the standard library and defines its
    helpers inside. ``sys.argv[1]``: JSON with ``uid`` (the uid programs run as, or
    null), ``isolated`` (bubblewrap: a fresh ``/tmp`` per program, capabilities
    dropped, sweep of leftover processes), ``nproc_base``
    (processes the programs' uid already has) and ``under_tmp`` (directories under
    ``/tmp`` to bind back into each program's fresh ``/tmp``).
    """
    import builtins
    import ctypes
    import gc
    import json
    import os
    import resource
    import select
    import shutil
    import signal
    import socket
    import sys
    import tempfile
    import time

    cfg = json.loads(sys.argv[1])
    isolated = cfg["isolated"]
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig, pr_set_dumpable, pr_set_child_subreaper, pr_set_no_new_privs = 1, 4, 36, 38
    clone_newns, clone_newipc = 0x00020000, 0x08000000
    ms_rdonly, ms_nosuid, ms_nodev, ms_remount, ms_bind, ms_rec, ms_private = 1, 2, 4, 32, 4096, 16384, 1 << 18
    mnt_detach = 2
    if isolated:
        libc.prctl(pr_set_dumpable, 0, 0, 0, 0)  # no /proc/1/mem, /proc/1/fd for programs
    libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0)  # the orphans of programs become our children
    me = os.getpid()
    # In the sandbox we are pid 1: the kernel drops signals from inside the namespace that
    # we do not handle, so a program cannot kill us; SIGINT is handled by Python, so ignore it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    catchable = [s for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD)]
    python_handlers = {s: signal.getsignal(s) for s in catchable}

    def send(obj):
        data = (json.dumps(obj) + "\n").encode()
        while data:
            data = data[os.write(1, data):]

    def check(ok, what):
        if ok != 0:
            raise OSError(ctypes.get_errno(), f"{what}: {os.strerror(ctypes.get_errno())}")

    def deny_keyrings():
        # The kernel's keyrings are not namespaced: a key one program adds to its uid's keyring
        # would be there for the next. Refuse add_key, request_key and keyctl (as Docker's
        # default seccomp profile does) with a seccomp filter: EPERM.
        import platform

        arch, numbers = {"x86_64": (0xC000003E, (248, 249, 250)),
                         "aarch64": (0xC00000B7, (217, 218, 219))}.get(platform.machine(), (None, ()))
        if arch is None:
            return

        class Filter(ctypes.Structure):
            _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                        ("k", ctypes.c_uint32)]

        class Program(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Filter))]

        ld, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06
        allow, eperm = 0x7FFF0000, 0x00050000 | 1
        n = len(numbers)
        code = [(ld, 0, 0, 4), (jeq, 1, 0, arch), (ret, 0, 0, allow), (ld, 0, 0, 0),
                (jge, n + 1, 0, 0x40000000)]  # x32 system calls: refused too
        code += [(jeq, n - i, 0, nr) for i, nr in enumerate(numbers)]
        code += [(ret, 0, 0, allow), (ret, 0, 0, eperm)]
        filters = (Filter * len(code))(*[Filter(*c) for c in code])
        check(libc.prctl(22, 2, ctypes.byref(Program(len(code), filters)), 0, 0), "seccomp")

    def drop_capabilities():
        class Header(ctypes.Structure):
            _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

        class Data(ctypes.Structure):
            _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                        ("inheritable", ctypes.c_uint32)]

        check(libc.capset(ctypes.byref(Header(0x20080522, 0)), (Data * 2)()), "capset")

    if isolated:
        # A mount namespace of our own, private, owned by our user namespace: in a user
        # namespace bwrap's own one does not let us mount over /tmp.
        check(libc.unshare(clone_newns), "unshare the mount namespace")
        check(libc.mount(None, b"/", None, ms_rec | ms_private, None), "make / private")
    # Directories under /tmp (a venv) to bind back into every fresh /tmp, reached by fd.
    under_tmp = [(d, os.open(d, os.O_PATH)) for d in cfg["under_tmp"]] if isolated else []

    def fresh_tmp(lim):
        # A new tmpfs over /tmp for the next program (nothing of an earlier one is visible),
        # limited in bytes and inodes; detached again once the program's processes are gone,
        # which frees its files, inodes and memory. (Done here rather than in a mount namespace
        # per program: tearing a mount namespace down waits for an RCU grace period, tens of
        # milliseconds on a busy host.)
        opts = f"size={lim['tmp_bytes']},nr_inodes={lim['tmp_inodes']},mode=1777"
        check(libc.mount(b"tmpfs", b"/tmp", b"tmpfs", ms_nosuid | ms_nodev, opts.encode()), "mount /tmp")
        for path, fd in under_tmp:
            os.makedirs(path, exist_ok=True)
            check(libc.mount(f"/proc/self/fd/{fd}".encode(), path.encode(), None, ms_bind | ms_rec, None), "bind")
            libc.mount(None, path.encode(), None, ms_bind | ms_remount | ms_rdonly, None)

    def drop_tmp():
        check(libc.umount2(b"/tmp", mnt_detach), "detach /tmp")

    def program_process(job_fd, out_w, st_w, pid_w):
        # Runs in a fork of the starter: nothing of the worker's jobs or results is in memory.
        try:
            os.write(pid_w, os.getpid().to_bytes(4, "little"))
            os.close(pid_w)
            for s, handler in python_handlers.items():
                try:
                    signal.signal(s, handler if handler is not None else signal.SIG_DFL)
                except (OSError, ValueError):
                    pass
            signal.signal(signal.SIGINT, signal.default_int_handler)
            os.setsid()
            with os.fdopen(job_fd, "rb") as f:
                job = json.loads(f.read())
            lim = job["limits"]
            tmp = job["tmp"]
            os.chdir(tmp)
            if isolated:  # System V IPC objects of its own, gone with it
                check(libc.unshare(clone_newipc), "unshare the IPC namespace")
            if cfg["uid"] is not None:
                os.setgroups([])
                os.setgid(cfg["uid"])
                os.setuid(cfg["uid"])  # from root: every capability goes too
            elif isolated:
                drop_capabilities()
            check(libc.prctl(pr_set_no_new_privs, 1, 0, 0, 0), "no_new_privs")
            if isolated:
                deny_keyrings()
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(out_w, 1)
            os.dup2(out_w, 2)
            os.dup2(st_w, 3)
            os.closerange(4, 1 << 16)
            os.environ.clear()
            os.environ.update(PATH="/usr/local/bin:/usr/bin:/bin", HOME=tmp, TMPDIR=tmp)
            tempfile.tempdir = tmp
            cpu = lim["cpu_s"]
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
            resource.setrlimit(resource.RLIMIT_AS, (lim["memory_bytes"],) * 2)
            nproc = cfg["nproc_base"] + lim["processes"]
            resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
            resource.setrlimit(resource.RLIMIT_FSIZE, (lim["file_size_bytes"],) * 2)
            resource.setrlimit(resource.RLIMIT_NOFILE, (lim["open_files"],) * 2)
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        except BaseException as e:  # noqa: BLE001 - reported as a sandbox error, never as the program's
            try:
                os.write(st_w, f"SETUP {type(e).__name__}: {e}"[:500].encode("utf-8", "replace"))
            finally:
                os._exit(71)
        sys.argv = ["program.py"]
        mine = os.getpid()  # processes the program forks must not report in its name
        program, calls, token = job["program"], job["calls"], job["token"]
        del job
        namespace = {"__name__": "__main__", "__builtins__": builtins}
        try:
            exec(compile(program, "program.py", "exec"), namespace)  # noqa: S102 - the point
            if calls is not None:
                function = namespace.get(calls["function"])
                if not callable(function):
                    raise NameError(f"the program defines no function {calls['function']!r}")
                results = []
                for item in calls["inputs"]:
                    args, kwargs = decode_plain(item[0]), decode_plain(item[1])
                    try:
                        value = function(*args, **kwargs)
                    except BaseException as e:  # noqa: BLE001 - the call's failure is its result
                        try:
                            name, text = type(e).__name__, str(e)
                        except BaseException:  # noqa: BLE001
                            name, text = "BaseException", "(unprintable)"
                        results.append(["raised", str(name)[:100], str(text)[:500]])
                        continue
                    try:
                        results.append(["ok", encode_plain(value)])
                    except BaseException:  # noqa: BLE001 - an object that lies about its class
                        results.append(["ok", ["opaque", "unencodable"]])
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            except BaseException:  # noqa: BLE001, S110 - the program may have closed them
                pass
            if os.getpid() == mine:
                data = (json.dumps(results) if calls is not None else token).encode()
                while data:
                    data = data[os.write(3, data):]
            os._exit(0)
        except BaseException as e:  # noqa: BLE001 - the program's own failure, reported to the worker
            line = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            try:
                if os.getpid() == mine:
                    os.write(3, ("FAIL " + line[:500]).encode("utf-8", "replace"))
            finally:
                os._exit(1)

    def starter_main(sock):
        # Forks one program per request (which tells the worker its pid itself) and reports
        # its exit status. It never reads a job, so its memory (which each program starts
        # from) holds none.
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)  # dies with the worker
        for s in catchable:
            try:
                signal.signal(s, signal.SIG_IGN)
            except (OSError, ValueError):
                pass
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # not the harness's pipes: only the worker speaks to the harness
            os.dup2(null, fd)
        os.close(null)
        # Warm up what each program would otherwise initialise on its own (the first compile()
        # in a process builds the AST types, several milliseconds), then freeze the heap so
        # programs' garbage collections skip everything inherited instead of touching (and so
        # copying) every page of it.
        exec(compile("def f(*a, **k):\n    return [a, k]\n", "warm-up", "exec"), {})  # noqa: S102 - our own code
        json.loads(json.dumps(encode_plain(decode_plain(encode_plain([(1, 2.5), {"k": {"s"}}, None])))))
        gc.collect()
        gc.freeze()
        while True:
            try:
                msg, fds, _, _ = socket.recv_fds(sock, 16, 4)
            except OSError:
                os._exit(0)
            if not msg or len(fds) != 4:
                os._exit(0)
            try:
                pid = os.fork()
            except OSError:
                pid = None
            if pid == 0:
                sock.close()
                program_process(*fds)
            for fd in fds:
                os.close(fd)
            if pid is None:
                sock.send(b"E")
                continue
            _, wait_status = os.waitpid(pid, 0)
            sock.send(b"X" + wait_status.to_bytes(4, "little"))

    starter = {"pid": None, "sock": None}

    def start_starter():
        if starter["pid"] is not None:
            try:
                os.kill(starter["pid"], signal.SIGKILL)
                os.waitpid(starter["pid"], 0)
            except OSError:
                pass
            starter["sock"].close()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            ours.close()
            os.closerange(3, theirs.fileno())
            os.closerange(theirs.fileno() + 1, 1 << 16)
            starter_main(theirs)
            os._exit(0)
        theirs.close()
        ours.settimeout(10)
        starter.update(pid=pid, sock=ours)

    def start_program(fds):
        # The program's pid comes from the program itself (first thing after the fork, before
        # any of its code runs), so it is known even if the starter dies right after.
        pid_r, pid_w = os.pipe()
        try:
            for _ in range(2):
                try:
                    os.kill(starter["pid"], signal.SIGCONT)  # a program of the same uid may have stopped it
                    socket.send_fds(starter["sock"], [b"F"], [*fds, pid_w])
                    break
                except OSError:
                    start_starter()  # it died (killed by a program running as its uid)
            else:
                return None
            os.close(pid_w)
            pid_w = None
            data = os.read(pid_r, 4) if select.select([pid_r], [], [], 10)[0] else b""
            if len(data) == 4:
                return int.from_bytes(data, "little")
            start_starter()  # it could not fork, or hung: start afresh
            return None
        finally:
            os.close(pid_r)
            if pid_w is not None:
                os.close(pid_w)

    def reported_exit():
        # The starter reaps the program and reports its wait status; None if the starter is gone.
        try:
            reply = starter["sock"].recv(8)
        except OSError:
            return None
        return int.from_bytes(reply[1:], "little") if len(reply) == 5 and reply[:1] == b"X" else None

    def sweep():
        # Kill every other process of the namespace (we are its pid 1), until none is left alive.
        for _ in range(200):
            alive = 0
            for name in os.listdir("/proc"):
                if not name.isdigit() or int(name) in (me, starter["pid"]):
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
        # As subreaper (and pid 1) we inherit the program's orphans; collect their exit statuses.
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return

    def run(job):
        lim = job["limits"]
        calls = job.get("calls")
        token = os.urandom(16).hex() if calls is None else None
        if isolated:
            try:
                fresh_tmp(lim)
            except OSError as e:
                return {"id": job["id"], "status": "sandbox-error", "reason": f"could not prepare /tmp: {e}",
                        "output": "", "wall_s": None, "report": None}
        tmp = "/tmp" if isolated else tempfile.mkdtemp(prefix="sample-")
        job_fd = os.memfd_create("job")
        payload = json.dumps({"program": job["program"], "calls": calls, "limits": lim,
                              "token": token, "tmp": tmp}).encode()
        while payload:
            payload = payload[os.write(job_fd, payload):]
        os.lseek(job_fd, 0, os.SEEK_SET)
        out_r, out_w = os.pipe()
        st_r, st_w = os.pipe()
        start = time.monotonic()
        pid = start_program([job_fd, out_w, st_w])
        for fd in (job_fd, out_w, st_w):
            os.close(fd)
        if pid is None:
            for fd in (out_r, st_r):
                os.close(fd)
            if isolated:
                drop_tmp()
            else:
                shutil.rmtree(tmp, ignore_errors=True)
            return {"id": job["id"], "status": "sandbox-error", "reason": "could not start the program",
                    "output": "", "wall_s": None, "report": None}
        # The program's end is the starter's report of its exit. If the starter dies (a program
        # running as its uid killed it), the program is reparented to us: watch it through a pidfd.
        sock_fd, pidfd, starter_lost, wait_status = starter["sock"].fileno(), None, False, None
        poller = select.poll()
        for fd in (out_r, st_r, sock_fd, 0):
            poller.register(fd, select.POLLIN)
        kept, total, status, verdict = bytearray(), 0, bytearray(), None
        status_cap = lim["max_return_bytes"] if calls is not None else 4096
        deadline = start + lim["timeout_s"]
        open_fds = {out_r, st_r}

        def take(fd, data):
            nonlocal total, verdict
            if fd == out_r:
                total += len(data)
                kept.extend(data[: max(0, job["keep_output"] - len(kept))])
                if total > lim["max_output_bytes"] and verdict is None:
                    verdict = ("output-limit", f"output limit exceeded (> {lim['max_output_bytes']} bytes)")
            else:
                status.extend(data)
                if len(status) > status_cap and verdict is None:
                    verdict = ("output-limit", f"return values over the limit (> {status_cap} bytes)")
                    del status[status_cap:]

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
                        try:
                            os.killpg(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                        if isolated:
                            sweep()
                        os._exit(0)
                elif fd == sock_fd:
                    wait_status = reported_exit()
                    poller.unregister(sock_fd)
                    if wait_status is not None:
                        exited = True
                    else:
                        starter_lost = True
                        try:
                            pidfd = os.pidfd_open(pid)
                            poller.register(pidfd, select.POLLIN)
                        except ProcessLookupError:
                            exited = True
                elif fd == pidfd:
                    exited = True
                elif fd in open_fds:
                    data = os.read(fd, 1 << 16)
                    if not data:
                        poller.unregister(fd)
                        open_fds.discard(fd)
                    else:
                        take(fd, data)
            if exited and verdict is None:
                break
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if isolated:
            sweep()
        if wait_status is None and not starter_lost:
            try:
                os.kill(starter["pid"], signal.SIGCONT)  # a program of its uid may have stopped it
            except OSError:
                pass
            wait_status = reported_exit()
            starter_lost = wait_status is None
        if wait_status is None:
            try:
                wait_status = os.waitpid(pid, 0)[1]
            except ChildProcessError:
                pass
        if starter_lost:
            start_starter()
        wall = time.monotonic() - start
        reap_orphans()
        for fd in (sock_fd, pidfd, 0):
            try:
                poller.unregister(fd)
            except (KeyError, TypeError):
                pass
        # Every writer is dead now; read what is left without waiting for escaped processes.
        drain_until = time.monotonic() + 0.2
        while open_fds and time.monotonic() < drain_until:
            for fd, _ in poller.poll(50):
                if fd in open_fds:
                    data = os.read(fd, 1 << 16)
                    if not data:
                        poller.unregister(fd)
                        open_fds.discard(fd)
                    else:
                        take(fd, data)
        for fd in (out_r, st_r, pidfd):
            if fd is not None:
                os.close(fd)
        if isolated:
            drop_tmp()  # every process that could hold it is gone (swept)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        report = None
        if verdict is None and wait_status is None:
            verdict = ("sandbox-error", "lost the program's exit status")
        if verdict is None:
            code = os.WEXITSTATUS(wait_status) if os.WIFEXITED(wait_status) else None
            if os.WIFSIGNALED(wait_status):
                sig = os.WTERMSIG(wait_status)
                names = {signal.SIGXCPU: "CPU time limit exceeded", signal.SIGXFSZ: "file size limit exceeded"}
                verdict = ("killed", names.get(sig, f"killed by signal {signal.Signals(sig).name}"))
            elif code == 71 and status.startswith(b"SETUP "):
                verdict = ("sandbox-error", "could not prepare the program's sandbox: "
                           + status[6:].decode("utf-8", "replace"))
            elif code == 0 and calls is None and bytes(status) == token.encode():
                verdict = ("passed", None)
            elif code == 0 and calls is not None and status[:1] == b"[":
                verdict, report = ("returned", None), status.decode("utf-8", "replace")
            elif status.startswith(b"FAIL "):
                verdict = ("failed", status[5:].decode("utf-8", "replace"))
            else:
                verdict = ("failed", f"exited with status {code} before the end of the program")
        return {"id": job["id"], "status": verdict[0], "reason": verdict[1],
                "output": kept.decode("utf-8", "replace"), "wall_s": wall, "report": report}

    start_starter()
    buffer = b""
    while True:
        chunk = os.read(0, 1 << 16)
        if not chunk:
            return
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            send(run(json.loads(line)))


def _worker_source() -> str:
    """The worker's program text: the plain-data codec, then :func:`_worker_main`."""
    parts = [inspect.getsource(f) for f in (Opaque, encode_plain, decode_plain, _worker_main)]
    return "\n\n".join(parts) + "\n_worker_main()\n"


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
    """One sandboxed interpreter and the pipes to it."""

    def __init__(self, isolation: str, index: int, hide: Sequence[str]) -> None:
        self.proc = start_worker_process(isolation, index, hide)
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
    ``workers``: default the number of CPU cores; ``hide``: files or directories
    that programs must not read (masked inside the bubblewrap sandbox: a dataset
    with its reference solutions, a cache of expected outputs). Use as a context
    manager or call :meth:`close`; workers also exit when the harness process ends
    (end of file on their stdin). Not thread-safe: one :meth:`run` or :meth:`call`
    at a time.
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
        worker = self._workers[index]
        if worker is not None and worker.proc.poll() is not None:
            # It died while idle: e.g. its parent-death signal fired because the thread
            # that started it ended (see evalsuite.pipeline.lifecycle). No job was lost; start afresh.
            self._replace(index)
        if self._workers[index] is None:
            self._workers[index] = _Worker(self.isolation, index, self.hide)
        return self._workers[index]

    def _replace(self, index: int) -> None:
        self._workers[index].kill()
        self._workers[index] = None
        self.restarts += 1

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
        """Sends the jobs to the workers; per job its Outcome and the raw report of a call job."""
        lim = limits or self.limits
        wire = {**asdict(lim), "cpu_s": lim.cpu_s or max(1, math.ceil(lim.timeout_s))}
        results: list[tuple[Outcome, str | None] | None] = [None] * len(jobs)
        pending = deque(range(len(jobs)))
        idle = deque(range(self.size))
        busy: dict[int, tuple[int, float]] = {}  # worker index -> (job index, deadline)
        while pending or busy:
            while pending and idle:
                w, p = idle.popleft(), pending.popleft()
                try:
                    self._worker(w).send({**jobs[p], "id": p, "limits": wire, "keep_output": KEEP_OUTPUT_BYTES})
                    busy[w] = (p, time.monotonic() + lim.timeout_s + _GRACE_S)
                except OSError as e:
                    results[p] = (Outcome("sandbox-error", f"could not reach the sandbox worker: {e}"), None)
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
                    results[p] = (Outcome("sandbox-error", "the sandbox worker died (killed by the program?)"), None)
                    self._replace(w)
                elif lines:
                    reply = json.loads(lines[-1])
                    results[p] = (Outcome(reply["status"], reply["reason"], reply["output"], reply["wall_s"]),
                                  reply.get("report"))
                else:
                    continue
                del busy[w]
                idle.append(w)
            now = time.monotonic()
            for w, (p, deadline) in list(busy.items()):
                if now > deadline:
                    results[p] = (Outcome("sandbox-error", "the sandbox worker stopped answering"), None)
                    self._replace(w)
                    del busy[w]
                    idle.append(w)
        return results  # type: ignore[return-value]


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
