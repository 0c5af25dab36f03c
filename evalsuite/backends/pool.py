"""A pull-based replica pool: free replicas take the next chunk of requests.

Work is not dealt out in advance (no ``i mod N``): the requests of a call are cut
into small chunks on one shared queue, and each replica, driven by its own thread
in this process, takes the next chunk as soon as it has answered the previous one
(one chunk in flight per replica). A slow replica therefore answers fewer chunks
and the run ends at most about one chunk after the fast replicas run out of work.

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


class ReplicaPool:
    """Replicas fed from one queue.

    Args:
        replicas: started replicas (see :class:`Replica`).
        replica_timeout_s: seconds a replica may take for one chunk before it is
            abandoned.
        chunk_size: requests per chunk; None picks one (:func:`chunk_size_for`).
        max_attempts: times one chunk is handed out before its requests fail.
    """

    def __init__(self, replicas: Sequence[Replica], replica_timeout_s: float = DEFAULT_REPLICA_TIMEOUT_S,
                 chunk_size: int | None = None, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> None:
        self.replicas = list(replicas)
        self.live = list(self.replicas)
        self.replica_timeout_s = replica_timeout_s
        self.chunk_size = chunk_size
        self.max_attempts = max_attempts
        self.failures: list[dict[str, Any]] = []
        self.completed = 0  # requests answered since the pool started (all calls)
        self.chunks_by_replica: dict[str, int] = {r.name: 0 for r in self.replicas}
        self._lock = threading.Lock()

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """One Generation per request, in input order."""
        out: list[Generation | None] = [None] * len(requests)
        for index, generation in self.stream(requests):
            out[index] = generation
        return out  # type: ignore[return-value]

    def stream(self, requests: Sequence[GenerationRequest]) -> Iterator[tuple[int, Generation]]:
        """Yields ``(index, Generation)`` once per request, in the order they finish."""
        requests = list(requests)
        if not requests:
            return
        work: queue.Queue = queue.Queue()
        for chunk in make_chunks(len(requests), chunk_size_for(len(requests), len(self.live), self.chunk_size)):
            work.put(chunk)
        results: queue.Queue = queue.Queue()
        pending = set(range(len(requests)))
        stop = threading.Event()
        threads = [threading.Thread(target=self._drive, args=(r, requests, work, results, stop),
                                    name=f"evalsuite-pool-{r.name}", daemon=True) for r in list(self.live)]
        for t in threads:
            t.start()
        try:
            yield from self._collect(requests, pending, work, results, threads)
        finally:
            stop.set()

    def _collect(self, requests, pending: set[int], work: queue.Queue, results: queue.Queue,
                 threads: list[threading.Thread]) -> Iterator[tuple[int, Generation]]:
        """Yields answers as they arrive; once no driving thread is left, the chunks
        still queued fail with the reason."""
        while pending:
            try:
                indices, generations = results.get(timeout=0.2)
            except queue.Empty:
                if any(t.is_alive() for t in threads):
                    continue
                reason = "no replica left to answer this request"
                leftovers = sorted(pending)
                indices, generations = tuple(leftovers), [failed(reason)] * len(leftovers)
            for i, g in zip(indices, generations):
                if i in pending:  # each request answered exactly once
                    pending.discard(i)
                    yield i, g
        _drain(work)

    def _drive(self, replica: Replica, requests, work: queue.Queue, results: queue.Queue,
               stop: threading.Event) -> None:
        """One replica's loop: take a chunk, answer it, repeat until every request of
        the call is answered (a chunk another replica loses may still come back)."""
        while not stop.is_set():
            try:
                chunk = work.get(timeout=0.05)
            except queue.Empty:
                continue
            batch = [requests[i] for i in chunk.indices]
            try:
                generations = replica.run(batch, self.replica_timeout_s)
                if len(generations) != len(batch):
                    raise ReplicaLost(f"answered {len(generations)} generations for {len(batch)} requests")
            except (ReplicaLost, ReplicaStuck) as e:
                self._retire(replica, e, chunk)
                self._requeue(chunk, work, results, f"{type(e).__name__}: {e}")
                return
            with self._lock:
                self.completed += len(batch)
                self.chunks_by_replica[replica.name] = self.chunks_by_replica.get(replica.name, 0) + 1
            results.put((chunk.indices, generations))

    def _retire(self, replica: Replica, error: Exception, chunk: Chunk) -> None:
        kind = "stuck" if isinstance(error, ReplicaStuck) else "lost"
        with self._lock:
            if replica in self.live:
                self.live.remove(replica)
            self.failures.append({"replica": replica.name, "kind": kind, "error": str(error),
                                  "requeued_requests": len(chunk.indices), "at": time.time()})
        try:
            replica.stop()
        except Exception as e:  # noqa: BLE001 (a replica that cannot even be stopped is recorded, not raised)
            self.failures[-1]["stop_error"] = f"{type(e).__name__}: {e}"

    def _requeue(self, chunk: Chunk, work: queue.Queue, results: queue.Queue, reason: str) -> None:
        """The chunk goes back on the queue, or fails once it has had its attempts."""
        if chunk.attempt >= self.max_attempts:
            results.put((chunk.indices, [failed(f"gave up after {chunk.attempt} replicas failed; last: {reason}")]
                         * len(chunk.indices)))
        else:
            work.put(Chunk(chunk.indices, chunk.attempt + 1))

    def describe(self) -> dict[str, Any]:
        """Replica names, live ones, chunks answered by each, and the failures so far."""
        return {"replicas": [r.name for r in self.replicas], "live": [r.name for r in self.live],
                "chunks_by_replica": dict(self.chunks_by_replica), "replica_failures": list(self.failures)}

    def close(self) -> None:
        for replica in self.replicas:
            try:
                replica.stop()
            except Exception:  # noqa: BLE001,S112 (closing goes on to the next replica whatever one does)
                continue
        self.live = []


def _drain(work: queue.Queue) -> None:
    while True:
        try:
            work.get_nowait()
        except queue.Empty:
            return
