"""Report figures: one function per figure, data in, ``matplotlib`` Figure out.

Figures are drawn on the headless Agg canvas (no display needed) and never
touch pyplot's global state, so they are safe to build in tests and threads.
Missing values (``None``) are left out of a figure, never drawn as 0. Runs are
named on the axes by their labels (not ids), one row or tick per run, sized so
that 20 runs and more stay legible.
"""

from __future__ import annotations

import io
import os
from collections.abc import Collection, Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

RUN_ROW_IN = 0.3  # inches per run on a run axis: 9-point labels stay apart at 20 runs and more
LABEL_CHARS = 44  # longest run label drawn on an axis; longer ones are shortened in the middle
_FONT = 9


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _shorten(text: str, width: int = LABEL_CHARS) -> str:
    if len(text) <= width:
        return text
    head = (width - 1) * 2 // 3
    return text[:head] + "\u2026" + text[len(text) - (width - 1 - head):]


def axis_labels(labels: Sequence[str], sep: str = " \u00b7 ") -> tuple[str, list[str]]:
    """Run labels as an axis shows them: the text all labels start with is taken
    out (returned first, for the title) up to the last whole part (``sep``) or
    word (``-``, ``_``, ``/``, ``.``, space), and what is left is shortened in
    the middle to :data:`LABEL_CHARS` characters. A label is never emptied.

    ``["M · dtype=a", "M · dtype=b"]`` -> ``("M · ", ["dtype=a", "dtype=b"])``;
    ``["ckpt-2026-11-01", "ckpt-2026-11-02"]`` -> ``("ckpt-2026-11-", ["01", "02"])``.
    """
    labels = list(labels)
    if len(labels) < 2:
        return "", [_shorten(label) for label in labels]
    prefix = os.path.commonprefix(labels)
    cut = prefix.rfind(sep) + len(sep) if sep in prefix else max(prefix.rfind(c) for c in "-_/. ") + 1
    if any(len(label) <= cut for label in labels):
        cut = 0
    return labels[0][:cut], [_shorten(label[cut:]) for label in labels]


def _title(title: str, shared: str) -> str:
    return f"{title}\n(runs: {_shorten(shared.rstrip(), 70)}\u2026)" if shared else title


def _panels(count: int, width_each: float, height: float, columns: int | None = None):
    """A figure with ``count`` panels side by side (wrapped after ``columns``)."""
    columns = max(1, min(count, columns or count))
    rows = -(-count // columns)
    # Room on the left for LABEL_CHARS characters of 9-point text (about 0.065 in each).
    fig = _figure(1.0 + 0.065 * LABEL_CHARS + width_each * columns, height * rows)
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:count])


def _run_axis(ax, names: Sequence[str], show: bool) -> None:
    ax.set_yticks(range(len(names)), names if show else [""] * len(names), fontsize=_FONT)
    ax.set_ylim(len(names) - 0.5, -0.5)  # the first run (the baseline) on top


def accuracy_figure(tasks: Sequence[str], runs: Sequence[str],
                    values: Mapping[tuple[str, str], tuple[float, float | None, float | None]],
                    title: str = "Primary metric with 95% interval") -> Figure:
    """One panel per task; in each, one row per run (its label on the axis): the
    value as a dot, its 95% interval as a bar, the baseline's value (first run) as
    a dashed line. Readable at 20 runs and more.

    ``values[(task, run)] = (value, ci_low, ci_high)`` in [0, 1]; a missing key
    leaves the row empty, a missing interval leaves the bar out.
    """
    shared, names = axis_labels(runs)
    fig, axes = _panels(len(tasks), 2.6, 1.3 + RUN_ROW_IN * len(runs), columns=4)
    for k, (ax, task) in enumerate(zip(axes, tasks)):
        for i, run in enumerate(runs):
            v = values.get((task, run))
            if v is None or v[0] is None:
                continue
            lo = v[0] - v[1] if v[1] is not None else 0.0
            hi = v[2] - v[0] if v[2] is not None else 0.0
            ax.errorbar([v[0]], [i], xerr=[[lo], [hi]], fmt="o", color="C0" if i else "C3", capsize=3, markersize=5)
        base = values.get((task, runs[0])) if runs else None
        if base and base[0] is not None:
            ax.axvline(base[0], color="C3", linestyle="--", linewidth=1, alpha=0.7)
        ax.set_xlim(0, 1)
        ax.set_title(task, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        _run_axis(ax, names, show=k % 4 == 0)
    fig.suptitle(_title(title, shared), fontsize=11)
    return fig


def trend_figure(tasks: Sequence[str], runs: Sequence[str],
                 values: Mapping[tuple[str, str], tuple[float, float | None, float | None]],
                 title: str = "Primary metric over runs, oldest first, with 95% intervals") -> Figure:
    """One panel per task, stacked; along x the runs in the order given (their
    start order: nightly checkpoints), their labels on the bottom axis; the value
    with its 95% interval as an error bar, consecutive runs joined by a line.

    ``values`` as in :func:`accuracy_figure`.
    """
    shared, names = axis_labels(runs)
    # Labels slanted at 40 degrees take about 0.045 in of height per character.
    fig = _figure(max(6.0, 2.0 + 0.5 * len(runs)), 1.0 + 0.045 * max(map(len, names), default=0) + 2.2 * len(tasks))
    axes = fig.subplots(len(tasks), 1, squeeze=False, sharex=True)[:, 0]
    for ax, task in zip(axes, tasks):
        xs, ys, lo, hi = [], [], [], []
        for i, run in enumerate(runs):
            v = values.get((task, run))
            if v is None or v[0] is None:
                continue
            xs.append(i)
            ys.append(v[0])
            lo.append(v[0] - v[1] if v[1] is not None else 0.0)
            hi.append(v[2] - v[0] if v[2] is not None else 0.0)
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt="-o", capsize=3, markersize=4, linewidth=1)
        ax.set_ylim(0, 1)
        ax.set_ylabel(task, fontsize=10)
        ax.grid(alpha=0.3)
    axes[-1].set_xticks(range(len(runs)), names, rotation=40, ha="right", rotation_mode="anchor", fontsize=_FONT)
    axes[-1].set_xlim(-0.5, len(runs) - 0.5)
    fig.suptitle(_title(title, shared), fontsize=11)
    return fig


