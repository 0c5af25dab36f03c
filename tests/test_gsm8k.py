"""GSM8K extraction, normalisation and data loading (pure; real data files)."""

import json

import pytest

from evalsuite.errors import UsageError
from tasks.gsm8k import flexible_extract, gold_answer, gsm8k, normalize_number, strict_match


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The answer is 72, in total, so she sold 72 clips.", "72"),
        ("The answer is $29.00.", "29"),
        ("The answer is: $70,000.", "70000"),
        ("Final Answer: **73**", "73"),
        ("The answer is -5.", "-5"),
        ("#### 18\nQuestion: Bob has 2 apples. How many?\nAnswer: 2 + 3 = 5\n#### 5", "18"),
    ],
)
def test_strict_match(text, expected):
    assert strict_match(text) == expected


def test_strict_match_needs_the_format():
    assert strict_match("She has 5 apples and 3 pears, so 8 fruits.") is None


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The answer is 72, in total, so ...", "72"),
        ("... total cost is $29.00.", "29"),
        ("the profit is $70,000.", "70000"),
        ("Final Answer: **73**", "73"),
        ("We get 3 + 4 = 7, so \\boxed{840} is what remains of 12.", "840"),
        ("\\boxed{\\frac{1}{2} + 18.50}", "18.5"),
        ("It costs 18.00 dollars.", "18"),
        ("From 3-5 days it grows -2 cm", "-2"),
        ("no digits here", None),
    ],
)
def test_flexible_extract(text, expected):
    assert flexible_extract(text) == expected


@pytest.mark.parametrize(
    "raw, expected",
    [("$1,234.50", "1234.5"), ("18.00", "18"), ("-0", "0"), ("7.", "7"), ("1e3x", None), ("100", "100")],
)
def test_normalize_number(raw, expected):
    assert normalize_number(raw) == expected


def test_gold_solutions_score_100_percent_with_both_extractors(gsm8k_data_dir):
    """Each gold solution, scored as if it were the model's output, is right (all 1,319)."""
    task = gsm8k(data_dir=str(gsm8k_data_dir))
    lines = (gsm8k_data_dir / "gsm8k" / "test.jsonl").read_text().splitlines()
    solutions = [json.loads(line)["answer"] for line in lines]
    assert len(task.samples) == len(solutions) == 1319
    for scorer in task.scorers:
        verdicts = [scorer.score(sol, sample).value for sol, sample in zip(solutions, task.samples)]
        assert sum(verdicts) == 1319, scorer.name


def test_gold_answer_reads_the_final_number():
    assert gold_answer("She has 2+3=<<2+3=5>>5.\n#### 5") == "5"
    assert gold_answer("#### 1,000") == "1000"


def test_fewshot_prompt_uses_train_shots_deterministically(gsm8k_data_dir):
    a = gsm8k(num_fewshot=5, data_dir=str(gsm8k_data_dir))
    b = gsm8k(num_fewshot=5, data_dir=str(gsm8k_data_dir))
    prompt = a.samples[0].input
    assert isinstance(prompt, str) and prompt == b.samples[0].input
    assert prompt.count("Question: ") == 6 and prompt.endswith("Answer:")
    assert "Question:" in a.params.stop
    assert len(a.data_files) == 2


def test_cot_prompt_is_a_chat_message(gsm8k_data_dir):
    task = gsm8k(data_dir=str(gsm8k_data_dir))
    (message,) = task.samples[0].input
    assert message.role == "user" and "The answer is N" in message.content
    assert task.samples[0].target == "18"


def test_missing_data_file_names_the_flag(tmp_path):
    with pytest.raises(UsageError, match="--data-dir"):
        gsm8k(data_dir=str(tmp_path))
