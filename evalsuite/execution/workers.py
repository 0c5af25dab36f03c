"""One pool of killable worker processes, for every job that needs a time limit.

:class:`KillablePool` hands jobs to worker processes and enforces a wall-clock
limit per job from the outside: a worker whose job runs past the limit is killed
(SIGKILL) and replaced, a worker that dies is replaced, and a reply that arrives
after the limit counts as a timeout all the same (a verdict must not depend on
how promptly the pool looked). It knows nothing of what a job is: a worker kind
(:class:`Worker`) says how to start a process, send it a job and read its replies.

Two kinds use it: the sandboxed interpreters that run generated code
(:class:`evalsuite.execution.sandbox.SandboxPool`) and the processes that check math
answers with sympy (:class:`evalsuite.scoring.equations.VerifierPool`). Each kind
makes its processes die with the harness (see :mod:`evalsuite.pipeline.lifecycle`).
"""

from __future__ import annotations

import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Any, Protocol

STARTING_POLL_S = 1.0
"""How long the pool waits at a time while no job runs and workers are still starting."""


class Worker(Protocol):
    """One worker process as the pool sees it.

    ``ready``: whether it has finished starting and takes jobs. :meth:`waitables`:
    what becomes readable when it speaks or dies (objects that
    :func:`multiprocessing.connection.wait` accepts: file descriptors,
    connections, process sentinels). :meth:`send` hands it a job (raises OSError
    when the process cannot be reached). :meth:`receive`: the replies that are
    complete now (an empty list when none is, or when it only said it is ready),
    ``None`` when it is dead. :meth:`kill` ends it at once and frees its pipes.
    """

    ready: bool

    def waitables(self) -> list[Any]: ...

    def alive(self) -> bool: ...

    def send(self, job: Any) -> None: ...

    def receive(self) -> list[Any] | None: ...

    def kill(self) -> None: ...


@dataclass(frozen=True)
class Ended:
    """How one job ended in the pool.

    ``status``: ``replied`` (``value`` is the worker's reply), ``died`` (the worker
    died; ``value`` is None, or why it could not be reached) or ``timeout`` (no
    reply within the limit; the worker was killed unless it replied late).
    ``seconds``: wall time from handing the job over to its end.
    """

    status: str
    value: Any = None
    seconds: float = 0.0


@dataclass(frozen=True)
class _Running:
    job: int
    started: float
    deadline: float


@dataclass
class _Batch:
    """One :meth:`KillablePool.map` call: jobs waiting, jobs running (by slot), results."""

    jobs: Sequence[Any]
    limit_s: float
    results: list[Ended | None] = field(init=False)
    waiting: deque[int] = field(init=False)
    running: dict[int, _Running] = field(default_factory=dict)
    resent: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.results = [None] * len(self.jobs)
        self.waiting = deque(range(len(self.jobs)))

    def end(self, slot: int, status: str, value: Any, now: float) -> None:
        running = self.running.pop(slot)
        self.results[running.job] = Ended(status, value, now - running.started)


class KillablePool:
    """``size`` worker slots, each filled by ``start(slot)`` when first needed.

    A job goes only to a worker that is ``ready`` (so start-up is not charged to
    it). A job that cannot be handed over (its worker died just before) is
    queued again once, for a fresh worker; the second time it ends ``died``.
    ``restarts`` counts the workers replaced. Use as a context manager or call
    :meth:`close`; the workers are also killed when the pool is garbage-collected
    or the interpreter exits. Not thread-safe: one :meth:`map` at a time.
    """

    def __init__(self, start: Callable[[int], Worker], size: int) -> None:
        self.size = size
        self.restarts = 0
        self.workers: list[Worker | None] = [None] * size
        """The worker in each slot, ``None`` where none has been started."""
        self._start = start
        self._finalizer = weakref.finalize(self, KillablePool._kill_all, self.workers)

    @staticmethod
    def _kill_all(workers: list[Worker | None]) -> None:
        for slot, worker in enumerate(workers):
            if worker is not None:
                worker.kill()
                workers[slot] = None

    def close(self) -> None:
        """Kills every worker; a later :meth:`map` starts new ones."""
        KillablePool._kill_all(self.workers)

    def __enter__(self) -> KillablePool:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def map(self, jobs: Sequence[Any], limit_s: float) -> list[Ended]:
        """Runs every job in the workers, each under ``limit_s`` seconds of wall clock.

        Returns one :class:`Ended` per job, in order. Never raises for what a job
        or a worker does; raises what ``start`` or a worker's ``send`` raises other
        than OSError (a job that cannot be encoded, say).
        """
        batch = _Batch(jobs, limit_s)
        while batch.waiting or batch.running:
            self._hand_out(batch)
            self._wait(batch)
        return batch.results  # type: ignore[return-value]

    def _live(self, slot: int) -> Worker:
        """The slot's worker; started when there is none, replaced when it died while idle."""
        worker = self.workers[slot]
        if worker is not None and not worker.alive():
            # e.g. its parent-death signal fired because the thread that started it ended
            # (see evalsuite.pipeline.lifecycle). No job was lost; start afresh.
            self._replace(slot)
        if self.workers[slot] is None:
            self.workers[slot] = self._start(slot)
        return self.workers[slot]

    def _replace(self, slot: int) -> None:
        self.workers[slot].kill()
        self.workers[slot] = None
        self.restarts += 1
        self.workers[slot] = self._start(slot)

    def _hand_out(self, batch: _Batch) -> None:
        """Gives waiting jobs to the idle workers that are ready."""
        slot = 0
        while batch.waiting and slot < self.size:
            worker = None if slot in batch.running else self._live(slot)
            if worker is None or not worker.ready:
                slot += 1
                continue
            k = batch.waiting.popleft()
            try:
                worker.send(batch.jobs[k])
            except OSError as e:
                self._replace(slot)  # and try this slot's fresh worker next
                if k in batch.resent:
                    batch.results[k] = Ended("died", f"could not reach the worker: {e}")
                else:
                    batch.resent.add(k)
                    batch.waiting.appendleft(k)
                continue
            now = time.monotonic()
            batch.running[slot] = _Running(k, now, now + batch.limit_s)
            slot += 1

    def _wait(self, batch: _Batch) -> None:
        """Waits for a worker to speak or die, or for the nearest deadline, and settles what happened."""
        now = time.monotonic()
        nearest = min((r.deadline for r in batch.running.values()), default=now + STARTING_POLL_S)
        owner = {obj: slot for slot, w in enumerate(self.workers) if w is not None for obj in w.waitables()}
        ready = wait(list(owner), timeout=max(0.0, nearest - now))
        now = time.monotonic()
        for slot in sorted({owner[obj] for obj in ready}):
            replies = self.workers[slot].receive()
            if replies is None:
                if slot in batch.running:
                    batch.end(slot, "died", None, now)
                self._replace(slot)
            elif replies and slot in batch.running:
                late = now >= batch.running[slot].deadline
                batch.end(slot, "timeout" if late else "replied", None if late else replies[-1], now)
        for slot in [s for s, r in batch.running.items() if now >= r.deadline]:
            batch.end(slot, "timeout", None, now)
            self._replace(slot)
