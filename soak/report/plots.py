"""Report plots: PNG files on one time axis, x in elapsed minutes (hours for long runs).

Every plot of a run spans the same x range, from the run's start to its end, and
shades the same spans: idle intervals (no load: the idle-CPU phase) and the times
soak's own load processes were saturated (what a plot shows there is suspect). Fit
lines are drawn only over the span they were fitted on.

Uses matplotlib's object API (`Figure.savefig` renders PNG with Agg) and never
pyplot, so no GUI backend or global figure state is involved. Series are reduced to
at most PLOT_POINTS bins first, so a 7-day run plots in seconds. Plots without data
(no /health fields, no generator.jsonl, ...) are left out.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from soak.analyze.chats import idle_intervals, interval_quantiles
from soak.analyze.generator import (
    SATURATED_CPU_PERCENT,
    SATURATED_LAG_S,
    saturated,
    worker_names,
)
from soak.analyze.health import field_names
from soak.analyze.load import BODY_PREFIX
from soak.analyze.summary import Analysis, TargetAnalysis
from soak.analyze.trend import Trend, downsample, lower_envelope
from soak.formatting import format_rate, format_seconds

#: Most points drawn per series.
PLOT_POINTS = 3000
#: Thread-name families drawn per target in the stacked plot (the rest is "other").
FAMILIES_PER_TARGET = 6
#: /health fields drawn (those that change the most).
HEALTH_PANELS = 9
_OUTCOME_PANELS = ("stall", "error", "disconnect", "violation", "first_token_timeout", "mismatch")
_LINESTYLES = ("-", "--", ":", "-.")
_DPI = 100
#: Runs longer than this are plotted in hours instead of minutes (s).
_HOURS_FROM_S = 3 * 3600.0

Target = tuple[str, TargetAnalysis, tuple[float, ...]]


@dataclass(frozen=True)
class Plot:
    """One written plot: file name stem, title and path of the PNG."""

    name: str
    title: str
    path: Path


#: Shading of idle intervals and of soak-saturated spans: (colour, alpha, legend label).
IDLE_SHADE = ("#2b6cb0", 0.10, "idle (no load)")
SATURATED_SHADE = ("grey", 0.28, "soak saturated")


@dataclass(frozen=True)
class TimeAxis:
    """The run's one time axis: elapsed seconds → plotted x (minutes or hours), its
    range, and the (start, end) elapsed spans shaded on every plot."""

    scale: float
    label: str
    end_s: float
    idle: np.ndarray
    saturated: np.ndarray

    def __call__(self, seconds: np.ndarray | float) -> np.ndarray:
        return np.asarray(seconds, dtype=float) / self.scale

    @classmethod
    def of(cls, analysis: Analysis) -> TimeAxis:
        """The axis of a run: its duration, idle spans of any target, saturated spans."""
        duration = float(analysis.summary.duration_s or 0.0)
        ends = [duration] + [
            float(frame["elapsed"].max())
            for target in analysis.targets.values()
            for frame in (target.data.process, target.data.chats)
            if not frame.empty
        ]
        idle = [_idle_spans(target) for target in analysis.targets.values()]
        scale, label = (
            (3600.0, "elapsed (h)") if duration > _HOURS_FROM_S else (60.0, "elapsed (min)")
        )
        return cls(
            scale, label, max(ends), _merged(idle), np.asarray(analysis.saturated).reshape(-1, 2)
        )


def render_plots(analysis: Analysis, plots_dir: Path) -> list[Plot]:
    """Write every plot that has data as plots/<name>.png; returns them in report order."""
    plots_dir.mkdir(parents=True, exist_ok=True)
    colours = matplotlib.color_sequences["tab10"]
    targets = [
        (plain(name), target, colours[i % len(colours)])
        for i, (name, target) in enumerate(analysis.targets.items())
    ]
    axis = TimeAxis.of(analysis)
    makers: list[tuple[str, str, Callable[[list[Target], TimeAxis], Figure | None]]] = [
        (
            "threads",
            "Threads (dashed: the verdict's Theil–Sen fit, band: its 95% CI; dotted: restarts)",
            _trend("threads", "threads"),
        ),
        ("thread_families", "Threads by name family (stacked; digits folded to N)", _families),
        (
            "rss",
            "Resident memory, MB (dashed: fit, band: 95% CI; dash-dot: lower envelope of a "
            "sawtooth)",
            _trend("rss_mb", "RSS (MB)", " MB"),
        ),
        ("cpu", "CPU % of one core (idle CPU: the shaded idle intervals)", _cpu),
        ("fds", "Open file descriptors (dashed: fit, band: 95% CI)", _trend("fds", "open fds")),
        (
            "drift",
            "Drift per interval: loop lag, ping and /health latency above their floor (x: stalls)",
            _drift,
        ),
        ("health", "Numeric /health fields (the ones that changed most)", _health),
        (
            "latency",
            "Time to first token and reply time per interval (solid p95, dashed p50)",
            _latency,
        ),
        ("throughput", "Turns per second (solid: ok, dashed: not ok)", _throughput),
        ("outcomes", "Turns per interval of each outcome other than ok that happened", _outcomes),
        ("soak", "soak's own load processes", _soak(analysis)),
    ]
    written = []
    with warnings.catch_warnings():
        # a thread or field name in a script the font lacks: drawn as a box, not worth a warning
        warnings.filterwarnings("ignore", "Glyph .* missing from font", UserWarning)
        for name, title, make in makers:
            plot = save_plot(make(targets, axis), plots_dir, name, title)
            if plot is not None:
                written.append(plot)
    return written


def save_plot(figure: Figure | None, plots_dir: Path, name: str, title: str) -> Plot | None:
    """Save `figure` as plots_dir/NAME.png with its title; None (and no stale file) if empty."""
    path = plots_dir / f"{name}.png"
    if figure is None:
        path.unlink(missing_ok=True)
        return None
    figure.suptitle(title, fontsize=10, x=0.01, horizontalalignment="left")
    figure.savefig(path, dpi=_DPI, format="png")
    return Plot(name=name, title=title, path=path)


def plain(text: str) -> str:
    """A label from the server (thread, field, target name) with "$" escaped, so that
    matplotlib draws it as written instead of parsing it as math (which can fail)."""
    return text.replace("$", r"\$")


def _figure(
    axis: TimeAxis, rows: int = 1, cols: int = 1, height: float = 2.4
) -> tuple[Figure, np.ndarray]:
    """A figure of rows x cols axes sharing x, with fixed margins (in inches, so every
    plot lines up; a layout engine would cost seconds per report on long runs)."""
    inches = 3.4 if rows == 1 else height * rows + 0.4
    figure = Figure(figsize=(10, inches))
    axes = figure.subplots(rows, cols, sharex=True, squeeze=False)
    figure.subplots_adjust(
        left=0.085,
        right=0.99,
        top=1 - (0.42 if rows == 1 else 0.6) / inches,
        bottom=0.55 / inches,
        hspace=0.45 if rows > 1 else 0.2,
        wspace=0.2,
    )
    for ax in axes.flat:
        ax.grid(True, alpha=0.3)
    axes[0, 0].set_xlim(0.0, float(axis(axis.end_s)) or 1.0)  # shared: the run's whole span
    for ax in axes[-1]:
        ax.set_xlabel(axis.label)
    return figure, axes


def _line(ax: Axes, axis: TimeAxis, x: np.ndarray, y: np.ndarray, **style: object) -> bool:
    """Draw y over x (elapsed s), binned to PLOT_POINTS means; False when nothing to draw."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    finite = np.isfinite(y) & np.isfinite(x)
    if not finite.any():
        return False
    xs, ys = downsample(x[finite], y[finite], PLOT_POINTS, np.nanmean)
    ax.plot(axis(xs), ys, linewidth=1.2, **style)
    return True


