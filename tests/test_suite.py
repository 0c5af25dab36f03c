"""Suites: YAML files to RunConfigs (pure), and a small suite run on the real engine."""

from __future__ import annotations

import json
from argparse import Namespace
from pathlib import Path

import pytest

from evalsuite.errors import UsageError
from evalsuite.pipeline.suite import engine_group, load_suite, read_suite, run_suite

SUITE = """
name: demo
model: /models/m
seed: 3
engine: {max_model_len: 4096, dtype: bfloat16, extra: {swap_space: 1}}
defaults: {limit: 5, temperature: 0.0}
tasks:
  - name: gsm8k
    max_tokens: 128
    system_prompt: Be brief.
  - name: gsm8k
    id: gsm8k-fewshot
    limit: 3
    num_fewshot: 2
    temperature: 0.7
    top_p: 0.9
    args: {prompt: fewshot}
    engine: {max_model_len: 8192, extra: {enable_prefix_caching: true}}
  - name: not_a_task_yet
    optional: true
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return path


def test_entries_become_run_configs_with_their_own_settings(tmp_path):
    suite = read_suite(_write(tmp_path, SUITE))
    a, b = suite.configs
    assert suite.name == "demo" and suite.skipped == ("not_a_task_yet",)
    assert (a.tasks, a.run_id, a.limit, a.max_tokens, a.temperature, a.system_prompt, a.seed) == (
        ("gsm8k",), "gsm8k", 5, 128, 0.0, "Be brief.", 3)
    assert (b.run_id, b.limit, b.num_fewshot, b.temperature, b.top_p) == ("gsm8k-fewshot", 3, 2, 0.7, 0.9)
    assert dict(b.task_args["gsm8k"]) == {"prompt": "fewshot"} and not a.task_args
    assert (a.engine.max_model_len, b.engine.max_model_len) == (4096, 8192)
    assert dict(a.engine.extra) == {"swap_space": 1}
    assert dict(b.engine.extra) == {"swap_space": 1, "enable_prefix_caching": True}
    assert a.engine.dtype == b.engine.dtype == "bfloat16" and a.model == "/models/m"
    assert engine_group(a) != engine_group(b)  # different engines: not shared
    assert load_suite(_write(tmp_path, SUITE)) == list(suite.configs)


def test_overrides_replace_model_and_every_limit(tmp_path):
    a, b = read_suite(_write(tmp_path, SUITE), {"model": "/other", "limit": 1, "data_dir": None}).configs
    assert (a.model, a.limit, b.limit) == ("/other", 1, 1)


@pytest.mark.parametrize("text, message", [
    ("tasks: []\n", "non-empty list"),
    ("tasks: [gsm8k]\nengnie: {}\n", "unknown key 'engnie' \\(did you mean 'engine'\\?\\)"),
    ("tasks: [{name: gsm8k, temprature: 1}]\n", "did you mean 'temperature'"),
    ("tasks: [gsm8]\n", "unknown task 'gsm8' \\(did you mean 'gsm8k'\\?\\)"),
    ("tasks: [gsm8k, gsm8k]\n", "duplicate entry id 'gsm8k'"),
    ("tasks: [{name: gsm8k, limit: 0}]\n", r"tasks\[0\]\.limit: should be greater than or equal to 1, got 0"),
    ("tasks: [{name: gsm8k, engine: {tensor_paralel_size: 2}}]\n", "unknown key 'tensor_paralel_size'"),
    ("tasks: [gsm8k\n", "not valid YAML"),
    ("- gsm8k\n", "a suite is a mapping"),
])
def test_bad_suites_are_one_line_usage_errors(tmp_path, text, message):
    with pytest.raises(UsageError, match=message):
        read_suite(_write(tmp_path, text))


def test_missing_file():
    with pytest.raises(UsageError, match="suite file not found"):
        read_suite("no/such/suite.yaml")


def test_shipped_smoke_suite():
    suite = read_suite("suites/smoke.yaml")
    assert suite.name == "smoke"
    assert all(c.model is None and c.engine.max_model_len == 8192 and c.temperature == 0.0 for c in suite.configs)
    assert suite.configs[0].run_id == "gsm8k"
    assert len({engine_group(c) for c in suite.configs}) == 1  # one engine for the whole suite


def test_shipped_qwen_suite():
    configs = {c.run_id: c for c in read_suite("suites/qwen2.5-7b-instruct.yaml").configs}
    assert all(c.engine.tensor_parallel_size == 4 and c.model == "Qwen/Qwen2.5-7B-Instruct" for c in configs.values())
    needle = configs["needle"]
    rope = needle.engine.extra["hf_overrides"]["rope_scaling"]
    assert (rope["rope_type"], rope["factor"], rope["original_max_position_embeddings"]) == ("yarn", 4.0, 32768)
    assert needle.engine.max_model_len == 4 * 32768
    assert configs["gsm8k"].engine.max_model_len == 32768 and "hf_overrides" not in configs["gsm8k"].engine.extra
    assert (configs["humaneval"].temperature, configs["humaneval"].num_samples) == (0.8, 20)
    assert configs["gsm8k"].temperature == 0.0 and configs["json_extraction"].top_p == 0.8


@pytest.mark.engine
def test_suite_runs_on_the_real_engine_and_reads_as_one_run(tmp_path, vllm_backend, gsm8k_data_dir, capsys):
    from evalsuite.report.build import load_run

    path = _write(tmp_path, """
