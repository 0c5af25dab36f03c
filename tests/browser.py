"""Headless Chromium for the report tests: what the browser rendered, and
screenshots kept as CI artifacts (no tests here).

Screenshots go to ``$EVALSUITE_ARTIFACTS_DIR`` or, by default,
``reports/screenshots/`` in the repository (git-ignored), under stable names,
so a CI job can upload that folder.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]
FOLD = (1280, 800)  # the window a reviewer first sees: a laptop screen


def chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


needs_chromium = pytest.mark.skipif(chromium() is None, reason="chromium not installed (apt-get install chromium)")


def artifacts_dir() -> Path:
    path = Path(os.environ.get("EVALSUITE_ARTIFACTS_DIR") or REPO / "reports" / "screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def probe(page: Path, expression: str, profile: Path, window: tuple[int, int] = FOLD) -> dict:
    """Opens a copy of ``page`` with a script that evaluates the JavaScript
    ``expression`` once the page and its images have loaded, and returns its value
    (JSON) as the browser computed it."""
    copy = page.with_name(f"probe-{page.name}")
    script = (f"<script>window.addEventListener('load',()=>{{document.body.setAttribute('data-probe',"
              f"JSON.stringify(({expression})));}});</script></body>")
    copy.write_text(page.read_text(encoding="utf-8").replace("</body>", script), encoding="utf-8")
    dom = subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", f"--window-size={window[0]},{window[1]}",
                          "--virtual-time-budget=5000", "--dump-dom", copy.as_uri()],
                         capture_output=True, text=True, timeout=180, check=False)
    assert dom.returncode == 0, dom.stderr[-2000:]
    found = re.search(r'data-probe="([^"]*)"', dom.stdout)
    assert found, dom.stdout[-2000:]
    return json.loads(html.unescape(found.group(1)))


def screenshot(page: Path, name: str, profile: Path, window: tuple[int, int] = FOLD) -> Path:
    """A PNG of the first ``window`` of ``page``, kept as ``<artifacts>/<name>``."""
    out = artifacts_dir() / name
    subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", f"--window-size={window[0]},{window[1]}",
                    f"--screenshot={out}", page.as_uri()], capture_output=True, timeout=180, check=True)
    return out
