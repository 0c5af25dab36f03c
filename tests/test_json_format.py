"""Verdicts of the JSON scoring functions on small hand-written outputs."""

import pytest

from evalsuite.scoring import json_format as jf

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "email": {"type": "string", "format": "email"},
        "born": {"type": "string", "format": "date"},
        "skills": {"type": "array", "items": {"type": "string"}, jf.UNORDERED: True},
        "steps": {"type": "array", "items": {"type": "string"}},
        "age": {"type": "integer"},
    },
    "required": ["name", "email"],
    "additionalProperties": False,
}
VALID = '{"name": "Ann", "email": "ann@example.com"}'


# --- strict and lenient parsing ------------------------------------------------

def test_fenced_valid_json_is_lenient_valid_and_strict_invalid():
    output = f"Here is the JSON:\n```json\n{VALID}\n```"
    assert not jf.strict_parse(output).ok
    lenient = jf.lenient_parse(output)
    assert lenient.ok and lenient.source == "fence"
    assert lenient.value == {"name": "Ann", "email": "ann@example.com"}
    assert jf.schema_valid(lenient.value, PERSON)


def test_whole_output_with_json_whitespace_is_strict_valid():
    assert jf.strict_parse(f"\n  {VALID}\n").value["name"] == "Ann"


def test_trailing_comma_is_invalid_both_ways():
    output = '{"name": "Ann", "email": "ann@example.com",}'
    assert not jf.strict_parse(output).ok
    assert not jf.lenient_parse(output).ok


def test_duplicate_keys_are_invalid():
    output = '{"name": "Ann", "name": "Bob", "email": "ann@example.com"}'
    parsed = jf.strict_parse(output)
    assert not parsed.ok and parsed.error == "duplicate key 'name'"
    assert not jf.lenient_parse(f"```json\n{output}\n```").ok


def test_duplicate_keys_in_nested_object_are_invalid():
    assert not jf.strict_parse('{"a": {"b": 1, "b": 1}}').ok


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_invalid(constant):
    parsed = jf.strict_parse(f'{{"age": {constant}}}')
    assert not parsed.ok and parsed.error == f"{constant} is not a JSON number"


def test_first_balanced_object_skips_prose_and_braces_inside_strings():
    output = 'Sure! {"name": "a}b{", "email": "x@example.com"} Hope this helps {not json}'
    assert jf.first_balanced_object(output) == '{"name": "a}b{", "email": "x@example.com"}'
    parsed = jf.lenient_parse(output)
    assert parsed.ok and parsed.source == "object" and parsed.value["name"] == "a}b{"


def test_escaped_quote_inside_string_does_not_end_it():
    assert jf.first_balanced_object(r'x {"a": "q\"}"} y') == r'{"a": "q\"}"}'


def test_two_fenced_blocks_fall_back_to_first_balanced_object():
    output = '```json\n{"a": 1}\n```\nor\n```json\n{"a": 2}\n```'
    parsed = jf.lenient_parse(output)
    assert parsed.ok and parsed.source == "object" and parsed.value == {"a": 1}


def test_cut_off_object_has_no_balanced_object():
    output = '```json\n{"name": "Ann", "skills": ["Go", "Go", "Go'
    assert jf.first_balanced_object(output) is None
    assert not jf.lenient_parse(output).ok


def test_empty_output():
    assert jf.strict_parse("  ").error == "empty output"
    assert jf.lenient_parse("").error == "empty output"


def test_json_null_is_a_parsed_value():
    parsed = jf.strict_parse("null")
    assert parsed.ok and parsed.value is None


# --- schema validation with formats -----------------------------------------------

def test_email_that_breaks_format_email_is_schema_invalid():
    assert jf.schema_valid({"name": "Ann", "email": "ann@example.com"}, PERSON)
    for bad in ("ann.example.com", "ann@", "ann@@example.com", "ann@exa mple.com"):
        errors = jf.schema_errors({"name": "Ann", "email": bad}, PERSON)
        assert errors == [f"$.email: {bad!r} is not a 'email'"], bad


def test_date_format_is_asserted():
    assert jf.schema_valid({"name": "A", "email": "a@example.com", "born": "2024-02-29"}, PERSON)
    for bad in ("2023-02-29", "2024-13-01", "12 April 2025", "2024-4-1"):
        assert not jf.schema_valid({"name": "A", "email": "a@example.com", "born": bad}, PERSON), bad


def test_schema_errors_name_the_path():
    errors = jf.schema_errors({"name": 3, "email": "a@example.com", "extra": 1}, PERSON)
    assert sorted(errors) == sorted([
        "$: Additional properties are not allowed ('extra' was unexpected)",
        "$.name: 3 is not of type 'string'",
    ])


