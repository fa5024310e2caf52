"""Interactive charts for report.html: the run's key series as data for assets/charts.js.

A multi-day run needs zoom and hover, and a report must open offline and stay one
file: so the charts are drawn in the browser by a small script of soak's own
(soak/report/assets/charts.js, inlined in the page) from the JSON built here, with
no chart library to download. Same time axis, shaded spans and fit spans as the PNG
plots (soak.report.plots), which stay for report.md and for readers without scripts.
Series are binned to at most CHART_POINTS points and rounded to SIGNIFICANT digits,
so a 7-day run stays a few hundred kB.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any

import matplotlib
import numpy as np
from matplotlib.colors import to_hex

from soak.analyze.chats import interval_quantiles
from soak.analyze.summary import Analysis, TargetAnalysis
from soak.analyze.trend import downsample
from soak.report.plots import TimeAxis, fit_line, turn_rates

#: Most points per series (binned means, as the PNG plots draw).
CHART_POINTS = 3000
#: Significant digits kept of each value.
SIGNIFICANT = 4
#: Outcomes drawn on the non-ok chart.
NOT_OK = ("stall", "error", "disconnect", "violation", "first_token_timeout", "mismatch")
#: Dash patterns (SVG stroke-dasharray) of the second and third line of a target.
DASHED, DOTTED = "6 4", "2 3"


@dataclass
class ChartSeries:
    """One line: label, colour (#rrggbb), dash pattern, x in elapsed s, y (None: a gap)."""

    label: str
    colour: str
    x: list[float]
    y: list[float | None]
    dash: str = ""


@dataclass
class Chart:
    """One chart: y unit ("s" reads as ms/s), log y axis, y axis from zero."""

    id: str
    title: str
    unit: str
    series: list[ChartSeries] = field(default_factory=list)
    log: bool = False
    zero: bool = False


def chart_data(analysis: Analysis) -> dict[str, Any]:
    """The JSON charts.js draws: the run's time axis, its shaded spans, the charts with data."""
    axis = TimeAxis.of(analysis)
    palette = matplotlib.color_sequences["tab10"]
    targets = [
        (name, target, to_hex(palette[i % len(palette)]))
        for i, (name, target) in enumerate(analysis.targets.items())
    ]
    charts = [
        _process(targets, "threads", "Threads (dashed: the verdict's fit)", "threads"),
        _process(targets, "rss_mb", "Resident memory (dashed: the verdict's fit)", "MB"),
        _process(targets, "fds", "Open file descriptors (dashed: the verdict's fit)", "fds"),
        _cpu(targets),
        _latency(targets),
        _throughput(targets),
        _not_ok(targets),
        _loop_lag(targets),
    ]
    return {
        "x_label": axis.label,
        "x_scale": axis.scale,
        "x_end": round(axis.end_s, 1),
        "idle": np.round(axis.idle, 1).tolist(),
        "saturated": np.round(axis.saturated, 1).tolist(),
        "charts": [asdict(chart) for chart in charts if chart.series],
    }


def charts_script() -> str:
    """The chart script, to inline in the page."""
    return resources.files("soak.report").joinpath("assets/charts.js").read_text("utf-8")


def charts_style() -> str:
    """The charts' CSS, to inline in the page."""
    return resources.files("soak.report").joinpath("assets/charts.css").read_text("utf-8")


Targets = list[tuple[str, TargetAnalysis, str]]


def _series(
    label: str, colour: str, x: np.ndarray, y: np.ndarray, dash: str = "", binned: bool = True
) -> ChartSeries | None:
    """A series binned to CHART_POINTS means and rounded; None when it has no finite value."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x)
    x, y = x[keep], y[keep]
    if not np.isfinite(y).any():
        return None
    if binned:
        with np.errstate(all="ignore"):
            x, y = downsample(x, y, CHART_POINTS, np.nanmean)
    order = np.argsort(x, kind="stable")
    values = [float(f"{v:.{SIGNIFICANT}g}") if np.isfinite(v) else None for v in y[order]]
    return ChartSeries(label, colour, np.round(x[order], 1).tolist(), values, dash)


def _add(chart: Chart, *series: ChartSeries | None) -> None:
    chart.series.extend(s for s in series if s is not None)


def _process(targets: Targets, column: str, title: str, unit: str) -> Chart:
    """A process series per target, with its verdict fit over the span it was fitted on."""
    chart = Chart(column, title, unit)
    for name, target, colour in targets:
        process = target.data.process
        if column not in process:
            continue
        _add(chart, _series(name, colour, process["elapsed"], process[column]))
        trend = target.trends.get(column)
        if trend is not None:
            xs, fitted = fit_line(trend)
            _add(chart, _series(f"{name} fit", colour, xs, fitted, DASHED, binned=False))
    return chart


def _cpu(targets: Targets) -> Chart:
    chart = Chart("cpu", "CPU % of one core (idle CPU: the shaded idle intervals)", "%", zero=True)
    for name, target, colour in targets:
        process = target.data.process
        if "cpu_percent" in process:
            _add(chart, _series(name, colour, process["elapsed"], process["cpu_percent"]))
    return chart


def _latency(targets: Targets) -> Chart:
    chart = Chart("latency", "Time to first token and reply time per interval (p95)", "s", log=True)
    for name, target, colour in targets:
        for column, what, dash in (
            ("ttft_hist", "TTFT p95", ""),
            ("reply_hist", "reply p95", DASHED),
        ):
            if target.data.chats.empty or column not in target.data.chats:
                continue
            series = interval_quantiles(target.data.chats, column, (0.95,), CHART_POINTS)
            _add(chart, _series(f"{name} {what}", colour, series["elapsed"], series["p95"], dash))
    return chart


def _throughput(targets: Targets) -> Chart:
    chart = Chart("throughput", "Turns per second (dashed: not ok)", "turns/s", zero=True)
    for name, target, colour in targets:
        if target.data.chats.empty:
            continue
        x, ok, failed = turn_rates(target)
        _add(
            chart,
            _series(f"{name} ok", colour, x, ok),
            _series(f"{name} not ok", colour, x, failed, DASHED),
        )
    return chart


def _not_ok(targets: Targets) -> Chart:
    """Turns per interval of each outcome that happened (summed when binned)."""
    chart = Chart(
        "outcomes", "Turns that were not ok, per interval, by outcome", "turns", zero=True
    )
    dashes = ("", DASHED, DOTTED)
    for name, target, colour in targets:
        chats = target.data.chats
        happened = [
            o for o in NOT_OK if o in chats and chats[o].fillna(0).to_numpy(dtype=float).any()
        ]
        for index, outcome in enumerate(happened):
            x, y = downsample(
                chats["elapsed"].to_numpy(dtype=float),
                chats[outcome].to_numpy(dtype=float),
                CHART_POINTS,
                np.nansum,
            )
            label = f"{name} {outcome.replace('_', ' ')}"
            _add(chart, _series(label, colour, x, y, dashes[index % len(dashes)], binned=False))
    return chart


def _loop_lag(targets: Targets) -> Chart:
    chart = Chart("loop_lag", "Event-loop lag per interval (max; dashed: p99)", "s", log=True)
    for name, target, colour in targets:
        drift = target.drift
        if drift is None or drift.table.empty:
            continue
        table = drift.table
        middle = (table["start_s"] + table["end_s"]).to_numpy(dtype=float) / 2
        for column, what, dash in (
            ("loop_lag_max_s", "max", ""),
            ("loop_lag_p99_s", "p99", DASHED),
        ):
            if column in table:
                _add(chart, _series(f"{name} {what}", colour, middle, table[column], dash))
    return chart
