"""report.html: one self-contained page (inline CSS, plots as base64 PNG data URIs).

Every string that comes from the run directory (target names, health fields, thread
names, error texts, anomaly details) goes through `html.escape`.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterable
from typing import Any

import pandas as pd

from soak.analyze.summary import Analysis
from soak.formatting import format_number, format_rate, format_seconds
from soak.model import RunSummary
from soak.report.charts import chart_data, charts_script, charts_style
from soak.report.numbers import MISSING, key_numbers, verdict_notes, verdict_rows
from soak.report.plots import Plot
from soak.rundir import safe_name
from soak.units import format_duration

#: Rows of the anomalies and events tables, and characters of one detail cell.
TABLE_ROWS = 200
DETAIL_CHARS = 400
#: /health fields listed per target.
HEALTH_FIELDS = 100

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: #1d2330; margin: 0 auto; max-width: 1180px; padding: 1.5rem; }
h1 { font-size: 1.5rem; margin: 0 0 .3rem; } h2 { font-size: 1.2rem; margin-top: 2rem;
  border-bottom: 1px solid #dde1e8; padding-bottom: .2rem; } h3 { font-size: 1rem; }
table { border-collapse: collapse; margin: .5rem 0 1rem; width: 100%; }
th, td { border: 1px solid #dde1e8; padding: .3rem .5rem; text-align: left;
         vertical-align: top; }
th { background: #f3f5f8; font-weight: 600; }
td.num { font-variant-numeric: tabular-nums; white-space: nowrap; }
.badge { display: inline-block; border-radius: 4px; padding: .05rem .5rem; font-weight: 700;
         text-transform: uppercase; font-size: .85em; }
.pass { background: #dff3e4; color: #17612d; } .fail { background: #fbe1e1; color: #9b1c1c; }
.skipped { background: #eef0f4; color: #4b5563; }
.inconclusive { background: #fff1cc; color: #7a4b00; }
.verdict { font-size: 1.6rem; padding: .2rem .9rem; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: .1rem 1rem; }
dl.meta dt { color: #5b6475; } dl.meta dd { margin: 0; }
figure { margin: 1rem 0; } figure img { max-width: 100%; border: 1px solid #dde1e8; }
figcaption { color: #5b6475; font-size: .9em; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: .9em; }
.detail { white-space: pre-wrap; word-break: break-word; }
.muted { color: #5b6475; }
.warn { background: #fff6dd; border: 1px solid #e8c96a; padding: .5rem .8rem; border-radius: 4px; }
ul.findings li { margin: .25rem 0; }
"""


def e(value: Any) -> str:
    """Escape any value for HTML text or attribute use."""
    return html.escape("" if value is None else str(value), quote=True)


def render_html(analysis: Analysis, plots: list[Plot]) -> str:
    """The whole report page."""
    summary = analysis.summary
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>soak report: {e(summary.run_id)}</title>",
        f"<style>{_CSS}</style></head><body>",
        _header(summary),
        _verdict(summary),
        _saturation_warning(summary),
        _findings(summary),
        _criteria(summary),
        _numbers(summary),
        _charts(analysis),
        _plots(plots),
        _drift(summary),
        _soak(summary),
        _anomalies(analysis),
        _events(analysis),
        _health_fields(summary),
        f'<p class="muted">Written by soak {e(summary.soak_version)} from '
        f"<code>{e(summary.run_dir)}</code>.</p>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _badge(status: str, extra: str = "") -> str:
    classes = " ".join(filter(None, ("badge", status, extra)))
    return f'<span class="{e(classes)}">{e(status)}</span>'


