"""Finding dataset files: a local folder first, the dataset hub as a fallback."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from evalsuite.errors import UsageError


def data_dir(explicit: str | os.PathLike | None) -> Path | None:
    """``--data-dir`` if given, else ``$EVALSUITE_DATA_DIR``, else ``None``."""
    value = explicit or os.environ.get("EVALSUITE_DATA_DIR")
    return Path(value).expanduser() if value else None


def read_jsonl(path: Path, flag: str = "--data-dir", schema: type | None = None) -> Iterator[dict[str, Any]]:
    """Yields one JSON object per non-blank line of a UTF-8 file (see :func:`numbered_jsonl`)."""
    for _, row in numbered_jsonl(path, flag, schema):
        yield row


def numbered_jsonl(path: Path, flag: str = "--data-dir",
                   schema: type | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yields ``(line number, object)`` for each non-blank line of a UTF-8 JSONL file
    (gzip-compressed when its name ends in ``.gz``).

    ``schema``: a pydantic model each object must follow (extra keys allowed as the
    model says). Raises UsageError naming the file, the line and ``flag`` (the
    option that points at another file) for an unreadable file, a line that is not
    UTF-8, not JSON (or nested too deeply to read), not an object, or that breaks
    ``schema``.
    """
    from evalsuite.schemas import check

    fix = f"fix the file, or pass another with {flag}"
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        f = opener(path, "rb")
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror or e} ({fix})") from None
    with f:
        lineno = 0
        while True:
            try:
                raw = f.readline()
            except (OSError, EOFError) as e:  # unreadable; for .gz also not gzip, or truncated
                raise UsageError(f"cannot read {path}: {getattr(e, 'strerror', None) or e} ({fix})") from None
            if not raw:
                return
            lineno += 1
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UsageError(f"{where}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                                 f"{fix}") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UsageError(f"{where}: not valid JSON ({e.msg} at column {e.colno}); {fix}") from None
            except RecursionError:
                raise UsageError(f"{where}: JSON nested too deeply to read; {fix}") from None
            if not isinstance(row, dict):
                raise UsageError(f"{where}: a record must be a JSON object, got {_json_type(row)}; {fix}")
            if schema is not None:
                check(schema, row, where, fix)
            yield lineno, row


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number",
             type(None): "null"}
    return names.get(type(value), type(value).__name__)


def require_file(path: Path, flag: str = "--data-dir") -> Path:
    if not path.is_file():
        raise UsageError(
            f"data file not found: {path} (point {flag} or EVALSUITE_DATA_DIR at the folder that holds it)"
        )
    return path
