"""The needle task on the embedded model's real tokenizer (no engine)."""

import math
import re

import pytest

from evalsuite.errors import UsageError
from evalsuite.types import SampleRecord, Score, Timings
from tasks.needle import (
    HEATMAP_FILE,
    default_lengths,
    file_sentences,
    load_tokenizer,
    needle,
    summarize,
)

LENGTHS = [1000, 2048, 4096]
DEPTHS = [0, 25, 50, 90, 100]


@pytest.fixture(scope="module")
def model_path(embedded_model):
    return embedded_model


@pytest.fixture(scope="module")
def tok(model_path):
    return load_tokenizer(model_path)


@pytest.fixture(scope="module", params=["single", "multi-key", "multi-value"])
def built(request, model_path):
    return needle(variant=request.param, lengths=LENGTHS, depths=DEPTHS, model_path=model_path,
                  max_model_len=8192, seed=3)


def chat_tokens(tok, prompt):
    """The count the vLLM backend sees: chat template applied, then encoded."""
    text = tok.apply_chat_template([{"role": m.role, "content": m.content} for m in prompt],
                                   tokenize=False, add_generation_prompt=True)
    return len(tok.encode(text, add_special_tokens=False))


def haystack(sample):
    content = sample.input[-1].content
    return content[content.index("<text>\n") + len("<text>\n"): content.index("\n</text>")]


def test_every_prompt_is_within_one_percent_or_8_tokens_of_its_length(built, tok):
    assert len(built.samples) == len(LENGTHS) * len(DEPTHS)
    for sample in built.samples:
        length = sample.metadata["length"]
        tokens = chat_tokens(tok, sample.input)
        assert tokens == sample.metadata["prompt_tokens"]
        assert length - max(8, math.ceil(0.01 * length)) <= tokens <= length, sample.id


def test_each_needle_appears_exactly_once_at_a_sentence_boundary(built):
    for sample in built.samples:
        text = haystack(sample)
        for n in sample.metadata["needles"]:
            needle_sentence = next(s for s in re.split(r"(?<=\.) ", text) if n["value"] in s)
            assert text.count(needle_sentence) == 1
            assert sample.input[0].content.count(n["value"]) == 1
            before, _, after = text.partition(needle_sentence)
            assert before == "" or before.endswith(". "), sample.id
            assert after == "" or after.startswith(" "), sample.id


def test_the_asked_needle_sits_at_the_requested_depth_within_one_sentence(built, tok):
    def count(s):
        return len(tok.encode(s, add_special_tokens=False)) if s else 0

    for sample in built.samples:
        sentences = re.split(r"(?<=\.) ", haystack(sample))
        needle_texts = {s for s in sentences for n in sample.metadata["needles"] if n["value"] in s}
        target = next(s for s in sentences if sample.metadata["needles"][0]["value"] in s)
        filler = [s for s in sentences if s not in needle_texts]
        before = [s for s in sentences[: sentences.index(target)] if s not in needle_texts]
        total, ahead = count(" ".join(filler)), count(" ".join(before))
        longest = max(count(" " + s) for s in filler)
        assert abs(ahead - sample.metadata["depth"] / 100 * total) <= longest, sample.id


def test_variants_ask_for_the_right_values(built):
    sample = built.samples[0]
    needles = sample.metadata["needles"]
    question = sample.input[0].content.rsplit("\n", 1)[-1]
    assert needles[0]["key"] in question
    if sample.id.startswith("multi-value"):
        assert len(needles) == 4 and len({n["key"] for n in needles}) == 1
        assert sample.target == [n["value"] for n in needles]
    elif sample.id.startswith("multi-key"):
        assert len(needles) == 4 and len({n["key"] for n in needles}) == 4
        assert sample.target == [needles[0]["value"]]
        assert all(n["key"] not in question for n in needles[1:])
    else:
        assert len(needles) == 1 and sample.target == [needles[0]["value"]]


def test_the_scorer_gives_recall_of_the_asked_values(built):
    sample = built.samples[0]
    scorer = built.scorers[0]
    assert scorer.name == "recall"
    assert scorer.score(f"It is {sample.target[0]}.", sample).value == 1 / len(sample.target)
    miss = scorer.score("I could not find it.", sample)
    assert miss.value == 0.0 and miss.answer is None


def test_a_system_prompt_is_built_in_and_counted(model_path, tok):
    t = needle(lengths=[1024], depths=[50], model_path=model_path, max_model_len=8192,
               system_prompt="You are a careful reader.")
    sample = t.samples[0]
    assert [m.role for m in sample.input] == ["system", "user"]
    assert chat_tokens(tok, sample.input) == sample.metadata["prompt_tokens"]
    assert 1024 - 11 <= sample.metadata["prompt_tokens"] <= 1024


def test_same_seed_same_prompts_other_seed_other_prompts(model_path):
    a = needle(lengths=[1024], depths=[50], model_path=model_path, max_model_len=8192, seed=1)
    b = needle(lengths=[1024], depths=[50], model_path=model_path, max_model_len=8192, seed=1)
    c = needle(lengths=[1024], depths=[50], model_path=model_path, max_model_len=8192, seed=2)
    assert a.samples[0].input == b.samples[0].input
    assert a.samples[0].input != c.samples[0].input


def test_a_cell_one_token_over_the_limit_is_skipped(model_path):
    kwargs = {"lengths": [1024], "depths": [50], "model_path": model_path, "max_tokens": 16, "seed": 0}
    prompt_tokens = needle(max_model_len=8192, **kwargs).samples[0].metadata["prompt_tokens"]

    fits = needle(max_model_len=prompt_tokens + 16, **kwargs)
    assert [s.metadata["prompt_tokens"] for s in fits.samples] == [prompt_tokens]
    assert fits.aggregate([])["n_skipped"] == 0

    over = needle(max_model_len=prompt_tokens + 15, **kwargs)
    assert over.samples == []
    summary = over.aggregate([])
    assert summary["n_skipped"] == 1
    assert summary["skipped"][0] == {
        "id": "single-L1024-D50-s0", "length": 1024, "depth": 50, "sample": 0,
        "prompt_tokens": prompt_tokens, "max_tokens": 16, "max_model_len": prompt_tokens + 15,
    }


