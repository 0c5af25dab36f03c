"""Extracting a function from an answer and building HumanEval's program (pure)."""

from evalsuite.scoring.code import (
    code_blocks,
    completion_from_code,
    extract_code,
    humaneval_program,
)

PROMPT = 'from typing import List\n\n\ndef head(xs: List[int]) -> int:\n    """First item."""\n'


def test_python_py_and_bare_fences_are_read_other_languages_are_not():
    text = "a\n```python\nA\n```\n```py\nB\n```\n```\nC\n```\n```bash\nD\n```\n"
    assert code_blocks(text) == ["A\n", "B\n", "C\n"]


def test_unclosed_fence_runs_to_the_end():
    assert code_blocks("Here:\n```python\ndef head(xs):\n    return xs[0]") == ["def head(xs):\n    return xs[0]"]


def test_block_defining_the_entry_point_is_chosen():
    text = ("Usage:\n```python\nprint(head([1]))\n```\nSolution:\n```python\ndef head(xs):\n    return xs[0]\n```\n"
            "```python\ndef head(xs):\n    return 0\n```")
    assert extract_code(text, "head") == "def head(xs):\n    return xs[0]\n"


def test_without_a_defining_block_the_first_python_block_is_taken():
    assert extract_code("```python\n    return xs[0]\n```\n```python\nx = 2\n```", "head") == "    return xs[0]\n"


def test_unfenced_answer_is_cut_at_the_definition():
    assert extract_code("Sure! Here it is:\ndef head(xs):\n    return xs[0]\n", "head") == "def head(xs):\n    return xs[0]\n"


def test_unfenced_text_is_a_body_only_when_allowed():
    assert extract_code("    return xs[0]\n", "head") == "    return xs[0]\n"
    assert extract_code("I would return the first item.", "head", bare_body=False) is None
    assert extract_code("def head(xs):\n    return 1\n", "head", bare_body=False) == "def head(xs):\n    return 1\n"


def test_empty_answer_is_an_extraction_failure():
    assert extract_code("", "head") is None
    assert extract_code("```python\n\n```", "head") is None


def test_full_definition_is_appended_after_the_prompt():
    completion = completion_from_code("def head(xs):\n    return xs[0]\n", "head")
    assert completion == "\ndef head(xs):\n    return xs[0]\n"


def test_indented_definition_is_dedented():
    assert completion_from_code("    def head(xs):\n        return xs[0]\n", "head") == "\ndef head(xs):\n    return xs[0]\n"


def test_indented_body_is_kept_and_unindented_body_is_indented():
    assert completion_from_code("    return xs[0]\n", "head") == "    return xs[0]\n"
    assert completion_from_code("y = xs[0]\nreturn y", "head") == "    y = xs[0]\n    return y\n"


def test_program_is_prompt_completion_test_and_check():
    program = humaneval_program(PROMPT, "    return xs[0]\n", "def check(f):\n    assert f([3]) == 3\n", "head")
    assert program == PROMPT + "    return xs[0]\n" + "\n" + "def check(f):\n    assert f([3]) == 3\n" + "\ncheck(head)\n"


def test_redefinition_keeps_the_prompts_imports():
    # The answer uses List without importing it; the prompt's import stays in scope.
    completion = completion_from_code("def head(xs: List[int]) -> int:\n    return xs[0]\n", "head")
    namespace: dict = {}
    exec(humaneval_program(PROMPT, completion, "def check(f):\n    assert f([3, 4]) == 3\n", "head"), namespace)  # noqa: S102
    assert namespace["head"]([7]) == 7
