"""GPU paths of evalsuite checked on the device at hand; one JSON document on stdout.

Made for a GPU host that has PyTorch (and transformers) but no vLLM, no network
and no model files: everything is built here from a fixed seed.

1. ``miniature``: the Qwen2-architecture miniature of :mod:`evalsuite.miniature`
   (``Qwen2ForCausalLM``, 2 layers, hidden 128, 4 heads, 2 KV heads; seed 0) with
   a byte-level tokenizer built in code (256 byte tokens and ChatML specials), saved
   as a Hugging Face directory under a temporary folder;
2. ``hf_backend_run``: a real ``evalsuite`` run (:func:`evalsuite.pipeline.runner.run`) of
   GSM8K-format problems written here, on the ``hf`` backend (CUDA when present);
   output tokens/s and the device the backend used;
3. ``nvml_vs_torch``: :class:`evalsuite.metrics.memory.MemoryMonitor` (NVML, device-wide
   bytes in use) around a known allocation, against
   ``torch.cuda.max_memory_allocated`` / ``max_memory_reserved``. NVML also
   counts the CUDA context and other processes, so the check is
   ``allocated <= NVML peak - baseline <= reserved + 2 GiB``;
4. ``run_json_gpus``: ``provenance.host.gpus`` of the run's ``run.json`` against
   torch's own view (names, total memory within 0.1 GiB);
5. ``placement``: in a child process with ``CUDA_VISIBLE_DEVICES=<last index>``,
   the model lands on ``cuda:0``, which is the physical device named (same UUID
   in torch and NVML) and whose NVML memory rises; with ``CUDA_VISIBLE_DEVICES=''``
   the ``hf`` backend falls back to the CPU.

Without CUDA (CI, the CPU hosts) it runs 1 and 2 on the CPU and reports 3-5 as
``skipped`` with the reason. Exit code 1 when a check failed.

    python benchmarks/gpu_check.py [--device auto|cpu] [--max-tokens 16]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GIB = 2**30
SEED = 0
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
PROBLEMS = [  # GSM8K's format: the worked answer ends with "#### <number>"
    {"question": "Ann has 3 apples and buys 4 more. How many apples does she have?", "answer": "3 + 4 = 7\n#### 7"},
    {"question": "A box holds 6 eggs. How many eggs are in 5 boxes?", "answer": "6 * 5 = 30\n#### 30"},
    {"question": "Tom had 20 marbles and lost 8. How many are left?", "answer": "20 - 8 = 12\n#### 12"},
    {"question": "A train travels 60 km each hour for 3 hours. How far does it go?", "answer": "180\n#### 180"},
]


def skipped(reason: str) -> dict[str, Any]:
    return {"status": "skipped", "reason": reason}


def checked(ok: bool, **figures: Any) -> dict[str, Any]:
    return {"status": "pass" if ok else "fail", **figures}


def byte_tokenizer(out: Path):
    """A byte-level BPE tokenizer with no merges (every byte one token) plus ChatML
    specials and a chat template, saved to ``out``; returns it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  bos_token=None, additional_special_tokens=SPECIALS[1:])
    tok.add_special_tokens({"additional_special_tokens": SPECIALS[1:]})
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(out)
    return tok


