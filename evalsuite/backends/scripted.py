"""A scripted model: fixed outputs from a JSON file, for testing tasks without a model.

``evalsuite run --backend scripted --model answers.json --tasks my_task.py@my_task``
runs a task end to end (prompts, extraction, scoring, metrics, figures, results)
with outputs you wrote, as inspect_ai's ``mockllm`` model does. The file is either

- a list of strings: the outputs in request order (sample order, repeats
  together);
- or an object mapping a request to its output. Keys are tried from the most
  specific: ``"<task>/<sample_id>/<repeat>"``, ``"<task>/<sample_id>"``,
  ``"<sample_id>"``, then ``"*"`` (every other request).

A request with no scripted output is a failed request (``error`` set, empty text),
recorded on its sample like any other failure. Outputs are not cut at stop
sequences or token limits: they are returned as written, ``finish_reason`` ``stop``.
Token counts and timings are ``None`` (not measured).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from evalsuite.errors import UsageError
from evalsuite.registry import backends
from evalsuite.types import Generation, GenerationRequest


def load_script(path: str | Path) -> list[str] | dict[str, str]:
    """The outputs of a script file: a list of strings or an object of strings.

    Raises UsageError naming the file for unreadable JSON or other shapes.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"{path}: not a readable JSON file of scripted outputs ({type(e).__name__})") from None
    values = data.values() if isinstance(data, Mapping) else data if isinstance(data, list) else None
    if values is None or not all(isinstance(v, str) for v in values):
        raise UsageError(f"{path}: scripted outputs must be a JSON list of strings or an object of strings")
    return data


def scripted_output(script: list[str] | Mapping[str, str], request: GenerationRequest, index: int) -> str | None:
    """The output scripted for ``request`` (the ``index``-th of the run), or None."""
    if isinstance(script, list):
        return script[index] if index < len(script) else None
    for key in (f"{request.task}/{request.sample_id}/{request.repeat}", f"{request.task}/{request.sample_id}",
                request.sample_id, "*"):
        if key in script:
            return script[key]
    return None


@backends.register("scripted")
class ScriptedBackend:
    """Fixed outputs read from ``model`` (a JSON file, see the module docstring), or
    given directly as ``outputs`` (the same list or mapping; for tests in Python).

    Requests are counted across calls, so a list script is consumed in the order
    the run sends requests, however it batches them (requests answered from the
    response cache are not sent: use an object script, or ``--no-cache``).
    """

    name = "scripted"
    model_is_file = True  # --model is the script, not a model directory

    def __init__(self, model: str | None = None, *, outputs: list[str] | Mapping[str, str] | None = None,
                 **_: Any) -> None:
        if (model is None) == (outputs is None):
            raise UsageError("the scripted backend takes either a script file (--model FILE) or outputs")
        self.path = str(model) if model is not None else "<outputs>"
        self.script = load_script(model) if model is not None else outputs
        self.sent = 0

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        out = []
        for request in requests:
            text = scripted_output(self.script, request, self.sent)
            self.sent += 1
            if text is None:
                out.append(Generation("", "error", error=f"scripted: no output for {request.task}/"
                                                         f"{request.sample_id}/{request.repeat} in {self.path}"))
            else:
                out.append(Generation(text, "stop"))
        return out

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "engine": {"script": self.path}, "chat_template_sha256": None}

    def close(self) -> None:
        pass