def _table(headers: Iterable[str], rows: Iterable[Iterable[str]], numeric: int = 0) -> str:
    """A table of already-escaped cells; the first `numeric` columns get the num style."""
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{cell}</td>' if i < numeric else f"<td>{cell}</td>"
            for i, cell in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _header(summary: RunSummary) -> str:
    meta = [
        ("Profile", summary.profile_name),
        ("Label", summary.label),
        ("Status", summary.status),
        ("Started", summary.started_at_iso),
        ("Ended", summary.ended_at_iso),
        ("Duration", format_duration(summary.duration_s)),
        ("Warm-up", format_duration(summary.warmup_s) if summary.warmup_s else "none"),
        ("Recorded with", f"soak {summary.recorded_with}"),
    ]
    items = "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in meta)
    return (
        f"<header><h1>soak report: {e(summary.run_id)}</h1>"
        f"<p>{_badge(summary.verdict or '', 'verdict')}</p>"
        f'<dl class="meta">{items}</dl></header>'
    )


def _verdict(summary: RunSummary) -> str:
    rows = [
        (e(name), e(build), _badge(verdict), e(why) or '<span class="muted">-</span>')
        for name, build, verdict, why in verdict_rows(summary)
    ]
    headers = ("Target", "Build", "Verdict", "Why")
    notes = "".join(f'<p class="warn">{e(note)}</p>' for note in verdict_notes(summary))
    return f'<section id="verdict"><h2>Verdict</h2>{_table(headers, rows)}{notes}</section>'


def _criteria(summary: RunSummary) -> str:
    if not summary.criteria:
        return (
            '<section id="criteria"><h2>Criteria</h2><p>No criteria apply to any target: '
            "nothing was judged.</p></section>"
        )
    sections = ['<section id="criteria"><h2>Criteria</h2>']
    for name in summary.targets:
        rows = [
            (_badge(c.status), f"<code>{e(c.expression)}</code>", e(c.message))
            for c in summary.checks_of(name)
        ]
        anchor = e(f"target-{safe_name(name, 'target')}")
        table = _table(("Status", "Criterion", "Result"), rows)
        sections.append(f'<h3 id="{anchor}">{e(name)}</h3>{table}')
    sections.append("</section>")
    return "".join(sections)


def _numbers(summary: RunSummary) -> str:
    headers = ["", *(e(name) for name in summary.targets)]
    rows = [(e(label), *(e(cell) for cell in cells)) for label, cells in key_numbers(summary)]
    return f'<section id="numbers"><h2>Key numbers</h2>{_table(headers, rows)}</section>'


def _plots(plots: list[Plot]) -> str:
    figures = []
    for plot in plots:
        data = base64.b64encode(plot.path.read_bytes()).decode("ascii")
        figures.append(
            f'<figure><img alt="{e(plot.title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{e(plot.title)}</figcaption></figure>"
        )
    return (
        '<section id="plots"><details><summary><h2>Plots (PNG)</h2></summary>'
        f"{''.join(figures)}</details></section>"
    )


def _charts(analysis: Analysis) -> str:
    """The interactive charts: their data as JSON and the script that draws it, inline,
    so the page stays one file that opens offline."""
    data = json.dumps(chart_data(analysis), separators=(",", ":"), allow_nan=False)
    data = data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return (
        '<section id="charts"><h2>Charts</h2>'
        '<p class="muted">One time axis for every chart: drag across any chart to zoom all '
        "of them, double-click to see the whole run; hover for values; click a legend "
        "entry to hide it. Blue: idle (no load); grey: soak itself saturated.</p>"
        '<noscript><p class="muted">The charts need JavaScript; the PNG plots below '
        "show the same series.</p></noscript>"
        f'<div id="soak-charts"></div><style>{charts_style()}</style>'
        f'<script type="application/json" id="soak-chart-data">{data}</script>'
        f"<script>{charts_script()}</script></section>"
    )


def _clock(elapsed: Any) -> str:
    return f"+{format_duration(elapsed)}" if pd.notna(elapsed) and elapsed >= 0 else "—"


def _saturation_warning(summary: RunSummary) -> str:
    generator = summary.generator or {}
    percent = generator.get("saturated_percent")
    if not percent:
        return ""
    return (
        f'<p class="warn">soak itself was saturated for {e(format_number(percent))}% of the run '
        "(a load process over 90% CPU or with 0.5 s of loop lag): latency spikes and stalls "
        "in those spans may be soak's, not the target's. See <a href=\"#soak\">soak's own "
        "health</a>.</p>"
    )


