"""Tests turned into data and judged outside the sandbox: replaying a problem's own
``check`` on plain return values (pure), deriving the tests from a reference solution
(real sandbox), and the cache of derived tests (real files)."""

import json
import random

import pytest

from evalsuite.execution import sandbox
from evalsuite.execution.sandbox import Limits, Opaque, Returned, SandboxPool
from evalsuite.scoring.code import TEST_SEED, DerivedTests, derive_tests, replay_check
from tasks.humaneval import derived_tests_file, load_derived_tests

ADD_PROMPT = 'def add(a, b):\n    """a + b"""\n'


def replay(test, inputs, returns, prompt=ADD_PROMPT, entry_point="add"):
    return replay_check(prompt, test, entry_point, DerivedTests(tuple(inputs), ()), returns)


# --- replaying check on returned values (pure) -------------------------------------------


def test_equality_is_the_tests_own():
    test = "def check(candidate):\n    assert candidate(2, 3) == 5\n"
    assert replay(test, [((2, 3), {})], [Returned(5)]) is None
    assert replay(test, [((2, 3), {})], [Returned(5.0)]) is None  # 5.0 == 5, as in the original assert
    assert replay(test, [((2, 3), {})], [Returned(-1)]) == "AssertionError"


def test_a_tolerance_in_the_test_is_kept():
    test = "def check(candidate):\n    assert abs(candidate(0.1, 0.2) - 0.3) < 1e-6, 'close'\n"
    assert replay(test, [((0.1, 0.2), {})], [Returned(0.30000000000000004)]) is None
    assert replay(test, [((0.1, 0.2), {})], [Returned(0.3001)]) == "AssertionError: close"
    assert replay(test, [((0.1, 0.2), {})], [Returned("0.3")]) == (
        "TypeError: unsupported operand type(s) for -: 'str' and 'float'")


def test_conversions_identity_and_truth_tests_are_the_tests_own():
    test = ("def check(candidate):\n    assert tuple(candidate([3, 1])) == (1, 3)\n"
            "    assert candidate([]) is True\n    assert candidate([0])\n    assert not candidate([1])\n")
    inputs = [(([3, 1],), {}), (([],), {}), (([0],), {}), (([1],), {})]
    assert replay(test, inputs, [Returned([1, 3]), Returned(True), Returned([0]), Returned(0)]) is None
    assert replay(test, inputs, [Returned((1, 3)), Returned(True), Returned("x"), Returned("")]) is None
    assert replay(test, inputs, [Returned([1, 3]), Returned(1), Returned(1), Returned(0)]) == "AssertionError"


def test_not_plain_data_never_compares_equal():
    test = "def check(candidate):\n    assert candidate(2, 3) == 5\n"
    assert replay(test, [((2, 3), {})], [Returned(Opaque("builtins.generator"))]) == "AssertionError"


def test_exceptions_the_candidate_raised_are_raised_again():
    expects_error = ("def check(candidate):\n    try:\n        candidate(1, 0)\n    except ZeroDivisionError:\n"
                     "        return\n    raise AssertionError('no error')\n")
    assert replay(expects_error, [((1, 0), {})], [Returned(None, "ZeroDivisionError", "division by zero")]) is None
    plain = "def check(candidate):\n    assert candidate(1, 0) == 1\n"
    assert replay(plain, [((1, 0), {})], [Returned(None, "ValueError", "bad")]) == "ValueError: bad"
    # Names that are not builtin Exceptions (a class of the program's, SystemExit) never
    # reach the harness as themselves.
    assert replay(plain, [((1, 0), {})], [Returned(None, "SystemExit", "0")]) == "CandidateError: SystemExit: 0"
    assert replay(plain, [((1, 0), {})], [Returned(None, "MyError", "x")]) == "CandidateError: MyError: x"
    assert replay(expects_error, [((1, 0), {})], [Returned(None, "MyError", "x")]) == "CandidateError: MyError: x"


def test_an_input_that_was_not_recorded_fails_even_under_except_exception():
    test = "def check(candidate):\n    try:\n        candidate(7, 7)\n    except Exception:\n        pass\n"
    assert replay(test, [((2, 3), {})], [Returned(5)]) == "the test asked for an input that was not recorded"


def test_calls_through_the_functions_own_name_are_answered_too():
    # HumanEval/33 compares candidate(x) with sort_third(x), the function's own name.
    prompt = 'def sort_third(l: list):\n    """..."""\n'
    test = "def check(candidate):\n    assert tuple(candidate([3, 2, 1])) == tuple(sort_third([3, 2, 1]))\n"
    assert replay(test, [(([3, 2, 1],), {})], [Returned([1, 2, 3])], prompt, "sort_third") is None


def test_random_inputs_are_drawn_from_the_seeded_generator_and_the_harness_random_is_untouched():
    test = ("def check(candidate):\n    import random\n    from random import randint\n"
            "    for _ in range(3):\n        x = randint(0, 10 ** 6)\n        assert candidate(x, 1) == x + 1\n")
    rng = random.Random(TEST_SEED)
    drawn = [rng.randint(0, 10 ** 6) for _ in range(3)]
    random.seed(99)
    before = random.random()
    random.seed(99)
    assert replay(test, [((x, 1), {}) for x in drawn], [Returned(x + 1) for x in drawn]) is None
    assert random.random() == before


