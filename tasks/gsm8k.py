"""GSM8K: grade-school math word problems.

Dataset: ``openai/gsm8k`` (config ``main``), Cobbe et al., 2021, "Training
Verifiers to Solve Math Word Problems" (arXiv:2110.14168), MIT licence. Split
``test``: 1,319 problems; ``train``: 7,473 (the few-shot pool). Each answer is a
worked solution ending in ``#### N``.

Read from ``<data_dir>/gsm8k/{train,test}.jsonl`` when ``--data-dir`` or
``EVALSUITE_DATA_DIR`` is set, else through ``datasets.load_dataset``.

Prompts:
- ``cot`` (default): zero-shot chat chain of thought ending "The answer is N".
- ``fewshot``: lm-evaluation-harness's ``gsm8k`` task (0.4.x, task version 3)
  rendered byte for byte: k shots (5 by default) of
  ``Question: ...\\nAnswer: <solution>\\n\\n`` from the train split, drawn per
  item by lm-eval's default sampler (one ``random.Random(fewshot_seed)`` shared
  by all items in order, ``sample(train, k)`` each), plain completion, stop
  sequences ``Question:``, ``</s>``, ``<|im_end|>``, 256 output tokens.

Scorers (named as in lm-evaluation-harness). With ``extraction="evalsuite"``
(the default for ``cot``): ``strict-match`` reads the answer only where the
format asked for it; ``flexible-extract`` takes the last ``\\boxed{}``, else the
last number; both read the text through :mod:`evalsuite.scoring.normalize`
(Unicode signs and digits, thousands separators under the shared comma rule,
``$``, LaTeX) and compare exact decimals (never rounded). With
``extraction="lm-eval"`` (the default for ``fewshot``): lm-eval's own two
filters (``#### N`` first match; last ``-?[$0-9.,]{2,}|-?[0-9]+`` match) and its
``exact_match`` string comparison after removing ``,``, ``$``, everything up to
``#### `` and a final ``.``, case-insensitively (lm_eval/tasks/gsm8k/gsm8k.yaml),
reproduced as they are for parity, so without evalsuite's normalisation.

Second opinion (``second_opinion=True``, the default): math-verify reads every
raw output against the gold and its verdict is recorded on the
``flexible-extract`` row; the task's metrics carry the agreement
(:mod:`evalsuite.scoring.second_opinion`).
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, NonNegativeInt, StrictBool, field_validator

from evalsuite.data import data_dir as resolve_data_dir
from evalsuite.data import read_jsonl, require_file
from evalsuite.errors import UsageError
from evalsuite.scoring.normalize import canonical_decimal, last_boxed, normalize_text
from evalsuite.task import Extractor, Scorer, Task, exact_match, task
from evalsuite.types import Generation, Message, Sample, SampleRecord, SamplingParams, Score

VERSION = "3"

COT_TEMPLATE = (
    "Solve the following math word problem. Think step by step, then write the "
    'final answer on its own last line in the form "The answer is N", where N is a number.\n\n'
    "Question: {question}"
)
FEWSHOT_STOP = ("Question:", "</s>", "<|im_end|>")

# A number after normalisation (evalsuite.scoring.normalize: signs, separators,
# currency and LaTeX already mapped): not part of a word, a decimal, an exponent
# (``m^{2}``) or a subscript.
_NUMBER = r"-?(?:\d+(?:\.\d+)?|\.\d+)"
_NUMBER_RE = re.compile(rf"(?<![\w.^_])(?<![\^_]\{{)(?<![\^_]\{{-){_NUMBER}", re.ASCII)
# Between the anchor and the number: emphasis, colons, brackets, \boxed{, \( and \[.
_STRICT_RE = re.compile(
    r"(?:####|\banswer\s+is|\bfinal\s+answer(?:\s+is)?)(?:[*_\s:({\[]|\\boxed\s*\{|\\[(\[])*"
    rf"({_NUMBER})(?![\d.]\d)",
    re.IGNORECASE,
)


# lm-evaluation-harness gsm8k.yaml: its filters and exact_match's regexes_to_ignore.
LM_EVAL_STRICT_RE = re.compile(r"#### (\-?[0-9\.\,]+)")
LM_EVAL_FLEXIBLE_RE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
LM_EVAL_IGNORE = (",", r"\$", r"(?s).*#### ", r"\.$")
LM_EVAL_FEWSHOT = 5
MATH_VERIFY_TIME_LIMIT_S = 5.0


def normalize_number(text: str) -> str | None:
    """Canonical decimal string of a number as written, or None.

    The text is normalised first (:func:`evalsuite.scoring.normalize.normalize_text`:
    Unicode signs and digits, thousands separators, ``$``), then spaces and a
    trailing period are dropped; ``18.00`` becomes ``18``, ``-0.50`` becomes
    ``-0.5``. Exact at any number of digits (never rounded).
    """
    return canonical_decimal(normalize_text(text).replace(" ", "").rstrip("."))


def strict_match(output: str) -> str | None:
    """The answer where the format put it: the first ``#### N``, "The answer is N" or
    "Final answer: N" (emphasis, ``$``, ``\\boxed{`` and brackets may come between).

    Only the first occurrence counts, so an invented follow-up question after the
    answer does not change it. Returns the canonical number or None.
    """
    m = _STRICT_RE.search(normalize_text(output))
    return canonical_decimal(m.group(1)) if m else None


def flexible_extract(output: str) -> str | None:
    """The last number inside the last ``\\boxed{}``, else the last number in the text."""
    text = normalize_text(output)
    boxed = last_boxed(text)
    for part in (boxed, text) if boxed is not None else (text,):
        numbers = _NUMBER_RE.findall(part)
        if numbers:
            return canonical_decimal(numbers[-1])
    return None


def lm_eval_strict_match(output: str) -> str | None:
    """lm-eval's ``strict-match`` filter: the first ``#### N``, unnormalised, or None."""
    found = LM_EVAL_STRICT_RE.findall(output)
    return found[0].strip() if found else None


def lm_eval_flexible_extract(output: str) -> str | None:
    """lm-eval's ``flexible-extract`` filter: the last number-like run, unnormalised, or None."""
    found = LM_EVAL_FLEXIBLE_RE.findall(output)
    if not found:
        return None
    groups = [g for g in found[-1] if g]
    return groups[0].strip() if groups else None


def lm_eval_normalize(text: str) -> str:
    """A string as lm-eval's gsm8k ``exact_match`` compares it (regexes removed in order, lower-cased)."""
    for pattern in LM_EVAL_IGNORE:
        text = re.sub(pattern, "", text)
    return text.lower()


def gold_answer(solution: str) -> str:
    """The number after ``####`` in a GSM8K solution, normalised."""
    value = normalize_number(solution.split("####")[-1].strip())
    if value is None:
        raise ValueError(f"GSM8K solution has no final number: {solution[-80:]!r}")
    return value


def lm_eval_exact_match(answer: str, sample: Sample) -> float:
    """lm-eval's ``exact_match``: the answer, normalised as lm-eval does, against the
    sample's normalised reference solution."""
    return float(lm_eval_normalize(answer) == sample.metadata["reference"])


EXTRACTORS = {
    "evalsuite": (Extractor("strict-match", strict_match, primary=True),
                  Extractor("flexible-extract", flexible_extract)),
    "lm-eval": (Extractor("strict-match", lm_eval_strict_match, primary=True),
                Extractor("flexible-extract", lm_eval_flexible_extract)),
}
"""The named extractors of each ``extraction`` mode (rows as in lm-evaluation-harness)."""
SCORERS = {"evalsuite": exact_match, "lm-eval": lm_eval_exact_match}
SECOND_OPINION_ROW = "flexible-extract"


def _with_math_verify(scorers: tuple[Scorer, ...]):
    """A ``score_batch``: the scorers in-process, then math-verify on each output
    against ``$<gold>$`` in the shared killable pool (one worker per core, at most
    8), attached to ``flexible-extract``."""
    def score_batch(samples: Sequence[Sample], generations: Sequence[Generation]) -> list[dict[str, Score]]:
        from evalsuite.scoring import second_opinion as mv
        from evalsuite.scoring.equations import shared_pool

        outputs = [g.text for g in generations]
        rows = [{s.name: s.score(o, sample) for s in scorers} for sample, o in zip(samples, outputs)]
        pool = shared_pool(max(1, min(8, os.cpu_count() or 1)), MATH_VERIFY_TIME_LIMIT_S)
        return mv.attach(rows, SECOND_OPINION_ROW, mv.run(outputs, [f"${s.target}$" for s in samples], pool))

    return score_batch


def aggregate(records: Sequence[SampleRecord]) -> dict[str, Any]:
    """math-verify's agreement with ``flexible-extract`` (``math_verify``), when it ran."""
    from evalsuite.scoring.second_opinion import agreement

    second = agreement(records, SECOND_OPINION_ROW)
    return {"math_verify": second} if second is not None else {}


def _metadata(doc: dict, extraction: str) -> dict:
    if extraction == "lm-eval":  # the reference lm-eval's exact_match compares against
        return {"question": doc["question"], "reference": lm_eval_normalize(doc["answer"])}
    return {"question": doc["question"]}


class Record(BaseModel):
    """A line of GSM8K's ``{train,test}.jsonl``: the problem and its worked solution,
    which ends in ``#### N`` with N a number."""

    model_config = ConfigDict(strict=True, extra="allow")

    question: str
    answer: str

    @field_validator("answer")
    @classmethod
    def _ends_in_a_number(cls, answer: str) -> str:
        gold_answer(answer)  # ValueError names what is missing
        return answer


def _load_split(split: str, folder: Path | None) -> tuple[list[dict], Path | None]:
    if folder is not None:
        path = require_file(folder / "gsm8k" / f"{split}.jsonl")
        docs = list(read_jsonl(path, schema=Record))
        if not docs:
            raise UsageError(f"{path}: no records (an empty file); point --data-dir (or EVALSUITE_DATA_DIR) "
                             "at a folder whose gsm8k/ holds the dataset")
        return docs, path
    try:
        import datasets

        return list(datasets.load_dataset("openai/gsm8k", "main", split=split)), None
    except Exception as e:  # noqa: BLE001 -- offline, no datasets package, hub error: all one fix
        raise UsageError(
            f"GSM8K could not be loaded from the hub ({type(e).__name__}); "
            "pass --data-dir (or set EVALSUITE_DATA_DIR) to a folder with gsm8k/test.jsonl"
        ) from None


def fewshot_prefix(shots: list[dict]) -> str:
    """Shots as lm-eval renders them: ``Question: q\\nAnswer: a`` joined and ended by a blank line."""
    return "".join(f"Question: {d['question']}\nAnswer: {d['answer']}\n\n" for d in shots)


def fewshot_shots(pool: list[dict], k: int, n_items: int, seed: int) -> list[list[dict]]:
    """The ``k`` shots of each of ``n_items`` items, as lm-eval's default ContextSampler draws them.

    One ``random.Random(seed)`` is shared by all items in dataset order and draws
    ``sample(pool, k)`` per item (lm_eval/api/samplers.py; the pool is the train
    split, so no item is excluded). Item ``i``'s shots do not depend on ``--limit``.
    """
    rnd = random.Random(seed)
    return [rnd.sample(pool, k) for _ in range(n_items)]


def _samples(docs: list[dict], split: str, prompt: str, extraction: str, shots: list[list[dict]] | None) -> list[Sample]:
    """One sample per problem: lm-eval's few-shot completion prompt when ``shots``
    are given (one list per problem), else the chat CoT prompt."""
    if shots is not None:
        return [Sample(f"{split}-{i}", f"{fewshot_prefix(item_shots)}Question: {d['question']}\nAnswer:",
                       gold_answer(d["answer"]), _metadata(d, extraction))
                for i, (d, item_shots) in enumerate(zip(docs, shots))]
    return [Sample(f"{split}-{i}", (Message("user", COT_TEMPLATE.format(question=d["question"])),),
                   gold_answer(d["answer"]), _metadata(d, extraction)) for i, d in enumerate(docs)]


@task("gsm8k")
def gsm8k(
    num_fewshot: NonNegativeInt | None = None,
    prompt: Literal["cot", "fewshot"] | None = None,
    data_dir: str | None = None,
    split: str = "test",
    fewshot_seed: int = 1234,
    extraction: Literal["evalsuite", "lm-eval"] | None = None,
    second_opinion: StrictBool = True,
) -> Task:
    """GSM8K with the zero-shot chat CoT prompt, or lm-eval's few-shot prompt.

    ``prompt`` is ``cot`` or ``fewshot``; by default ``fewshot`` when
    ``num_fewshot > 0``. ``fewshot`` takes ``num_fewshot`` shots (default 5, as
    lm-eval's gsm8k) drawn per item with ``fewshot_seed`` (lm-eval's default
    1234), see :func:`fewshot_shots`. ``extraction`` is ``evalsuite`` or
    ``lm-eval`` (defaults: ``evalsuite`` for ``cot``, ``lm-eval`` for ``fewshot``).
    ``second_opinion``: also run math-verify on every output beside
    ``flexible-extract`` (recorded and counted, never changing a score).
    Bad arguments are UsageErrors, checked from the annotations.
    """
    prompt = prompt or ("fewshot" if (num_fewshot or 0) > 0 else "cot")
    extraction = extraction or ("lm-eval" if prompt == "fewshot" else "evalsuite")
    folder = resolve_data_dir(data_dir)
    docs, path = _load_split(split, folder)
    files = [path]
    shots = None
    if prompt == "fewshot":
        num_fewshot = LM_EVAL_FEWSHOT if num_fewshot is None else num_fewshot
        pool, train_path = _load_split("train", folder)
        files.append(train_path)
        shots = fewshot_shots(pool, num_fewshot, len(docs), fewshot_seed)
        params = SamplingParams(max_tokens=256, stop=FEWSHOT_STOP)
    else:
        num_fewshot, params = 0, SamplingParams(max_tokens=512)
    t = Task(name="gsm8k", version=VERSION, samples=_samples(docs, split, prompt, extraction, shots),
             extractors=EXTRACTORS[extraction], scorer=SCORERS[extraction], params=params, aggregate=aggregate,
             data_files=tuple(p for p in files if p), source="openai/gsm8k (main)",
             args={"num_fewshot": num_fewshot, "prompt": prompt, "split": split, "fewshot_seed": fewshot_seed,
                   "extraction": extraction, "second_opinion": second_opinion})
    return dataclasses.replace(t, score_batch=_with_math_verify(t.scorers)) if second_opinion else t
