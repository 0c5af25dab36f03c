"""evalsuite tasks exported to lm-eval: lm-eval's own task loader on the shipped YAML (no engine)."""

from __future__ import annotations

import json

import pytest

from evalsuite.errors import UsageError
from evalsuite.interop.export import EXPORTED, TASKS_DIR, prompt_text, task_yaml, write_task_yaml
from evalsuite.task import build_task
from evalsuite.types import Message

SHIPPED = (*EXPORTED, "humaneval")


@pytest.fixture(scope="module")
def lm_tasks():
    pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager

    names = [f"evalsuite_{n}" for n in SHIPPED]
    return TaskManager(include_path=str(TASKS_DIR), include_defaults=False).load(names)["tasks"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_yaml_is_what_the_exporter_writes(name):
    assert (TASKS_DIR / f"evalsuite_{name}.yaml").read_text() == task_yaml(name)


@pytest.mark.parametrize("name", SHIPPED)
def test_lm_eval_sees_the_same_samples_and_settings(lm_tasks, name):
    ours = build_task(name)
    theirs = lm_tasks[f"evalsuite_{name}"]
    docs = theirs.test_docs()
    assert [d["id"] for d in docs] == [s.id for s in ours.samples]
    assert [theirs.doc_to_text(d) for d in docs] == [prompt_text(s.input) for s in ours.samples]
    assert theirs.config.generation_kwargs["max_gen_toks"] == ours.params.max_tokens
    assert [m["metric"] for m in theirs.config.metric_list] == [s.name for s in ours.scorers]


def test_equations_scored_by_evalsuites_verifier(lm_tasks):
    task = lm_tasks["evalsuite_equations"]
    doc = task.test_docs()[0]  # the brief's case: x^2 - 5x + 6 = 0 -> {2, 3}
    assert json.loads(doc["target"]) == ["2", "3"]
    right = task.process_results(doc, ["(x-2)(x-3) = 0\nFinal answer: x = 3, x = 2"])
    wrong = task.process_results(doc, ["Final answer: x = 2"])
    assert right == {"exact-solution-set": 1.0, "substitution-check": 1.0}
    assert wrong["exact-solution-set"] == 0.0 and wrong["substitution-check"] == 1.0


def test_json_extraction_scored_by_evalsuites_scorers(lm_tasks):
    task = lm_tasks["evalsuite_json_extraction"]
    doc = task.test_docs()[0]
    gold = json.loads(doc["target"])
    assert task.process_results(doc, [json.dumps(gold, ensure_ascii=False)])["exact-match"] == 1.0
    bad = task.process_results(doc, ["not json"])
    assert bad["strict-parse"] == 0.0 and bad["schema-valid"] == 0.0


def test_task_args_come_only_from_evalsuite_args(tmp_path):
    pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager

    write_task_yaml("equations", tmp_path, {"count": 1, "families": "linear"})
    # A model's seed in lm-eval's metadata must not reach the task factory.
    task = TaskManager(include_path=str(tmp_path), include_defaults=False, metadata={"seed": 99}).load(["evalsuite_equations"])["tasks"]
    ids = [d["id"] for d in task["evalsuite_equations"].test_docs()]
    assert ids == [s.id for s in build_task("equations", count=1, families="linear").samples]
    assert len(ids) == 2  # the brief's case + one linear problem


def test_tasks_that_do_not_fit_are_refused():
    with pytest.raises(UsageError, match="constrained decoding"):
        task_yaml("json_extraction_constrained")
    with pytest.raises(UsageError, match="generations per sample"):
        task_yaml("humaneval", {"num_samples": 2})
    with pytest.raises(UsageError, match="single-user-message"):
        prompt_text((Message("system", "s"), Message("user", "u")))