def _findings(summary: RunSummary) -> str:
    parts = ['<section id="findings"><h2>Findings</h2>']
    for name, target in summary.targets.items():
        items = "".join(f"<li>{e(sentence)}</li>" for sentence in target.findings)
        parts.append(f'<h3>{e(name)}</h3><ul class="findings">{items}</ul>')
    parts.append("</section>")
    return "".join(parts)


def _secs(value: Any) -> str:
    return MISSING if value is None else format_seconds(value)


def _drift(summary: RunSummary) -> str:
    parts = [
        '<section id="drift"><h2>Drift: the worst intervals</h2><p class="muted">Per interval: '
        "the event-loop lag from /health, ping round trips and /health latency above their "
        "floor (time the server answered late), next to TTFT and stalls. Intervals in which "
        "soak itself was saturated are marked.</p>"
    ]
    for name, target in summary.targets.items():
        worst = target.drift.worst
        if not target.drift.signals or not worst:
            parts.append(
                f"<h3>{e(name)}</h3><p>No drift signal recorded (no loop-lag field, "
                "/health latency or pings).</p>"
            )
            continue
        rows = [
            (
                e(f"+{format_duration(row['start_s'])}–{format_duration(row['end_s'])}"),
                e(_secs(row.get("drift_s"))),
                e(" / ".join(_secs(row.get(f"loop_lag_{k}_s")) for k in ("p50", "p99", "max"))),
                e(_secs(row.get("ping_p99_s"))),
                e(_secs(row.get("health_latency_excess_s"))),
                e(_secs(row.get("ttft_p95_s"))),
                e(format_number(row.get("stall") or 0)),
                "yes" if row.get("soak_saturated") else "",
            )
            for row in worst
        ]
        headers = (
            "Interval", "Drift", "Loop lag p50 / p99 / max", "Ping p99", "/health late",
            "TTFT p95", "Stalls", "soak saturated",
        )  # fmt: skip
        parts.append(f"<h3>{e(name)}</h3>{_table(headers, rows, numeric=7)}")
    parts.append("</section>")
    return "".join(parts)


def _soak(summary: RunSummary) -> str:
    generator = summary.generator
    title = '<section id="soak"><h2>soak\'s own health</h2>'
    if not generator:
        return (
            f"{title}<p>This run has no generator.jsonl (recorded by an older soak).</p></section>"
        )
    spans = generator.get("saturated_spans") or []
    listed = ", ".join(f"+{format_duration(a)}–{format_duration(b)}" for a, b in spans)
    rows = [
        ("Load processes", f"{generator['workers']:,}: {', '.join(generator['worker_names'])}"),
        ("CPU p50 / max (% of one core)", f"{_num(generator.get('cpu_percent_p50'))} / "
         f"{_num(generator.get('cpu_percent_max'))}"),
        ("Loop lag max", _secs(generator.get("loop_lag_max_s"))),
        ("RSS max", f"{_num(generator.get('rss_mb_max'))} MB"),
        ("Saturated", f"{_num(generator.get('saturated_percent'))}% of the run "
         f"({generator.get('saturated_samples', 0):,} samples)"),
        ("Saturated spans", listed or "none"),
    ]  # fmt: skip
    table = _table(("", "Value"), [(e(a), e(b)) for a, b in rows])
    return f"{title}{table}</section>"


def _num(value: Any) -> str:
    return MISSING if value is None else format_number(value)


