"""``report``: tables, figures and flipped samples from run directories on disk,
and the HTML opened in a real headless Chromium."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_report_data import write_run

from evalsuite.cli import main
from evalsuite.errors import UsageError
from evalsuite.report import build_report, load_run, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _two_runs(tmp_path: Path) -> tuple[Path, Path]:
    grid = [{"length": n, "depth": d} for n in (1024, 2048) for d in (0, 50, 100)]
    base = write_run(tmp_path, "base", {
        "gsm8k": {"verdicts": [1.0, 1.0, 0.0, 0.0], "e2e_ms_p95": 800.0},
        "needle": {"verdicts": [1.0, 1.0, 1.0, 1.0, 0.5, 0.0], "scorer": "recall", "metadata": grid,
                   "extras": {"effective_context_length": 1024}},
    }, memory={"peak_rss_gib": 3.5})
    cand = write_run(tmp_path, "cand", {
        "gsm8k": {"verdicts": [1.0, 0.0, 1.0, 0.0], "e2e_ms_p95": 900.0,
                  "outputs": ["same", "cand lost <this>", "cand gained", "no"]},
        "needle": {"verdicts": [1.0, 1.0, 1.0, 1.0, 0.5, 0.0], "scorer": "recall", "metadata": grid},
    })
    return base, cand


def test_tables_show_every_run_and_dash_for_missing(tmp_path):
    base, cand = _two_runs(tmp_path)
    md = build_report([load_run(base), load_run(cand)], "r").markdown()
    assert "| gsm8k | acc | 0.500 [0.300, 0.700] | 4 / 0.00 | 0.500 [0.300, 0.700] | 4 / 0.00 |" in md
    assert "| gsm8k | base | 4 | 0 | 2.0 | 2.00 | 100.0 | 400 | 800 |" in md
    assert "| peak_rss_gib | 3.500 | - |" in md  # the candidate recorded no memory
    assert "| needle | effective_context_length | 1024 | - |" in md
    assert "| base | cand | gsm8k | 1 | 1 |" in md  # one lost, one gained


def test_flipped_samples_side_by_side_in_html(tmp_path):
    base, cand = _two_runs(tmp_path)
    page = build_report([load_run(base), load_run(cand)], "r").html()
    flips = re.findall(r"<tr class='flip'>.*?</tr>", page, re.DOTALL)
    assert len(flips) == 2  # s1 lost, s2 gained; needle verdicts are unchanged
    assert "s1" in flips[0] and "lost" in flips[0] and "base answer 1" in flips[0]
    assert "cand lost &lt;this&gt;" in flips[0]  # outputs are escaped, not markup
    assert "question 1 &lt;b&gt;?&lt;/b&gt;" in flips[0]
    assert "gained" in flips[1] and "cand gained" in flips[1]


def test_figures_are_embedded_pngs_and_files(tmp_path):
    base, cand = _two_runs(tmp_path)
    (base / "needle_heatmap.png").write_bytes((base.parent / "x.png").write_bytes(b"") or _tiny_png())
    folder = write_report([base, cand], name="two", output_dir=tmp_path / "reports")
    names = sorted(p.name for p in folder.glob("*.png"))
    assert names == ["accuracy.png", "artifact_base_needle_heatmap.png", "heatmap_needle_base.png",
                     "heatmap_needle_cand.png", "latency_e2e.png", "memory.png"]
    page = (folder / "report.html").read_text()
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == len(names)
    assert all(base64.b64decode(i).startswith(PNG_MAGIC) for i in images)
    assert "src='http" not in page and "<link" not in page and "<script" not in page  # self-contained
    md = (folder / "report.md").read_text()
    assert all(f"]({n})" in md for n in names)


def _tiny_png() -> bytes:
    from evalsuite import plots

    return plots.png_bytes(plots.memory_figure({"x": {"a": 1.0}}))


def test_heatmap_cells_are_mean_recall(tmp_path):
    from evalsuite.report import _needle_grid

    records = [{"metadata": {"length": 1000, "depth": 0}, "verdicts": {"recall": 1.0}},
               {"metadata": {"length": 1000, "depth": 0}, "verdicts": {"recall": 0.0}},
               {"metadata": {"length": 2000, "depth": 50}, "verdicts": {"recall": 0.5}}]
    assert _needle_grid(records, "recall") == ([1000, 2000], [0.0, 50.0], [[0.5, None], [None, 0.5]])


def test_suite_directory_reads_as_one_run(tmp_path):
    suite = tmp_path / "suite1"
    write_run(suite, "gsm8k", {"gsm8k": {"verdicts": [1.0, 0.0]}})
    write_run(suite, "json-free", {"json_extraction": {"verdicts": [1.0]}})
    (suite / "suite.json").write_text(json.dumps({"suite": "s", "runs": ["gsm8k", "json-free"]}))
    run = load_run(suite)
    assert run.label == "suite1" and run.tasks == ["gsm8k", "json-free"]
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


def _chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.mark.skipif(_chromium() is None, reason="chromium not installed (apt-get install chromium)")
def test_html_report_in_headless_chromium(tmp_path):
    """Chromium renders the report: every table and every image is in the DOM and
    decoded (naturalWidth > 0), and a screenshot is taken."""
    base, cand = _two_runs(tmp_path)
    folder = write_report([base, cand], name="browser", output_dir=tmp_path / "reports")
    page = folder / "report.html"
    # A probe script appended to a copy reports what the browser rendered, after images load.
    probe = folder / "probe.html"
    probe.write_text(page.read_text().replace("</body>", (
        "<script>window.addEventListener('load',()=>{const imgs=[...document.images];"
        "document.body.setAttribute('data-probe',JSON.stringify({tables:[...document.querySelectorAll('table')]"
        ".map(t=>t.id||t.className),images:imgs.length,decoded:imgs.filter(i=>i.complete&&i.naturalWidth>0).length}));"
        "});</script></body>")))
    chrome = _chromium()
    profile = tmp_path / "profile"
    dom = subprocess.run([chrome, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=5000",
                          "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120, check=False)
    assert dom.returncode == 0, dom.stderr[-2000:]
    found = json.loads(re.search(r"data-probe=\"([^\"]*)\"", dom.stdout).group(1).replace("&quot;", '"'))
    assert [t for t in found["tables"] if t != "flips"] == ["runs", "accuracy", "performance", "memory", "extras"]
    assert found["tables"].count("flips") == 1
    assert found["images"] == 5 and found["decoded"] == 5
    shot = tmp_path / "report.png"
    subprocess.run([chrome, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile2'}", "--window-size=1400,2400",
                    f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=True)
    assert shot.read_bytes().startswith(PNG_MAGIC) and shot.stat().st_size > 20_000
