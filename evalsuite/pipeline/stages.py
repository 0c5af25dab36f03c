"""A stage that runs beside generation: one worker thread fed through a queue.

The runner hands each finished generation to a :class:`BatchingWorker` and goes
straight back to the engine; the worker takes everything that is waiting when it
is free (up to ``max_batch`` items) and handles it as one batch, so a slow scorer
(a sandbox, a sympy pool) gets larger batches and a fast one scores each sample
as soon as it arrives. Scoring that needs isolation or a time limit stays inside
the task's own killable worker pools; this thread only overlaps it with
generation.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

_STOP = object()


class BatchingWorker:
    """One daemon thread calling ``handle(items)`` on micro-batches of what was ``put``.

    ``handle`` runs only in the worker thread, so it needs no lock of its own. An
    exception in ``handle`` stops the worker; the next :meth:`put` or :meth:`close`
    raises it in the caller's thread. ``close`` waits until every item put so far
    was handled; ``abandon`` stops after the batch in hand and drops the rest.
    """

    def __init__(self, handle: Callable[[list[Any]], None], max_batch: int = 256, name: str = "evalsuite-stage"):
        self._handle = handle
        self._max_batch = max_batch
        self._items: queue.Queue = queue.Queue()
        self._abandoned = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def put(self, item: Any) -> None:
        self._raise_error()
        self._items.put(item)

    def close(self) -> None:
        """Waits until every item is handled; raises the worker's exception, if any."""
        self._items.put(_STOP)
        self._thread.join()
        self._raise_error()

    def abandon(self) -> None:
        """Stops after the batch being handled; items still waiting are dropped."""
        self._abandoned.set()
        self._items.put(_STOP)
        self._thread.join()

    def _raise_error(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def _next_batch(self) -> tuple[list[Any], bool]:
        """Blocks for one item, then takes what else is waiting; ``(batch, stop seen)``."""
        batch = [self._items.get()]
        while len(batch) < self._max_batch:
            try:
                batch.append(self._items.get_nowait())
            except queue.Empty:
                break
        stop = any(item is _STOP for item in batch)
        return [item for item in batch if item is not _STOP], stop

    def _loop(self) -> None:
        while True:
            batch, stop = self._next_batch()
            if self._abandoned.is_set():
                return
            if batch:
                try:
                    self._handle(batch)
                except BaseException as e:  # noqa: BLE001 -- raised again in the caller's thread
                    self.error = e
                    return
            if stop:
                return