def distribution_figure(data: Mapping[str, Mapping[str, Sequence[float]]], unit: str,
                        title: str) -> Figure:
    """Box plots of a per-request measurement: one panel per task, one
    horizontal box per run (its label on the axis).

    ``data[task][run]`` is the list of measured values (e.g. end-to-end latency
    in ms); empty lists are left out. Whiskers at the 5th and 95th percentiles.
    """
    tasks = list(data)
    runs = list(dict.fromkeys(r for per_run in data.values() for r in per_run))
    shared, names = axis_labels(runs)
    fig, axes = _panels(len(tasks), 2.8, 1.3 + RUN_ROW_IN * len(runs), columns=4)
    for k, (ax, task) in enumerate(zip(axes, tasks)):
        positions, series = [], []
        for i, run in enumerate(runs):
            xs = list(data[task].get(run) or [])
            if xs:
                positions.append(i)
                series.append(xs)
        if series:
            box = ax.boxplot(series, positions=positions, widths=0.6, whis=(5, 95), orientation="horizontal",
                             patch_artist=True, manage_ticks=False, showfliers=False)
            for patch in box["boxes"]:
                patch.set_facecolor("C0")
                patch.set_alpha(0.5)
        ax.set_title(task, fontsize=10)
        ax.set_xlabel(unit)
        ax.grid(axis="x", alpha=0.3)
        _run_axis(ax, names, show=k % 4 == 0)
    fig.suptitle(_title(title, shared), fontsize=11)
    return fig


def memory_figure(figures: Mapping[str, Mapping[str, float | None]], title: str = "Memory") -> Figure:
    """One panel per memory figure (e.g. ``peak_gpu_mem_gib``), one horizontal
    bar per run (its label on the axis). ``figures[name][run]`` in the unit its
    name carries; ``None`` leaves the bar out."""
    names_ = list(figures)
    runs = list(dict.fromkeys(r for per_run in figures.values() for r in per_run))
    shared, names = axis_labels(runs)
    fig, axes = _panels(len(names_), 2.6, 1.3 + RUN_ROW_IN * len(runs), columns=4)
    for k, (ax, name) in enumerate(zip(axes, names_)):
        ys = [i for i, run in enumerate(runs) if figures[name].get(run) is not None]
        ax.barh(ys, [figures[name][runs[i]] for i in ys], height=0.6, color="C2")
        ax.set_title(_shorten(name, 36), fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        _run_axis(ax, names, show=k % 4 == 0)
    fig.suptitle(_title(title, shared), fontsize=11)
    return fig


def heatmap_figure(rows: Sequence[str], columns: Sequence[str],
                   values: Sequence[Sequence[float | None]], title: str,
                   xlabel: str = "depth (%)", ylabel: str = "context length (tokens)",
                   hatched: Collection[tuple[int, int]] = (), label: str = "recall") -> Figure:
    """The one heatmap of evalsuite (e.g. needle-in-a-haystack: context length x
    depth; any task's :class:`evalsuite.task.Heatmap`).

    ``values[i][j]`` in [0, 1] for ``rows[i]``, ``columns[j]``; ``None`` cells
    (not measured) are drawn blank and labelled "-"; cells ``(i, j)`` in
    ``hatched`` (skipped on purpose) are hatched grey and labelled "skip".
    ``label`` names the colour scale.
    """
    import numpy as np
    from matplotlib.patches import Rectangle

    grid = np.array([[np.nan if v is None else v for v in row] for row in values], dtype=float).reshape(
        len(rows), len(columns))
    fig = _figure(max(4.5, 2.5 + 0.9 * len(columns)), max(2.5, 1.2 + 0.45 * len(rows)))
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(grid), vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
    ax.set_xticks(range(len(columns)), columns, rotation=45 if len(columns) > 6 else 0)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    for i in range(len(rows)):
        for j in range(len(columns)):
            if (i, j) in hatched:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="0.85", hatch="//", edgecolor="0.6"))
                ax.text(j, i, "skip", ha="center", va="center", fontsize=7, color="0.3")
            else:
                ax.text(j, i, "-" if np.isnan(grid[i, j]) else f"{grid[i, j]:.2f}", ha="center",
                        va="center", fontsize=8)
    fig.colorbar(image, ax=ax, label=label)
    ax.set_title(title, fontsize=10)
    return fig


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes (100 dpi)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()
