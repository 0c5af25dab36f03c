"""One lazy registry for tasks and backends.

Built-in tasks live in the top-level ``tasks`` package, one module per task, each
registering a factory with :func:`evalsuite.task.task`. Third-party packages add
tasks through the ``evalsuite.tasks`` entry-point group (``name = "pkg.mod:factory"``)
and backends through ``evalsuite.backends``. Listing names never imports torch or
vllm: backend modules import their heavy libraries only when instantiated, and
entry points are loaded only when their name is asked for.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from evalsuite.errors import UsageError

F = TypeVar("F", bound=Callable)


class Registry(Generic[F]):
    """Names to factories, filled by decorators and entry points.

    ``builtin_package`` is imported module by module on first use so that its
    decorators run; ``group`` is the entry-point group read for plugins.
    """

    def __init__(self, kind: str, group: str, builtin_package: str) -> None:
        self.kind = kind
        self.group = group
        self.builtin_package = builtin_package
        self._factories: dict[str, F] = {}
        self._discovered = False

    def register(self, name: str) -> Callable[[F], F]:
        def decorate(factory: F) -> F:
            self._factories[name] = factory
            return factory

        return decorate

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        package = importlib.import_module(self.builtin_package)
        for module in pkgutil.iter_modules(package.__path__):
            if not module.name.startswith("_"):
                importlib.import_module(f"{self.builtin_package}.{module.name}")

    def _entry_points(self) -> dict:
        return {ep.name: ep for ep in entry_points(group=self.group)}

    def names(self) -> list[str]:
        self._discover()
        return sorted(set(self._factories) | set(self._entry_points()))

    def get(self, name: str) -> F:
        """The factory registered as ``name``.

        Raises :class:`UsageError` with a "did you mean" suggestion for unknown names.
        """
        self._discover()
        if name in self._factories:
            return self._factories[name]
        plugins = self._entry_points()
        if name in plugins:
            factory = plugins[name].load()
            self._factories[name] = factory
            return factory
        close = difflib.get_close_matches(name, self.names(), n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UsageError(
            f"unknown {self.kind} '{name}'{hint}; known: {', '.join(self.names())}"
        )


tasks: Registry = Registry("task", "evalsuite.tasks", "tasks")
backends: Registry = Registry("backend", "evalsuite.backends", "evalsuite.backends")
