"""The declarative task contract (evalsuite.task): extractors, scorer, declared
metrics and figures, typed arguments, tasks loaded from a file.

Pure logic is checked on literal records with hand-worked values; the whole path
(file-loaded task, scripted backend, runner, results) runs through the real CLI.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from evalsuite.errors import UsageError
from evalsuite.registry import tasks as registry
from evalsuite.task import Extractor, Heatmap, Task, build_task, grouped, pass_at_k
from evalsuite.types import Sample, SampleRecord, Score, Timings


def _record(sample_id: str, value: float, answer=None, repeat: int = 0, **metadata) -> SampleRecord:
    return SampleRecord(task="t", sample_id=sample_id, repeat=repeat, prompt="", output="", target=None,
                        scores={"row": Score(value, answer)}, prompt_tokens=None, output_tokens=None,
                        finish_reason="stop", timings=Timings(), error=None, metadata=metadata)


def test_each_extractor_is_a_row_and_parses_each_output_once():
    calls = []

    def first_word(text):
        calls.append(text)
        return text.split()[0] if text.strip() else None

    t = Task(name="t", version="1", samples=[Sample("a", "p", "yes")],
             extractors=(Extractor("first", first_word, primary=True), Extractor("upper", str.upper)))
    scores = t.score(t.samples, [type("G", (), {"text": "yes no"})()])[0]
    assert calls == ["yes no"]
    assert scores == {"first": Score(1.0, "yes"), "upper": Score(0.0, "YES NO")}
    assert [s.name for s in t.scorers] == ["first", "upper"] and t.primary == "first"


def test_no_answer_scores_zero_and_the_scorer_compares_answers():
    t = Task(name="t", version="1", samples=[Sample("a", "p", 3)],
             extractors=(Extractor("int", lambda s: int(s) if s.isdigit() else None),),
             scorer=lambda answer, sample: float(abs(answer - sample.target) <= 1))
    sample = t.samples[0]
    assert t.scorers[0].score("4", sample) == Score(1.0, 4)
    assert t.scorers[0].score("9", sample) == Score(0.0, 9)
    assert t.scorers[0].score("none", sample) == Score(0.0, None)


def test_extractors_and_scorers_together_are_refused():
    row = Extractor("x", str).scorer(lambda a, s: 1.0)
    with pytest.raises(ValueError, match="not both"):
        Task(name="t", version="1", samples=[], scorers=(row,), extractors=(Extractor("y", str),))


def test_grouped_gives_an_accuracy_row_per_metadata_value():
    records = [_record("a", 1.0, "x", family="linear"), _record("b", 0.0, None, family="linear"),
               _record("c", 1.0, "x", family="quadratic"), _record("d", 0.0, "x")]
    rows = grouped("family", name="families", default="user").compute(records, "row")
    assert list(rows) == ["linear", "quadratic", "user"]
    assert rows["linear"]["value"] == 0.5 and rows["linear"]["n"] == 2
    assert rows["linear"]["extraction_failure_rate"] == 0.5
    assert rows["linear"]["stderr"] == pytest.approx(0.5)  # sqrt(0.5 / 2)
    assert rows["quadratic"] == {**rows["quadratic"], "value": 1.0, "n": 1, "stderr": None}


def test_grouped_by_two_keys_joins_them():
    records = [_record("a", 1.0, "x", length=1024, depth=0), _record("b", 0.0, "x", length=1024, depth=50)]
    rows = grouped(("length", "depth")).compute(records, "row")
    assert set(rows) == {"1024 x 0", "1024 x 50"}
    assert grouped(("length", "depth")).name == "by_length_depth"


def test_pass_at_k_follows_the_unbiased_estimator():
    # Problem p: 2 of 4 pass; q: 0 of 4. pass@1 = (0.5 + 0) / 2; pass@2 = (1 - C(2,2)/C(4,2) + 0) / 2 = 5/12.
    records = [_record("p", v, repeat=i) for i, v in enumerate([1.0, 0.0, 1.0, 0.0])]
    records += [_record("q", 0.0, repeat=i) for i in range(4)]
    table = pass_at_k([1, 2, 5]).compute(records, "row")
    assert table["pass@1"]["value"] == pytest.approx(0.25)
    assert table["pass@2"]["value"] == pytest.approx(5 / 12)
    assert table["pass@2"]["n"] == 2 and table["pass@2"]["samples_per_problem"] == 4
    assert "pass@5" not in table  # more than the 4 samples a problem has


def test_declared_metrics_join_the_tasks_own_aggregate_once_after_replace():
    t = Task(name="t", version="1", samples=[], extractors=(Extractor("row", str, primary=True),),
             metrics=(grouped("family"),), aggregate=lambda records: {"own": len(records)})
    again = replace(t, version="2")
    records = [_record("a", 1.0, "x", family="f")]
    assert again.aggregate(records) == t.aggregate(records)
    assert set(t.aggregate(records)) == {"own", "by_family"}
    assert t.aggregate(records)["by_family"]["f"]["value"] == 1.0


def test_heatmap_cells_are_mean_scores_and_the_figure_is_written(tmp_path):
    records = [_record("a", 1.0, length=1024, depth=0), _record("b", 0.0, length=1024, depth=0),
               _record("c", 1.0, length=2048, depth=50)]
    fig = Heatmap("needle.png", rows="depth", columns="length", row_format="{}%")
    assert fig.cells(records, "row") == ([0, 50], [1024, 2048], [[0.5, None], [None, 1.0]])
    t = Task(name="t", version="1", samples=[], extractors=(Extractor("row", str),), figures=(fig,))
    t.write_artifacts(records, tmp_path)
    assert (tmp_path / "needle.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


TASK_FILE = '''
from typing import Literal
from evalsuite.task import Extractor, Task, task
from evalsuite.types import Sample

@task("file_task")
def file_task(n: int = 2, mode: Literal["a", "b"] = "a") -> Task:
    return Task(name="file_task", version="1", samples=[Sample(str(i), mode, str(i)) for i in range(n)],
                extractors=(Extractor("strip", str.strip, primary=True),), args={"n": n, "mode": mode})
'''


def test_a_task_loads_from_a_file_with_typed_arguments(tmp_path):
    path = tmp_path / "file_task.py"
    path.write_text(TASK_FILE)
    t = build_task(f"{path}@file_task", explicit={"n": "3", "mode": "b"})
    assert len(t.samples) == 3 and t.args == {"n": 3, "mode": "b"}
    with pytest.raises(UsageError, match="mode"):
        build_task(f"{path}@file_task", explicit={"mode": "c"})
    with pytest.raises(UsageError, match="no argument 'size'"):
        build_task(f"{path}@file_task", explicit={"size": 1})


def test_file_reference_errors_are_one_line(tmp_path):
    path = tmp_path / "file_task.py"
    path.write_text(TASK_FILE)
    with pytest.raises(UsageError, match="has no task factory 'nope' .*file_task"):
        registry.get(f"{path}@nope")
    with pytest.raises(UsageError, match="task file not found"):
        registry.get(f"{tmp_path / 'missing.py'}@x")
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(UsageError, match="cannot be imported .*boom"):
        registry.get(f"{broken}@x")


def test_a_file_loaded_task_runs_from_the_command_line_on_the_scripted_backend(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "file_task.py"
    path.write_text(TASK_FILE)
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps({"file_task/0": " 0 ", "*": "wrong"}))
    ref = f"{path}@file_task"
    proc = subprocess.run([sys.executable, "-m", "evalsuite.cli", "run", "--tasks", ref, "--backend", "scripted",
                           "--model", str(answers), "--output-dir", str(tmp_path / "results"), "--no-progress",
                           "--task-arg", f"{ref}.n=4"], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    [run_dir] = (tmp_path / "results").iterdir()
    row = json.loads((run_dir / "run.json").read_text())["metrics"]["file_task"]["scores"]["strip"]
    assert row["value"] == 0.25 and row["n"] == 4  # only sample 0 answered right
