"""Names and folders that come from the user.

- A run id (``--run-id``), a suite entry ``id`` and a report ``--name`` are *names*:
  one path component, never a path. :func:`check_name` refuses path separators,
  ``.`` and ``..``, control characters and names too long for a file system, so
  nothing is ever written outside the output directory.
- An output folder (``--output-dir``) must be a directory that exists or can be
  created, and be writable: :func:`check_output_dir` says which of these fails,
  before any model is loaded; :func:`make_dir` and :func:`claim_dir` turn an
  ``OSError`` at creation (a race, a full disk) into the same one-line error.
"""

from __future__ import annotations

import os
from pathlib import Path

from evalsuite.errors import UsageError

NAME_MAX_BYTES = 255  # NAME_MAX on Linux, macOS and Windows file systems


def check_name(value: str, flag: str) -> str:
    """``value`` if it is a plain file name; UsageError naming ``flag`` otherwise.

    Refused: an empty name, ``.`` and ``..``, ``/`` or ``\\`` anywhere, control
    characters (NUL, newline ...), and names longer than 255 bytes in UTF-8.
    """
    problem = None
    if not isinstance(value, str) or not value:
        problem = "it is empty"
    elif value in (".", ".."):
        problem = f"{value!r} is a path, not a name"
    elif "/" in value or "\\" in value:
        problem = "it contains a path separator"
    elif any(ord(c) < 32 or ord(c) == 127 for c in value):
        problem = "it contains a control character"
    elif len(value.encode("utf-8", "surrogatepass")) > NAME_MAX_BYTES:
        problem = f"it is longer than {NAME_MAX_BYTES} bytes"
    if problem:
        raise UsageError(f"{flag} must be a name, not a path ({problem}): {value!r}")
    return value


def _first_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(".")


def check_output_dir(path: str | os.PathLike, flag: str = "--output-dir") -> Path:
    """``path`` if it is, or can be created as, a writable directory.

    Raises UsageError naming ``flag`` when ``path`` is a file, lies under a file,
    or when the directory (or the nearest existing folder above it) is read-only.
    Creates nothing.
    """
    path = Path(path)
    existing = _first_existing(path)
    if not existing.is_dir():
        where = "is a file" if existing == path else f"lies under a file ({existing})"
        raise UsageError(f"{flag} {path} {where}; choose a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "is read-only" if existing == path else f"cannot be created: {existing} is read-only"
        raise UsageError(f"{flag} {path} {where}; choose a writable directory")
    return path


def check_output_file(path: str | os.PathLike, flag: str = "--output") -> Path:
    """``path`` if a file can be written there (it may exist; it is replaced).

    Raises UsageError naming ``flag`` when ``path`` is a directory, lies under a
    file, or its nearest existing folder is read-only. Creates nothing.
    """
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a directory; name a file")
    existing = _first_existing(path.parent)
    if not existing.is_dir():
        raise UsageError(f"{flag} {path} lies under a file ({existing}); choose another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path} cannot be written: {existing} is read-only; choose another path")
    return path


def make_dir(path: Path, flag: str = "--output-dir") -> Path:
    """``path.mkdir(parents=True, exist_ok=True)``, an ``OSError`` turned into a
    UsageError naming ``flag``."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UsageError(f"cannot create {path}: a file is in the way; choose another {flag}") from None
    except OSError as e:
        raise UsageError(f"cannot create {path}: {e.strerror or e}; choose another {flag}") from None
    return path


def claim_dir(path: Path, what: str = "run directory", name_flag: str = "--run-id",
              parent_flag: str = "--output-dir") -> Path:
    """Creates the directory ``path`` (and its parents), failing if it exists.

    ``mkdir`` without ``exist_ok`` is atomic, so of two runs started at once with
    one name exactly one gets the directory; the other gets a UsageError naming
    ``name_flag``. A parent that cannot be created names ``parent_flag``.
    """
    make_dir(path.parent, parent_flag)
    try:
        path.mkdir()
    except FileExistsError:
        raise UsageError(f"{what} already exists: {path} (another run with this name may have started "
                         f"first); choose another {name_flag}") from None
    except OSError as e:
        raise UsageError(f"cannot create {path}: {e.strerror or e}; choose another {parent_flag}") from None
    return path