def test_max_model_len_defaults_to_the_model_config(model_path):
    # SmolLM2's config holds 8,192 positions: 8,192 prompt tokens + 32 new ones cannot fit.
    t = needle(lengths=[1024, 8192], depths=[0, 100], model_path=model_path)
    assert [s.metadata["length"] for s in t.samples] == [1024, 1024]
    skipped = t.aggregate([])["skipped"]
    assert [(s["length"], s["depth"], s["max_model_len"]) for s in skipped] == [(8192, 0, 8192), (8192, 100, 8192)]
    assert t.args["max_model_len"] == 8192


def test_default_grid_ends_at_the_longest_prompt_that_fits():
    assert default_lengths(8192, 32) == [1024, 2048, 4096, 8160]
    assert default_lengths(131072, 64)[-2:] == [65536, 131008]
    assert default_lengths(1000, 32) == [968]


def test_filler_from_a_file(model_path, tmp_path):
    path = tmp_path / "filler.txt"
    path.write_text("The river ran past the town. Children played by the water!\n\n"
                    "Was it late? The lamps were lit at dusk.\n")
    assert file_sentences(path) == ["The river ran past the town.", "Children played by the water!",
                                    "Was it late?", "The lamps were lit at dusk."]
    t = needle(lengths=[512], depths=[50], model_path=model_path, max_model_len=8192, filler_file=str(path))
    text = haystack(t.samples[0])
    value = t.samples[0].target[0]
    allowed = set(file_sentences(path))
    assert all(s in allowed or value in s for s in re.split(r"(?<=[.!?]) ", text))
    assert t.data_files == (path,)


@pytest.mark.parametrize("kwargs, message", [
    ({"variant": "multi"}, "variant: should be 'single', 'multi-key' or 'multi-value'"),
    ({"depths": [-5]}, "depths must be in"),
    ({"depths": [101]}, "depths must be in"),
    ({"lengths": []}, "lengths is empty"),
    ({"lengths": "abc"}, "list of numbers"),
    ({"lengths": [0]}, "positive"),
    ({"lengths": [50]}, "shorter than the prompt"),
    ({"variant": "single", "num_needles": 3}, "exactly one needle"),
    ({"variant": "multi-key", "num_needles": 1}, "num_needles"),
    ({"samples_per_cell": 0}, "samples_per_cell"),
    ({"threshold": 1.5}, "threshold"),
    ({"filler_file": "/nonexistent/filler.txt"}, "filler file not found"),
])
def test_bad_arguments_are_usage_errors(model_path, kwargs, message):
    with pytest.raises(UsageError, match=message):
        needle(**{"lengths": [1024], "depths": [0], **kwargs}, model_path=model_path, max_model_len=8192)


def test_lengths_and_depths_accept_cli_strings(model_path):
    t = needle(lengths="[1024, 512]", depths="0,100", model_path=model_path, max_model_len=8192)
    assert t.args["lengths"] == [512, 1024] and t.args["depths"] == [0, 100]


def _record(length, depth, recall, error=None):
    return SampleRecord(
        task="needle", sample_id=f"single-L{length}-D{depth}-s0", repeat=0, prompt="", output="",
        target=["1"], scores={"recall": Score(recall, ["1"] if recall else None)}, prompt_tokens=length,
        output_tokens=1, finish_reason="stop", timings=Timings(), error=error,
        metadata={"length": length, "depth": depth, "prompt_tokens": length},
    )


def test_summary_by_cell_length_and_depth():
    records = [_record(1000, 0, 1.0), _record(1000, 100, 1.0), _record(2000, 0, 1.0), _record(2000, 100, 0.0, "boom"),
               _record(4000, 0, 1.0), _record(4000, 100, 1.0)]
    skipped = [{"id": "x", "length": 8000, "depth": 0, "prompt_tokens": None}]
    s = summarize(records, skipped, threshold=0.85)
    assert [(c["length"], c["depth"], c["recall"], c["errors"]) for c in s["recall_by_cell"]] == [
        (1000, 0, 1.0, 0), (1000, 100, 1.0, 0), (2000, 0, 1.0, 0), (2000, 100, 0.0, 1), (4000, 0, 1.0, 0),
        (4000, 100, 1.0, 0)]
    assert {L: v["value"] for L, v in s["recall_by_length"].items()} == {"1000": 1.0, "2000": 0.5, "4000": 1.0}
    assert s["recall_by_length"]["2000"]["n"] == 2
    assert {d: v["value"] for d, v in s["recall_by_depth"].items()} == {"0": 1.0, "100": 2 / 3}
    assert s["effective_context_length"] == 1000   # 2000 drops to 0.5, so 4000 does not count
    assert s["skipped"] == skipped and s["n_skipped"] == 1
    assert summarize(records, [], threshold=0.5)["effective_context_length"] == 4000


def test_heatmap_is_written_into_the_run_directory(model_path, tmp_path):
    t = needle(lengths=[1024, 8192], depths=[0, 100], model_path=model_path, max_model_len=8192)
    t.write_artifacts([_record(1024, 0, 1.0), _record(1024, 100, 0.0)], tmp_path)
    data = (tmp_path / HEATMAP_FILE).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    height, width, _ = matplotlib.image.imread(tmp_path / HEATMAP_FILE).shape
    assert width > 100 and height > 100
