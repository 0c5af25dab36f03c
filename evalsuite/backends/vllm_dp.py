"""Data parallelism on one host without Ray: several engines, each on its own devices.

``--data-parallel-size N`` starts N worker processes; replica ``r`` sees only the
GPUs ``r*tp .. (r+1)*tp - 1`` (``CUDA_VISIBLE_DEVICES``), or on a CPU host only the
cores ``r*tp .. (r+1)*tp - 1`` (``VLLM_CPU_OMP_THREADS_BIND``), and builds its own
backend (the ``factory`` it is given: :class:`~evalsuite.backends.vllm.VLLMBackend`)
with tensor parallelism ``tp``. Requests are pulled, not dealt: the replicas take
small chunks from one queue as they become free (:mod:`evalsuite.backends.pool`),
so a slow replica does not set the pace; the results come back in request order.
A replica process that dies loses nothing (its chunk goes to another), and one
that does not answer within ``replica_timeout_s`` is killed and reported.
Greedy outputs do not depend on N (per-request seeds make sampled ones not depend
on it either, where the build supports them).

This module does not import :mod:`evalsuite.backends.vllm` (the factory is passed
in, and pickled by reference into the workers), so the two do not import each other.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from typing import Any

from evalsuite.backends.pool import (
    DEFAULT_REPLICA_TIMEOUT_S,
    PooledBackend,
    ReplicaLost,
    ReplicaPool,
    ReplicaStuck,
)
from evalsuite.types import Generation, GenerationRequest

START_TIMEOUT_S = 900.0  # seconds a replica may take to load its engine
CLOSE_TIMEOUT_S = 60.0


def replica_env(rank: int, tensor_parallel_size: int, on_cpu: bool) -> dict[str, str]:
    """The environment that pins replica ``rank`` to its device subset."""
    devices = [str(d) for d in range(rank * tensor_parallel_size, (rank + 1) * tensor_parallel_size)]
    if on_cpu:
        return {"VLLM_CPU_OMP_THREADS_BIND": "|".join(devices)}
    return {"CUDA_VISIBLE_DEVICES": ",".join(devices)}


def _serve(conn, factory: Callable[..., Any], model: str, kwargs: dict[str, Any], env: dict[str, str]) -> None:
    os.environ.update(env)
    try:
        backend = factory(model, **kwargs)
    except BaseException as e:  # noqa: BLE001 (any start-up failure is reported to the parent, which raises it)
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", backend.describe()))
    while True:
        requests = conn.recv()
        if requests is None:
            break
        conn.send(("ok", backend.generate(requests)))
    backend.close()
    conn.send(("closed", None))


class ProcessReplica:
    """One engine in a spawned worker process, driven over a pipe."""

    def __init__(self, rank: int, factory: Callable[..., Any], model: str, kwargs: dict[str, Any],
                 env: dict[str, str]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.name = f"dp{rank}"
        self.env = env
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child, factory, model, kwargs, env),
                                   name=f"evalsuite-dp{rank}")
        self.process.start()

    def ready(self, timeout_s: float = START_TIMEOUT_S) -> tuple[str, Any]:
        """``("ready", description)`` or ``("error", reason)`` once the engine started."""
        try:
            if not self.conn.poll(timeout_s):
                return "error", f"no answer within {timeout_s:.0f} s"
            return self.conn.recv()
        except (EOFError, OSError):
            return "error", f"worker process exited with code {self.process.exitcode}"

    def run(self, requests: Sequence[GenerationRequest], timeout_s: float) -> list[Generation]:
        """The chunk's generations; ReplicaLost if the process died, ReplicaStuck after
        ``timeout_s`` seconds without an answer."""
        try:
            self.conn.send(list(requests))
            if not self.conn.poll(timeout_s):
                raise ReplicaStuck(f"replica {self.name} (pid {self.process.pid}) gave no answer in {timeout_s:.0f} s")
            _, generations = self.conn.recv()
        except (EOFError, OSError) as e:
            raise ReplicaLost(f"replica {self.name} (pid {self.process.pid}) died "
                              f"(exit code {self.process.exitcode}): {type(e).__name__}") from None
        return generations

    def stop(self) -> None:
        """Kills the process now (used for a replica that died or is stuck)."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=CLOSE_TIMEOUT_S)

    def close(self) -> None:
        """Asks the engine to shut down; kills the process if it does not in time."""
        if self.process.is_alive():
            try:
                self.conn.send(None)
                if self.conn.poll(CLOSE_TIMEOUT_S):
                    self.conn.recv()
            except (BrokenPipeError, EOFError, OSError):
                pass
            self.process.join(timeout=CLOSE_TIMEOUT_S)
        self.stop()


class DataParallelVLLM(PooledBackend):
    """``data_parallel_size`` engines behind the backend protocol, fed by a pull queue.

    Args:
        factory: builds one engine in a worker, ``factory(model, **kwargs)``.
        replica_timeout_s: seconds one replica may take for one chunk.
        chunk_size: requests per chunk (None: see :func:`~evalsuite.backends.pool.chunk_size_for`).

    Raises RuntimeError naming the replica when one fails to start; the others are
    stopped first.
    """

    name = "vllm"

    def __init__(self, factory: Callable[..., Any], model: str, data_parallel_size: int,
                 tensor_parallel_size: int = 1, on_cpu: bool = False,
                 replica_timeout_s: float = DEFAULT_REPLICA_TIMEOUT_S, chunk_size: int | None = None,
                 **kwargs: Any) -> None:
        self.size = data_parallel_size
        kwargs = {**kwargs, "tensor_parallel_size": tensor_parallel_size}
        self._replicas = [ProcessReplica(rank, factory, model, kwargs, replica_env(rank, tensor_parallel_size, on_cpu))
                          for rank in range(data_parallel_size)]
        self._envs = [r.env for r in self._replicas]
        self._description: dict[str, Any] = {}
        failures = []
        for rank, replica in enumerate(self._replicas):
            kind, value = replica.ready()
            if kind == "error":
                failures.append(f"replica {rank} ({replica.env}): {value}")
            elif rank == 0:
                self._description = value
        if failures:
            self.close()
            raise RuntimeError("; ".join(failures))
        self.pool = ReplicaPool(self._replicas, replica_timeout_s=replica_timeout_s, chunk_size=chunk_size)

    def kv_cache_usage(self) -> float | None:
        return None  # the gauges live in the replicas' processes

    def describe(self) -> dict[str, Any]:
        engine = {**self._description.get("engine", {}), "data_parallel_size": self.size}
        kv = self._description.get("kv_cache")
        if kv:
            kv = {k: v * self.size for k, v in kv.items() if k != "block_size"} | {"block_size": kv["block_size"]}
        return {**self._description, "engine": engine, "kv_cache": kv,
                "replicas": list(self._envs), "scheduling": "pull"}

    def close(self) -> None:
        """Lets each replica finish the chunk it holds (up to a minute), then closes the
        engines; a replica still busy after that is killed."""
        busy = self.pool.shutdown(wait_s=CLOSE_TIMEOUT_S) if hasattr(self, "pool") else []
        for replica in self._replicas:
            replica.stop() if replica in busy else replica.close()
        self._replicas = []
