"""Hugging Face transformers: ``model.generate`` on left-padded batches.

Slow on a CPU (about 16 output tokens/s at batch 1 for the embedded model) but
dependable: it is the reference the vLLM backend is checked against.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from evalsuite.backends import chat_template_sha256, render_prompt
from evalsuite.registry import backends
from evalsuite.types import Generation, GenerationRequest, SamplingParams, Timings

_DTYPES = {"auto": "auto", "bfloat16": "bfloat16", "float16": "float16", "float32": "float32"}


def _truncate_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cuts ``text`` at the earliest stop sequence; ``(text, stopped)``."""
    cut = min((i for s in stop if (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


@backends.register("hf")
class HFBackend:
    """transformers ``AutoModelForCausalLM`` in this process.

    Args:
        model: a local directory or hub id.
        dtype: ``bfloat16``, ``float16``, ``float32``, or ``auto``: chosen from the
            host (:func:`evalsuite.host.choose_dtype`).
        device: ``cpu``, ``cuda`` ...; default: ``cuda`` when available.
        seed: seeds torch before each sampled batch.
        batch_size: rows per ``generate`` call (requests with different sampling
            settings are generated in separate calls).
    """

    name = "hf"
    supports_json_schema = False  # no constrained decoding in plain transformers generate

    def __init__(self, model: str, *, dtype: str = "auto", device: str | None = None,
                 seed: int = 0, batch_size: int = 8, **_: Any) -> None:
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        from evalsuite.host import choose_dtype

        chosen = choose_dtype(dtype, on_cpu=self.device == "cpu")
        torch_dtype = _DTYPES.get(chosen.value, chosen.value)
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype).to(self.device)
        self.model.eval()
        self.seed = seed
        self.batch_size = batch_size
        self.settings = {"dtype": chosen.value, "dtype_reason": chosen.reason, "device": self.device,
                         "seed": seed, "batch_size": batch_size}
        self._versions = {"transformers_version": transformers.__version__, "torch_version": torch.__version__}

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        results: list[Generation | None] = [None] * len(requests)
        # Requests batch together when they differ only in their seed; a sampled batch
        # is seeded once (from its first request), a greedy one needs no seed.
        groups: dict[SamplingParams, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(replace(r.params, seed=None), []).append(i)
        seeds = {key: requests[indices[0]].params.seed for key, indices in groups.items()}
        for params, indices in groups.items():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                for i, g in zip(chunk, self._generate_batch([requests[i] for i in chunk],
                                                            replace(params, seed=seeds[params]))):
                    results[i] = g
        return results  # type: ignore[return-value]

    def _generate_batch(self, requests: Sequence[GenerationRequest], params: SamplingParams) -> list[Generation]:
        import torch

        rendered = [render_prompt(self.tokenizer, r.prompt) for r in requests]
        width = max(len(ids) for _, ids in rendered)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for _, ids in rendered], device=self.device)
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for _, ids in rendered], device=self.device)
        sampling: dict[str, Any] = {"do_sample": False}
        if params.temperature > 0:
            torch.manual_seed(params.seed if params.seed is not None else self.seed)
            sampling = {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p}
        start = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids, attention_mask=mask, max_new_tokens=params.max_tokens,
                pad_token_id=pad, top_k=None, **sampling,
            )
        elapsed = time.perf_counter() - start
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        generations = []
        for (text, ids), row in zip(rendered, out[:, width:].tolist()):
            hit_eos = next((k for k, t in enumerate(row) if t in eos_ids or t == pad), None)
            tokens = row if hit_eos is None else row[:hit_eos]
            decoded = self.tokenizer.decode(tokens, skip_special_tokens=True)
            decoded, stopped = _truncate_at_stop(decoded, params.stop)
            finish = "stop" if stopped or hit_eos is not None else "length"
            if stopped:
                # Count only the tokens that the truncated text needs.
                n_out = len(self.tokenizer.encode(decoded, add_special_tokens=False))
            else:
                n_out = len(tokens) + (1 if hit_eos is not None else 0)
            generations.append(Generation(decoded, finish, text, len(ids), n_out, Timings(e2e_s=elapsed)))
        return generations

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, **self._versions, "engine": self.settings,
                "chat_template_sha256": chat_template_sha256(self.tokenizer)}

    def close(self) -> None:
        self.model = None
