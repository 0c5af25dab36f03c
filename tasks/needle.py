"""Needle in a haystack: retrieve facts hidden at chosen depths in long filler text.

No dataset: every prompt is generated from the run seed. Filler is a stream of
varied natural sentences from a seeded template generator, or the sentences of a
user text file (``filler_file``, cycled when short). Needles are sentences of the
form "The secret number for amber-falcon is 4829173." inserted as text at
sentence boundaries; the question at the end asks for the value(s). The design
follows Kamradt's needle test (github.com/gkamradt/LLMTest_NeedleInAHaystack,
2023) over a length x depth grid, with RULER's multi-key and multi-value needles
(Hsieh et al., 2024, arXiv:2404.06654).

Lengths count the whole prompt in the model's own tokens, chat template applied:
at most ``length``, at least ``length`` minus max(8, 1%); depth is the share of
filler tokens before the needle, 0 to 100, met to within one sentence
(:mod:`evalsuite.datasets.haystack` builds the prompts).

Variants (``variant``):
- ``single``: one needle, asked for.
- ``multi-key``: ``num_needles`` keys with a value each; one, at the cell's depth,
  is asked for; the others sit at seeded random depths as distractors.
- ``multi-value``: one key with ``num_needles`` values, all asked for; the first
  at the cell's depth, the others at seeded random depths. Partial credit.

Guard: a cell whose prompt tokens + max new tokens exceed ``max_model_len`` is
not generated; it is listed under ``skipped`` in the task's metrics and shown
hatched in the heatmap. Scoring: :func:`evalsuite.scoring.needle.needle_recall`.
"""

from __future__ import annotations

import functools
import itertools
import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PositiveInt

from evalsuite.datasets.haystack import (
    Filler,
    Needle,
    build_filler,
    build_prompt,
    file_sentences,
    filler_sentences,
    load_tokenizer,
    model_context_length,
    random_keys,
    random_values,
    tolerance,
)
from evalsuite.errors import UsageError
from evalsuite.scoring.needle import DEFAULT_THRESHOLD, effective_context_length, found_values
from evalsuite.task import Scorer, Task, grouped, number_list, task
from evalsuite.types import Message, Prompt, Sample, SampleRecord, SamplingParams, Score

VERSION = "1"
DEFAULT_DEPTHS = tuple(range(0, 101, 10))
SHORTEST_DEFAULT_LENGTH = 1024
HEATMAP_FILE = "needle_heatmap.png"

INTRO = (
    "The text below hides one or more sentences that give a secret number for a key. "
    "Read it carefully; a question about the secret numbers follows it."
)
SINGLE_NEEDLE = "The secret number for {key} is {value}."
MULTI_VALUE_NEEDLE = "One of the secret numbers for {key} is {value}."
SINGLE_QUESTION = "Question: What is the secret number for {key}? Reply with the number only."
MULTI_VALUE_QUESTION = (
    "Question: What are all the secret numbers for {key}? Reply with every one of them, separated by commas."
)


def _render(haystack: str, question: str, chat: bool, system_prompt: str | None = None) -> Prompt:
    content = f"{INTRO}\n\n<text>\n{haystack}\n</text>\n\n{question}"
    if not chat:
        return content + "\nAnswer:"
    system = (Message("system", system_prompt),) if system_prompt is not None else ()
    return (*system, Message("user", content))


def default_lengths(limit: int, max_tokens: int) -> list[int]:
    """1K, 2K, 4K ... below the limit, then the longest prompt that still fits."""
    top = limit - max_tokens
    lengths = []
    length = SHORTEST_DEFAULT_LENGTH
    while length < top:
        lengths.append(length)
        length *= 2
    return lengths + [top]


def _grid(variant: str, num_needles: int | None, lengths: Any, depths: Any, limit: int,
          max_tokens: int) -> tuple[int, list[int], list[int | float]]:
    """``(num_needles, lengths, depths)`` checked: UsageError for a needle count the
    variant cannot have, lengths that are not positive, depths outside 0..100."""
    if num_needles is None:
        num_needles = 1 if variant == "single" else 4
    if variant == "single" and num_needles != 1:
        raise UsageError("needle: the single variant has exactly one needle (use multi-key or multi-value)")
    if variant != "single" and not 2 <= num_needles <= 64:
        raise UsageError(f"needle: num_needles must be 2 to 64 for {variant}, got {num_needles}")
    grid_lengths = sorted({int(v) for v in number_list("needle", "lengths", lengths)}) if lengths is not None \
        else default_lengths(limit, max_tokens)
    grid_depths = sorted(set(number_list("needle", "depths", depths if depths is not None else list(DEFAULT_DEPTHS))))
    if any(v < 1 for v in grid_lengths):
        raise UsageError(f"needle: lengths must be positive, got {grid_lengths}")
    if any(not 0 <= d <= 100 for d in grid_depths):
        raise UsageError(f"needle: depths must be in [0, 100], got {grid_depths}")
    return num_needles, grid_lengths, grid_depths


