"""In-process vLLM (``vllm.LLM``): a streaming engine loop, or one ``generate`` call per batch.

The runner streams requests (:meth:`VLLMBackend.stream`: ``add_request`` and
``step`` on the engine, each generation yielded as it finishes); ``generate`` keeps
the batch protocol for callers that want one.

The engine is built once per run with the run's engine settings
(``tensor_parallel_size``, ``max_model_len``, ``gpu_memory_utilization``, ``dtype``,
``seed``, ``enforce_eager`` and any other ``vllm.EngineArgs`` field passed
through). Conversations are rendered with the tokenizer's chat template here,
so the rendered prompt and its token count are known exactly.

vLLM starts its workers with ``spawn``: a script that builds this backend needs
the ``if __name__ == "__main__":`` guard (the ``evalsuite`` CLI has it).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from evalsuite.backends import chat_template_sha256, render_prompt, with_keywords_of
from evalsuite.backends.queue import RequestQueue, pull
from evalsuite.registry import backends
from evalsuite.types import Generation, GenerationRequest, Timings

# On a CPU host vLLM reads gpu_memory_utilization as the share of the NUMA node's
# memory to reserve for the KV cache; its GPU default (0.92) fails to start there.
CPU_DEFAULT_MEMORY_UTILIZATION = 0.25


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def _request_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that reject a request, not the engine: vLLM's client errors
    (``VLLMClientError``, where this vLLM has them) and ValueError."""
    try:
        from vllm.exceptions import VLLMClientError

        return (VLLMClientError, ValueError)
    except ImportError:
        return (ValueError,)


def request_timings(stats: Any) -> Timings:
    """Timings of one request from vLLM's ``RequestStateStats``.

    ``ttft_s = first_token_latency`` (arrival at the engine front end to the first
    token, as vLLM's own TTFT histogram); ``e2e_s = ttft_s + (last_token_ts -
    first_token_ts)``, the engine core's decode span added on. Per-token gaps are
    not kept by the offline engine, so ``itl_s`` is None; TPOT follows from e2e,
    TTFT and the output token count. Without stats every figure is None.
    """
    if stats is None or not getattr(stats, "first_token_latency", 0.0):
        return Timings()
    ttft = float(stats.first_token_latency)
    decode = max(0.0, float(stats.last_token_ts) - float(stats.first_token_ts))
    return Timings(e2e_s=ttft + decode, ttft_s=ttft)


@backends.register("vllm")
def vllm_backend(
    model: str,
    *,
    data_parallel_size: int | None = None,
    ray_address: str | None = None,
    replica_timeout: float | None = None,
    chunk_size: int | None = None,
    **engine: Any,
):
    """The ``vllm`` backend: one engine; or ``data_parallel_size`` engines each on its
    own devices in worker processes (:mod:`evalsuite.backends.vllm_dp`); or, with
    ``ray_address``, engines as Ray actors on a cluster
    (:mod:`evalsuite.backends.ray_replicas`; ``data_parallel_size`` None = as many as
    the cluster holds). Replicas pull chunks of ``chunk_size`` requests from one
    queue; one that takes longer than ``replica_timeout`` seconds for a chunk is
    abandoned. ``engine`` holds :class:`VLLMBackend`'s keyword arguments, which this
    factory declares as its own (``inspect.signature``).

    Raises UsageError for a bad size or timeout, or when Ray is asked for and not
    installed.
    """
    pool = _pool_settings(data_parallel_size, replica_timeout, chunk_size)
    if ray_address is not None:
        return _ray_replicas(model, ray_address, data_parallel_size, pool, engine)
    if (data_parallel_size or 1) == 1:
        return VLLMBackend(model, **engine)
    from evalsuite.backends.vllm_dp import DataParallelVLLM

    tp = engine.pop("tensor_parallel_size", 1)
    return DataParallelVLLM(VLLMBackend, model, data_parallel_size, tp, on_cpu=_on_cpu(), **pool, **engine)


def _pool_settings(data_parallel_size: int | None, replica_timeout: float | None,
                   chunk_size: int | None) -> dict[str, Any]:
    from evalsuite.errors import UsageError

    if data_parallel_size is not None and data_parallel_size < 1:
        raise UsageError(f"--data-parallel-size must be >= 1, got {data_parallel_size}")
    if replica_timeout is not None and not replica_timeout > 0:
        raise UsageError(f"--replica-timeout must be > 0 seconds, got {replica_timeout}")
    if chunk_size is not None and chunk_size < 1:
        raise UsageError(f"chunk_size must be >= 1, got {chunk_size}")
    out: dict[str, Any] = {"chunk_size": chunk_size}
    if replica_timeout is not None:
        out["replica_timeout_s"] = float(replica_timeout)
    return out


