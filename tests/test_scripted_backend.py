"""The scripted backend: fixed outputs from a JSON file (the real component a user
runs to test a task), through the registry, the runner and the command line."""

from __future__ import annotations

import json

import pytest

from evalsuite.backends.scripted import ScriptedBackend, load_script
from evalsuite.cli import main
from evalsuite.errors import UsageError
from evalsuite.models import resolve_model
from evalsuite.types import GenerationRequest, SamplingParams


def _request(sample_id: str, repeat: int = 0, task: str = "t") -> GenerationRequest:
    return GenerationRequest(task, sample_id, "prompt", SamplingParams(), repeat=repeat)


def test_a_mapping_picks_the_most_specific_key():
    backend = ScriptedBackend(outputs={"t/a/1": "a, second", "t/a": "a", "b": "b anywhere", "*": "default"})
    texts = [g.text for g in backend.generate([_request("a"), _request("a", 1), _request("b", task="u"),
                                               _request("c")])]
    assert texts == ["a", "a, second", "b anywhere", "default"]


def test_a_list_is_consumed_in_request_order_across_calls_and_running_out_is_a_failed_request():
    backend = ScriptedBackend(outputs=["one", "two"])
    assert [g.text for g in backend.generate([_request("a")])] == ["one"]
    second, third = backend.generate([_request("b"), _request("c")])
    assert (second.text, second.error) == ("two", None)
    assert third.text == "" and third.finish_reason == "error" and "no output for t/c/0" in third.error


def test_unmeasured_figures_are_none():
    [g] = ScriptedBackend(outputs=["x"]).generate([_request("a")])
    assert (g.output_tokens, g.prompt_tokens, g.timings.e2e_s, g.timings.ttft_s) == (None, None, None, None)


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"a": 3}', '"text"'])
def test_a_bad_script_is_a_usage_error(tmp_path, content):
    path = tmp_path / "answers.json"
    path.write_text(content)
    with pytest.raises(UsageError, match="answers.json"):
        load_script(path)


def test_the_model_flag_is_the_script_file(tmp_path):
    path = tmp_path / "answers.json"
    path.write_text("[]")
    ref = resolve_model(str(path), "scripted")
    assert (ref.name, ref.path, ref.source) == ("answers", str(path.resolve()), "scripted")
    with pytest.raises(UsageError, match="takes --model FILE"):
        resolve_model(str(tmp_path / "missing.json"), "scripted")


def test_gsm8k_runs_from_the_command_line_on_scripted_outputs(tmp_path, gsm8k_data_dir, capsys):
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps({"gsm8k/test-0": "The answer is 18.", "*": "I do not know."}))
    code = main(["run", "--tasks", "gsm8k", "--backend", "scripted", "--model", str(answers), "--limit", "4",
                 "--data-dir", str(gsm8k_data_dir), "--output-dir", str(tmp_path / "results"), "--run-id", "r",
                 "--no-progress", "--task-arg", "gsm8k.second_opinion=false"])
    assert code == 0, capsys.readouterr().err
    run = json.loads((tmp_path / "results" / "r" / "run.json").read_text())
    rows = run["metrics"]["gsm8k"]["scores"]
    # test-0's gold answer is 18; the other three outputs hold no number.
    assert rows["strict-match"]["value"] == 0.25 and rows["strict-match"]["extraction_failure_rate"] == 0.75
    assert run["backend"]["backend"] == "scripted" and run["model"]["source"] == "scripted"
