import pytest

from evalsuite.scoring.needle import effective_context_length, found_values, needle_recall


@pytest.mark.parametrize("output, expected, recall", [
    ("The secret number is 4829173.", ["4829173"], 1.0),
    ("4829173", ["4829173"], 1.0),
    ("It is 48291730.", ["4829173"], 0.0),          # inside a longer number
    ("It is 14829173.", ["4829173"], 0.0),
    ("x4829173", ["4829173"], 0.0),                 # touches a letter
    ("(#4829173)", ["4829173"], 1.0),               # punctuation is a boundary
    ("I do not know.", ["4829173"], 0.0),
    ("AMBER-FALCON", ["amber-falcon"], 1.0),        # case-insensitive
    ("1111111, 3333333", ["1111111", "2222222", "3333333", "4444444"], 0.5),
    ("2222222 1111111 4444444 3333333", ["1111111", "2222222", "3333333", "4444444"], 1.0),
])
def test_needle_recall_is_word_bounded_and_case_insensitive(output, expected, recall):
    assert needle_recall(output, expected) == recall


def test_found_values_keeps_the_order_of_expected():
    assert found_values("3333333 then 1111111", ["1111111", "2222222", "3333333"]) == ["1111111", "3333333"]


def test_recall_needs_an_expected_value():
    with pytest.raises(ValueError):
        needle_recall("anything", [])


@pytest.mark.parametrize("recall, threshold, expected", [
    ({1024: 1.0, 2048: 0.9, 4096: 0.85, 8192: 0.5}, 0.85, 4096),   # 0.85 itself passes
    ({1024: 1.0, 2048: 0.8, 4096: 1.0}, 0.85, 1024),               # must stay above: 4096 does not count
    ({1024: 0.5, 2048: 1.0}, 0.85, None),                          # fails at the shortest
    ({4096: 1.0, 1024: 1.0, 2048: 1.0}, 0.85, 4096),               # order of keys does not matter
    ({1024: 1.0, 2048: None, 4096: 1.0}, 0.85, 4096),              # an untested length is left out
    ({}, 0.85, None),
    ({1024: 0.6, 2048: 0.5}, 0.5, 2048),
])
def test_effective_context_length(recall, threshold, expected):
    assert effective_context_length(recall, threshold) == expected
