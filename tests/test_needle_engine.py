"""The needle task end to end on the real vLLM engine (embedded SmolLM2, 8,192 positions)."""

import json

import pytest

from evalsuite.results.store import read_samples  # samples.jsonl is in completion order

pytestmark = pytest.mark.engine


def test_needle_runs_up_to_the_8k_limit_and_draws_the_heatmap(vllm_backend, run_with):
    # Four generated cells (about 18K prompt tokens of prefill on 2 cores) and two skipped ones.
    grid = {"lengths": [1024, 8176, 8192], "depths": [0, 100], "max_tokens": 16}
    result = run_with(vllm_backend, ["needle"], task_args={"needle": grid}, max_tokens=16,
                      cache=False)  # the engine itself, not the response cache

    run = json.loads((result.run_dir / "run.json").read_text())
    assert run["status"] == "complete"
    metrics = run["metrics"]["needle"]
    # 8,192-token prompts + 16 new tokens cannot fit 8,192 positions: skipped, not truncated.
    assert metrics["n_skipped"] == 2
    assert {(s["length"], s["depth"]) for s in metrics["skipped"]} == {(8192, 0), (8192, 100)}
    assert [(c["length"], c["depth"]) for c in metrics["recall_by_cell"]] == [
        (L, d) for L in (1024, 8176) for d in (0, 100)]
    assert set(metrics["recall_by_length"]) == {"1024", "8176"}
    assert set(metrics["recall_by_depth"]) == {"0", "100"}
    assert "effective_context_length" in metrics
    assert metrics["scores"]["recall"]["n"] == 4

    records = read_samples(result.run_dir, ordered=True)
    assert len(records) == 4
    for r in records:
        assert r["error"] is None and r["output_tokens"] > 0
        # The task counted exactly the tokens the engine saw.
        assert r["prompt_tokens"] == r["metadata"]["prompt_tokens"]
        assert r["prompt_tokens"] + 16 <= 8192
    assert max(r["prompt_tokens"] for r in records) >= 8176 - 82

    print(f"needle engine test: generation wall {metrics['performance']['wall_s']:.1f} s")
    heatmap = result.run_dir / "needle_heatmap.png"
    assert heatmap.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
