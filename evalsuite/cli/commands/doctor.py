"""``evalsuite doctor``: what this host is, and the engine settings a run would choose."""

from __future__ import annotations

import json


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("doctor", help="show the detected host and the engine settings chosen from it")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    parser.set_defaults(handler=handle)


def _sandbox_line() -> str:
    import shutil

    return "bubblewrap (bwrap)" if shutil.which("bwrap") else "none found (code tasks need --allow-unsandboxed)"


def handle(args) -> int:
    import os

    from evalsuite.host import describe

    info = describe()
    if os.environ.get("VLLM_TARGET_DEVICE") == "cpu" and info["device"] != "cpu":
        from evalsuite.host import engine_defaults

        info["device"], info["chosen"] = "cpu", engine_defaults("auto", None, on_cpu=True)
    info["sandbox"] = _sandbox_line()
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    chosen = info["chosen"]
    memory = info["memory_available_gib"]
    lines = [
        f"cpu:           {info['cpu']}",
        f"cpus:          {info['cpus_available']} available to this process (affinity and cgroup quota)",
        (f"simd:          {', '.join(info['simd']) or 'none detected'}"
         f" (torch: {info.get('torch_cpu_capability', 'not installed')})"),
        f"bfloat16:      {'native' if info['native_bf16'] else 'emulated (no avx512_bf16/amx)'}",
        f"memory:        {'unknown' if memory is None else f'{memory} GiB'} available (cgroup limit included)",
        f"gpus:          {', '.join(info['cuda_devices']) or 'none'}",
        f"sandbox:       {info['sandbox']}",
        f"engine device: {info['device']}",
        f"  dtype         {chosen['dtype']:<8} {chosen['dtype_reason']}",
        f"  enforce_eager {chosen['enforce_eager']!s:<8} {chosen['enforce_eager_reason']}",
        "Flags given to `evalsuite run` (--dtype, --enforce-eager/--no-enforce-eager) override these.",
    ]
    print("\n".join(lines))
    return 0
