"""The json_extraction task: cases, scorers and outcome counts (no model)."""

import json

import pytest

from evalsuite.errors import UsageError
from evalsuite.scoring import json_format as jf
from evalsuite.task import build_task
from evalsuite.types import Generation, SampleRecord, Timings
from tasks import json_extraction as je

ISSUE_EXAMPLE = "李娜，手机 139-8765-4321，邮箱 lina@example.org。熟悉 Go、Kubernetes 和 PostgreSQL，有 7 年后端开发经验。"


def scores(task, sample, output):
    return task.score([sample], [Generation(output, "stop")])[0]


def test_chinese_resume_round_trips_with_the_right_field_values():
    text = je.resume_zh_text("李娜", "139-8765-4321", "lina@example.org", ["Go", "Kubernetes", "PostgreSQL"], 7,
                             "后端开发")
    assert text == ISSUE_EXAMPLE
    gold = {"name": "李娜", "phone": "139-8765-4321", "email": "lina@example.org",
            "skills": ["Go", "Kubernetes", "PostgreSQL"], "experience_years": 7}
    sample = je.make_sample("zh", "resume_zh", text, je.RESUME_SCHEMA, gold)
    task = build_task("json_extraction", num_cases=1)
    # What a model would write, \u-escaped Chinese and skills in another order included.
    for output in (json.dumps(gold, ensure_ascii=False),
                   json.dumps({**gold, "skills": ["PostgreSQL", "Go", "Kubernetes"]}, ensure_ascii=True)):
        row = scores(task, sample, output)
        assert {k: s.value for k, s in row.items()} == dict.fromkeys(
            ["strict-parse", "lenient-parse", "schema-valid", "exact-match", "field-accuracy", "field-precision",
             "field-recall", "field-f1"], 1.0)
        assert json.loads(row["schema-valid"].answer)["name"] == "李娜"
        assert row["field-f1"].answer == {"correct": 7, "predicted": 7, "gold": 7}


def test_chinese_resume_with_one_wrong_value():
    gold = {"name": "李娜", "phone": "139-8765-4321", "email": "lina@example.org",
            "skills": ["Go", "Kubernetes", "PostgreSQL"], "experience_years": 7}
    sample = je.make_sample("zh", "resume_zh", ISSUE_EXAMPLE, je.RESUME_SCHEMA, gold)
    task = build_task("json_extraction", num_cases=1)
    row = scores(task, sample, json.dumps({**gold, "name": "李", "experience_years": 7.0}, ensure_ascii=False))
    assert row["schema-valid"].value == 1.0  # 7.0 is an integer in JSON Schema 2020-12
    assert row["exact-match"].value == 0.0
    assert row["field-accuracy"].value == pytest.approx(4 / 5)
    assert row["field-f1"].value == pytest.approx(6 / 7)


def test_fenced_output_scores_lenient_but_not_strict():
    task = build_task("json_extraction", num_cases=4, seed=3)
    sample = task.samples[0]
    row = scores(task, sample, "```json\n" + json.dumps(sample.target) + "\n```")
    assert row["strict-parse"].value == 0.0
    assert row["lenient-parse"].value == 1.0 and row["schema-valid"].value == 1.0
    assert row["field-f1"].value == 1.0


def test_bad_email_is_schema_invalid_but_keeps_field_credit():
    task = build_task("json_extraction", num_cases=1, seed=0)
    sample = task.samples[0]
    assert sample.metadata["family"] == "resume_en"
    row = scores(task, sample, json.dumps({**sample.target, "email": "nobody at example.com"}))
    assert row["strict-parse"].value == 1.0
    assert row["schema-valid"].value == 0.0 and "$.email" in row["schema-valid"].detail
    assert row["field-accuracy"].value == pytest.approx(4 / 5)


def test_unparseable_output_is_an_extraction_failure_on_every_content_row():
    task = build_task("json_extraction", num_cases=1)
    row = scores(task, task.samples[0], "I cannot help with that.")
    assert all(s.value == 0.0 and s.answer is None for s in row.values())


def test_cases_are_deterministic_interleaved_and_valid():
    a = build_task("json_extraction", seed=7, num_cases=40)
    b = build_task("json_extraction_constrained", seed=7, num_cases=40)
    c = build_task("json_extraction", seed=8, num_cases=40)
    assert [(s.id, s.input, s.target) for s in a.samples] == [(s.id, s.input, s.target) for s in b.samples]
    assert [s.target for s in a.samples] != [s.target for s in c.samples]
    assert [s.metadata["family"] for s in a.samples[:8]] == list(je.FAMILIES) * 2
    assert len({s.id for s in a.samples}) == 40
    for s in a.samples:
        assert jf.schema_errors(s.target, s.metadata["schema"]) == [], s.id
        assert jf.check_schema(s.metadata["schema"]) is None
        assert s.metadata["text"] in s.input[0].content


