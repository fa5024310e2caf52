"""The headline numbers and verdict rows shared by the HTML and Markdown reports.

Every cell is plain text (not escaped): each renderer escapes for its own format.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from soak.criteria import FAIL
from soak.formatting import format_hours, format_number, format_rate, format_seconds, plural
from soak.model import Quantiles, RunSummary, SeriesSummary, TargetSummary

MISSING = "—"

Row = tuple[str, Callable[[TargetSummary], str]]


def _num(value: Any, suffix: str = "") -> str:
    return MISSING if value is None else f"{format_number(value)}{suffix}"


def _secs(value: Any) -> str:
    return MISSING if value is None else format_seconds(value)


def _count(name: str, share_of_turns: bool = True) -> Callable[[TargetSummary], str]:
    def cell(t: TargetSummary) -> str:
        count, turns = getattr(t.chats, name), t.chats.turns or 0
        if count is None:
            return MISSING
        shown = share_of_turns and turns and count
        share = f" ({format_number(100 * count / turns)}%)" if shown else ""
        return f"{count:,}{share}"

    return cell


def _quantiles(
    pick: Callable[[TargetSummary], Quantiles], *stats: str
) -> Callable[[TargetSummary], str]:
    return lambda t: " / ".join(_secs(getattr(pick(t), stat)) for stat in stats)


def _levels(name: str) -> Callable[[TargetSummary], str]:
    def cell(t: TargetSummary) -> str:
        series = t.series(name)
        if series.end is None:
            return MISSING
        return (
            f"{_num(series.start)} → {_num(series.end)}{series.quantity} (max {_num(series.max)})"
        )

    return cell


def _growth(name: str) -> Callable[[TargetSummary], str]:
    """Verdict growth in the unit people read best, its shape, and growth per unit of work."""

    def cell(t: TargetSummary) -> str:
        series: SeriesSummary = t.series(name)
        if series.growth_per_hour is None:
            return MISSING
        text = format_rate(series.growth_per_hour, series.quantity, series.growth_ci_per_hour)
        if series.trend and series.trend != "growing":
            text += f", {series.trend}"
        if series.envelope:
            text += f", sawtooth floor ({plural(series.drops, 'drop')})"
        per_1k = series.growth_per_1k_replies
        if per_1k is not None and series.trend == "growing":
            text += f"; {format_number(per_1k)}{series.quantity} per 1,000 replies"
        return text

    return cell


def _time_to_limit(name: str) -> Callable[[TargetSummary], str]:
    def cell(t: TargetSummary) -> str:
        series = t.series(name)
        if series.limit is None:
            return f"limit unknown ({series.limit_source})" if series.limit_source else MISSING
        where = f"{format_number(series.limit)}{series.quantity} ({series.limit_source})"
        if series.hours_to_limit is None:
            return f"not growing toward {where}"
        return f"~{format_hours(series.hours_to_limit)} to {where}"

    return cell


def _top_family(t: TargetSummary) -> str:
    family = t.top_growing_family
    if not family:
        return "none growing"
    return (
        f"{family['family']} {format_number(family['growth_per_hour'])}/h "
        f"({format_number(family['end'])} at the end)"
    )


def _cpu(state: str) -> Callable[[TargetSummary], str]:
    def cell(t: TargetSummary) -> str:
        value = getattr(t.cpu, f"{state}_percent")
        samples = getattr(t.cpu, f"{state}_samples")
        return MISSING if value is None else f"{_num(value, '%')} ({plural(samples, 'sample')})"

    return cell


def _cpu_limit(t: TargetSummary) -> str:
    """The cgroup CPU quota and how often it throttled the target."""
    cpu = t.cpu
    if cpu.limit_cores is None:
        return cpu.limit_source or MISSING
    text = f"{format_number(cpu.limit_cores)} cores ({cpu.limit_source})"
    if cpu.throttled_percent is not None:
        text += f"; throttled in {format_number(cpu.throttled_percent)}% of its CPU periods"
    return text


def _health(t: TargetSummary) -> str:
    health = t.health
    text = f"{health.samples:,} ({health.errors:,} failed"
    return f"{text}; last error: {health.last_error})" if health.last_error else f"{text})"


def _idle_trend(t: TargetSummary) -> str:
    early, late = t.cpu.idle_early_percent, t.cpu.idle_late_percent
    if early is None or late is None:
        return MISSING
    text = f"{format_number(early)}% → {format_number(late)}%"
    per_1k = t.cpu.idle_growth_per_1k_replies
    return text + (f" ({format_number(per_1k)} points per 1,000 replies)" if per_1k else "")


def _drift(t: TargetSummary) -> str:
    drift = t.drift
    if not drift.signals:
        return MISSING
    return (
        f"{drift.drift_spike_bins:,} of {plural(drift.bins, 'interval')} "
        f"≥ {format_seconds(drift.spike_threshold_s or 0)} late"
    )


def _saturated(t: TargetSummary) -> str:
    value = t.soak_saturated_percent
    return MISSING if value is None else f"{format_number(value)}% of the run"


def _tokens_per_s(value: float | None) -> str:
    return MISSING if value is None else f"{format_number(value)}/s"


#: (label, cell) rows of the key-numbers table, one column per target.
KEY_NUMBERS: list[Row] = [
    ("Build", lambda t: t.build or MISSING),
    ("Turns ended", _count("turns", share_of_turns=False)),
    ("Replies (ok)", _count("replies")),
    ("Stalls", _count("stalls")),
    ("Errors", _count("errors")),
    ("Disconnects", _count("disconnects")),
    ("Protocol violations", _count("violations")),
    ("Mismatches", _count("mismatches")),
    ("First-token timeouts", _count("first_token_timeouts")),
    ("TTFT p50 / p95 / p99", _quantiles(lambda t: t.chats.ttft, "p50", "p95", "p99")),
    ("Reply time p50 / p95 / p99", _quantiles(lambda t: t.chats.reply, "p50", "p95", "p99")),
    ("Inter-token latency p50 / p95 / p99", _quantiles(lambda t: t.chats.itl, "p50", "p95", "p99")),
    ("Time per output token p50 / p95", _quantiles(lambda t: t.chats.tpot, "p50", "p95")),
    ("Output tokens/s (median reply)", lambda t: _tokens_per_s(t.chats.tokens_per_s)),
    ("Ping round trip p50 / p99", _quantiles(lambda t: t.chats.ping, "p50", "p99")),
    ("Longest gap between frames", lambda t: _secs(t.chats.gap_max_s)),
    ("Threads start → end", _levels("threads")),
    ("Thread growth", _growth("threads")),
    ("Thread limit", _time_to_limit("threads")),
    ("Fastest-growing thread family", _top_family),
    ("RSS start → end", _levels("rss")),
    ("RSS growth", _growth("rss")),
    ("Memory limit", _time_to_limit("rss")),
    ("Open fds start → end", _levels("fds")),
    ("Open fd growth", _growth("fds")),
    ("Open fd limit", _time_to_limit("fds")),
    ("Idle CPU (median)", _cpu("idle")),
    ("Idle CPU first → last idle period", _idle_trend),
    ("Busy CPU (median)", _cpu("busy")),
    ("CPU limit", _cpu_limit),
    ("Loop lag p99 / max", _quantiles(lambda t: t.loop_lag, "p99", "max")),
    ("/health latency p50 / p99", _quantiles(lambda t: t.health.latency, "p50", "p99")),
    ("Drift spikes", _drift),
    ("soak itself saturated", _saturated),
    ("Restarts", lambda t: f"{t.restarts:,}"),
    ("Process samples", lambda t: f"{t.samples:,}"),
    ("/health samples", _health),
]


def key_numbers(summary: RunSummary) -> list[tuple[str, list[str]]]:
    """(label, one cell per target) for every row of KEY_NUMBERS."""
    targets = list(summary.targets.values())
    return [(label, [cell(t) for t in targets]) for label, cell in KEY_NUMBERS]


def verdict_notes(summary: RunSummary) -> list[str]:
    """What a reader must know before trusting the verdict: an interim or cut-off run,
    default criteria, a warm-up that was shortened."""
    notes = list(summary.evidence_gaps)
    if summary.criteria_source == "default":
        notes.append(
            "The profile has no criteria (criteria.checks), so soak's defaults judged it: "
            "no resource reaches its limit within 7 days"
            + (", at least 99% ok turns, no stalls." if summary.has_chats else ".")
        )
    if summary.warmup_note:
        notes.append(summary.warmup_note[0].upper() + summary.warmup_note[1:] + ".")
    return notes


def verdict_rows(summary: RunSummary) -> list[tuple[str, str, str, str]]:
    """(target, build, verdict, why) per target: the failed criteria, or what keeps an
    inconclusive one from a verdict, or that a passing one met its criteria."""
    return [
        (name, target.build or MISSING, target.verdict or "", verdict_why(summary, name))
        for name, target in summary.targets.items()
    ]


def verdict_why(summary: RunSummary, name: str) -> str:
    """One target's verdict reasons joined by "; " (failed criteria by expression)."""
    target = summary.targets[name]
    if target.verdict == FAIL:
        return ", ".join(c.expression for c in summary.checks_of(name, FAIL))
    return "; ".join(target.verdict_reasons)
