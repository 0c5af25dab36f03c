"""A failure that is not a usage error (an engine that dies mid-run, a bug) ends the
command with exit code 1 and one line naming a file with the traceback; the run's
``run.json`` says ``failed`` with the error, and ``--resume`` completes the run.

The real CLI in a subprocess, on the scripted backend, with gsm8k from the shared
data; the engine's death is injected by replacing the backend's ``generate`` so that
it raises (what vLLM's ``EngineDeadError`` does to a run).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

CRASHING = """
import sys
from evalsuite.backends.scripted import ScriptedBackend
from evalsuite.cli import main

class Unprintable(Exception):
    def __str__(self):
        raise ValueError("no text for this one")

def dies(self, requests):
    raise RuntimeError("EngineCore encountered an issue\\nsee the stack trace above")

def dies_unprintably(*args, **kwargs):
    raise Unprintable()

ScriptedBackend.generate = dies
import evalsuite.report.build
evalsuite.report.build.write_report = dies_unprintably
sys.argv = ["evalsuite", *sys.argv[1:]]
sys.exit(main())
"""


def _run(script: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=120,
                          check=False)


def test_an_engine_that_dies_mid_run_is_one_line_and_the_run_resumes(tmp_path, gsm8k_data_dir):
    script = tmp_path / "crashing.py"
    script.write_text(CRASHING)
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps({"*": "The answer is 7.\n#### 7"}))
    common = ["--backend", "scripted", "--model", str(answers), "--no-progress", "--no-cache"]
    proc = _run(script, "run", "--tasks", "gsm8k", "--limit", "6", "--data-dir", str(gsm8k_data_dir),
                "--output-dir", str(tmp_path / "results"), *common)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("evalsuite: error: RuntimeError: EngineCore encountered an issue\\nsee the stack")
    log = Path(re.search(r"traceback in (\S+?);", last).group(1))
    assert last.endswith("--resume continues it)")
    assert "Traceback" in log.read_text() and "in dies" in log.read_text()
    [run_dir] = (tmp_path / "results").iterdir()
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "failed" and "EngineCore encountered an issue" in run["error"]

    resumed = subprocess.run([sys.executable, "-m", "evalsuite.cli", "run", "--resume", str(run_dir), "--no-progress"],
                             capture_output=True, text=True, timeout=120, check=False)
    assert resumed.returncode == 0, resumed.stderr
    records = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert sorted(r["sample_id"] for r in records) == sorted({r["sample_id"] for r in records})
    assert len(records) == 6
    assert json.loads((run_dir / "run.json").read_text())["status"] == "complete"


def test_a_crash_outside_a_run_is_one_line_without_the_resume_hint(tmp_path):
    """``report`` failing inside (its builder replaced by one that raises an exception
    whose ``__str__`` itself fails): one line naming the type, no word of --resume."""
    script = tmp_path / "crashing.py"
    script.write_text(CRASHING)
    proc = _run(script, "report", str(tmp_path), "--output-dir", str(tmp_path / "reports"))
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("evalsuite: error: Unprintable (traceback in ")
    assert "--resume" not in line
    log = Path(re.search(r"traceback in (\S+?)\)", line).group(1))
    assert "dies_unprintably" in log.read_text()
