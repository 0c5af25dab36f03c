import json

import pytest

pytestmark = pytest.mark.engine


def test_gsm8k_runs_end_to_end_on_real_vllm(vllm_backend, run_with, gsm8k_data_dir):
    result = run_with(vllm_backend, ["gsm8k"], limit=4, data_dir=str(gsm8k_data_dir), max_tokens=64)
    lines = (result.run_dir / "samples.jsonl").read_text().splitlines()
    assert [json.loads(l)["sample_id"] for l in lines] == ["test-0", "test-1", "test-2", "test-3"]
    run = json.loads((result.run_dir / "run.json").read_text())
    assert run["status"] == "complete"
    assert run["metrics"]["gsm8k"]["scores"]["strict-match"]["n"] == 4
    assert all(json.loads(l)["output_tokens"] > 0 for l in lines)
