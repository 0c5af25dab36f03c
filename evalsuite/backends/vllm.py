"""In-process vLLM (``vllm.LLM``): one ``generate`` call per batch.

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
import time
from typing import Any, Mapping, Sequence

from evalsuite.backends import chat_template_sha256, render_prompt
from evalsuite.registry import backends
from evalsuite.types import Generation, GenerationRequest, Timings

# On a CPU host vLLM reads gpu_memory_utilization as the share of the NUMA node's
# memory to reserve for the KV cache; its GPU default (0.92) fails to start there.
CPU_DEFAULT_MEMORY_UTILIZATION = 0.25


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


@backends.register("vllm")
class VLLMBackend:
    """``vllm.LLM`` in this process.

    Args:
        model: a local directory or hub id.
        tensor_parallel_size: GPUs (CPU ranks) one engine is split over.
        max_model_len: context length in tokens (prompt + output); None = model's.
        gpu_memory_utilization: share of device memory for weights + KV cache; on CPU
            the share of host memory for the KV cache (default 0.25 there).
        dtype: ``auto``, ``bfloat16``, ``float16`` or ``float32``.
        seed: engine seed; per-request seeds come from the sampling params.
        enforce_eager: skip CUDA graphs / compilation (faster start, slower decode).
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
        enforce_eager: bool = False,
        engine_args: Mapping[str, Any] | None = None,
    ) -> None:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        import vllm

        if gpu_memory_utilization is None and _on_cpu() and "VLLM_CPU_KVCACHE_SPACE" not in os.environ:
            gpu_memory_utilization = CPU_DEFAULT_MEMORY_UTILIZATION
        self.settings: dict[str, Any] = {
            "tensor_parallel_size": tensor_parallel_size,
            "max_model_len": max_model_len,
            "gpu_memory_utilization": gpu_memory_utilization,
            "dtype": dtype,
            "seed": seed,
            "enforce_eager": enforce_eager,
            **dict(engine_args or {}),
        }
        kwargs = {k: v for k, v in self.settings.items() if v is not None}
        self.model = model
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
            seed=p.seed if p.temperature > 0 else None,
            **extra,
        )

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """Renders, then generates the whole batch in one ``LLM.generate`` call.

        Timings: vLLM's offline API does not expose per-request timestamps, so
        ``e2e_s`` is the batch's wall time (every request in a batch is in flight
        together) and TTFT/ITL are ``None``.
        """
        from vllm.inputs import TokensPrompt

        rendered = [render_prompt(self.tokenizer, r.prompt) for r in requests]
        prompts = [TokensPrompt(prompt_token_ids=ids) for _, ids in rendered]
        params = [self._sampling_params(r) for r in requests]
        start = time.perf_counter()
        try:
            outputs = self.llm.generate(prompts, params, use_tqdm=False)
        except (ValueError, RuntimeError) as e:  # e.g. a prompt longer than max_model_len
            if len(requests) == 1:
                return [Generation("", "error", rendered[0][0], len(rendered[0][1]), error=f"{type(e).__name__}: {e}")]
            # Retry one by one so a single bad request does not fail its batch.
            return [g for r in requests for g in self.generate([r])]
        elapsed = time.perf_counter() - start
        return [
            Generation(
                text=out.outputs[0].text,
                finish_reason=out.outputs[0].finish_reason,
                prompt_text=text,
                prompt_tokens=len(ids),
                output_tokens=len(out.outputs[0].token_ids),
                timings=Timings(e2e_s=elapsed),
            )
            for (text, ids), out in zip(rendered, outputs)
        ]

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "vllm_version": self._vllm_version,
            "engine": self.settings,
            "chat_template_sha256": chat_template_sha256(self.tokenizer),
        }

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            shutdown = getattr(getattr(llm, "llm_engine", None), "shutdown", None)
            if callable(shutdown):
                shutdown()
            del llm