def test_event_dates_are_in_words_in_the_text_and_iso_in_gold():
    task = build_task("json_extraction", seed=0, num_cases=40, families="event")
    months = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
              "November", "December")
    for s in task.samples:
        year, month, day = map(int, s.target["start_date"].split("-"))
        assert f"{months[month - 1]} {day}, {year}" in s.metadata["text"]
    # Optional fields appear in some cases and not in others.
    assert {("end_date" in s.target) for s in task.samples} == {True, False}
    assert {("venue" in s.target["location"]) for s in task.samples} == {True, False}


def test_order_prices_are_in_the_text():
    task = build_task("json_extraction", seed=0, num_cases=12, families=["order"])
    for s in task.samples:
        for item in s.target["items"]:
            price = item["unit_price"]
            written = str(price) if isinstance(price, int) else f"{price:.2f}"
            assert f"{item['quantity']} x {item['name']} at {written} each" in s.metadata["text"]


def test_constrained_task_sets_the_schema_hook_and_free_does_not():
    free = build_task("json_extraction", num_cases=2)
    constrained = build_task("json_extraction_constrained", num_cases=2)
    assert free.json_schema is None
    assert constrained.json_schema(constrained.samples[1]) == constrained.samples[1].metadata["schema"]


def record(output, finish_reason, schema_valid, error=None):
    from evalsuite.types import Score

    names = [s.name for s in je.SCORERS]
    return SampleRecord(task="t", sample_id="x", repeat=0, prompt="", output=output, target={},
                        scores={n: Score(schema_valid if n == "schema-valid" else 0.0,
                                         "x" if schema_valid else None) for n in names},
                        prompt_tokens=1, output_tokens=1, finish_reason=finish_reason, timings=Timings(),
                        error=error, metadata={"schema": je.RESUME_SCHEMA})


def test_aggregate_counts_truncated_apart_from_invalid():
    records = [record("{}", "stop", 1.0), record('{"a', "length", 0.0), record("{", "stop", 0.0),
               record("", "error", 0.0, error="boom"), record("{} ...", "length", 1.0)]
    out = je.aggregate_outcomes(records)
    assert out["outcomes"] == {"valid": 2, "invalid": 1, "truncated": 1, "error": 1, "n": 5}
    assert out["truncated_rate"]["value"] == pytest.approx(2 / 5) and out["truncated_rate"]["n"] == 5
    # Not cut off and not failed: the first and the third record.
    assert out["finished"]["schema-valid"]["n"] == 2
    assert out["finished"]["schema-valid"]["value"] == pytest.approx(0.5)
    assert out["unchecked_formats"] == []


def test_user_data_file(tmp_path):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    path = tmp_path / "cases.jsonl"
    path.write_text(json.dumps({"id": "c1", "text": "I live in Oslo.", "schema": schema, "gold": {"city": "Oslo"}})
                    + "\n" + json.dumps({"text": "Paris!", "schema": schema, "gold": {"city": "Paris"}}) + "\n")
    task = build_task("json_extraction", explicit={"data_file": str(path)})
    assert [s.id for s in task.samples] == ["c1", "case-2"]
    assert task.data_files == (path,)
    row = scores(task, task.samples[0], '{"city": "Oslo"}')
    assert row["exact-match"].value == 1.0


@pytest.mark.parametrize("line, message", [
    ({"text": "x", "schema": {}}, "needs the fields text, schema and gold"),
    ({"text": "x", "schema": {"type": "strin"}, "gold": 1}, "schema is not valid Draft 2020-12"),
    ({"text": "x", "schema": {"type": "string", "format": "email"}, "gold": "no-at-sign"},
     "gold does not follow its schema"),
])
def test_bad_user_case_is_a_usage_error(tmp_path, line, message):
    path = tmp_path / "cases.jsonl"
    path.write_text(json.dumps(line) + "\n")
    with pytest.raises(UsageError, match=message):
        build_task("json_extraction", explicit={"data_file": str(path)})


def test_missing_data_file_and_bad_family_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="data file not found"):
        build_task("json_extraction", explicit={"data_file": str(tmp_path / "nope.jsonl")})
    with pytest.raises(UsageError, match="unknown family 'resume'"):
        build_task("json_extraction", explicit={"families": "resume"})
    with pytest.raises(UsageError, match="argument num_cases: should be a valid integer, .*got 'many'"):
        build_task("json_extraction", explicit={"num_cases": "many"})
    with pytest.raises(UsageError, match="argument max_tokens: should be greater than 0, got 0"):
        build_task("json_extraction_constrained", explicit={"max_tokens": 0})
