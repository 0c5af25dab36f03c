"""JSON extraction: read a text, answer with a JSON object that follows a schema.

Dataset: generated here, deterministically from the run's ``seed`` (no download):
``num_cases`` cases in four families, interleaved so that any ``--limit`` prefix
holds all of them in turn:

- ``resume_en`` / ``resume_zh``: a résumé sentence in English or Chinese ->
  ``name``, ``phone``, ``email`` (``format: email``), ``skills`` (unordered,
  at most 6), ``experience_years``;
- ``order``: an order with 1-4 line items -> ``order_id``, ``customer``,
  ``currency`` (an enum), ``items`` (unordered objects with ``name``,
  ``quantity``, ``unit_price``);
- ``event``: an event announcement -> ``title``, ``start_date``/``end_date``
  (``format: date``, written out in words in the text), a nested ``location``
  with an optional ``venue``, an optional ``organizer``.

Schemas are bounded (``maxItems``, ``maxLength``, ``maximum``) so constrained
decoding cannot repeat list items forever. ``data_file`` replaces the generated
cases with a user JSONL file, one ``{"text", "schema", "gold"}`` object a line
(optional ``"id"``); each schema must be valid Draft 2020-12 and each gold object
must follow it.

Two task names share the cases: ``json_extraction`` (free generation) and
``json_extraction_constrained`` (the backend constrains decoding to the case's
schema: vLLM structured outputs), so one run shows both side by side.

Scorers (one row each, see :mod:`evalsuite.scoring.json_format`): ``strict-parse``,
``lenient-parse``, ``schema-valid`` (primary; the lenient parse against the schema,
Draft 2020-12 with formats asserted), ``exact-match`` (the whole object),
``field-accuracy``, ``field-precision``, ``field-recall``, ``field-f1`` (per-sample,
then averaged over samples). The task's extra metrics count outcomes
(valid / invalid / truncated / error, truncated meaning cut off by the token
limit) and repeat every row over the outputs that were not cut off.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import PositiveInt, StrictInt

from evalsuite.data import read_jsonl, require_file
from evalsuite.datasets.json_cases import (  # noqa: F401 -- RESUME_SCHEMA, resume_zh_text re-exported
    FAMILIES,
    GENERATORS,
    RESUME_SCHEMA,
    SCHEMAS,
    resume_zh_text,
)
from evalsuite.errors import UsageError
from evalsuite.metrics.aggregate import accuracy
from evalsuite.scoring import json_format as jf
from evalsuite.task import Scorer, Task, task
from evalsuite.types import Message, Sample, SampleRecord, SamplingParams, Score

VERSION = "1"

# Text first, then the schema: small models tend to echo a schema shown first.
PROMPT = (
    "Text:\n{text}\n\nExtract the information in the text above into a JSON object that follows "
    "this JSON Schema (the schema describes the answer; do not repeat it):\n{schema}\n\n"
    "Leave out optional fields that the text does not mention. Answer with the JSON object only."
)

def make_sample(case_id: str, family: str, text: str, schema: Mapping[str, Any], gold: Any) -> Sample:
    """A sample: the chat prompt, the gold object as target, schema/text/family in metadata."""
    prompt = PROMPT.format(schema=json.dumps(schema, ensure_ascii=False), text=text)
    return Sample(case_id, (Message("user", prompt),), gold, {"family": family, "text": text, "schema": schema})


def generate_cases(seed: int, num_cases: int, families: Sequence[str] = FAMILIES) -> list[Sample]:
    """``num_cases`` samples cycling through ``families``; family ``f`` draws from its
    own ``random.Random(f"{seed}:{f}")`` so adding a family never changes another's cases.

    Ids are ``<family>-<k>`` with ``k`` counting within the family.
    """
    rngs = {f: random.Random(f"{seed}:{f}") for f in families}
    counts = dict.fromkeys(families, 0)
    samples = []
    for i in range(num_cases):
        family = families[i % len(families)]
        text, gold = GENERATORS[family](rngs[family])
        samples.append(make_sample(f"{family}-{counts[family]}", family, text, SCHEMAS[family], gold))
        counts[family] += 1
    return samples


def load_cases(path: Path) -> list[Sample]:
    """Samples from a user JSONL file of ``{"text", "schema", "gold"[, "id"]}`` lines.

    Raises UsageError naming the line for a missing field, an invalid schema, a
    gold object that breaks its own schema, or a repeated id.
    """
    samples, seen = [], set()
    for n, row in enumerate(read_jsonl(path, flag="--task-arg json_extraction.data_file"), 1):
        where = f"{path}: case {n}"
        if not isinstance(row, dict) or not {"text", "schema", "gold"} <= set(row):
            raise UsageError(f"{where}: needs the fields text, schema and gold")
        if not isinstance(row["text"], str) or not isinstance(row["schema"], dict):
            raise UsageError(f"{where}: text must be a string and schema an object")
        try:
            problem = jf.check_schema(row["schema"])
            errors = [] if problem else jf.schema_errors(row["gold"], row["schema"])
        except RecursionError:
            raise UsageError(f"{where}: schema or gold nested too deeply to check") from None
        if problem:
            raise UsageError(f"{where}: schema is not valid Draft 2020-12 ({problem})")
        if errors:
            raise UsageError(f"{where}: gold does not follow its schema ({errors[0]})")
        case_id = str(row.get("id", f"case-{n}"))
        if case_id in seen:
            raise UsageError(f"{where}: id {case_id!r} repeats")
        seen.add(case_id)
        samples.append(make_sample(case_id, str(row.get("family", "user")), row["text"], row["schema"], row["gold"]))
    if not samples:
        raise UsageError(f"{path}: no cases")
    return samples


# --- Scoring --------------------------------------------------------------------


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def score_strict_parse(output: str, sample: Sample) -> Score:
    parsed = jf.strict_parse(output)
    return Score(float(parsed.ok), _dump(parsed.value) if parsed.ok else None, parsed.error)


def score_lenient_parse(output: str, sample: Sample) -> Score:
    parsed = jf.lenient_parse(output)
    return Score(float(parsed.ok), _dump(parsed.value) if parsed.ok else None,
                 parsed.error or (f"found in {parsed.source}" if parsed.source != "whole" else None))


def score_schema_valid(output: str, sample: Sample) -> Score:
    parsed = jf.lenient_parse(output)
    if not parsed.ok:
        return Score(0.0, None, parsed.error)
    errors = jf.schema_errors(parsed.value, sample.metadata["schema"])
    return Score(float(not errors), _dump(parsed.value), errors[0] if errors else None)


def score_exact_match(output: str, sample: Sample) -> Score:
    parsed = jf.lenient_parse(output)
    if not parsed.ok:
        return Score(0.0, None, parsed.error)
    schema = sample.metadata["schema"]
    return Score(float(jf.canonical(parsed.value, schema) == jf.canonical(sample.target, schema)), _dump(parsed.value))


def _field_scorer(name: str) -> Callable[[str, Sample], Score]:
    def score(output: str, sample: Sample) -> Score:
        parsed = jf.lenient_parse(output)
        if not parsed.ok:
            return Score(0.0, None, parsed.error)
        fs = jf.field_scores(parsed.value, sample.target, sample.metadata["schema"])
        counts = {"correct": fs.correct, "predicted": fs.predicted, "gold": fs.gold}
        return Score(getattr(fs, name), counts)

    return score


SCORERS = (
    Scorer("strict-parse", score_strict_parse),
    Scorer("lenient-parse", score_lenient_parse),
    Scorer("schema-valid", score_schema_valid, primary=True),
    Scorer("exact-match", score_exact_match),
    Scorer("field-accuracy", _field_scorer("accuracy")),
    Scorer("field-precision", _field_scorer("precision")),
    Scorer("field-recall", _field_scorer("recall")),
    Scorer("field-f1", _field_scorer("f1")),
)


def outcome(record: SampleRecord) -> str:
    """``valid`` / ``invalid`` / ``truncated`` / ``error`` for a scored record
    (the rule of :func:`evalsuite.scoring.json_format.classify_output`)."""
    if record.scores["schema-valid"].value == 1.0:
        return "valid"
    if record.error is not None:
        return "error"
    return "truncated" if record.finish_reason == "length" else "invalid"


def aggregate_outcomes(records: Sequence[SampleRecord]) -> dict[str, Any]:
    """The task's extra metrics.

    - ``outcomes``: counts of valid / invalid / truncated / error and ``n``;
    - ``truncated_rate``: share of outputs cut off by the token limit
      (``finish_reason == "length"``, valid or not), as a metric row;
    - ``finished``: every scorer's row again over the outputs that were not cut
      off and did not fail (for constrained decoding, ``schema-valid`` there is
      expected to be 1.0);
    - ``unchecked_formats``: formats in the cases' schemas that cannot be asserted here.
    """
    counts = dict.fromkeys(jf.OUTCOMES, 0)
    for r in records:
        counts[outcome(r)] += 1
    truncated = [float(r.finish_reason == "length") for r in records]
    finished = [r for r in records if r.finish_reason != "length" and r.error is None]
    schemas = {jf.schema_key(r.metadata["schema"]): r.metadata["schema"] for r in records if "schema" in r.metadata}
    return {
        "outcomes": {**counts, "n": len(records)},
        "truncated_rate": accuracy(truncated, [True] * len(truncated)),
        "finished": {
            s.name: accuracy([r.scores[s.name].value for r in finished],
                             [r.scores[s.name].extracted for r in finished])
            for s in SCORERS
        },
        "unchecked_formats": sorted({f for s in schemas.values() for f in jf.unchecked_formats(s)}),
    }


# --- Factories --------------------------------------------------------------------


def _families(value: str | Sequence[str] | None) -> tuple[str, ...]:
    if value is None:
        return FAMILIES
    names = tuple(v.strip() for v in (value.split(",") if isinstance(value, str) else value) if v.strip())
    unknown = [n for n in names if n not in FAMILIES]
    if unknown or not names:
        raise UsageError(f"json_extraction: unknown family {unknown[0] if unknown else ''!r}; "
                         f"choose from {', '.join(FAMILIES)}")
    return names


def build(name: str, constrained: bool, seed: int, num_cases: int, families: str | Sequence[str] | None,
          data_file: str | None, max_tokens: int) -> Task:
    """The task ``name`` (both factories share this, their arguments checked from
    the annotations); see the module docstring."""
    files: tuple[Path, ...] = ()
    if data_file is not None:
        path = require_file(Path(data_file).expanduser(), flag=f"--task-arg {name}.data_file")
        samples, files, source = load_cases(path), (path,), f"user file {path.name}"
        chosen: tuple[str, ...] = ()
    else:
        chosen = _families(families)
        samples, source = generate_cases(seed, num_cases, chosen), f"generated (seed {seed})"
    return Task(
        name=name,
        version=VERSION,
        samples=samples,
        scorers=SCORERS,
        params=SamplingParams(max_tokens=max_tokens),
        aggregate=aggregate_outcomes,
        json_schema=(lambda s: s.metadata["schema"]) if constrained else None,
        data_files=files,
        source=source,
        args={"seed": seed, "num_cases": len(samples), "families": list(chosen), "data_file": data_file,
              "max_tokens": max_tokens, "constrained": constrained},
    )


@task("json_extraction")
def json_extraction(seed: StrictInt = 0, num_cases: PositiveInt = 200, families: str | Sequence[str] | None = None,
                    data_file: str | None = None, max_tokens: PositiveInt = 256) -> Task:
    """Free generation: the model writes the JSON object on its own.

    ``seed`` (the run's ``--seed``) fixes the generated cases; ``families`` is a
    comma-separated subset of ``resume_en,resume_zh,order,event``; ``data_file``
    is a JSONL file of user cases used instead; ``max_tokens`` is the default
    output budget (``--max-tokens`` overrides it).
    """
    return build("json_extraction", False, seed, num_cases, families, data_file, max_tokens)


@task("json_extraction_constrained")
def json_extraction_constrained(seed: StrictInt = 0, num_cases: PositiveInt = 200,
                                families: str | Sequence[str] | None = None, data_file: str | None = None,
                                max_tokens: PositiveInt = 256) -> Task:
    """The same cases as ``json_extraction``, decoded under each case's JSON Schema
    (backends that support it: vLLM structured outputs)."""
    return build("json_extraction_constrained", True, seed, num_cases, families, data_file, max_tokens)