def build_model(out: Path) -> dict[str, Any]:
    """The seeded miniature and its tokenizer in ``out``; figures for the report."""
    import torch
    from transformers import Qwen2ForCausalLM

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the test helper, not shipped
    from miniature import miniature_config

    tok = byte_tokenizer(out)
    vocab_size = 64 * ((len(tok) + 63) // 64)
    torch.manual_seed(SEED)
    config = miniature_config(vocab_size)
    config.eos_token_id, config.pad_token_id = tok.eos_token_id, tok.pad_token_id
    model = Qwen2ForCausalLM(config).to(torch.float32)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    params = sum(p.numel() for p in model.parameters())
    return checked(True, path=str(out), architecture="Qwen2ForCausalLM", parameters=params, vocab_size=vocab_size,
                   seed=SEED)


def hf_run(model_dir: Path, work: Path, device: str, max_tokens: int) -> tuple[dict[str, Any], dict | None]:
    """A real run on the hf backend; the check and the run's ``run.json``."""
    from evalsuite.config import EngineConfig, RunConfig
    from evalsuite.pipeline.runner import run

    data = work / "data" / "gsm8k"
    data.mkdir(parents=True, exist_ok=True)
    (data / "test.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    config = RunConfig(tasks=("gsm8k",), backend="hf", model=str(model_dir), data_dir=str(work / "data"),
                       max_tokens=max_tokens, output_dir=work / "results", run_id="gpu-check", cache=False,
                       engine=EngineConfig(dtype="float32"),
                       backend_args={} if device == "auto" else {"device": device},
                       task_args={"gsm8k": {"second_opinion": False}})
    os.environ.setdefault("EVALSUITE_CACHE", str(work / "cache"))
    start = time.perf_counter()
    result = run(config, progress=False)
    wall = time.perf_counter() - start
    run_json = json.loads((result.run_dir / "run.json").read_text())
    perf = run_json["metrics"]["gsm8k"]["performance"]
    used = run_json["backend"]["engine"]["device"]
    ok = run_json["status"] == "complete" and perf["requests"] == len(PROBLEMS) and perf["errors"] == 0
    return checked(ok, device=used, requests=perf["requests"], errors=perf["errors"],
                   output_tokens=perf["output_tokens"], output_tokens_per_s=perf["output_tokens_per_s"],
                   generation_wall_s=perf["wall_s"], whole_run_s=round(wall, 2),
                   peak_gpu_mem_gib=(run_json.get("memory") or {}).get("peak_gpu_mem_gib")), run_json


def nvml_vs_torch() -> dict[str, Any]:
    """MemoryMonitor's NVML peak around a 1 GiB allocation on cuda:0 against torch's counters."""
    import torch

    from evalsuite.metrics.memory import MemoryMonitor

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats(0)
    monitor = MemoryMonitor(interval_s=0.05)
    if monitor._handles is None:
        return checked(False, reason="torch sees CUDA but NVML (pynvml) does not answer")
    torch.cuda.init()
    monitor.start()
    block = torch.ones(GIB // 4, dtype=torch.float32, device="cuda:0")  # 1 GiB
    torch.cuda.synchronize()
    time.sleep(0.5)  # several samples while it is held
    allocated = torch.cuda.max_memory_allocated(0)
    reserved = torch.cuda.max_memory_reserved(0)
    del block
    measured = monitor.stop()
    index = _nvml_index_of(0)
    gpu = measured["gpus"][index]
    delta = (gpu["peak_gib"] - gpu["baseline_gib"]) * GIB
    ok = allocated <= delta <= reserved + 2 * GIB
    return checked(ok, nvml_index=index, torch_max_allocated_gib=allocated / GIB, torch_max_reserved_gib=reserved / GIB,
                   nvml_baseline_gib=gpu["baseline_gib"], nvml_peak_gib=gpu["peak_gib"], nvml_delta_gib=delta / GIB,
                   rule="allocated <= NVML peak - baseline <= reserved + 2 GiB")


def _nvml_index_of(cuda_index: int) -> int:
    """The NVML (physical) index of torch's ``cuda:<cuda_index>``, by UUID."""
    import pynvml
    import torch

    uuid = str(torch.cuda.get_device_properties(cuda_index).uuid)
    pynvml.nvmlInit()
    for i in range(pynvml.nvmlDeviceGetCount()):
        nv = pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(i))
        nv = nv.decode() if isinstance(nv, bytes) else nv
        if nv.removeprefix("GPU-") == uuid.removeprefix("GPU-"):
            return i
    raise RuntimeError(f"no NVML device has torch's UUID {uuid}")


def run_json_gpus(run_json: dict | None) -> dict[str, Any]:
    """run.json's GPU list against torch: same count, names and total memory."""
    import torch

    if run_json is None:
        return skipped("no run.json (the hf run failed)")
    listed = run_json["provenance"]["host"]["gpus"]
    seen = [torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())]
    if os.environ.get("CUDA_VISIBLE_DEVICES") not in (None, ""):
        listed_names = sorted(g["name"] for g in listed)
        return checked(len(listed) >= len(seen) and all(p.name in listed_names for p in seen),
                       run_json=listed, note="CUDA_VISIBLE_DEVICES is set: NVML lists every GPU of the host")
    ok = len(listed) == len(seen) and all(
        g["name"] == p.name and abs(g["memory_gib"] - p.total_memory / GIB) <= 0.1 for g, p in zip(listed, seen))
    return checked(ok, run_json=listed, torch=[{"name": p.name, "memory_gib": round(p.total_memory / GIB, 2)}
                                               for p in seen])


PLACEMENT_CHILD = r"""
import json, sys, torch
sys.path.insert(0, sys.argv[2])
from transformers import AutoModelForCausalLM
from evalsuite.metrics.memory import MemoryMonitor
out = {"visible": torch.cuda.device_count()}
if out["visible"]:
    mon = MemoryMonitor(interval_s=0.05)
    torch.cuda.init()
    mon.start()
    model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32).to("cuda")
    block = torch.ones(2**28, device="cuda")  # 1 GiB, so the rise shows above NVML's noise
    torch.cuda.synchronize()
    import time; time.sleep(0.5)
    m = mon.stop()
    out["param_device"] = str(next(model.parameters()).device)
    out["uuid"] = str(torch.cuda.get_device_properties(0).uuid)
    out["rise_gib"] = [g["peak_gib"] - g["baseline_gib"] for g in m["gpus"]]
else:
    from evalsuite.backends.hf import HFBackend
    out["hf_device"] = HFBackend(sys.argv[1], dtype="float32").device
print(json.dumps(out))
"""


