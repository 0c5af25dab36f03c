import pytest

from evalsuite.errors import UsageError
from evalsuite.models import model_fingerprint, resolve_model


def test_missing_local_path_is_an_error():
    with pytest.raises(UsageError, match="model path does not exist: ./no-such-model"):
        resolve_model("./no-such-model")


def test_hub_id_and_served_name():
    assert resolve_model("Qwen/Qwen2.5-7B-Instruct").source == "hub"
    served = resolve_model("my-served-model", backend="openai")
    assert (served.source, served.path) == ("served", "my-served-model")
    assert model_fingerprint(served) is None
    with pytest.raises(UsageError):
        resolve_model("my-served-model", backend="vllm")


def test_embedded_model_fingerprint_is_stable(embedded_model):
    ref = resolve_model(None)
    assert ref.source == "embedded" and ref.path == embedded_model
    digest = model_fingerprint(ref)
    assert len(digest) == 64 and digest == model_fingerprint(ref)
