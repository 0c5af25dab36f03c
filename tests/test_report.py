"""``report``: verdict, what differs, headline, tables, figures and flipped samples
from run directories on disk, and the HTML opened in a real headless Chromium."""

from __future__ import annotations

import base64
import json
import random
import re

import pytest
from browser import FOLD, needs_chromium, probe, screenshot
from test_report_data import write_run

from evalsuite.cli import main
from evalsuite.errors import UsageError
from evalsuite.report.build import build_report, load_run, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _two_runs(tmp_path):
    grid = [{"length": n, "depth": d} for n in (1024, 2048) for d in (0, 50, 100)]
    base = write_run(tmp_path, "base", {
        "gsm8k": {"verdicts": [1.0, 1.0, 0.0, 0.0], "e2e_ms": 800.0},
        "needle": {"verdicts": [1.0, 1.0, 1.0, 1.0, 0.5, 0.0], "scorer": "recall", "metadata": grid,
                   "extras": {"effective_context_length": 1024}},
    }, memory={"host_peak_rss_gib": 3.5}, label="base")
    cand = write_run(tmp_path, "cand", {
        "gsm8k": {"verdicts": [1.0, 0.0, 1.0, 0.0], "e2e_ms": 900.0,
                  "outputs": ["same", "cand lost <this>", "cand gained", "no"]},
        "needle": {"verdicts": [1.0, 1.0, 1.0, 1.0, 0.5, 0.0], "scorer": "recall", "metadata": grid},
    }, label="cand")
    return base, cand


def test_tables_show_every_run_and_dash_for_missing(tmp_path):
    base, cand = _two_runs(tmp_path)
    md = build_report([load_run(base), load_run(cand)], "r").markdown()
    # 2 of 4 right: Wilson 95% interval [0.150, 0.850]; the extractor found no answer in the 2 wrong ones.
    assert "| gsm8k | acc | 0.500 [0.150, 0.850] | 4 / 0.50 | 0.500 [0.150, 0.850] | 4 / 0.50 |" in md
    # 4 requests in 2 s, 5 output tokens each; every request took 800 ms.
    assert "| gsm8k | base | 4 | 0 | 2.0 | 2.00 | 10.0 | 800 | 800 | 800 | 800 |" in md
    assert "| host_peak_rss_gib | 3.500 | - |" in md  # the candidate recorded no memory
    assert "| needle | effective_context_length | 1024 | - |" in md
    assert "| base | cand | gsm8k | 1 | 1 |" in md  # one lost, one gained


def test_verdict_differences_and_headline_open_the_report(tmp_path):
    base, cand = _two_runs(tmp_path)
    md = build_report([load_run(base), load_run(cand)], "r").markdown()
    head = md.split("### ")[0]
    assert head.startswith("# evalsuite report: cand vs base\n")
    assert ("**Verdict:** No significant change: no task changed significantly between cand and the baseline "
            "base (2 tasks tested; paired tests, p < 0.05).") in head
    assert "The runs differ in nothing recorded" in head
    # gsm8k: 1 lost and 1 gained of 4 pairs: difference 0, exact McNemar p = 1; Newcombe's interval with
    # both rates 2/4 and phi = 0 is 0 -/+ sqrt(2) * (0.5 - 0.150) = [-0.495, +0.495]. Latency 800 -> 900 ms.
    assert ("| cand | gsm8k | acc | 0.500 | 0.500 | +0.000 [-0.495, +0.495] | 1.000 (McNemar) | 4 | +12.5% | - "
            "| no significant change |") in md
    # needle: the same partial-credit scores, so every bootstrap difference is 0.
    assert "| cand | needle | recall | 0.750 | 0.750 | +0.000 [+0.000, +0.000] | 1.000 (bootstrap) | 6 | +0.0% |" in md


def _cavo_pairs():
    """Cavo et al. (2012) as tabulated by Fagerland, Lydersen & Laake: 59 pairs right in both
    runs, 6 right in the candidate only, 16 in the baseline only, 80 wrong in both."""
    base = [1.0] * 59 + [0.0] * 6 + [1.0] * 16 + [0.0] * 80
    cand = [1.0] * 59 + [1.0] * 6 + [0.0] * 16 + [0.0] * 80
    return base, cand


