"""Data parallelism in-process: several vLLM engines, each on its own devices.

``--data-parallel-size N`` starts N worker processes; replica ``r`` sees only the
GPUs ``r*tp .. (r+1)*tp - 1`` (``CUDA_VISIBLE_DEVICES``), or on a CPU host only the
cores ``r*tp .. (r+1)*tp - 1`` (``VLLM_CPU_OMP_THREADS_BIND``), and builds its own
:class:`~evalsuite.backends.vllm.VLLMBackend` (passed in as ``engine``, so this
module does not import the one that builds it) with tensor parallelism ``tp``. A
batch is dealt out by request index (request ``i`` to replica ``i mod N``); the
replicas generate at the same time and the results come back in request order.
Greedy outputs do not depend on N (per-request seeds make sampled ones not depend
on it either, where the build supports them).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from typing import Any

from evalsuite.types import Generation, GenerationRequest


def replica_env(rank: int, tensor_parallel_size: int, on_cpu: bool) -> dict[str, str]:
    """The environment that pins replica ``rank`` to its device subset."""
    devices = [str(d) for d in range(rank * tensor_parallel_size, (rank + 1) * tensor_parallel_size)]
    if on_cpu:
        return {"VLLM_CPU_OMP_THREADS_BIND": "|".join(devices)}
    return {"CUDA_VISIBLE_DEVICES": ",".join(devices)}


def _serve(conn, engine: Callable[..., Any], model: str, kwargs: dict[str, Any], env: dict[str, str]) -> None:
    os.environ.update(env)
    try:
        backend = engine(model, **kwargs)
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


class DataParallelVLLM:
    """``data_parallel_size`` vLLM engines behind the backend protocol.

    ``engine`` builds one replica's backend in its worker process (a top-level class,
    pickled by reference under ``spawn``). Raises RuntimeError naming the replica
    when one fails to start; the others are stopped first.
    """

    name = "vllm"

    def __init__(self, engine: Callable[..., Any], model: str, data_parallel_size: int,
                 tensor_parallel_size: int = 1, on_cpu: bool = False, **kwargs: Any) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.size = data_parallel_size
        self._workers = []
        for rank in range(data_parallel_size):
            parent, child = ctx.Pipe()
            env = replica_env(rank, tensor_parallel_size, on_cpu)
            process = ctx.Process(target=_serve, args=(child, engine, model, {**kwargs, "tensor_parallel_size": tensor_parallel_size}, env),
                                  name=f"evalsuite-dp{rank}")
            process.start()
            self._workers.append((process, parent, env))
        self._description: dict[str, Any] = {}
        failures = []
        for rank, (process, conn, env) in enumerate(self._workers):
            kind, value = conn.recv() if conn.poll(None) else ("error", "no answer")
            if kind == "error":
                failures.append(f"replica {rank} ({env}): {value}")
            elif rank == 0:
                self._description = value
        if failures:
            self.close()
            raise RuntimeError("; ".join(failures))

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        live = [(r, conn) for r, (_, conn, _) in enumerate(self._workers) if requests[r :: self.size]]
        for r, conn in live:
            conn.send(list(requests[r :: self.size]))
        results: list[Generation | None] = [None] * len(requests)
        for r, conn in live:
            try:
                _, generations = conn.recv()
            except (EOFError, OSError):  # the replica died: its requests failed, the others stand
                generations = [Generation("", "error", error=f"data-parallel replica {r} died")
                               for _ in requests[r :: self.size]]
            results[r :: self.size] = generations
        return results  # type: ignore[return-value]

    def kv_cache_usage(self) -> float | None:
        return None  # the gauges live in the replicas' processes

    def describe(self) -> dict[str, Any]:
        engine = {**self._description.get("engine", {}), "data_parallel_size": self.size}
        kv = self._description.get("kv_cache")
        if kv:
            kv = {k: v * self.size for k, v in kv.items() if k != "block_size"} | {"block_size": kv["block_size"]}
        return {**self._description, "engine": engine, "kv_cache": kv,
                "replicas": [env for _, _, env in self._workers]}

    def close(self) -> None:
        for process, conn, _ in self._workers:
            if process.is_alive():
                try:
                    conn.send(None)
                    if conn.poll(60):
                        conn.recv()
                except (BrokenPipeError, EOFError, OSError):
                    pass
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
                process.join()
        self._workers = []
