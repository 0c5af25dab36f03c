"""The streaming request queue: requests in, each generation out as it finishes.

The one interface the runner drives every backend through::

    stream(backend, requests, batch_size=None) -> Iterator[tuple[int, Generation]]

``requests`` is any iterable of :class:`~evalsuite.types.GenerationRequest` (a
list, a generator, or a :class:`RequestQueue` that another thread keeps filling);
each is known by its **index**: its 0-based position in the order the iterable
yields it. The iterator yields ``(index, generation)`` once per request, in
completion order (not input order), and ends when every request has been
answered. A request that fails yields a Generation with ``error`` set; it never
raises, and the other requests go on.

A backend streams natively when it has a ``stream(requests)`` method with that
contract (in-process vLLM through ``LLMEngine.add_request``/``step``, the OpenAI
backend through its bounded async client). Every other backend is adapted by
:func:`batched`: ``generate`` on consecutive batches of ``batch_size`` requests
(default :data:`DEFAULT_BATCH_SIZE`), each batch's generations yielded when the
batch returns. Replica pools (data parallel, Ray) plug in by implementing
``stream`` with the same contract, pulling from the iterable as replicas free up.
"""

from __future__ import annotations

import queue as _queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import Any

from evalsuite.types import Generation, GenerationRequest

DEFAULT_BATCH_SIZE = 256
"""Requests per ``generate`` call for backends that only take batches."""

Item = tuple[int, Generation]
"""``(index of the request in the input order, its generation)``."""


def stream(backend: Any, requests: Iterable[GenerationRequest], batch_size: int | None = None) -> Iterator[Item]:
    """``(index, generation)`` for every request of ``requests``, as each finishes.

    Uses ``backend.stream`` where the backend has one, else :func:`batched` over
    ``backend.generate`` (``batch_size`` requests a call). Raises RuntimeError when a
    batch backend returns a different number of generations than it was given.
    """
    native = getattr(backend, "stream", None)
    if callable(native):
        return native(requests)
    return batched(backend.generate, requests, batch_size or DEFAULT_BATCH_SIZE, getattr(backend, "name", "?"))


def batched(generate: Callable[[Sequence[GenerationRequest]], list[Generation]],
            requests: Iterable[GenerationRequest], batch_size: int, name: str = "?") -> Iterator[Item]:
    """The default adapter: ``generate`` on consecutive batches of at most ``batch_size``
    requests; a batch's ``(index, generation)`` pairs are yielded, in order, when it returns."""
    it = iter(requests)
    start = 0
    while batch := list(islice(it, batch_size)):
        generations = generate(batch)
        if len(generations) != len(batch):
            raise RuntimeError(f"backend {name} returned {len(generations)} generations for {len(batch)} requests")
        yield from enumerate(generations, start)
        start += len(batch)


class RequestQueue:
    """A thread-safe iterable of requests that producers fill while a backend streams it.

    ``put`` adds a request, ``close`` says no more will come; iterating blocks for
    the next request and ends after ``close`` once the queue is empty. A backend that
    must not block while it has work in flight polls :meth:`get_nowait` instead
    (``None`` when nothing is waiting, :data:`CLOSED` after the end).
    """

    CLOSED = object()

    def __init__(self, requests: Iterable[GenerationRequest] = ()) -> None:
        self._items: _queue.Queue = _queue.Queue()
        self._closed = threading.Event()
        for r in requests:
            self.put(r)

    def put(self, request: GenerationRequest) -> None:
        if self._closed.is_set():
            raise RuntimeError("put on a closed RequestQueue")
        self._items.put(request)

    def close(self) -> None:
        self._closed.set()
        self._items.put(self.CLOSED)

    def get_nowait(self) -> Any:
        """The next request, ``None`` if none is waiting now, or :data:`CLOSED`."""
        try:
            item = self._items.get_nowait()
        except _queue.Empty:
            return None
        if item is self.CLOSED:
            self._items.put(item)  # every later reader sees the end too
        return item

    def __iter__(self) -> Iterator[GenerationRequest]:
        while True:
            item = self._items.get()
            if item is self.CLOSED:
                self._items.put(item)
                return
            yield item


def pull(requests: Iterable[GenerationRequest], want: int, blocking: bool) -> tuple[list[GenerationRequest], bool]:
    """Up to ``want`` requests from ``requests`` and whether the input is exhausted.

    From a :class:`RequestQueue` with ``blocking`` False only what is waiting now is
    taken (a streaming backend with work in flight must not block); any other
    iterable must be an iterator here and is read with ``next``.
    """
    out: list[GenerationRequest] = []
    if isinstance(requests, RequestQueue):
        while len(out) < want:
            item = requests.get_nowait() if not blocking or out else next(iter(requests), RequestQueue.CLOSED)
            if item is None:
                return out, False
            if item is RequestQueue.CLOSED:
                return out, True
            out.append(item)
        return out, False
    for _ in range(want):
        item = next(requests, None)  # type: ignore[call-overload]
        if item is None:
            return out, True
        out.append(item)
    return out, False
