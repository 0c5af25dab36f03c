"""The streaming request queue (evalsuite.backends.queue) and the scoring stage's
worker (evalsuite.pipeline.stages): pure logic on literal inputs. The real engine's stream is
tested in test_engine_stream.py."""

import json
import threading
import time

import pytest

from evalsuite.backends.queue import RequestQueue, batched, pull, stream
from evalsuite.pipeline.stages import BatchingWorker
from evalsuite.types import Generation, GenerationRequest, SamplingParams


def req(i: int) -> GenerationRequest:
    return GenerationRequest(task="t", sample_id=f"s{i}", prompt=f"p{i}", params=SamplingParams())


def echo(requests):
    return [Generation(r.prompt.upper()) for r in requests]


def test_batched_yields_every_index_once_in_batches():
    calls = []

    def generate(batch):
        calls.append([r.sample_id for r in batch])
        return echo(batch)

    out = list(batched(generate, (req(i) for i in range(5)), 2))
    assert calls == [["s0", "s1"], ["s2", "s3"], ["s4"]]
    assert [(i, g.text) for i, g in out] == [(0, "P0"), (1, "P1"), (2, "P2"), (3, "P3"), (4, "P4")]


def test_batched_rejects_a_backend_that_drops_generations():
    with pytest.raises(RuntimeError, match="returned 1 generations for 2 requests"):
        list(batched(lambda batch: echo(batch)[:1], [req(0), req(1)], 2, "broken"))


def test_stream_prefers_the_backends_own_stream_and_adapts_the_others():
    class Streaming:
        def stream(self, requests):
            rs = list(requests)
            return iter([(i, Generation(r.sample_id)) for i, r in reversed(list(enumerate(rs)))])

    class Batch:
        name = "batch"

        def __init__(self):
            self.sizes: list[int] = []

        def generate(self, requests):
            self.sizes.append(len(requests))
            return echo(requests)

    assert [i for i, _ in stream(Streaming(), [req(0), req(1), req(2)])] == [2, 1, 0]
    batch = Batch()
    assert len(list(stream(batch, [req(i) for i in range(300)]))) == 300
    assert batch.sizes == [256, 44]  # DEFAULT_BATCH_SIZE when the run gives none
    batch.sizes.clear()
    list(stream(batch, [req(i) for i in range(5)], batch_size=2))
    assert batch.sizes == [2, 2, 1]


def test_request_queue_is_filled_by_a_producer_while_it_is_read():
    q = RequestQueue([req(0)])

    def produce():
        for i in range(1, 4):
            time.sleep(0.01)
            q.put(req(i))
        q.close()

    threading.Thread(target=produce).start()
    assert [r.sample_id for r in q] == ["s0", "s1", "s2", "s3"]
    assert list(q) == []  # the end stays visible
    with pytest.raises(RuntimeError, match="closed"):
        q.put(req(9))


def test_pull_takes_what_is_waiting_without_blocking():
    q = RequestQueue([req(0), req(1), req(2)])
    got, done = pull(q, 2, blocking=False)
    assert [r.sample_id for r in got] == ["s0", "s1"] and not done
    got, done = pull(q, 5, blocking=False)
    assert [r.sample_id for r in got] == ["s2"] and not done  # nothing more yet, not closed
    q.close()
    assert pull(q, 5, blocking=False) == ([], True)
    it = iter([req(0), req(1), req(2)])
    assert [r.sample_id for r in pull(it, 2, False)[0]] == ["s0", "s1"]
    got, done = pull(it, 2, False)
    assert [r.sample_id for r in got] == ["s2"] and done


def test_the_worker_handles_every_item_in_micro_batches_in_order():
    seen: list[list[int]] = []
    gate = threading.Event()

    def handle(batch):
        gate.wait(5)
        seen.append(list(batch))

    worker = BatchingWorker(handle, max_batch=3)
    for i in range(7):
        worker.put(i)
    gate.set()
    worker.close()
    assert [i for batch in seen for i in batch] == list(range(7))
    assert all(len(b) <= 3 for b in seen) and len(seen) >= 3  # what waited was taken together


