"""Numbers and sentences for people, shared by criteria messages, findings, reports and
compare, so a number reads the same wherever it is shown."""

from __future__ import annotations

from typing import Any

from soak.model import SeriesSummary
from soak.units import format_duration

PER_1K = "per 1,000 replies"


def format_number(value: float) -> str:
    """A number for people: thousands separators, about 3 significant digits."""
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 0.01:
        return f"{value:.3g}"
    return f"{value:.1e}"


def sampled_from(record: dict[str, Any]) -> str:
    """Where a process.jsonl record came from, for people: "pid 4242" or "from Prometheus"."""
    if record.get("source") == "prometheus":
        return "from Prometheus"
    return f"pid {record.get('pid')}"


def format_seconds(seconds: float) -> str:
    """A latency for people: "2 s", "1.5 s", "120 ms", "3.27 ms"."""
    if abs(seconds) >= 1:
        return f"{format_number(seconds)} s"
    return f"{format_number(seconds * 1000)} ms"


def format_growth(per_hour: float, quantity: str = "") -> str:
    """A growth rate per hour: "12/h", "35.2 MB/h"."""
    return f"{format_number(per_hour)}{quantity}/h"


def format_rate(per_hour: float, quantity: str = "", ci: Any = None, hourly: bool = False) -> str:
    """A growth rate in the unit people read best, with its 95% CI in the same unit:
    "3.4/min (95% CI 3.1–3.7)" from 60/h up, else "12/h (95% CI 11–13)". `hourly`:
    always per hour, as beside a criterion written per hour ("< 100/h")."""
    scale, unit = (60.0, "min") if abs(per_hour) >= 60 and not hourly else (1.0, "h")
    text = f"{format_number(per_hour / scale)}{quantity}/{unit}"
    if is_pair(ci):
        text += f" (95% CI {format_number(ci[0] / scale)}–{format_number(ci[1] / scale)})"
    return text


def format_hours(hours: float) -> str:
    """A time span in hours for people: "20 h", "3.5 days", "4.1 years"."""
    if hours >= 2 * 8766:
        return f"{format_number(round(hours / 8766, 1))} years"
    if hours >= 48:
        return f"{format_number(round(hours / 24, 1))} days"
    return f"{format_number(round(hours, 1))} h"


def plural(count: int, noun: str, many: str | None = None) -> str:
    """ "1 stall", "3 stalls", "1,204 replies" (many: the plural when not noun + "s")."""
    word = noun if count == 1 else (many or f"{noun}s")
    return f"{count:,} {word}"


#: The singular of each plural noun soak's messages count (for `counted`).
_SINGULAR = {
    "chats": "chat", "disconnects": "disconnect", "errors": "error", "mismatches": "mismatch",
    "replies": "reply", "restarts": "restart", "stalls": "stall", "timeouts": "timeout",
    "turns": "turn", "violations": "violation",
}  # fmt: skip


def counted(count: int, phrase: str) -> str:
    """A count and a plural phrase that agree: "3 ok replies", "1 ok reply", "1 chat stuck
    to the end" (the plural nouns of `phrase` become singular for one)."""
    if count == 1:
        phrase = " ".join(_SINGULAR.get(word, word) for word in phrase.split(" "))
    return f"{count:,} {phrase}"


def is_pair(value: Any) -> bool:
    """True for a [low, high] interval of numbers."""
    return (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, int | float) for v in value)
    )


def growth_sentence(
    series: SeriesSummary,
    restarts: int = 0,
    replies_per_day: float | None = None,
    hourly: bool = False,
) -> str:
    """What a series does: "threads grow 3.4/min (95% CI 3.1–3.7); 4,096 (threads-max)
    reached in ~20 h", a plateau, or a sawtooth's teeth, with growth per unit of work
    (`hourly`: the rate per hour, as beside a criterion)."""
    if series.growth_per_hour is None:
        return f"{series.noun}: no trend"
    q = series.quantity
    rate = format_rate(series.growth_per_hour, q, series.growth_ci_per_hour, hourly)
    if series.trend == "plateau" and series.start is not None and series.end is not None:
        since = f" by +{format_duration(series.level_since_s)}" if series.level_since_s else ""
        text = (
            f"{series.noun} rose {format_number(series.start)} → {format_number(series.end)}{q}"
            f"{since}, then held level: {rate} since"
        )
    else:
        text = f"{series.noun} {series.verb} {rate}"
    if series.envelope:
        text += f", tooth by tooth (a sawtooth with {plural(series.drops, 'drop')})"
    text += work_clause(series, replies_per_day)
    if series.hours_to_limit is not None and series.limit is not None:
        source = f" ({series.limit_source})" if series.limit_source else ""
        text += (
            f"; {format_number(series.limit)}{q}{source} reached in "
            f"~{format_hours(series.hours_to_limit)}"
        )
    if restarts:
        text += f", in the longest of {restarts + 1} process segments"
    return text


def work_clause(series: SeriesSummary, replies_per_day: float | None = None) -> str:
    """ "; 0.33 per 1,000 replies: at 2,000 replies a day, 4,096 in ~15 years" (or "")."""
    if series.growth_per_1k_replies is None or series.trend in ("flat", "plateau"):
        return ""
    q = series.quantity
    text = f"; {format_number(series.growth_per_1k_replies)}{q} {PER_1K}"
    if series.growth_per_connection is not None:
        text += f", {format_number(series.growth_per_connection)}{q} per new connection"
    return text + production_clause(series, replies_per_day)


def production_clause(series: SeriesSummary, replies_per_day: float | None = None) -> str:
    """ ": at 2,000 replies a day, 4,096 in ~15 years" when criteria.replies_per_day is set."""
    hours = series.hours_to_limit_at_replies_per_day
    if hours is None or not replies_per_day or series.limit is None:
        return ""
    return (
        f": at {format_number(replies_per_day)} replies a day, "
        f"{format_number(series.limit)}{series.quantity} in ~{format_hours(hours)}"
    )