def _anomalies(analysis: Analysis) -> str:
    frames = [t.data.anomalies for t in analysis.targets.values() if not t.data.anomalies.empty]
    total = sum(t.data.anomaly_records for t in analysis.targets.values())
    title = '<section id="anomalies"><h2>Anomalies</h2>'
    if not frames:
        return f"{title}<p>No anomaly records.</p></section>"
    table = pd.concat(frames).sort_values("t", kind="stable").head(TABLE_ROWS)
    rows = []
    for record in table.itertuples(index=False):
        detail = "" if pd.isna(record.detail) else str(record.detail)
        if pd.notna(record.close_code) or pd.notna(record.close_reason):
            reason = "" if pd.isna(record.close_reason) else f" {record.close_reason}"
            code = "" if pd.isna(record.close_code) else record.close_code
            detail = f"close {code}{reason}; {detail}"
        if len(detail) > DETAIL_CHARS:
            detail = detail[:DETAIL_CHARS] + "…"
        turn = "" if pd.isna(record.turn_elapsed_s) else f"{record.turn_elapsed_s:.2f} s"
        kind = record.kind if pd.isna(record.subkind) else f"{record.kind}/{record.subkind}"
        rows.append(
            (
                e(_clock(record.elapsed)),
                e(turn),
                e(record.target),
                e(kind),
                f'<span class="mono">{e(record.request_id)}</span>',
                f'<div class="detail">{e(detail)}</div>',
            )
        )
    counts = {}
    for target in analysis.targets.values():
        for kind, count in target.data.anomaly_kinds.items():
            counts[kind] = counts.get(kind, 0) + count
    by_kind = ", ".join(f"{kind} {count:,}" for kind, count in sorted(counts.items()))
    note = (
        f'<p class="muted">The first {len(rows):,} of {format_number(total)} anomaly records '
        f"({e(by_kind)}; the counts in the key numbers are exact).</p>"
    )
    headers = ("Time", "Turn", "Target", "Kind", "Request", "Detail")
    groups = [
        (
            e(format_number(group["count"])),
            e(_clock(group["first_s"])),
            e(_clock(group["last_s"])),
            e(name),
            e(group["kind"]),
            f'<div class="detail">{e(group["message"])}</div>',
        )
        for name, target in analysis.targets.items()
        for group in target.data.anomaly_groups
    ]
    grouped = (
        "<h3>By kind and message</h3>"
        + _table(("Records", "First", "Last", "Target", "Kind", "Message"), groups, numeric=3)
        + "<h3>The first records</h3>"
    )
    return f"{title}{grouped}{note}{_table(headers, rows, numeric=2)}</section>"


def _events(analysis: Analysis) -> str:
    events = analysis.run.events
    title = '<section id="events"><h2>Events</h2>'
    if events.empty:
        return f"{title}<p>No events.</p></section>"
    rows = [
        (
            e(_clock(row.elapsed)),
            e(row.source),
            e(row.kind),
            f'<div class="detail">{e(row.message)}</div>',
        )
        for row in events.head(TABLE_ROWS).itertuples(index=False)
    ]
    note = f'<p class="muted">{len(rows):,} of {len(events):,} events.</p>'
    return (
        f"{title}{note}{_table(('Time', 'Source', 'Kind', 'Message'), rows, numeric=1)}</section>"
    )


def _health_fields(summary: RunSummary) -> str:
    """The numeric /health fields of each target: levels after warm-up, last value, trend."""
    parts = ['<section id="health"><h2>Numeric /health fields</h2><p class="muted">Usable in '
             "criteria as <code>health.&lt;field&gt;.&lt;stat&gt;</code>, e.g. "
             "<code>health.diagnostics.thread_count.max &lt; 200</code>.</p>"]  # fmt: skip
    for name, target in summary.targets.items():
        fields = target.health.fields
        if not fields:
            parts.append(f"<h3>{e(name)}</h3><p>No numeric /health fields recorded.</p>")
            continue
        rows = []
        for path, stats in list(fields.items())[:HEALTH_FIELDS]:
            growth, ci = stats.growth_per_hour, stats.growth_ci_per_hour
            trend = MISSING
            if growth is not None:
                trend = f"{format_rate(growth, '', ci)} ({stats.trend})"
            rows.append(
                (
                    f"<code>{e(path)}</code>",
                    *(e(_num(getattr(stats, k))) for k in ("last", "min", "max", "p99")),
                    e(trend),
                )
            )
        headers = ("Field", "Last", "Min", "Max", "p99", "Trend")
        parts.append(f"<h3>{e(name)}</h3>{_table(headers, rows)}")
    parts.append("</section>")
    return "".join(parts)
