"""Compare plots: base and candidate overlaid on one elapsed-time axis, PNG files.

Both sides are drawn against minutes since their own run's start, so two runs that
started days apart line up; the two targets of one A/B run share that clock anyway.
Like soak.report.plots, this uses matplotlib's object API (Agg, no pyplot).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from soak.analyze.chats import interval_quantiles
from soak.analyze.load import BODY_PREFIX
from soak.analyze.trend import downsample
from soak.compare.core import Comparison, Side
from soak.formatting import format_growth
from soak.report.plots import Plot, save_plot

#: Most points drawn per series.
PLOT_POINTS = 2000
#: Base and candidate colours (blue, orange), the same in every plot.
COLOURS = ("#1f77b4", "#ff7f0e")
_OUTCOMES = ("stall", "error", "disconnect", "first_token_timeout")

Series = tuple[np.ndarray, np.ndarray]
#: A panel: y-axis label and, per side, the series to draw (elapsed s, values).
Panel = tuple[str, Callable[[Side], Series]]


def side_label(comparison: Comparison, which: int) -> str:
    """`base: patched` in an A/B run, `base: <run_id>[:target]` across runs."""
    side = (comparison.base, comparison.candidate)[which]
    role = ("base", "candidate")[which]
    if comparison.paired or len(side.analysis.targets) > 1:
        name = side.target if comparison.paired else side.name
    else:
        name = side.run_summary.run_id
    return f"{role}: {name}"


def _process(column: str) -> Callable[[Side], Series]:
    def series(side: Side) -> Series:
        process = side.data.data.process
        return process["elapsed"].to_numpy(dtype=float), process[column].to_numpy(dtype=float)

    return series


def _loop_lag(side: Side) -> Series:
    field_name = side.analysis.settings.loop_lag_field
    health = side.data.data.health
    column = BODY_PREFIX + (field_name or "")
    if field_name is None or column not in health.columns:
        return np.array([]), np.array([])
    return health["elapsed"].to_numpy(dtype=float), health[column].to_numpy(dtype=float)


def _ttft_p95(side: Side) -> Series:
    series = interval_quantiles(side.data.data.chats, "ttft_hist", (0.95,), PLOT_POINTS)
    return series["elapsed"].to_numpy(), series["p95"].to_numpy() * 1000.0


def _per_minute(outcome: str) -> Callable[[Side], Series]:
    def series(side: Side) -> Series:
        chats = side.data.data.chats
        minutes = chats["interval_s"].to_numpy(dtype=float) / 60.0
        return chats["elapsed"].to_numpy(dtype=float), chats[outcome].to_numpy(float) / minutes

    return series


#: (file stem, title, panels) of every compare plot, in report order.
PLOTS: list[tuple[str, str, list[Panel]]] = [
    ("threads", "Threads (dashed: Theil–Sen fit after warm-up)",
     [("threads", _process("threads"))]),
    ("rss", "Resident memory (MB)", [("RSS (MB)", _process("rss_mb"))]),
    ("cpu", "CPU % of one core", [("CPU %", _process("cpu_percent"))]),
    ("fds", "Open file descriptors", [("open fds", _process("fds"))]),
    ("loop_lag", "Event-loop lag from /health (ms)", [("loop lag (ms)", _loop_lag)]),
    ("ttft", "Time to first token, p95 per interval (ms)", [("TTFT p95 (ms)", _ttft_p95)]),
    (
        "outcomes",
        "Non-ok outcomes per minute",
        [(f"{name.replace('_', ' ')}s / min", _per_minute(name)) for name in _OUTCOMES],
    ),
]  # fmt: skip


def render_compare_plots(comparison: Comparison, plots_dir: Path) -> list[Plot]:
    """Write every plot that has data on either side; returns them in report order."""
    plots_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, title, panels in PLOTS:
        figure = _figure(comparison, panels, with_fit=name == "threads")
        plot = save_plot(figure, plots_dir, name, title)
        if plot is not None:
            written.append(plot)
    return written


def _sides(comparison: Comparison) -> Iterator[tuple[Side, str, str]]:
    for which, side in enumerate((comparison.base, comparison.candidate)):
        yield side, COLOURS[which], side_label(comparison, which)


def _figure(comparison: Comparison, panels: list[Panel], with_fit: bool) -> Figure | None:
    rows = 1 if len(panels) == 1 else 2
    cols = -(-len(panels) // rows)
    figure = Figure(figsize=(10, 3.4 if rows == 1 else 4.8), layout="constrained")
    axes = figure.subplots(rows, cols, sharex=True, squeeze=False).flat
    drawn = False
    for ax, (ylabel, series) in zip(axes, panels, strict=False):
        for side, colour, label in _sides(comparison):
            x, y = series(side)
            finite = np.isfinite(y)
            if not finite.any():
                continue
            xs, ys = downsample(x[finite], y[finite], PLOT_POINTS, np.nanmean)
            ax.plot(xs / 60.0, ys, color=colour, linewidth=1.2, label=label)
            drawn = True
            fit = side.data.fits.get("threads") if with_fit else None
            if fit is not None:
                ends = np.array([fit.x_start, fit.x_end])
                ax.plot(ends / 60.0, fit.at(ends), "--", color=colour, linewidth=1.5,
                        label=f"fit {format_growth(fit.per_hour)}")  # fmt: skip
        ax.set_ylabel(ylabel, fontsize=9)
        ax.grid(True, alpha=0.3)
        if ax.get_subplotspec().is_last_row():
            ax.set_xlabel("elapsed (min)")
        if len(panels) > 1:
            ax.set_ylim(bottom=0, top=max(ax.get_ylim()[1], 1.0))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best")
    return figure if drawn else None
