"""`soak release RUN... --out DIR`: one release report from several runs.

The folder gets each run's full report (`runs/<run_id>/`), the comparisons
(`compare/<name>/`), and on top `release.html` (self-contained), `release.md` and
`release.json`, which open with an executive summary: the release verdict, what got
better and worse, and key numbers per run.

What is compared: with `--baseline RUN[:TARGET]` (the previous release), every target
of every run against the baseline's target of the same name (or its only target);
without it, each A/B run's first target against its other targets. A target used as
the base of an A/B comparison (the unpatched build) is shown but not judged: the
release verdict is about the builds being released.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from soak import __version__
from soak.analyze.summary import Analysis
from soak.compare.build import Analyses, CompareResult, pick_target, write_compare
from soak.compare.core import (
    FAIL_ON,
    FIXED,
    IMPROVED,
    NEW_FAILURE,
    NOT_AVAILABLE,
    REGRESSED,
    UNCHANGED,
    Row,
    Side,
    compare_sides,
)
from soak.compare.render import (
    side_json,
    table_rows,
    value_text,
    verdict_badge,
    verdict_line,
)
from soak.criteria import FAIL
from soak.errors import RunDirError, UsageError
from soak.formatting import format_number
from soak.model import RunSummary, to_json
from soak.report import ReportResult, build_report, verdict_exit_code
from soak.report.markdown import cell, images, table
from soak.report.numbers import MISSING
from soak.report.plots import Plot
from soak.report.templating import figures, render
from soak.rundir import safe_name, write_text_atomic
from soak.runs import resolve_run, resolve_runs, split_target
from soak.units import format_duration

RELEASE_JSON = "release.json"
RELEASE_MD = "release.md"
RELEASE_HTML = "release.html"
#: compare.json-style layout version of release.json (docs/compare-json.md).
SCHEMA_VERSION = 1
#: Plots of each run's report shown in the release report.
KEY_PLOTS = {"threads": "threads", "outcomes": "non-ok outcomes per minute"}


@dataclass
class RunPart:
    """One run of the release: its report and which of its targets are judged."""

    report: ReportResult
    judged: list[str]

    @property
    def summary(self) -> RunSummary:
        return self.report.summary

    @property
    def run_id(self) -> str:
        return self.summary.run_id


@dataclass
class Release:
    """Everything the release report shows; `verdict` is pass, fail or inconclusive (no
    failure, but a released target's own verdict is inconclusive: `doubts` say why)."""

    out_dir: Path
    runs: list[RunPart]
    comparisons: list[CompareResult]
    fail_on: str
    reasons: list[str] = field(default_factory=list)
    doubts: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        if self.reasons:
            return "fail"
        return "inconclusive" if self.doubts else "pass"

    @property
    def exit_code(self) -> int:
        return verdict_exit_code(self.verdict)


def build_release(
    specs: list[str],
    root: Path,
    out_dir: Path,
    baseline: str | None = None,
    fail_on: str = "new-failure",
) -> Release:
    """Report every run into `out_dir`, compare, and write the release report.

    Raises UsageError for run names that match nothing, RunDirError for unreadable runs.
    """
    paths = resolve_runs(specs, root)
    if not paths:
        raise UsageError("soak release needs at least one run; list them with soak runs.")
    analyses = Analyses()
    base_side = _baseline(baseline, root, analyses) if baseline else None
    parts, comparisons = [], []
    for path in paths:
        report = build_report(path, out_dir / "runs" / safe_name(path.name))
        names = list(report.summary.targets)
        judged = names[1:] or names  # an A/B run's first target is its base
        parts.append(RunPart(report, judged))
        for base, candidate in _pairs(path, names, base_side, analyses):
            folder = f"{safe_name(candidate.name.replace(':', '_'))}_vs_{safe_name(base.target)}"
            comparisons.append(
                write_compare(compare_sides(base, candidate), out_dir / "compare" / folder)
            )
    release = Release(out_dir, parts, comparisons, fail_on)
    release.reasons = _reasons(release)
    release.doubts = _doubts(release)
    try:
        document = json.dumps(to_json(release_json(release)), indent=2)
        write_text_atomic(out_dir / RELEASE_JSON, document)
        write_text_atomic(out_dir / RELEASE_MD, render_release_markdown(release))
        write_text_atomic(out_dir / RELEASE_HTML, render_release_html(release))
    except OSError as exc:
        raise RunDirError(f"cannot write the release report into {out_dir}: {exc}") from None
    return release


Baseline = tuple[Analysis, str | None]


def _baseline(spec: str, root: Path, analyses: Analyses) -> Baseline:
    """The baseline run and its named target (None: match each candidate's target by name)."""
    run_spec, target = split_target(spec)
    analysis = analyses.get(resolve_run(run_spec, root))
    if target is not None or len(analysis.targets) == 1:
        target = pick_target(analysis, target)
    return analysis, target


def _pairs(
    path: Path, names: list[str], baseline: Baseline | None, analyses: Analyses
) -> list[tuple[Side, Side]]:
    """(base, candidate) sides to compare for one run of the release.

    An A/B run compares its first target with the others; the released targets (all
    but that first one) are also compared with the baseline.
    """
    if baseline is None and len(names) < 2:
        return []
    analysis = analyses.get(path)
    pairs = [(Side(analysis, names[0]), Side(analysis, name)) for name in names[1:]]
    if baseline is None:
        return pairs
    base_run, base_target = baseline
    for name in names[1:] or names:
        target = base_target or pick_target(base_run, name if name in base_run.targets else None)
        if base_run is not analysis or target != name:  # the baseline itself is listed
            pairs.append((Side(base_run, target), Side(analysis, name)))
    return pairs


def _doubts(release: Release) -> list[str]:
    """Why a release without failures is still not a pass: released targets whose own
    verdict is inconclusive."""
    return [
        f"{part.run_id}:{name} is inconclusive: "
        + "; ".join(part.summary.targets[name].verdict_reasons)
        for part in release.runs
        for name in part.judged
        if part.summary.targets[name].verdict == "inconclusive"
    ]


def _reasons(release: Release) -> list[str]:
    """Why the release fails (empty: it passes): judged targets failing, gated rows."""
    reasons = []
    for part in release.runs:
        for name in part.judged:
            failed = [c.expression for c in part.summary.checks_of(name, FAIL)]
            if failed:
                reasons.append(f"{part.run_id}:{name} fails {', '.join(failed)}")
    gated = tuple((verdict, False) for verdict in FAIL_ON[release.fail_on])
    reasons += filter(None, (_comparison_line(r, gated) for r in release.comparisons))
    return reasons


# --- the executive summary ---------------------------------------------------------
def _comparison_line(result: CompareResult, groups: tuple[tuple[str, bool], ...]) -> str | None:
    """`cand vs base: fixed thread growth (120/h → 0/h); improved RSS growth` for the rows
    of each (verdict, with numbers) group; None when no row has those verdicts."""
    comparison = result.comparison
    parts = []
    for verdict, numbers in groups:
        rows = [row for row in comparison.rows if row.verdict == verdict]
        items = [
            f"{row.label} ({value_text(row, row.base)} → {value_text(row, row.candidate)})"
            if numbers
            else row.label
            for row in rows
        ]
        if items:
            parts.append(f"{verdict} {', '.join(items)}")
    if not parts:
        return None
    return f"{comparison.candidate.name} vs {comparison.base.name}: {'; '.join(parts)}"


def _summary_lines(release: Release) -> list[tuple[str, list[str]]]:
    """(heading, lines) of the executive summary, as plain text."""
    judged = sum(len(part.judged) for part in release.runs)
    if release.reasons:
        verdict = [f"FAIL: {reason}" for reason in release.reasons]
    elif release.doubts:
        verdict = [f"INCONCLUSIVE: {doubt}" for doubt in release.doubts]
    else:
        gate = f", no comparison reaches --fail-on {release.fail_on}" if release.comparisons else ""
        verdict = [
            f"PASS: {judged} target(s) in {len(release.runs)} run(s) pass their criteria{gate}"
        ]
    groups = {
        "Better": ((FIXED, True), (IMPROVED, False)),
        "Worse": ((NEW_FAILURE, True), (REGRESSED, True)),
    }
    lines = [("Verdict", verdict)]
    for heading, group in groups.items():
        found = [line for r in release.comparisons if (line := _comparison_line(r, group))]
        if not release.comparisons:
            found = ["no comparison: pass --baseline RUN (the previous release) or an A/B run"]
        lines.append((heading, found or ["nothing significant"]))
    return lines


def key_rows(release: Release) -> list[tuple[str, ...]]:
    """One row of key numbers per target of every run (plain text)."""
    rows = []
    for part in release.runs:
        summary = part.summary
        for name, t in summary.targets.items():
            judged = "" if name in part.judged else " (base)"
            rows.append(
                (
                    f"{part.run_id}:{name}{judged}",
                    t.build or MISSING,
                    f"{format_duration(summary.duration_s)} {summary.status}",
                    t.verdict or MISSING,
                    f"{t.chats.count('turns'):,}",
                    _maybe(t.chats.stall_rate, lambda v: f"{format_number(v * 100)}%"),
                    _maybe(t.threads.growth_per_hour, lambda v: f"{format_number(v)}/h"),
                    _maybe(t.rss.growth_per_hour, lambda v: f"{format_number(v)} MB/h"),
                    _maybe(t.chats.ttft.p95, lambda v: f"{format_number(v * 1000)} ms"),
                    _maybe(t.cpu.idle_percent, lambda v: f"{format_number(v)}%"),
                )
            )
    return rows


KEY_HEADERS = ("Run:target", "Build", "Duration", "Verdict", "Turns", "Stall rate",
               "Thread growth", "RSS growth", "TTFT p95", "Idle CPU")  # fmt: skip


def _maybe(value: Any, fmt: Any) -> str:
    return MISSING if value is None else fmt(value)


def _plots(part: RunPart) -> list[Plot]:
    by_name = {path.stem: path for path in part.report.plot_paths}
    return [
        Plot(name, f"{part.run_id}: {title}", by_name[name])
        for name, title in KEY_PLOTS.items()
        if name in by_name
    ]


#: Row verdicts that are not a change (left out of the release's tables).
_NO_CHANGE = (UNCHANGED, NOT_AVAILABLE)
CHANGE_HEADERS = ("Metric", "Base", "Candidate", "Change", "Verdict")


def _changed_rows(result: CompareResult) -> list[Row]:
    return [row for row in result.comparison.rows if row.verdict not in _NO_CHANGE]


def _change_cells(result: CompareResult) -> list[tuple[str, str, str, str, str]]:
    """The changed rows of a comparison as plain-text cells (CHANGE_HEADERS)."""
    return [cells for cells in table_rows(result.comparison) if cells[-1] not in _NO_CHANGE]


def text_summary(release: Release) -> str:
    """What `soak release` prints: the executive summary and where the report is."""
    lines = []
    for heading, items in _summary_lines(release):
        lines += [f"{heading}:", *(f"  {item}" for item in items)]
    lines.append(f"release report: {release.out_dir / RELEASE_HTML}")
    return "\n".join(lines)


def release_json(release: Release) -> dict[str, Any]:
    """release.json (docs/compare-json.md, section release.json)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "soak_version": __version__,
        "verdict": release.verdict,
        "reasons": release.reasons,
        "doubts": release.doubts,
        "fail_on": release.fail_on,
        "runs": [
            {
                "run_id": part.run_id,
                "run_dir": part.summary.run_dir,
                "report": (part.report.html_path.relative_to(release.out_dir)).as_posix(),
                "status": part.summary.status,
                "duration_s": part.summary.duration_s,
                "verdict": part.summary.verdict,
                "targets": {
                    name: {
                        "verdict": t.verdict,
                        "build": t.build,
                        "judged": name in part.judged,
                    }
                    for name, t in part.summary.targets.items()
                },  # fmt: skip
            }
            for part in release.runs
        ],
        "comparisons": [
            {
                "base": side_json(result.comparison.base),
                "candidate": side_json(result.comparison.candidate),
                "verdict": result.comparison.verdict,
                "counts": result.comparison.counts,
                "warnings": [note.to_json() for note in result.comparison.warnings],
                "report": result.html_path.relative_to(release.out_dir).as_posix(),
                "changes": [
                    {
                        "name": row.name,
                        "label": row.label,
                        "verdict": row.verdict,
                        "base": row.base,
                        "candidate": row.candidate,
                    }
                    for row in _changed_rows(result)
                ],  # fmt: skip
            }
            for result in release.comparisons
        ],
    }


def render_release_markdown(release: Release) -> str:
    out = release.out_dir
    lines = [f"# soak release report: {release.verdict.upper()}", ""]
    for heading, items in _summary_lines(release):
        lines += [f"**{heading}**", "", *(f"- {cell(item)}" for item in items), ""]
    lines += ["## Key numbers", "", *table(KEY_HEADERS, key_rows(release))]
    for result in release.comparisons:
        comparison = result.comparison
        link = result.markdown_path.relative_to(out).as_posix()
        lines += [
            f"## {cell(comparison.candidate.name)} vs {cell(comparison.base.name)}",
            "",
            f"{cell(verdict_line(comparison))} · [full comparison]({link})",
            "",
            *(f"- warning: {cell(note.message)}" for note in comparison.warnings),
            *([""] if comparison.warnings else []),
        ]
        rows = _change_cells(result)
        if rows:
            lines += table(CHANGE_HEADERS, rows)
    for part in release.runs:
        link = part.report.markdown_path.relative_to(out).as_posix()
        lines += [f"## Run {cell(part.run_id)}", "", f"[Full report]({link})", ""]
        lines += images(_plots(part), out)
    return "\n".join(lines)


def render_release_html(release: Release) -> str:
    """release.html: the executive summary on top (soak/templates/release.html)."""
    out = release.out_dir
    comparisons = [
        {
            "title": f"{result.comparison.candidate.name} vs {result.comparison.base.name}",
            "verdict": verdict_badge(result.comparison.verdict),
            "verdict_line": verdict_line(result.comparison),
            "link": result.html_path.relative_to(out).as_posix(),
            "warnings": [note.message for note in result.comparison.warnings],
            "rows": [(*row[:-1], verdict_badge(row[-1])) for row in _change_cells(result)],
        }
        for result in release.comparisons
    ]
    runs = [
        {
            "run_id": part.run_id,
            "link": part.report.html_path.relative_to(out).as_posix(),
            "plots": figures(_plots(part)),
        }
        for part in release.runs
    ]
    return render(
        "release.html",
        verdict=verdict_badge(release.verdict),
        summary=_summary_lines(release),
        key_headers=KEY_HEADERS,
        key_rows=key_rows(release),
        change_headers=CHANGE_HEADERS,
        comparisons=comparisons,
        runs=runs,
        soak_version=__version__,
    )
