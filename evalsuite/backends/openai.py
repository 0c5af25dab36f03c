"""OpenAI-compatible HTTP servers (``vllm serve``, SGLang, TGI, OpenAI itself).

Conversations go to ``POST /v1/chat/completions`` (the server applies the model's
chat template), plain-string prompts to ``POST /v1/completions``. Every request is
streamed (server-sent events, as in the OpenAI API reference) so that TTFT,
inter-token latency and end-to-end latency are measured the way
``vllm bench serve`` measures them: from sending the request to the first
non-empty content chunk, between consecutive content chunks, and to the last one.

Several ``base_urls`` are replicas of one model: each request goes to the replica
with the fewest requests in flight (ties rotate). Results do not depend on the
number of replicas, because greedy decoding is deterministic and sampled requests
carry their own seed derived from the sample's identity
(:func:`evalsuite.pipeline.runner.request_seed`).

Faults are data: a connection error, HTTP 429 or 5xx is retried with exponential
backoff (``backoff_base_s * 2**attempt``, capped at ``backoff_cap_s``; a
``Retry-After`` header is honoured up to the cap) on another replica when there
is one, at most ``max_retries`` times; a request that still fails, times out
(``request_timeout`` seconds for the whole request, not retried) or gets another
4xx becomes a :class:`~evalsuite.types.Generation` with ``error`` set.

The API key is read from ``EVALSUITE_API_KEY``, else ``OPENAI_API_KEY``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalsuite.backends import messages_to_dicts
from evalsuite.errors import UsageError
from evalsuite.registry import backends
from evalsuite.types import Generation, GenerationRequest, Timings

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504}) | frozenset(range(505, 600))
# The most characters read from one response: a model's answer (bounded by max_tokens) is far
# smaller; a server that ignores max_tokens, or streams without end, must not fill memory.
MAX_RESPONSE_CHARS = 64 * 2**20
_LINE_END = re.compile(r"\r\n|\r|\n")


class _Retryable(Exception):
    """A failure worth another attempt: connection error, 429, 5xx, cut-off stream."""

    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class _Fatal(Exception):
    """A failure another attempt would repeat: 4xx other than 429, malformed reply."""


def normalize_base_url(url: str) -> str:
    """``http://host:8000`` and ``http://host:8000/v1/`` both become ``http://host:8000/v1``.

    Raises UsageError for a URL without ``http://`` or ``https://``, or one httpx
    cannot send to (no host, a bad port, control characters).
    """
    import httpx

    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"--base-url must start with http:// or https://, got {url!r}")
    try:
        if not httpx.URL(url).host:
            raise httpx.InvalidURL("no host")
    except httpx.InvalidURL as e:
        raise UsageError(f"--base-url is not a valid URL ({e}), got {url!r}") from None
    host_and_path = url.split("://", 1)[1]
    return url if "/" in host_and_path else f"{url}/v1"


def backoff_s(attempt: int, base_s: float, cap_s: float, retry_after_s: float | None = None) -> float:
    """Seconds to wait before retry number ``attempt + 1`` (``attempt`` counts from 0).

    ``base_s * 2**attempt`` capped at ``cap_s``; a server's ``Retry-After`` replaces it,
    still capped.
    """
    if retry_after_s is not None:
        return min(cap_s, max(0.0, retry_after_s))
    return min(cap_s, base_s * (2 ** attempt))


def choose_model(requested: str | None, served: Sequence[str], default_requested: bool) -> str:
    """The served model id to send in requests.

    ``requested`` is what ``--model`` resolved to (a path or hub id). It is used when
    a server lists it, or lists exactly one id with the same last path component
    (``Qwen/Qwen2.5-7B-Instruct`` served, ``/models/Qwen2.5-7B-Instruct`` asked).
    When no model was asked for (``default_requested``) and the server serves exactly
    one, that one is used. Raises UsageError otherwise, listing what is served.
    """
    if requested is not None and requested in served:
        return requested
    if requested is not None:
        name = Path(requested.rstrip("/")).name
        same_name = [s for s in served if Path(s.rstrip("/")).name == name]
        if len(same_name) == 1:
            return same_name[0]
    if default_requested and len(served) == 1:
        return served[0]
    raise UsageError(
        f"the server does not serve model {requested!r}; it serves: {', '.join(served) or 'nothing'}"
        " (pass one of these with --model)"
    )


def request_body(request: GenerationRequest, model: str) -> tuple[str, dict[str, Any]]:
    """The endpoint path (relative to the base URL) and JSON body for one request."""
    p = request.params
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": p.max_tokens,
        "temperature": p.temperature,
        "top_p": p.top_p,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if p.stop:
        body["stop"] = list(p.stop)
    if p.seed is not None:
        body["seed"] = p.seed
    if request.json_schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": dict(request.json_schema)},
        }
    if isinstance(request.prompt, str):
        return "/completions", {**body, "prompt": request.prompt}
    return "/chat/completions", {**body, "messages": messages_to_dicts(request.prompt)}


@dataclass
class _Replica:
    url: str
    in_flight: int = 0
    sent: int = 0
    failed: int = 0


@dataclass
class _Stream:
    """What one streamed response held."""

    text: str
    finish_reason: str | None
    prompt_tokens: int | None
    output_tokens: int | None
    timings: Timings


class MalformedReply(ValueError):
    """A server reply that does not follow the OpenAI API's shape."""


