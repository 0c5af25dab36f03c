"""math-verify as a second opinion: its verdicts, its bounds, and what a run records.

Real math-verify, real worker processes, the real runner with a scripted backend
(the engine runs are in tests/test_equations_engine.py and tests/test_engine_smoke.py).
"""

import json
import threading

import pytest

from evalsuite.backends.scripted import ScriptedBackend
from evalsuite.scoring import second_opinion as mv
from evalsuite.scoring.equations import VerifierPool
from evalsuite.types import SampleRecord, Score, Timings


@pytest.fixture(scope="module")
def pool():
    with VerifierPool(workers=2, time_limit_s=5.0, preload=("sympy", "evalsuite.scoring.second_opinion:warm_up")) as p:
        yield p


def test_math_verify_reads_a_plain_final_answer():
    assert mv.math_verify_job("The answer is 18.", "$18$", 2) == {"status": "ok", "verdict": 1.0, "answer": "18"}
    assert mv.math_verify_job("The answer is 17.", "$18$", 2)["verdict"] == 0.0
    assert mv.math_verify_job("no number here", "$18$", 2) == {"status": "ok", "verdict": 0.0, "answer": None}


def test_where_math_verify_misreads_and_evalsuite_does_not():
    """Full-width digits and a Unicode minus sign: math-verify reads nothing (so calls
    a right answer wrong); evalsuite's normalisation reads them."""
    from tasks.gsm8k import flexible_extract

    assert mv.math_verify_job("The answer is \uff13.", "$3$", 2)["verdict"] == 0.0
    assert mv.math_verify_job("The answer is \u221218.", "$-18$", 2)["verdict"] == 0.0
    assert flexible_extract("The answer is \uff13.") == "3"
    assert flexible_extract("The answer is \u221218.") == "-18"


def test_math_verify_cannot_bound_itself_off_the_main_thread():
    """Its timeouts use signal.alarm: in a thread, parse raises instead of answering
    (so evalsuite runs every check on a worker process's main thread)."""
    from math_verify import parse

    caught = []

    def check():
        try:
            parse("$18$")
        except ValueError as e:
            caught.append(str(e))

    t = threading.Thread(target=check)
    t.start()
    t.join()
    assert caught and "threaded environment" in caught[0]


def test_checks_run_from_a_thread_through_the_pool(pool):
    result = []
    t = threading.Thread(target=lambda: result.extend(mv.run(["The answer is 18."], ["$18$"], pool)))
    t.start()
    t.join()
    assert [(o["status"], o["verdict"]) for o in result] == [("ok", 1.0)]


def test_a_check_past_the_limit_is_unavailable_and_the_rest_go_on():
    """A power tower (9^9^9^9 has more digits than atoms in the universe): sympy
    evaluates it eagerly, so no host finishes within the limit; math-verify's own 1 s
    timeout or the pool's kill at 1 s ends it. Either way it is 'timeout' with no
    verdict, and the next check is answered. (1 MB of plain text is no such case:
    a fast host reads it within 1 s.)"""
    with VerifierPool(workers=1, time_limit_s=1.0, preload=("evalsuite.scoring.second_opinion:warm_up",)) as p:
        out = mv.run(["The answer is $9^{9^{9^{9}}}$", "The answer is 18."], ["$7$", "$18$"], p)
    assert (out[0]["status"], out[0]["verdict"]) == ("timeout", None)
    assert (out[1]["status"], out[1]["verdict"]) == ("ok", 1.0)
    assert out[0]["verifier"].startswith("math-verify ")


def _record(sample_id, value, opinion, detail=None, repeat=0):
    return SampleRecord("t", sample_id, repeat, "", "", None, {"row": Score(value, "a", detail, opinion)},
                        None, None, "stop", Timings(), None)


def test_agreement_counts_only_comparable_verdicts():
    ok = lambda v: {"verifier": "math-verify 0.9.0", "status": "ok", "verdict": v, "answer": None}
    records = [
        _record("a", 1.0, ok(1.0)), _record("b", 0.0, ok(0.0)), _record("c", 1.0, ok(0.0)),
        _record("d", 0.0, ok(1.0), repeat=2),
        _record("e", 0.0, {"verifier": "math-verify 0.9.0", "status": "timeout", "verdict": None}),
        _record("f", 0.0, ok(1.0), detail="unverifiable"),   # evalsuite had no verdict
        _record("g", 1.0, None),                            # no opinion recorded
    ]
    summary = mv.agreement(records, "row")
    assert {k: summary[k] for k in ("n", "agree", "disagree", "agreement", "unavailable")} == {
        "n": 4, "agree": 2, "disagree": 2, "agreement": 0.5, "unavailable": 3}
    assert summary["disagreements"] == [
        {"sample_id": "c", "repeat": 0, "evalsuite": 1.0, "math_verify": 0.0},
        {"sample_id": "d", "repeat": 2, "evalsuite": 0.0, "math_verify": 1.0}]
    assert mv.agreement([_record("g", 1.0, None)], "row") is None


def test_a_run_records_math_verify_and_the_report_lists_disagreements(tmp_path, gsm8k_data_dir):
    from evalsuite.config import RunConfig
    from evalsuite.pipeline.runner import run
    from evalsuite.report.build import write_report
    from evalsuite.results.resume import record_from_dict

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    answers = {
        "test-0": "The answer is 18.",                    # gold 18: both right
        "test-1": "The answer is \uff13.",                # gold 3: evalsuite right, math-verify reads nothing
        "test-2": "The answer is 70000 dollars, not 5.",  # gold 70000: flexible-extract takes 5, math-verify 70000
        "brief-0": "Final answer: $x = 2$ or $x = 3$",    # both right
        "linear-0": "Final answer: x = 1000",             # wrong for both
    }
    config = RunConfig(tasks=("gsm8k", "equations"), model=str(model), limit=3, data_dir=str(gsm8k_data_dir),
                       output_dir=tmp_path / "results", run_id="r", cache=False,
                       task_args={"equations": {"count": 1, "families": "linear", "workers": 1}})
    result = run(config, progress=False, backend=ScriptedBackend(outputs={**answers, "*": "no idea"}))

    metrics = json.loads((result.run_dir / "run.json").read_text())["metrics"]
    g = metrics["gsm8k"]["math_verify"]
    assert (g["scorer"], g["n"], g["agree"], g["disagree"]) == ("flexible-extract", 3, 1, 2)
    assert g["agreement"] == pytest.approx(1 / 3)
    assert [d["sample_id"] for d in g["disagreements"]] == ["test-1", "test-2"]
    e = metrics["equations"]["math_verify"]
    assert (e["scorer"], e["n"], e["agree"], e["disagree"]) == ("exact-solution-set", 2, 2, 0)

    lines = [json.loads(x) for x in (result.run_dir / "samples.jsonl").read_text().splitlines()]
    first = next(r for r in lines if r["sample_id"] == "test-1")
    assert first["second_opinions"]["flexible-extract"]["verdict"] == 0.0
    assert first["verdicts"]["flexible-extract"] == 1.0
    assert record_from_dict(first).scores["flexible-extract"].second_opinion == first["second_opinions"]["flexible-extract"]

    folder = write_report([result.run_dir], name="mv", output_dir=tmp_path / "reports")
    report = (folder / "report.md").read_text()
    assert "Second opinion: math-verify" in report and "| gsm8k | flexible-extract | 2 / 3 |" in report
    assert "test-1, test-2" in report