def _finish(figure: Figure, axes: np.ndarray, drawn: bool, axis: TimeAxis) -> Figure | None:
    """The figure with the run's spans shaded on every panel and legends; None if empty."""
    if not drawn:
        return None
    for index, ax in enumerate(axes.flat):
        if not ax.get_visible():
            continue
        for spans, (colour, alpha, label) in ((axis.idle, IDLE_SHADE),
                                              (axis.saturated, SATURATED_SHADE)):  # fmt: skip
            _shade(ax, axis, spans, colour, alpha)
            if len(spans) and index == 0:
                ax.plot([], [], color=colour, alpha=alpha * 2.5, linewidth=8, label=label)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
    return figure


def _column(target: TargetAnalysis, column: str) -> tuple[np.ndarray, np.ndarray]:
    process = target.data.process
    return process["elapsed"].to_numpy(dtype=float), process[column].to_numpy(dtype=float)


def _shade(ax: Axes, axis: TimeAxis, spans: np.ndarray, colour: object, alpha: float) -> None:
    """Shade (start, end) elapsed spans over the whole height of `ax`."""
    if not len(spans):
        return
    verts = [[(a, 0), (a, 1), (b, 1), (b, 0)] for a, b in axis(spans)]
    ax.add_collection(
        PolyCollection(
            verts,
            transform=ax.get_xaxis_transform(),
            facecolor=colour,
            alpha=alpha,
            edgecolor="none",
        ),
        autolim=False,
    )


