"""Finishing an interrupted run: ``evalsuite run --resume RUN_DIR``.

A run writes ``run.json`` (its config) before generating and appends each sample
to ``samples.jsonl`` as soon as it is scored, so a run killed at any point leaves a
directory that says what it was asked to do and what it finished. Resuming:

1. reads the config back from ``run.json`` (:func:`load_run`);
2. repairs ``samples.jsonl`` (:func:`repair_samples`): a torn last line (a kill
   during a write) is dropped, duplicated ``(task, sample_id, repeat)`` records
   keep their first copy, and the file is rewritten atomically if anything changed;
3. generates only the requests that have no record (the response cache usually
   answers the ones that were generated but not yet written), appends them, and
   writes the final ``run.json`` with aggregates over kept and new records.

``EVALSUITE_TEST_KILL_AT=<stage>`` makes a run SIGKILL itself at a named point
(:data:`KILL_STAGES`): the fault-injection tests use it to stop a real run where
they want to.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from evalsuite.config import EngineConfig, RunConfig
from evalsuite.results.store import RunWriter, parse_record
from evalsuite.types import SampleRecord, Score, Timings

KILL_ENV = "EVALSUITE_TEST_KILL_AT"
KILL_STAGES = (
    "started",        # run.json written, nothing generated yet
    "scoring",        # generations came back from the backend, before the first is scored and written
    "batch_written",  # a scored micro-batch (one sample or more) was appended to samples.jsonl
    "final_write",    # every sample written, before the final run.json
)

RecordKey = tuple[str, str, int]


def kill_point(stage: str) -> None:
    """SIGKILLs this process when ``$EVALSUITE_TEST_KILL_AT`` names ``stage`` (a test hook)."""
    if os.environ.get(KILL_ENV) == stage:
        os.kill(os.getpid(), signal.SIGKILL)


def load_run(run_dir: Path) -> dict[str, Any]:
    """``run.json`` of the run directory given to ``--resume`` (:func:`evalsuite.results.store.read_run`).

    Raises UsageError when the directory, its ``run.json`` or its config is missing
    or unreadable.
    """
    from evalsuite.results.store import read_run

    return read_run(run_dir, "--resume takes a run directory",
                    "not a run.json that evalsuite wrote; start a new run instead of --resume")


def config_from_dict(d: Mapping[str, Any], source: str = "run.json") -> RunConfig:
    """The :class:`RunConfig` that ``RunConfig.to_dict`` wrote (fields it does not
    know are ignored, so older run.json files still load). Raises UsageError
    naming ``source`` and the key when a value has the wrong type."""
    from evalsuite.schemas import RunSettings, check

    settings = check(RunSettings, d, f"{source}: config",
                     "not a run.json that evalsuite wrote; start a new run instead of --resume")
    values = settings.model_dump()
    values["engine"] = EngineConfig(**values["engine"])
    values["tasks"] = tuple(values["tasks"])
    values["output_dir"] = Path(values["output_dir"])
    values["backend_args"] = {k: tuple(v) if k == "base_urls" else v
                              for k, v in values["backend_args"].items() if v is not None}
    return RunConfig(**values)


def resume_config(run_dir: Path, cache: bool = True) -> RunConfig:
    """The config to finish ``run_dir`` with: the stored one, pointed at ``run_dir``."""
    from dataclasses import replace

    stored = load_run(run_dir)
    return replace(config_from_dict(stored["config"], str(Path(run_dir) / "run.json")),
                   resume=str(run_dir), cache=cache)


def record_key(record: Mapping[str, Any]) -> RecordKey:
    return (record["task"], str(record["sample_id"]), int(record.get("repeat", 0)))


def repair_samples(run_dir: Path) -> list[dict[str, Any]]:
    """The complete, distinct records of ``samples.jsonl``, repairing the file.

    A line counts only if it ends in a newline and parses as a record
    (:func:`evalsuite.results.store.parse_record`; a kill during a write leaves a torn
    last line); a line that does not is dropped, and its sample generated again.
    Of records sharing ``(task, sample_id, repeat)`` the first is kept. When anything was dropped the file is
    rewritten (temporary file, then rename), so appends continue on a clean file.
    A missing file means no finished samples.
    """
    path = Path(run_dir) / "samples.jsonl"
    if not path.exists():
        return []
    raw = path.read_bytes()
    records: list[dict[str, Any]] = []
    seen: set[RecordKey] = set()
    kept_lines: list[bytes] = []
    lines = raw.split(b"\n")
    # The piece after the last newline is empty for a clean file, a torn line otherwise.
    for line in lines[:-1]:
        record = parse_record(line)
        if record is None:
            continue
        key = record_key(record)
        if key in seen:
            continue
        seen.add(key)
        records.append(record)
        kept_lines.append(line)
    clean = b"".join(line + b"\n" for line in kept_lines)
    if clean != raw:
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as f:
            f.write(clean)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    return records


def record_from_dict(d: Mapping[str, Any]) -> SampleRecord:
    """A :class:`SampleRecord` back from its ``samples.jsonl`` line."""
    details = d.get("details") or {}
    answers = d.get("answers") or {}
    opinions = d.get("second_opinions") or {}
    scores = {name: Score(value, answers.get(name), details.get(name), opinions.get(name))
              for name, value in (d.get("verdicts") or {}).items()}
    return SampleRecord(
        task=d["task"], sample_id=d["sample_id"], repeat=d.get("repeat", 0), prompt=d.get("prompt", ""),
        output=d.get("output", ""), target=d.get("target"), scores=scores,
        prompt_tokens=d.get("prompt_tokens"), output_tokens=d.get("output_tokens"),
        finish_reason=d.get("finish_reason"),
        timings=timings_from_dict(d.get("timings")), error=d.get("error"),
        metadata=d.get("metadata") or {},
    )


def timings_from_dict(t: Mapping[str, Any] | None) -> Timings:
    """:class:`Timings` back from ``Timings.to_dict()`` output (None: nothing measured)."""
    t = t or {}
    itl = t.get("itl_s")
    return Timings(e2e_s=t.get("e2e_s"), ttft_s=t.get("ttft_s"), itl_s=tuple(itl) if itl is not None else None)


class AppendWriter(RunWriter):
    """A :class:`RunWriter` on an existing run directory, appending to its samples."""

    def __init__(self, run_dir: Path) -> None:
        # Not super().__init__: that creates the directory, which must exist here.
        self.run_dir = Path(run_dir)
        self._samples = open(self.run_dir / "samples.jsonl", "a", encoding="utf-8")  # noqa: SIM115 (closed by close())
