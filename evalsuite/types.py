"""The records that flow through a run.

Every stage makes new records; nothing is mutated in place:
``Sample -> GenerationRequest -> Generation -> Score -> SampleRecord``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Union

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class Message:
    """One chat turn. ``role`` is ``system``, ``user`` or ``assistant``."""

    role: str
    content: str


Prompt = Union[str, "tuple[Message, ...]"]
"""A plain completion prompt (str) or a conversation (tuple of messages) that the
backend renders with the model's chat template."""


@dataclass(frozen=True)
class Sample:
    """One dataset item.

    ``input`` is what the task renders into a prompt; ``target`` is the gold answer
    in whatever form the task's scorers take.
    """

    id: str
    input: Prompt
    target: Any
    metadata: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True)
class SamplingParams:
    """Generation settings shared by every backend.

    ``max_tokens`` counts output tokens; ``temperature == 0`` means greedy; ``stop``
    sequences are excluded from the returned text; ``seed`` makes sampling
    reproducible where the backend supports per-request seeds.
    """

    max_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "stop": list(self.stop),
            "seed": self.seed,
        }


@dataclass(frozen=True)
class GenerationRequest:
    """One call to a model.

    ``repeat`` numbers the independent generations of one sample (pass@k draws
    ``n`` of them); ``json_schema`` asks the backend for constrained decoding.
    """

    task: str
    sample_id: str
    prompt: Prompt
    params: SamplingParams
    repeat: int = 0
    json_schema: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Timings:
    """Per-request timings in seconds, following ``vllm bench serve``.

    ``ttft_s``: request sent to first output token. ``e2e_s``: request sent to last
    token. ``itl_s``: gaps between consecutive output tokens. A figure the backend
    cannot measure is ``None``, never ``0``.
    """

    e2e_s: float | None = None
    ttft_s: float | None = None
    itl_s: tuple[float, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "e2e_s": self.e2e_s,
            "ttft_s": self.ttft_s,
            "itl_s": list(self.itl_s) if self.itl_s is not None else None,
        }


@dataclass(frozen=True)
class Generation:
    """What a backend returns for one request.

    ``prompt_text`` is the prompt as the model saw it (chat template applied) where
    the backend knows it. ``finish_reason`` is ``stop`` or ``length`` (or ``error``).
    A failed request has ``error`` set and an empty ``text``: it is data, not an
    exception.
    """

    text: str
    finish_reason: str | None = None
    prompt_text: str | None = None
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    timings: Timings = field(default_factory=Timings)
    error: str | None = None


@dataclass(frozen=True)
class Score:
    """One extractor's verdict on one output.

    ``value`` is 1.0/0.0 for right/wrong (or a fraction for partial credit);
    ``answer`` is what the extractor found (``None`` when it found nothing, which is
    counted as an extraction failure); ``detail`` explains non-obvious verdicts;
    ``second_opinion`` is an independent verifier's view of the same output
    (:mod:`evalsuite.scoring.second_opinion`), recorded beside the verdict, never
    replacing it.
    """

    value: float
    answer: Any = None
    detail: str | None = None
    second_opinion: Mapping[str, Any] | None = None

    @property
    def extracted(self) -> bool:
        return self.answer is not None


@dataclass(frozen=True)
class SampleRecord:
    """One line of ``samples.jsonl``: a sample, its generation and its scores."""

    task: str
    sample_id: str
    repeat: int
    prompt: str
    output: str
    target: Any
    scores: Mapping[str, Score]
    prompt_tokens: int | None
    output_tokens: int | None
    finish_reason: str | None
    timings: Timings
    error: str | None
    metadata: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)

    def _second_opinions(self) -> dict[str, Any]:
        opinions = {name: dict(s.second_opinion) for name, s in self.scores.items() if s.second_opinion is not None}
        return {"second_opinions": opinions} if opinions else {}

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "sample_id": self.sample_id,
            "repeat": self.repeat,
            "prompt": self.prompt,
            "output": self.output,
            "target": self.target,
            "answers": {name: s.answer for name, s in self.scores.items()},
            "verdicts": {name: s.value for name, s in self.scores.items()},
            "details": {name: s.detail for name, s in self.scores.items() if s.detail},
            **self._second_opinions(),
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "finish_reason": self.finish_reason,
            "timings": self.timings.to_dict(),
            "error": self.error,
            "metadata": dict(self.metadata),
        }
