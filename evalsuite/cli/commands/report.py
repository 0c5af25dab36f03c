"""``evalsuite report RUN...``: a Markdown and a self-contained HTML report over runs."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "report", help="write reports/<name>/report.md and report.html over one or more runs",
        description="Tables (accuracy with 95%% intervals, latency, throughput, memory), figures and, "
                    "in HTML, the samples that flipped between the first run (baseline) and each other run.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run or suite directory, or a run id under --results-dir")
    p.add_argument("--name", default=None, help="report folder name (default: the run names joined by _vs_)")
    p.add_argument("--output-dir", type=Path, default=Path("reports"))
    p.add_argument("--results-dir", type=Path, default=Path("results"))
    p.set_defaults(handler=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from evalsuite.report.build import write_report

    folder = write_report(args.runs, name=args.name, output_dir=args.output_dir, results_dir=args.results_dir)
    print(f"report: {folder / 'report.md'}\n        {folder / 'report.html'}")
    return 0
