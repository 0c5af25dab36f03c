"""Report figures stay readable at 20 runs: run labels (never ids) on the axes,
no two labels overlapping, none cut off by the figure's edge, 8-point text or larger."""

from __future__ import annotations

import itertools
import math

import pytest

from evalsuite.report import plots

RUNS = 20
TASKS = ["gsm8k", "json_extraction", "needle"]
SWEEP = [f"SmolLM2-135M-Instruct · dtype=float32 · temperature={k / 10:g}" for k in range(RUNS)]
NAMES = [f"nightly-{k:02d}-a-rather-long-checkpoint-name-with-{'x' * (k % 7)}-words-step{k * 1000}"
         for k in range(RUNS)]
VALUES = {(t, r): (0.2 + 0.03 * i, 0.1 + 0.03 * i, 0.3 + 0.03 * i)
          for t in TASKS for i, r in enumerate(SWEEP + NAMES)}


def _labels(fig, axis: str):
    """(text, window bbox, font size in points, rotation) of every visible tick label."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    out = []
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        ticks = ax.get_xticklabels() if axis == "x" else ax.get_yticklabels()
        out.append([(t.get_text(), t.get_window_extent(renderer), t.get_fontsize(), t.get_rotation())
                    for t in ticks if t.get_visible() and t.get_text()])
    return out


def _assert_readable(fig, axis: str, expected: list[str]):
    per_axes = [labels for labels in _labels(fig, axis) if labels]
    assert per_axes, "no run labels drawn"
    for labels in per_axes:
        assert [text for text, *_ in labels] == expected
        canvas = fig.bbox
        for text, box, size, rotation in labels:
            assert size >= 8, text
            assert canvas.x0 - 0.5 <= box.x0 and box.x1 <= canvas.x1 + 0.5, f"{text!r} cut off"
            assert canvas.y0 - 0.5 <= box.y0 and box.y1 <= canvas.y1 + 0.5, f"{text!r} cut off"
        first = labels[0]
        height_px = first[2] * fig.dpi / 72
        if first[3] == 0:  # horizontal labels stacked along y: their boxes must not touch
            boxes = sorted((box for _, box, _, _ in labels), key=lambda b: b.y0)
            assert all(a.y1 <= b.y0 + 0.5 for a, b in itertools.pairwise(boxes))
        else:  # parallel slanted labels: the gap across the text must exceed its height
            xs = sorted(box.x1 for _, box, _, _ in labels)
            spacing = min(b - a for a, b in itertools.pairwise(xs))
            assert spacing * math.sin(math.radians(first[3])) >= height_px


@pytest.mark.parametrize("runs", [SWEEP, NAMES], ids=["sweep", "long-names"])
def test_accuracy_figure_names_twenty_runs_legibly(runs):
    _, names = plots.axis_labels(runs)
    fig = plots.accuracy_figure(TASKS, runs, VALUES)
    _assert_readable(fig, "y", names)
    if runs is SWEEP:
        assert names == [f"temperature={k / 10:g}" for k in range(RUNS)]
        assert "SmolLM2-135M-Instruct · dtype=float32" in fig.get_suptitle()


@pytest.mark.parametrize("runs", [SWEEP, NAMES], ids=["sweep", "long-names"])
def test_trend_figure_names_twenty_runs_legibly(runs):
    _, names = plots.axis_labels(runs)
    fig = plots.trend_figure(TASKS, runs, VALUES)
    _assert_readable(fig, "x", names)
    assert len(fig.axes) == len(TASKS) and all(ax.get_ylim() == (0, 1) for ax in fig.axes)
    # every point carries its interval: one error bar per run and task
    assert all(len(ax.lines[0].get_xdata()) == RUNS for ax in fig.axes)


def test_latency_and_memory_figures_name_twenty_runs_legibly():
    _, names = plots.axis_labels(NAMES)
    latency = {t: {r: [100.0 + i, 120.0 + i, 140.0 + i] for i, r in enumerate(NAMES)} for t in TASKS}
    _assert_readable(plots.distribution_figure(latency, "ms", "End-to-end latency"), "y", names)
    memory = {name: {r: 1.0 + i / 10 for i, r in enumerate(NAMES)} for name in ("host_peak_rss_gib", "weights_gib")}
    _assert_readable(plots.memory_figure(memory, "Memory (GiB)"), "y", names)


def test_axis_labels_drop_the_shared_start_and_shorten_the_rest():
    assert plots.axis_labels(["M · dtype=a", "M · dtype=b"]) == ("M · ", ["dtype=a", "dtype=b"])
    assert plots.axis_labels(["ckpt-2026-11-01", "ckpt-2026-11-02"]) == ("ckpt-2026-11-", ["01", "02"])
    assert plots.axis_labels(["run", "run-b"]) == ("", ["run", "run-b"])  # never an empty label
    _, (short,) = plots.axis_labels(["x" * 30 + "MIDDLE" + "y" * 30])
    assert len(short) == plots.LABEL_CHARS and short.startswith("x" * 10) and short.endswith("y" * 10)
