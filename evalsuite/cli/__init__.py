"""``evalsuite`` command line: ``run`` and ``list``.

Bad input ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evalsuite.errors import UsageError, one_line
from evalsuite.results.summary import error_exit_code, format_summary

DEFAULT_LIMIT_HINT = "all samples"


def _key_value(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def _task_list(text: str) -> tuple[str, ...]:
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise argparse.ArgumentTypeError(f"task named twice: {', '.join(duplicated)}")
    return names


class _Parser(argparse.ArgumentParser):
    """argparse with bad input reported on one line (exit code 2), like every other
    usage error of evalsuite."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"evalsuite: error: {one_line(message)} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="evalsuite", description="Evaluate and benchmark LLMs.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run tasks on a model and write results/<run_id>/")
    run.add_argument("--tasks", type=_task_list, default=None,
                     help="comma-separated task names (required unless --suite or --resume)")
    run.add_argument("--suite", type=Path, default=None,
                     help="a suite YAML (suites/*.yaml): several tasks, each with its own settings")
    run.add_argument("--model", default=None, help="local model directory or hub id (default: the embedded SmolLM2-135M-Instruct)")
    run.add_argument("--backend", default="vllm", help="vllm (default, in-process), openai (a served endpoint) or hf")
    run.add_argument("--limit", type=int, default=None, help="first N samples of each task (default: all)")
    run.add_argument("--num-fewshot", type=int, default=None, help="few-shot examples (task default if omitted)")
    run.add_argument("--data-dir", default=None, help="folder with local dataset files (or EVALSUITE_DATA_DIR)")
    run.add_argument("--max-tokens", type=int, default=None, help="max output tokens (task default if omitted)")
    run.add_argument("--temperature", type=float, default=None)
    run.add_argument("--top-p", type=float, default=None)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--system-prompt", default=None, help="system message prepended to chat prompts")
    run.add_argument("--batch-size", type=int, default=None,
                     help="requests per generate call, for backends without streaming (hf); default 256")
    run.add_argument("--output-dir", type=Path, default=Path("results"))
    run.add_argument("--run-id", default=None)
    run.add_argument("--label", default=None,
                     help="a short name for the run in reports (default: derived from what differs between runs)")
    run.add_argument("--tensor-parallel-size", type=int, default=1)
    run.add_argument("--max-model-len", type=int, default=None)
    run.add_argument("--gpu-memory-utilization", type=float, default=None)
    run.add_argument("--dtype", default="auto", help="bfloat16, float16, float32 or auto (chosen from the host)")
    run.add_argument("--enforce-eager", action=argparse.BooleanOptionalAction, default=None,
                     help="eager mode, no compilation (default: on for the CPU, off on a GPU)")
    run.add_argument("--engine-arg", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                     help="any other engine argument, passed through (value parsed as JSON when it is)")
    run.add_argument("--task-arg", type=_key_value, action="append", default=[], metavar="TASK.KEY=VALUE",
                     help="a task factory argument, e.g. gsm8k.prompt=fewshot")
    run.add_argument("--num-samples", type=int, default=None,
                     help="generations per sample, for pass@k (tasks that take it)")
    run.add_argument("--allow-unsandboxed", action="store_true",
                     help="let code-execution tasks run without a sandbox when none is available")
    _add_replica_arguments(run)
    run.add_argument("--max-error-rate", type=float, default=None,
                     help="exit with code 1 when the share of samples with an error (a failed request, or a "
                          "failure while scoring or writing it) exceeds this (default: any error is tolerated)")
    run.add_argument("--no-cache", action="store_true",
                     help="neither read nor write the response cache ($EVALSUITE_CACHE/responses.sqlite)")
    run.add_argument("--resume", metavar="RUN_DIR", default=None,
                     help="finish an interrupted run with its stored config; finished samples are kept")
    run.add_argument("--no-progress", action="store_true")
    run.set_defaults(handler=cmd_run, run_parser=run)

    sub.add_parser("list", help="list tasks and backends").set_defaults(handler=lambda args: cmd_list())
    for module in _command_modules():
        module.add_parser(sub)
    return parser


