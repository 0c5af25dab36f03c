"""The program each sandbox worker runs, in an interpreter of its own inside the sandbox.

The bubblewrap sandbox shows no checkout, so this module imports nothing but the
standard library: :func:`evalsuite.execution.sandbox.start_worker_process` sends its text
to ``python -I -c``, with a JSON configuration as ``sys.argv[1]``: ``uid`` (the
uid programs run as, or null), ``isolated`` (bubblewrap: a fresh ``/tmp`` per
program, capabilities dropped, leftover processes swept), ``nproc_base``
(processes the programs' uid already has) and ``under_tmp`` (directories under
``/tmp`` to bind back into each program's fresh ``/tmp``). The harness imports
the plain-data codec (:class:`Opaque`, :func:`encode_plain`, :func:`decode_plain`)
from here, so both sides read and write plain data with the same code.

Three processes (the security properties are in :mod:`evalsuite.execution.sandbox`'s doc):

- the worker (:class:`Worker`, pid 1 of the sandbox) reads one JSON job per line
  on stdin and answers one JSON line on stdout; it prepares each program's
  ``/tmp``, watches the program's pipes and clock, and cleans up after it;
- the starter (:func:`serve_as_starter`), forked before the worker reads any job,
  forks one process per program and reports its exit status;
- the program's process (:func:`program_process`) confines itself (session,
  IPC namespace, uid or capabilities, no new privileges, keyrings, descriptors,
  environment, resource limits) and then runs the program.
"""

from __future__ import annotations

import builtins
import ctypes
import gc
import json
import os
import platform
import resource
import select
import shutil
import signal
import socket
import sys
import tempfile
import time

PLAIN_MAX_DEPTH = 100
"""Deepest nesting of containers that :func:`encode_plain` and :func:`decode_plain` accept."""

# <linux/prctl.h>, <linux/sched.h>, <sys/mount.h>
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_SECCOMP, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 4, 22, 36, 38
SECCOMP_MODE_FILTER = 2
CLONE_NEWNS, CLONE_NEWIPC = 0x00020000, 0x08000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18
MNT_DETACH = 2

SETUP_FAILED = 71
"""Exit status of a program's process whose sandbox could not be prepared."""
PROGRAM_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
"""A program's whole environment, besides ``HOME`` and ``TMPDIR`` (its ``/tmp``)."""
DRAIN_S = 0.2  # after a program's end: how long to read what is left in its pipes


# --- plain data: the only thing that crosses back from a program ---------------------------


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
    if _depth > PLAIN_MAX_DEPTH:
        return ["opaque", f"containers nested deeper than {PLAIN_MAX_DEPTH} levels"]
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
    if _depth > PLAIN_MAX_DEPTH:
        raise ValueError(f"plain data nested deeper than {PLAIN_MAX_DEPTH} levels")
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



# --- small pieces ------------------------------------------------------------------------------


def write_all(fd: int, data: bytes) -> None:
    """Writes all of ``data`` to ``fd`` (a pipe may take it in parts)."""
    while data:
        data = data[os.write(fd, data):]


def check(result: int, what: str) -> None:
    """Raises OSError with errno's text when a libc call (``use_errno``) returned non-zero."""
    if result != 0:
        raise OSError(ctypes.get_errno(), f"{what}: {os.strerror(ctypes.get_errno())}")


def deny_keyrings(libc: ctypes.CDLL) -> None:
    """Refuses ``add_key``, ``request_key`` and ``keyctl`` (EPERM) with a seccomp filter.

    The kernel's keyrings are not namespaced: a key one program adds to its uid's
    keyring would be there for the next (Docker's default seccomp profile refuses
    them too). x32 system calls are refused as well. Needs no_new_privs first.
    """
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
    check(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(Program(len(code), filters)), 0, 0),
          "seccomp")


def drop_capabilities(libc: ctypes.CDLL) -> None:
    """Empties the effective, permitted and inheritable capability sets (``capset(2)``, v3)."""

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    check(libc.capset(ctypes.byref(Header(0x20080522, 0)), (Data * 2)()), "capset")


def reply(job_id: int, status: str, reason: str | None, output: str = "", wall_s: float | None = None,
          report: str | None = None) -> dict:
    """The JSON-ready answer to one job (the harness turns it into an ``Outcome``)."""
    return {"id": job_id, "status": status, "reason": reason, "output": output, "wall_s": wall_s,
            "report": report}