def test_a_failing_stage_raises_in_the_callers_thread():
    def handle(batch):
        raise OSError("disk full")

    worker = BatchingWorker(handle)
    worker.put(1)
    with pytest.raises(OSError, match="disk full"):
        for _ in range(200):  # the error reaches put() or close()
            worker.put(2)
            time.sleep(0.01)
        worker.close()


def test_abandon_drops_what_is_still_waiting():
    handled = []
    gate = threading.Event()

    def handle(batch):
        gate.wait(5)
        handled.extend(batch)

    worker = BatchingWorker(handle, max_batch=1)
    worker.put(0)
    time.sleep(0.05)  # the worker holds item 0
    for i in range(1, 5):
        worker.put(i)
    gate.set()
    worker.abandon()
    assert handled[0] == 0 and len(handled) < 5


class ReversedStream:
    """A scripted streaming backend: answers every request with its sample id, the
    last request first (completion order differs from input order)."""

    name = "reversed"

    def stream(self, requests):
        for i, r in reversed(list(enumerate(requests))):
            yield i, Generation(f"The answer is {r.sample_id}.", "stop", output_tokens=3)

    def describe(self):
        return {"backend": self.name}

    def close(self):
        pass


def test_the_runner_writes_in_completion_order_and_aggregates_in_request_order(tmp_path, gsm8k_data_dir,
                                                                              embedded_model):
    from evalsuite.config import RunConfig
    from evalsuite.pipeline.runner import run

    config = RunConfig(tasks=("gsm8k",), limit=3, data_dir=str(gsm8k_data_dir), cache=False,
                       output_dir=tmp_path, run_id="rev", model=embedded_model)
    result = run(config, progress=False, backend=ReversedStream())
    lines = [json.loads(x) for x in (result.run_dir / "samples.jsonl").read_text().splitlines()]
    assert [r["sample_id"] for r in lines] == ["test-2", "test-1", "test-0"]
    assert lines[0]["output"] == "The answer is test-2."
    metrics = json.loads((result.run_dir / "run.json").read_text())["metrics"]["gsm8k"]
    assert metrics["scores"]["strict-match"]["n"] == 3 and metrics["performance"]["requests"] == 3


class RecordingStream(ReversedStream):
    """ReversedStream that records every call of ``stream`` (the requests' identities)."""

    def __init__(self):
        self.calls: list[list[tuple[str, str]]] = []

    def stream(self, requests):
        requests = list(requests)
        self.calls.append([(r.task, r.sample_id) for r in requests])
        return super().stream(requests)


def test_a_suites_entries_on_one_engine_share_one_queue(tmp_path, gsm8k_data_dir, embedded_model):
    from argparse import Namespace

    from evalsuite.pipeline.suite import run_suite
    from evalsuite.results.store import read_samples

    path = tmp_path / "suite.yaml"
    path.write_text(f"name: two\nmodel: {embedded_model}\ntasks:\n"
                    "  - {name: gsm8k, limit: 3}\n  - {name: gsm8k, id: gsm8k-again, limit: 2, temperature: 1.0}\n")
    args = Namespace(model=None, data_dir=str(gsm8k_data_dir), limit=None, run_id="s", output_dir=tmp_path / "out",
                     no_progress=True, no_cache=True, max_error_rate=None)
    backend = RecordingStream()
    assert run_suite(path, args, backend=backend) == 0
    # one stream for both entries: all five requests at once, nothing waits for a run to finish
    assert backend.calls == [[("gsm8k", f"test-{i}") for i in range(3)] + [("gsm8k", "test-0"), ("gsm8k", "test-1")]]
    assert [r["sample_id"] for r in read_samples(tmp_path / "out" / "s" / "gsm8k")] == ["test-2", "test-1", "test-0"]
    assert len(read_samples(tmp_path / "out" / "s" / "gsm8k-again")) == 2
