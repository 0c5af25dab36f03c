"""The pull-based replica pool with scripted replicas (pure logic: no engine, no Ray)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from evalsuite.backends.pool import (
    Chunk,
    ReplicaLost,
    ReplicaPool,
    ReplicaStuck,
    chunk_size_for,
    make_chunks,
)
from evalsuite.types import Generation, GenerationRequest, SamplingParams


class Scripted:
    """A replica answering ``text = "<name>:<sample_id>"`` after ``delay_s`` per request;
    it dies on its ``die_on``-th chunk, or hangs on its ``hang_on``-th chunk."""

    def __init__(self, name, delay_s=0.0, die_on=None, hang_on=None):
        self.name, self.delay_s, self.die_on, self.hang_on = name, delay_s, die_on, hang_on
        self.chunks: list[list[str]] = []
        self.stopped = False

    def run(self, requests, timeout_s):
        self.chunks.append([r.sample_id for r in requests])
        if self.die_on == len(self.chunks):
            raise ReplicaLost(f"{self.name} died")
        if self.hang_on == len(self.chunks):
            time.sleep(timeout_s)
            raise ReplicaStuck(f"{self.name} gave no answer in {timeout_s} s")
        time.sleep(self.delay_s * len(requests))
        return [Generation(f"{self.name}:{r.sample_id}", "stop") for r in requests]

    def stop(self):
        self.stopped = True


def requests(n):
    return [GenerationRequest("t", f"s{i}", "p", SamplingParams()) for i in range(n)]


def ids(generations):
    return [g.text.split(":")[1] for g in generations]


def test_chunk_sizes():
    assert chunk_size_for(20, 2) == 3  # a fair share of 10, a quarter of it rounded up
    assert chunk_size_for(1, 4) == 1
    assert chunk_size_for(10_000, 2) == 32
    assert chunk_size_for(20, 2, chunk_size=5) == 5
    assert make_chunks(5, 2) == [Chunk((0, 1)), Chunk((2, 3)), Chunk((4,))]


def test_results_in_input_order_and_each_once():
    fast, slow = Scripted("fast", 0.001), Scripted("slow", 0.01)
    out = ReplicaPool([fast, slow], chunk_size=2).generate(requests(30))
    assert ids(out) == [f"s{i}" for i in range(30)]
    answered = [s for r in (fast, slow) for c in r.chunks for s in c]
    assert set(answered) == {f"s{i}" for i in range(30)}
    assert len(answered) <= 30 + 2  # at most one backup copy of the last chunk


def test_a_slow_replica_takes_fewer_chunks():
    fast, slow = Scripted("fast", 0.002), Scripted("slow", 0.02)
    pool = ReplicaPool([fast, slow], chunk_size=2)
    start = time.perf_counter()
    pool.generate(requests(40))
    wall = time.perf_counter() - start
    alone = 40 * 0.002
    assert len(fast.chunks) > 3 * len(slow.chunks)
    # dealt work (i mod 2) would take 20 * 0.02 = 0.4 s; pulled work ends about one slow chunk after the fast one
    assert wall < alone + 2 * 0.02 * 2 + 0.15


def test_a_dead_replica_loses_nothing():
    good, dying = Scripted("good", 0.001), Scripted("dying", 0.001, die_on=2)
    pool = ReplicaPool([good, dying], chunk_size=3)
    out = pool.generate(requests(20))
    assert ids(out) == [f"s{i}" for i in range(20)]
    assert all(g.error is None for g in out)
    assert [(f["replica"], f["kind"], f["requeued_requests"]) for f in pool.failures] == [("dying", "lost", 3)]
    assert dying.stopped and pool.live == [good]
    # the dead replica's chunk was answered by the good one
    assert set(dying.chunks[1]) <= {s for c in good.chunks for s in c}


def test_a_stuck_replica_is_abandoned_within_the_timeout():
    good, stuck = Scripted("good", 0.001), Scripted("stuck", hang_on=1)
    pool = ReplicaPool([good, stuck], chunk_size=2, replica_timeout_s=0.3, backups=False)
    start = time.perf_counter()
    out = pool.generate(requests(10))
    assert time.perf_counter() - start < 2.0
    assert all(g.text.startswith("good:") for g in out)
    assert [f["kind"] for f in pool.failures] == ["stuck"]
    # the next call goes to the live replica only
    assert all(g.text.startswith("good:") for g in pool.generate(requests(4)))


def test_no_replica_left_fails_the_requests_as_data():
    pool = ReplicaPool([Scripted("a", die_on=1), Scripted("b", die_on=1)], chunk_size=2)
    out = pool.generate(requests(6))
    assert len(out) == 6
    assert all(g.error and g.finish_reason == "error" for g in out)
    assert len(pool.failures) == 2


def test_a_chunk_is_handed_out_a_bounded_number_of_times():
    replicas = [Scripted(f"r{i}", die_on=1) for i in range(5)]
    out = ReplicaPool(replicas, chunk_size=4, max_attempts=2).generate(requests(4))
    assert all("gave up after 2 replicas failed" in g.error for g in out)
    assert sum(bool(r.chunks) for r in replicas) == 2


def test_stream_yields_each_index_once_as_they_finish():
    fast, slow = Scripted("fast", 0.001), Scripted("slow", 0.05)
    pairs = list(ReplicaPool([fast, slow], chunk_size=1).stream(requests(6)))
    assert sorted(i for i, _ in pairs) == list(range(6))
    assert pairs[0][1].text.startswith("fast:")  # the first answer is not the slow replica's


def test_a_requeued_chunk_reaches_a_replica_that_had_run_out_of_work():
    # "late" dies on its first chunk after "early" has answered everything else
    early = Scripted("early")
    late = Scripted("late", die_on=1)
    original = late.run

    def slow_death(reqs, timeout_s):
        time.sleep(0.2)
        return original(reqs, timeout_s)

    late.run = slow_death
    out = ReplicaPool([early, late], chunk_size=1).generate(requests(3))
    assert all(g.text.startswith("early:") for g in out)


def test_importing_evalsuite_does_not_import_ray():
    code = ("import sys, evalsuite, evalsuite.cli, evalsuite.pipeline.runner, evalsuite.backends.vllm, "
            "evalsuite.backends.vllm_dp, evalsuite.backends.pool; print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_vllm_and_vllm_dp_do_not_import_each_other():
    import ast
    from pathlib import Path

    import evalsuite.backends.vllm_dp as dp

    imported = {node.module for node in ast.walk(ast.parse(Path(dp.__file__).read_text()))
                if isinstance(node, ast.ImportFrom)}
    assert "evalsuite.backends.vllm" not in imported


@pytest.mark.parametrize("flag,value,message", [
    ("--replica-timeout", "0", "--replica-timeout must be > 0 seconds"),
    ("--data-parallel-size", "0", "--data-parallel-size must be >= 1"),
])
def test_bad_replica_flags_are_one_line_errors(flag, value, message):
    out = subprocess.run([sys.executable, "-m", "evalsuite.cli", "run", "--tasks", "gsm8k", flag, value],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr


def test_ray_address_on_another_backend_is_refused(gsm8k_data_dir):
    out = subprocess.run([sys.executable, "-m", "evalsuite.cli", "run", "--tasks", "gsm8k", "--backend", "openai",
                          "--data-dir", str(gsm8k_data_dir), "--base-url", "http://127.0.0.1:9",
                          "--ray-address", "auto"],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 2
    assert "--ray-address does not apply to the openai backend" in out.stderr


def test_a_free_replica_backs_up_the_chunk_a_straggler_holds():
    fast, straggler = Scripted("fast", 0.001), Scripted("straggler", 1.0)
    pool = ReplicaPool([fast, straggler], chunk_size=4)
    start = time.perf_counter()
    out = pool.generate(requests(8))
    assert time.perf_counter() - start < 1.0  # the straggler's 4 s chunk was not waited for
    assert all(g.text.startswith("fast:") for g in out)
    assert len(straggler.chunks) == 1 and pool.failures == []
    pool.close()


def test_shutdown_ends_the_pool_threads():
    pool = ReplicaPool([Scripted("a"), Scripted("b")], chunk_size=1)
    pool.generate(requests(4))
    assert pool.shutdown(wait_s=5) == []
    assert not any(t.is_alive() for t in pool._threads)


class PooledScripted:
    """A backend over scripted replicas (one dies on its second chunk), as the runner sees it."""

    name = "scripted"

    def __init__(self):
        self.pool = ReplicaPool([Scripted("r0", 0.001), Scripted("r1", 0.001, die_on=2)], chunk_size=2)

    def generate(self, reqs):
        return self.pool.generate(reqs)

    @property
    def replica_failures(self):
        return list(self.pool.failures)

    def describe(self):
        return {"backend": self.name, "engine": {}}

    def close(self):
        self.pool.close()


def test_the_runner_records_replica_losses_in_run_json(run_with, gsm8k_data_dir):
    import json

    backend = PooledScripted()
    result = run_with(backend, ["gsm8k"], limit=12, data_dir=str(gsm8k_data_dir), cache=False)
    backend.close()
    records = [json.loads(line) for line in (result.run_dir / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 12 and len({r["sample_id"] for r in records}) == 12
    assert all(r["error"] is None and r["output"].split(":")[1] == r["sample_id"] for r in records)
    run = json.loads((result.run_dir / "run.json").read_text())
    assert [(f["replica"], f["kind"], f["requeued_requests"]) for f in run["replica_failures"]] == [("r1", "lost", 2)]


def test_a_suite_takes_the_replica_flags(tmp_path):
    from evalsuite.pipeline.suite import read_suite

    path = tmp_path / "suite.yaml"
    path.write_text("tasks: [gsm8k]\nbackend_args: {data_parallel_size: 2}\n")
    suite = read_suite(path, {"ray_address": "auto", "replica_timeout": 30.0, "data_parallel_size": None})
    assert dict(suite.configs[0].backend_args) == {"data_parallel_size": 2, "ray_address": "auto",
                                                   "replica_timeout": 30.0}


class SleepyBackend:
    """A backend for worker processes: answers ``"<pid>:<sample_id>"`` after 0.05 s a request."""

    def __init__(self, model, **kwargs):
        self.kwargs = kwargs

    def describe(self):
        return {"backend": "sleepy", "engine": {"tensor_parallel_size": self.kwargs["tensor_parallel_size"]},
                "kv_cache": None}

    def generate(self, reqs):
        time.sleep(0.05 * len(reqs))
        return [Generation(f"{os.getpid()}:{r.sample_id}", "stop") for r in reqs]

    def close(self):
        pass


def test_data_parallel_workers_pull_and_survive_a_killed_process():
    import signal

    from evalsuite.backends.vllm_dp import DataParallelVLLM

    dp = DataParallelVLLM(SleepyBackend, "unused", 2, on_cpu=True, chunk_size=2)
    try:
        victim = dp._replicas[1].process.pid

        def kill_after_four():
            while dp.pool.completed < 4:
                time.sleep(0.01)
            os.kill(victim, signal.SIGKILL)

        threading.Thread(target=kill_after_four, daemon=True).start()
        out = dp.generate(requests(30))
        assert ids(out) == [f"s{i}" for i in range(30)] and all(g.error is None for g in out)
        assert [(f["replica"], f["kind"]) for f in dp.replica_failures] == [("dp1", "lost")]
        assert f"pid {victim}" in dp.replica_failures[0]["error"]
        assert dp.describe()["replicas"] == [{"VLLM_CPU_OMP_THREADS_BIND": "0"}, {"VLLM_CPU_OMP_THREADS_BIND": "1"}]
    finally:
        dp.close()
    assert not dp._replicas
