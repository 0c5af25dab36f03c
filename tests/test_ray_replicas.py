"""Replicas as Ray actors on a real local Ray cluster (two raylets on 127.0.0.1, one
CPU each).

One cluster serves the module. The tests without an engine drive actors that hold
a scripted backend (placement, a kill by PID, a stuck actor, clean-up); the
``engine`` tests use one pair of actors each holding a real vLLM engine with the
embedded model (two engine starts in all): first the GSM8K run compared with the
session's single engine, then the run in which one replica's actor is killed by
PID. Each actor's KV cache is 1 GiB (``VLLM_CPU_KVCACHE_SPACE=1``) to bound memory
beside the session's engine.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")

MAX_TOKENS = 96  # enough for the verdicts to vary; keeps two CPU engines under a minute per run
ITEMS = 20
KILL_ITEMS = 10  # the kill lands after 4 finished: 6 left, some of them on the victim


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive_nodes(ray) -> int:
    return sum(1 for n in ray.nodes() if n["Alive"])


def _connect(ray, address: str, deadline: float) -> None:
    """``ray.init`` once the head's raylet is registered (``ray status`` answers as soon
    as the GCS does, a little before; until then ray.init finds no local node)."""
    while True:
        try:
            ray.init(address=address, log_to_driver=False, logging_level="WARNING", _node_ip_address="127.0.0.1")
            return
        except RuntimeError:
            if ray.is_initialized():
                ray.shutdown()
            assert time.monotonic() < deadline, "no Ray node to connect to"
            time.sleep(2)


@pytest.fixture(scope="module")
def ray_cluster():
    """``ray start --head`` and a second ``ray start --address``: two raylets, one CPU
    each, each in its own session so that teardown stops exactly what it started."""
    ray = pytest.importorskip("ray")
    ray_bin = str(Path(sys.executable).parent / "ray")
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must stay < 108 bytes
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    common = ["--num-cpus", "1", "--num-gpus", "0", "--object-store-memory", str(100 * 2**20), "--block",
              "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
    logs = open(Path(temp) / "ray-start.log", "w")  # noqa: SIM115 (open for the module's lifetime)
    head = subprocess.Popen([ray_bin, "start", "--head", "--port", str(port), "--include-dashboard", "false",
                             "--temp-dir", temp, *common], env=env, stdout=logs, stderr=logs, start_new_session=True)
    started = [head]
    try:
        address = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while subprocess.run([ray_bin, "status", "--address", address], capture_output=True, env=env,
                             check=False).returncode != 0:
            assert time.monotonic() < deadline and head.poll() is None, "the Ray head did not start"
            time.sleep(2)
        started.append(subprocess.Popen([ray_bin, "start", "--address", address, *common], env=env, stdout=logs,
                                        stderr=logs, start_new_session=True))
        _connect(ray, address, deadline)
        while _alive_nodes(ray) < 2:
            assert time.monotonic() < deadline, "the second raylet did not join"
            time.sleep(1)
        yield address
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for process in reversed(started):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=60)
        logs.close()


class Scripted:
    """A backend answering ``"<pid>:<sample_id>"`` after 0.1 s a request. The first
    actor to meet sample ``hang`` (claimed through the file ``claim``) never answers it."""

    def __init__(self, model, claim=None, **kwargs):
        self.claim = claim

    def describe(self):
        return {"backend": "scripted", "engine": {}, "kv_cache": None}

    def generate(self, requests):
        for r in requests:
            if r.sample_id == "hang" and self.claim and _claim(self.claim):
                time.sleep(3600)
        time.sleep(0.1 * len(requests))
        from evalsuite.types import Generation

        return [Generation(f"{os.getpid()}:{r.sample_id}", "stop") for r in requests]

    def close(self):
        pass


def _claim(path) -> bool:
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL))
        return True
    except FileExistsError:
        return False


def _requests(names):
    from evalsuite.types import GenerationRequest, SamplingParams

    return [GenerationRequest("t", name, "p", SamplingParams()) for name in names]


def _gone(pid: int, within_s: float = 30) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


@pytest.fixture
def scripted_replicas(ray_cluster, tmp_path):
    from ray import cloudpickle

    from evalsuite.backends.ray_replicas import RayReplicas

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the actors cannot import this test module
    replicas = RayReplicas(Scripted, "unused", ray_cluster, data_parallel_size=2, chunk_size=2,
                           replica_timeout_s=3, claim=str(tmp_path / "claim"))
    yield replicas
    replicas.close()


def test_actors_on_two_nodes_pull_and_survive_a_kill(scripted_replicas):
    import ray

    r = scripted_replicas
    assert len({x["node_id"] for x in r.describe()["ray"]["replicas"]}) == 2
    pids = r.replica_pids()
    killed = threading.Event()
    threading.Thread(target=_kill_when, args=(r, pids["ray1"], 4, killed), daemon=True).start()
    names = [f"s{i}" for i in range(20)]
    out = r.generate(_requests(names))
    assert killed.is_set()
    assert [g.text.split(":")[1] for g in out] == names and all(g.error is None for g in out)
    assert [(f["replica"], f["kind"]) for f in r.replica_failures] == [("ray1", "lost")]
    assert str(pids["ray1"]) in r.replica_failures[0]["error"]
    groups = [x.group.id.hex() for x in r._replicas]
    r.close()
    table = ray.util.placement_group_table()
    assert all(table[g]["state"] == "REMOVED" for g in groups)
    assert _gone(pids["ray0"]) and _gone(pids["ray1"])


def test_a_stuck_actor_is_abandoned_after_the_timeout(scripted_replicas):
    r = scripted_replicas
    start = time.perf_counter()
    out = r.generate(_requests(["a", "hang", "b", "c", "d", "e"]))
    assert time.perf_counter() - start < 30
    assert [g.text.split(":")[1] for g in out] == ["a", "hang", "b", "c", "d", "e"]
    deadline = time.monotonic() + 30  # the other replica answered a copy; the stuck one times out after 3 s
    while not r.replica_failures and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [f["kind"] for f in r.replica_failures] == ["stuck"]
    stuck = r.replica_failures[0]["replica"]
    assert _gone(r.replica_pids()[stuck])


def test_an_address_where_no_cluster_answers_is_one_line(tmp_path, gsm8k_data_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "evalsuite.cli", "run", "--tasks", "gsm8k", "--limit", "2",
                          "--data-dir", str(gsm8k_data_dir), "--output-dir", str(tmp_path), "--no-progress",
                          "--ray-address", f"127.0.0.1:{port}"], capture_output=True, text=True, check=False)
    assert out.returncode == 2
    assert f"no Ray cluster answers at --ray-address 127.0.0.1:{port}" in out.stderr
    assert "Traceback" not in out.stderr
    assert time.perf_counter() - start < 60  # ray.init alone would retry for minutes


DRIVER = """
import faulthandler, json, os, signal, sys, time
faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test asks for the stacks of a driver that hangs
sys.path.insert(0, {tests!r})
from ray import cloudpickle
import test_ray_replicas as t
cloudpickle.register_pickle_by_value(t)
from evalsuite.backends.ray_replicas import RayReplicas
r = RayReplicas(t.Scripted, "unused", {address!r}, data_parallel_size=2, chunk_size=1)
print(json.dumps({{"pids": list(r.replica_pids().values()), "groups": [x.group.id.hex() for x in r._replicas]}}),
      flush=True)