def parse_sse_line(line: str) -> dict[str, Any] | None:
    """One ``data: {...}`` event as a dict; None for other lines and ``[DONE]``.

    Raises :class:`MalformedReply` when the data is not a JSON object (not JSON,
    nested too deeply to read, or another JSON value such as ``[1,2,3]``).
    """
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    if not data or data == "[DONE]":
        return None
    try:
        event = json.loads(data)
    except ValueError as e:
        raise MalformedReply(f"not JSON ({e})") from None
    except RecursionError:
        raise MalformedReply("JSON nested too deeply to read") from None
    if not isinstance(event, dict):
        raise MalformedReply(f"a JSON {type(event).__name__}, not an object")
    return event


@dataclass(frozen=True)
class EventPart:
    """What one stream event adds: text, and the finish reason and usage if it says them."""

    text: str
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    has_usage: bool


def read_event(event: Mapping[str, Any], chat: bool) -> EventPart:
    """The content of one parsed event (:func:`parse_sse_line`) of a streamed
    completion: ``choices[].delta.content`` (chat) or ``choices[].text``, the last
    ``finish_reason`` and ``usage``. Raises :class:`MalformedReply` when the event
    does not follow :class:`evalsuite.schemas.StreamEvent`.
    """
    from pydantic import ValidationError

    from evalsuite.schemas import StreamEvent, first_problem

    try:
        parsed = StreamEvent.model_validate(event)
    except ValidationError as e:
        raise MalformedReply(first_problem(e)) from None
    pieces: list[str] = []
    finish = None
    for choice in parsed.choices or ():
        piece = (choice.delta.content if choice.delta is not None else None) if chat else choice.text
        if piece:
            pieces.append(piece)
        finish = choice.finish_reason or finish
    usage = parsed.usage
    return EventPart("".join(pieces), finish, usage.prompt_tokens if usage else None,
                     usage.completion_tokens if usage else None, usage is not None)


def served_model_ids(payload: Any) -> list[str]:
    """The model ids of a ``GET /v1/models`` reply; raises :class:`MalformedReply`
    unless it follows :class:`evalsuite.schemas.ModelList` (``{"data": [{"id": str}]}``)."""
    from pydantic import ValidationError

    from evalsuite.schemas import ModelList, first_problem

    try:
        return [m.id for m in ModelList.model_validate(payload).data]
    except ValidationError as e:
        raise MalformedReply(f"unexpected /models reply: {first_problem(e)}") from None