def _filler_source(file_text: list[str] | None, seed: int, s: int):
    """The filler sentences of prompt set ``s``: the file's, from a seeded start, or generated."""
    rng = random.Random(f"{seed}:filler:{s}")
    if file_text is None:
        return filler_sentences(rng)
    return itertools.islice(itertools.cycle(file_text), rng.randrange(len(file_text)), None)


def _cells(tok: Any, grid: tuple[list[int], list], samples_per_cell: int, file_text: list[str] | None, limit: int,
           max_tokens: int, make: Any, variant: str, seed: int) -> tuple[list[Sample], list[dict[str, Any]]]:
    """The samples of every cell and the cells skipped because prompt plus answer
    would not fit ``limit`` tokens; ``make(sid, tok, filler, length, depth, rng)`` builds one."""
    samples: list[Sample] = []
    skipped: list[dict[str, Any]] = []
    buildable = [L for L in grid[0] if L - tolerance(L) + max_tokens <= limit]
    for s in range(samples_per_cell):
        filler = build_filler(_filler_source(file_text, seed, s), tok, max(buildable, default=0) + 256)
        for length, depth in itertools.product(*grid):
            sid = f"{variant}-L{length}-D{depth}-s{s}"
            sample = None if length not in buildable else make(
                sid, tok, filler, length=length, depth=depth, rng=random.Random(f"{seed}:{sid}"))
            if sample is None or sample.metadata["prompt_tokens"] + max_tokens > limit:
                skipped.append({"id": sid, "length": length, "depth": depth, "sample": s, "max_tokens": max_tokens,
                                "max_model_len": limit, "prompt_tokens": sample and sample.metadata["prompt_tokens"]})
            else:
                samples.append(sample)
    return samples, skipped


@task("needle")
def needle(
    variant: Literal["single", "multi-key", "multi-value"] = "single",
    lengths: Any = None,
    depths: Any = None,
    num_needles: int | None = None,
    samples_per_cell: PositiveInt = 1,
    filler_file: str | None = None,
    threshold: Annotated[float, Field(ge=0, le=1)] = DEFAULT_THRESHOLD,
    max_tokens: PositiveInt | None = None,
    tokenizer: str | None = None,
    system_prompt: str | None = None,
    model_path: str | None = None,
    max_model_len: int | None = None,
    seed: int = 0,
) -> Task:
    """Needle retrieval over a ``lengths`` x ``depths`` grid.

    ``variant``: ``single``, ``multi-key`` or ``multi-value``. ``lengths``: prompt
    lengths in model tokens (default 1024, 2048, ... below the limit, then the
    longest that fits); ``depths``: percent of the filler, 0 to 100 (default 0, 10
    ... 100); both as lists, JSON lists or comma strings. ``num_needles``: keys
    (multi-key) or values (multi-value), default 4; 1 for single.
    ``samples_per_cell``: prompts per cell, each with its own filler, keys and
    values. ``filler_file``: a UTF-8 text whose sentences replace the generated
    filler. ``threshold``: recall a length must keep for the effective context
    length. ``max_tokens``: new tokens per answer for the fit guard (default 32, 64
    for multi-value; pass the run's ``--max-tokens``). ``tokenizer``: where to load
    it from (default ``model_path``). ``system_prompt``: a system message built
    into (and counted in) each prompt. ``model_path``, ``max_model_len`` (None: the
    config's ``max_position_embeddings``) and ``seed`` come from the runner.
    Raises UsageError for a bad argument, a missing filler file or a tokenizer that
    cannot be loaded.
    """
    max_tokens = max_tokens or (64 if variant == "multi-value" else 32)
    source_path = tokenizer or model_path
    if source_path is None:
        raise UsageError("needle needs the model's tokenizer; pass --model or needle.tokenizer=DIR")
    limit = int(max_model_len) if max_model_len else model_context_length(str(model_path or source_path))
    num_needles, grid_lengths, grid_depths = _grid(variant, num_needles, lengths, depths, limit, max_tokens)
    file_path = Path(filler_file).expanduser() if filler_file else None
    file_text = file_sentences(file_path) if file_path else None
    tok = load_tokenizer(str(source_path))
    chat = bool(getattr(tok, "chat_template", None))
    samples, skipped = _cells(tok, (grid_lengths, grid_depths), samples_per_cell, file_text, limit, max_tokens,
                              functools.partial(_cell_sample, variant=variant, num_needles=num_needles, chat=chat,
                                                system_prompt=system_prompt), f"{variant}", seed)
    return Task(
        name="needle", version=VERSION, samples=samples, scorers=(Scorer("recall", score_recall, primary=True),),
        params=SamplingParams(max_tokens=max_tokens),
        aggregate=functools.partial(summarize, skipped=skipped, threshold=threshold),
        write_artifacts=functools.partial(write_heatmap, grid=(grid_lengths, grid_depths), skipped=skipped,
                                          threshold=threshold, title=f"Needle recall ({variant})"),
        data_files=(file_path,) if file_path else (),
        source=f"generated ({'file ' + str(file_path) if file_path else 'seeded template filler'})",
        args={"variant": variant, "lengths": grid_lengths, "depths": grid_depths, "num_needles": num_needles,
              "samples_per_cell": samples_per_cell, "filler_file": str(file_path) if file_path else None,
              "threshold": threshold, "max_tokens": max_tokens, "max_model_len": limit,
              "tokenizer": str(source_path), "chat_template": chat, "system_prompt": system_prompt},
    )


