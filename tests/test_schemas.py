"""Validation at the edge (:mod:`evalsuite.schemas`) and what the readers that use it
do with bad files: one line naming the file, the line or key and the fix."""

from __future__ import annotations

import json

import pytest

from evalsuite.data import numbered_jsonl
from evalsuite.errors import UsageError
from evalsuite.results.cache import CachedBackend, ResponseCache, open_cache
from evalsuite.results.resume import repair_samples
from evalsuite.schemas import EngineSettings, ModelList, RunSettings, TaskEntry, check
from evalsuite.types import Generation, GenerationRequest, SamplingParams


@pytest.mark.parametrize("model, data, at, message", [
    (TaskEntry, {"name": "g", "limit": "abc"}, "tasks[0]", "f.yaml: tasks[0].limit: should be a valid integer, got 'abc' (fix)"),
    (TaskEntry, {"name": "g", "limit": True}, "", "f.yaml: limit: should be a valid integer, got True (fix)"),
    (TaskEntry, {"name": "g", "lmit": 1}, "tasks[2]", "f.yaml: unknown key 'tasks[2].lmit' (fix)"),
    (EngineSettings, {"gpu_memory_utilization": 1.5}, "engine",
     "f.yaml: engine.gpu_memory_utilization: should be less than or equal to 1, got 1.5 (fix)"),
    (RunSettings, {}, "config", "f.yaml: missing key 'config.tasks' (fix)"),
    (ModelList, {"data": [{"id": 1}]}, "", "f.yaml: data[0].id: should be a valid string, got 1 (fix)"),
    (ModelList, [], "", "f.yaml: should be a valid mapping (a JSON object), got [] (fix)"),
])
def test_errors_are_one_line_with_file_key_value_and_fix(model, data, at, message):
    with pytest.raises(UsageError) as err:
        check(model, data, "f.yaml", "fix", at=at)
    assert str(err.value) == message


def test_config_files_are_strict_and_written_files_ignore_unknown_keys():
    assert TaskEntry.model_validate({"name": "g", "temperature": 0}).temperature == 0.0  # an int is a number
    for bad in ({"limit": "5"}, {"allow_unsandboxed": 1}, {"limit": 2.0}):
        with pytest.raises(ValueError):
            TaskEntry.model_validate({"name": "g", **bad})
    assert RunSettings.model_validate({"tasks": ["g"], "added_later": 1}).tasks == ["g"]


def test_numbered_jsonl_names_the_line_and_flag(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"a": 1}\n\n{"a": 2}\n')
    assert list(numbered_jsonl(path)) == [(1, {"a": 1}), (3, {"a": 2})]  # blank lines skipped, numbers kept
    for content, message in [(b'{"a": 1}\n"text"\n', "d.jsonl:2: a record must be a JSON object, got a string"),
                             (b"\xff\n", "d.jsonl:1: not UTF-8 text (byte 0xff at column 1)"),
                             (b'{"a": tru}\n', "d.jsonl:1: not valid JSON (Expecting value at column 7)")]:
        path.write_bytes(content)
        with pytest.raises(UsageError, match=rf"{message.replace('(', '.').replace(')', '.')}; fix the file, or pass another with --x"):
            list(numbered_jsonl(path, "--x"))
    with pytest.raises(UsageError, match="cannot read .*nowhere.jsonl"):
        list(numbered_jsonl(tmp_path / "nowhere.jsonl"))


def test_resume_drops_lines_that_are_not_records_and_keeps_the_rest(tmp_path):
    good = {"task": "t", "sample_id": "s0", "repeat": 0, "verdicts": {"m": 1.0}, "output": "x"}
    lines = [good, {**good, "sample_id": "s1", "verdicts": [1]}, {**good, "sample_id": 2},
             {**good, "sample_id": "s3", "timings": "fast"}, {**good, "sample_id": "s4"}]
    (tmp_path / "samples.jsonl").write_text("".join(json.dumps(d) + "\n" for d in lines))
    kept = repair_samples(tmp_path)
    assert [d["sample_id"] for d in kept] == ["s0", "s4"]
    assert (tmp_path / "samples.jsonl").read_text().count("\n") == 2


def _request(i: int) -> GenerationRequest:
    return GenerationRequest("t", f"s{i}", f"prompt {i}", SamplingParams())


class Echo:
    name = "echo"

    def generate(self, requests):
        return [Generation(f"answer to {r.prompt}", "stop") for r in requests]


def test_a_cache_that_fails_during_a_run_is_dropped_with_a_warning(tmp_path):
    cache = ResponseCache(tmp_path / "c.sqlite")
    warnings = []
    cached = CachedBackend(Echo, "id", cache, "echo", warn=warnings.append)
    assert [g.text for g in cached.generate([_request(0)])] == ["answer to prompt 0"]
    cache._db.close()  # the file goes away under the run
    assert [g.text for g in cached.generate([_request(0), _request(1)])] == ["answer to prompt 0", "answer to prompt 1"]
    assert cached.cache is None and len(warnings) == 1 and "going on without it" in warnings[0]


def test_open_cache_moves_a_damaged_file_aside(tmp_path):
    path = tmp_path / "c.sqlite"
    path.write_bytes(b"garbage" * 100)
    warnings = []
    cache = open_cache(path, warn=warnings.append)
    assert len(cache) == 0 and "was damaged" in warnings[0]
    assert [p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name and not p.name.endswith(("wal", "shm"))]
    (tmp_path / "d").mkdir()
    with pytest.raises(UsageError, match="is a directory; pass --no-cache"):
        open_cache(tmp_path / "d")
