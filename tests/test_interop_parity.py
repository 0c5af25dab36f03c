"""GSM8K parity with lm-evaluation-harness: prompts, filters, comparison (no engine)."""

from __future__ import annotations

import json

import pytest

from evalsuite.cli import main
from evalsuite.interop.parity import (
    FILTERS,
    ParitySample,
    compare,
    evalsuite_samples,
    format_report,
    reference_samples,
)
from tasks.gsm8k import (
    FEWSHOT_STOP,
    gsm8k,
    lm_eval_flexible_extract,
    lm_eval_normalize,
    lm_eval_strict_match,
)

OUTPUTS = [
    " She has 3 + 4 = <<3+4=7>>7 apples.\n#### 7",
    " The total is $1,000.",
    " #### 72.00",
    " #### 18\nQuestion: Bob has 2 apples.\nAnswer: 2 + 3 = 5\n#### 5",
    " It costs -3 dollars, or 4.5 per day.",
    " no digits",
    " 5",
    " 1,234.5.",
]


@pytest.fixture(scope="module")
def lm_eval_gsm8k(tmp_path_factory, gsm8k_data_dir):
    pytest.importorskip("lm_eval")
    from evalsuite.interop.parity import lm_eval_task, write_lm_eval_gsm8k

    folder = tmp_path_factory.mktemp("lm_eval_tasks")
    write_lm_eval_gsm8k(folder, gsm8k_data_dir)
    return lm_eval_task(folder)


def test_local_task_is_lm_evals_gsm8k_on_local_files(lm_eval_gsm8k):
    config = lm_eval_gsm8k.config
    assert config.dataset_path == "json"
    assert config.num_fewshot == 5
    assert config.doc_to_text == "Question: {{question}}\nAnswer:"
    assert tuple(config.generation_kwargs["until"]) == FEWSHOT_STOP
    assert [f["name"] for f in config.filter_list] == list(FILTERS)
    assert len(lm_eval_gsm8k.test_docs()) == 1319 and len(lm_eval_gsm8k.training_docs()) == 7473


def test_fewshot_prompts_equal_lm_evals_on_100_items(lm_eval_gsm8k, gsm8k_data_dir):
    """lm-eval's own task object renders the reference prompts (5 shots, seed 1234)."""
    from evalsuite.interop.parity import lm_eval_prompts

    theirs = lm_eval_prompts(lm_eval_gsm8k, limit=100)
    ours = [s.input for s in gsm8k(prompt="fewshot", data_dir=str(gsm8k_data_dir)).samples[:100]]
    assert len(theirs) == 100
    mismatched = [i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b]
    assert mismatched == []
    # Shots are drawn per item, not once for all.
    assert ours[0].split("\n\n")[0] != ours[1].split("\n\n")[0]


def test_fewshot_defaults_follow_lm_eval(gsm8k_data_dir):
    task = gsm8k(prompt="fewshot", data_dir=str(gsm8k_data_dir))
    assert task.args["num_fewshot"] == 5 and task.args["extraction"] == "lm-eval"
    assert task.samples[0].input.count("Question: ") == 6
    assert task.params.max_tokens == 256 and task.params.stop == FEWSHOT_STOP
    cot = gsm8k(data_dir=str(gsm8k_data_dir))
    assert cot.args["extraction"] == "evalsuite" and cot.args["prompt"] == "cot"


def test_lm_eval_filters_by_hand():
    assert [lm_eval_strict_match(o) for o in OUTPUTS] == ["7", None, "72.00", "18", None, None, None, None]
    assert [lm_eval_flexible_extract(o) for o in OUTPUTS] == ["7", "$1,000.", "72.00", "5", "4.5", None, "5", "1,234.5."]
    assert lm_eval_normalize("Natalia sold 48/2 = 24 clips.\n#### 72") == "72"
    assert lm_eval_normalize("$1,000.") == "1000"
    assert lm_eval_normalize("72.00") == "72.00"  # a string comparison: 72.00 is not 72


def test_lm_eval_filters_match_lm_evals_own(lm_eval_gsm8k):
    """Our filters and exact_match against lm-eval's RegexFilter and metric (the reference)."""
    from lm_eval.api.metrics import exact_match_hf_evaluate
    from lm_eval.filters.extraction import RegexFilter

    for spec, ours in zip(lm_eval_gsm8k.config.filter_list, (lm_eval_strict_match, lm_eval_flexible_extract)):
        regex = spec["filter"][0]
        lm_filter = RegexFilter(regex_pattern=regex["regex_pattern"], group_select=regex.get("group_select", 0))
        theirs = [resp[0] for resp in lm_filter.apply([[o] for o in OUTPUTS], [{}] * len(OUTPUTS))]
        assert [a if a is not None else "[invalid]" for a in map(ours, OUTPUTS)] == theirs, spec["name"]
    metric = lm_eval_gsm8k.config.metric_list[0]
    kwargs = {k: metric[k] for k in ("regexes_to_ignore", "ignore_case", "ignore_punctuation")}
    for prediction, reference in [("72.", "so 72\n#### 72"), ("72.00", "#### 72"), ("$1,000", "#### 1000"), ("18", "#### 5")]:
        expected = exact_match_hf_evaluate(predictions=[prediction], references=[reference], **kwargs)["exact_match"]
        assert (lm_eval_normalize(prediction) == lm_eval_normalize(reference)) == bool(expected)


