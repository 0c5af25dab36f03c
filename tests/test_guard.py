"""The per-sample guard (:mod:`evalsuite.pipeline.guard`): a scorer or record that fails is an
error on its own sample, never the end of a run.

Pure logic first (with a property test over every kind of exception), then the
real runner and CLI on a real OpenAI-compatible server on loopback
(``tests/fault_servers.py``), with a task whose scorers fail on chosen outputs.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_openai_backend import FaultServer

from evalsuite.pipeline.guard import (
    error_text,
    errors_by_stage,
    score_guarded,
    stage_of,
    writable_record,
)
from evalsuite.results.store import RunWriter, read_samples
from evalsuite.task import Scorer, Task, task
from evalsuite.types import Generation, Sample, SampleRecord, Score, Timings

BOUNDED = settings(max_examples=150, derandomize=True, deadline=timedelta(seconds=10), database=None,
                   suppress_health_check=[HealthCheck.too_slow])


class HostileStr(Exception):
    """An exception whose message itself raises."""

    def __str__(self) -> str:
        raise RuntimeError("no message for you")


EXCEPTIONS = [RecursionError, MemoryError, KeyError, ValueError, TypeError, ZeroDivisionError, AttributeError,
              IndexError, OSError, AssertionError, NotImplementedError, StopIteration, UnicodeError,
              OverflowError, LookupError, RuntimeError, HostileStr]


def _samples(n: int) -> list[Sample]:
    return [Sample(f"s{i}", f"prompt {i}", str(i)) for i in range(n)]


def _task(scorer_fns, score_batch=None) -> Task:
    scorers = tuple(Scorer(name, fn, primary=i == 0) for i, (name, fn) in enumerate(scorer_fns))
    return Task(name="t", version="1", samples=_samples(0), scorers=scorers, score_batch=score_batch)


def exact(output: str, sample: Sample) -> Score:
    return Score(float(output == sample.target), output)


# --- pure logic ----------------------------------------------------------------------


def test_error_text_is_one_bounded_line_with_stage_type_and_message():
    assert error_text("scoring", RecursionError("maximum recursion depth\nexceeded")) == \
        "scoring: RecursionError: maximum recursion depth exceeded"
    assert error_text("scoring", KeyError("x"), "strict-match") == "scoring (strict-match): KeyError: 'x'"
    assert error_text("record", HostileStr()) == "record: HostileStr: (no message)"
    assert error_text("scoring", ValueError()) == "scoring: ValueError"
    long = error_text("scoring", ValueError("x" * 2000))
    assert len(long) == 500 and long.endswith("...")


def test_stage_of_an_error_string():
    assert stage_of("scoring (exact): KeyError: 'x'") == "scoring"
    assert stage_of("record: RecursionError: maximum recursion depth exceeded") == "record"
    assert stage_of("HTTP 500: oops from http://h/v1 (gave up after 3 attempts)") == "request"
    assert stage_of("timeout: no complete response within 2 s from http://h/v1; scoring: KeyError") == "request"


@BOUNDED
@given(raises=st.lists(st.booleans(), min_size=1, max_size=8), exc=st.sampled_from(EXCEPTIONS),
       message=st.text(max_size=80), batch=st.booleans())
def test_a_scorer_raising_anything_is_recorded_on_its_sample_not_fatal(raises, exc, message, batch):
    """Property: whatever ``Exception`` a scorer raises, on whichever samples, every
    sample gets one result; those that raised carry ``scoring: <Type>`` and a failed
    score for every scorer that raised, the others their true scores and no error."""
    samples = _samples(len(raises))
    generations = [Generation(s.target) for s in samples]

    def fragile(output: str, sample: Sample) -> Score:
        if raises[int(sample.id[1:])]:
            raise exc(message) if exc is not HostileStr else exc()
        return exact(output, sample)

    if batch:
        def score_batch(batch_samples, gens):
            return [{"exact": fragile(g.text, s), "len": Score(1.0, len(g.text))} for s, g in zip(batch_samples, gens)]
        t = _task([("exact", fragile), ("len", lambda o, s: Score(1.0, len(o)))], score_batch)
    else:
        t = _task([("exact", fragile), ("len", lambda o, s: Score(1.0, len(o)))])
    results = score_guarded(t, samples, generations)
    assert len(results) == len(samples)
    for raised, (scores, error) in zip(raises, results):
        assert set(scores) == {"exact", "len"}
        if raised:
            assert error is not None and "\n" not in error and f"{exc.__name__}" in error
            assert stage_of(error) == "scoring"
            assert scores["exact"] == Score(0.0, None, scores["exact"].detail) and scores["exact"].detail
        else:
            assert error is None
            assert scores["exact"] == Score(1.0, scores["exact"].answer)
        if not batch or not raised:
            assert scores["len"].value == 1.0  # without score_batch a scorer fails alone


def test_a_raising_batch_is_scored_again_one_by_one():
    calls = []

    def score_batch(batch_samples, gens):
        calls.append(len(batch_samples))
        if any(g.text == "bad" for g in gens):
            raise RecursionError("deep")
        return [{"exact": exact(g.text, s)} for s, g in zip(batch_samples, gens)]

    t = _task([("exact", exact)], score_batch)
    samples = _samples(3)
    results = score_guarded(t, samples, [Generation("0"), Generation("bad"), Generation("9")])
    assert calls == [3, 1, 1, 1]
    assert [s["exact"].value for s, _ in results] == [1.0, 0.0, 0.0]
    assert [e for _, e in results] == [None, "scoring: RecursionError: deep", None]


@pytest.mark.parametrize("bad, message", [
    (None, "returned NoneType, not a Score"),
    (Score(float("nan")), "not a number in [0, 1]"),
    (Score(3.0), "not a number in [0, 1]"),
])
def test_a_score_that_is_not_a_score_is_an_error(bad, message):
    t = _task([("exact", lambda o, s: bad)])
    [(scores, error)] = score_guarded(t, _samples(1), [Generation("0")])
    assert scores["exact"].value == 0.0 and message in error


def test_a_batch_result_missing_a_scorer_is_an_error():
    t = _task([("exact", exact), ("other", exact)], score_batch=lambda ss, gs: [{"exact": Score(1.0, "0")}])
    [(scores, error)] = score_guarded(t, _samples(1), [Generation("0")])
    assert scores["exact"].value == 1.0 and scores["other"] == Score(0.0, None, error)
    assert error == "scoring (other): the task returned no score for it"


def _deep(levels: int) -> list:
    value: list = []
    for _ in range(levels):
        value = [value]
    return value


def _record(**changes) -> SampleRecord:
    base = SampleRecord(task="t", sample_id="s0", repeat=0, prompt="p", output="o", target="0",
                        scores={"exact": Score(1.0, "0")}, prompt_tokens=3, output_tokens=1, finish_reason="stop",
                        timings=Timings(e2e_s=0.5), error=None)
    return replace(base, **changes)


def test_a_record_that_cannot_be_written_is_replaced_and_says_why(tmp_path):
    deep = _record(sample_id="deep", scores={"exact": Score(1.0, _deep(5000))})
    surrogate = _record(sample_id="surrogate", output="lone \ud800 surrogate")
    with RunWriter(tmp_path / "run") as writer:
        written = writer.append([_record(), deep, surrogate])
    lines = read_samples(tmp_path / "run")
    assert [r["sample_id"] for r in lines] == ["s0", "deep", "surrogate"]
    assert lines[0]["error"] is None and lines[0]["verdicts"] == {"exact": 1.0}
    assert lines[1]["error"].startswith("record: RecursionError") and lines[1]["verdicts"] == {"exact": 0.0}
    assert (lines[1]["output"], lines[1]["timings"]["e2e_s"]) == ("o", 0.5)  # the rest is kept
    assert written[1].error == lines[1]["error"]  # what the run aggregates is what was written
    assert lines[2]["output"] == "lone \ud800 surrogate" and lines[2]["error"] is None


def test_writable_record_keeps_what_serializes():
    circular: dict = {}
    circular["self"] = circular
    r = writable_record(_record(target=circular, metadata={"ok": 1}), ValueError("Circular reference detected"))
    assert r.target == "<dict that cannot be written as JSON>" and r.metadata == {"ok": 1}
    assert r.error == "record: ValueError: Circular reference detected"


def test_errors_by_stage_counts_each_record_once():
    records = [_record(), _record(error="HTTP 500: x"), _record(error="scoring (exact): KeyError: 'a'"),
               _record(error="record: RecursionError: deep"), _record(error="HTTP 500: x; scoring: KeyError: 'a'")]
    assert errors_by_stage(records) == {"request": 2, "scoring": 1, "record": 1}


# --- the real runner and CLI on a real server ------------------------------------------

PROBE_SAMPLES = [Sample(f"probe-{i}", f"question number {i}", None) for i in range(6)]


def _probe_score(output: str, sample: Sample) -> Score:
    if "BOOM" in output:
        raise RecursionError("maximum recursion depth exceeded while decoding a JSON array")
    if "DEEP" in output:
        return Score(1.0, _deep(5000))  # an answer json.dumps cannot write
    return Score(float("answer is" in output), output[-3:])


@task("guard_probe")
def guard_probe(**_) -> Task:
    """A task for these tests: its first scorer raises on outputs holding BOOM, and
    returns an unwritable answer on outputs holding DEEP."""
    return Task(name="guard_probe", version="1", samples=PROBE_SAMPLES,
                scorers=(Scorer("probe", _probe_score, primary=True),
                         Scorer("length", lambda o, s: Score(float(len(o) > 0), len(o)))))


@pytest.fixture
def probe_server(tmp_path):
    (tmp_path / "boom.txt").write_text("BOOM")
    (tmp_path / "deep.txt").write_text("DEEP")
    with FaultServer("--model-id", "fake", "--reply", "question number 3", str(tmp_path / "boom.txt"),
                     "--reply", "question number 4", str(tmp_path / "deep.txt")) as server:
        yield server


def test_a_scorer_failure_is_recorded_counted_and_the_run_completes(probe_server, tmp_path):
    from evalsuite.backends.openai import OpenAIBackend
    from evalsuite.config import RunConfig
    from evalsuite.pipeline.runner import run

    backend = OpenAIBackend("fake", base_urls=(probe_server.url,))
    config = RunConfig(tasks=("guard_probe",), backend="openai", model="fake", batch_size=4, cache=False,
                       output_dir=tmp_path / "results", run_id="probe")
    result = run(config, progress=False, backend=backend)
    records = {r["sample_id"]: r for r in read_samples(result.run_dir)}
    # every sample written, the failing batch too (in completion order: compared as a set)
    assert sorted(records) == sorted(s.id for s in PROBE_SAMPLES) and len(read_samples(result.run_dir)) == 6
    boom, deep = records["probe-3"], records["probe-4"]
    assert boom["error"] == ("scoring (probe): RecursionError: maximum recursion depth exceeded while decoding "
                             "a JSON array")
    assert boom["verdicts"] == {"probe": 0.0, "length": 1.0}  # the other scorer still scored it
    assert deep["error"].startswith("record: RecursionError") and deep["verdicts"] == {"probe": 0.0, "length": 0.0}
    assert all(records[f"probe-{i}"]["error"] is None for i in (0, 1, 2, 5))
    stored = json.loads((result.run_dir / "run.json").read_text())
    assert stored["status"] == "complete"
    perf = stored["metrics"]["guard_probe"]["performance"]
    assert perf["errors"] == 2 and perf["errors_by_stage"] == {"request": 0, "scoring": 1, "record": 1}
    assert stored["metrics"]["guard_probe"]["scores"]["probe"]["n"] == 6
    assert stored["metrics"]["guard_probe"]["scores"]["probe"]["value"] == pytest.approx(4 / 6)

    # --resume of the run cut before its second batch scores the failing samples again: no crash.
    lines = (result.run_dir / "samples.jsonl").read_text().splitlines(keepends=True)
    (result.run_dir / "samples.jsonl").write_text("".join(lines[:3]))
    stored["status"] = "running"
    (result.run_dir / "run.json").write_text(json.dumps(stored))
    from evalsuite.results.resume import resume_config

    resumed = run(resume_config(result.run_dir, cache=False), progress=False, backend=backend)
    def untimed(rows):
        return {r["sample_id"]: {k: v for k, v in r.items() if k != "timings"} for r in rows}

    assert untimed(read_samples(resumed.run_dir)) == untimed(records.values())
    assert json.loads((result.run_dir / "run.json").read_text())["status"] == "complete"


def test_rescore_records_the_same_failures_once(probe_server, tmp_path):
    from evalsuite.backends.openai import OpenAIBackend
    from evalsuite.cli.commands.rescore import rescore
    from evalsuite.config import RunConfig
    from evalsuite.pipeline.runner import run

    backend = OpenAIBackend("fake", base_urls=(probe_server.url,))
    config = RunConfig(tasks=("guard_probe",), backend="openai", model="fake", cache=False,
                       output_dir=tmp_path / "results", run_id="probe")
    result = run(config, progress=False, backend=backend)
    before = {r["sample_id"]: r for r in read_samples(result.run_dir)}
    metrics, changed = rescore(result.run_dir)
    after = {r["sample_id"]: r for r in read_samples(result.run_dir)}
    assert changed == 0
    assert {k: r["error"] for k, r in after.items()} == {k: r["error"] for k, r in before.items()}
    assert metrics["guard_probe"]["performance"]["errors_by_stage"] == {"request": 0, "scoring": 1, "record": 1}


@pytest.mark.parametrize("limit, code", [("0.2", 1), ("0.5", 0)])
def test_max_error_rate_decides_the_exit_code_for_scoring_errors(probe_server, tmp_path, capsys, limit, code):
    from evalsuite.cli import main

    args = ["run", "--tasks", "guard_probe", "--backend", "openai", "--model", "fake", "--base-url", probe_server.url,
            "--output-dir", str(tmp_path / "results"), "--no-progress", "--no-cache", "--max-error-rate", limit]
    assert main(args) == code  # 2 of 6 samples failed: 0.33
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert ("error rate 0.333 (2/6) exceeds --max-error-rate 0.2" in err) == (code == 1)
    [run_dir] = list((tmp_path / "results").iterdir())
    assert len(read_samples(run_dir)) == 6
    assert json.loads((run_dir / "run.json").read_text())["status"] == "complete"


def test_every_scorer_of_every_task_is_given_a_score_on_a_failed_sample():
    """The aggregate needs every scorer's row on every record: the guard fills them."""
    t = _task([("a", lambda o, s: 1 / 0), ("b", exact)])
    [(scores, error)] = score_guarded(t, _samples(1), [Generation("0")])
    assert set(scores) == {"a", "b"} and scores["b"].value == 1.0
    assert error == "scoring (a): ZeroDivisionError: division by zero"
