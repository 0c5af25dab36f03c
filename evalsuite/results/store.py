"""The results directory: ``results/<run_id>/run.json`` and ``samples.jsonl``.

``samples.jsonl`` is append-only: each record is written and flushed as soon as
it is scored, so a run killed midway leaves every finished sample
readable. ``run.json`` is replaced atomically (write, then rename): it holds the
config and provenance from the start, and the metrics once the run finishes.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from evalsuite.errors import UsageError
from evalsuite.results.encoding import _json_default, record_line  # noqa: F401 -- record_line is part of this API
from evalsuite.types import SampleRecord

SCHEMA_VERSION = 1


def new_run_id(model_name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", model_name).strip("-")[:40] or "model"
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}-{secrets.token_hex(3)}"


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Writes ``data`` to a temporary file and renames it to ``path``. The temporary
    file is the thread's own: a stop's last words (:func:`evalsuite.pipeline.lifecycle.last_words`,
    on a timer thread) never write into the file another thread is writing."""
    tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


class RunWriter:
    """Writes one run directory. Use as a context manager."""

    def __init__(self, run_dir: Path) -> None:
        from evalsuite.paths import claim_dir

        self.run_dir = claim_dir(Path(run_dir))  # atomic: one of two runs with one --run-id gets it
        self._samples = open(self.run_dir / "samples.jsonl", "a", encoding="utf-8")  # noqa: SIM115 -- closed by close()

    def write_run(self, data: dict[str, Any]) -> None:
        write_json_atomic(self.run_dir / "run.json", {"schema_version": SCHEMA_VERSION, **data})

    def append(self, records: Iterable[SampleRecord]) -> list[SampleRecord]:
        """Writes one line per record and flushes; returns the records as written.

        A record that cannot be written as JSON (too deeply nested, circular) is
        replaced by :func:`evalsuite.pipeline.guard.writable_record`, which says why in its
        ``error``: the per-sample guard's ``record`` step.
        """
        from evalsuite.pipeline.guard import record_and_line

        written = []
        for record in records:
            record, line = record_and_line(record)
            self._samples.write(line + "\n")
            written.append(record)
        self._samples.flush()
        return written

    def close(self) -> None:
        self._samples.close()

    def __enter__(self) -> RunWriter:  # noqa: PYI034 -- final class
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sample_order(record: dict[str, Any]) -> tuple[Any, ...]:
    """A sort key putting ``samples.jsonl`` records in a deterministic order: by task,
    then sample id with its numbers compared as numbers (``test-2`` before ``test-10``),
    then repeat."""
    parts = re.split(r"(\d+)", str(record.get("sample_id", "")))
    natural = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts if p)
    return (str(record.get("task", "")), natural, record.get("repeat") or 0)


def read_samples(run_dir: Path, ordered: bool = False) -> list[dict[str, Any]]:
    """Every complete record of a run's ``samples.jsonl`` (a torn last line from a
    killed run, and any other line that is not a record, :func:`parse_record`, is
    skipped), in completion order (the order they were scored and
    written), or with ``ordered`` in :func:`sample_order`."""
    records = []
    with open(Path(run_dir) / "samples.jsonl", "rb") as f:
        for line in f:
            record = parse_record(line)
            if record is not None:
                records.append(record)
    return sorted(records, key=sample_order) if ordered else records


def read_json_file(path: Path, schema: type, fix: str) -> dict[str, Any]:
    """A JSON object file (``run.json``, ``suite.json``) checked against ``schema`` (a
    model of :mod:`evalsuite.schemas`).

    Raises FileNotFoundError for a missing file, and UsageError naming the file for
    one that cannot be read, is not JSON (or is nested too deeply), is not an object
    or breaks ``schema`` (``fix``: what to do about it).
    """
    from evalsuite.schemas import check, require_mapping

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError, RecursionError) as e:  # JSON and UTF-8 errors are ValueErrors
        raise UsageError(f"cannot read {path}: {' '.join(str(e).split())[:200]} ({fix})") from None
    check(schema, require_mapping(data, str(path), path.name, fix), str(path), fix)
    return data


def read_run(run_dir: Path, what: str = "give a run directory", fix: str = "not a run.json that evalsuite wrote",
             schema: type | None = None) -> dict[str, Any]:
    """``run.json`` of a run directory, checked against ``schema``
    (:class:`evalsuite.schemas.RunFile`, what resuming needs, unless given: reports
    read with :class:`evalsuite.schemas.ReportedRun`).

    Raises UsageError naming the file for a missing directory or file (``what``: the
    argument that takes a run directory), unreadable JSON, values of the wrong type
    (``fix``: what to do about it), or a ``schema_version`` newer than
    :data:`SCHEMA_VERSION`.
    """
    from evalsuite.schemas import RunFile

    path = Path(run_dir) / "run.json"
    if not Path(run_dir).is_dir():
        raise UsageError(f"run directory does not exist: {run_dir} ({what})")
    try:
        data = read_json_file(path, schema or RunFile, fix)
    except FileNotFoundError:
        raise UsageError(f"{run_dir} has no run.json (not an evalsuite run directory; {what})") from None
    version = data.get("schema_version", 1)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise UsageError(f"{path}: schema_version {version!r} is newer than this evalsuite reads "
                         f"({SCHEMA_VERSION}); upgrade evalsuite")
    return data


def parse_record(line: bytes | str) -> dict[str, Any] | None:
    """One ``samples.jsonl`` line as a record, or None when it is not one: not JSON
    (a torn line, garbage), nested too deeply, or not following
    :class:`evalsuite.schemas.SampleLine` (a verdict outside [0, 1], a NaN timing ...)."""
    from evalsuite.schemas import SampleLine

    try:
        record = json.loads(line)
        SampleLine.model_validate(record)
    except (ValueError, TypeError, RecursionError):  # ValidationError and UnicodeDecodeError are ValueErrors
        return None
    return record
