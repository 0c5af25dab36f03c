"""Finding dataset files: a local folder first, the dataset hub as a fallback."""

from __future__ import annotations

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


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Yields one dict per non-blank line; a malformed line raises UsageError naming it."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise UsageError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None


def require_file(path: Path, flag: str = "--data-dir") -> Path:
    if not path.is_file():
        raise UsageError(
            f"data file not found: {path} (point {flag} or EVALSUITE_DATA_DIR at the folder that holds it)"
        )
    return path
