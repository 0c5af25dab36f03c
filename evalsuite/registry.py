"""One lazy registry for tasks and backends.

Built-in tasks live in the top-level ``tasks`` package, one module per task, each
registering a factory with :func:`evalsuite.task.task`. Third-party packages add
tasks through the ``evalsuite.tasks`` entry-point group (``name = "pkg.mod:factory"``)
and backends through ``evalsuite.backends``. Listing names never imports torch or
vllm: backend modules import their heavy libraries only when instantiated, and
entry points are loaded only when their name is asked for. A name of the form
``path/to/file.py@factory`` loads ``factory`` from that file (a task kept outside
any package, e.g. while writing it).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import pkgutil
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Generic, TypeVar

from evalsuite.errors import UsageError

F = TypeVar("F", bound=Callable)


class Registry(Generic[F]):
    """Names to factories, filled by decorators and entry points.

    ``builtin_package`` is imported module by module on first use so that its
    decorators run (only ``builtin_modules`` of it when given: a package that also
    holds helper modules, such as the Ray replicas, which must not be imported
    unless asked for); ``group`` is the entry-point group read for plugins.
    """

    def __init__(self, kind: str, group: str, builtin_package: str,
                 builtin_modules: tuple[str, ...] | None = None) -> None:
        self.kind = kind
        self.group = group
        self.builtin_package = builtin_package
        self.builtin_modules = builtin_modules
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
        names = self.builtin_modules or [m.name for m in pkgutil.iter_modules(package.__path__)]
        for name in names:
            if not name.startswith("_"):
                importlib.import_module(f"{self.builtin_package}.{name}")

    def _entry_points(self) -> dict:
        return {ep.name: ep for ep in entry_points(group=self.group)}

    def names(self) -> list[str]:
        self._discover()
        return sorted(set(self._factories) | set(self._entry_points()))

    def get(self, name: str) -> F:
        """The factory registered as ``name``.

        Raises :class:`UsageError` with a "did you mean" suggestion for unknown names.
        """
        if is_file_reference(name):
            return self._from_file(name)
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

    def _from_file(self, reference: str) -> F:
        """The factory ``NAME`` of ``PATH.py@NAME``, importing the file once (as a module
        named after its resolved path). UsageError for a missing file, a file that
        fails to import, or a missing or non-callable ``NAME``."""
        if reference in self._factories:
            return self._factories[reference]
        file, attr = reference.rsplit("@", 1)
        path = Path(file).expanduser().resolve()
        if not path.is_file():
            raise UsageError(f"{self.kind} file not found: {file} (in {reference!r}; give PATH.py@NAME)")
        module_name = "evalsuite_file_" + "".join(c if c.isalnum() else "_" for c in str(path))
        module = sys.modules.get(module_name)
        if module is None:
            spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            try:
                spec.loader.exec_module(module)
            except Exception as e:  # noqa: BLE001 -- a broken user file is a usage error, named in one line
                del sys.modules[module_name]
                raise UsageError(f"{file}: cannot be imported ({type(e).__name__}: {e})") from None
        factory = getattr(module, attr, None)
        if not callable(factory):
            names = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                           and getattr(v, "__module__", None) == module_name)
            raise UsageError(f"{file} has no {self.kind} factory {attr!r} (it defines: {', '.join(names) or 'none'})")
        self._factories[reference] = factory
        return factory


def is_file_reference(name: str) -> bool:
    """True for ``path/to/file.py@factory`` (a task loaded from a file)."""
    file, at, attr = name.rpartition("@")
    return bool(at and attr and file.endswith(".py"))


tasks: Registry = Registry("task", "evalsuite.tasks", "tasks")
backends: Registry = Registry("backend", "evalsuite.backends", "evalsuite.backends",
                              builtin_modules=("vllm", "openai", "hf", "scripted"))
