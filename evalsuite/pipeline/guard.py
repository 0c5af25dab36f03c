"""The per-sample guard: no model output can stop a run.

After generation, every per-sample step (parse and extract the answer, score it,
turn the record into its ``samples.jsonl`` line) runs under this guard. Any
exception there (``RecursionError`` and ``MemoryError`` included; not
``KeyboardInterrupt`` or ``SystemExit``) becomes data on that sample's record:

- ``error``: ``"<stage>: <ExceptionType>: <message>"`` on one line (stage
  ``scoring`` or ``record``), after the request's own error if it had one;
- a scorer that failed gives ``Score(0.0, None, <error>)``: a wrong answer and an
  extraction failure, so every metric row keeps its ``n``.

The record is written like any other, so ``--resume`` keeps it and never scores
that output again; the errors are counted in ``run.json``
(``performance.errors``, split by :func:`errors_by_stage`) and
``--max-error-rate`` decides the exit code. A failed request is data in the same
way (the backends set ``Generation.error``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from evalsuite.results.encoding import _json_default, record_line
from evalsuite.types import Generation, Sample, SampleRecord, Score

if TYPE_CHECKING:
    from evalsuite.task import Task

STAGES = ("scoring", "record")
MAX_ERROR_CHARS = 500


def error_text(stage: str, exc: BaseException, scorer: str | None = None) -> str:
    """``"<stage>: <ExceptionType>: <message>"`` (``"<stage> (<scorer>): ..."`` for one
    scorer) on one line, at most :data:`MAX_ERROR_CHARS`."""
    try:
        message = " ".join(str(exc).split())
    except Exception:  # noqa: BLE001 -- a hostile __str__ must not escape the guard either
        message = "(no message)"
    head = f"{stage} ({scorer})" if scorer else stage
    text = f"{head}: {type(exc).__name__}: {message}" if message else f"{head}: {type(exc).__name__}"
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def joined(first: str | None, second: str | None) -> str | None:
    """Two optional error strings as one (``"first; second"``)."""
    return second if first is None else first if second is None else f"{first}; {second}"


def _failed(error: str) -> Score:
    return Score(0.0, None, error)


def _checked(name: str, score: Any) -> Score:
    """``score`` if it is a :class:`Score` with a finite value in [0, 1]; else TypeError/ValueError."""
    if not isinstance(score, Score):
        raise TypeError(f"scorer {name!r} returned {type(score).__name__}, not a Score")
    value = score.value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"scorer {name!r} returned the value {value!r}, not a number in [0, 1]")
    return score


def _complete(task: Task, scores: Any) -> tuple[dict[str, Score], str | None]:
    """``scores`` (one sample's ``{name: Score}``) checked, with every scorer of the task present."""
    if not isinstance(scores, Mapping):
        raise TypeError(f"the task returned {type(scores).__name__}, not a mapping of scorer names to scores")
    out: dict[str, Score] = {}
    error = None
    for name, score in scores.items():
        try:
            out[str(name)] = _checked(str(name), score)
        except (TypeError, ValueError) as exc:
            problem = error_text("scoring", exc, str(name))
            error = joined(error, problem)
            out[str(name)] = _failed(problem)
    for scorer in task.scorers:
        if scorer.name not in out:
            missing = f"scoring ({scorer.name}): the task returned no score for it"
            error = joined(error, missing)
            out[scorer.name] = _failed(missing)
    return out, error


def score_one(task: Task, sample: Sample, generation: Generation) -> tuple[dict[str, Score], str | None]:
    """Every scorer's verdict on one generation, and the guard's error (None if none).

    Without ``score_batch`` each scorer runs on its own, so one that raises costs
    only its own row; with ``score_batch`` the sample is scored alone.
    """
    if task.score_batch is None:
        out: dict[str, Score] = {}
        error = None
        for scorer in task.scorers:
            try:
                out[scorer.name] = _checked(scorer.name, scorer.score(generation.text, sample))
            except Exception as exc:  # noqa: BLE001 -- the guard's purpose: any failure is data
                problem = error_text("scoring", exc, scorer.name)
                out[scorer.name] = _failed(problem)
                error = joined(error, problem)
        return out, error
    try:
        batch = task.score([sample], [generation])
        if len(batch) != 1:
            raise ValueError(f"score_batch returned {len(batch)} results for 1 generation")
        return _complete(task, batch[0])
    except Exception as exc:  # noqa: BLE001 -- the guard's purpose: any failure is data
        problem = error_text("scoring", exc)
        return {s.name: _failed(problem) for s in task.scorers}, problem


def score_guarded(task: Task, samples: Sequence[Sample],
                  generations: Sequence[Generation]) -> list[tuple[dict[str, Score], str | None]]:
    """``(scores, error)`` for each generation, in order; never raises an ``Exception``.

    The batch is scored at once (``task.score``); when that raises or returns
    anything but one checked result per generation, each sample is scored alone
    (:func:`score_one`), so only the samples that fail carry an error.
    """
    try:
        batch = task.score(samples, generations)
        if len(batch) == len(generations):
            checked = [_complete(task, scores) for scores in batch]
            if all(error is None for _, error in checked):
                return checked
    except Exception:  # noqa: BLE001, S110 -- scored again one by one, which names the failing samples
        pass
    return [score_one(task, s, g) for s, g in zip(samples, generations)]


def _safe(value: Any) -> Any:
    """``value`` if it serializes to JSON (as the run writer writes it), else a short
    description of it."""
    try:
        json.dumps(value, default=_json_default, ensure_ascii=True)
        return value
    except Exception:  # noqa: BLE001
        return f"<{type(value).__name__} that cannot be written as JSON>"


def record_and_line(record: SampleRecord) -> tuple[SampleRecord, str]:
    """``record`` and its ``samples.jsonl`` line; a record that cannot be written is
    replaced by :func:`writable_record` (the guard's ``record`` step)."""
    try:
        return record, record_line(record)
    except Exception as exc:  # noqa: BLE001 -- one sample's failure is data
        record = writable_record(record, exc)
        return record, record_line(record)


def writable_record(record: SampleRecord, exc: BaseException) -> SampleRecord:
    """A stand-in for a record whose JSON line could not be written: the ids, prompt,
    output, token counts and timings kept; each score replaced by a failure; target
    and metadata kept only if they serialize on their own."""
    problem = error_text("record", exc)
    metadata = _safe(dict(record.metadata))
    return SampleRecord(
        task=record.task, sample_id=str(record.sample_id), repeat=int(record.repeat), prompt=str(record.prompt),
        output=str(record.output), target=_safe(record.target),
        scores={str(name): _failed(problem) for name in record.scores},
        prompt_tokens=record.prompt_tokens, output_tokens=record.output_tokens,
        finish_reason=record.finish_reason, timings=record.timings,
        error=joined(record.error, problem), metadata=metadata if isinstance(metadata, dict) else {},
    )


_STAGE_ERROR = re.compile(rf"(?:^|; )(?:{'|'.join(STAGES)})(?: \([^)]*\))?: ")


def request_error(error: str | None) -> str | None:
    """The request's own part of a record's ``error`` (what the backend said), without
    the guard's errors: what a re-scoring starts from."""
    if error is None:
        return None
    match = _STAGE_ERROR.search(error)
    return error if match is None else (error[: match.start()] or None)


def stage_of(error: str) -> str:
    """Which step an error string came from: ``request`` (the backend), or a guarded stage."""
    head = error.split(":", 1)[0].split(" (", 1)[0]
    return head if head in STAGES else "request"


def errors_by_stage(records: Sequence[SampleRecord]) -> dict[str, int]:
    """Records with an error, counted by the step that failed first:
    ``{"request": n, "scoring": n, "record": n}``."""
    counts = dict.fromkeys(("request", *STAGES), 0)
    for r in records:
        if r.error is not None:
            counts[stage_of(r.error)] += 1
    return counts