def _add_replica_arguments(run: argparse.ArgumentParser) -> None:
    """Options for served endpoints and engine replicas (``--base-url``, ``--ray-address``...)."""
    server = run.add_argument_group("served endpoints (openai backend)")
    server.add_argument("--base-url", action="append", default=[], help="endpoint URL; repeat for replicas")
    server.add_argument("--max-concurrency", type=int, default=None, help="requests in flight at once")
    server.add_argument("--request-timeout", type=float, default=None, help="seconds per request")
    server.add_argument("--max-retries", type=int, default=None, help="retries per request on connection errors, 429 and 5xx")
    run.add_argument("--data-parallel-size", type=int, default=None,
                     help="vllm: engine replicas, each on its own GPUs (tensor-parallel-size GPUs each); "
                          "free replicas pull the next requests")
    run.add_argument("--ray-address", default=None, metavar="ADDR|auto",
                     help="vllm: run the replicas as Ray actors on this cluster (needs evalsuite[ray]); "
                          "--data-parallel-size defaults to as many as the cluster holds")
    run.add_argument("--replica-timeout", type=float, default=None, metavar="SECONDS",
                     help="vllm replicas: seconds one replica may take for one chunk of requests before it "
                          "is abandoned and its requests go to another (default 1800)")


def _command_modules():
    import importlib
    import pkgutil

    import evalsuite.cli.commands as package

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            yield importlib.import_module(f"evalsuite.cli.commands.{info.name}")


def config_from_args(args: argparse.Namespace):
    from evalsuite.config import EngineConfig, RunConfig

    task_args: dict[str, dict[str, Any]] = {}
    for key, value in args.task_arg:
        if "." not in key:
            raise UsageError(f"--task-arg needs TASK.KEY=VALUE, got {key!r}")
        # A file-loaded task's name holds dots (``my_task.py@my_task.n=3``): split after the ``@``.
        name, field = key.rsplit(".", 1) if "@" in key else key.split(".", 1)
        if args.tasks and name not in args.tasks:
            raise UsageError(f"--task-arg {key}: task '{name}' is not in --tasks ({', '.join(args.tasks)})")
        task_args.setdefault(name, {})[field] = value
    return RunConfig(
        tasks=args.tasks, model=args.model, backend=args.backend, limit=args.limit,
        num_fewshot=args.num_fewshot, data_dir=args.data_dir, max_tokens=args.max_tokens,
        temperature=args.temperature, top_p=args.top_p, seed=args.seed,
        system_prompt=args.system_prompt, batch_size=args.batch_size, output_dir=args.output_dir,
        run_id=args.run_id,
        engine=EngineConfig(tensor_parallel_size=args.tensor_parallel_size, max_model_len=args.max_model_len,
                            gpu_memory_utilization=args.gpu_memory_utilization, dtype=args.dtype,
                            enforce_eager=args.enforce_eager, extra=dict(args.engine_arg)),
        task_args=task_args, num_samples=args.num_samples, allow_unsandboxed=args.allow_unsandboxed,
        backend_args={k: v for k, v in {
            "base_urls": tuple(args.base_url) or None, "max_concurrency": args.max_concurrency,
            "request_timeout": args.request_timeout, "max_retries": args.max_retries,
            "data_parallel_size": args.data_parallel_size, "ray_address": args.ray_address,
            "replica_timeout": args.replica_timeout}.items() if v is not None},
        max_error_rate=args.max_error_rate, cache=not args.no_cache, label=args.label,
    )


RESUME_COMPATIBLE = frozenset({"resume", "no_cache", "no_progress", "handler", "run_parser", "command"})


def resume_config_from_args(args: argparse.Namespace):
    """The stored config of ``--resume RUN_DIR``; other flags that change what a run
    does are refused, since the run must finish as it started."""
    from evalsuite.results.resume import resume_config

    parser = args.run_parser
    given = [a.option_strings[0] for a in parser._actions
             if a.dest not in RESUME_COMPATIBLE and a.option_strings and a.dest != "help"
             and getattr(args, a.dest, a.default) != a.default]
    if given:
        raise UsageError(f"--resume finishes a run with its stored configuration; drop {', '.join(given)}")
    return resume_config(Path(args.resume), cache=not args.no_cache)