# --- deriving tests from the reference solution (real sandbox) ---------------------------

needs_sandbox = pytest.mark.skipif(sandbox.bwrap_available() is not None,
                                   reason=f"bubblewrap unusable here: {sandbox.bwrap_available()}")


def problem(test, solution="    return a + b\n", prompt=ADD_PROMPT, entry_point="add", task_id="toy/add"):
    return {"task_id": task_id, "prompt": prompt, "test": test, "entry_point": entry_point,
            "canonical_solution": solution}


ADD_TEST = ("def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, b=1) == 0\n"
            "    assert candidate(2, 3) == 5\n    assert abs(candidate(0.1, 0.2) - 0.3) < 1e-9\n")


@pytest.fixture(scope="module")
def pool():
    if sandbox.bwrap_available() is not None:
        pytest.skip(f"bubblewrap unusable here: {sandbox.bwrap_available()}")
    with SandboxPool("bwrap", workers=2, limits=Limits(timeout_s=5.0)) as p:
        yield p


def test_derivation_records_each_distinct_input_and_the_reference_value(pool):
    (derived,) = derive_tests([problem(ADD_TEST)], pool, Limits(timeout_s=5.0))
    assert derived.reason is None
    assert derived.inputs == (((2, 3), {}), ((-1,), {"b": 1}), ((0.1, 0.2), {}))
    assert derived.expected == (Returned(5), Returned(0), Returned(0.1 + 0.2))


def test_random_inputs_derive_to_the_same_draws_as_the_replay(pool):
    test = ("def check(candidate):\n    import random\n    for _ in range(4):\n"
            "        x = random.randint(0, 10 ** 6)\n        assert candidate(x, 2) == x + 2\n")
    (derived,) = derive_tests([problem(test)], pool, Limits(timeout_s=5.0))
    rng = random.Random(TEST_SEED)
    assert derived.reason is None
    assert derived.inputs == tuple(((rng.randint(0, 10 ** 6), 2), {}) for _ in range(4))


@pytest.mark.parametrize("record,reason", [
    ({"canonical_solution": None}, "no reference solution to derive the test's inputs from"),
    ({"test": "def check(candidate):\n    assert candidate(lambda: 1, 2) is not None\n",
      "canonical_solution": "    return a\n"},
     "the test passes a value that is not plain data (builtins.function)"),
    ({"test": "def check(candidate):\n    assert list(candidate(1, 2)) == [1, 2]\n",
      "canonical_solution": "    return (x for x in (a, b))\n"},
     "the reference solution returns a value that is not plain data (builtins.generator)"),
    ({"test": "def check(candidate):\n    assert candidate(1, 2) == helper(3)\n",
      "canonical_solution": "    return a + b\n\ndef helper(x):\n    return x\n"},
     "the test does not replay on the recorded values (NameError: name 'helper' is not defined)"),
    ({"test": "def check(candidate):\n    assert True\n"}, "the test never calls the function"),
    ({"canonical_solution": "    return a - b\n"},
     "the reference solution fails its test (AssertionError: )"),
])
def test_tests_that_cannot_become_data_say_why(pool, record, reason):
    doc = {**problem(ADD_TEST), **record}
    if doc["canonical_solution"] is None:
        del doc["canonical_solution"]
    (derived,) = derive_tests([doc], pool, Limits(timeout_s=5.0))
    assert (derived.reason, derived.inputs) == (reason, ())


# --- the cache of derived tests (real files) ---------------------------------------------


class NoSandbox:
    """Stands in for the pool where the cache must answer alone: any call is an error."""

    def call(self, jobs, limits=None):
        raise AssertionError("derived again instead of reading the cache")


@needs_sandbox
def test_derived_tests_are_cached_by_the_data_files_hash(tmp_path, monkeypatch, pool):
    monkeypatch.setenv("EVALSUITE_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "toy.jsonl"
    data.write_text(json.dumps(problem(ADD_TEST)) + "\n")
    problems = [json.loads(data.read_text())]
    first = load_derived_tests(data, problems, pool, Limits())
    path = derived_tests_file(data)
    assert path.parent == tmp_path / "cache" / "humaneval-tests" and path.is_file()
    assert load_derived_tests(data, problems, NoSandbox(), Limits()) == first

    path.write_text("{not json")  # a damaged cache is derived again and rewritten
    assert load_derived_tests(data, problems, pool, Limits()) == first
    assert json.loads(path.read_text())["problems"]["toy/add"]["reason"] is None

    data.write_text(json.dumps(problem(ADD_TEST.replace("(2, 3) == 5", "(2, 4) == 6"))) + "\n")
    assert derived_tests_file(data) != path  # new content, new key
    changed = load_derived_tests(data, [json.loads(data.read_text())], pool, Limits())
    assert changed["toy/add"].inputs[0] == ((2, 4), {})
