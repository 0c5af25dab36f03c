"""Backends: one protocol, a batch of requests in, the same number of generations out,
and optionally a stream (requests in, each generation out as it finishes).

The runner drives every backend through :func:`evalsuite.backends.queue.stream`:
a backend with a ``stream(requests) -> Iterator[(index, Generation)]`` method (vLLM,
OpenAI) is streamed natively; any other is fed ``generate`` batches. Concurrency
lives inside a backend (engine scheduling for vLLM, bounded async for HTTP).
Modules here import their heavy libraries only when a backend is built, so
importing this package (and ``evalsuite list``) stays free of torch and vllm.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from evalsuite.results.cache import chat_template_sha256  # noqa: F401 -- the one digest, re-exported for backends
from evalsuite.types import Generation, GenerationRequest, Message


@runtime_checkable
class Backend(Protocol):
    """What every backend implements.

    ``generate`` returns exactly one :class:`Generation` per request, in order; a
    request that fails yields a Generation with ``error`` set instead of raising.
    ``describe`` returns provenance for ``run.json`` (model identity, engine
    settings, chat-template hash, library versions). A backend may also have
    ``stream(requests)``: the contract is in :mod:`evalsuite.backends.queue`.
    """

    name: str

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]: ...

    def describe(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


def messages_to_dicts(messages: Sequence[Message]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in messages]


def render_prompt(tokenizer: Any, prompt) -> tuple[str, list[int]]:
    """Prompt text and token ids as the model sees them.

    A conversation is rendered with the tokenizer's chat template (generation
    prompt added) and encoded without adding special tokens again, since the
    template already holds them; a plain string is encoded as usual.
    """
    if isinstance(prompt, str):
        return prompt, tokenizer.encode(prompt)
    text = tokenizer.apply_chat_template(
        messages_to_dicts(prompt), tokenize=False, add_generation_prompt=True
    )
    return text, tokenizer.encode(text, add_special_tokens=False)
