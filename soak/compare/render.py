"""compare.md, compare.html, compare.json and the terminal table of a Comparison.

Cells are built once as plain text (`table_rows`); each format escapes them its own
way (Markdown via soak.report.markdown.cell, HTML by the autoescaping templates).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from soak import __version__
from soak.compare.core import (
    ALPHA,
    FIXED,
    IMPROVED,
    NEW_FAILURE,
    NOT_AVAILABLE,
    REGRESSED,
    SPECS,
    UNCHANGED,
    VERDICTS,
    Comparison,
    Row,
    Side,
)
from soak.criteria import METRICS
from soak.formatting import format_number
from soak.report.markdown import cell, images, table
from soak.report.plots import Plot
from soak.report.templating import Cell, figures, render
from soak.runs import text_table
from soak.units import format_duration

#: compare.json layout version (docs/compare-json.md); bump when a field changes meaning.
SCHEMA_VERSION = 1
MISSING = "—"
_TESTS = {
    "slope": "95% CIs of the Theil–Sen slopes do not overlap",
    "rate": f"two-proportion z-test, p < {ALPHA}",
    "quantile": "block-bootstrap 95% CIs do not overlap",
    "level": "minimum effect only",
}
#: CSS class of each verdict badge (green better, red worse, grey same).
_BADGE = {
    **dict.fromkeys((FIXED, IMPROVED, "pass"), "good"),
    **dict.fromkeys((REGRESSED, NEW_FAILURE, "mixed", "fail"), "bad"),
    "inconclusive": "inconclusive",  # a release verdict: yellow, as in report.html
}


# --- cells -----------------------------------------------------------------------
def value_text(row: Row, value: float | None) -> str:
    """A base or candidate value in the metric's own format (rates as percentages)."""
    return MISSING if value is None else METRICS[row.name].format(value)


def change_text(row: Row) -> str:
    """`-3,461/h (-100%)`, `+1.2 ms (+24%)`, `+1.9 pp`, `0`: signed change, then relative."""
    change = row.change
    if change is None:
        return MISSING
    metric = METRICS[row.name]
    if not change:
        return "0"
    sign = "+" if change > 0 else "-"
    amount = metric.format_change(abs(change))
    relative = row.change_relative
    if relative is not None:
        amount += f" ({sign}{format_number(abs(relative) * 100)}%)"
    return sign + amount


def table_rows(comparison: Comparison) -> list[tuple[str, str, str, str, str]]:
    """(metric, base, candidate, change, verdict) per row, as plain text."""
    return [
        (
            row.label,
            value_text(row, row.base),
            value_text(row, row.candidate),
            change_text(row),
            row.verdict,
        )
        for row in comparison.rows
    ]


def verdict_line(comparison: Comparison) -> str:
    """`IMPROVED: 4 fixed, 6 improved, 12 unchanged, 0 regressed, 0 new failure`."""
    counts = comparison.counts
    shown = ", ".join(f"{counts[v]} {v}" for v in VERDICTS if counts[v] or v != NOT_AVAILABLE)
    return f"{comparison.verdict.upper()}: {shown}"


def side_line(side: Side) -> str:
    """One line that says which run and target a side is, and how that run went."""
    run = side.run_summary
    build = side.summary.build
    return (
        f"{side.name}" + (f" (build {build})" if build else "") + f": profile "
        f"{run.profile_name or MISSING}, {format_duration(run.duration_s)}, "
        f"{run.status}, criteria {side.summary.verdict}"
    )


def intro_lines(comparison: Comparison) -> list[tuple[str, str]]:
    """(label, text): which sides these are, and that they are paired."""
    lines = [("base", side_line(comparison.base)), ("candidate", side_line(comparison.candidate))]
    if comparison.paired:
        lines.append(("paired by time", "two targets of one run (same load, time and host)"))
    return lines


def detail_rows(comparison: Comparison) -> list[tuple[str, ...]]:
    """DETAIL_HEADERS cells per row: the table cells and the reason, as plain text."""
    return [
        (*cells, row.reason)
        for cells, row in zip(table_rows(comparison), comparison.rows, strict=True)
    ]


DETAIL_HEADERS = ("Metric", "Base", "Candidate", "Change", "Verdict", "Why")