r.generate(t._requests([f"s{{i}}" for i in range(10_000)]))  # about 8 minutes: interrupted long before
"""


def test_ctrl_c_in_the_driver_releases_its_actors_and_groups(ray_cluster, tmp_path):
    import ray

    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(tests=str(Path(__file__).parent), address=ray_cluster))
    errors = tmp_path / "stderr.txt"  # a file, not a pipe: a driver that writes much cannot block on it
    with errors.open("w") as stderr:
        driver = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        ready, _, _ = select.select([driver.stdout], [], [], 300)  # placement and two actors
        assert ready, f"the driver started no replicas within 300 s:\n{errors.read_text()[-6000:]}"
        created = json.loads(driver.stdout.readline())
        time.sleep(2)  # mid-call
        driver.send_signal(signal.SIGINT)
        try:
            driver.wait(timeout=120)
        except subprocess.TimeoutExpired:
            driver.send_signal(signal.SIGUSR1)  # its stacks go to stderr.txt, shown by the failure below
            time.sleep(2)
            pytest.fail(f"the driver did not exit within 120 s of Ctrl-C:\n{errors.read_text()[-6000:]}")
    finally:
        if driver.poll() is None:
            driver.kill()
    assert "KeyboardInterrupt" in errors.read_text()
    table = ray.util.placement_group_table()
    assert all(table[g]["state"] == "REMOVED" for g in created["groups"])
    assert all(_gone(pid) for pid in created["pids"])


# The tests without an engine come first: the engine replicas below are a module
# fixture that holds every CPU of the two-node cluster until the module ends, and an
# actor asked for while they live would wait for a free CPU.


@pytest.fixture(scope="module")
def ray_replicas(ray_cluster, embedded_model):
    from evalsuite.backends.ray_replicas import RayReplicas
    from evalsuite.backends.vllm import VLLMBackend

    saved = os.environ.get("VLLM_CPU_KVCACHE_SPACE")
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = "1"  # forwarded to the actors
    try:
        replicas = RayReplicas(VLLMBackend, embedded_model, ray_cluster, data_parallel_size=2, chunk_size=2,
                               replica_timeout_s=300, max_model_len=8192, dtype="float32", seed=0,
                               enforce_eager=True)
    finally:
        if saved is None:
            os.environ.pop("VLLM_CPU_KVCACHE_SPACE", None)
        else:
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = saved
    yield replicas
    replicas.close()


def _records(result) -> list[dict]:
    return [json.loads(line) for line in (result.run_dir / "samples.jsonl").read_text().splitlines()]


def _by_sample(records) -> dict[str, tuple[str, dict]]:
    return {r["sample_id"]: (r["output"], r["verdicts"]) for r in records}


@pytest.fixture(scope="module")
def single_engine_records(vllm_backend, gsm8k_data_dir, tmp_path_factory):
    """GSM8K on the session's single engine: the reference the replicas must equal."""
    from evalsuite.config import RunConfig
    from evalsuite.pipeline.runner import run

    cfg = RunConfig(tasks=("gsm8k",), limit=ITEMS, data_dir=str(gsm8k_data_dir), max_tokens=MAX_TOKENS,
                    cache=False, output_dir=tmp_path_factory.mktemp("single"))
    return _records(run(cfg, progress=False, backend=vllm_backend))


