"""What a task plugin is.

A task module in ``tasks/`` exposes one factory decorated with :func:`task`; the
factory takes keyword arguments (the task's variants) and returns a :class:`Task`:
its samples, the sampling defaults, and named scorers. The engine never needs to
know more about a task than this.

Example::

    @task("my_task")
    def my_task(data_dir=None, **_):
        return Task(name="my_task", version="1", samples=..., scorers=(Scorer("exact_match", fn),))
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from evalsuite.registry import tasks as _registry
from evalsuite.types import Generation, Sample, SampleRecord, SamplingParams, Score

ScoreFn = Callable[[str, Sample], Score]
"""``(model output, sample) -> Score``: a pure function."""

ScoreBatchFn = Callable[[Sequence[Sample], Sequence[Generation]], "list[dict[str, Score]]"]
AggregateFn = Callable[[Sequence[SampleRecord]], "dict[str, Any]"]
ArtifactsFn = Callable[[Sequence[SampleRecord], Path], None]


@dataclass(frozen=True)
class Scorer:
    """A named extractor + comparison, one metric row in the results.

    ``name`` uses the field's term (``strict-match``, ``flexible-extract``,
    ``pass@1``, ``schema-valid`` ...). ``primary`` marks the row shown first.
    """

    name: str
    score: ScoreFn
    primary: bool = False


@dataclass(frozen=True)
class Task:
    """A task instance: data, generation defaults and scoring.

    - ``samples``: the items, in a fixed order (``--limit`` takes a prefix).
    - ``params``: default sampling settings; the run's flags override them.
    - ``scorers``: applied to every output; each gives its own metric row.
    - ``repeats``: generations per sample (``n`` for pass@k).
    - ``score_batch``: optional; scores a batch at once (for sandboxes or worker
      pools); must return one ``{scorer name: Score}`` per generation, in order.
    - ``aggregate``: optional; extra task metrics computed from all records.
    - ``json_schema``: optional; the schema a sample's output must follow, used by
      backends that support constrained decoding when the run asks for it.
    - ``write_artifacts``: optional; writes files (figures, tables) for this task into
      the run directory given as its second argument, after aggregation.
    - ``data_files``: files the samples came from, hashed into ``run.json``.
    - ``args``: the resolved factory arguments, recorded in ``run.json``.
    """

    name: str
    version: str
    samples: Sequence[Sample]
    scorers: tuple[Scorer, ...]
    params: SamplingParams = field(default_factory=SamplingParams)
    repeats: int = 1
    score_batch: ScoreBatchFn | None = None
    aggregate: AggregateFn | None = None
    json_schema: Callable[[Sample], Mapping[str, Any] | None] | None = None
    write_artifacts: ArtifactsFn | None = None
    data_files: tuple[Path, ...] = ()
    source: str = ""
    args: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def score(self, samples: Sequence[Sample], generations: Sequence[Generation]) -> list[dict[str, Score]]:
        """Scores each generation with every scorer (or ``score_batch``)."""
        if self.score_batch is not None:
            return self.score_batch(samples, generations)
        return [
            {s.name: s.score(g.text, sample) for s in self.scorers}
            for sample, g in zip(samples, generations)
        ]


def task(name: str) -> Callable:
    """Registers a task factory under ``name`` (the decorator of task modules)."""
    return _registry.register(name)


def build_task(name: str, **kwargs: Any) -> Task:
    """Builds task ``name`` with the keyword arguments its factory accepts.

    Arguments the factory does not take are dropped unless they were given for this
    task alone (``explicit``); those raise :class:`~evalsuite.errors.UsageError`.
    """
    from evalsuite.errors import UsageError

    explicit = kwargs.pop("explicit", {}) or {}
    factory = _registry.get(name)
    params = inspect.signature(factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [k for k in explicit if k not in params and not takes_any]
    if unknown:
        raise UsageError(
            f"task '{name}' has no argument {unknown[0]!r}; it takes: "
            + ", ".join(p for p in params if params[p].kind is not inspect.Parameter.VAR_KEYWORD)
        )
    merged = {k: v for k, v in kwargs.items() if v is not None and (takes_any or k in params)}
    merged.update(typed_arguments(name, factory, explicit))
    return factory(**merged)


def typed_arguments(name: str, factory: Callable, given: Mapping[str, Any]) -> dict[str, Any]:
    """``given`` (``--task-arg`` values, a suite entry's ``args``) checked against the
    type annotations of the factory's parameters with pydantic, and converted where
    the conversion is lossless (``"2"`` for an ``int``, ``3`` for a ``float``).

    Raises UsageError naming the task, the argument and what was expected.
    Arguments annotated ``Any`` or not at all, and factories whose annotations
    cannot be resolved, are passed as given: the factory checks them itself.
    """
    import typing

    from pydantic import TypeAdapter, ValidationError

    from evalsuite.errors import UsageError
    from evalsuite.schemas import first_problem

    if not given:
        return {}
    try:
        hints = typing.get_type_hints(factory)
    except Exception:  # noqa: BLE001 -- unresolvable annotations: the factory checks its own arguments
        return dict(given)
    out = {}
    for key, value in given.items():
        if key not in hints or hints[key] is Any:
            out[key] = value
            continue
        try:
            out[key] = TypeAdapter(hints[key]).validate_python(value)
        except ValidationError as err:
            raise UsageError(f"task '{name}': argument {first_problem(err, key)} "
                             f"(fix --task-arg {name}.{key}, or the suite entry's args)") from None
    return out


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