def text_report(comparison: Comparison) -> str:
    """The terminal output: sides, warnings, the table and the verdict line."""
    header = ("metric", "base", "candidate", "change", "verdict")
    lines = [f"{label + ':':<10} {text}" for label, text in intro_lines(comparison)]
    lines += [f"warning: {note.message}" for note in comparison.warnings]
    lines += ["", text_table([header, *table_rows(comparison)])]
    explained = explained_rows(comparison)
    if explained:
        lines += ["", *(f"{row.label}: {row.verdict}: {row.reason}" for row in explained)]
    lines += ["", verdict_line(comparison)]
    return "\n".join(lines)


#: A change at least this large (relative) that is not called a change is explained.
EXPLAIN_RELATIVE = 0.2


def explained_rows(comparison: Comparison) -> list[Row]:
    """The rows whose verdict a reader of the table would question: a large change
    called unchanged (within noise, below the minimum effect), and metrics not compared."""
    return [
        row
        for row in comparison.rows
        if row.verdict == NOT_AVAILABLE
        or (
            row.verdict == UNCHANGED
            and row.change_relative is not None
            and abs(row.change_relative) >= EXPLAIN_RELATIVE
        )
    ]


# --- compare.json ----------------------------------------------------------------
def side_json(side: Side) -> dict[str, Any]:
    run = side.run_summary
    return {
        "run_id": run.run_id,
        "run_dir": run.run_dir,
        "target": side.target,
        "build": side.summary.build,
        "profile_name": run.profile_name,
        "label": run.label,
        "status": run.status,
        "started_at_iso": run.started_at_iso,
        "duration_s": run.duration_s,
        "verdict": side.summary.verdict,
    }


def compare_json(comparison: Comparison) -> dict[str, Any]:
    """The compare.json document (docs/compare-json.md)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "soak_version": __version__,
        "paired": comparison.paired,
        "base": side_json(comparison.base),
        "candidate": side_json(comparison.candidate),
        "verdict": comparison.verdict,
        "counts": comparison.counts,
        "warnings": [note.to_json() for note in comparison.warnings],
        "metrics": [row.to_json() for row in comparison.rows],
        "settings": {
            "alpha": ALPHA,
            "min_effects": {s.name: {"abs": s.min_abs, "rel": s.min_rel} for s in SPECS},
        },
    }


# --- Markdown ----------------------------------------------------------------------
def method_rows() -> list[tuple[str, str, str]]:
    """(metric, test, minimum effect) per compared metric, for the Method section."""
    return [(spec.label, _TESTS[spec.test], spec.effect_text()) for spec in SPECS]


def render_markdown(comparison: Comparison, plots: list[Plot], out_dir: Path) -> str:
    """compare.md; plot links are relative to `out_dir`."""
    lines = [
        f"# soak compare: {cell(comparison.base.name)} → {cell(comparison.candidate.name)}",
        "",
        f"**{cell(verdict_line(comparison))}**",
        "",
        *(f"- {cell(label.capitalize())}: {cell(text)}" for label, text in intro_lines(comparison)),
        "",
    ]
    if comparison.warnings:
        lines += ["## Not quite comparable", ""]
        lines += [f"- {cell(note.message)}" for note in comparison.warnings] + [""]
    lines += ["## Metrics", "", *table(DETAIL_HEADERS, detail_rows(comparison))]
    lines += ["## Plots", "", *images(plots, out_dir)]
    lines += ["## Method", "", *table(("Metric", "Test", "Minimum effect"), method_rows())]
    return "\n".join(lines)


# --- HTML ----------------------------------------------------------------------------
def verdict_badge(verdict: str) -> Cell:
    """A verdict as a badge cell: green better, red worse, grey same."""
    return Cell(verdict, "badge", _BADGE.get(verdict, "same"))


def render_html(comparison: Comparison, plots: list[Plot]) -> str:
    """compare.html: one self-contained page, verdict first (soak/templates/compare.html)."""
    return render(
        "compare.html",
        title=f"soak compare: {comparison.base.name} → {comparison.candidate.name}",
        verdict=verdict_badge(comparison.verdict),
        verdict_line=verdict_line(comparison),
        intro=[f"{label.capitalize()}: {text}" for label, text in intro_lines(comparison)],
        warnings=[note.message for note in comparison.warnings],
        metric_headers=DETAIL_HEADERS,
        metric_rows=[
            (*cells[:4], verdict_badge(cells[4]), cells[5]) for cells in detail_rows(comparison)
        ],
        plots=figures(plots),
        method_rows=method_rows(),
        soak_version=__version__,
    )
