"""Schemas of everything evalsuite reads from outside the process, checked at the edge.

Files (a dataset line, a suite, a thresholds file, the ``run.json`` and
``samples.jsonl`` of a run directory given to ``--resume``, a response-cache entry)
and server replies (``GET /v1/models``, a streamed completion event) are validated
with pydantic v2 before any other code touches them.

- A bad **file** is bad input: :func:`check` raises
  :class:`~evalsuite.errors.UsageError` with one line that names the file, the
  line or key, what was wrong, and the flag that fixes it (exit code 2).
- A bad **server reply** is a failed request: callers turn
  :class:`pydantic.ValidationError` into a per-request error (data), never into an
  exception that stops the run.

Config files are read in strict mode: ``limit: "5"``, ``limit: true`` and
``enforce_eager: 1`` are refused rather than guessed at; an integer is accepted
where a number is expected.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from evalsuite.errors import UsageError

M = TypeVar("M", bound=BaseModel)

PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
Fraction01 = Annotated[float, Field(ge=0, le=1)]
OpenFraction01 = Annotated[float, Field(gt=0, le=1)]
# A token count read from outside (a server's usage, a samples line, a cache entry): counts
# are summed and divided as floats, so one beyond a float's exact range (2**53) is refused.
MAX_TOKEN_COUNT = 2**53
TokenCount = Annotated[int, Field(ge=0, le=MAX_TOKEN_COUNT)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _ConfigFile(BaseModel):
    """A section of a file a person writes: strict types, unknown keys refused."""

    model_config = ConfigDict(strict=True, extra="forbid")


class _TypesOnly(BaseModel):
    """Strict types; keys not listed are ignored: a file evalsuite wrote (so files of
    older and newer versions still load), or one whose keys are checked elsewhere."""

    model_config = ConfigDict(strict=True, extra="ignore")


class _Reply(BaseModel):
    """A server's JSON: standard coercions, other keys allowed (servers add their own)."""

    model_config = ConfigDict(extra="allow")


# --- run settings: suites and run.json ------------------------------------------------


class EngineSettings(_ConfigFile):
    """:class:`evalsuite.config.EngineConfig` as a file holds it."""

    tensor_parallel_size: PositiveInt = 1
    max_model_len: PositiveInt | None = None
    gpu_memory_utilization: OpenFraction01 | None = None
    dtype: str = "auto"
    enforce_eager: bool | None = None  # None: chosen from the host
    extra: dict[str, Any] = Field(default_factory=dict)


class BackendSettings(BaseModel):
    """Settings of a served endpoint (``backend_args``). Keys not listed here are
    passed to the backend, which refuses those it does not take."""

    model_config = ConfigDict(strict=True, extra="allow")

    base_urls: Annotated[list[str], Field(min_length=1)] | None = None
    max_concurrency: PositiveInt | None = None
    request_timeout: PositiveFloat | None = None
    max_retries: NonNegativeInt | None = None
    data_parallel_size: PositiveInt | None = None
    ray_address: str | None = None
    replica_timeout: PositiveFloat | None = None
    chunk_size: PositiveInt | None = None


class TaskEntry(_ConfigFile):
    """One entry of a suite's ``tasks`` list (after ``defaults`` are merged in), or
    the suite's ``defaults``."""

    name: str | None = None
    id: str | None = None
    limit: PositiveInt | None = None
    num_fewshot: NonNegativeInt | None = None
    max_tokens: PositiveInt | None = None
    temperature: NonNegativeFloat | None = None
    top_p: OpenFraction01 | None = None
    seed: int | None = None
    system_prompt: str | None = None
    num_samples: PositiveInt | None = None
    allow_unsandboxed: bool = False
    args: dict[str, Any] | None = None
    engine: dict[str, Any] | None = None
    optional: bool = False


class SuiteFile(_ConfigFile):
    """The top level of a suite file (see :mod:`evalsuite.pipeline.suite`)."""

    name: str | None = None
    label: str | None = None
    description: str | None = None
    model: str | None = None
    backend: str = "vllm"
    data_dir: str | None = None
    seed: int = 0
    batch_size: PositiveInt | None = None
    max_error_rate: Fraction01 | None = None
    backend_args: BackendSettings | None = None
    engine: dict[str, Any] | None = None
    defaults: dict[str, Any] | None = None
    tasks: Any = None  # a non-empty list of entries, checked entry by entry