def test_lm_eval_extraction_scores_gold_solutions_right(gsm8k_data_dir):
    task = gsm8k(prompt="fewshot", data_dir=str(gsm8k_data_dir))
    lines = (gsm8k_data_dir / "gsm8k" / "test.jsonl").read_text().splitlines()[:200]
    for scorer in task.scorers:
        verdicts = [scorer.score(" " + json.loads(line)["answer"], s).value for line, s in zip(lines, task.samples)]
        assert sum(verdicts) == 200, scorer.name


def _sample(i, output="#### 7", strict=1.0, prompt="Q"):
    answer = lm_eval_strict_match(output)
    return ParitySample(i, prompt, output, {"strict-match": answer, "flexible-extract": answer},
                        {"strict-match": strict, "flexible-extract": strict})


def test_compare_counts_and_lists_disagreements():
    ours = [_sample(0), _sample(1), _sample(2, output="#### 8", strict=0.0), _sample(3, prompt="Q2")]
    theirs = [_sample(0), _sample(1), _sample(2), _sample(3)]
    report = compare(ours, theirs)
    assert report["n"] == 4
    assert report["prompts_identical"] == 3 and report["outputs_identical"] == 3
    assert report["verdict_agreement"] == {"strict-match": 0.75, "flexible-extract": 0.75}
    assert report["accuracy"]["evalsuite"]["strict-match"] == 0.75
    assert report["accuracy"]["lm_eval"]["strict-match"] == 1.0
    assert [d["index"] for d in report["disagreements"]] == [2, 3]
    assert report["disagreements"][0]["output_first_difference"] == 5
    assert report["disagreements"][1]["prompt_first_difference"] == 1
    report["runs"] = {"evalsuite": {"scores": {}, "engine_s": None, "eval_s": 1.0}}
    report["reference"] = "lm-eval"
    assert "item 2: output, strict-match verdict" in format_report(report)


def test_compare_refuses_different_items():
    with pytest.raises(ValueError, match="different items"):
        compare([_sample(0)], [_sample(1)])


def test_reference_samples_read_lm_evals_logged_rows():
    rows = [
        {"doc_id": 1, "arguments": [["P1", {}]], "resps": [[" #### 3"]], "filtered_resps": ["3"],
         "filter": "strict-match", "exact_match": 1.0},
        {"doc_id": 1, "arguments": [["P1", {}]], "resps": [[" #### 3"]], "filtered_resps": ["3"],
         "filter": "flexible-extract", "exact_match": 1.0},
        {"doc_id": 0, "arguments": [["P0", {}]], "resps": [[" none"]], "filtered_resps": ["[invalid]"],
         "filter": "strict-match", "exact_match": 0.0},
        {"doc_id": 0, "arguments": [["P0", {}]], "resps": [[" none"]], "filtered_resps": ["[invalid]"],
         "filter": "flexible-extract", "exact_match": 0.0},
    ]
    samples = reference_samples(rows)
    assert [s.index for s in samples] == [0, 1]
    assert samples[0].answers == {"strict-match": None, "flexible-extract": None}
    assert samples[1] == ParitySample(1, "P1", " #### 3", {"strict-match": "3", "flexible-extract": "3"},
                                      {"strict-match": 1.0, "flexible-extract": 1.0})


def test_evalsuite_samples_read_samples_jsonl_rows():
    rows = [{"sample_id": "test-10", "prompt": "P", "output": "O",
             "answers": {"strict-match": None, "flexible-extract": "4"},
             "verdicts": {"strict-match": 0.0, "flexible-extract": 1.0}}]
    (s,) = evalsuite_samples(rows)
    assert s.index == 10 and s.answers["flexible-extract"] == "4" and s.verdicts["strict-match"] == 0.0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["parity", "--reference", "helm"], "unknown reference 'helm'"),
        (["parity", "--tasks", "humaneval"], "parity supports --tasks gsm8k"),
        (["parity", "--limit", "0"], "--limit must be a positive integer"),
    ],
)
def test_parity_cli_rejects_bad_input(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err
