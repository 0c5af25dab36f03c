"""Derived tests of code problems, cached per data file.

Each problem's test is turned into data once per data file by running the
reference solution under it with a recording wrapper
(:func:`evalsuite.scoring.code.derive_tests`, the approach of EvalPlus). The result
is cached in ``<cache dir>/humaneval-tests/`` under a name that holds the data
file's SHA-256, the Python version, the cache format and a digest of the
recording code, so any change to one of them derives the tests again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from evalsuite.execution.sandbox import Limits, SandboxPool
from evalsuite.scoring.code import (
    TEST_SEED,
    DerivedTests,
    derivation_program,
    derive_tests,
    tests_from_json,
    tests_to_json,
)
from evalsuite.task import file_sha256

DERIVED_TESTS_FORMAT = 1


def derivation_limits(limits: Limits) -> Limits:
    """Limits for running a reference solution under its recorded test (more time:
    the recording copies every input and value)."""
    return dataclasses.replace(limits, timeout_s=max(10.0, 2 * limits.timeout_s), cpu_s=None)


def derived_tests_dir() -> Path:
    """Where derived tests are cached: ``<cache dir>/humaneval-tests`` (``$EVALSUITE_CACHE``
    or ``~/.cache/evalsuite``)."""
    from evalsuite.models import cache_dir

    return cache_dir() / "humaneval-tests"


def derived_tests_file(data_file: Path) -> Path:
    """The cache file for a data file: keyed by its SHA-256, the Python version, the
    format and the recording code (so a change to how tests are derived derives again)."""
    version = f"py{sys.version_info[0]}{sys.version_info[1]}"
    recorder = hashlib.sha256(derivation_program("", "", "", "f").encode()).hexdigest()[:12]
    return derived_tests_dir() / f"{file_sha256(data_file)}-{version}-v{DERIVED_TESTS_FORMAT}-{recorder}.json"


def _read_derived(path: Path, problems: Sequence[Mapping[str, Any]]) -> dict[str, DerivedTests] | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("format") != DERIVED_TESTS_FORMAT or doc.get("seed") != TEST_SEED:
            return None
        tests = {tid: tests_from_json(t) for tid, t in doc["problems"].items()}
    except (OSError, ValueError, TypeError, KeyError, IndexError, RecursionError):
        return None  # absent or unreadable: derive again
    return tests if all(p["task_id"] in tests for p in problems) else None


def load_derived_tests(data_file: Path, problems: Sequence[Mapping[str, Any]], pool: SandboxPool,
                       limits: Limits) -> dict[str, DerivedTests]:
    """Each problem's derived tests by ``task_id``: from the cache, or derived now in
    ``pool`` (:func:`~evalsuite.scoring.code.derive_tests`) and cached. A cache file
    that cannot be read is derived again; one that cannot be written is skipped."""
    path = derived_tests_file(data_file)
    cached = _read_derived(path, problems)
    if cached is not None:
        return cached
    tests = {p["task_id"]: t for p, t in zip(problems, derive_tests(problems, pool, derivation_limits(limits)))}
    doc = {"format": DERIVED_TESTS_FORMAT, "seed": TEST_SEED, "data_file": str(data_file),
           "problems": {tid: tests_to_json(t) for tid, t in tests.items()}}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps(doc), encoding="utf-8")
        os.replace(partial, path)
    except OSError:
        pass  # a read-only cache only costs a derivation next time
    return tests


def tests_for(problems: Sequence[Mapping[str, Any]], pool: SandboxPool, limits: Limits) -> dict[str, DerivedTests]:
    """Each problem's derived tests by ``task_id``, derived now (uncached)."""
    unique = list({p["task_id"]: p for p in problems}.values())
    return {p["task_id"]: t for p, t in zip(unique, derive_tests(unique, pool, derivation_limits(limits)))}
