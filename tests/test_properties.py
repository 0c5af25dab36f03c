"""Property-based tests: every extractor, scorer and response parser fed arbitrary
text and arbitrary JSON returns a result, or its own documented error, in bounded time.

Covered here: the JSON task's parsers and eight scorers, the needle scorer, the code
scorer's extraction, the OpenAI backend's event and ``/v1/models`` parsing, the
response cache's entry reading and the ``samples.jsonl`` reader of ``--resume``.
(The numeric answer readers, GSM8K and equations, have their own property tests.)

Every test runs with a fixed seed (``derandomize``), a bounded number of examples
and a per-example deadline; no example database is written.
"""

from __future__ import annotations

import json
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evalsuite.backends.openai import MalformedReply, parse_sse_line, read_event, served_model_ids
from evalsuite.results.cache import CacheEntryError, generation_from_json, generation_to_json
from evalsuite.results.resume import record_from_dict, repair_samples
from evalsuite.scoring import json_format as jf
from evalsuite.scoring.code import code_blocks, completion_from_code, extract_code
from evalsuite.scoring.needle import found_values, needle_recall
from evalsuite.types import Generation, Sample, Score, Timings
from tasks.humaneval import completion_for
from tasks.json_extraction import SCORERS, generate_cases
from tasks.needle import score_recall

BOUNDED = settings(max_examples=200, derandomize=True, deadline=timedelta(seconds=5), database=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

# Text as a server may send it: any code point, lone surrogates included ("\ud800" is valid JSON).
ANY_CHAR = st.characters(codec=None, exclude_categories=())
any_text = st.text(alphabet=ANY_CHAR, max_size=300)
json_scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
                | st.text(alphabet=ANY_CHAR, max_size=20))
json_values = st.recursive(json_scalars, lambda children: st.lists(children, max_size=4)
                           | st.dictionaries(st.text(max_size=8), children, max_size=4), max_leaves=25)
bracket_soup = st.text(alphabet='{}[]":,\\ a1-.eEtrufalsn\n`', max_size=300)


def _dumps(value) -> str:
    return json.dumps(value, ensure_ascii=False)


jsonish = st.one_of(
    any_text,
    bracket_soup,
    json_values.map(_dumps),
    st.tuples(any_text, json_values.map(_dumps), any_text).map(lambda t: f"{t[0]}```json\n{t[1]}\n```{t[2]}"),
    st.tuples(any_text, json_values.map(_dumps), any_text).map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
    st.integers(min_value=1, max_value=3000).map(lambda n: "[" * n + "]" * n),
    st.integers(min_value=1, max_value=3000).map(lambda n: '{"a":' * n + "1" + "}" * n),
)

JSON_SAMPLES = generate_cases(seed=0, num_cases=4)  # one of each family: resume_en, resume_zh, order, event
for _sample in JSON_SAMPLES:  # build the (cached) schema validators once, outside the deadlines
    jf.schema_errors({}, _sample.metadata["schema"])


def _is_score(score) -> bool:
    return isinstance(score, Score) and 0.0 <= score.value <= 1.0


# --- JSON task -------------------------------------------------------------------------


@BOUNDED
@given(output=jsonish)
def test_json_parsers_return_a_parse_result_for_any_text(output):
    for parse in (jf.strict_parse, jf.lenient_parse):
        parsed = parse(output)
        assert isinstance(parsed, jf.Parsed)
        assert parsed.ok or parsed.error  # a failure says why
        if parsed.ok:
            assert jf.nesting_depth(_dumps(parsed.value)) <= jf.MAX_DEPTH
    obj = jf.first_balanced_object(output)
    assert obj is None or (obj.startswith("{") and obj.endswith("}") and obj in output)
    assert all(isinstance(b, str) for b in jf.fenced_blocks(output))


@BOUNDED
@given(output=jsonish)
def test_json_loads_raises_only_value_errors(output):
    try:
        jf.loads(output)
    except ValueError:
        pass


@BOUNDED
@given(output=jsonish, which=st.sampled_from(JSON_SAMPLES))
def test_every_json_scorer_scores_any_output(output, which):
    for scorer in SCORERS:
        assert _is_score(scorer.score(output, which)), scorer.name
    outcome = jf.classify_output(output, which.metadata["schema"], "stop")
    assert outcome in jf.OUTCOMES


@BOUNDED
@given(predicted=json_values, gold=json_values, which=st.sampled_from(JSON_SAMPLES))
def test_field_scores_and_schema_checks_take_any_json_values(predicted, gold, which):
    schema = which.metadata["schema"]
    fs = jf.field_scores(predicted, gold, schema)
    for value in (fs.accuracy, fs.precision, fs.recall, fs.f1):
        assert 0.0 <= value <= 1.0
    assert fs.correct <= min(fs.predicted, fs.gold)
    assert jf.field_scores(gold, gold, schema).f1 == 1.0  # a value always agrees with itself
    assert isinstance(jf.schema_errors(predicted, schema), list)
    assert jf.canonical(predicted, schema) == jf.canonical(predicted, schema)


def test_json_nested_far_past_the_limit_is_invalid_output_not_an_exception():
    deep = "[" * 100_000 + "]" * 100_000
    for sample in JSON_SAMPLES:
        for scorer in SCORERS:
            score = scorer.score(deep, sample)
            assert score.value == 0.0 and score.answer is None, scorer.name
    assert "nested 100000 levels deep" in jf.lenient_parse(deep).error
    assert jf.strict_parse("[" * 100 + "]" * 100).ok and not jf.strict_parse("[" * 101 + "]" * 101).ok