def _ray_replicas(model: str, address: str, size: int | None, pool: dict[str, Any], kwargs: dict[str, Any]):
    """Replicas as Ray actors; UsageError when ray is missing or no cluster answers."""
    from evalsuite.errors import UsageError

    if (kwargs.get("engine_args") or {}).get("distributed_executor_backend") == "ray":
        raise UsageError("--ray-address runs independent replicas; a model split over hosts with "
                         "distributed_executor_backend=ray is one engine: drop --ray-address and set RAY_ADDRESS "
                         "(see docs/multi-host.md)")
    try:
        from evalsuite.backends.ray_replicas import RayReplicas
    except ImportError as err:
        raise UsageError(f"--ray-address needs Ray ({err.name} is not installed): "
                         "pip install 'evalsuite[ray]'") from None
    try:
        return RayReplicas(VLLMBackend, model, address, data_parallel_size=size, **pool, **kwargs)
    except ConnectionError as err:
        raise UsageError(f"no Ray cluster answers at --ray-address {address}: {err}") from None


class VLLMBackend:
    """``vllm.LLM`` in this process.

    Args:
        model: a local directory or hub id.
        tensor_parallel_size: GPUs (CPU ranks) one engine is split over.
        max_model_len: context length in tokens (prompt + output); None = model's.
        gpu_memory_utilization: share of device memory for weights + KV cache; on CPU
            the share of host memory for the KV cache (default 0.25 there).
        dtype: ``bfloat16``, ``float16``, ``float32``, or ``auto``: chosen from the host
            (:func:`evalsuite.host.choose_dtype`), the reason kept in ``settings``.
        seed: engine seed; per-request seeds come from the sampling params.
        enforce_eager: skip CUDA graphs / compilation (faster start, slower decode);
            None chooses from the host (:func:`evalsuite.host.choose_enforce_eager`).
        engine_args: any other ``vllm.EngineArgs`` field, passed through unchanged.

    Raises whatever ``vllm.LLM`` raises for an engine that cannot start.
    """

    name = "vllm"

    def __init__(
        self,
        model: str,
        *,
        tensor_parallel_size: int = 1,
        max_model_len: int | None = None,
        gpu_memory_utilization: float | None = None,
        dtype: str = "auto",
        seed: int = 0,
        enforce_eager: bool | None = None,
        engine_args: Mapping[str, Any] | None = None,
    ) -> None:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        import vllm

        from evalsuite.host import engine_defaults

        if gpu_memory_utilization is None and _on_cpu() and "VLLM_CPU_KVCACHE_SPACE" not in os.environ:
            gpu_memory_utilization = CPU_DEFAULT_MEMORY_UTILIZATION
        chosen = engine_defaults(dtype, enforce_eager, on_cpu=_on_cpu())
        self.settings: dict[str, Any] = {
            "tensor_parallel_size": tensor_parallel_size,
            "max_model_len": max_model_len,
            "gpu_memory_utilization": gpu_memory_utilization,
            "seed": seed,
            **chosen,
            **dict(engine_args or {}),
        }
        kwargs = {k: v for k, v in self.settings.items() if v is not None and not k.endswith("_reason")}
        # Per-request timestamps (RequestOutput.metrics) and the KV-cache gauge exist
        # only with stats on; the periodic stats log stays below the log level.
        kwargs.setdefault("disable_log_stats", False)
        self.model = model
        # On the CPU build a per-request seed with a chunked prefill kills the engine
        # ("CPU Generator does not use offset"); there, sampling uses the engine's seed
        # only, so sampled outputs can depend on how requests were batched.
        self.per_request_seeds = not _on_cpu()
        self.llm = vllm.LLM(model=model, **kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self._vllm_version = vllm.__version__

    def _sampling_params(self, request: GenerationRequest):
        from vllm import SamplingParams

        p = request.params
        extra: dict[str, Any] = {}
        if request.json_schema is not None:
            from vllm.sampling_params import StructuredOutputsParams

            extra["structured_outputs"] = StructuredOutputsParams(json=dict(request.json_schema))
        return SamplingParams(
            max_tokens=p.max_tokens,
            temperature=p.temperature,
            top_p=p.top_p,
            stop=list(p.stop) or None,
            seed=p.seed if p.temperature > 0 and self.per_request_seeds else None,
            **extra,
        )

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """Renders, then generates the whole batch in one ``LLM.generate`` call.

        Timings come from vLLM's per-request stats (see :func:`request_timings`);
        every request of a batch arrives when the call starts, so TTFT includes
        the time a request waited for a slot in the engine's batch.
        """
        from vllm.inputs import TokensPrompt

        rendered = [render_prompt(self.tokenizer, r.prompt) for r in requests]
        prompts = [TokensPrompt(prompt_token_ids=ids) for _, ids in rendered]
        params = [self._sampling_params(r) for r in requests]
        try:
            outputs = self.llm.generate(prompts, params, use_tqdm=False)
        except _request_errors() as e:  # e.g. a prompt longer than max_model_len
            if len(requests) == 1:
                return [Generation("", "error", rendered[0][0], len(rendered[0][1]), error=f"{type(e).__name__}: {e}")]
            # Retry one by one so a single bad request does not fail its batch.
            return [g for r in requests for g in self.generate([r])]
        return [
            Generation(
                text=out.outputs[0].text,
                finish_reason=out.outputs[0].finish_reason,
                prompt_text=text,
                prompt_tokens=len(ids),
                output_tokens=len(out.outputs[0].token_ids),
                timings=request_timings(out.metrics),
            )
            for (text, ids), out in zip(rendered, outputs)
        ]

    def stream(self, requests: Iterable[GenerationRequest]) -> Iterator[tuple[int, Generation]]:
        """``(index, generation)`` for each request as it finishes (:mod:`evalsuite.backends.queue`).

        Drives ``self.llm.llm_engine`` directly: every request is added with
        ``add_request`` under its own id (its index) and ``RequestOutputKind.FINAL_ONLY``,
        up to :attr:`window` in flight, refilled after every ``step()``, so the
        scheduler always sees every pending request (it admits up to ``max_num_seqs``).
        A request the engine rejects (e.g. a prompt longer than ``max_model_len``)
        yields an error Generation at once; the others go on. Timings as
        :meth:`generate`: TTFT counts from the request's arrival at the engine.
        If the consumer stops early, requests still in flight are aborted.
        """
        engine = self.llm.llm_engine
        source = requests if isinstance(requests, RequestQueue) else iter(requests)
        rendered: dict[str, tuple[int, str, int]] = {}  # request id -> (index, prompt text, prompt tokens)
        next_index, exhausted = 0, False
        try:
            while True:
                if not exhausted and len(rendered) < self.window:
                    batch, exhausted = pull(source, self.window - len(rendered), blocking=not rendered)
                    for request in batch:
                        failed = self._add(engine, str(next_index), request, next_index, rendered)
                        if failed is not None:
                            yield next_index, failed
                        next_index += 1
                if not rendered:
                    if exhausted:
                        return
                    continue
                for out in engine.step():
                    if out.finished and out.request_id in rendered:
                        index, text, n_prompt = rendered.pop(out.request_id)
                        yield index, self._generation(out, text, n_prompt)
        finally:
            if rendered and self.llm is not None:
                engine.abort_request(list(rendered))

    window = 1024
    """Requests in flight at most in :meth:`stream` (the engine's queue, not its batch)."""

    def _add(self, engine, request_id: str, request: GenerationRequest, index: int,
             rendered: dict[str, tuple[int, str, int]]) -> Generation | None:
        """Adds one request to the engine; an error Generation if it is rejected."""
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        text, ids = "", []
        try:
            text, ids = render_prompt(self.tokenizer, request.prompt)
            params = self._sampling_params(request)
            params.output_kind = RequestOutputKind.FINAL_ONLY
            engine.add_request(request_id, TokensPrompt(prompt_token_ids=ids), params)
        except _request_errors() as e:
            return Generation("", "error", text, len(ids), error=f"{type(e).__name__}: {e}")
        rendered[request_id] = (index, text, len(ids))
        return None

    @staticmethod
    def _generation(out: Any, text: str, n_prompt: int) -> Generation:
        return Generation(
            text=out.outputs[0].text,
            finish_reason=out.outputs[0].finish_reason,
            prompt_text=text,
            prompt_tokens=n_prompt,
            output_tokens=len(out.outputs[0].token_ids),
            timings=request_timings(out.metrics),
        )

    def num_requests_running(self) -> float | None:
        """Requests in the engine's running batch now (vLLM's ``vllm:num_requests_running``
        gauge); None when stats are off."""
        for metric in self.llm.get_metrics():
            if metric.name == "vllm:num_requests_running":
                return float(metric.value)
        return None

    def kv_cache_capacity(self) -> dict[str, int] | None:
        """KV-cache blocks, tokens per block and tokens in all (vLLM's cache config)."""
        cache = getattr(getattr(self.llm.llm_engine, "vllm_config", None), "cache_config", None)
        if cache is None or not cache.num_gpu_blocks:
            return None
        return {"blocks": cache.num_gpu_blocks, "block_size": cache.block_size,
                "tokens": cache.num_gpu_blocks * cache.block_size}

    def kv_cache_usage(self) -> float | None:
        """Share of KV-cache blocks in use now (vLLM's ``vllm:kv_cache_usage_perc``
        gauge, a fraction in [0, 1]); None when stats are off."""
        for metric in self.llm.get_metrics():
            if metric.name == "vllm:kv_cache_usage_perc":
                return float(metric.value)
        return None

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "vllm_version": self._vllm_version,
            "engine": self.settings,
            "chat_template_sha256": chat_template_sha256(self.tokenizer),
            "kv_cache": self.kv_cache_capacity(),
            "per_request_seeds": self.per_request_seeds,
        }

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            shutdown = getattr(getattr(llm, "llm_engine", None), "shutdown", None)
            if callable(shutdown):
                shutdown()
            del llm


vllm_backend.__signature__ = with_keywords_of(vllm_backend, VLLMBackend)
