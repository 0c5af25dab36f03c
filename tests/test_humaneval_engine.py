"""HumanEval end to end: the embedded model on the real vLLM engine, answers run in the sandbox."""

import json

import pytest

from evalsuite.execution import sandbox
from evalsuite.results.store import read_samples  # samples.jsonl is in completion order

pytestmark = pytest.mark.engine


def test_humaneval_runs_end_to_end_on_real_vllm(vllm_backend, run_with):
    unsandboxed = sandbox.bwrap_available() is not None
    result = run_with(vllm_backend, ["humaneval"], limit=3, max_tokens=96, num_samples=2, temperature=0.8,
                      allow_unsandboxed=unsandboxed, task_args={"humaneval": {"ks": [1, 2]}})
    records = read_samples(result.run_dir, ordered=True)
    assert sorted((r["sample_id"], r["repeat"]) for r in records) == [
        (f"HumanEval/{i}", rep) for i in range(3) for rep in (0, 1)]
    assert all(r["output_tokens"] > 0 and r["error"] is None for r in records)
    assert all(r["verdicts"]["pass@1"] in (0.0, 1.0) for r in records)
    # every verdict has a reason unless it passed, and ran in the sandbox unless no code was found
    assert all(r["verdicts"]["pass@1"] == 1.0 or r["details"]["pass@1"] for r in records)

    metrics = result.metrics["humaneval"]
    assert set(metrics["pass_at_k"]) == {"pass@1", "pass@2"}
    assert metrics["pass_at_k"]["pass@1"]["n"] == 3
    assert 0.0 <= metrics["pass_at_k"]["pass@1"]["value"] <= metrics["pass_at_k"]["pass@2"]["value"] <= 1.0
    assert sum(metrics["execution"]["statuses"].values()) == 6
    run = json.loads((result.run_dir / "run.json").read_text())
    assert run["status"] == "complete"
    assert run["tasks"]["humaneval"]["args"]["isolation"] == ("none" if unsandboxed else "bwrap")
