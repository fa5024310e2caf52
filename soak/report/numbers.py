"""The headline numbers and verdict rows shared by the HTML and Markdown reports.

Every cell is plain text (not escaped): each renderer escapes for its own format.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from soak.criteria import FAIL, format_hours, format_number, format_rate, format_seconds

MISSING = "—"

Row = tuple[str, Callable[[dict[str, Any]], str]]


def _num(value: Any, suffix: str = "") -> str:
    return MISSING if value is None else f"{format_number(value)}{suffix}"


def _secs(value: Any) -> str:
    return MISSING if value is None else format_seconds(value)


def _count(key: str, share_of_turns: bool = True) -> Callable[[dict[str, Any]], str]:
    def cell(t: dict[str, Any]) -> str:
        count, turns = t.get(key), t.get("turns") or 0
        if count is None:
            return MISSING
        shown = share_of_turns and turns and count
        share = f" ({format_number(100 * count / turns)}%)" if shown else ""
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


def _growth(key: str, mb: str = "") -> Callable[[dict[str, Any]], str]:
    """Verdict growth in the unit people read best, its shape, and growth per unit of work."""
    quantity = " MB" if mb else ""

    def cell(t: dict[str, Any]) -> str:
        growth = t.get(f"{key}_growth{mb}_per_hour")
        if growth is None:
            return MISSING
        text = format_rate(growth, quantity, t.get(f"{key}_growth_ci{mb}_per_hour"))
        shape = t.get(f"{key}_trend")
        if shape and shape != "growing":
            text += f", {shape}"
        if t.get(f"{key}_envelope"):
            text += f", sawtooth floor ({t.get(f'{key}_drops', 0):,} drops)"
        per_1k = t.get(f"{key}_growth{mb}_per_1k_replies")
        if per_1k is not None and shape == "growing":
            text += f"; {format_number(per_1k)}{quantity} per 1,000 replies"
        return text

    return cell


def _time_to_limit(key: str, mb: str = "") -> Callable[[dict[str, Any]], str]:
    quantity = " MB" if mb else ""

    def cell(t: dict[str, Any]) -> str:
        limit, source = t.get(f"{key}_limit{mb}"), t.get(f"{key}_limit_source")
        if limit is None:
            return f"limit unknown ({source})" if source else MISSING
        where = f"{format_number(limit)}{quantity} ({source})"
        hours = t.get(f"{key}_hours_to_limit")
        if hours is None:
            return f"not growing toward {where}"
        return f"~{format_hours(hours)} to {where}"

    return cell


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


def _idle_trend(t: dict[str, Any]) -> str:
    early, late = t.get("idle_cpu_early_percent"), t.get("idle_cpu_late_percent")
    if early is None or late is None:
        return MISSING
    text = f"{format_number(early)}% → {format_number(late)}%"
    per_1k = t.get("idle_cpu_growth_per_1k_replies")
    return text + (f" ({format_number(per_1k)} points per 1,000 replies)" if per_1k else "")


def _pair_of(key: str, first: str, second: str) -> Callable[[dict[str, Any]], str]:
    return lambda t: f"{_secs(t.get(f'{key}_{first}_s'))} / {_secs(t.get(f'{key}_{second}_s'))}"


def _drift(t: dict[str, Any]) -> str:
    drift = t.get("drift") or {}
    if not drift.get("signals"):
        return MISSING
    return (
        f"{drift.get('drift_spike_bins', 0):,} of {drift.get('bins', 0):,} intervals "
        f"≥ {format_seconds(drift.get('spike_threshold_s') or 0)} late"
    )


def _saturated(t: dict[str, Any]) -> str:
    value = t.get("soak_saturated_percent")
    return MISSING if value is None else f"{format_number(value)}% of the run"


#: (label, cell) rows of the key-numbers table, one column per target.
KEY_NUMBERS: list[Row] = [
    ("Build", lambda t: t.get("build") or MISSING),
    ("Turns ended", _count("turns", share_of_turns=False)),
    ("Replies (ok)", _count("replies")),
    ("Stalls", _count("stalls")),
    ("Errors", _count("errors")),
    ("Disconnects", _count("disconnects")),
    ("Protocol violations", _count("violations")),
    ("Mismatches", _count("mismatches")),
    ("First-token timeouts", _count("first_token_timeouts")),
    ("TTFT p50 / p95 / p99", _quantiles("ttft")),
    ("Reply time p50 / p95 / p99", _quantiles("reply")),
    ("Ping round trip p50 / p99", _pair_of("ping", "p50", "p99")),
    ("Longest gap between frames", lambda t: _secs(t.get("gap_max_s"))),
    ("Threads start → end", _levels("threads")),
    ("Thread growth", _growth("threads")),
    ("Thread limit", _time_to_limit("threads")),
    ("Fastest-growing thread family", _top_family),
    ("RSS start → end", _levels("rss", " MB")),
    ("RSS growth", _growth("rss", "_mb")),
    ("Memory limit", _time_to_limit("rss", "_mb")),
    ("Open fds start → end", _levels("fds")),
    ("Open fd growth", _growth("fds")),
    ("Open fd limit", _time_to_limit("fds")),
    ("Idle CPU (median)", _cpu("idle_cpu")),
    ("Idle CPU first → last idle period", _idle_trend),
    ("Busy CPU (median)", _cpu("busy_cpu")),
    ("Loop lag p99 / max", _pair_of("loop_lag", "p99", "max")),
    ("/health latency p50 / p99", _pair_of("health_latency", "p50", "p99")),
    ("Drift spikes", _drift),
    ("soak itself saturated", _saturated),
    ("Restarts", lambda t: f"{t.get('restarts', 0):,}"),
    ("Process samples", lambda t: f"{t.get('samples', 0):,}"),
    ("/health samples", _health),
]


def key_numbers(summary: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(label, one cell per target) for every row of KEY_NUMBERS."""
    targets = list(summary["targets"].values())
    return [(label, [cell(t) for t in targets]) for label, cell in KEY_NUMBERS]


def verdict_notes(summary: dict[str, Any]) -> list[str]:
    """What a reader must know before trusting the verdict: an interim or cut-off run,
    default criteria, a warm-up that was shortened."""
    notes = list(summary.get("evidence_gaps") or [])
    if summary.get("criteria_source") == "default":
        notes.append(
            "The profile has no criteria (criteria.checks), so soak's defaults judged it: "
            "no resource reaches its limit within 7 days"
            + (", at least 99% ok turns, no stalls." if summary.get("has_chats") else ".")
        )
    if summary.get("warmup_note"):
        notes.append(summary["warmup_note"][0].upper() + summary["warmup_note"][1:] + ".")
    return notes


def verdict_rows(summary: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(target, build, verdict, why) per target: the failed criteria, or what keeps an
    inconclusive one from a verdict, or that a passing one met its criteria."""
    return [
        (name, target.get("build") or MISSING, target["verdict"], verdict_why(summary, name))
        for name, target in summary["targets"].items()
    ]


def verdict_why(summary: dict[str, Any], name: str) -> str:
    """One target's verdict reasons joined by "; " (failed criteria by expression)."""
    target = summary["targets"][name]
    if target["verdict"] == FAIL:
        failed = [
            c["expression"]
            for c in summary["criteria"]
            if c["target"] == name and c["status"] == FAIL
        ]
        return ", ".join(failed)
    return "; ".join(target.get("verdict_reasons") or [])