@pytest.mark.engine
def test_two_ray_replicas_give_the_single_engine_results(ray_replicas, single_engine_records, run_with,
                                                        gsm8k_data_dir):
    description = ray_replicas.describe()
    assert description["engine"]["data_parallel_size"] == 2
    assert len({r["node_id"] for r in description["ray"]["replicas"]}) == 2  # one replica per raylet
    result = run_with(ray_replicas, ["gsm8k"], limit=ITEMS, data_dir=str(gsm8k_data_dir), max_tokens=MAX_TOKENS,
                      cache=False)
    records = _records(result)
    assert len(records) == ITEMS
    assert _by_sample(records) == _by_sample(single_engine_records)
    assert all(count > 0 for count in ray_replicas.pool.chunks_by_replica.values())  # both pulled work
    run = json.loads((result.run_dir / "run.json").read_text())
    assert run["status"] == "complete" and run["replica_failures"] == []
    assert run["backend"]["scheduling"] == "pull"


def _kill_when(replicas, pid: int, after_requests: int, killed: threading.Event) -> None:
    deadline = time.monotonic() + 600
    while replicas.pool.completed < after_requests and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    killed.set()


@pytest.mark.engine
def test_a_replica_killed_mid_run_loses_nothing(ray_replicas, single_engine_records, run_with, gsm8k_data_dir):
    victim = "ray1"
    pid = ray_replicas.replica_pids()[victim]
    killed = threading.Event()
    start_count = ray_replicas.pool.completed
    killer = threading.Thread(target=_kill_when, args=(ray_replicas, pid, start_count + 4, killed), daemon=True)
    killer.start()
    start = time.perf_counter()
    result = run_with(ray_replicas, ["gsm8k"], limit=KILL_ITEMS, data_dir=str(gsm8k_data_dir),
                      max_tokens=MAX_TOKENS, cache=False)
    wall = time.perf_counter() - start
    assert killed.is_set()
    records = _records(result)
    expected = {k: v for k, v in _by_sample(single_engine_records).items() if int(k.split("-")[1]) < KILL_ITEMS}
    assert sorted(r["sample_id"] for r in records) == sorted(expected)
    assert len({r["sample_id"] for r in records}) == KILL_ITEMS  # each sample exactly once
    assert all(r["error"] is None for r in records)
    assert _by_sample(records) == expected
    run = json.loads((result.run_dir / "run.json").read_text())
    assert run["status"] == "complete"
    assert [(f["replica"], f["kind"]) for f in run["replica_failures"]] == [(victim, "lost")]
    assert str(pid) in run["replica_failures"][0]["error"]
    assert wall < 300  # bounded: the survivor finishes everything; no wait on the dead actor