name: tiny
tasks:
  - {name: gsm8k, limit: 2, max_tokens: 16}
  - {name: gsm8k, id: gsm8k-hot, limit: 2, max_tokens: 16, temperature: 1.0}
""")
    args = Namespace(model=None, data_dir=str(gsm8k_data_dir), limit=None, run_id="s1",
                     output_dir=tmp_path / "results", no_progress=True, no_cache=True, max_error_rate=None)
    assert run_suite(path, args, backend=vllm_backend) == 0
    suite_dir = tmp_path / "results" / "s1"
    meta = json.loads((suite_dir / "suite.json").read_text())
    assert meta["status"] == "complete" and meta["runs"] == ["gsm8k", "gsm8k-hot"]
    hot = json.loads((suite_dir / "gsm8k-hot" / "run.json").read_text())
    assert hot["tasks"]["gsm8k"]["sampling"]["temperature"] == 1.0
    assert hot["tasks"]["gsm8k"]["sampling"]["max_tokens"] == 16
    run = load_run(suite_dir)
    assert run.tasks == ["gsm8k", "gsm8k-hot"] and len(run.samples) == 4
    assert "results: " in capsys.readouterr().out
    from evalsuite.report.build import write_report
    from evalsuite.report.compare import compare_runs, load_thresholds

    folder = write_report([suite_dir], output_dir=tmp_path / "reports")
    assert "| gsm8k-hot | strict-match |" in (folder / "report.md").read_text()
    same = compare_runs(run, run, load_thresholds("thresholds/default.yaml"))
    assert not same.regressed and [c.n for c in same.checks if c.kind == "accuracy"] == [2, 2]
    with pytest.raises(UsageError, match="already exists"):
        run_suite(path, args, backend=vllm_backend)


def test_peak_memory_over_suite_runs():
    from evalsuite.pipeline.suite import peak_memory

    a = {"host_peak_rss_gib": 3.0, "peak_gpu_mem_gib": None,
         "kv_cache": {"tokens": 100, "blocks": 1, "block_size": 100, "peak_usage_fraction": 0.2}}
    b = {"host_peak_rss_gib": 4.5, "peak_gpu_mem_gib": None,
         "kv_cache": {"tokens": 100, "blocks": 1, "block_size": 100, "peak_usage_fraction": 0.7}}
    merged = peak_memory([a, None, b])
    assert merged["host_peak_rss_gib"] == 4.5 and merged["peak_gpu_mem_gib"] is None
    assert merged["kv_cache"]["peak_usage_fraction"] == 0.7
    assert peak_memory([None]) is None
