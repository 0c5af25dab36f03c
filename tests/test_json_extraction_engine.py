"""json_extraction free and constrained on the real vLLM engine (embedded SmolLM2)."""

import json

import pytest

from evalsuite.results.store import read_samples  # samples.jsonl is in completion order
from evalsuite.scoring import json_format as jf

pytestmark = pytest.mark.engine

LIMIT = 8  # two cases of each family


def test_free_and_constrained_end_to_end_on_real_vllm(vllm_backend, run_with):
    result = run_with(vllm_backend, ["json_extraction", "json_extraction_constrained"], limit=LIMIT)
    run = json.loads((result.run_dir / "run.json").read_text())
    assert run["status"] == "complete"
    records = read_samples(result.run_dir, ordered=True)
    by_task = {name: [r for r in records if r["task"] == name]
               for name in ("json_extraction", "json_extraction_constrained")}
    # Both tasks saw the same cases.
    assert [r["sample_id"] for r in by_task["json_extraction"]] == [r["sample_id"] for r in
                                                                    by_task["json_extraction_constrained"]]

    for name, rows in by_task.items():
        metrics = result.metrics[name]
        assert len(rows) == LIMIT and all(r["output_tokens"] > 0 and r["error"] is None for r in rows)
        assert set(metrics["scores"]) == {"strict-parse", "lenient-parse", "schema-valid", "exact-match",
                                          "field-accuracy", "field-precision", "field-recall", "field-f1"}
        assert all(row["n"] == LIMIT for row in metrics["scores"].values())
        outcomes = metrics["outcomes"]
        assert sum(outcomes[k] for k in jf.OUTCOMES) == outcomes["n"] == LIMIT
        cut = sum(r["finish_reason"] == "length" for r in rows)
        assert metrics["truncated_rate"]["value"] == pytest.approx(cut / LIMIT)
        # Re-check each verdict from the stored output with the scoring functions.
        for r in rows:
            verdict = jf.classify_output(r["output"], r["metadata"]["schema"], r["finish_reason"])
            assert (verdict == "valid") == (r["verdicts"]["schema-valid"] == 1.0), r["output"]

    constrained = by_task["json_extraction_constrained"]
    finished = [r for r in constrained if r["finish_reason"] != "length"]
    assert finished, "every constrained output hit the token limit"
    # Every constrained output that was not cut off follows its schema, formats included.
    for r in finished:
        parsed = jf.strict_parse(r["output"])
        assert parsed.ok, r["output"]
        assert jf.schema_errors(parsed.value, r["metadata"]["schema"]) == [], r["output"]
    assert result.metrics["json_extraction_constrained"]["finished"]["schema-valid"]["value"] == 1.0
    assert result.metrics["json_extraction_constrained"]["finished"]["schema-valid"]["n"] == len(finished)