class RunSettings(_TypesOnly):
    """The ``config`` section of ``run.json`` (:meth:`evalsuite.config.RunConfig.to_dict`)."""

    tasks: Annotated[list[str], Field(min_length=1)]
    model: str | None = None
    backend: str = "vllm"
    limit: PositiveInt | None = None
    num_fewshot: NonNegativeInt | None = None
    data_dir: str | None = None
    max_tokens: PositiveInt | None = None
    temperature: NonNegativeFloat | None = None
    top_p: OpenFraction01 | None = None
    seed: int = 0
    system_prompt: str | None = None
    batch_size: PositiveInt | None = None
    output_dir: str = "results"
    run_id: str | None = None
    engine: EngineSettings = Field(default_factory=EngineSettings)
    task_args: dict[str, dict[str, Any]] = Field(default_factory=dict)
    num_samples: PositiveInt | None = None
    allow_unsandboxed: bool = False
    backend_args: BackendSettings = Field(default_factory=BackendSettings)
    max_error_rate: Fraction01 | None = None
    cache: bool = True
    resume: str | None = None
    label: str | None = None


class RunFile(_TypesOnly):
    """``run.json`` as ``--resume`` needs it."""

    model_config = ConfigDict(strict=True, extra="allow")

    status: str | None = None
    config: RunSettings
    started_at: float | None = None
    resumed_at: list[float] = Field(default_factory=list)
    backend: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None


class TimingsLine(_TypesOnly):
    e2e_s: Seconds | None = None
    ttft_s: Seconds | None = None
    itl_s: list[Seconds] | None = None


class SampleLine(_TypesOnly):
    """One line of ``samples.jsonl`` (:meth:`evalsuite.types.SampleRecord.to_dict`)."""

    task: str
    sample_id: str
    repeat: NonNegativeInt = 0
    prompt: str = ""
    output: str = ""
    target: Any = None
    answers: dict[str, Any] = Field(default_factory=dict)
    verdicts: dict[str, Fraction01] = Field(default_factory=dict)  # a score is in [0, 1] (evalsuite.pipeline.guard)
    details: dict[str, str | None] = Field(default_factory=dict)
    second_opinions: dict[str, dict[str, Any]] = Field(default_factory=dict)
    prompt_tokens: TokenCount | None = None
    output_tokens: TokenCount | None = None
    finish_reason: str | None = None
    timings: TimingsLine | None = None
    error: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class ScoreSummary(_TypesOnly):
    """One scorer's figures in a task's metrics block of ``run.json`` (what reports print and plot)."""

    value: FiniteFloat | None = None
    stderr: FiniteFloat | None = None
    ci95: Annotated[list[FiniteFloat], Field(min_length=2, max_length=2)] | None = None
    n: NonNegativeInt | None = None
    extraction_failure_rate: FiniteFloat | None = None


# Figures a report tabulates and plots: numbers are finite; other values are left to the reader.
Figures = dict[str, FiniteFloat | str | list[Any] | dict[str, Any] | None]


class TaskMetrics(_TypesOnly):
    """A task's metrics block of ``run.json``: the parts reports and comparisons read."""

    primary: str | None = None
    scores: dict[str, ScoreSummary] | None = None
    performance: dict[str, FiniteFloat | dict[str, Any] | None] | None = None
    memory: Figures | None = None


class _Section(_TypesOnly):
    """A ``run.json`` section whose listed keys hold mappings (compared field by field)."""

    engine: dict[str, Any] | None = None  # config, backend
    versions: dict[str, Any] | None = None  # provenance
    host: dict[str, Any] | None = None  # provenance
    data_files: dict[str, Any] | None = None  # a task's


class ReportedRun(_TypesOnly):
    """``run.json`` as ``evalsuite report`` and ``compare`` read it."""

    status: str | None = None
    started_at: FiniteFloat | None = None
    config: RunSettings | None = None
    model: dict[str, Any] | None = None
    backend: _Section | None = None
    tasks: dict[str, _Section | None] | None = None
    provenance: _Section | None = None
    memory: Figures | None = None
    metrics: dict[str, TaskMetrics] | None = None


class ReportedSuite(_TypesOnly):
    """``suite.json`` as ``evalsuite report`` and ``compare`` read it."""

    label: str | None = None
    runs: list[str] = Field(default_factory=list)


class CachedGeneration(_TypesOnly):
    """A response-cache entry (:func:`evalsuite.results.cache.generation_to_json`)."""

    text: str
    finish_reason: str | None = None
    prompt_text: str | None = None
    prompt_tokens: TokenCount | None = None
    output_tokens: TokenCount | None = None
    timings: TimingsLine | None = None


