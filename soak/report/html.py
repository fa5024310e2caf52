"""report.html: one self-contained page (inline CSS, charts and plots inlined).

This module turns the run into plain data (text already formatted); the layout is the
template soak/templates/report.html, whose autoescaping escapes every string from the run
directory (target names, health fields, thread names, error texts, anomaly details).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from markupsafe import Markup

from soak.analyze.summary import Analysis
from soak.formatting import format_number, format_rate, format_seconds
from soak.model import RunSummary, TargetSummary
from soak.report.charts import chart_data, charts_script, charts_style
from soak.report.numbers import MISSING, key_numbers, verdict_notes, verdict_rows
from soak.report.plots import Plot
from soak.report.templating import Cell, figures, render
from soak.rundir import safe_name
from soak.units import format_duration

#: Rows of the anomalies and events tables, and characters of one detail cell.
TABLE_ROWS = 200
DETAIL_CHARS = 400
#: /health fields listed per target.
HEALTH_FIELDS = 100

Rows = list[tuple[str | Cell, ...]]


def render_html(analysis: Analysis, plots: list[Plot]) -> str:
    """The whole report page."""
    summary = analysis.summary
    generator = summary.generator or {}
    percent = generator.get("saturated_percent")
    return render(
        "report.html",
        run_id=summary.run_id,
        verdict=summary.verdict or "",
        meta=_meta(summary),
        verdict_rows=[
            (name, build, Cell(verdict, "badge"), why or Cell("-", "muted"))
            for name, build, verdict, why in verdict_rows(summary)
        ],
        verdict_notes=verdict_notes(summary),
        saturated_percent=format_number(percent) if percent else "",
        findings=[(name, target.findings) for name, target in summary.targets.items()],
        criteria=_criteria(summary),
        numbers_headers=["", *summary.targets],
        numbers_rows=[(label, *cells) for label, cells in key_numbers(summary)],
        charts=_charts(analysis),
        plots=figures(plots),
        drift=[(name, _drift_rows(target)) for name, target in summary.targets.items()],
        generator_rows=_generator_rows(summary),
        anomalies=_anomalies(analysis),
        events=_events(analysis),
        health=[(name, _health_rows(target)) for name, target in summary.targets.items()],
        soak_version=summary.soak_version,
        run_dir=summary.run_dir,
    )


def _meta(summary: RunSummary) -> list[tuple[str, str]]:
    return [
        ("Profile", summary.profile_name),
        ("Label", summary.label),
        ("Status", summary.status),
        ("Started", summary.started_at_iso),
        ("Ended", summary.ended_at_iso),
        ("Duration", format_duration(summary.duration_s)),
        ("Warm-up", format_duration(summary.warmup_s) if summary.warmup_s else "none"),
        ("Recorded with", f"soak {summary.recorded_with}"),
    ]


def _criteria(summary: RunSummary) -> list[tuple[str, str, Rows]]:
    """(target, anchor, rows) per target; empty when no criterion applies to any target."""
    if not summary.criteria:
        return []
    return [
        (
            name,
            f"target-{safe_name(name, 'target')}",
            [
                (Cell(c.status, "badge"), Cell(c.expression, "code"), c.message)
                for c in summary.checks_of(name)
            ],
        )
        for name in summary.targets
    ]


def _charts(analysis: Analysis) -> dict[str, Any]:
    """The interactive charts: their data (the template writes it as escaped JSON) and
    soak's own chart script and style, which are package files, never run data."""
    return {
        "data": chart_data(analysis),
        "script": Markup(charts_script()),
        "style": Markup(charts_style()),
    }


def _clock(elapsed: Any) -> str:
    return f"+{format_duration(elapsed)}" if pd.notna(elapsed) and elapsed >= 0 else "—"


def _secs(value: Any) -> str:
    return MISSING if value is None else format_seconds(value)


def _num(value: Any) -> str:
    return MISSING if value is None else format_number(value)


