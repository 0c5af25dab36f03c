"""``evalsuite compare BASE CAND``: paired tests and thresholds; exit code 1 on a regression."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "compare", help="compare a candidate run with a baseline; exit 1 on a regression",
        description="Paired per-sample tests on accuracy (exact McNemar for 0/1 verdicts, paired bootstrap "
                    "otherwise) and thresholds on accuracy drop, latency and memory increase. Writes "
                    "compare.json and compare.md; prints the Markdown. Exit code 1 on a regression, 0 otherwise.")
    p.add_argument("base", metavar="BASE", help="baseline run or suite directory (or run id)")
    p.add_argument("cand", metavar="CAND", help="candidate run or suite directory (or run id)")
    p.add_argument("--thresholds", type=Path, default=None,
                   help="thresholds YAML (default: built-in limits, as in thresholds/default.yaml: accuracy "
                        "drop > 0.02 with p < 0.05, latency (e2e_ms_p95) increase > 50%%, memory increase > 10%%)")
    p.add_argument("--output-dir", type=Path, default=None,
                   help="folder for compare.json and compare.md (default: reports/compare_BASE_vs_CAND)")
    p.add_argument("--results-dir", type=Path, default=Path("results"))
    p.set_defaults(handler=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    from evalsuite.report.compare import to_markdown, write_comparison

    comparison, folder = write_comparison(args.base, args.cand, args.thresholds, args.output_dir, args.results_dir)
    print(to_markdown(comparison))
    print(f"written: {folder / 'compare.json'}, {folder / 'compare.md'}", file=sys.stderr)
    return 1 if comparison.regressed else 0
