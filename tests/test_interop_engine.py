"""lm-eval interop on the real vLLM CPU engine: GSM8K parity and exported tasks.

evalsuite's side uses the shared ``vllm_backend`` engine; lm-eval's side builds
its own vLLM model (lm-eval's backend, the same model and settings), which this
issue requires. Small item counts keep the generation under a minute.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.engine

PARITY_ITEMS = 5
EXPORT_ITEMS = 3
EXPORT_MAX_TOKENS = 96


@pytest.fixture(scope="module")
def lm_eval_vllm(embedded_model):
    pytest.importorskip("lm_eval")
    pytest.importorskip("vllm")
    from evalsuite.interop.parity import close_lm_eval_vllm, open_lm_eval_vllm

    lm = open_lm_eval_vllm(_settings(embedded_model))
    yield lm
    close_lm_eval_vllm(lm)


def _settings(model):
    from evalsuite.interop.parity import EngineSettings

    # The shared fixture's engine settings (tests/conftest.py).
    return EngineSettings(model=model, max_model_len=8192, dtype="float32", seed=0, enforce_eager=True)


def test_gsm8k_parity_with_lm_evals_own_task(vllm_backend, lm_eval_vllm, embedded_model, gsm8k_data_dir, tmp_path):
    from evalsuite.interop.parity import run_parity

    out = tmp_path / "parity"
    report = run_parity(_settings(embedded_model), gsm8k_data_dir, PARITY_ITEMS, out,
                        backend=vllm_backend, lm=lm_eval_vllm)
    assert report["n"] == PARITY_ITEMS
    assert report["prompts_identical"] == PARITY_ITEMS
    # Greedy outputs can still part where two near-tied tokens flip: lm-eval sorts its batch
    # by length, so chunked prefill groups tokens differently (80/100 identical on 100 items).
    assert report["outputs_identical"] >= 1
    assert min(report["verdict_agreement"].values()) >= (PARITY_ITEMS - 1) / PARITY_ITEMS
    for row in report["disagreements"]:  # an identical output always gets identical verdicts
        assert not row["output_equal"] or all(row["verdict_equal"].values())
    assert (out / "parity.json").is_file() and (out / "lm_eval" / "samples.jsonl").is_file()


def test_exported_tasks_give_evalsuites_accuracy_under_lm_eval(vllm_backend, lm_eval_vllm, run_with):
    """The same samples through lm-eval (its CLI's simple_evaluate, chat template on) and
    through evalsuite's runner: the same prompts, and the same verdicts for the same outputs
    (then the same accuracy)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from evalsuite.interop.export import TASKS_DIR
    from evalsuite.interop.vllm_dist import vllm_alias
    from evalsuite.results.store import read_samples

    names = ("equations", "json_extraction")
    ours = run_with(vllm_backend, names, limit=EXPORT_ITEMS, max_tokens=EXPORT_MAX_TOKENS)
    with vllm_alias():
        theirs = lm_eval.simple_evaluate(
            model=lm_eval_vllm, tasks=[f"evalsuite_{n}" for n in names],
            task_manager=TaskManager(include_path=str(TASKS_DIR), include_defaults=False),
            limit=EXPORT_ITEMS, apply_chat_template=True, log_samples=True, bootstrap_iters=0,
            gen_kwargs={"max_gen_toks": EXPORT_MAX_TOKENS},
        )
    rows = read_samples(ours.run_dir)
    for name in names:
        ours_by_id = {r["sample_id"]: r for r in rows if r["task"] == name}
        logged = theirs["samples"][f"evalsuite_{name}"]
        assert sorted(s["doc"]["id"] for s in logged) == sorted(ours_by_id)
        same = 0
        for s in logged:
            mine = ours_by_id[s["doc"]["id"]]
            assert s["arguments"][0][0] == mine["prompt"]  # the chat-templated prompt, byte for byte
            if s["resps"][0][0] == mine["output"]:
                same += 1
                assert {m: s[m] for m in mine["verdicts"]} == mine["verdicts"], (name, s["doc"]["id"])
        assert same >= 1, name
        if same == len(logged):
            for metric, row in ours.metrics[name]["scores"].items():
                assert theirs["results"][f"evalsuite_{name}"][f"{metric},none"] == pytest.approx(row["value"])