def test_formats_of_the_nongpl_extra_are_asserted():
    # date-time, uri and hostname pass silently without jsonschema[format-nongpl].
    assert jf.unchecked_formats({"properties": {"t": {"format": "date-time"}, "u": {"format": "uri"},
                                                "h": {"format": "hostname"}}}) == []
    assert not jf.schema_valid("2024-01-01T00:00:00", {"format": "date-time"})  # no offset
    assert jf.schema_valid("2024-01-01T00:00:00Z", {"format": "date-time"})
    assert not jf.schema_valid("not a uri", {"format": "uri"})


def test_unknown_format_is_reported_unchecked():
    assert jf.unchecked_formats({"properties": {"x": {"format": "credit-card"}}}) == ["credit-card"]


def test_check_schema():
    assert jf.check_schema(PERSON) is None
    assert jf.check_schema({"type": "strin"}) is not None


# --- field-level comparison ------------------------------------------------------

def test_field_scores_hand_worked():
    gold = {"name": "Ann", "email": "ann@example.com", "skills": ["Go", "SQL", "Rust"], "age": 30}
    pred = {"name": "Ann", "email": "ann@example.org", "skills": ["SQL", "Go"], "age": 30.0, "steps": ["a"]}
    fs = jf.field_scores(pred, gold, PERSON)
    # Fields: name ok, email wrong, skills (one field) wrong, age ok (30 == 30.0), steps[0] extra: 2/5.
    assert fs.accuracy == pytest.approx(2 / 5)
    # Facts: gold {name, email, Go, SQL, Rust, age} = 6; pred {name, email', SQL, Go, age, steps[0]} = 6;
    # correct {name, SQL, Go, age} = 4.
    assert (fs.correct, fs.predicted, fs.gold) == (4, 6, 6)
    assert fs.precision == pytest.approx(4 / 6) and fs.recall == pytest.approx(4 / 6)
    assert fs.f1 == pytest.approx(4 / 6)


def test_unordered_list_is_a_multiset_ordered_list_is_not():
    gold = {"skills": ["Go", "SQL"], "steps": ["a", "b"]}
    pred = {"skills": ["SQL", "Go"], "steps": ["b", "a"]}
    fs = jf.field_scores(pred, gold, PERSON)
    # skills equal as sets; steps[0] and steps[1] both wrong: accuracy 1/3; facts 2 of 4 right.
    assert fs.accuracy == pytest.approx(1 / 3)
    assert (fs.correct, fs.predicted, fs.gold) == (2, 4, 4)


def test_repeated_items_count_once_each():
    fs = jf.field_scores({"skills": ["Go", "Go", "Go"]}, {"skills": ["Go"]}, PERSON)
    assert (fs.correct, fs.predicted, fs.gold) == (1, 3, 1)
    assert fs.precision == pytest.approx(1 / 3) and fs.recall == 1.0 and fs.f1 == pytest.approx(0.5)


def test_numbers_compare_as_numbers_and_booleans_do_not():
    assert jf.canonical(7) == jf.canonical(7.0)
    assert jf.canonical(0.1) == jf.canonical(1e-1)
    assert jf.canonical(True) != jf.canonical(1)
    assert jf.canonical("7") != jf.canonical(7)


def test_null_counts_as_absent():
    fs = jf.field_scores({"name": "Ann", "age": None}, {"name": "Ann"}, PERSON)
    assert (fs.accuracy, fs.precision, fs.recall, fs.f1) == (1.0, 1.0, 1.0, 1.0)


def test_empty_prediction_against_gold():
    fs = jf.field_scores({}, {"name": "Ann"}, PERSON)
    assert (fs.accuracy, fs.precision, fs.recall, fs.f1) == (0.0, 0.0, 0.0, 0.0)
    assert jf.field_scores({}, {}, PERSON).f1 == 1.0


def test_unordered_objects_inside_arrays():
    schema = {"properties": {"items": {"type": "array", jf.UNORDERED: True,
                                       "items": {"type": "object"}}}}
    gold = {"items": [{"name": "pen", "qty": 2}, {"name": "cup", "qty": 1}]}
    pred = {"items": [{"qty": 1.0, "name": "cup"}, {"name": "pen", "qty": 3}]}
    fs = jf.field_scores(pred, gold, schema)
    assert (fs.correct, fs.predicted, fs.gold) == (1, 2, 2)


# --- outcomes ------------------------------------------------------------------------

def test_object_cut_off_by_token_limit_is_truncated():
    cut = '{"name": "Ann", "email": "ann@exa'
    assert jf.classify_output(cut, PERSON, "length") == "truncated"
    assert jf.classify_output(cut, PERSON, "stop") == "invalid"


def test_outcome_valid_even_when_length_stopped_after_the_object():
    assert jf.classify_output(VALID + " and more text that ran", PERSON, "length") == "valid"
    assert jf.classify_output(VALID, PERSON, "stop") == "valid"


def test_outcome_error():
    assert jf.classify_output("", PERSON, "error", error="RuntimeError: boom") == "error"
