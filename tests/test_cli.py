"""The command line: bad input gets one line on stderr and exit code 2."""

import subprocess
import sys

import pytest


def evalsuite(*args, env_extra=None, cwd=None):
    import os

    env = {**os.environ, **(env_extra or {})}
    env.pop("EVALSUITE_DATA_DIR", None) if env_extra is None or "EVALSUITE_DATA_DIR" not in env_extra else None
    return subprocess.run([sys.executable, "-m", "evalsuite.cli", *args], capture_output=True, text=True,
                          timeout=120, env=env, cwd=cwd, check=False)


def _one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("evalsuite: error: ")
    for needle in needles:
        assert needle in lines[0]
    assert "Traceback" not in proc.stderr


def test_unknown_task_suggests_the_closest_name(tmp_path):
    _one_line_error(evalsuite("run", "--tasks", "gsm8", "--output-dir", str(tmp_path)),
                    "unknown task 'gsm8'", "did you mean 'gsm8k'?")


def test_missing_data_file_names_the_flag(tmp_path):
    proc = evalsuite("run", "--tasks", "gsm8k", "--data-dir", str(tmp_path / "nowhere"),
                     "--output-dir", str(tmp_path / "r"))
    _one_line_error(proc, "data file not found", "--data-dir")
    assert not (tmp_path / "r").exists()


def test_nonexistent_model_path(tmp_path, gsm8k_data_dir):
    proc = evalsuite("run", "--tasks", "gsm8k", "--model", str(tmp_path / "no-such-model"),
                     "--data-dir", str(gsm8k_data_dir), "--output-dir", str(tmp_path / "r"))
    _one_line_error(proc, "model path does not exist")


def test_negative_limit(tmp_path, gsm8k_data_dir):
    proc = evalsuite("run", "--tasks", "gsm8k", "--limit", "-1", "--data-dir", str(gsm8k_data_dir))
    _one_line_error(proc, "--limit must be a positive integer")


def test_unknown_backend_and_misplaced_flag(tmp_path, gsm8k_data_dir):
    _one_line_error(evalsuite("run", "--tasks", "gsm8k", "--backend", "vlm", "--data-dir", str(gsm8k_data_dir)),
                    "unknown backend 'vlm'", "did you mean 'vllm'?")
    _one_line_error(evalsuite("run", "--tasks", "gsm8k", "--base-url", "http://127.0.0.1:1",
                              "--data-dir", str(gsm8k_data_dir)), "--base-url does not apply")


@pytest.mark.parametrize("argv", [["list"], ["run", "--tasks", "gsm8", "--output-dir", "/nonexistent/r"]],
                         ids=["list", "run-usage-error"])
def test_the_command_line_does_not_import_heavy_libraries_it_does_not_use(argv):
    # torch and vllm load with an engine; ray only with --ray-address (every import of it
    # costs seconds on each command).
    code = (f"import sys; from evalsuite.cli import main; main({argv!r}); "
            "heavy = sorted({'torch', 'vllm', 'ray', 'transformers'} & set(sys.modules)); "
            "assert not heavy, heavy")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    if argv == ["list"]:
        assert "gsm8k" in proc.stdout and "vllm" in proc.stdout


def test_constrained_task_on_hf_is_refused_up_front(tmp_path):
    proc = evalsuite("run", "--tasks", "json_extraction_constrained", "--backend", "hf", "--limit", "1",
                     "--output-dir", str(tmp_path / "r"))
    _one_line_error(proc, "needs constrained decoding", "hf")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("flag, value, message", [
    ("--max-concurrency", "0", "--max-concurrency must be >= 1"),
    ("--request-timeout", "-1", "--request-timeout must be > 0"),
    ("--max-retries", "-1", "--max-retries must be >= 0"),
    ("--max-model-len", "-5", "--max-model-len must be a positive integer"),
    ("--gpu-memory-utilization", "1.5", "--gpu-memory-utilization must be in (0, 1]"),
])
def test_bad_numbers_stop_before_anything_is_written(tmp_path, gsm8k_data_dir, flag, value, message):
    proc = evalsuite("run", "--tasks", "gsm8k", "--backend", "openai", flag, value,
                     "--data-dir", str(gsm8k_data_dir), "--output-dir", str(tmp_path / "r"))
    _one_line_error(proc, message)
    assert not (tmp_path / "r").exists()