def test_headline_of_a_published_paired_table(tmp_path):
    base_v, cand_v = _cavo_pairs()
    base = write_run(tmp_path, "a", {"t": {"verdicts": base_v}}, memory={"host_peak_rss_gib": 2.0})
    cand = write_run(tmp_path, "b", {"t": {"verdicts": cand_v}}, memory={"host_peak_rss_gib": 2.5}, temperature=0.5)
    report = build_report([load_run(base), load_run(cand)], "r")
    md = report.markdown()
    # Newcombe's interval as published: -0.0621 (-0.1186 to -0.0046). Exact McNemar on 16 losses and
    # 6 wins: 2 * P[X <= 6], X ~ Bin(22, 1/2) = 2 * 110056 / 2**22 = 0.0525: not significant at 0.05.
    assert "| t | acc | 0.466 | 0.404 | -0.062 [-0.119, -0.005] | 0.052 (McNemar) | 161 | +0.0% | +25.0% |" in md
    assert report.verdict.startswith("No significant change: no task changed significantly between "
                                     "tiny-model · temperature=0.5 and the baseline tiny-model · temperature=0")
    assert report.differs.startswith("The runs differ in temperature (0 \u2192 0.5), t temperature (0 \u2192 0.5)")


def test_a_significant_drop_is_named_in_the_verdict(tmp_path):
    base = write_run(tmp_path, "a", {"t": {"verdicts": [1.0] * 20}, "u": {"verdicts": [1.0] * 4}}, dtype="bfloat16")
    cand = write_run(tmp_path, "b", {"t": {"verdicts": [0.0] * 8 + [1.0] * 12}, "u": {"verdicts": [1.0] * 4}},
                     dtype="float32")
    report = build_report([load_run(base), load_run(cand)], "r")
    # 8 losses, no win: p = 2 / 2**8 = 0.0078; difference -8/20.
    assert report.verdict.startswith("Worse: tiny-model · dtype=float32 against the baseline tiny-model · "
                                     "dtype=bfloat16: worse on t (-0.400 [")
    assert "p = 0.008); no significant change on 1 other task" in report.verdict
    assert report.verdict_class == "worse"
    assert report.differs == "The runs differ in dtype (bfloat16 \u2192 float32)."


def test_data_that_differs_makes_a_task_not_comparable(tmp_path):
    base = write_run(tmp_path, "a", {"t": {"verdicts": [1.0] * 20, "data": "v1"}, "u": {"verdicts": [1.0] * 3}})
    cand = write_run(tmp_path, "b", {"t": {"verdicts": [0.0] * 20, "data": "v2"}, "u": {"verdicts": [1.0] * 3}})
    report = build_report([load_run(base), load_run(cand)], "r")
    assert "not comparable on t (data or task version differs)" in report.verdict
    assert report.warnings == ["t: not comparable between the runs (tasks.t.data.t.jsonl differ)"]
    md = report.markdown()
    assert "| not comparable (data.t.jsonl) |" in md
    assert "| data | tasks.t.data.t.jsonl |" in md and "| not comparable on t |" in md


def _nightly(tmp_path, count=12, tasks=("gsm8k", "json_extraction")):
    """``count`` nightly checkpoints, oldest first, each a tiny run getting better."""
    rng = random.Random(1)
    runs = []
    for k in range(count):
        p = 0.2 + 0.05 * k
        runs.append(write_run(tmp_path, f"20261201-0{k:02d}000-ckpt-{k:02d}",
                              {t: {"verdicts": [1.0 if rng.random() < p else 0.0 for _ in range(20)]} for t in tasks},
                              model=f"checkpoint-2026-11-{k + 1:02d}-step{(k + 1) * 1000}",
                              started_at=1_800_000_000.0 + 86_400 * k))
    return runs


def test_many_runs_get_a_matrix_with_the_best_marked_and_a_trend(tmp_path):
    runs = [load_run(p) for p in _nightly(tmp_path, 4, tasks=("t",))]
    report = build_report(runs, "r")
    matrix = report.summary_tables[0]
    assert matrix.css_id == "matrix" and [r[0] for r in matrix.rows] == [
        f"checkpoint-2026-11-0{k}-step{k}000" for k in range(1, 5)]
    values = [float(r[1].split()[0]) for r in matrix.rows]
    best = [i for i, v in enumerate(values) if v == max(values)]
    assert sorted(i for i, _ in matrix.marked) == best and all(matrix.rows[i][1].endswith("\u2605") for i in best)
    assert [f.name for f in report.overview_figures] == ["trend.png"]
    tie = build_report([load_run(p) for p in _nightly(tmp_path / "tie", 3, tasks=("t",))[:1]] * 3, "r")
    assert not tie.summary_tables[0].marked  # the same run three times: no best
    assert report.verdict.startswith("Against the baseline checkpoint-2026-11-01-step1000: ")
    # Runs given newest first are not a trend.
    assert not build_report(runs[::-1], "r").overview_figures


