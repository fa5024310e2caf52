"""The headline numbers and verdict rows shared by the HTML and Markdown reports.

Every cell is plain text (not escaped): each renderer escapes for its own format.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from soak.criteria import FAIL, format_hours, format_number, format_seconds

MISSING = "—"

Row = tuple[str, Callable[[dict[str, Any]], str]]


def _num(value: Any, suffix: str = "") -> str:
    return MISSING if value is None else f"{format_number(value)}{suffix}"


def _secs(value: Any) -> str:
    return MISSING if value is None else format_seconds(value)


def _count(key: str) -> Callable[[dict[str, Any]], str]:
    def cell(t: dict[str, Any]) -> str:
        count, turns = t.get(key) or 0, t.get("turns") or 0
        share = f" ({format_number(100 * count / turns)}%)" if turns and count else ""
        return f"{count:,}{share}"

    return cell


def _quantiles(kind: str) -> Callable[[dict[str, Any]], str]:
    def cell(t: dict[str, Any]) -> str:
        return " / ".join(_secs(t.get(f"{kind}_{p}_s")) for p in ("p50", "p95", "p99"))

    return cell


def _levels(key: str, suffix: str = "") -> Callable[[dict[str, Any]], str]:
    mb = "_mb" if suffix else ""

    def cell(t: dict[str, Any]) -> str:
        start, end, peak = (t.get(f"{key}_{part}{mb}") for part in ("start", "end", "max"))
        if end is None:
            return MISSING
        return f"{_num(start)} → {_num(end)}{suffix} (max {_num(peak)})"

    return cell


def _growth(key: str, ci_key: str, quantity: str = "") -> Callable[[dict[str, Any]], str]:
    def cell(t: dict[str, Any]) -> str:
        growth, ci = t.get(key), t.get(ci_key)
        if growth is None:
            return MISSING
        text = f"{format_number(growth)}{quantity}/h"
        if ci and None not in ci:
            text += f" (95% CI {format_number(ci[0])}–{format_number(ci[1])})"
        return text

    return cell


def _time_to_limit(t: dict[str, Any]) -> str:
    hours = t.get("threads_hours_to_limit")
    if hours is None:
        return "not growing"
    return f"~{format_hours(hours)} to {format_number(t.get('threads_limit') or 0)}"


def _top_family(t: dict[str, Any]) -> str:
    family = t.get("threads_top_growing_family")
    if not family:
        return "none growing"
    return (
        f"{family['family']} {format_number(family['growth_per_hour'])}/h "
        f"({format_number(family['end'])} at the end)"
    )


def _cpu(key: str) -> Callable[[dict[str, Any]], str]:
    def cell(t: dict[str, Any]) -> str:
        value = t.get(f"{key}_percent")
        return (
            MISSING
            if value is None
            else f"{_num(value, '%')} ({t.get(f'{key}_samples', 0):,} samples)"
        )

    return cell


def _health(t: dict[str, Any]) -> str:
    text = f"{t.get('health_samples', 0):,} ({t.get('health_errors', 0):,} failed"
    last = t.get("health_last_error")
    return f"{text}; last error: {last})" if last else f"{text})"


#: (label, cell) rows of the key-numbers table, one column per target.
KEY_NUMBERS: list[Row] = [
    ("Build", lambda t: t.get("build") or MISSING),
    ("Turns ended", lambda t: f"{t.get('turns', 0):,}"),
    ("Replies (ok)", _count("replies")),
    ("Stalls", _count("stalls")),
    ("Errors", _count("errors")),
    ("Disconnects", _count("disconnects")),
    ("Protocol violations", _count("violations")),
    ("Mismatches", _count("mismatches")),
    ("First-token timeouts", _count("first_token_timeouts")),
    ("TTFT p50 / p95 / p99", _quantiles("ttft")),
    ("Reply time p50 / p95 / p99", _quantiles("reply")),
    ("Threads start → end", _levels("threads")),
    ("Thread growth", _growth("threads_growth_per_hour", "threads_growth_ci_per_hour")),
    ("Thread limit", _time_to_limit),
    ("Fastest-growing thread family", _top_family),
    ("RSS start → end", _levels("rss", " MB")),
    ("RSS growth", _growth("rss_growth_mb_per_hour", "rss_growth_ci_mb_per_hour", " MB")),
    ("Open fds start → end", _levels("fds")),
    ("Open fd growth", _growth("fds_growth_per_hour", "fds_growth_ci_per_hour")),
    ("Idle CPU (median)", _cpu("idle_cpu")),
    ("Busy CPU (median)", _cpu("busy_cpu")),
    (
        "Loop lag p99 / max",
        lambda t: f"{_secs(t.get('loop_lag_p99_s'))} / {_secs(t.get('loop_lag_max_s'))}",
    ),
    ("Restarts", lambda t: f"{t.get('restarts', 0):,}"),
    ("Process samples", lambda t: f"{t.get('samples', 0):,}"),
    ("/health samples", _health),
]


def key_numbers(summary: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(label, one cell per target) for every row of KEY_NUMBERS."""
    targets = list(summary["targets"].values())
    return [(label, [cell(t) for t in targets]) for label, cell in KEY_NUMBERS]


def verdict_rows(summary: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(target, build, verdict, failed criteria joined by "; ") per target."""
    rows = []
    for name, target in summary["targets"].items():
        failed = [
            c["expression"]
            for c in summary["criteria"]
            if c["target"] == name and c["status"] == FAIL
        ]
        rows.append((name, target.get("build") or MISSING, target["verdict"], "; ".join(failed)))
    return rows
