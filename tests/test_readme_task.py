"""The README's "Writing a task" example is complete and runs as written: the task
file is taken from README.md, the commands under it run from the command line
(file-loaded task, scripted backend) and the figures the README states are checked."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def _section_blocks(title: str) -> dict[str, list[str]]:
    text = README.read_text(encoding="utf-8")
    section = text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
    blocks: dict[str, list[str]] = {}
    for lang, body in re.findall(r"```(\w+)\n(.*?)```", section, re.DOTALL):
        blocks.setdefault(lang, []).append(body)
    return blocks


def test_the_readme_task_is_at_most_30_lines_and_runs_from_the_command_line(tmp_path):
    blocks = _section_blocks("Writing a task")
    [task_source] = blocks["python"]
    assert len(task_source.strip().splitlines()) <= 30
    (tmp_path / "capitals.py").write_text(task_source)
    [commands] = blocks["bash"]
    for line in commands.strip().splitlines():
        line = re.sub(r"^evalsuite ", f"{sys.executable} -m evalsuite.cli ", line)
        proc = subprocess.run(["bash", "-c", line], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                              check=False)
        assert proc.returncode == 0, proc.stderr
    [run_dir] = (tmp_path / "results").iterdir()
    metrics = json.loads((run_dir / "run.json").read_text())["metrics"]["capitals"]
    # France answers "Paris" (last-line right), Japan "Answer: Tokyo." (answer right), Peru and Kenya no answer.
    assert metrics["scores"]["last-line"]["value"] == 0.25 and metrics["scores"]["answer"]["value"] == 0.25
    assert metrics["scores"]["answer"]["extraction_failure_rate"] == 0.75
    assert metrics["primary"] == "last-line"
    assert {k: v["n"] for k, v in metrics["by_continent"].items()} == {"africa": 1, "america": 1, "asia": 1,
                                                                       "europe": 1}
    assert metrics["by_continent"]["europe"]["value"] == 1.0
    assert (run_dir / "capitals.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
