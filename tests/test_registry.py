import pytest

from evalsuite.errors import UsageError
from evalsuite.registry import Registry, tasks
from evalsuite.task import build_task


def test_builtin_tasks_are_discovered():
    assert "gsm8k" in tasks.names()


def test_did_you_mean():
    with pytest.raises(UsageError, match=r"unknown task 'gms8k' \(did you mean 'gsm8k'\?\)"):
        tasks.get("gms8k")


def test_entry_point_tasks_load_on_demand(monkeypatch):
    class FakeEntryPoint:
        name = "third_party"

        def load(self):
            return lambda **_: "built"

    reg = Registry("task", "evalsuite.tasks", "tasks")
    monkeypatch.setattr("evalsuite.registry.entry_points", lambda group: [FakeEntryPoint()])
    assert "third_party" in reg.names()
    assert reg.get("third_party")() == "built"


def test_unknown_explicit_task_argument(gsm8k_data_dir):
    with pytest.raises(UsageError, match="task 'gsm8k' has no argument 'shots'"):
        build_task("gsm8k", data_dir=str(gsm8k_data_dir), explicit={"shots": 3})