# --- thresholds ---------------------------------------------------------------------------


class AccuracyLimits(_TypesOnly):
    max_drop: NonNegativeFloat | None = None
    alpha: OpenFraction01 | None = None
    scorers: str | None = None
    resamples: PositiveInt | None = None


class LatencyLimits(_TypesOnly):
    metric: str | None = None
    max_increase: NonNegativeFloat | None = None


class MemoryLimits(_TypesOnly):
    metrics: list[str] | None = None
    max_increase: NonNegativeFloat | None = None


class TaskLimits(_TypesOnly):
    max_drop: NonNegativeFloat | None = None
    alpha: OpenFraction01 | None = None
    max_increase: NonNegativeFloat | None = None


class ThresholdsFile(_TypesOnly):
    """A thresholds file for ``evalsuite compare`` (``thresholds/default.yaml``): the
    types and ranges of its values. Unknown keys are ignored here: ``load_thresholds``
    names them with the keys it knows."""

    accuracy: AccuracyLimits | None = None
    latency: LatencyLimits | None = None
    memory: MemoryLimits | None = None
    tasks: dict[str, TaskLimits | None] | None = None


# --- server replies (lenient; a failure is a failed request) ---------------------------------


class ModelCard(_Reply):
    id: Annotated[str, Field(strict=True)]


class ModelList(_Reply):
    """``GET /v1/models`` (OpenAI API reference: ``{"object": "list", "data": [{"id": ...}]}``)."""

    data: list[ModelCard]


class Delta(_Reply):
    content: str | None = None


class StreamChoice(_Reply):
    delta: Delta | None = None
    text: str | None = None
    finish_reason: str | None = None


class Usage(_Reply):
    prompt_tokens: TokenCount | None = None
    completion_tokens: TokenCount | None = None


class StreamEvent(_Reply):
    """One ``data: {...}`` event of a streamed (chat) completion."""

    choices: list[StreamChoice] | None = None
    usage: Usage | None = None


# --- errors --------------------------------------------------------------------------------


def where(loc: tuple[Any, ...]) -> str:
    """A pydantic error location as a key path: ``("tasks", 0, "limit")`` -> ``tasks[0].limit``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def first_problem(err: ValidationError, at: str = "") -> str:
    """The first error of ``err`` in one line: ``key: what is wrong, got VALUE``.

    ``at``: the key path of the validated value inside its file (``tasks[2]``).
    """
    e = err.errors(include_url=False)[0]
    # A union reports one error per member; its last location part names the member's type.
    loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and ("[" in p or p in _TYPE_NAMES)))
    key = where(loc)
    key = f"{at}{'' if not key or key.startswith('[') else '.'}{key}" if at else key
    if e["type"] == "missing":
        return f"missing key '{key}'"
    if e["type"] == "extra_forbidden":
        return f"unknown key '{key}'"
    if e["type"] == "value_error":  # a validator's own message says what is wrong
        message = str(e["ctx"]["error"])
    else:
        message = re.sub(r" or instance of \w+", "", e["msg"]).replace("Input should", "should")
        message = message[:1].lower() + message[1:]
        message = message.replace("dictionary", "mapping (a JSON object)") + f", got {_shown(e.get('input'))}"
    return f"{key}: {message}" if key else message


_TYPE_NAMES = frozenset({"str", "int", "float", "bool", "list", "dict", "none", "function-after",
                         "function-before", "constrained-int", "constrained-float"})


def check(model: type[M], data: Any, source: str, fix: str, at: str = "") -> M:
    """``data`` validated as ``model``.

    Raises UsageError ``"<source>: <key>: <problem>, got <value> (<fix>)"`` where
    ``source`` names the file (and line), ``at`` the key path of ``data`` inside it
    (e.g. ``tasks[2]``), and ``fix`` the flag or action that fixes it.
    """
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise UsageError(f"{source}: {first_problem(err, at)} ({fix})") from None


def require_mapping(data: Any, source: str, what: str, fix: str) -> Mapping[str, Any]:
    """``data`` if it is a JSON object / YAML mapping, else UsageError naming ``what`` it should be."""
    if not isinstance(data, Mapping):
        raise UsageError(f"{source}: {what} must be a mapping (a JSON object), got {type(data).__name__} ({fix})")
    return data
