"""Needle in a haystack: retrieve facts hidden at chosen depths in long filler text.

No dataset: every prompt is generated from the run seed. Filler is a stream of
varied natural sentences from a seeded template generator, or the sentences of a
user text file (``filler_file``, cycled when short). Needles are sentences of the
form "The secret number for amber-falcon is 4829173." inserted as text at
sentence boundaries; the question at the end asks for the value(s). The design
follows Kamradt's needle test (github.com/gkamradt/LLMTest_NeedleInAHaystack,
2023) over a length x depth grid, with RULER's multi-key and multi-value needles
(Hsieh et al., 2024, arXiv:2404.06654).

Lengths count the whole prompt in the target model's own tokens, after its chat
template is applied (as the vLLM backend renders it): every built prompt has at
most ``length`` tokens and at least ``length`` minus max(8, 1%). Depth is the
share of filler tokens before the needle, 0 (start) to 100 (end), met to within
one sentence.

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

import bisect
import functools
import itertools
import json
import math
import random
import re
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalsuite.errors import UsageError
from evalsuite.metrics import accuracy
from evalsuite.scoring.needle import DEFAULT_THRESHOLD, effective_context_length, found_values
from evalsuite.task import Scorer, Task, task
from evalsuite.types import Message, Prompt, Sample, SampleRecord, SamplingParams, Score

VERSION = "1"
VARIANTS = ("single", "multi-key", "multi-value")
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

# --- filler: a seeded generator of plain sentences --------------------------------
# No digits and none of the key words below, so filler never looks like a needle.
_SUBJECTS = (
    "the old lighthouse keeper", "a young baker", "the village teacher", "my grandmother",
    "a travelling musician", "the ferry captain", "two curious children", "the night watchman",
    "a retired sailor", "the librarian", "a quiet gardener", "the blacksmith's apprentice",
    "the mayor's cousin", "a tired shepherd", "the postman", "an elderly painter",
    "the innkeeper", "a group of students", "the carpenter", "our neighbour",
)
_VERBS = (  # base, past, third person
    ("repair", "repaired", "repairs"), ("paint", "painted", "paints"), ("carry", "carried", "carries"),
    ("find", "found", "finds"), ("sell", "sold", "sells"), ("borrow", "borrowed", "borrows"),
    ("polish", "polished", "polishes"), ("forget", "forgot", "forgets"), ("describe", "described", "describes"),
    ("photograph", "photographed", "photographs"), ("hide", "hid", "hides"), ("clean", "cleaned", "cleans"),
    ("mend", "mended", "mends"), ("deliver", "delivered", "delivers"), ("study", "studied", "studies"),
    ("sketch", "sketched", "sketches"), ("wrap", "wrapped", "wraps"), ("admire", "admired", "admires"),
)
_OBJECTS = (
    "a wooden boat", "the copper kettle", "an old map of the coast", "a basket of pears",
    "the broken gate", "a letter from a distant cousin", "the blue umbrella", "a pile of firewood",
    "the church bell", "a box of faded photographs", "the kitchen clock", "a pair of leather boots",
    "the fishing nets", "a jar of honey", "the garden wall", "a stack of library books",
    "the iron lantern", "a woollen blanket", "the village well", "a crate of apples",
)
_PLACES = (
    "near the harbour", "behind the mill", "on the hill road", "in the market square",
    "beside the river", "at the edge of the forest", "under the stone bridge", "in the back room of the inn",
    "next to the bakery", "on the station platform", "inside the old barn", "along the sea wall",
    "at the top of the stairs", "by the chapel door", "in the orchard", "outside the school",
)
_TIMES = (
    "before dawn", "after the storm", "late in the evening", "on a cold morning", "during the festival",
    "at noon", "just after supper", "in the early spring", "on the last day of summer",
    "while the kettle boiled", "as the fog lifted", "long before anyone else was awake",
)
_ADJECTIVES = (
    "strange", "familiar", "peaceful", "crowded", "gloomy", "cheerful", "dusty", "gentle",
    "narrow", "noisy", "pale", "sturdy", "weathered", "tidy", "lonely", "bright",
)
_NOUNS = (
    "garden", "bridge", "bell tower", "courtyard", "footpath", "workshop", "market", "pier",
    "attic", "hedge", "chimney", "window", "cottage", "meadow path", "staircase", "fountain",
)
_WEATHER = (
    "the wind picked up", "the fog rolled in", "the rain stopped", "snow began to fall",
    "the clouds parted", "the tide went out", "the sun came out", "a cold breeze arrived",
)
_TEMPLATES = (
    "{Subj} {past} {obj} {place} {time}.",
    "Every week {subj} {third} {obj} {place}.",
    "Nobody expected {subj} to {base} {obj}, yet it happened {time}.",
    "When {weather}, {subj} {past} {obj} and walked home.",
    "The {adj} {noun} {place} was the first thing {subj} noticed {time}.",
    "Some say {subj} once {past} {obj} {place}, though the story changes with each telling.",
    "{Subj} still remembers the {adj} {noun} and how {weather}.",
    "It was {time} that {subj} decided to {base} {obj}.",
    "People in the village agree that the {noun} {place} looks {adj} {time}.",
    "Because {weather}, {subj} left {obj} {place}.",
    "{Subj} rarely talks about the {noun}, but everyone knows it is {adj}.",
    "{Subj} smiled.", "It rained {time}.", "The {noun} was {adj}.", "Nobody complained.",
    "{Subj} waved {time}.", "The {noun} looked {adj}.",
    "According to {subj}, the best place to {base} {obj} is {place}.",
)


def filler_sentences(rng: random.Random) -> Iterator[str]:
    """An endless stream of varied sentences drawn from templates with ``rng``."""
    while True:
        base, past, third = rng.choice(_VERBS)
        subj = rng.choice(_SUBJECTS)
        yield rng.choice(_TEMPLATES).format(
            subj=subj, Subj=subj[0].upper() + subj[1:], base=base, past=past, third=third,
            obj=rng.choice(_OBJECTS), place=rng.choice(_PLACES), time=rng.choice(_TIMES),
            adj=rng.choice(_ADJECTIVES), noun=rng.choice(_NOUNS), weather=rng.choice(_WEATHER),
        )


_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n\s*\n")


def file_sentences(path: Path) -> list[str]:
    """The sentences of a UTF-8 text file, whitespace collapsed, split after ``.!?``
    and at blank lines. Raises UsageError for a missing or empty file."""
    if not path.is_file():
        raise UsageError(f"needle: filler file not found: {path}")
    text = path.read_text(encoding="utf-8", errors="replace")
    sentences = [" ".join(s.split()) for s in _SENTENCE_END.split(text)]
    sentences = [s for s in sentences if s]
    if not sentences:
        raise UsageError(f"needle: filler file {path} has no text")
    return sentences


# --- keys and values --------------------------------------------------------------
_KEY_ADJECTIVES = (
    "amber", "silent", "crimson", "frozen", "hollow", "velvet", "rusty", "golden", "restless",
    "ancient", "bitter", "brave", "scarlet", "silver", "hidden", "wild", "misty", "swift",
)
_KEY_NOUNS = (
    "falcon", "compass", "orchid", "glacier", "harp", "otter", "canyon", "comet", "walrus",
    "beacon", "thistle", "badger", "lagoon", "quiver", "dragon", "pebble", "sparrow", "tundra",
)


def _keys(rng: random.Random, k: int) -> list[str]:
    pairs = rng.sample(list(itertools.product(_KEY_ADJECTIVES, _KEY_NOUNS)), k)
    return [f"{a}-{n}" for a, n in pairs]


def _values(rng: random.Random, k: int) -> list[str]:
    return [str(v) for v in rng.sample(range(1_000_000, 10_000_000), k)]


# --- building one prompt ----------------------------------------------------------
@dataclass(frozen=True)
class Filler:
    """Filler sentences with their token counts, each counted with a leading space
    as it appears inside the haystack; ``cum[i]`` is the tokens of the first ``i``."""

    sentences: list[str]
    tokens: list[int]
    cum: list[int]


def build_filler(source: Iterator[str], tokenizer: Any, min_tokens: int, chunk: int = 1024) -> Filler:
    """Takes sentences from ``source`` until they hold ``min_tokens`` tokens (plus
    one chunk to pick short sentences from); each sentence is encoded once, in
    batches, never the growing text."""
    sentences: list[str] = []
    tokens: list[int] = []
    cum = [0]
    while len(sentences) < chunk or cum[-1 - chunk] < min_tokens:
        batch = list(itertools.islice(source, chunk))
        if not batch:
            break
        for s, ids in zip(batch, tokenizer([" " + s for s in batch], add_special_tokens=False)["input_ids"]):
            sentences.append(s)
            tokens.append(len(ids))
            cum.append(cum[-1] + len(ids))
    return Filler(sentences, tokens, cum)


@dataclass(frozen=True)
class Needle:
    key: str
    value: str
    text: str
    depth: float  # percent of filler tokens before it


@dataclass(frozen=True)
class Built:
    prompt: Prompt
    prompt_tokens: int
    depths: tuple[float, ...]  # achieved depth of each needle, percent of filler tokens
    filler_sentences: int


def tolerance(length: int) -> int:
    """How far below ``length`` a built prompt may fall: max(8, 1%) tokens."""
    return max(8, math.ceil(0.01 * length))


def _render(haystack: str, question: str, chat: bool, system_prompt: str | None = None) -> Prompt:
    content = f"{INTRO}\n\n<text>\n{haystack}\n</text>\n\n{question}"
    if not chat:
        return content + "\nAnswer:"
    system = (Message("system", system_prompt),) if system_prompt is not None else ()
    return (*system, Message("user", content))


def _plan(filler: Filler, budget: int, scan: int = 1024) -> list[int]:
    """Sentence indices holding at most ``budget`` tokens: the longest prefix of the
    stream, then later sentences short enough to fill the rest of the gap."""
    n = bisect.bisect_right(filler.cum, budget) - 1
    chosen = list(range(n))
    gap = budget - filler.cum[n]
    for k in range(n, min(n + scan, len(filler.sentences))):
        if gap == 0:
            break
        if filler.tokens[k] <= gap:
            chosen.append(k)
            gap -= filler.tokens[k]
    return chosen


def _boundary(cum: Sequence[int], depth: float) -> int:
    """The sentence boundary (0..len(cum)-1) whose tokens before it are closest to
    ``depth`` percent of ``cum[-1]``."""
    goal = depth / 100 * cum[-1]
    i = bisect.bisect_left(cum, goal)
    if i == len(cum):
        return i - 1
    if i > 0 and goal - cum[i - 1] <= cum[i] - goal:
        return i - 1
    return i


def _assemble(filler: Filler, chosen: Sequence[int], needles: Sequence[Needle]) -> tuple[str, tuple[float, ...]]:
    cum = [0, *itertools.accumulate(filler.tokens[k] for k in chosen)]
    at: dict[int, list[str]] = defaultdict(list)
    depths = []
    for needle in needles:
        b = _boundary(cum, needle.depth)
        at[b].append(needle.text)
        depths.append(100 * cum[b] / cum[-1] if cum[-1] else 0.0)
    pieces: list[str] = []
    for i in range(len(chosen) + 1):
        pieces.extend(at.get(i, ()))
        if i < len(chosen):
            pieces.append(filler.sentences[chosen[i]])
    return " ".join(pieces), tuple(depths)


def build_prompt(tokenizer: Any, filler: Filler, length: int, needles: Sequence[Needle], question: str,
                 chat: bool = True, system_prompt: str | None = None, max_rounds: int = 6) -> Built:
    """The prompt of one cell: filler sentences up to ``length`` tokens of rendered
    prompt (never more), needles placed at their depths.

    The filler's token count comes from the per-sentence counts; the rendered
    prompt is encoded in full only to confirm the count and correct the estimate
    (tokens can merge where sentences meet the template) for the next round.
    Raises UsageError when ``length`` is shorter than the prompt without filler,
    or when the filler's sentences cannot come within :func:`tolerance` of it.
    """
    from evalsuite.backends import render_prompt

    def count(chosen: Sequence[int]) -> tuple[int, Prompt, tuple[float, ...]]:
        haystack, depths = _assemble(filler, chosen, needles)
        prompt = _render(haystack, question, chat, system_prompt)
        return len(render_prompt(tokenizer, prompt)[1]), prompt, depths

    fixed = count([])[0]
    if fixed > length:
        raise UsageError(f"needle: length {length} is shorter than the prompt without filler ({fixed} tokens)")
    best: Built | None = None
    error, seen = 0, set()
    for _ in range(max_rounds):
        chosen = _plan(filler, length - fixed - error)
        if tuple(chosen) in seen:
            break
        seen.add(tuple(chosen))
        tokens, prompt, depths = count(chosen)
        if tokens <= length and (best is None or tokens > best.prompt_tokens):
            best = Built(prompt, tokens, depths, len(chosen))
        if tokens == length:
            break
        error += tokens - length
    if best is None or length - best.prompt_tokens > tolerance(length):
        got = "none" if best is None else best.prompt_tokens
        raise UsageError(f"needle: cannot build a {length}-token prompt within {tolerance(length)} tokens "
                         f"(best {got}); the filler's sentences may be too long")
    return best


# --- the task ----------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def load_tokenizer(path: str) -> Any:
    """The model's tokenizer (``transformers.AutoTokenizer``), cached per path.
    Raises UsageError when it cannot be loaded."""
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path)
    except Exception as e:  # noqa: BLE001 -- missing files, hub offline, bad format: one fix
        raise UsageError(f"needle: cannot load the tokenizer from {path} ({type(e).__name__}); "
                         "pass needle.tokenizer=DIR") from None


def model_context_length(path: str) -> int:
    """``max_position_embeddings`` from the model's config (rope scaling applied by
    the engine is not seen here: pass ``--max-model-len`` with YaRN overrides)."""
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(path)
    except Exception as e:  # noqa: BLE001 -- any failure here has the same fix
        raise UsageError(f"needle: cannot read the model config at {path} ({type(e).__name__}); "
                         "pass --max-model-len") from None
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    value = getattr(config, "max_position_embeddings", None)
    if not value:
        raise UsageError(f"needle: the model config at {path} gives no context length; pass --max-model-len")
    return int(value)


def _int_list(name: str, value: Any) -> list[int | float]:
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip().startswith("[") else value.split(",")
        except json.JSONDecodeError:
            raise UsageError(f"needle: {name} must be a list of numbers, got {value!r}") from None
    if isinstance(value, (int, float)):
        value = [value]
    try:
        out = [float(v) for v in value]
    except (TypeError, ValueError):
        raise UsageError(f"needle: {name} must be a list of numbers, got {value!r}") from None
    if not out:
        raise UsageError(f"needle: {name} is empty")
    return [int(v) if v == int(v) else v for v in out]


def default_lengths(limit: int, max_tokens: int) -> list[int]:
    """1K, 2K, 4K ... below the limit, then the longest prompt that still fits."""
    top = limit - max_tokens
    lengths = []
    length = SHORTEST_DEFAULT_LENGTH
    while length < top:
        lengths.append(length)
        length *= 2
    return lengths + [top]


@task("needle")
def needle(
    variant: str = "single",
    lengths: Any = None,
    depths: Any = None,
    num_needles: int | None = None,
    samples_per_cell: int = 1,
    filler_file: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    max_tokens: int | None = None,
    tokenizer: str | None = None,
    system_prompt: str | None = None,
    model_path: str | None = None,
    max_model_len: int | None = None,
    seed: int = 0,
) -> Task:
    """Needle retrieval over a ``lengths`` x ``depths`` grid.

    Args:
        variant: ``single``, ``multi-key`` or ``multi-value``.
        lengths: prompt lengths in model tokens (list, JSON list or comma string);
            default 1024, 2048, ... below the limit, then the longest that fits.
        depths: needle depths in percent of the filler, 0 to 100; default 0, 10 ... 100.
        num_needles: keys (multi-key) or values (multi-value); default 4; 1 for single.
        samples_per_cell: prompts per cell, each with its own filler, keys and values.
        filler_file: a UTF-8 text file whose sentences replace the generated filler.
        threshold: recall a length must keep for the effective context length.
        max_tokens: new tokens per answer, used by the fit guard (default 32, or
            64 for multi-value); pass the same value as the run's ``--max-tokens``.
        tokenizer: where to load the tokenizer from (default ``model_path``).
        system_prompt: a system message built into each prompt (and counted); the
            run's ``--system-prompt`` is not seen by the task, so pass it here.
        model_path, max_model_len, seed: given by the runner. ``max_model_len`` None
            means the model config's ``max_position_embeddings``.

    Raises UsageError for a bad argument, a missing filler file or a tokenizer that
    cannot be loaded.
    """
    if variant not in VARIANTS:
        raise UsageError(f"needle: unknown variant {variant!r} (use one of {', '.join(VARIANTS)})")
    if num_needles is None:
        num_needles = 1 if variant == "single" else 4
    if variant == "single" and num_needles != 1:
        raise UsageError("needle: the single variant has exactly one needle (use multi-key or multi-value)")
    if variant != "single" and not 2 <= num_needles <= 64:
        raise UsageError(f"needle: num_needles must be 2 to 64 for {variant}, got {num_needles}")
    if samples_per_cell < 1:
        raise UsageError(f"needle: samples_per_cell must be >= 1, got {samples_per_cell}")
    if not 0 <= threshold <= 1:
        raise UsageError(f"needle: threshold must be in [0, 1], got {threshold}")
    max_tokens = max_tokens or (64 if variant == "multi-value" else 32)
    if max_tokens < 1:
        raise UsageError(f"needle: max_tokens must be >= 1, got {max_tokens}")
    source_path = tokenizer or model_path
    if source_path is None:
        raise UsageError("needle needs the model's tokenizer; pass --model or needle.tokenizer=DIR")
    limit = int(max_model_len) if max_model_len else model_context_length(str(model_path or source_path))
    grid_lengths = sorted({int(v) for v in _int_list("lengths", lengths)}) if lengths is not None \
        else default_lengths(limit, max_tokens)
    grid_depths = sorted(set(_int_list("depths", depths if depths is not None else list(DEFAULT_DEPTHS))))
    if any(v < 1 for v in grid_lengths):
        raise UsageError(f"needle: lengths must be positive, got {grid_lengths}")
    if any(not 0 <= d <= 100 for d in grid_depths):
        raise UsageError(f"needle: depths must be in [0, 100], got {grid_depths}")
    file_path = Path(filler_file).expanduser() if filler_file else None
    file_text = file_sentences(file_path) if file_path else None
    tok = load_tokenizer(str(source_path))
    chat = bool(getattr(tok, "chat_template", None))

    samples: list[Sample] = []
    skipped: list[dict[str, Any]] = []
    buildable = [L for L in grid_lengths if L - tolerance(L) + max_tokens <= limit]
    for s in range(samples_per_cell):
        if file_text is not None:
            start = random.Random(f"{seed}:filler:{s}").randrange(len(file_text))
            source = itertools.islice(itertools.cycle(file_text), start, None)
        else:
            source = filler_sentences(random.Random(f"{seed}:filler:{s}"))
        filler = build_filler(source, tok, max(buildable, default=0) + 256)
        for length, depth in itertools.product(grid_lengths, grid_depths):
            sid = f"{variant}-L{length}-D{depth}-s{s}"
            cell = {"id": sid, "length": length, "depth": depth, "sample": s,
                    "max_tokens": max_tokens, "max_model_len": limit}
            if length not in buildable:
                skipped.append({**cell, "prompt_tokens": None})
                continue
            sample = _cell_sample(sid, tok, filler, variant, num_needles, length, depth,
                                  chat, system_prompt, random.Random(f"{seed}:{sid}"))
            if sample.metadata["prompt_tokens"] + max_tokens > limit:
                skipped.append({**cell, "prompt_tokens": sample.metadata["prompt_tokens"]})
                continue
            samples.append(sample)

    def aggregate(records: Sequence[SampleRecord]) -> dict[str, Any]:
        return summarize(records, skipped, threshold)

    def write_artifacts(records: Sequence[SampleRecord], run_dir: Path) -> None:
        summary = summarize(records, skipped, threshold)
        figure = recall_heatmap(summary["recall_by_cell"], grid_lengths, grid_depths, skipped,
                                title=f"Needle recall ({variant}); effective context length "
                                      f"{summary['effective_context_length'] or 'none'} "
                                      f"at recall >= {threshold}")
        figure.savefig(Path(run_dir) / HEATMAP_FILE, dpi=120)

    return Task(
        name="needle",
        version=VERSION,
        samples=samples,
        scorers=(Scorer("recall", score_recall, primary=True),),
        params=SamplingParams(max_tokens=max_tokens),
        aggregate=aggregate,
        write_artifacts=write_artifacts,
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
        key = _keys(rng, 1)[0]
        values = _values(rng, num_needles)
        needles = [Needle(key, v, MULTI_VALUE_NEEDLE.format(key=key, value=v), d)
                   for v, d in zip(values, [depth, *others])]
        question, expected = MULTI_VALUE_QUESTION.format(key=key), values
    else:
        keys, values = _keys(rng, num_needles), _values(rng, num_needles)
        needles = [Needle(k, v, SINGLE_NEEDLE.format(key=k, value=v), d)
                   for k, v, d in zip(keys, values, [depth, *others])]
        question, expected = SINGLE_QUESTION.format(key=keys[0]), values[:1]
    built = build_prompt(tok, filler, length, needles, question, chat, system_prompt)
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

    Per-length and per-depth rows are :func:`evalsuite.metrics.accuracy` rows
    (mean, stderr, 95% interval, n). A failed request counts as recall 0 and is
    counted in its cell's ``errors``.
    """
    by_cell: dict[tuple, list[SampleRecord]] = defaultdict(list)
    for r in records:
        by_cell[(r.metadata["length"], r.metadata["depth"])].append(r)

    def row(group: Sequence[SampleRecord]) -> dict[str, Any]:
        return accuracy([r.scores["recall"].value for r in group], [r.scores["recall"].extracted for r in group])

    cells = [
        {"length": L, "depth": d, "recall": sum(r.scores["recall"].value for r in group) / len(group),
         "n": len(group), "errors": sum(r.error is not None for r in group),
         "prompt_tokens": [r.metadata["prompt_tokens"] for r in group]}
        for (L, d), group in sorted(by_cell.items())
    ]
    by_length: dict[int, list[SampleRecord]] = defaultdict(list)
    by_depth: dict[float, list[SampleRecord]] = defaultdict(list)
    for r in records:
        by_length[r.metadata["length"]].append(r)
        by_depth[r.metadata["depth"]].append(r)
    length_rows = {L: row(g) for L, g in sorted(by_length.items())}
    return {
        "recall_by_cell": cells,
        "recall_by_length": {str(L): v for L, v in length_rows.items()},
        "recall_by_depth": {str(d): row(g) for d, g in sorted(by_depth.items())},
        "effective_context_length": effective_context_length(
            {L: v["value"] for L, v in length_rows.items()}, threshold),
        "threshold": threshold,
        "skipped": list(skipped),
        "n_skipped": len(skipped),
    }