def _drift_rows(target: TargetSummary) -> Rows | None:
    """The worst drift intervals of a target; None when it has no drift signal."""
    worst = target.drift.worst
    if not target.drift.signals or not worst:
        return None
    return [
        (
            f"+{format_duration(row['start_s'])}–{format_duration(row['end_s'])}",
            _secs(row.get("drift_s")),
            " / ".join(_secs(row.get(f"loop_lag_{k}_s")) for k in ("p50", "p99", "max")),
            _secs(row.get("ping_p99_s")),
            _secs(row.get("health_latency_excess_s")),
            _secs(row.get("ttft_p95_s")),
            format_number(row.get("stall") or 0),
            "yes" if row.get("soak_saturated") else "",
        )
        for row in worst
    ]


def _generator_rows(summary: RunSummary) -> Rows | None:
    """soak's own health; None for a run without generator.jsonl."""
    generator = summary.generator
    if not generator:
        return None
    spans = generator.get("saturated_spans") or []
    listed = ", ".join(f"+{format_duration(a)}–{format_duration(b)}" for a, b in spans)
    return [
        ("Load processes", f"{generator['workers']:,}: {', '.join(generator['worker_names'])}"),
        ("CPU p50 / max (% of one core)", f"{_num(generator.get('cpu_percent_p50'))} / "
         f"{_num(generator.get('cpu_percent_max'))}"),
        ("Loop lag max", _secs(generator.get("loop_lag_max_s"))),
        ("RSS max", f"{_num(generator.get('rss_mb_max'))} MB"),
        ("Saturated", f"{_num(generator.get('saturated_percent'))}% of the run "
         f"({generator.get('saturated_samples', 0):,} samples)"),
        ("Saturated spans", listed or "none"),
    ]  # fmt: skip


def _anomalies(analysis: Analysis) -> dict[str, Any] | None:
    """The anomaly groups and the first TABLE_ROWS records; None without records."""
    frames = [t.data.anomalies for t in analysis.targets.values() if not t.data.anomalies.empty]
    if not frames:
        return None
    total = sum(t.data.anomaly_records for t in analysis.targets.values())
    table = pd.concat(frames).sort_values("t", kind="stable").head(TABLE_ROWS)
    records = []
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
        records.append(
            (
                _clock(record.elapsed),
                turn,
                str(record.target),
                str(kind),
                Cell(str(record.request_id), "mono"),
                Cell(detail, "detail"),
            )
        )
    counts: dict[str, int] = {}
    for target in analysis.targets.values():
        for kind, count in target.data.anomaly_kinds.items():
            counts[kind] = counts.get(kind, 0) + count
    groups = [
        (
            format_number(group["count"]),
            _clock(group["first_s"]),
            _clock(group["last_s"]),
            name,
            str(group["kind"]),
            Cell(str(group["message"]), "detail"),
        )
        for name, target in analysis.targets.items()
        for group in target.data.anomaly_groups
    ]
    return {
        "groups": groups,
        "records": records,
        "shown": f"{len(records):,}",
        "total": format_number(total),
        "by_kind": ", ".join(f"{kind} {count:,}" for kind, count in sorted(counts.items())),
    }


def _events(analysis: Analysis) -> dict[str, Any] | None:
    """The first TABLE_ROWS events; None without events."""
    events = analysis.run.events
    if events.empty:
        return None
    rows = [
        (_clock(row.elapsed), str(row.source), str(row.kind), Cell(str(row.message), "detail"))
        for row in events.head(TABLE_ROWS).itertuples(index=False)
    ]
    return {"rows": rows, "shown": f"{len(rows):,}", "total": f"{len(events):,}"}


def _health_rows(target: TargetSummary) -> Rows | None:
    """The numeric /health fields of a target: last value, levels, trend; None without."""
    fields = target.health.fields
    if not fields:
        return None
    rows: Rows = []
    for path, stats in list(fields.items())[:HEALTH_FIELDS]:
        growth, ci = stats.growth_per_hour, stats.growth_ci_per_hour
        trend = MISSING
        if growth is not None:
            trend = f"{format_rate(growth, '', ci)} ({stats.trend})"
        rows.append(
            (
                Cell(path, "code"),
                *(_num(getattr(stats, k)) for k in ("last", "min", "max", "p99")),
                trend,
            )
        )
    return rows
