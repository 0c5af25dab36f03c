"""How records become JSON: the one encoder of ``run.json`` and ``samples.jsonl``.

A leaf module (it imports only :mod:`evalsuite.types`), so the writer
(:mod:`evalsuite.results.store`) and the per-sample guard (:mod:`evalsuite.pipeline.guard`), which
checks that a record can be written, share it without importing each other.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evalsuite.types import SampleRecord


def _json_default(value: Any) -> Any:
    """What ``json.dumps`` writes for values it does not know: sets and tuples as
    lists, paths as strings, mappings as objects, anything else as its ``repr``."""
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "items"):
        return dict(value)
    return repr(value)


def record_line(record: SampleRecord) -> str:
    """``record`` as one JSON line (no newline). Text is kept as UTF-8, except in a
    record holding a lone surrogate (a server can send ``"\\ud800"``), which cannot
    be encoded as UTF-8 and is written with ASCII escapes instead: the same JSON.
    Raises what ``json.dumps`` raises (RecursionError, ValueError for a cycle)."""
    data = record.to_dict()
    line = json.dumps(data, default=_json_default, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(data, default=_json_default, ensure_ascii=True)
    return line
