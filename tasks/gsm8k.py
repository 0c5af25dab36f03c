"""GSM8K: grade-school math word problems.

Dataset: ``openai/gsm8k`` (config ``main``), Cobbe et al., 2021, "Training
Verifiers to Solve Math Word Problems" (arXiv:2110.14168), MIT licence. Split
``test``: 1,319 problems; ``train``: 7,473 (the few-shot pool). Each answer is a
worked solution ending in ``#### N``.

Read from ``<data_dir>/gsm8k/{train,test}.jsonl`` when ``--data-dir`` or
``EVALSUITE_DATA_DIR`` is set, else through ``datasets.load_dataset``.

Prompts:
- ``cot`` (default): zero-shot chat chain of thought ending "The answer is N".
- ``fewshot``: lm-evaluation-harness's ``gsm8k`` format, k shots of
  ``Question: ...\\nAnswer: <solution>`` from the train split, plain completion.

Scorers (as in lm-evaluation-harness): ``strict-match`` reads the answer only
where the format asked for it; ``flexible-extract`` takes the last ``\\boxed{}``,
else the last number. Both compare numbers after normalisation.
"""

from __future__ import annotations

import random
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path

from evalsuite.data import data_dir as resolve_data_dir
from evalsuite.data import read_jsonl, require_file
from evalsuite.errors import UsageError
from evalsuite.task import Scorer, Task, task
from evalsuite.types import Message, Sample, SamplingParams, Score

VERSION = "1"

COT_TEMPLATE = (
    "Solve the following math word problem. Think step by step, then write the "
    'final answer on its own last line in the form "The answer is N", where N is a number.\n\n'
    "Question: {question}"
)
FEWSHOT_STOP = ("Question:", "</s>", "<|im_end|>")

# A number as models write it: optional sign and $, thousands separators, decimals.
_NUMBER = r"-?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_NUMBER_RE = re.compile(rf"(?<![\w.]){_NUMBER}")
_STRICT_RE = re.compile(
    rf"(?:####|\banswer\s+is\s*:?|\bfinal\s+answer\s*(?:is\s*)?:?)[*_\s]*({_NUMBER})",
    re.IGNORECASE,
)


def normalize_number(text: str) -> str | None:
    """Canonical decimal string of a number as written, or None.

    Drops ``$``, spaces and thousands separators and a trailing period; ``18.00``
    becomes ``18``, ``-0.50`` becomes ``-0.5``.
    """
    cleaned = text.replace("$", "").replace(",", "").replace(" ", "").rstrip(".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    value = value.normalize()
    out = format(value, "f")
    return "0" if out in ("-0", "0") else out


def _last_boxed(text: str) -> str | None:
    """Contents of the last ``\\boxed{...}``, braces balanced."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None


def strict_match(output: str) -> str | None:
    """The answer where the format put it: the first ``#### N`` or "The answer is N".

    Only the first occurrence counts, so an invented follow-up question after the
    answer does not change it. Returns the normalised number or None.
    """
    m = _STRICT_RE.search(output)
    return normalize_number(m.group(1)) if m else None


def flexible_extract(output: str) -> str | None:
    """The last number inside the last ``\\boxed{}``, else the last number in the text."""
    boxed = _last_boxed(output)
    for text in (boxed, output) if boxed is not None else (output,):
        numbers = _NUMBER_RE.findall(text)
        if numbers:
            return normalize_number(numbers[-1])
    return None


def gold_answer(solution: str) -> str:
    """The number after ``####`` in a GSM8K solution, normalised."""
    value = normalize_number(solution.split("####")[-1].strip())
    if value is None:
        raise ValueError(f"GSM8K solution has no final number: {solution[-80:]!r}")
    return value


def _scorer(name: str, extract, primary: bool = False) -> Scorer:
    def score(output: str, sample: Sample) -> Score:
        answer = extract(output)
        return Score(float(answer is not None and answer == sample.target), answer)

    return Scorer(name, score, primary)


def _load_split(split: str, folder: Path | None) -> tuple[list[dict], Path | None]:
    if folder is not None:
        path = require_file(folder / "gsm8k" / f"{split}.jsonl")
        return list(read_jsonl(path)), path
    try:
        import datasets

        return list(datasets.load_dataset("openai/gsm8k", "main", split=split)), None
    except Exception as e:  # offline, no datasets package, hub error: all one fix
        raise UsageError(
            f"GSM8K could not be loaded from the hub ({type(e).__name__}); "
            "pass --data-dir (or set EVALSUITE_DATA_DIR) to a folder with gsm8k/test.jsonl"
        ) from None


def fewshot_prefix(shots: list[dict]) -> str:
    return "".join(f"Question: {d['question']}\nAnswer: {d['answer']}\n\n" for d in shots)


@task("gsm8k")
def gsm8k(
    num_fewshot: int = 0,
    prompt: str | None = None,
    data_dir: str | None = None,
    split: str = "test",
    fewshot_seed: int = 1234,
) -> Task:
    """GSM8K with the zero-shot chat CoT prompt, or ``num_fewshot`` shots.

    ``prompt`` is ``cot`` or ``fewshot``; by default ``fewshot`` when
    ``num_fewshot > 0``. Shots are drawn once from the train split with
    ``fewshot_seed`` and shared by every item.
    """
    prompt = prompt or ("fewshot" if num_fewshot > 0 else "cot")
    if prompt not in ("cot", "fewshot"):
        raise UsageError(f"gsm8k: unknown prompt {prompt!r} (use 'cot' or 'fewshot')")
    if num_fewshot < 0:
        raise UsageError("gsm8k: --num-fewshot must be >= 0")
    folder = resolve_data_dir(data_dir)
    docs, path = _load_split(split, folder)
    files = [path] if path else []
    if prompt == "fewshot":
        pool, train_path = _load_split("train", folder)
        shots = random.Random(fewshot_seed).sample(pool, num_fewshot)
        files.append(train_path) if train_path else None
        prefix = fewshot_prefix(shots)
        samples = [
            Sample(f"{split}-{i}", f"{prefix}Question: {d['question']}\nAnswer:", gold_answer(d["answer"]),
                   {"question": d["question"]})
            for i, d in enumerate(docs)
        ]
        params = SamplingParams(max_tokens=256, stop=FEWSHOT_STOP)
    else:
        samples = [
            Sample(f"{split}-{i}", (Message("user", COT_TEMPLATE.format(question=d["question"])),),
                   gold_answer(d["answer"]), {"question": d["question"]})
            for i, d in enumerate(docs)
        ]
        params = SamplingParams(max_tokens=512)
    return Task(
        name="gsm8k",
        version=VERSION,
        samples=samples,
        scorers=(_scorer("strict-match", strict_match, primary=True), _scorer("flexible-extract", flexible_extract)),
        params=params,
        data_files=tuple(p for p in files if p),
        source="openai/gsm8k (main)",
        args={"num_fewshot": num_fewshot, "prompt": prompt, "split": split, "fewshot_seed": fewshot_seed},
    )
