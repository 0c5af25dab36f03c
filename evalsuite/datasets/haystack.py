"""Long-context prompts fitted to a token length: seeded filler text with facts
("needles") placed at chosen depths, counted in the target model's own tokens.

Used by the needle task (:mod:`tasks.needle`); any long-context task (RULER-style
variable tracking, multi-hop) can build its prompts the same way. Filler is a
stream of varied natural sentences from a seeded template generator, or the
sentences of a user text file. A built prompt has at most ``length`` tokens after
the chat template is applied and at least ``length`` minus :func:`tolerance`;
a needle's depth is the share of filler tokens before it, met to within one
sentence.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
import random
import re
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalsuite.errors import UsageError
from evalsuite.types import Prompt

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


def random_keys(rng: random.Random, k: int) -> list[str]:
    """``k`` distinct keys such as ``amber-falcon``."""
    pairs = rng.sample(list(itertools.product(_KEY_ADJECTIVES, _KEY_NOUNS)), k)
    return [f"{a}-{n}" for a, n in pairs]


def random_values(rng: random.Random, k: int) -> list[str]:
    """``k`` distinct seven-digit numbers, as strings."""
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


def build_prompt(tokenizer: Any, filler: Filler, length: int, needles: Sequence[Needle],
                 render: Callable[[str], Prompt], max_rounds: int = 6) -> Built:
    """The prompt of one cell: filler sentences up to ``length`` tokens of rendered
    prompt (never more), needles placed at their depths; ``render`` turns the
    haystack text into the whole prompt (instructions and question around it).

    The filler's token count comes from the per-sentence counts; the rendered
    prompt is encoded in full only to confirm the count and correct the estimate
    (tokens can merge where sentences meet the template) for the next round.
    Raises UsageError when ``length`` is shorter than the prompt without filler,
    or when the filler's sentences cannot come within :func:`tolerance` of it.
    """
    from evalsuite.backends import render_prompt

    def count(chosen: Sequence[int]) -> tuple[int, Prompt, tuple[float, ...]]:
        haystack, depths = _assemble(filler, chosen, needles)
        prompt = render(haystack)
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


# --- the model's tokenizer and context -------------------------------------------
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
