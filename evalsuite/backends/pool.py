"""A pull-based replica pool: free replicas take the next chunk of requests.

Work is not dealt out in advance (no ``i mod N``): the requests of a call are cut
into small chunks on one shared queue, and each replica, driven by its own thread
in this process, takes the next chunk as soon as it has answered the previous one
(one chunk in flight per replica). A slow replica therefore answers fewer chunks.
When the queue runs dry, a free replica takes a copy of a chunk a busier one still
holds ("backup tasks", as MapReduce's stragglers: Dean and Ghemawat, OSDI 2004);
the first answer counts, so a slow replica cannot hold the end of a call back.

Faults (the same for every kind of replica: worker processes, Ray actors):

- a replica that dies (:class:`ReplicaLost`) is retired; its in-flight chunk goes
  back on the queue and another replica answers it;
- every wait has a timeout (``replica_timeout_s``): a replica that does not answer
  a chunk in time is abandoned (stopped, never waited on again) and its chunk
  goes back on the queue;
- a chunk is handed out at most ``max_attempts`` times, so a request that kills
  every replica it reaches cannot go round forever; after that, and when no
  replica is left, its requests come back as failed Generations (data, not an
  exception: the run records them and ``--max-error-rate`` judges them).

Every loss is recorded in :attr:`ReplicaPool.failures` (``run.json``'s
``replica_failures``). Results come back in input order (:meth:`generate`) or as
they finish (:meth:`stream`); each request is answered exactly once, a late answer
from an abandoned replica being dropped.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from evalsuite.types import Generation, GenerationRequest

DEFAULT_REPLICA_TIMEOUT_S = 1800.0  # seconds one replica may take for one chunk
DEFAULT_MAX_ATTEMPTS = 3  # times one chunk is handed out before its requests fail
MAX_CHUNK_SIZE = 32


class ReplicaLost(Exception):
    """The replica is gone (process or actor died, node lost); its chunk is requeued."""


class ReplicaStuck(Exception):
    """The replica did not answer within the timeout; it is abandoned."""


class Replica(Protocol):
    """One engine replica as the pool drives it.

    ``run`` answers one chunk (same length, same order) within ``timeout_s``
    seconds, or raises :class:`ReplicaLost` / :class:`ReplicaStuck`; ``stop``
    ends the replica without waiting on it (it may be stuck); ``name`` identifies
    it in failure records.
    """

    name: str

    def run(self, requests: Sequence[GenerationRequest], timeout_s: float) -> list[Generation]: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class Chunk:
    """Requests ``indices`` (positions in the call's input) handed out together."""

    indices: tuple[int, ...]
    attempt: int = 1


def chunk_size_for(n_requests: int, n_replicas: int, chunk_size: int | None = None) -> int:
    """Requests per chunk: ``chunk_size`` when given, else about a quarter of one
    replica's fair share (at least 1, at most 32), so work stays balanced while each
    chunk still fills an engine batch of several requests."""
    if chunk_size is not None:
        return max(1, chunk_size)
    share = -(-n_requests // max(1, n_replicas))
    return max(1, min(MAX_CHUNK_SIZE, -(-share // 4)))


def make_chunks(n_requests: int, size: int) -> list[Chunk]:
    """Consecutive chunks of ``size`` indices covering ``range(n_requests)``."""
    return [Chunk(tuple(range(i, min(i + size, n_requests)))) for i in range(0, n_requests, size)]


def failed(reason: str) -> Generation:
    return Generation("", "error", error=reason)


class _Call:
    """One ``stream`` call: its requests, the indices not answered yet, its answers."""

    def __init__(self, requests: Sequence[GenerationRequest]) -> None:
        self.requests = list(requests)
        self.pending = set(range(len(self.requests)))
        self.answers: queue.Queue = queue.Queue()
        self.finished = False


@dataclass
class _Job:
    call: _Call
    chunk: Chunk
    backup: bool = False  # a copy of a chunk another replica still holds
    backed_up: bool = False


class ReplicaPool:
    """Replicas fed from one queue, each driven by its own long-lived thread.

    When the queue is empty, a free replica takes a copy of a chunk another replica
    still holds (at most one copy a chunk; the first answer counts, the other is
    dropped), so a slow replica cannot hold the end of a call back by more than
    the time a free replica needs for that chunk.

    Args:
        replicas: started replicas (see :class:`Replica`).
        replica_timeout_s: seconds a replica may take for one chunk before it is
            abandoned.
        chunk_size: requests per chunk; None picks one (:func:`chunk_size_for`).
        max_attempts: times one chunk is handed out (after failures) before its
            requests fail.
        backups: copy the chunks still held when the queue runs dry (see above).
    """

    def __init__(self, replicas: Sequence[Replica], replica_timeout_s: float = DEFAULT_REPLICA_TIMEOUT_S,
                 chunk_size: int | None = None, max_attempts: int = DEFAULT_MAX_ATTEMPTS,
                 backups: bool = True) -> None:
        self.replicas = list(replicas)
        self.live = list(self.replicas)
        self.replica_timeout_s = replica_timeout_s
        self.chunk_size = chunk_size
        self.max_attempts = max_attempts
        self.backups = backups
        self.failures: list[dict[str, Any]] = []
        self.completed = 0  # requests answered since the pool started (all calls, first answers)
        self.chunks_by_replica: dict[str, int] = {r.name: 0 for r in self.replicas}
        self._queue: deque[_Job] = deque()
        self._held: dict[str, _Job] = {}  # replica name -> the job it is answering
        self._cond = threading.Condition()
        self._closed = False
        self._threads = [threading.Thread(target=self._drive, args=(r,), name=f"evalsuite-pool-{r.name}",
                                          daemon=True) for r in self.replicas]
        for t in self._threads:
            t.start()

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """One Generation per request, in input order."""
        out: list[Generation | None] = [None] * len(requests)
        for index, generation in self.stream(requests):
            out[index] = generation
        return out  # type: ignore[return-value]

    def stream(self, requests: Sequence[GenerationRequest]) -> Iterator[tuple[int, Generation]]:
        """Yields ``(index, Generation)`` once per request, in the order they finish."""
        call = _Call(requests)
        if not call.requests:
            return
        size = chunk_size_for(len(call.requests), len(self.live), self.chunk_size)
        with self._cond:
            self._queue.extend(_Job(call, chunk) for chunk in make_chunks(len(call.requests), size))
            self._cond.notify_all()
        remaining = len(call.requests)
        try:
            while remaining:
                try:
                    indices, generations = call.answers.get(timeout=0.2)
                except queue.Empty:
                    self._fail_if_no_replica(call)
                    continue
                remaining -= len(indices)
                yield from zip(indices, generations)
        finally:
            with self._cond:
                call.finished = True
                self._queue = deque(j for j in self._queue if j.call is not call)

    def _fail_if_no_replica(self, call: _Call) -> None:
        with self._cond:
            if self.live or not call.pending:
                return
            left = tuple(sorted(call.pending))
            call.pending.clear()
        call.answers.put((left, [failed("no replica left to answer this request")] * len(left)))

    def _next_job(self, replica: Replica) -> _Job | None:
        """The next queued chunk, else (with backups) a copy of a chunk another replica
        holds; None when there is nothing to do. Called with the lock held."""
        while self._queue:
            job = self._queue.popleft()
            if not job.call.finished and job.call.pending.intersection(job.chunk.indices):
                return job
        if not self.backups:
            return None
        for name, job in self._held.items():
            if (name != replica.name and not job.backup and not job.backed_up and not job.call.finished
                    and job.call.pending.intersection(job.chunk.indices)):
                job.backed_up = True
                return _Job(job.call, job.chunk, backup=True)
        return None

    def _drive(self, replica: Replica) -> None:
        """One replica's loop: take a job, answer it, until the pool closes or the
        replica is retired."""
        while True:
            with self._cond:
                job = None
                while not self._closed and (job := self._next_job(replica)) is None:
                    self._cond.wait(0.5)
                if self._closed:
                    return
                self._held[replica.name] = job
            batch = [job.call.requests[i] for i in job.chunk.indices]
            try:
                generations = replica.run(batch, self.replica_timeout_s)
                if len(generations) != len(batch):
                    raise ReplicaLost(f"answered {len(generations)} generations for {len(batch)} requests")
            except (ReplicaLost, ReplicaStuck) as e:
                self._retire(replica, e, job)
                return
            self._answer(replica, job, generations)

    def _answer(self, replica: Replica, job: _Job, generations: Sequence[Generation]) -> None:
        """Hands the call the answers it does not have yet (a copy's late answer is dropped)."""
        with self._cond:
            self._held.pop(replica.name, None)
            fresh = [(i, g) for i, g in zip(job.chunk.indices, generations) if i in job.call.pending]
            job.call.pending.difference_update(i for i, _ in fresh)
            self.completed += len(fresh)
            self.chunks_by_replica[replica.name] = self.chunks_by_replica.get(replica.name, 0) + 1
            self._cond.notify_all()
        if fresh:
            job.call.answers.put(tuple(zip(*fresh)))

    def _retire(self, replica: Replica, error: Exception, job: _Job) -> None:
        """Records the loss, stops the replica and puts the chunk back (or fails it)."""
        kind = "stuck" if isinstance(error, ReplicaStuck) else "lost"
        with self._cond:
            self._held.pop(replica.name, None)
            if replica in self.live:
                self.live.remove(replica)
            record = {"replica": replica.name, "kind": kind, "error": str(error),
                      "requeued_requests": len(job.call.pending.intersection(job.chunk.indices)),
                      "at": time.time()}
            self.failures.append(record)
        try:
            replica.stop()
        except Exception as e:  # noqa: BLE001 (a replica that cannot even be stopped is recorded, not raised)
            record["stop_error"] = f"{type(e).__name__}: {e}"
        self._requeue(job, f"{type(error).__name__}: {error}")

    def _requeue(self, job: _Job, reason: str) -> None:
        """The chunk's unanswered requests go back on the queue, or fail once the chunk
        has had its attempts."""
        with self._cond:
            left = tuple(i for i in job.chunk.indices if i in job.call.pending)
            if not left or job.call.finished:
                return
            if job.chunk.attempt < self.max_attempts:
                self._queue.appendleft(_Job(job.call, Chunk(left, job.chunk.attempt + 1)))
                self._cond.notify_all()
                return
            job.call.pending.difference_update(left)
        job.call.answers.put((left, [failed(f"gave up after {job.chunk.attempt} replicas failed; last: {reason}")]
                              * len(left)))

    def describe(self) -> dict[str, Any]:
        """Replica names, live ones, chunks answered by each, and the failures so far."""
        return {"replicas": [r.name for r in self.replicas], "live": [r.name for r in self.live],
                "chunks_by_replica": dict(self.chunks_by_replica), "replica_failures": list(self.failures)}

    def shutdown(self, wait_s: float = 60.0) -> list[Replica]:
        """Stops handing out work and waits up to ``wait_s`` seconds for the replicas to
        finish the chunk they hold; returns those still busy (to be stopped, not closed)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        deadline = time.monotonic() + wait_s
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        with self._cond:
            return [r for r in self.replicas if r.name in self._held]

    def close(self) -> None:
        """Shuts down and stops every replica."""
        self.shutdown(wait_s=0.0)
        for replica in self.replicas:
            try:
                replica.stop()
            except Exception:  # noqa: BLE001,S112 (closing goes on to the next replica whatever one does)
                continue
        self.live = []


class PooledBackend:
    """The backend protocol's generation side for a front that owns a ``pool``
    (:class:`ReplicaPool`): local worker processes or Ray actors."""

    pool: ReplicaPool

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        return self.pool.generate(requests)

    def stream(self, requests: Sequence[GenerationRequest]) -> Iterator[tuple[int, Generation]]:
        """``(index, Generation)`` pairs as the replicas finish them."""
        return self.pool.stream(requests)

    @property
    def replica_failures(self) -> list[dict[str, Any]]:
        return list(self.pool.failures) if hasattr(self, "pool") else []