def recall_heatmap(cells: Sequence[dict[str, Any]], lengths: Sequence[int], depths: Sequence[float],
                   skipped: Sequence[dict[str, Any]] = (), title: str = "Needle recall"):
    """Depth (rows, 0% at the top) x length (columns) heatmap of mean recall.

    ``cells``: dicts with ``length``, ``depth`` and ``recall`` (0..1). Skipped
    cells are hatched grey and marked "skip"; cells with no record stay blank.
    Returns a ``matplotlib.figure.Figure`` drawn on the Agg canvas (no display).
    """
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    col = {L: i for i, L in enumerate(lengths)}
    row = {d: i for i, d in enumerate(depths)}
    grid = np.full((len(depths), len(lengths)), np.nan)
    for c in cells:
        if c["length"] in col and c["depth"] in row:
            grid[row[c["depth"]], col[c["length"]]] = c["recall"]
    fig = Figure(figsize=(1.1 * len(lengths) + 2.5, 0.45 * len(depths) + 1.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(grid), vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
    for (i, j), value in np.ndenumerate(grid):
        if not np.isnan(value):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8)
    for s in {(s["length"], s["depth"]) for s in skipped}:
        if s[0] in col and s[1] in row:
            j, i = col[s[0]], row[s[1]]
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="0.85", hatch="//", edgecolor="0.6"))
            ax.text(j, i, "skip", ha="center", va="center", fontsize=7, color="0.3")
    ax.set_xticks(range(len(lengths)), [str(L) for L in lengths], rotation=45)
    ax.set_yticks(range(len(depths)), [f"{d}%" for d in depths])
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("needle depth")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, label="recall")
    fig.tight_layout()
    return fig