def test_flipped_samples_side_by_side_in_html(tmp_path):
    base, cand = _two_runs(tmp_path)
    page = build_report([load_run(base), load_run(cand)], "r").html()
    flips = re.findall(r"<tr class='flip'>.*?</tr>", page, re.DOTALL)
    assert len(flips) == 2  # s1 lost, s2 gained; needle verdicts are unchanged
    assert "s1" in flips[0] and "lost" in flips[0] and "base answer 1" in flips[0]
    assert "cand lost &lt;this&gt;" in flips[0]  # outputs are escaped, not markup
    assert "question 1 &lt;b&gt;?&lt;/b&gt;" in flips[0]
    assert "gained" in flips[1] and "cand gained" in flips[1]


def test_labels_and_outputs_are_escaped_in_html(tmp_path):
    base = write_run(tmp_path, "a", {"t": {"verdicts": [1.0, 0.0]}}, label="<script>alert(1)</script>")
    cand = write_run(tmp_path, "b", {"t": {"verdicts": [0.0, 1.0]}}, label="b & c")
    page = build_report([load_run(base), load_run(cand)], "r").html()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "b &amp; c vs &lt;script&gt;" in page


def test_figures_are_embedded_pngs_and_files(tmp_path):
    base, cand = _two_runs(tmp_path)
    (base / "needle_heatmap.png").write_bytes(_tiny_png())
    folder = write_report([base, cand], name="two", output_dir=tmp_path / "reports")
    names = sorted(p.name for p in folder.glob("*.png"))
    assert names == ["accuracy.png", "artifact_base_needle_heatmap.png", "heatmap_needle_base.png",
                     "heatmap_needle_cand.png", "latency_e2e.png", "memory.png"]
    page = (folder / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == len(names)
    assert all(base64.b64decode(i).startswith(PNG_MAGIC) for i in images)
    assert "src=\"http" not in page and "<link" not in page and "<script" not in page  # self-contained
    md = (folder / "report.md").read_text()
    assert all(f"]({n})" in md for n in names)


def _tiny_png() -> bytes:
    from evalsuite.report import plots

    return plots.png_bytes(plots.memory_figure({"x": {"a": 1.0}}))


def test_heatmap_cells_are_mean_recall(tmp_path):
    from evalsuite.report.build import _needle_grid

    records = [{"metadata": {"length": 1000, "depth": 0}, "verdicts": {"recall": 1.0}},
               {"metadata": {"length": 1000, "depth": 0}, "verdicts": {"recall": 0.0}},
               {"metadata": {"length": 2000, "depth": 50}, "verdicts": {"recall": 0.5}}]
    assert _needle_grid(records, "recall") == ([1000, 2000], [0.0, 50.0], [[0.5, None], [None, 0.5]])


def test_suite_directory_reads_as_one_run(tmp_path):
    suite = tmp_path / "suite1"
    write_run(suite, "gsm8k", {"gsm8k": {"verdicts": [1.0, 0.0]}})
    write_run(suite, "json-free", {"json_extraction": {"verdicts": [1.0]}})
    (suite / "suite.json").write_text(json.dumps({"suite": "s", "label": "nightly suite",
                                                  "runs": ["gsm8k", "json-free"]}))
    run = load_run(suite)
    assert run.label == "suite1" and run.tasks == ["gsm8k", "json-free"]
    assert run.given_label == "nightly suite"
    assert {r["task"] for r in run.samples} == {"gsm8k", "json-free"}


def test_cli_report_and_missing_run(tmp_path, capsys):
    _two_runs(tmp_path)
    out = tmp_path / "reports"
    assert main(["report", "base", "cand", "--results-dir", str(tmp_path), "--output-dir", str(out)]) == 0
    assert (out / "base_vs_cand" / "report.html").is_file()
    assert main(["report", str(tmp_path / "nothing"), "--output-dir", str(out)]) == 2
    assert "no run found" in capsys.readouterr().err
    with pytest.raises(UsageError):
        load_run(tmp_path / "nothing")


# --------------------------------------------------------------------------- in the browser

@needs_chromium
def test_html_report_in_headless_chromium(tmp_path):
    """Chromium renders the report: every table and every image is in the DOM and
    decoded (naturalWidth > 0)."""
    base, cand = _two_runs(tmp_path)
    folder = write_report([base, cand], name="browser", output_dir=tmp_path / "reports")
    found = probe(folder / "report.html", "{tables:[...document.querySelectorAll('table')].map(t=>t.id||t.className),"
                  "images:document.images.length,decoded:[...document.images].filter(i=>i.complete&&i.naturalWidth>0)"
                  ".length}", tmp_path / "profile")
    assert [t for t in found["tables"] if t != "flips"] == ["headline", "differences", "runs", "accuracy",
                                                           "performance", "memory", "extras"]
    assert found["tables"].count("flips") == 1
    assert found["images"] == 5 and found["decoded"] == 5


_ABOVE_THE_FOLD = ("{height:window.innerHeight,width:document.documentElement.scrollWidth,"
                   "parts:['verdict','differs','headline'].map(id=>{const e=document.getElementById(id);"
                   "const r=e.getBoundingClientRect();return {id:id,bottom:r.bottom,text:e.innerText};})}")


@needs_chromium
def test_two_runs_differing_in_dtype_say_so_above_the_fold(tmp_path):
    """Acceptance: the report of two runs that differ only in dtype says, in the first
    screen, that they differ in dtype and whether any task changed significantly.
    The screenshot is kept as report_dtype.png in the artifacts folder."""
    rng = random.Random(7)
    verdicts = [1.0 if rng.random() < 0.3 else 0.0 for _ in range(40)]
    changed = [1.0 - v if i in (3, 17) else v for i, v in enumerate(verdicts)]
    model = "SmolLM2-135M-Instruct"
    base = write_run(tmp_path, "20261202-010831-SmolLM2-135M-Instruct-2ee09b", {"gsm8k": {"verdicts": verdicts}},
                     model=model, dtype="bfloat16", memory={"host_peak_rss_gib": 3.1})
    cand = write_run(tmp_path, "20261202-011502-SmolLM2-135M-Instruct-7c1d40", {"gsm8k": {"verdicts": changed}},
                     model=model, dtype="float32", memory={"host_peak_rss_gib": 3.6})
    folder = write_report([base, cand], name="dtype", output_dir=tmp_path / "reports")
    found = probe(folder / "report.html", _ABOVE_THE_FOLD, tmp_path / "profile")
    parts = {p["id"]: p for p in found["parts"]}
    # The viewport the browser gives a FOLD-sized window (its height less any window chrome):
    # every part must be visible without scrolling, down or sideways.
    assert 600 <= found["height"] <= FOLD[1] and found["width"] <= FOLD[0]
    assert all(p["bottom"] <= found["height"] for p in parts.values()), parts
    assert parts["differs"]["text"] == "The runs differ in dtype (bfloat16 \u2192 float32)."
    assert parts["verdict"]["text"].startswith("No significant change: no task changed significantly between "
                                               "SmolLM2-135M-Instruct · dtype=float32 and the baseline "
                                               "SmolLM2-135M-Instruct · dtype=bfloat16")
    assert "20261202-010831" not in parts["verdict"]["text"] + parts["headline"]["text"]  # labels, not ids
    shot = screenshot(folder / "report.html", "report_dtype.png", tmp_path / "profile2")
    assert shot.read_bytes().startswith(PNG_MAGIC) and shot.stat().st_size > 20_000


_MANY_RUNS = ("{matrix:[...document.querySelectorAll('#matrix tbody tr')].map(r=>r.cells[0].innerText),"
              "best:document.querySelectorAll('#matrix td.best').length,"
              "trend:[...document.querySelectorAll('#overview img')].map(i=>({natural:i.naturalWidth,"
              "shown:i.getBoundingClientRect().width,alt:i.alt})),"
              "bottom:document.getElementById('overview').getBoundingClientRect().bottom,"
              "width:document.documentElement.scrollWidth}")


@needs_chromium
def test_twelve_runs_render_a_matrix_and_a_readable_trend(tmp_path):
    """Acceptance: a report of 12 runs shows the runs x tasks matrix (labels, best
    marked) and the trend plot at its full size (its labels are checked for overlap
    in test_plots). The screenshot, down to the trend, is kept as report_12_runs.png."""
    runs = _nightly(tmp_path)
    folder = write_report(runs, name="nightly", output_dir=tmp_path / "reports")
    found = probe(folder / "report.html", _MANY_RUNS, tmp_path / "profile", window=(1400, 900))
    assert found["matrix"] == [f"checkpoint-2026-11-{k:02d}-step{k * 1000}" for k in range(1, 13)]
    assert found["best"] >= 2  # one per task at least (ties are all marked)
    (trend,) = found["trend"]
    assert trend["alt"].startswith("Primary metric per task over the runs")
    assert trend["natural"] > 0 and trend["shown"] >= trend["natural"]  # not shrunk: labels stay legible
    assert found["width"] <= 1400
    shot = screenshot(folder / "report.html", "report_12_runs.png", tmp_path / "profile2",
                      window=(1400, min(6000, int(found["bottom"]) + 20)))
    assert shot.read_bytes().startswith(PNG_MAGIC) and shot.stat().st_size > 50_000