def _trend(
    column: str, ylabel: str, quantity: str = ""
) -> Callable[[list[Target], TimeAxis], Figure | None]:
    """A process series per target with its verdict fit, the fit's 95% band, the lower
    envelope when fitted on one, and restarts."""

    def make(targets: list[Target], axis: TimeAxis) -> Figure | None:
        figure, axes = _figure(axis)
        ax = axes[0, 0]
        drawn = False
        for name, target, colour in targets:
            x, y = _column(target, column)
            drawn |= _line(ax, axis, x, y, color=colour, label=name, alpha=0.85)
            trend = target.trends.get(column)
            if trend is not None:
                fit = trend.fit
                xs, fitted = fit_line(trend)
                middle = (fit.x_start + fit.x_end) / 2
                centre = float(fit.at(middle))
                low = centre + fit.low * (xs - middle)
                high = centre + fit.high * (xs - middle)
                shape = f" ({trend.shape})" if trend.shape != "growing" else ""
                ax.plot(
                    axis(xs),
                    fitted,
                    "--",
                    color=colour,
                    linewidth=1.6,
                    label=f"{name} fit {format_rate(fit.per_hour, quantity)}{shape}",
                )
                ax.fill_between(axis(xs), np.minimum(low, high), np.maximum(low, high),
                                color=colour, alpha=0.18, linewidth=0)  # fmt: skip
                if trend.envelope and target.headline is not None:
                    rows = target.data.process.iloc[target.headline.start : target.headline.stop]
                    ex = rows["elapsed"].to_numpy(dtype=float)
                    ey = rows[column].to_numpy(dtype=float)
                    keep = np.isfinite(ey)
                    envelope = lower_envelope(ey[keep], trend.envelope_window)
                    _line(ax, axis, ex[keep], envelope, color=colour, linestyle="-.",
                          label=f"{name} lower envelope")  # fmt: skip
            for segment in target.segments[1:]:
                ax.axvline(axis(segment.t_start), color=colour, linestyle=":", linewidth=1)
        ax.set_ylabel(ylabel)
        return _finish(figure, axes, drawn, axis)

    return make


def fit_line(trend: Trend) -> tuple[np.ndarray, np.ndarray]:
    """(elapsed s, fitted value) of a verdict fit, over only the span it was fitted on."""
    xs = np.linspace(trend.fit.x_start, trend.fit.x_end, 50)
    return xs, np.asarray(trend.fit.at(xs), dtype=float)


def _families(targets: list[Target], axis: TimeAxis) -> Figure | None:
    rows = [
        (name, target, colour) for name, target, colour in targets if not target.data.families.empty
    ]
    if not rows:
        return None
    figure, axes = _figure(axis, len(rows), height=2.6)
    for ax, (name, target, _) in zip(axes[:, 0], rows, strict=True):
        families = target.data.families
        growing = sorted(target.family_fits, key=lambda f: -target.family_fits[f].slope)
        largest = list(families.max().sort_values(ascending=False).index)
        chosen = list(dict.fromkeys([*growing[:3], *largest]))[:FAMILIES_PER_TARGET]
        x = target.data.threads["elapsed"].to_numpy(dtype=float)
        layers, labels = [], []
        for family in chosen:
            xs, ys = downsample(x, families[family].to_numpy(dtype=float), PLOT_POINTS, np.nanmean)
            layers.append(ys)
            labels.append(plain(str(family)))
        rest = families.drop(columns=chosen).sum(axis=1).to_numpy(dtype=float)
        if rest.any():
            xs, ys = downsample(x, rest, PLOT_POINTS, np.nanmean)
            layers.append(ys)
            labels.append("other")
        ax.stackplot(axis(xs), np.vstack(layers), labels=labels, alpha=0.85)
        ax.set_title(name, fontsize=9, loc="left")
        ax.set_ylabel("threads")
    return _finish(figure, axes, True, axis)