def exit_verdict(wait_status: int, said: bytes, calls: dict | None,
                 token: str | None) -> tuple[str, str | None, str | None]:
    """``(status, reason, report)`` for a program that ended within its limits.

    ``wait_status``: from ``waitpid``; ``said``: what it wrote on its status pipe
    (the token for a run job, the JSON list of return values for a call job, or
    ``FAIL``/``SETUP`` and a line).
    """
    code = os.WEXITSTATUS(wait_status) if os.WIFEXITED(wait_status) else None
    if os.WIFSIGNALED(wait_status):
        sig = os.WTERMSIG(wait_status)
        names = {signal.SIGXCPU: "CPU time limit exceeded", signal.SIGXFSZ: "file size limit exceeded"}
        return "killed", names.get(sig, f"killed by signal {signal.Signals(sig).name}"), None
    if code == SETUP_FAILED and said.startswith(b"SETUP "):
        return "sandbox-error", "could not prepare the program's sandbox: " + said[6:].decode("utf-8", "replace"), None
    if code == 0 and calls is None and said == token.encode():
        return "passed", None, None
    if code == 0 and calls is not None and said[:1] == b"[":
        return "returned", None, said.decode("utf-8", "replace")
    if said.startswith(b"FAIL "):
        return "failed", said[5:].decode("utf-8", "replace"), None
    return "failed", f"exited with status {code} before the end of the program", None


# --- the program's process ---------------------------------------------------------------------


def program_process(worker: Worker, job_fd: int, out_w: int, st_w: int, pid_w: int) -> None:
    """Confines this process (a fork of the starter) and runs the job's program in it; never returns.

    Nothing of the worker's jobs or results is in its memory. It reports its pid on
    ``pid_w``, reads its job from ``job_fd`` (a memfd), writes stdout and stderr to
    ``out_w`` and its report to ``st_w`` (fd 3 once confined). A failure before the
    program starts is reported as ``SETUP ...`` with exit status :data:`SETUP_FAILED`.
    """
    try:
        job = _confine(worker, job_fd, out_w, st_w, pid_w)
    except BaseException as e:  # noqa: BLE001 - reported as a sandbox error, never as the program's
        try:
            os.write(st_w, f"SETUP {type(e).__name__}: {e}"[:500].encode("utf-8", "replace"))
        finally:
            os._exit(SETUP_FAILED)
    program, calls, token = job["program"], job["calls"], job["token"]
    del job
    _run_program(program, calls, token)


def _confine(worker: Worker, job_fd: int, out_w: int, st_w: int, pid_w: int) -> dict:
    """Everything between the fork and the program's first line; returns the job."""
    os.write(pid_w, os.getpid().to_bytes(4, "little"))
    os.close(pid_w)
    for s, handler in worker.python_handlers.items():
        try:
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.setsid()
    with os.fdopen(job_fd, "rb") as f:
        job = json.loads(f.read())
    tmp = job["tmp"]
    os.chdir(tmp)
    _drop_privileges(worker)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out_w, 1)
    os.dup2(out_w, 2)
    os.dup2(st_w, 3)
    os.closerange(4, 1 << 16)
    os.environ.clear()
    os.environ.update(PROGRAM_ENV, HOME=tmp, TMPDIR=tmp)
    tempfile.tempdir = tmp
    _set_limits(job["limits"], worker.nproc_base)
    return job


def _drop_privileges(worker: Worker) -> None:
    """IPC namespace of its own, the programs' uid (or no capabilities), no new privileges, no keyrings."""
    if worker.isolated:  # System V IPC objects of its own, gone with it
        check(worker.libc.unshare(CLONE_NEWIPC), "unshare the IPC namespace")
    if worker.uid is not None:
        os.setgroups([])
        os.setgid(worker.uid)
        os.setuid(worker.uid)  # from root: every capability goes too
    elif worker.isolated:
        drop_capabilities(worker.libc)
    check(worker.libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    if worker.isolated:
        deny_keyrings(worker.libc)


def _set_limits(lim: dict, nproc_base: int) -> None:
    cpu = lim["cpu_s"]
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (lim["memory_bytes"],) * 2)
    nproc = nproc_base + lim["processes"]
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    resource.setrlimit(resource.RLIMIT_FSIZE, (lim["file_size_bytes"],) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lim["open_files"],) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _run_program(program: str, calls: dict | None, token: str | None) -> None:
    """Runs the program (and its calls), reports on fd 3 and exits: 0 when it got to the end."""
    sys.argv = ["program.py"]
    mine = os.getpid()  # processes the program forks must not report in its name
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    try:
        exec(compile(program, "program.py", "exec"), namespace)  # noqa: S102 - the point
        results = _call_each(namespace, calls) if calls is not None else None
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:  # noqa: BLE001, S110 - the program may have closed them
            pass
        if os.getpid() == mine:
            write_all(3, (json.dumps(results) if calls is not None else token).encode())
        os._exit(0)
    except BaseException as e:  # noqa: BLE001 - the program's own failure, reported to the worker
        line = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        try:
            if os.getpid() == mine:
                os.write(3, ("FAIL " + line[:500]).encode("utf-8", "replace"))
        finally:
            os._exit(1)


