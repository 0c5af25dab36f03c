"""What a task plugin is: a declarative contract the engine fills in.

A task module in ``tasks/`` (or any ``.py`` file, loaded with
``--tasks path/to/my_task.py@my_task``, or an ``evalsuite.tasks`` entry point)
exposes one factory decorated with :func:`task`; the factory takes typed keyword
arguments (the task's variants; ``--task-arg`` values are converted from its
annotations, see :func:`typed_arguments`) and returns a :class:`Task`:

- the dataset (``samples``) and the prompt inside each sample,
- named ``extractors`` (output text -> answer; each its own metric row with its
  extraction-failure rate, each output parsed once per extractor),
- one ``scorer`` comparing an extracted answer with the sample (``exact_match``
  by default),
- extra ``metrics`` declared as data (:func:`grouped` per metadata key,
  :func:`pass_at_k`), beside the accuracy/stderr row every extractor gets,
- ``figures`` declared as data (:class:`Heatmap`, drawn by the one
  :func:`evalsuite.report.plots.heatmap_figure`).

Example::

    @task("my_task")
    def my_task(n: int = 3) -> Task:
        return Task(name="my_task", version="1",
                    samples=[Sample(str(i), f"{i}+{i}=", str(2 * i)) for i in range(n)],
                    extractors=(Extractor("last-number", last_number, primary=True),))

Tasks that need more keep the lower-level hooks: hand-written ``scorers``,
``score_batch`` (worker pools), ``aggregate`` and ``write_artifacts``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from types import MappingProxyType
from typing import Any

from evalsuite.errors import UsageError
from evalsuite.metrics.aggregate import accuracy
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


CompareFn = Callable[[Any, Sample], float]
"""``(extracted answer, sample) -> value in [0, 1]``; only called when an answer was found."""


def exact_match(answer: Any, sample: Sample) -> float:
    """1.0 when the extracted answer equals ``sample.target``, else 0.0."""
    return float(answer == sample.target)


@dataclass(frozen=True)
class Extractor:
    """A named answer extractor: ``extract(output text) -> answer``, ``None`` when
    nothing was found (counted in the row's ``extraction_failure_rate``).

    Each extractor is its own metric row, named with the field's term
    (``strict-match``, ``flexible-extract``); ``primary`` marks the row shown first.
    """

    name: str
    extract: Callable[[str], Any]
    primary: bool = False

    def scorer(self, compare: CompareFn) -> Scorer:
        """The :class:`Scorer` of this row: the output parsed once, then compared."""

        def score(output: str, sample: Sample) -> Score:
            answer = self.extract(output)
            return Score(0.0 if answer is None else float(compare(answer, sample)), answer)

        return Scorer(self.name, score, self.primary)


@dataclass(frozen=True)
class Metric:
    """An aggregate declared as data: ``compute(records, row)`` over all records of
    the task, stored under ``name`` in the task's metrics. ``row`` is the scorer row
    it reads (``None``: the primary row)."""

    name: str
    compute: Callable[[Sequence[SampleRecord], str], Any]
    row: str | None = None


def _group_sort_key(item: tuple[tuple, Any]) -> tuple:
    return tuple((0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v)) for v in item[0])


def grouped(by: str | tuple[str, ...], name: str | None = None, row: str | None = None,
            default: Any = None) -> Metric:
    """Accuracy rows (:func:`evalsuite.metrics.aggregate.accuracy`: mean, stderr, 95% interval,
    n, extraction-failure rate) per value of ``sample.metadata[by]`` (several keys
    join as ``"a x b"``); a record without the key falls in ``default``. Stored
    under ``name`` (default ``"by_<by>"``), keyed by the values as text, numbers in
    numeric order first. After inspect_ai's ``grouped(metric, "family")``."""
    keys = (by,) if isinstance(by, str) else tuple(by)

    def compute(records: Sequence[SampleRecord], scorer: str) -> dict[str, Any]:
        groups: dict[tuple, list[SampleRecord]] = {}
        for r in records:
            groups.setdefault(tuple(r.metadata.get(k, default) for k in keys), []).append(r)
        return {" x ".join(map(str, values)): accuracy([r.scores[scorer].value for r in rs],
                                                       [r.scores[scorer].extracted for r in rs])
                for values, rs in sorted(groups.items(), key=_group_sort_key)}

    return Metric(name or f"by_{'_'.join(keys)}", compute, row)


def pass_at_k(ks: Sequence[int], row: str | None = None, name: str = "pass_at_k") -> Metric:
    """pass@k for each ``k`` in ``ks`` over the repeats of each sample
    (:func:`evalsuite.metrics.aggregate.pass_at_k_table`; Chen et al., 2021, eq. 1); a verdict
    passes when its value is 1.0. ``k`` above the repeats is not reported."""
    from evalsuite.metrics.aggregate import pass_at_k_table

    def compute(records: Sequence[SampleRecord], scorer: str) -> dict[str, Any]:
        passed: dict[str, list[bool]] = {}
        for r in records:
            passed.setdefault(r.sample_id, []).append(r.scores[scorer].value == 1.0)
        return pass_at_k_table(passed, ks)

    return Metric(name, compute, row)


@dataclass(frozen=True)
class Heatmap:
    """A heatmap figure declared as data: mean score of ``row`` (default: primary)
    per cell of ``rows`` x ``columns`` (metadata keys), written as
    ``<run_dir>/<file>`` by :func:`evalsuite.report.plots.heatmap_figure`. ``row_format``
    and ``column_format`` turn metadata values into axis labels (``"{}%"``)."""

    file: str
    rows: str
    columns: str
    title: str = ""
    row: str | None = None
    row_format: str = "{}"
    column_format: str = "{}"

    def cells(self, records: Sequence[SampleRecord], scorer: str) -> tuple[list, list, list[list[float | None]]]:
        """``(row values, column values, mean per cell or None)``, values sorted."""
        sums: dict[tuple, list[float]] = {}
        for r in records:
            sums.setdefault((r.metadata[self.rows], r.metadata[self.columns]), []).append(r.scores[scorer].value)
        rows = sorted({k[0] for k in sums})
        cols = sorted({k[1] for k in sums})
        grid = [[(sum(v) / len(v)) if (v := sums.get((a, b))) else None for b in cols] for a in rows]
        return rows, cols, grid

    def draw(self, records: Sequence[SampleRecord], scorer: str, run_dir: Path) -> Path:
        """Draws the figure into ``run_dir`` and returns its path."""
        from evalsuite.report.plots import heatmap_figure

        rows, cols, grid = self.cells(records, scorer)
        fig = heatmap_figure([self.row_format.format(v) for v in rows], [self.column_format.format(v) for v in cols],
                             grid, self.title or scorer, xlabel=self.columns, ylabel=self.rows, label=scorer)
        path = Path(run_dir) / self.file
        fig.savefig(path, dpi=100)
        return path


@dataclass(frozen=True)
class _Declared:
    """``aggregate`` / ``write_artifacts`` of a task with declared metrics or
    figures: the task's own hook (``base``) first, then the declarations."""

    base: Callable | None
    metrics: tuple[Metric, ...] = ()
    figures: tuple[Heatmap, ...] = ()
    primary: str | None = None

    def __call__(self, records: Sequence[SampleRecord], run_dir: Path | None = None) -> Any:
        if self.figures:
            if self.base is not None:
                self.base(records, run_dir)
            for fig in self.figures:
                fig.draw(records, fig.row or self.primary, run_dir)
            return None
        out = dict(self.base(records)) if self.base is not None else {}
        out.update({m.name: m.compute(records, m.row or self.primary) for m in self.metrics})
        return out


@dataclass(frozen=True)
class Task:
    """A task instance: data, generation defaults and scoring.

    - ``samples``: the items, in a fixed order (``--limit`` takes a prefix).
    - ``params``: default sampling settings; the run's flags override them.
    - ``extractors`` + ``scorer``: the declarative way to score; each extractor
      becomes a row of ``scorers`` (the output parsed once per extractor, then
      ``scorer(answer, sample)``; no answer scores 0).
    - ``metrics``, ``figures``: declared aggregates (:func:`grouped`,
      :func:`pass_at_k`, :class:`Metric`) and figures (:class:`Heatmap`), added
      to ``aggregate`` and ``write_artifacts``.
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
    scorers: tuple[Scorer, ...] = ()
    extractors: tuple[Extractor, ...] = ()
    scorer: CompareFn = exact_match
    metrics: tuple[Metric, ...] = ()
    figures: tuple[Heatmap, ...] = ()
    params: SamplingParams = field(default_factory=SamplingParams)
    repeats: int = 1
    score_batch: ScoreBatchFn | None = None
    aggregate: AggregateFn | None = None
    json_schema: Callable[[Sample], Mapping[str, Any] | None] | None = None
    write_artifacts: ArtifactsFn | None = None
    data_files: tuple[Path, ...] = ()
    source: str = ""
    args: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        """Turns the declarations into the hooks the engine calls; ValueError when a
        task declares both extractors and scorers."""
        if self.extractors and self.scorers:
            raise ValueError(f"task {self.name!r}: give either extractors or scorers, not both")
        if self.extractors:
            object.__setattr__(self, "scorers", tuple(e.scorer(self.scorer) for e in self.extractors))
            object.__setattr__(self, "extractors", ())  # the rows now live in scorers (replace() stays valid)
        primary = self.primary
        if self.metrics:
            base = self.aggregate.base if isinstance(self.aggregate, _Declared) else self.aggregate
            object.__setattr__(self, "aggregate", _Declared(base, metrics=tuple(self.metrics), primary=primary))
        if self.figures:
            base = self.write_artifacts.base if isinstance(self.write_artifacts, _Declared) else self.write_artifacts
            object.__setattr__(self, "write_artifacts", _Declared(base, figures=tuple(self.figures), primary=primary))

    @property
    def primary(self) -> str | None:
        """The name of the primary row: the one marked, else the first."""
        return next((s.name for s in self.scorers if s.primary), self.scorers[0].name if self.scorers else None)

    def score(self, samples: Sequence[Sample], generations: Sequence[Generation]) -> list[dict[str, Score]]:
        """Scores each generation with every scorer (or ``score_batch``)."""
        if self.score_batch is not None:
            return self.score_batch(samples, generations)
        return [
            {s.name: s.score(g.text, sample) for s in self.scorers}
            for sample, g in zip(samples, generations)
        ]


def task(name: str) -> Callable:
    """Registers a task factory under ``name`` (the decorator of task modules).

    Every call of the factory, from the registry or directly, gets its arguments
    checked and converted against the factory's annotations first
    (:func:`typed_arguments`): ``Literal[...]`` for a choice, ``PositiveInt`` for
    a count and so on, so a task writes no coercion or checks of its own. A bad
    argument is a UsageError naming the task and the argument.
    """
    import functools

    def decorate(factory: Callable) -> Callable:
        signature = inspect.signature(factory)

        @functools.wraps(factory)
        def typed_factory(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind_partial(*args, **kwargs)
            named = {k: v for k, v in bound.arguments.items()
                     if signature.parameters[k].kind not in (inspect.Parameter.VAR_KEYWORD,
                                                             inspect.Parameter.VAR_POSITIONAL)}
            extra = bound.arguments.get(next((k for k, p in signature.parameters.items()
                                              if p.kind is inspect.Parameter.VAR_KEYWORD), ""), {})
            return factory(**typed_arguments(name, factory, named), **extra)

        return _registry.register(name)(typed_factory)

    return decorate


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
        hints = typing.get_type_hints(factory, include_extras=True)  # keeps Annotated constraints (PositiveInt)
    except Exception:  # noqa: BLE001 -- unresolvable annotations: the factory checks its own arguments
        return dict(given)
    out = {}
    for key, value in given.items():
        if key not in hints or hints[key] is Any or isinstance(value, PathLike):  # a path is taken as given
            out[key] = value
            continue
        try:
            out[key] = TypeAdapter(hints[key]).validate_python(value)
        except ValidationError as err:
            raise UsageError(f"task '{name}': argument {first_problem(err, key)} "
                             f"(fix --task-arg {name}.{key}, or the suite entry's args)") from None
    return out


def number_list(task_name: str, name: str, value: Any) -> list[int | float]:
    """A task argument that is a list of numbers, given as a list, a number, a JSON
    list (``"[1024, 2048]"``) or a comma string (``"0,50,100"``, as ``--task-arg``
    passes it); whole numbers become ints. UsageError when it is none of these or empty."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip().startswith("[") else value.split(",")
        except json.JSONDecodeError:
            raise UsageError(f"{task_name}: {name} must be a list of numbers, got {value!r}") from None
    if isinstance(value, (int, float)):
        value = [value]
    try:
        out = [float(v) for v in value]
    except (TypeError, ValueError):
        raise UsageError(f"{task_name}: {name} must be a list of numbers, got {value!r}") from None
    if not out:
        raise UsageError(f"{task_name}: {name} is empty")
    return [int(v) if v == int(v) else v for v in out]


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
