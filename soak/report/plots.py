"""Report plots: every target overlaid, x in elapsed minutes, PNG files.

Uses matplotlib's object API (`Figure.savefig` renders PNG with Agg) and never
pyplot, so no GUI backend or global figure state is involved. Series are reduced to
at most PLOT_POINTS bins first, so a 7-day run plots in seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from soak.analyze.chats import IDLE, idle_intervals, interval_quantiles
from soak.analyze.load import BODY_PREFIX
from soak.analyze.summary import Analysis, TargetAnalysis
from soak.analyze.trend import downsample
from soak.criteria import format_growth

#: Most points drawn per series.
PLOT_POINTS = 3000
#: Thread families drawn per target in the families plot.
FAMILIES_PER_TARGET = 3
_OUTCOME_PANELS = ("stall", "error", "disconnect", "violation")
_LINESTYLES = ("-", "--", ":", "-.")
_DPI = 100


@dataclass(frozen=True)
class Plot:
    """One written plot: file name stem, title and path of the PNG."""

    name: str
    title: str
    path: Path


def render_plots(analysis: Analysis, plots_dir: Path) -> list[Plot]:
    """Write every plot that has data as plots/<name>.png; returns them in report order."""
    plots_dir.mkdir(parents=True, exist_ok=True)
    colours = matplotlib.color_sequences["tab10"]
    targets = [
        (name, target, colours[i % len(colours)])
        for i, (name, target) in enumerate(analysis.targets.items())
    ]
    makers: list[tuple[str, str, Callable[[list[Target]], Figure | None]]] = [
        ("threads", "Threads (dashed: Theil–Sen fit after warm-up)", _threads),
        ("thread_families", "Thread-name families (fastest-growing per target)", _families),
        ("rss", "Resident memory (MB)", _process_series("rss_mb", "RSS (MB)")),
        ("cpu", "CPU % of one core (shaded: idle intervals)", _cpu),
        ("fds", "Open file descriptors", _process_series("fds", "open fds")),
        ("loop_lag", "Event-loop lag from /health (ms)", _loop_lag(analysis)),
        ("ttft", "Time to first token per interval (solid p95, dashed p50)", _ttft),
        ("outcomes", "Non-ok outcomes per minute", _outcomes),
    ]
    written = []
    for name, title, make in makers:
        path = plots_dir / f"{name}.png"
        figure = make(targets)
        if figure is None:
            path.unlink(missing_ok=True)
            continue
        figure.suptitle(title, fontsize=11, x=0.01, horizontalalignment="left")
        figure.savefig(path, dpi=_DPI, format="png")
        written.append(Plot(name=name, title=title, path=path))
    return written


Target = tuple[str, TargetAnalysis, tuple[float, ...]]


def _figure(rows: int = 1, cols: int = 1) -> tuple[Figure, np.ndarray]:
    height = 3.4 if rows == 1 else 2.4 * rows
    figure = Figure(figsize=(10, height), layout="constrained")
    axes = figure.subplots(rows, cols, sharex=True, squeeze=False)
    for ax in axes.flat:
        ax.grid(True, alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("elapsed (min)")
    return figure, axes


def _line(ax: Axes, x: np.ndarray, y: np.ndarray, **style: object) -> bool:
    """Draw y over x (elapsed s) in minutes, binned; False when there is nothing to draw."""
    finite = np.isfinite(y)
    if not finite.any():
        return False
    xs, ys = downsample(x[finite], y[finite], PLOT_POINTS, np.nanmean)
    ax.plot(xs / 60.0, ys, linewidth=1.2, **style)
    return True


def _finish(figure: Figure, axes: np.ndarray, drawn: bool) -> Figure | None:
    if not drawn:
        return None
    for ax in axes.flat:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best")
    return figure


def _column(target: TargetAnalysis, column: str) -> tuple[np.ndarray, np.ndarray]:
    process = target.data.process
    return process["elapsed"].to_numpy(dtype=float), process[column].to_numpy(dtype=float)


def _threads(targets: list[Target]) -> Figure | None:
    figure, axes = _figure()
    ax = axes[0, 0]
    drawn = False
    for name, target, colour in targets:
        drawn |= _line(ax, *_column(target, "threads"), color=colour, label=name)
        fit = target.fits.get("threads")
        if fit is not None:
            xs = np.array([fit.x_start, fit.x_end])
            ax.plot(
                xs / 60.0,
                fit.at(xs),
                "--",
                color=colour,
                linewidth=1.5,
                label=f"{name} fit {format_growth(fit.per_hour)}",
            )
    ax.set_ylabel("threads")
    return _finish(figure, axes, drawn)


def _families(targets: list[Target]) -> Figure | None:
    figure, axes = _figure()
    ax = axes[0, 0]
    drawn = False
    for name, target, colour in targets:
        families = target.data.families
        if families.empty:
            continue
        growing = sorted(
            target.family_fits, key=lambda f: target.family_fits[f].slope, reverse=True
        )[:FAMILIES_PER_TARGET]
        chosen = growing or list(families.iloc[-1].nlargest(FAMILIES_PER_TARGET).index)
        x = target.data.threads["elapsed"].to_numpy(dtype=float)
        for style, family in zip(_LINESTYLES, chosen, strict=False):
            y = families[family].to_numpy(dtype=float)
            drawn |= _line(ax, x, y, color=colour, linestyle=style, label=f"{name}: {family}")
    ax.set_ylabel("threads")
    return _finish(figure, axes, drawn)


def _process_series(column: str, ylabel: str) -> Callable[[list[Target]], Figure | None]:
    def make(targets: list[Target]) -> Figure | None:
        figure, axes = _figure()
        drawn = False
        for name, target, colour in targets:
            drawn |= _line(axes[0, 0], *_column(target, column), color=colour, label=name)
        axes[0, 0].set_ylabel(ylabel)
        return _finish(figure, axes, drawn)

    return make


def _cpu(targets: list[Target]) -> Figure | None:
    figure, axes = _figure()
    ax = axes[0, 0]
    drawn = False
    for name, target, colour in targets:
        drawn |= _line(ax, *_column(target, "cpu_percent"), color=colour, label=name)
        spans = _idle_spans(target)
        if len(spans):
            verts = [[(a, 0), (a, 1), (b, 1), (b, 0)] for a, b in spans / 60.0]
            ax.add_collection(
                PolyCollection(
                    verts,
                    transform=ax.get_xaxis_transform(),
                    facecolor=colour,
                    alpha=0.12,
                    edgecolor="none",
                ),
                autolim=False,
            )
        if (target.cpu_states == IDLE).any():
            ax.plot([], [], color=colour, alpha=0.3, linewidth=8, label=f"{name} idle")
    ax.set_ylabel("CPU %")
    return _finish(figure, axes, drawn)


def _idle_spans(target: TargetAnalysis) -> np.ndarray:
    """(start, end) elapsed seconds of each run of consecutive idle chat intervals."""
    chats = target.data.chats
    idle = idle_intervals(chats)
    if not idle.any():
        return np.empty((0, 2))
    edges = np.diff(np.concatenate([[0], idle.astype(np.int8), [0]]))
    first, last = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    ends = chats["elapsed"].to_numpy(dtype=float)
    widths = chats["interval_s"].to_numpy(dtype=float, na_value=0.0)
    return np.column_stack([ends[first] - widths[first], ends[last]])


def _loop_lag(analysis: Analysis) -> Callable[[list[Target]], Figure | None]:
    field_name = analysis.settings.loop_lag_field

    def make(targets: list[Target]) -> Figure | None:
        if field_name is None:
            return None
        figure, axes = _figure()
        drawn = False
        for name, target, colour in targets:
            health = target.data.health
            column = BODY_PREFIX + field_name
            if column in health.columns:
                x, y = health["elapsed"].to_numpy(dtype=float), health[column].to_numpy(float)
                drawn |= _line(axes[0, 0], x, y, color=colour, label=name)
        axes[0, 0].set_ylabel("loop lag (ms)")
        return _finish(figure, axes, drawn)

    return make


def _ttft(targets: list[Target]) -> Figure | None:
    figure, axes = _figure()
    ax = axes[0, 0]
    drawn = False
    for name, target, colour in targets:
        series = interval_quantiles(target.data.chats, "ttft_hist", (0.5, 0.95), PLOT_POINTS)
        x = series["elapsed"].to_numpy()
        drawn |= _line(ax, x, series["p95"].to_numpy(), color=colour, label=f"{name} p95")
        _line(ax, x, series["p50"].to_numpy(), color=colour, linestyle="--", label=f"{name} p50")
    ax.set_ylabel("TTFT (s)")
    return _finish(figure, axes, drawn)


def _outcomes(targets: list[Target]) -> Figure | None:
    figure, axes = _figure(2, 2)
    drawn = False
    for ax, outcome in zip(axes.flat, _OUTCOME_PANELS, strict=True):
        for name, target, colour in targets:
            chats = target.data.chats
            if chats.empty:
                continue
            per_minute = chats[outcome].to_numpy(float) / chats["interval_s"].to_numpy(float) * 60
            drawn |= _line(
                ax, chats["elapsed"].to_numpy(float), per_minute, color=colour, label=name
            )
        ax.set_title(f"{outcome} per minute", fontsize=9)
        ax.set_ylim(bottom=0, top=max(ax.get_ylim()[1], 1.0))
    return _finish(figure, axes, drawn)
