"""The end-of-run summary printed by ``evalsuite run`` (one run or a suite) and the
exit code that ``--max-error-rate`` decides.

Its own module so that the command line (:mod:`evalsuite.cli`) and suites
(:mod:`evalsuite.pipeline.suite`) both use it without importing each other.
"""

from __future__ import annotations

import sys
from typing import Any


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _gib(value: Any) -> str:
    return "-" if value is None else f"{value:.2f} GiB"


def format_summary(metrics: dict[str, Any], memory: dict[str, Any] | None = None) -> str:
    """The end-of-run summary: accuracy (one row per task and scorer, pass@k rows
    where a task reports them), then latency and throughput, then memory."""
    lines = [f"{'task':<16} {'metric':<22} {'value':>8} {'± stderr':>9} {'95% CI':>17} {'n':>6} {'no-answer':>9}"]
    for task, m in metrics.items():
        for name, row in m["scores"].items():
            ci = row.get("ci95")
            lines.append(
                f"{task:<16} {name:<22} {_fmt(row['value']):>8} {_fmt(row['stderr']):>9} "
                f"{(f'[{ci[0]:.3f}, {ci[1]:.3f}]' if ci else '-'):>17} {row['n']:>6} "
                f"{_fmt(row['extraction_failure_rate'], 3):>9}"
            )
        for name, row in (m.get("pass_at_k") or {}).items():
            if name not in m["scores"]:
                lines.append(f"{task:<16} {name:<22} {_fmt(row.get('value')):>8} {_fmt(row.get('stderr')):>9} "
                             f"{'-':>17} {row.get('n', '-'):>6} {'-':>9}")
    lines.append("")
    lines.append(f"{'task':<16} {'requests':>8} {'errors':>6} {'wall s':>7} {'req/s':>6} {'out tok/s':>9} "
                 f"{'TTFT p50':>9} {'TTFT p95':>9} {'TPOT p50':>9} {'E2E p50':>8} {'E2E p95':>8}  (ms)")
    for task, m in metrics.items():
        p = m["performance"]
        lines.append(
            f"{task:<16} {p['requests']:>8} {p['errors']:>6} {_fmt(p['wall_s'], 1):>7} "
            f"{_fmt(p['request_throughput_per_s'], 2):>6} {_fmt(p['output_tokens_per_s'], 1):>9} "
            f"{_fmt(p.get('ttft_ms_p50'), 0):>9} {_fmt(p.get('ttft_ms_p95'), 0):>9} "
            f"{_fmt(p.get('tpot_ms_p50'), 1):>9} {_fmt(p.get('e2e_ms_p50'), 0):>8} {_fmt(p.get('e2e_ms_p95'), 0):>8}"
        )
    if memory:
        kv = memory.get("kv_cache") or {}
        kv_text = "-"
        if kv:
            used = kv.get("peak_usage_fraction")
            kv_text = f"{kv['tokens']:,} tokens" + (f", peak {used:.1%} used" if used is not None else "")
        gpu = memory.get("peak_gpu_mem_gib")
        lines.append("")
        lines.append(f"memory: host peak RSS {_gib(memory.get('host_peak_rss_gib'))} (process tree); "
                     f"GPU peak {_gib(gpu) if gpu is not None else '- (no GPU)'}; KV cache {kv_text}")
    return "\n".join(lines)


def error_exit_code(metrics: dict[str, Any], max_error_rate: float | None) -> int:
    """1 when the share of samples with an error (a failed request or a guarded
    scoring/record failure) over all tasks exceeds ``max_error_rate``."""
    if max_error_rate is None:
        return 0
    requests = sum(m["performance"]["requests"] for m in metrics.values())
    errors = sum(m["performance"]["errors"] for m in metrics.values())
    rate = errors / requests if requests else 0.0
    if rate > max_error_rate:
        print(f"evalsuite: error rate {rate:.3f} ({errors}/{requests}) exceeds --max-error-rate {max_error_rate}",
              file=sys.stderr)
        return 1
    return 0
