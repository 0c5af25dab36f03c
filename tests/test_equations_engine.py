"""The equations task end to end on the real vLLM engine (embedded SmolLM2)."""

import json

import pytest

from evalsuite.results.store import read_samples  # samples.jsonl is in completion order

pytestmark = pytest.mark.engine


def test_equations_runs_end_to_end_on_real_vllm(vllm_backend, run_with):
    result = run_with(vllm_backend, ["equations"], limit=3, max_tokens=96)
    lines = read_samples(result.run_dir, ordered=True)
    assert [d["sample_id"] for d in lines] == ["brief-0", "linear-0", "quadratic-real-0"]
    assert all(d["output_tokens"] > 0 and d["error"] is None for d in lines)
    assert all(set(d["verdicts"]) == {"exact-solution-set", "substitution-check"} for d in lines)
    run = json.loads((result.run_dir / "run.json").read_text())
    assert run["status"] == "complete"
    metrics = run["metrics"]["equations"]
    assert metrics["primary"] == "exact-solution-set"
    assert metrics["scores"]["exact-solution-set"]["n"] == 3
    counts = metrics["verification"]
    assert counts["right"] + counts["wrong"] + counts["no_answer"] + counts["unverifiable"] == 3
    assert set(metrics["families"]) == {"quadratic-real", "linear"}
    assert metrics["families"]["quadratic-real"]["n"] == 2
    assert all(d["second_opinions"]["exact-solution-set"]["status"] in ("ok", "timeout", "error", "died")
               for d in lines)
    mv = metrics["math_verify"]
    assert mv["scorer"] == "exact-solution-set" and mv["n"] + mv["unavailable"] == 3
    assert mv["agree"] + mv["disagree"] == mv["n"]