@backends.register("openai")
class OpenAIBackend:
    """A model behind one or more OpenAI-compatible endpoints.

    Args:
        model: what ``--model`` resolved to; matched against ``GET /v1/models``
            (see :func:`choose_model`). ``None`` takes the one served model.
        base_urls: endpoints of replicas of one model (default ``$OPENAI_BASE_URL``
            or ``http://127.0.0.1:8000/v1``); ``/v1`` is added when the URL has no path.
        max_concurrency: requests in flight at once over all replicas (default 16).
        request_timeout: seconds for one attempt, from sending to the last byte (default 600).
        max_retries: further attempts after a connection error, 429 or 5xx (default 5).
        backoff_base_s, backoff_cap_s: exponential backoff between attempts, in seconds.
        api_key: bearer token; default ``$EVALSUITE_API_KEY``, else ``$OPENAI_API_KEY``.
        extra_body: fields added to every request body (e.g. vLLM's ``ignore_eos``).

    Raises UsageError for bad settings, when no endpoint answers ``/models``, or when
    the model is not served.
    """

    name = "openai"
    serves_models_by_name = True  # --model may name a served model: no local path needed

    def __init__(
        self,
        model: str | None = None,
        *,
        base_urls: Sequence[str] | None = None,
        max_concurrency: int | None = None,
        request_timeout: float | None = None,
        max_retries: int | None = None,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 10.0,
        api_key: str | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> None:
        self.extra_body = dict(extra_body or {})
        self.base_urls = _base_urls(base_urls)
        self.max_concurrency = 16 if max_concurrency is None else max_concurrency
        self.request_timeout = 600.0 if request_timeout is None else request_timeout
        self.max_retries = 5 if max_retries is None else max_retries
        if self.max_concurrency < 1:
            raise UsageError(f"--max-concurrency must be >= 1, got {self.max_concurrency}")
        if self.request_timeout <= 0:
            raise UsageError(f"--request-timeout must be > 0 seconds, got {self.request_timeout}")
        if self.max_retries < 0:
            raise UsageError(f"--max-retries must be >= 0, got {self.max_retries}")
        self.backoff_base_s, self.backoff_cap_s = backoff_base_s, backoff_cap_s
        key = api_key or os.environ.get("EVALSUITE_API_KEY") or os.environ.get("OPENAI_API_KEY")
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.replicas = [_Replica(u) for u in self.base_urls]
        self.served = self._served_models()
        ids = sorted({m for models in self.served.values() for m in models})
        self.model = choose_model(model, ids, default_requested=model is None or _is_embedded_default(model))
        missing = [u for u, models in self.served.items() if self.model not in models]
        if missing:
            raise UsageError(f"replica(s) {', '.join(missing)} do not serve {self.model!r}")

    @staticmethod
    def check_settings(settings: Mapping[str, Any]) -> None:
        """UsageError for a base URL that cannot be sent to, before anything is written."""
        _base_urls(settings.get("base_urls"))

    def _served_models(self) -> dict[str, list[str]]:
        """Model ids per replica that answered ``GET /models``; UsageError if none did."""
        import httpx

        served, failures = {}, []
        for url in self.base_urls:
            try:
                response = httpx.get(f"{url}/models", headers=self._headers, timeout=min(30.0, self.request_timeout))
                response.raise_for_status()
                try:
                    payload = response.json()
                except RecursionError:
                    raise MalformedReply("JSON nested too deeply to read") from None
                served[url] = served_model_ids(payload)
            except (httpx.HTTPError, ValueError) as e:  # MalformedReply and JSON errors are ValueErrors
                failures.append(f"{url}: {type(e).__name__}: {e}")
        if not served:
            raise UsageError("no endpoint answered GET /models (is the server up?): " + "; ".join(failures))
        return served

    def _pick(self, avoid: _Replica | None) -> _Replica:
        """The least-loaded replica (fewest in flight, then fewest sent), not ``avoid`` if possible."""
        candidates = [r for r in self.replicas if r is not avoid] or self.replicas
        return min(candidates, key=lambda r: (r.in_flight, r.sent))

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """All requests at once, at most ``max_concurrency`` in flight; results in order."""
        return asyncio.run(self._generate(requests))

    def stream(self, requests: Iterable[GenerationRequest]) -> Iterator[tuple[int, Generation]]:
        """``(index, generation)`` for each request as it finishes (:mod:`evalsuite.backends.queue`).

        The bounded async client runs on its own event loop in a helper thread, at
        most ``max_concurrency`` requests in flight (twice that many read ahead from
        ``requests``); each completion is handed over as it arrives, retries and
        errors as :meth:`generate`. Stopping the iterator early cancels what is left.
        """
        import queue as _queue
        import threading

        done = object()
        handed: _queue.Queue = _queue.Queue()
        stop = threading.Event()

        def work() -> None:
            try:
                asyncio.run(self._stream_all(requests, handed, stop))
            except BaseException as e:  # noqa: BLE001 -- handed to the consuming thread, raised there
                handed.put(_Raised(e))
            finally:
                handed.put(done)

        thread = threading.Thread(target=work, name="evalsuite-openai-stream", daemon=True)
        thread.start()
        try:
            while (item := handed.get()) is not done:
                if isinstance(item, _Raised):
                    raise item.error
                yield item
        finally:
            stop.set()
            thread.join()

    async def _stream_all(self, requests: Iterable[GenerationRequest], handed, stop) -> None:
        import httpx

        from evalsuite.backends.queue import RequestQueue, pull

        source = requests if isinstance(requests, RequestQueue) else iter(requests)
        limits = httpx.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency)
        slots = asyncio.Semaphore(self.max_concurrency)
        timeout = httpx.Timeout(self.request_timeout, connect=min(10.0, self.request_timeout))
        window = 2 * self.max_concurrency
        async with httpx.AsyncClient(limits=limits, timeout=timeout, headers=self._headers) as client:
            pending: dict[asyncio.Task, int] = {}
            index, exhausted = 0, False
            while not stop.is_set() and (pending or not exhausted):
                if not exhausted and len(pending) < window:
                    want = window - len(pending)
                    batch, exhausted = (pull(source, want, False) if pending
                                        else await asyncio.to_thread(pull, source, want, True))
                    for request in batch:
                        pending[asyncio.ensure_future(self._request(client, slots, request))] = index
                        index += 1
                if not pending:
                    continue
                finished, _ = await asyncio.wait(pending, timeout=0.05, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    handed.put((pending.pop(task), task.result()))
            for task in pending:
                task.cancel()

    @property
    def headers(self) -> dict[str, str]:
        return dict(self._headers)

    async def request_one(self, client, slots: asyncio.Semaphore, request: GenerationRequest) -> Generation:
        """One request with retries, on an ``httpx.AsyncClient`` the caller opened,
        holding one of ``slots`` while in flight (used by :mod:`evalsuite.metrics.load`)."""
        return await self._request(client, slots, request)

    async def _generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        import httpx

        limits = httpx.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency)
        slots = asyncio.Semaphore(self.max_concurrency)
        timeout = httpx.Timeout(self.request_timeout, connect=min(10.0, self.request_timeout))
        async with httpx.AsyncClient(limits=limits, timeout=timeout, headers=self._headers) as client:
            return list(await asyncio.gather(*(self._request(client, slots, r) for r in requests)))

    async def _request(self, client, slots: asyncio.Semaphore, request: GenerationRequest) -> Generation:
        import httpx

        path, body = request_body(request, self.model)
        body.update(self.extra_body)
        prompt_text = request.prompt if isinstance(request.prompt, str) else None
        avoid: _Replica | None = None
        for attempt in range(self.max_retries + 1):
            async with slots:
                replica = self._pick(avoid)
                replica.in_flight += 1
                replica.sent += 1
                try:
                    got = await asyncio.wait_for(self._stream(client, replica.url + path, body), self.request_timeout)
                    return Generation(got.text, got.finish_reason, prompt_text, got.prompt_tokens,
                                      got.output_tokens, got.timings)
                except httpx.ConnectTimeout as e:  # an unreachable host, not a slow model
                    reason, retry_after = f"{type(e).__name__}: {e} from {replica.url}", None
                except (asyncio.TimeoutError, httpx.TimeoutException):
                    return _failed(prompt_text, f"timeout: no complete response within {self.request_timeout:g} s "
                                                f"from {replica.url}")
                except _Fatal as e:
                    return _failed(prompt_text, f"{e} from {replica.url}")
                except httpx.TransportError as e:
                    reason, retry_after = f"{type(e).__name__}: {e} from {replica.url}", None
                except _Retryable as e:
                    reason, retry_after = f"{e} from {replica.url}", e.retry_after_s
                except Exception as e:  # noqa: BLE001 -- whatever a server sends, a failed request is data
                    return _failed(prompt_text, f"{type(e).__name__}: {' '.join(str(e).split())[:300]} "
                                                f"from {replica.url}")
                finally:
                    replica.in_flight -= 1
                replica.failed += 1
                avoid = replica
            if attempt < self.max_retries:
                await asyncio.sleep(backoff_s(attempt, self.backoff_base_s, self.backoff_cap_s, retry_after))
        return _failed(prompt_text, f"{reason} (gave up after {self.max_retries + 1} attempts)")

    async def _stream(self, client, url: str, body: dict[str, Any]) -> _Stream:
        """One attempt: POST, then read the event stream to its end."""
        chat = url.endswith("/chat/completions")
        start = time.perf_counter()
        arrivals: list[float] = []
        parts: list[str] = []
        finish: str | None = None
        usage: dict[str, Any] = {}
        done = False
        async with client.stream("POST", url, json=body) as response:
            if response.status_code != 200:
                detail = await _body_start(response, 300)
                reason = f"HTTP {response.status_code}: {detail}"
                if response.status_code in _RETRY_STATUS:
                    raise _Retryable(reason, _retry_after(response.headers.get("retry-after")))
                raise _Fatal(reason)
            async for line in capped_lines(response.aiter_text(), MAX_RESPONSE_CHARS):
                if line.strip() == "data: [DONE]":
                    done = True
                    break
                try:
                    event = parse_sse_line(line)
                    if event is not None and "error" in event:
                        raise _Fatal(f"server error in the stream: {_shown_json(event['error'])}")
                    part = read_event(event, chat) if event is not None else None
                except MalformedReply as e:
                    raise _Fatal(f"malformed event in the response stream: {line[:200]!r} ({e})") from None
                if part is None:
                    continue
                if part.text:
                    arrivals.append(time.perf_counter())
                    parts.append(part.text)
                finish = part.finish_reason or finish
                if part.has_usage:
                    usage = {"prompt_tokens": part.prompt_tokens, "completion_tokens": part.completion_tokens}
        if not done and finish is None:
            raise _Retryable("the response stream ended before the model finished")
        end = arrivals[-1] if arrivals else time.perf_counter()
        timings = Timings(
            e2e_s=end - start,
            ttft_s=arrivals[0] - start if arrivals else None,
            itl_s=tuple(b - a for a, b in itertools.pairwise(arrivals)) if arrivals else None,
        )
        return _Stream("".join(parts), finish, usage.get("prompt_tokens"), usage.get("completion_tokens"), timings)

    def replica_counts(self) -> dict[str, dict[str, int]]:
        """Attempts sent to and failed on each replica so far."""
        return {r.url: {"sent": r.sent, "failed": r.failed} for r in self.replicas}

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "served_model": self.model,
            # The response cache keys on this: answers depend on the served model,
            # not on which or how many replicas serve it.
            "engine": {"served_model": self.model},
            "base_urls": list(self.base_urls),
            "served_models": self.served,
            "max_concurrency": self.max_concurrency,
            "request_timeout_s": self.request_timeout,
            "max_retries": self.max_retries,
            "backoff_s": {"base": self.backoff_base_s, "cap": self.backoff_cap_s},
            "api_key_set": bool(self._headers),
        }

    def close(self) -> None:
        """Nothing to release: each ``generate`` call opens and closes its own client."""