def _call_each(namespace: dict, calls: dict) -> list:
    """The program's function called on every input: ``["ok", value]`` or ``["raised", type, message]`` each."""
    function = namespace.get(calls["function"])
    if not callable(function):
        raise NameError(f"the program defines no function {calls['function']!r}")  # noqa: TRY004 - as Python says it
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
    return results


# --- the starter -------------------------------------------------------------------------------


def serve_as_starter(worker: Worker, sock: socket.socket) -> None:
    """The starter's life: forks one program per request on ``sock``; never returns.

    A request carries four descriptors (job, output, status, pid pipes); the
    program's process tells the worker its pid itself. The answer is ``X`` and the
    wait status (4 bytes), or ``E`` when it could not fork. The starter never reads
    a job, so its memory (which each program starts from) holds none.
    """
    _prepare_starter(worker)
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
            program_process(worker, *fds)
        for fd in fds:
            os.close(fd)
        if pid is None:
            sock.send(b"E")
            continue
        _, wait_status = os.waitpid(pid, 0)
        sock.send(b"X" + wait_status.to_bytes(4, "little"))


def _prepare_starter(worker: Worker) -> None:
    worker.libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # dies with the worker
    for s in worker.catchable:
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


class Starter:
    """The worker's end of its starter: the process that forks each program."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.pid: int | None = None
        self.sock: socket.socket | None = None
        self.start()

    def start(self) -> None:
        """Starts the starter, ending the one before if there is one."""
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except OSError:
                pass
            self.sock.close()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            ours.close()
            os.closerange(3, theirs.fileno())
            os.closerange(theirs.fileno() + 1, 1 << 16)
            serve_as_starter(self.worker, theirs)
            os._exit(0)
        theirs.close()
        ours.settimeout(10)
        self.pid, self.sock = pid, ours

    def wake(self) -> None:
        """Continues the starter, which a program of its uid may have stopped."""
        try:
            os.kill(self.pid, signal.SIGCONT)
        except OSError:
            pass

    def fork_program(self, fds: list[int]) -> int | None:
        """Has the starter fork a program with ``fds`` (job, output, status); its pid, or None.

        The pid comes from the program's process itself (first thing after the fork,
        before any of its code runs), so it is known even if the starter dies right after.
        """
        pid_r, pid_w = os.pipe()
        try:
            for _ in range(2):
                try:
                    self.wake()
                    socket.send_fds(self.sock, [b"F"], [*fds, pid_w])
                    break
                except OSError:
                    self.start()  # it died (killed by a program running as its uid)
            else:
                return None
            os.close(pid_w)
            pid_w = None
            data = os.read(pid_r, 4) if select.select([pid_r], [], [], 10)[0] else b""
            if len(data) == 4:
                return int.from_bytes(data, "little")
            self.start()  # it could not fork, or hung: start afresh
            return None
        finally:
            os.close(pid_r)
            if pid_w is not None:
                os.close(pid_w)

    def reported_exit(self) -> int | None:
        """The wait status the starter reports for the program; None if the starter is gone."""
        try:
            answer = self.sock.recv(8)
        except OSError:
            return None
        return int.from_bytes(answer[1:], "little") if len(answer) == 5 and answer[:1] == b"X" else None


# --- the worker --------------------------------------------------------------------------------


class Worker:
    """The worker process: runs one job at a time, each program in a fresh process and ``/tmp``.

    ``cfg``: the configuration described in the module doc. Starting it makes this
    process undumpable (isolated), the subreaper of programs' orphans, deaf to
    SIGINT, the owner of a private mount namespace (isolated), and starts the starter.
    """

    def __init__(self, cfg: dict) -> None:
        self.uid, self.isolated, self.nproc_base = cfg["uid"], cfg["isolated"], cfg["nproc_base"]
        self.libc = ctypes.CDLL(None, use_errno=True)
        if self.isolated:
            self.libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # no /proc/1/mem, /proc/1/fd for programs
        self.libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # the orphans of programs become our children
        self.pid = os.getpid()
        # In the sandbox we are pid 1: the kernel drops signals from inside the namespace that
        # we do not handle, so a program cannot kill us; SIGINT is handled by Python, so ignore it.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.catchable = [s for s in signal.valid_signals()
                          if s not in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD)]
        self.python_handlers = {s: signal.getsignal(s) for s in self.catchable}
        if self.isolated:
            # A mount namespace of our own, private, owned by our user namespace: in a user
            # namespace bwrap's own one does not let us mount over /tmp.
            check(self.libc.unshare(CLONE_NEWNS), "unshare the mount namespace")
            check(self.libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
        # Directories under /tmp (a venv) to bind back into every fresh /tmp, reached by fd.
        self.under_tmp = [(d, os.open(d, os.O_PATH)) for d in cfg["under_tmp"]] if self.isolated else []
        self.starter = Starter(self)

    def serve(self) -> None:
        """Answers every job line on stdin with a reply line on stdout, until end of file."""
        buffer = b""
        while True:
            chunk = os.read(0, 1 << 16)
            if not chunk:
                return
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                write_all(1, (json.dumps(self.run(json.loads(line))) + "\n").encode())

    def run(self, job: dict) -> dict:
        """Runs one job (``program``, ``calls`` or none, ``limits``, ``keep_output``, ``id``); its reply."""
        lim, calls = job["limits"], job.get("calls")
        token = os.urandom(16).hex() if calls is None else None
        try:
            tmp = self.fresh_tmp(lim)
        except OSError as e:
            return reply(job["id"], "sandbox-error", f"could not prepare /tmp: {e}")
        job_fd = os.memfd_create("job")
        write_all(job_fd, json.dumps({"program": job["program"], "calls": calls, "limits": lim,
                                      "token": token, "tmp": tmp}).encode())
        os.lseek(job_fd, 0, os.SEEK_SET)
        out_r, out_w = os.pipe()
        st_r, st_w = os.pipe()
        start = time.monotonic()
        pid = self.starter.fork_program([job_fd, out_w, st_w])
        for fd in (job_fd, out_w, st_w):
            os.close(fd)
        if pid is None:
            for fd in (out_r, st_r):
                os.close(fd)
            self.drop_tmp(tmp)
            return reply(job["id"], "sandbox-error", "could not start the program")
        program = RunningProgram(self, pid, out_r, st_r, lim, calls, job["keep_output"])
        program.watch(start + lim["timeout_s"])
        program.stop()
        wall = time.monotonic() - start
        self.reap_orphans()
        program.drain()
        self.drop_tmp(tmp)  # every process that could hold it is gone (swept)
        status, reason, report = program.verdict or program.exit_verdict(token)
        return reply(job["id"], status, reason, program.kept.decode("utf-8", "replace"), wall, report)

    def fresh_tmp(self, lim: dict) -> str:
        """A fresh temporary directory for the next program: a new tmpfs over ``/tmp`` when isolated.

        Nothing of an earlier program is visible there; it is limited in bytes and
        inodes and detached again (:meth:`drop_tmp`) once the program's processes are
        gone, which frees its files, inodes and memory. (Done here rather than in a
        mount namespace per program: tearing a mount namespace down waits for an RCU
        grace period, tens of milliseconds on a busy host.)
        """
        if not self.isolated:
            return tempfile.mkdtemp(prefix="sample-")
        opts = f"size={lim['tmp_bytes']},nr_inodes={lim['tmp_inodes']},mode=1777"
        check(self.libc.mount(b"tmpfs", b"/tmp", b"tmpfs", MS_NOSUID | MS_NODEV, opts.encode()), "mount /tmp")
        for path, fd in self.under_tmp:
            os.makedirs(path, exist_ok=True)
            check(self.libc.mount(f"/proc/self/fd/{fd}".encode(), path.encode(), None, MS_BIND | MS_REC, None),
                  "bind")
            self.libc.mount(None, path.encode(), None, MS_BIND | MS_REMOUNT | MS_RDONLY, None)
        return "/tmp"

    def drop_tmp(self, tmp: str) -> None:
        if self.isolated:
            check(self.libc.umount2(b"/tmp", MNT_DETACH), "detach /tmp")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    def sweep(self) -> None:
        """Kills every other process of the namespace (we are its pid 1), until none is left alive."""
        for _ in range(200):
            alive = 0
            for name in os.listdir("/proc"):
                if not name.isdigit() or int(name) in (self.pid, self.starter.pid):
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

    @staticmethod
    def reap_orphans() -> None:
        """Collects the exit statuses of the orphans we inherit as subreaper (and pid 1)."""
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return


class RunningProgram:
    """One program from its start to its end: its pipes, its clock, what it wrote and how it ended.

    Its end is the starter's report of its exit. If the starter dies (a program
    running as its uid killed it), the program is reparented to the worker, which
    then watches it through a pidfd.
    """

    def __init__(self, worker: Worker, pid: int, out_r: int, st_r: int, lim: dict, calls: dict | None,
                 keep_output: int) -> None:
        self.worker, self.pid, self.out_r, self.st_r, self.lim, self.calls = worker, pid, out_r, st_r, lim, calls
        self.keep_output = keep_output
        self.status_cap = lim["max_return_bytes"] if calls is not None else 4096
        self.sock_fd, self.pidfd = worker.starter.sock.fileno(), None
        self.starter_lost, self.wait_status = False, None
        self.poller = select.poll()
        for fd in (out_r, st_r, self.sock_fd, 0):
            self.poller.register(fd, select.POLLIN)
        self.open_fds = {out_r, st_r}
        self.kept, self.total, self.said = bytearray(), 0, bytearray()
        self.verdict: tuple[str, str, None] | None = None  # a limit it broke: (status, reason, report)

    def watch(self, deadline: float) -> None:
        """Reads its output until it ends, breaks a limit or reaches ``deadline`` (monotonic)."""
        while self.verdict is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.verdict = ("timeout", f"timed out after {self.lim['timeout_s']:g} s (wall clock)", None)
                return
            exited = False
            for fd, _ in self.poller.poll(remaining * 1000):
                exited = self.on_event(fd) or exited
            if exited:
                return

    def on_event(self, fd: int) -> bool:
        """Handles one readable descriptor; True when the program has exited."""
        if fd == 0:
            if not os.read(0, 1):  # harness gone: stop everything
                self.kill()
                os._exit(0)
            return False
        if fd == self.sock_fd:
            self.wait_status = self.worker.starter.reported_exit()
            self.poller.unregister(self.sock_fd)
            if self.wait_status is not None:
                return True
            self.starter_lost = True
            try:
                self.pidfd = os.pidfd_open(self.pid)
                self.poller.register(self.pidfd, select.POLLIN)
            except ProcessLookupError:
                return True
            return False
        if fd == self.pidfd:
            return True
        if fd in self.open_fds:
            self.read(fd)
        return False

    def read(self, fd: int) -> None:
        """Reads one chunk from its output or status pipe, and notes a cap it broke."""
        data = os.read(fd, 1 << 16)
        if not data:
            self.poller.unregister(fd)
            self.open_fds.discard(fd)
        elif fd == self.out_r:
            self.total += len(data)
            self.kept.extend(data[: max(0, self.keep_output - len(self.kept))])
            cap = self.lim["max_output_bytes"]
            if self.total > cap and self.verdict is None:
                self.verdict = ("output-limit", f"output limit exceeded (> {cap} bytes)", None)
        else:
            self.said.extend(data)
            if len(self.said) > self.status_cap and self.verdict is None:
                self.verdict = ("output-limit", f"return values over the limit (> {self.status_cap} bytes)", None)
                del self.said[self.status_cap:]

    def kill(self) -> None:
        """Kills its process group, and (isolated) every other process of the sandbox."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.worker.isolated:
            self.worker.sweep()

    def stop(self) -> None:
        """Kills what is left of it and collects its wait status (restarting a lost starter)."""
        self.kill()
        starter = self.worker.starter
        if self.wait_status is None and not self.starter_lost:
            starter.wake()
            self.wait_status = starter.reported_exit()
            self.starter_lost = self.wait_status is None
        if self.starter_lost:
            # Reaps the dead starter first: its socket closes before the kernel hands its
            # children to us, and until then waitpid() cannot collect the program.
            starter.start()
        if self.wait_status is None:
            try:
                self.wait_status = os.waitpid(self.pid, 0)[1]
            except ChildProcessError:
                pass

    def drain(self) -> None:
        """Reads what is left in its pipes (every writer is dead now, unless one escaped), then closes them."""
        for fd in (self.sock_fd, self.pidfd, 0):
            try:
                self.poller.unregister(fd)
            except (KeyError, TypeError):
                pass
        until = time.monotonic() + DRAIN_S
        while self.open_fds and time.monotonic() < until:
            for fd, _ in self.poller.poll(50):
                if fd in self.open_fds:
                    self.read(fd)
        for fd in (self.out_r, self.st_r, self.pidfd):
            if fd is not None:
                os.close(fd)

    def exit_verdict(self, token: str | None) -> tuple[str, str | None, str | None]:
        """How it ended when no limit stopped it: see :func:`exit_verdict`."""
        if self.wait_status is None:
            return "sandbox-error", "lost the program's exit status", None
        return exit_verdict(self.wait_status, bytes(self.said), self.calls, token)


def main() -> None:
    Worker(json.loads(sys.argv[1])).serve()


if __name__ == "__main__":
    main()