def placement(model_dir: Path) -> dict[str, Any]:
    """The miniature under ``CUDA_VISIBLE_DEVICES=<last>`` and under ``''``, each in a child process."""
    import pynvml
    import torch

    pynvml.nvmlInit()
    physical = pynvml.nvmlDeviceGetCount() - 1
    handle = pynvml.nvmlDeviceGetHandleByIndex(physical)
    want = pynvml.nvmlDeviceGetUUID(handle)
    want = (want.decode() if isinstance(want, bytes) else want).removeprefix("GPU-")
    del torch
    children = {}
    for visible in (str(physical), ""):
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": visible}
        proc = subprocess.run([sys.executable, "-c", PLACEMENT_CHILD, str(model_dir), str(ROOT)], env=env,
                              check=False, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            return checked(False, cuda_visible_devices=visible, error=proc.stderr[-1500:])
        children[visible] = json.loads(proc.stdout.strip().splitlines()[-1])
    one, none = children[str(physical)], children[""]
    rises = one["rise_gib"]
    ok = (one["visible"] == 1 and one["param_device"] == "cuda:0" and one["uuid"].removeprefix("GPU-") == want
          and max(range(len(rises)), key=rises.__getitem__) == physical and none == {"visible": 0, "hf_device": "cpu"})
    return checked(ok, physical_index=physical, with_one_visible=one, with_none_visible=none)


def attempt(name: str, fn, *args) -> tuple[dict[str, Any], Any]:
    """Runs one check; an exception is a failed check with its message, never the script's end."""
    try:
        out = fn(*args)
    except Exception as e:  # noqa: BLE001 -- every check reports; the document is always printed
        return {"status": "fail", "error": f"{type(e).__name__}: {e}"[:1000],
                "where": traceback.format_exc(limit=-3)[-1500:]}, None
    return out if isinstance(out, tuple) else (out, None)


def environment() -> dict[str, Any]:
    import torch

    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    for module in ("transformers", "pynvml", "vllm"):
        try:
            versions[module] = getattr(__import__(module), "__version__", "installed")
        except ImportError:
            versions[module] = None
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {**versions, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "torch_gpus": gpus,
            "platform": platform.platform(), "cpu_count": os.cpu_count()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("auto", "cpu"), default="auto",
                        help="cpu: run as on a host without CUDA even where there is one")
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args(argv)
    import torch

    cuda = args.device == "auto" and torch.cuda.is_available()
    no_cuda = "no CUDA device (torch.cuda.is_available() is False)" if args.device == "auto" else "--device cpu"
    doc: dict[str, Any] = {"schema": "evalsuite-gpu-check/1", "mode": "cuda" if cuda else "cpu",
                           "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "environment": environment(), "checks": {}}
    checks = doc["checks"]
    with tempfile.TemporaryDirectory(prefix="evalsuite-gpu-check-") as tmp:
        work = Path(tmp)
        model_dir = work / "miniature"
        checks["miniature"], _ = attempt("miniature", build_model, model_dir)
        run_json = None
        if checks["miniature"]["status"] == "pass":
            checks["hf_backend_run"], run_json = attempt("hf_backend_run", hf_run, model_dir, work,
                                                         "auto" if cuda else "cpu", args.max_tokens)
            if cuda and checks["hf_backend_run"].get("device") not in (None, "cuda"):
                checks["hf_backend_run"]["status"] = "fail"
        else:
            checks["hf_backend_run"] = skipped("no miniature model")
        if cuda:
            checks["nvml_vs_torch"], _ = attempt("nvml_vs_torch", nvml_vs_torch)
            checks["run_json_gpus"], _ = attempt("run_json_gpus", run_json_gpus, run_json)
            checks["placement"], _ = (attempt("placement", placement, model_dir)
                                      if checks["miniature"]["status"] == "pass" else (skipped("no model"), None))
        else:
            checks["nvml_vs_torch"] = skipped(no_cuda)
            gpus = (run_json or {}).get("provenance", {}).get("host", {}).get("gpus")
            if run_json is None:
                checks["run_json_gpus"] = skipped("no run.json")
            elif torch.cuda.device_count() == 0:  # no GPU at all: run.json must not invent one
                checks["run_json_gpus"] = checked(gpus == [], run_json=gpus, torch_gpus=0)
            else:
                checks["run_json_gpus"] = skipped("--device cpu on a host with GPUs")
            checks["placement"] = skipped(no_cuda)
    statuses = [c["status"] for c in checks.values()]
    doc["summary"] = {s: statuses.count(s) for s in ("pass", "fail", "skipped")}
    print(json.dumps(doc, indent=2, default=str))
    return 1 if doc["summary"]["fail"] else 0


if __name__ == "__main__":
    sys.exit(main())
