"""Interactive charts: the data report.html embeds, and the chart script's own logic run
in Node on that data (skipped where Node is not installed)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from soak.analyze.summary import analyze_run
from soak.report.charts import CHART_POINTS, chart_data, charts_script, charts_style
from soak.report.html import render_html
from soak.report.plots import TimeAxis, render_plots
from tests.rundir_factory import FakeRun, FakeTarget, write_run

SCRIPT = Path(__file__).resolve().parent.parent / "soak" / "report" / "assets" / "charts.js"
DAY = 86400.0


def _saturated_after(start: float, end: float):
    def health(elapsed: float) -> dict:
        busy = start <= elapsed < end
        return {"worker": "local", "cpu_percent": 99.0 if busy else 20.0,
                "loop_lag_max_s": 0.8 if busy else 0.01}  # fmt: skip

    return health


@pytest.fixture(scope="module")
def three_day_run(tmp_path_factory) -> Path:
    """Three days at 10 s samples (26k rows per series), idle for the last 2 h, soak's own
    load process saturated for an hour on day two; threads leak one per 10 minutes."""
    leaky = FakeTarget(name="leaky", threads=lambda s: 40 + s / 600)
    steady = FakeTarget(name="steady", build="patched")
    run = FakeRun(
        targets=[leaky, steady],
        duration_s=3 * DAY,
        sample_s=10.0,
        chat_interval_s=30.0,
        idle_from_s=3 * DAY - 7200,
        warmup_s=600.0,
        checks=("threads.growth_per_hour < 1",),
        generator=_saturated_after(1.5 * DAY, 1.5 * DAY + 3600),
        generator_interval_s=30.0,
    )
    return write_run(tmp_path_factory.mktemp("charts"), run)


@pytest.fixture(scope="module")
def data(three_day_run: Path) -> dict:
    return json.loads(json.dumps(chart_data(analyze_run(three_day_run)), allow_nan=False))


def test_every_chart_shares_the_runs_time_axis_and_spans(data: dict) -> None:
    assert data["x_label"] == "elapsed (h)" and data["x_scale"] == 3600.0
    assert data["x_end"] == pytest.approx(3 * DAY, abs=60)
    [(idle_start, idle_end)] = data["idle"]
    assert idle_start == pytest.approx(3 * DAY - 7200, abs=60) and idle_end >= 3 * DAY - 60
    [(busy_start, busy_end)] = data["saturated"]
    assert busy_start == pytest.approx(1.5 * DAY, abs=120)
    assert busy_end - busy_start == pytest.approx(3600, abs=180)
    ids = [chart["id"] for chart in data["charts"]]
    assert ids[:6] == ["threads", "rss_mb", "fds", "cpu", "latency", "throughput"]
    for chart in data["charts"]:
        assert chart["series"], chart["id"]  # no empty chart
        for series in chart["series"]:
            assert 2 <= len(series["x"]) <= CHART_POINTS
            assert len(series["x"]) == len(series["y"])
            assert series["x"] == sorted(series["x"])
            assert series["x"][0] >= 0 and series["x"][-1] <= data["x_end"]
            assert series["colour"].startswith("#")


def test_fit_lines_cover_only_the_span_they_were_fitted_on(data: dict) -> None:
    threads = next(chart for chart in data["charts"] if chart["id"] == "threads")
    by_label = {series["label"]: series for series in threads["series"]}
    fit, measured = by_label["leaky fit"], by_label["leaky"]
    assert fit["dash"] and fit["x"][0] >= 600.0 - 1  # not before the warm-up
    assert fit["x"][-1] == pytest.approx(measured["x"][-1], abs=60)  # idle tail included
    slope_per_hour = (fit["y"][-1] - fit["y"][0]) / (fit["x"][-1] - fit["x"][0]) * 3600
    assert slope_per_hour == pytest.approx(6.0, rel=0.02)
    assert measured["y"][-1] == pytest.approx(40 + 3 * DAY / 600, rel=0.01)


def test_a_multi_day_run_stays_a_small_page(data: dict) -> None:
    size = len(json.dumps(data))
    assert size < 1_500_000, size  # 26k samples per series, binned to CHART_POINTS


def test_the_script_and_style_ship_as_package_resources() -> None:
    assert "soak-chart-data" in charts_script() and ".soak-chart" in charts_style()


NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed")
def test_the_chart_script_draws_and_zooms_the_real_data(data: dict, tmp_path: Path) -> None:
    """The script's own path, range and tick code on the data the page embeds."""
    (tmp_path / "data.json").write_text(json.dumps(data))
    check = tmp_path / "check.js"
    check.write_text(
        f"""
const h = require({json.dumps(str(SCRIPT))});
const data = JSON.parse(require("fs").readFileSync({json.dumps(str(tmp_path / "data.json"))}));
const out = {{}};
for (const chart of data.charts) {{
  const full = [0, data.x_end];
  const zoom = [data.x_end * 0.5, data.x_end * 0.5 + 3600];  // one hour on day two
  const [lo, hi] = h.yExtent(chart.series, zoom[0], zoom[1], chart.log, chart.zero);
  out[chart.id] = chart.series.map((s) => {{
    const path = h.pathData(s, full[0], full[1], (x) => x, (y) => y, chart.log);
    const zoomed = h.pathData(s, zoom[0], zoom[1], (x) => x, (y) => y, chart.log);
    const [a, b] = h.visibleRange(s.x, zoom[0], zoom[1]);
    return {{label: s.label, points: (path.match(/[ML]/g) || []).length,
             zoomed: (zoomed.match(/[ML]/g) || []).length, visible: b - a,
             starts: path.slice(0, 1), lo, hi,
             own: h.yExtent([s], zoom[0], zoom[1], chart.log, chart.zero)}};
  }});
}}
out.ticks = h.niceTicks(0, 72, 10);
out.logTicks = h.logTicks(0.003, 2);
out.value = [h.formatValue(0.0123, "s"), h.formatValue(2.5, "s"), h.formatValue(123456, "threads")];
out.nearest = h.nearest({{x: [0, 10, 20], y: [1, 2, 3]}}, 14);
console.log(JSON.stringify(out));
"""
    )
    result = subprocess.run([NODE, str(check)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    for chart in data["charts"]:
        for series, drawn in zip(chart["series"], out[chart["id"]], strict=True):
            finite = sum(1 for y in series["y"] if y is not None and (not chart["log"] or y > 0))
            assert drawn["points"] == finite, (chart["id"], series["label"])
            assert drawn["starts"] == "M"
            if not series["dash"] or "fit" not in series["label"]:
                # a zoom on one hour draws that hour's points and one beyond each edge
                assert 0 < drawn["zoomed"] <= drawn["visible"] < len(series["x"])
            assert drawn["lo"] < drawn["hi"]
    threads = {d["label"]: d for d in out["threads"]}
    day_two_hour = 40 + (1.5 * DAY) / 600
    low, high = threads["leaky"]["own"]
    assert low < day_two_hour < high and high - low < 20  # y follows the zoomed hour
    assert threads["leaky"]["lo"] < 50 < threads["leaky"]["hi"]  # and every shown series
    assert out["ticks"] == [0, 10, 20, 30, 40, 50, 60, 70]
    assert out["logTicks"] == [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2]
    assert out["value"] == ["12.3 ms", "2.5 s", "123,456 threads"]
    assert out["nearest"] == [10, 2]


def test_png_plots_share_the_axis_and_leave_out_outcomes_that_never_happened(
    three_day_run: Path, tmp_path: Path
) -> None:
    analysis = analyze_run(three_day_run)
    axis = TimeAxis.of(analysis)
    assert axis.label == "elapsed (h)" and axis.end_s == pytest.approx(3 * DAY, abs=60)
    assert len(axis.idle) == 1 and len(axis.saturated) == 1
    names = [plot.name for plot in render_plots(analysis, tmp_path / "plots")]
    assert "outcomes" not in names  # every turn was ok: no six empty panels
    assert {"threads", "rss", "cpu", "latency", "throughput", "soak"} <= set(names)
    assert sorted(p.stem for p in (tmp_path / "plots").glob("*.png")) == sorted(names)


def test_report_html_embeds_the_charts_safely(tmp_path: Path) -> None:
    """The page carries the chart data and script inline (offline, one file); a target
    name that tries to close the script element stays data."""
    hostile = "</script><script>alert(1)</script>"
    run = FakeRun(targets=[FakeTarget(name=hostile)], duration_s=600.0, idle_from_s=500.0)
    run_dir = write_run(tmp_path, run)
    analysis = analyze_run(run_dir)
    page = render_html(analysis, render_plots(analysis, tmp_path / "plots"))
    assert "<script>alert(1)" not in page and page.count("</script>") == 2
    start = page.index('id="soak-chart-data">') + len('id="soak-chart-data">')
    embedded = json.loads(page[start : page.index("</script>", start)])
    assert embedded == json.loads(json.dumps(chart_data(analysis)))
    assert embedded["charts"][0]["series"][0]["label"] == hostile
    assert charts_script() in page and 'id="soak-charts"' in page


DOM_STUB = Path(__file__).resolve().parent / "data" / "dom_stub.js"


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed")
def test_the_page_script_builds_every_chart_and_zooms_them_together(
    data: dict, tmp_path: Path
) -> None:
    """charts.js as the page runs it (on a small DOM): one figure per chart, a line per
    series; a drag on one chart zooms all of them, a double-click restores them."""
    check = tmp_path / "page.js"
    check.write_text(
        f"""
require({json.dumps(str(DOM_STUB))});
const fs = require("fs");
const root = new Node("div");
byId["soak-charts"] = root;
const data = fs.readFileSync({json.dumps(str(tmp_path / "d.json"))}, "utf8");
byId["soak-chart-data"] = {{ textContent: data }};
require("vm").runInThisContext(fs.readFileSync({json.dumps(str(SCRIPT))}, "utf8"));  // as the page
const figures = root.children.filter((n) => n.tag === "figure");
const paths = () => figures.map((f) => f.all("path").map((p) => p.attrs.d));
const before = paths();
const svg = figures[0].all("svg")[0];
svg.fire("mousedown", {{ clientX: 400, preventDefault() {{}} }});
svg.fire("mousemove", {{ clientX: 500 }});
const tip = figures[0].children.find((n) => n.tag === "div" && !n.hidden && n.textContent);
svg.fire("mouseup", {{ clientX: 500 }});
const zoomed = paths();
svg.fire("dblclick", {{}});
console.log(JSON.stringify({{
  figures: figures.length,
  lines: before.map((p) => p.length),
  changed: zoomed.map((p, i) => p.some((d, j) => d !== before[i][j])),
  restored: JSON.stringify(paths()) === JSON.stringify(before),
  tip: tip ? tip.textContent : null,
  shaded: figures[0].all("rect").filter((r) => r.attrs.fill).length,
}}));
"""
    )
    (tmp_path / "d.json").write_text(json.dumps(data))
    result = subprocess.run([NODE, str(check)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["figures"] == len(data["charts"])
    assert out["lines"] == [len(chart["series"]) for chart in data["charts"]]
    assert all(out["changed"]) and out["restored"]
    assert out["tip"] and "leaky" in out["tip"] and "h" in out["tip"]
    assert out["shaded"] == 2  # the idle tail and the saturated hour
