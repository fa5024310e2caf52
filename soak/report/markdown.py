"""report.md: verdict, key numbers, criteria with their messages, links to the plots."""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from soak.formatting import format_number
from soak.model import RunSummary
from soak.report.numbers import key_numbers, verdict_notes, verdict_rows
from soak.report.plots import Plot
from soak.units import format_duration

#: Characters that can start Markdown (or GitHub) markup inline: emphasis, code, links and
#: images, headings, table pipes, strikethrough, math (`<`, `>`, `&` become entities).
_MARKUP = re.compile(r"([\\`*_\[\]()!#|~$])")
_LINE_BREAK = re.compile(r"\r\n?|\n")


def cell(value: Any) -> str:
    """A server-controlled (or any) string as inert Markdown text, on one line.

    Raw HTML and entities are HTML-escaped, every other markup character is
    backslash-escaped, so a thread named `![](//x.ev/a)` is shown as text, not fetched
    as an image by whoever views the report; line breaks become spaces, so it cannot
    start a block or end a table row. Safe in table cells, headings, list items and
    link texts; every Markdown writer of soak uses it.
    """
    text = html.escape("" if value is None else str(value), quote=False)
    return _LINE_BREAK.sub(" ", _MARKUP.sub(r"\\\1", text))


def table(headers: Iterable[Any], rows: Iterable[Iterable[Any]]) -> list[str]:
    """A Markdown table, every cell escaped with `cell`; ends with an empty line."""
    headers = [cell(h) for h in headers]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return [*lines, ""]


def images(plots: Iterable[Plot], out_dir: Path, base_url: str | None = None) -> list[str]:
    """One image line per plot (title escaped), linked relative to `out_dir`, or under
    `base_url` where the plots are hosted."""
    lines = []
    for plot in plots:
        link = plot.path.relative_to(out_dir).as_posix()
        if base_url:
            link = f"{base_url.rstrip('/')}/{quote(link)}"
        lines += [f"![{cell(plot.title)}]({link})", ""]
    return lines


#: Anomaly groups per target in report.md (summary.json has more).
MD_GROUPS = 10


def _findings(summary: RunSummary) -> list[str]:
    lines = []
    for name, target in summary.targets.items():
        lines += [f"### {cell(name)}", ""]
        lines += [f"- {cell(sentence)}" for sentence in target.findings]
        lines.append("")
    return lines


def _saturation(summary: RunSummary) -> list[str]:
    percent = (summary.generator or {}).get("saturated_percent")
    if not percent:
        return []
    return [
        f"> **soak itself was saturated for {format_number(percent)}% of the run**: latency "
        "spikes and stalls then may be soak's, not the target's (see soak's own health in "
        "report.html).",
        "",
    ]


def render_markdown(
    summary: RunSummary, plots: list[Plot], out_dir: Path, base_url: str | None = None
) -> str:
    """The Markdown report; plot links are relative to `out_dir` (where report.md goes) or
    under `base_url`. Plots and anomaly groups fold into <details> so that the report
    pastes into a pull request with the verdict, findings and numbers on top."""
    warmup = format_duration(summary.warmup_s) if summary.warmup_s else "none"
    lines = [
        f"# soak report: {cell(summary.run_id)}",
        "",
        f"**Verdict: {(summary.verdict or '').upper()}** · profile {cell(summary.profile_name)}"
        f" · label {cell(summary.label)} · status {cell(summary.status)}"
        f" · {format_duration(summary.duration_s)} from {summary.started_at_iso}"
        f" (warm-up {warmup})",
        "",
        "## Verdict",
        "",
        *table(("Target", "Build", "Verdict", "Why"), verdict_rows(summary)),
        *[f"> {cell(note)}\n" for note in verdict_notes(summary)],
        *_saturation(summary),
        "## Findings",
        "",
        *_findings(summary),
        "## Key numbers",
        "",
        *table(("", *summary.targets), ((label, *cells) for label, cells in key_numbers(summary))),
        "## Criteria",
        "",
    ]
    if not summary.criteria:
        lines += ["No criteria apply to any target: nothing was judged.", ""]
    for name in summary.targets:
        checks = summary.checks_of(name)
        if checks:
            lines += [f"### {cell(name)}", ""]
            rows = ((c.status.upper(), c.expression, c.message) for c in checks)
            lines += table(("Status", "Criterion", "Result"), rows)
    lines += _anomaly_groups(summary)
    lines += ["## Plots", "", "<details><summary>Plots</summary>", ""]
    lines += [*images(plots, out_dir, base_url), "</details>", ""]
    return "\n".join(lines)


def _anomaly_groups(summary: RunSummary) -> list[str]:
    """The anomaly records by kind and message, the largest groups of each target."""
    rows = [
        (name, group["kind"], format_number(group["count"]), group["message"])
        for name, target in summary.targets.items()
        for group in target.anomalies.groups[:MD_GROUPS]
    ]
    if not rows:
        return []
    return [
        "## Anomalies by kind and message",
        "",
        *table(("Target", "Kind", "Count", "Message"), rows),
    ]
