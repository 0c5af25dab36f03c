"""``evalsuite parity``: sample-by-sample agreement with lm-evaluation-harness.

Example::

    evalsuite parity --reference lm-eval --tasks gsm8k --limit 100 --data-dir ../shared/data

Exit code 0 when every prompt is identical and each filter's verdicts agree on
at least ``--min-agreement`` of the items, 1 otherwise, 2 on bad input.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from evalsuite.errors import UsageError

REFERENCES = ("lm-eval",)
TASKS = ("gsm8k",)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("parity", help="compare evalsuite with lm-evaluation-harness sample by sample")
    p.add_argument("--reference", default="lm-eval", help="the harness to compare with: lm-eval")
    p.add_argument("--tasks", default="gsm8k", help="task(s) to compare: gsm8k")
    p.add_argument("--model", default=None, help="local model directory (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--limit", type=int, default=100, help="first N test items (default 100)")
    p.add_argument("--data-dir", default=None, help="folder with gsm8k/{train,test}.jsonl (or EVALSUITE_DATA_DIR)")
    p.add_argument("--output-dir", type=Path, default=Path("results"))
    p.add_argument("--run-id", default=None, help="name of the parity folder (default parity-gsm8k-<time>)")
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--dtype", default="auto", help="the same for both harnesses (default: chosen from the host)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gpu-memory-utilization", type=float, default=None)
    p.add_argument("--enforce-eager", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--min-agreement", type=float, default=0.99,
                   help="exit 1 when a filter's verdicts agree on fewer items than this share (default 0.99)")
    p.set_defaults(handler=cmd_parity)


def cmd_parity(args: argparse.Namespace) -> int:
    from evalsuite.data import data_dir
    from evalsuite.interop.parity import FILTERS, EngineSettings, format_report, run_parity
    from evalsuite.models import resolve_model

    if args.reference not in REFERENCES:
        raise UsageError(f"unknown reference {args.reference!r} (supported: {', '.join(REFERENCES)})")
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unsupported = [t for t in tasks if t not in TASKS]
    if not tasks or unsupported:
        raise UsageError(f"parity supports --tasks {', '.join(TASKS)}; got {args.tasks!r}")
    if args.limit < 1:
        raise UsageError(f"--limit must be a positive integer, got {args.limit}")
    if not 0 <= args.min_agreement <= 1:
        raise UsageError(f"--min-agreement must be in [0, 1], got {args.min_agreement}")
    folder = data_dir(args.data_dir)
    if folder is None:
        raise UsageError("parity reads local files: pass --data-dir (or set EVALSUITE_DATA_DIR) to the folder with gsm8k/")
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise UsageError("parity with lm-eval needs lm-evaluation-harness: pip install 'lm-eval>=0.4,<0.5'") from None
    settings = EngineSettings(model=resolve_model(args.model).path, max_model_len=args.max_model_len,
                              dtype=args.dtype, seed=args.seed, enforce_eager=args.enforce_eager,
                              gpu_memory_utilization=args.gpu_memory_utilization)
    out = args.output_dir / (args.run_id or time.strftime("parity-gsm8k-%Y%m%d-%H%M%S"))
    report = run_parity(settings, folder, args.limit, out)
    print(format_report(report))
    print(f"\nparity report: {out / 'parity.json'}")
    ok = report["prompts_identical"] == report["n"] and all(
        report["verdict_agreement"][f] >= args.min_agreement for f in FILTERS)
    if not ok:
        print(f"evalsuite: parity below the bar (all prompts identical, verdicts agree >= {args.min_agreement})",
              file=sys.stderr)
    return 0 if ok else 1
