"""Report figures: one function per figure, data in, ``matplotlib`` Figure out.

Figures are drawn on the headless Agg canvas (no display needed) and never
touch pyplot's global state, so they are safe to build in tests and threads.
Missing values (``None``) are left out of a figure, never drawn as 0.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_WIDTH_PER_GROUP = 1.3


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def accuracy_figure(tasks: Sequence[str], runs: Sequence[str],
                    values: Mapping[tuple[str, str], tuple[float, float | None, float | None]],
                    title: str = "Accuracy (primary metric) with 95% interval") -> Figure:
    """Grouped bars: one group per task, one bar per run, error bars from the 95% interval.

    ``values[(task, run)] = (value, ci_low, ci_high)`` in [0, 1]; a missing key
    leaves the bar out, a missing interval leaves the error bar out.
    """
    fig = _figure(max(5.0, 1.5 + _WIDTH_PER_GROUP * len(tasks) * max(1, len(runs)) / 2), 3.6)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(runs))
    for j, run in enumerate(runs):
        xs, ys, lo_err, hi_err = [], [], [], []
        for i, task in enumerate(tasks):
            if (task, run) not in values or values[(task, run)][0] is None:
                continue
            v, lo, hi = values[(task, run)]
            xs.append(i - 0.4 + width * (j + 0.5))
            ys.append(v)
            lo_err.append(v - lo if lo is not None else 0.0)
            hi_err.append(hi - v if hi is not None else 0.0)
        ax.bar(xs, ys, width=width * 0.95, label=run, yerr=[lo_err, hi_err], capsize=3)
    ax.set_xticks(range(len(tasks)), tasks, rotation=20, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(fontsize="small", loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    return fig


def distribution_figure(data: Mapping[str, Mapping[str, Sequence[float]]], unit: str,
                        title: str) -> Figure:
    """Box plots of a per-request measurement: one group per task, one box per run.

    ``data[task][run]`` is the list of measured values (e.g. end-to-end latency
    in ms); empty lists are left out. Whiskers at the 5th and 95th percentiles.
    """
    tasks = list(data)
    runs = list(dict.fromkeys(r for per_run in data.values() for r in per_run))
    fig = _figure(max(5.0, 1.5 + _WIDTH_PER_GROUP * len(tasks) * max(1, len(runs)) / 2), 3.6)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(runs))
    colors = [f"C{j % 10}" for j in range(len(runs))]
    for j, run in enumerate(runs):
        positions, series = [], []
        for i, task in enumerate(tasks):
            xs = list(data[task].get(run) or [])
            if xs:
                positions.append(i - 0.4 + width * (j + 0.5))
                series.append(xs)
        if series:
            box = ax.boxplot(series, positions=positions, widths=width * 0.85, whis=(5, 95),
                             patch_artist=True, manage_ticks=False)
            for patch in box["boxes"]:
                patch.set_facecolor(colors[j])
                patch.set_alpha(0.6)
        ax.plot([], [], color=colors[j], linewidth=6, alpha=0.6, label=run)
    ax.set_xticks(range(len(tasks)), tasks, rotation=20, ha="right")
    ax.set_ylabel(unit)
    ax.set_title(title)
    ax.legend(fontsize="small", loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    return fig


def memory_figure(figures: Mapping[str, Mapping[str, float | None]], title: str = "Memory") -> Figure:
    """Horizontal grouped bars: one group per memory figure (e.g. ``peak_gpu_mem_gib``),
    one bar per run. ``figures[name][run]`` in the unit its name carries."""
    names = list(figures)
    runs = list(dict.fromkeys(r for per_run in figures.values() for r in per_run))
    fig = _figure(6.5, max(2.5, 0.5 + 0.35 * len(names) * max(1, len(runs))))
    ax = fig.add_subplot()
    height = 0.8 / max(1, len(runs))
    for j, run in enumerate(runs):
        ys, xs = [], []
        for i, name in enumerate(names):
            v = figures[name].get(run)
            if v is not None:
                ys.append(i - 0.4 + height * (j + 0.5))
                xs.append(v)
        ax.barh(ys, xs, height=height * 0.95, label=run)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_title(title)
    ax.legend(fontsize="small", loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return fig


def heatmap_figure(rows: Sequence[str], columns: Sequence[str],
                   values: Sequence[Sequence[float | None]], title: str,
                   xlabel: str = "depth (%)", ylabel: str = "context length (tokens)") -> Figure:
    """A recall heatmap (e.g. needle-in-a-haystack: context length x depth).

    ``values[i][j]`` in [0, 1] for ``rows[i]``, ``columns[j]``; ``None`` cells
    (skipped, not measured) are drawn blank and labelled "-".
    """
    import numpy as np

    grid = np.array([[np.nan if v is None else v for v in row] for row in values], dtype=float)
    fig = _figure(max(4.0, 1.5 + 0.6 * len(columns)), max(2.5, 1.0 + 0.45 * len(rows)))
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(grid), vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
    ax.set_xticks(range(len(columns)), columns)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    for i in range(len(rows)):
        for j in range(len(columns)):
            ax.text(j, i, "-" if np.isnan(grid[i, j]) else f"{grid[i, j]:.2f}", ha="center",
                    va="center", fontsize=8)
    fig.colorbar(image, ax=ax, label="recall")
    ax.set_title(title)
    return fig


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes (100 dpi)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()