def suite_ignored_flags(args: argparse.Namespace) -> list[tuple[str, bool]]:
    """The run flags a suite file decides, with whether each was given."""
    return [("--backend", args.backend != "vllm"), ("--base-url", bool(args.base_url)),
            ("--engine-arg", bool(args.engine_arg)), ("--task-arg", bool(args.task_arg)),
            ("--tensor-parallel-size", args.tensor_parallel_size != 1), ("--max-tokens", args.max_tokens is not None),
            ("--temperature", args.temperature is not None), ("--top-p", args.top_p is not None),
            ("--num-samples", args.num_samples is not None), ("--num-fewshot", args.num_fewshot is not None),
            ("--system-prompt", args.system_prompt is not None), ("--max-model-len", args.max_model_len is not None)]


def cmd_list() -> int:
    from evalsuite.registry import backends, tasks

    print("tasks:    " + ", ".join(tasks.names()))
    print("backends: " + ", ".join(backends.names()))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    if args.suite is not None:
        from evalsuite.pipeline.suite import run_suite

        if args.tasks or args.resume:
            raise UsageError("--suite names its own tasks; drop --tasks/--resume")
        ignored = [flag for flag, given in suite_ignored_flags(args) if given]
        if ignored:
            raise UsageError(f"--suite sets {', '.join(ignored)} in the suite file; drop the flag(s) "
                             "(--model, --data-dir, --limit, --label, --no-cache, --max-error-rate, --ray-address, "
                             "--replica-timeout, --data-parallel-size apply)")
        if not args.suite.is_file():
            raise UsageError(f"suite file not found: {args.suite}")
        return run_suite(args.suite, args)
    from evalsuite.pipeline.runner import run

    config = resume_config_from_args(args) if args.resume else config_from_args(args)
    result = run(config, progress=not args.no_progress, announce=lambda line: print(line, file=sys.stderr))
    print(format_summary(result.metrics, result.memory))
    print(f"\nresults: {result.run_dir}")
    return error_exit_code(result.metrics, config.max_error_rate)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line. Run as a command (``argv`` None: ``sys.argv``), the process
    is guarded (:func:`evalsuite.pipeline.lifecycle.guard_process`): SIGINT, SIGTERM and
    SIGHUP stop it and every child within seconds, and a watchdog ends its children
    if it is killed outright."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if argv is None:
            from evalsuite.pipeline import lifecycle

            lifecycle.guard_process()
        return args.handler(args)
    except UsageError as e:
        print(f"evalsuite: error: {one_line(str(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:
        from evalsuite.pipeline import lifecycle

        print("evalsuite: interrupted; finished samples are in the run's samples.jsonl", file=sys.stderr)
        if argv is None:
            lifecycle.stop_children(grace_s=1.0)
        return 128 + getattr(e, "signum", 2)
    except BrokenPipeError:  # `evalsuite ... | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:
        if argv is not None:  # called from Python: the caller gets the exception
            raise
        return crashed(e, resumable=args.handler is cmd_run)


def crashed(error: Exception, resumable: bool) -> int:
    """Exit code 1 and one line for a failure that is not a usage error (an engine that
    died, a bug of ours); the traceback goes to a file the line names. A run that was
    under way already says ``failed`` in its ``run.json``, with the error, and keeps its
    finished samples for ``--resume`` (``resumable``: say so)."""
    import tempfile
    import traceback

    try:
        fd, path = tempfile.mkstemp(prefix="evalsuite-traceback-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            traceback.print_exception(error, file=f)
        where = f"traceback in {path}"
    except OSError as e:
        where = f"traceback not written: {e}"
    try:
        what = f"{type(error).__name__}: {error}"
    except Exception:  # noqa: BLE001 (an exception whose __str__ fails is still reported)
        what = type(error).__name__
    hint = "; a run's finished samples stay in its samples.jsonl and --resume continues it" if resumable else ""
    print(f"evalsuite: error: {one_line(what)} ({one_line(where)}{hint})", file=sys.stderr)
    return 1

if __name__ == "__main__":
    sys.exit(main())
