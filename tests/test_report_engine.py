"""The issue's case for real: two GSM8K runs of the embedded model on the real vLLM
engine (CPU) that differ only in ``--dtype``, then ``report`` and ``compare``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from browser import FOLD, needs_chromium, probe, screenshot

from evalsuite.report.build import build_report, headline_rows, load_run, write_report
from evalsuite.report.compare import compare_runs, load_thresholds
from evalsuite.report.differences import what_differs


def _run(dtype: str, out, data_dir) -> None:
    env = {**os.environ, "VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_KVCACHE_SPACE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "evalsuite.cli", "run", "--tasks", "gsm8k", "--limit", "3", "--max-tokens", "24",
         "--dtype", dtype, "--enforce-eager", "--max-model-len", "2048", "--no-cache", "--no-progress",
         "--data-dir", str(data_dir), "--output-dir", str(out)],
        capture_output=True, text=True, timeout=1200, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.engine
@needs_chromium
def test_two_real_runs_differing_in_dtype(tmp_path, gsm8k_data_dir):
    results = tmp_path / "results"
    _run("bfloat16", results, gsm8k_data_dir)
    _run("float32", results, gsm8k_data_dir)
    base, cand = sorted(results.iterdir(), key=lambda p: load_run(p).info("started_at"))
    runs = [load_run(base), load_run(cand)]
    assert [d.field for d in what_differs(runs)] == ["engine.dtype"]
    report = build_report(runs, "dtype")
    assert report.labels == ["SmolLM2-135M-Instruct · dtype=bfloat16", "SmolLM2-135M-Instruct · dtype=float32"]
    assert report.differs == "The runs differ in dtype (bfloat16 \u2192 float32)."
    # Three pairs cannot reach p < 0.05 (the smallest exact McNemar p is 2 / 2**3 = 0.25).
    assert report.verdict.startswith("No significant change: no task changed significantly")

    folder = write_report([base, cand], name="dtype-engine", output_dir=tmp_path / "reports")
    found = probe(folder / "report.html", "{height:window.innerHeight,parts:['verdict','differs'].map(id=>"
                  "({bottom:document.getElementById(id).getBoundingClientRect().bottom,"
                  "text:document.getElementById(id).innerText}))}", tmp_path / "profile")
    assert all(p["bottom"] <= found["height"] <= FOLD[1] for p in found["parts"])
    assert "dtype" in found["parts"][1]["text"] and "no task changed significantly" in found["parts"][0]["text"]
    screenshot(folder / "report.html", "report_dtype_engine.png", tmp_path / "profile2")

    (row,) = headline_rows(runs, report.labels, ["gsm8k"], what_differs(runs))
    (check,) = [c for c in compare_runs(*runs, load_thresholds(None)).checks if c.kind == "accuracy"]
    r = row.difference.result
    assert (check.n, check.delta, check.p_value) == (r.n, r.diff, r.p_value) and r.n == 3


@pytest.mark.engine
@needs_chromium
def test_twelve_tiny_real_runs_give_a_matrix_and_a_trend(tmp_path, vllm_backend, gsm8k_data_dir, run_with):
    """Twelve real runs on the shared engine (2 GSM8K problems each, sampled with
    seeds 0..11): the report labels them by the setting that differs, marks the
    best per task and draws the trend, oldest first."""
    dirs = [run_with(vllm_backend, ["gsm8k"], limit=2, max_tokens=16, temperature=1.0, seed=k,
                     data_dir=str(gsm8k_data_dir), cache=False).run_dir for k in range(12)]
    folder = write_report(dirs, name="twelve", output_dir=tmp_path / "reports")
    found = probe(folder / "report.html", "{matrix:[...document.querySelectorAll('#matrix tbody tr')]"
                  ".map(r=>r.cells[0].innerText),"
                  "trend:[...document.querySelectorAll('#overview img')].map(i=>i.naturalWidth),"
                  "bottom:document.getElementById('overview').getBoundingClientRect().bottom}",
                  tmp_path / "profile", window=(1400, 900))
    assert found["matrix"] == [f"SmolLM2-135M-Instruct · seed={k}" for k in range(12)]
    assert len(found["trend"]) == 1 and found["trend"][0] > 0
    screenshot(folder / "report.html", "report_12_runs_engine.png", tmp_path / "profile2",
               window=(1400, min(6000, int(found["bottom"]) + 20)))