async def capped_lines(chunks, limit: int):
    """The lines of a text stream (``\\n``, ``\\r\\n`` or ``\\r`` ends one, as in server-sent
    events), from ``chunks`` of text; raises :class:`_Fatal` once more than ``limit``
    characters have come, however they are split into lines (a line without end too)."""
    received, start = 0, []
    async for text in chunks:
        received += len(text)
        if received > limit:
            raise _Fatal(f"the response went past {limit} characters (does the server ignore max_tokens?)")
        *lines, rest = _LINE_END.split(text)
        if lines:
            yield "".join(start) + lines[0]
            for line in lines[1:]:
                yield line
            start = []
        start.append(rest)
    if any(start):
        yield "".join(start)


async def _body_start(response, limit: int) -> str:
    """The first ``limit`` characters of a (failed) response's body, read no further."""
    head = ""
    async for text in response.aiter_text():
        head += text
        if len(head) >= limit:
            break
    return head[:limit]


def _shown_json(value: Any) -> str:
    try:
        return json.dumps(value)[:300]
    except (TypeError, ValueError, RecursionError):
        return repr(value)[:300]


@dataclass(frozen=True)
class _Raised:
    """An exception of the stream's event-loop thread, carried to the consuming thread."""

    error: BaseException


def _failed(prompt_text: str | None, reason: str) -> Generation:
    return Generation("", "error", prompt_text, error=reason)


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:  # an HTTP date; rare from model servers
        return None


def _base_urls(given: Sequence[str] | None) -> tuple[str, ...]:
    """The normalized, distinct endpoints (default ``$OPENAI_BASE_URL`` or :data:`DEFAULT_BASE_URL`)."""
    urls = tuple(given or (os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL,))
    return tuple(dict.fromkeys(normalize_base_url(u) for u in urls))


def _is_embedded_default(model: str) -> bool:
    """Whether ``model`` is the embedded default's directory, i.e. ``--model`` was not given."""
    from evalsuite.models import EMBEDDED_NAME, cache_dir

    return Path(model).expanduser().resolve() == (cache_dir() / "models" / EMBEDDED_NAME).resolve()