def _cpu(targets: list[Target], axis: TimeAxis) -> Figure | None:
    figure, axes = _figure(axis)
    ax = axes[0, 0]
    drawn = False
    for name, target, colour in targets:
        drawn |= _line(ax, axis, *_column(target, "cpu_percent"), color=colour, label=name)
    ax.set_ylabel("CPU %")
    return _finish(figure, axes, drawn, axis)


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


def _merged(span_sets: list[np.ndarray]) -> np.ndarray:
    """The union of (start, end) spans, as sorted spans that do not overlap."""
    spans = sorted(map(tuple, np.concatenate([np.empty((0, 2)), *span_sets])))
    merged: list[list[float]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return np.asarray(merged, dtype=float).reshape(-1, 2)


def _drift(targets: list[Target], axis: TimeAxis) -> Figure | None:
    rows = [t for t in targets if t[1].drift is not None and t[1].drift.summary["signals"]]
    if not rows:
        return None
    figure, axes = _figure(axis, len(rows), height=2.8)
    signals = (
        ("loop_lag_max_s", "loop lag max", {"linestyle": "-"}),
        ("loop_lag_p99_s", "loop lag p99", {"linestyle": "--"}),
        ("loop_lag_p50_s", "loop lag p50", {"linestyle": ":"}),
        ("ping_excess_s", "ping p99 above floor", {"linestyle": "-.", "alpha": 0.7}),
        ("health_latency_excess_s", "/health latency above floor", {"alpha": 0.35}),
    )
    for ax, (name, target, colour) in zip(axes[:, 0], rows, strict=True):
        table = target.drift.table
        middle = (table["start_s"] + table["end_s"]).to_numpy(dtype=float) / 2
        floor = 1e-4
        for key, label, style in signals:
            if key in table:
                y = np.maximum(table[key].to_numpy(dtype=float), floor)
                _line(ax, axis, middle, y, color=colour, label=label, **style)
        ax.axhline(target.drift.summary["spike_threshold_s"], color="#9b1c1c", linewidth=0.8,
                   alpha=0.6, label="spike threshold")  # fmt: skip
        stalls = table["stall"].to_numpy(dtype=float) > 0
        if stalls.any():
            ax.plot(axis(middle[stalls]), np.full(stalls.sum(), 0.98), "x", color="#9b1c1c",
                    transform=ax.get_xaxis_transform(), markersize=5, label="stalls")  # fmt: skip
        _seconds_axis(ax)
        ax.set_ylabel("late by")
        ax.set_title(name, fontsize=9, loc="left")
    return _finish(figure, axes, True, axis)


def _health(targets: list[Target], axis: TimeAxis) -> Figure | None:
    changing: dict[str, float] = {}
    for _, target, _ in targets:
        health = target.data.health
        for path in field_names(health):
            values = health[BODY_PREFIX + path].to_numpy(dtype=float)
            values = values[np.isfinite(values)]
            if len(values) and values.max() != values.min():
                spread = (values.max() - values.min()) / (abs(values).max() or 1.0)
                changing[path] = max(changing.get(path, 0.0), spread)
    chosen = sorted(changing, key=lambda p: -changing[p])[:HEALTH_PANELS]
    if not chosen:
        return None
    cols = 3
    figure, axes = _figure(axis, -(-len(chosen) // cols), cols, height=2.2)
    for ax, path in zip(axes.flat, chosen, strict=False):
        for name, target, colour in targets:
            health = target.data.health
            column = BODY_PREFIX + path
            if column in health:
                _line(ax, axis, health["elapsed"].to_numpy(dtype=float),
                      health[column].to_numpy(dtype=float), color=colour, label=name)  # fmt: skip
        ax.set_title(plain(path), fontsize=8, loc="left")
    for ax in list(axes.flat)[len(chosen) :]:
        ax.set_visible(False)
    return _finish(figure, axes, True, axis)


def _latency(targets: list[Target], axis: TimeAxis) -> Figure | None:
    figure, axes = _figure(axis, 2, height=2.6)
    drawn = False
    for ax, (column, label) in zip(
        axes[:, 0], (("ttft_hist", "TTFT"), ("reply_hist", "reply time")), strict=True
    ):
        for name, target, colour in targets:
            series = interval_quantiles(target.data.chats, column, (0.5, 0.95), PLOT_POINTS)
            x = series["elapsed"].to_numpy()
            drawn |= _line(ax, axis, x, series["p95"].to_numpy(), color=colour, label=f"{name} p95")
            _line(ax, axis, x, series["p50"].to_numpy(), color=colour, linestyle="--",
                  label=f"{name} p50")  # fmt: skip
        ax.set_ylabel(label)
        if drawn:
            _seconds_axis(ax)
    return _finish(figure, axes, drawn, axis)


def _seconds_axis(ax: Axes) -> None:
    """A log y axis of seconds, labelled 1-2-5 per decade in ms or s."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0), numticks=7))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: format_seconds(value)))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _throughput(targets: list[Target], axis: TimeAxis) -> Figure | None:
    """Turns ended per second of each chat interval, ok and not ok."""
    figure, axes = _figure(axis)
    ax, drawn = axes[0, 0], False
    for name, target, colour in targets:
        if target.data.chats.empty:
            continue
        x, ok, failed = turn_rates(target)
        drawn |= _line(ax, axis, x, ok, color=colour, label=f"{name} ok")
        _line(ax, axis, x, failed, color=colour, linestyle="--", label=f"{name} not ok")
    ax.set_ylabel("turns/s")
    ax.set_ylim(bottom=0)
    return _finish(figure, axes, drawn, axis)


def turn_rates(target: TargetAnalysis) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(elapsed s, ok turns/s, not-ok turns/s) of each chat interval of a target."""
    chats = target.data.chats
    with np.errstate(divide="ignore", invalid="ignore"):
        seconds = np.where(
            chats["interval_s"].to_numpy(dtype=float) > 0, chats["interval_s"], np.nan
        )
        ok = chats["ok"].to_numpy(dtype=float)
        failed = chats["turns"].to_numpy(dtype=float) - ok
        return chats["elapsed"].to_numpy(dtype=float), ok / seconds, failed / seconds


def _outcomes(targets: list[Target], axis: TimeAxis) -> Figure | None:
    """Counts per interval of each outcome other than ok that happened (no empty panels)."""
    happened = [
        outcome
        for outcome in _OUTCOME_PANELS
        if any(
            outcome in target.data.chats and target.data.chats[outcome].fillna(0).to_numpy().any()
            for _, target, _ in targets
        )
    ]
    if not happened:
        return None
    cols = 1 if len(happened) == 1 else 2
    figure, axes = _figure(axis, -(-len(happened) // cols), cols, height=2.0)
    for ax, outcome in zip(axes.flat, happened, strict=False):
        for name, target, colour in targets:
            chats = target.data.chats
            if chats.empty or outcome not in chats:
                continue
            x = chats["elapsed"].to_numpy(dtype=float)
            counts = chats[outcome].to_numpy(dtype=float)
            xs, ys = downsample(x, counts, PLOT_POINTS, np.nansum)
            ax.step(axis(xs), ys, where="post", color=colour, linewidth=1.1, label=name)
        if len(happened) == 1:  # one panel: its name by the axis, under the figure's title
            ax.set_ylabel(f"{outcome.replace('_', ' ')} turns")
        else:
            ax.set_title(outcome.replace("_", " "), fontsize=9, loc="left")
        ax.set_ylim(bottom=0, top=max(ax.get_ylim()[1], 1.0))
    for ax in list(axes.flat)[len(happened) :]:
        ax.set_visible(False)
    return _finish(figure, axes, True, axis)


def _soak(analysis: Analysis) -> Callable[[list[Target], TimeAxis], Figure | None]:
    generator = analysis.run.generator

    def make(targets: list[Target], axis: TimeAxis) -> Figure | None:
        if generator.empty:
            return None
        figure, axes = _figure(axis, 2, height=2.4)
        colours = matplotlib.color_sequences["tab10"]
        for index, (worker, rows) in enumerate(generator.groupby(worker_names(generator))):
            x = rows["elapsed"].to_numpy(dtype=float)
            colour = colours[index % len(colours)]
            _line(axes[0, 0], axis, x, rows["cpu_percent"].to_numpy(dtype=float), color=colour,
                  label=plain(worker))  # fmt: skip
            _line(axes[1, 0], axis, x, rows["loop_lag_max_s"].to_numpy(dtype=float),
                  color=colour)  # fmt: skip
        axes[0, 0].axhline(SATURATED_CPU_PERCENT, color="#9b1c1c", linewidth=0.8, alpha=0.6)
        axes[1, 0].axhline(SATURATED_LAG_S, color="#9b1c1c", linewidth=0.8, alpha=0.6)
        axes[0, 0].set_ylabel("CPU %")
        axes[1, 0].set_ylabel("loop lag max (s)")
        return _finish(figure, axes, bool(saturated(generator).size), axis)

    return make
