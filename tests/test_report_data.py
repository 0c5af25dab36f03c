"""Helpers that write small but complete run directories (run.json + samples.jsonl)
in the results format, for the report and compare tests. No tests here."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def write_run(root: Path, run_id: str, tasks: dict[str, dict[str, Any]], memory: dict | None = None,
              model: str = "tiny-model", temperature: float = 0.0) -> Path:
    """``tasks[name] = {"verdicts": [...], "scorer": "acc", "e2e_ms_p95": float, "outputs": [...],
    "metadata": [...]}``; writes metrics computed from the verdicts by hand-simple rules."""
    run_dir = root / run_id
    run_dir.mkdir(parents=True)
    metrics, lines = {}, []
    for name, spec in tasks.items():
        scorer = spec.get("scorer", "acc")
        verdicts: Sequence[float] = spec["verdicts"]
        n = len(verdicts)
        mean = sum(verdicts) / n
        perf = {"wall_s": 2.0, "requests": n, "errors": 0, "request_throughput_per_s": n / 2.0,
                "output_tokens_per_s": 100.0}
        if "e2e_ms_p95" in spec:
            perf.update(e2e_ms_p50=spec["e2e_ms_p95"] / 2, e2e_ms_p95=spec["e2e_ms_p95"])
        metrics[name] = {"version": "1", "primary": scorer, "performance": perf,
                         "scores": {scorer: {"value": mean, "stderr": 0.1, "ci95": [max(0, mean - 0.2), min(1, mean + 0.2)],
                                             "n": n, "extraction_failure_rate": 0.0}},
                         **spec.get("extras", {})}
        for i, v in enumerate(verdicts):
            lines.append({
                "task": name, "sample_id": f"s{i}", "repeat": 0, "prompt": f"question {i} <b>?</b>",
                "output": (spec.get("outputs") or [f"{run_id} answer {i}"] * n)[i], "target": str(i),
                "answers": {scorer: str(i) if v else None}, "verdicts": {scorer: v},
                "prompt_tokens": 10, "output_tokens": 5, "finish_reason": "stop",
                "timings": {"e2e_s": spec.get("e2e_ms_p95", 100.0) / 1000 * (0.5 + i / (2 * n)), "ttft_s": None,
                            "itl_s": None},
                "error": None, "metadata": (spec.get("metadata") or [{}] * n)[i]})
    run_json = {"schema_version": 1,
                "config": {"tasks": list(tasks), "model": model, "backend": "vllm", "temperature": temperature,
                           "engine": {"tensor_parallel_size": 1}},
                "model": {"name": model, "path": f"/models/{model}", "source": "local", "sha256": "0" * 64},
                "tasks": {name: {"version": "1", "sampling": {"temperature": temperature, "max_tokens": 16}}
                          for name in tasks},
                "provenance": {"git_revision": "abc123"}, "backend": {"backend": "vllm"},
                "status": "complete", "started_at": 1_700_000_000.0, "metrics": metrics}
    if memory is not None:
        run_json["memory"] = memory
    (run_dir / "run.json").write_text(json.dumps(run_json))
    (run_dir / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return run_dir