def _cell_sample(sid: str, tok: Any, filler: Filler, variant: str, num_needles: int, length: int,
                 depth: float, chat: bool, system_prompt: str | None, rng: random.Random) -> Sample:
    """One prompt: the asked-for needle at ``depth``, any others at random depths."""
    others = [100 * rng.random() for _ in range(num_needles - 1)]
    if variant == "multi-value":
        key = random_keys(rng, 1)[0]
        values = random_values(rng, num_needles)
        needles = [Needle(key, v, MULTI_VALUE_NEEDLE.format(key=key, value=v), d)
                   for v, d in zip(values, [depth, *others])]
        question, expected = MULTI_VALUE_QUESTION.format(key=key), values
    else:
        keys, values = random_keys(rng, num_needles), random_values(rng, num_needles)
        needles = [Needle(k, v, SINGLE_NEEDLE.format(key=k, value=v), d)
                   for k, v, d in zip(keys, values, [depth, *others])]
        question, expected = SINGLE_QUESTION.format(key=keys[0]), values[:1]
    built = build_prompt(tok, filler, length, needles, functools.partial(_render, question=question, chat=chat,
                                                                         system_prompt=system_prompt))
    return Sample(sid, built.prompt, expected, {
        "variant": variant, "length": length, "depth": depth, "key": needles[0].key,
        "prompt_tokens": built.prompt_tokens, "needle_depths": list(built.depths),
        "needles": [{"key": n.key, "value": n.value} for n in needles],
        "filler_sentences": built.filler_sentences,
    })


def score_recall(output: str, sample: Sample) -> Score:
    """Recall of the sample's values; ``answer`` lists those found (None if none)."""
    found = found_values(output, sample.target)
    return Score(len(found) / len(sample.target), found or None)


def summarize(records: Sequence[SampleRecord], skipped: Sequence[dict[str, Any]],
              threshold: float = DEFAULT_THRESHOLD) -> dict[str, Any]:
    """Recall per cell, per length and per depth, the effective context length and
    the skipped cells.

    Per-length and per-depth rows are :func:`evalsuite.task.grouped` accuracy rows
    (mean, stderr, 95% interval, n). A failed request counts as recall 0 and is
    counted in its cell's ``errors``.
    """
    by_cell: dict[tuple, list[SampleRecord]] = defaultdict(list)
    for r in records:
        by_cell[(r.metadata["length"], r.metadata["depth"])].append(r)
    cells = [
        {"length": L, "depth": d, "recall": sum(r.scores["recall"].value for r in group) / len(group),
         "n": len(group), "errors": sum(r.error is not None for r in group),
         "prompt_tokens": [r.metadata["prompt_tokens"] for r in group]}
        for (L, d), group in sorted(by_cell.items())
    ]
    by_length = grouped("length").compute(records, "recall")
    return {
        "recall_by_cell": cells,
        "recall_by_length": by_length,
        "recall_by_depth": grouped("depth").compute(records, "recall"),
        "effective_context_length": effective_context_length(
            {int(L): v["value"] for L, v in by_length.items()}, threshold),
        "threshold": threshold,
        "skipped": list(skipped),
        "n_skipped": len(skipped),
    }


def write_heatmap(records: Sequence[SampleRecord], run_dir: Path, grid: tuple[list[int], list],
                  skipped: Sequence[dict[str, Any]], threshold: float, title: str) -> None:
    """Writes ``needle_heatmap.png``: depth (rows, 0% at the top) x length (columns)
    mean recall, drawn by the one heatmap function (:func:`evalsuite.report.plots.heatmap_figure`);
    skipped cells hatched, cells with no record blank."""
    from evalsuite.report.plots import heatmap_figure

    summary = summarize(records, skipped, threshold)
    lengths, depths = grid
    recall = {(c["length"], c["depth"]): c["recall"] for c in summary["recall_by_cell"]}
    values = [[recall.get((L, d)) for L in lengths] for d in depths]
    hatched = {(depths.index(c["depth"]), lengths.index(c["length"])) for c in skipped
               if c["depth"] in depths and c["length"] in lengths}
    fig = heatmap_figure([f"{d}%" for d in depths], [str(L) for L in lengths], values,
                         f"{title}\neffective context length {summary['effective_context_length'] or 'none'} "
                         f"at recall >= {threshold}", xlabel="context length (tokens)", ylabel="needle depth",
                         hatched=hatched)
    fig.savefig(Path(run_dir) / HEATMAP_FILE, dpi=120)