# --- needle --------------------------------------------------------------------------------

needle_values = st.lists(st.text(alphabet="0123456789", min_size=1, max_size=8), min_size=1, max_size=5)


@BOUNDED
@given(output=any_text, values=needle_values)
def test_needle_scorer_scores_any_output(output, values):
    sample = Sample("s", "prompt", values)
    score = score_recall(output, sample)
    assert _is_score(score)
    assert score.value == needle_recall(output, values) == len(found_values(output, values)) / len(values)


# --- code ------------------------------------------------------------------------------------

code_text = st.one_of(
    any_text,
    st.tuples(any_text, st.sampled_from(["python", "py", "", "js"]), any_text, st.booleans()).map(
        lambda t: f"{t[0]}\n```{t[1]}\n{t[2]}\n" + ("```\n" if t[3] else "")),
    st.tuples(any_text, any_text).map(lambda t: f"{t[0]}\ndef add(a, b):\n{t[1]}"),
)


@BOUNDED
@given(output=code_text, entry=st.sampled_from(["add", "f", "has_close_elements", "a.b*c"]), bare=st.booleans())
def test_code_extraction_takes_any_output(output, entry, bare):
    blocks = code_blocks(output)
    assert all(isinstance(b, str) for b in blocks)
    code = extract_code(output, entry, bare)
    assert code is None or (isinstance(code, str) and code.strip())
    completion = completion_for(output, entry, bare)
    assert completion is None or isinstance(completion, str)
    if code is not None:
        assert completion == completion_from_code(code, entry)


# --- the OpenAI backend's replies --------------------------------------------------------------


@BOUNDED
@given(line=st.one_of(any_text, any_text.map(lambda t: "data: " + t), json_values.map(lambda v: "data: " + _dumps(v))))
def test_sse_lines_parse_to_an_object_none_or_a_malformed_reply(line):
    try:
        event = parse_sse_line(line)
    except MalformedReply:
        return
    assert event is None or isinstance(event, dict)


choice = st.fixed_dictionaries({}, optional={
    "delta": st.one_of(json_values, st.fixed_dictionaries({}, optional={"content": json_values})),
    "text": json_values, "finish_reason": json_values, "index": json_values})
events = st.one_of(json_values, st.fixed_dictionaries({}, optional={
    "choices": st.one_of(json_values, st.lists(st.one_of(choice, json_values), max_size=3)),
    "usage": st.one_of(json_values, st.fixed_dictionaries({}, optional={
        "prompt_tokens": json_values, "completion_tokens": json_values})),
    "id": json_values}))


@BOUNDED
@given(event=events, chat=st.booleans())
def test_stream_events_are_read_or_refused_as_malformed(event, chat):
    try:
        part = read_event(event, chat)
    except MalformedReply as e:
        assert str(e)
        return
    assert isinstance(part.text, str)
    assert part.finish_reason is None or isinstance(part.finish_reason, str)
    for n in (part.prompt_tokens, part.completion_tokens):
        assert n is None or (isinstance(n, int) and n >= 0)


@BOUNDED
@given(payload=st.one_of(json_values, st.fixed_dictionaries({"data": st.one_of(
    json_values, st.lists(st.one_of(json_values, st.fixed_dictionaries({"id": json_values})), max_size=3))})))
def test_models_replies_give_string_ids_or_a_malformed_reply(payload):
    try:
        ids = served_model_ids(payload)
    except MalformedReply as e:
        assert str(e).startswith("unexpected /models reply")
        return
    assert all(isinstance(i, str) for i in ids)


# --- the response cache and samples.jsonl ---------------------------------------------------


@BOUNDED
@given(stored=st.one_of(any_text, json_values.map(_dumps), json_values.map(lambda v: _dumps({"text": v})),
                        st.binary(max_size=50), st.integers()))
def test_cache_entries_read_as_a_generation_or_a_cache_entry_error(stored):
    try:
        g = generation_from_json(stored)
    except CacheEntryError:
        return
    assert isinstance(g, Generation) and isinstance(g.text, str)


@BOUNDED
@given(text=any_text, prompt=st.none() | any_text, tokens=st.none() | st.integers(0, 10**6),
       e2e=st.none() | st.floats(0, 1e6))
def test_every_generation_round_trips_through_the_cache_format(text, prompt, tokens, e2e):
    g = Generation(text, "stop", prompt, tokens, tokens, Timings(e2e_s=e2e, ttft_s=e2e, itl_s=(0.5,)))
    stored = generation_to_json(g)
    stored.encode("utf-8")  # storable in SQLite: lone surrogates are escaped
    assert generation_from_json(stored) == g


@BOUNDED
@given(lines=st.lists(st.one_of(json_values.map(_dumps), any_text.filter(lambda t: "\n" not in t),
                                json_values.map(lambda v: _dumps({"task": "t", "sample_id": "s", "verdicts": v}))),
                      max_size=6))
def test_resume_reads_any_samples_file_without_raising(tmp_path_factory, lines):
    run_dir = tmp_path_factory.mktemp("run")
    (run_dir / "samples.jsonl").write_bytes(
        "".join(line + "\n" for line in lines).encode("utf-8", "surrogatepass"))
    kept = repair_samples(run_dir)
    for record in kept:
        assert record_from_dict(record).task == record["task"]
    assert repair_samples(run_dir) == kept  # the rewritten file reads back the same
