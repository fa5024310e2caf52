"""Pass criteria: `METRIC OP VALUE` expressions, parsed once, checked per target.

Examples: ``threads.growth_per_hour < 100``, ``stalls.count == 0``, ``ttft.p95 < 2s``,
``stalls.rate <= 0.1%``, ``idle_cpu.percent < 5``, ``threads.hours_to_limit > 168``,
``health.diagnostics.thread_count.max < 200``. Time metrics take durations ("2s",
"250ms", a quoted "2s", or a bare number of seconds); rates (count / turns) take a
fraction or a percentage; hours-to-limit take hours or a duration ("7d"). A check reads
one target's entry of summary.json and says, with numbers, what it found.

Per-target overrides (profile `[criteria.targets.NAME]`): `checks` replace the general
checks on the same metrics and add the others; `skip` drops general checks by metric.

A check is `inconclusive` when its value exists but is no evidence: a rate of a handful
of turns, a p99 of a dozen replies, a trend fitted over too little of the load or one
that cannot tell a pool filling up from a leak. A profile without checks is judged by
`DEFAULT_CHECKS` (and `DEFAULT_CHAT_CHECKS` when the run drove chats), never by nothing.
"""

from __future__ import annotations

import difflib
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from soak.units import DURATION_HINT, format_duration, parse_duration

PASS, FAIL, SKIPPED, INCONCLUSIVE = "pass", "fail", "skipped", "inconclusive"
#: Where a target's criterion came from: the profile's general checks, its override, or
#: soak's defaults (the profile has no checks).
SCOPE_PROFILE, SCOPE_TARGET, SCOPE_DEFAULT = "profile", "target", "default"
#: The checks of a profile that has none: no resource runs out within a week.
DEFAULT_CHECKS = (
    "threads.hours_to_limit > 7d",
    "fds.hours_to_limit > 7d",
    "rss.hours_to_limit > 7d",
)
#: Added to DEFAULT_CHECKS for a run that drove chats: they get answers, none stalls.
DEFAULT_CHAT_CHECKS = ("ok.rate >= 99%", "stalls.count == 0")
#: Fewer ended turns than this are no evidence for an outcome rate (or for a zero count).
MIN_TURNS = 20
#: Latency samples a percentile needs before it says anything (p99 of 12 is their max).
MIN_QUANTILE_SAMPLES = {"p50": 5, "p95": 20, "p99": 100, "max": 1}
#: Samples a CPU median or a /health statistic needs.
MIN_LEVEL_SAMPLES = 5
#: The warm-up is cut to this share of the load: trends must be fitted over the load.
MAX_WARMUP_SHARE = 1 / 3

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_SYMBOLS = {"<": "<", "<=": "≤", ">": ">", ">=": "≥", "==": "=", "!=": "≠"}
_EXPRESSION = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][^\s<>=!]*)\s*(?P<op><=|>=|==|!=|<|>)\s*(?P<value>\S.*?)\s*$"
)
_FORM_HINT = 'write METRIC OP VALUE such as "ttft.p95 < 2s" with OP one of < <= > >= == !='
#: Statistics of a /health field a criterion can name (health.<field>.<stat>).
HEALTH_STATS = ("last", "min", "max", "mean", "p50", "p95", "p99", "growth_per_hour")
HEALTH_PREFIX = "health."
#: Keys of a per-target override table.
OVERRIDE_KEYS = ("checks", "skip")
_PER_1K = "per 1,000 replies"
#: Counts said on their own, not as a share of the turns.
_PLAIN_COUNTS = ("turns", "restarts", "replies", "chats_never_recovered")


def capped_warmup(warmup_s: float, load_s: float, what: str = "load") -> tuple[float, str | None]:
    """The warm-up the trends use, and a note when the profile's was cut: at most
    MAX_WARMUP_SHARE of the load (seconds), so a fit never sees only the idle tail."""
    cap = MAX_WARMUP_SHARE * load_s
    if load_s <= 0 or warmup_s <= cap:
        return warmup_s, None
    note = (
        f"criteria.warmup {format_duration(warmup_s)} is more than a third of the "
        f"{format_duration(load_s)} {what}; trends are fitted after {format_duration(cap)} "
        f"instead, so that they cover the {what}"
    )
    return cap, note


# --- numbers for people -------------------------------------------------------------
def format_number(value: float) -> str:
    """A number for people: thousands separators, about 3 significant digits."""
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 0.01:
        return f"{value:.3g}"
    return f"{value:.1e}"


def format_seconds(seconds: float) -> str:
    """A latency for people: "2 s", "1.5 s", "120 ms", "3.27 ms"."""
    if abs(seconds) >= 1:
        return f"{format_number(seconds)} s"
    return f"{format_number(seconds * 1000)} ms"


def format_growth(per_hour: float, quantity: str = "") -> str:
    """A growth rate per hour: "12/h", "35.2 MB/h"."""
    return f"{format_number(per_hour)}{quantity}/h"


def format_rate(per_hour: float, quantity: str = "", ci: Any = None) -> str:
    """A growth rate in the unit people read best, with its 95% CI in the same unit:
    "3.4/min (95% CI 3.1–3.7)" from 60/h up, else "12/h (95% CI 11–13)"."""
    scale, unit = (60.0, "min") if abs(per_hour) >= 60 else (1.0, "h")
    text = f"{format_number(per_hour / scale)}{quantity}/{unit}"
    if _pair(ci):
        text += f" (95% CI {format_number(ci[0] / scale)}–{format_number(ci[1] / scale)})"
    return text


def format_hours(hours: float) -> str:
    """A time span in hours for people: "20 h", "3.5 days", "4.1 years"."""
    if hours >= 2 * 8766:
        return f"{format_number(round(hours / 8766, 1))} years"
    if hours >= 48:
        return f"{format_number(round(hours / 24, 1))} days"
    return f"{format_number(round(hours, 1))} h"


def _pair(value: Any) -> bool:
    return (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, int | float) for v in value)
    )


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


# --- growth sentences ----------------------------------------------------------------
@dataclass(frozen=True)
class SeriesView:
    """The numbers a growth sentence needs about one series (from one summary entry)."""

    noun: str
    verb: str
    quantity: str
    per_hour: float | None
    ci: Any = None
    trend: str | None = None
    start: float | None = None
    end: float | None = None
    level_since_s: float | None = None
    drops: int = 0
    envelope: bool = False
    per_1k: float | None = None
    per_1k_ci: Any = None
    per_connection: float | None = None
    limit: float | None = None
    limit_source: str | None = None
    hours: float | None = None
    production_hours: float | None = None
    replies_per_day: float | None = None
    restarts: int = 0


def series_view(summary: Mapping[str, Any], key: str, mb: str, noun: str) -> SeriesView:
    """The SeriesView of summary fields `{key}_*` (mb: "_mb" for memory, else "")."""
    quantity = " MB" if mb else ""
    return SeriesView(
        noun=noun,
        verb="grow" if noun.endswith("s") else "grows",
        quantity=quantity,
        per_hour=_num(summary.get(f"{key}_growth{mb}_per_hour")),
        ci=summary.get(f"{key}_growth_ci{mb}_per_hour"),
        trend=summary.get(f"{key}_trend"),
        start=_num(summary.get(f"{key}_start{mb}")),
        end=_num(summary.get(f"{key}_end{mb}")),
        level_since_s=_num(summary.get(f"{key}_level_since_s")),
        drops=int(summary.get(f"{key}_drops") or 0),
        envelope=bool(summary.get(f"{key}_envelope")),
        per_1k=_num(summary.get(f"{key}_growth{mb}_per_1k_replies")),
        per_1k_ci=summary.get(f"{key}_growth_ci{mb}_per_1k_replies"),
        per_connection=_num(summary.get(f"{key}_growth{mb}_per_connection")),
        limit=_num(summary.get(f"{key}_limit{mb}")),
        limit_source=summary.get(f"{key}_limit_source"),
        hours=_num(summary.get(f"{key}_hours_to_limit")),
        production_hours=_num(summary.get(f"{key}_hours_to_limit_at_replies_per_day")),
        replies_per_day=_num(summary.get("replies_per_day")),
        restarts=int(summary.get("restarts") or 0),
    )


def growth_sentence(view: SeriesView) -> str:
    """What a series does: "threads grow 3.4/min (95% CI 3.1–3.7); 4,096 (threads-max)
    reached in ~20 h", a plateau, or a sawtooth's teeth, with growth per unit of work."""
    if view.per_hour is None:
        return f"{view.noun}: no trend"
    q = view.quantity
    rate = format_rate(view.per_hour, q, view.ci)
    if view.trend == "plateau" and view.start is not None and view.end is not None:
        since = f" by +{format_duration(view.level_since_s)}" if view.level_since_s else ""
        text = (
            f"{view.noun} rose {format_number(view.start)} → {format_number(view.end)}{q}"
            f"{since}, then held level: {rate} since"
        )
    else:
        text = f"{view.noun} {view.verb} {rate}"
    if view.envelope:
        text += f", tooth by tooth (a sawtooth with {view.drops:,} drops)"
    text += work_clause(view)
    if view.hours is not None and view.limit is not None:
        source = f" ({view.limit_source})" if view.limit_source else ""
        text += f"; {format_number(view.limit)}{q}{source} reached in ~{format_hours(view.hours)}"
    if view.restarts:
        text += f", in the longest of {view.restarts + 1} process segments"
    return text


def work_clause(view: SeriesView) -> str:
    """ "; 0.33 per 1,000 replies: at 2,000 replies a day, 4,096 in ~15 years" (or "")."""
    if view.per_1k is None or view.trend in ("flat", "plateau"):
        return ""
    text = f"; {format_number(view.per_1k)}{view.quantity} {_PER_1K}"
    if view.per_connection is not None:
        text += f", {format_number(view.per_connection)}{view.quantity} per new connection"
    return text + production_clause(view)


def production_clause(view: SeriesView) -> str:
    """ ": at 2,000 replies a day, 4,096 in ~15 years" when criteria.replies_per_day is set."""
    if view.production_hours is None or not view.replies_per_day or view.limit is None:
        return ""
    return (
        f": at {format_number(view.replies_per_day)} replies a day, "
        f"{format_number(view.limit)}{view.quantity} in ~{format_hours(view.production_hours)}"
    )


# --- metrics ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Metric:
    """A checkable number of a target summary.

    kind: growth (per hour), per_work (per 1,000 replies or per connection), hours (time
    to limit), level, count, rate (count / turns), time (s), percent, points (percentage
    points of one core per 1,000 replies).
    field: the summary key the value comes from (for a rate, the count's key).
    quantity: the unit word appended to numbers in messages (" MB").
    series: for growth, per_work and hours: (summary key prefix, "_mb" or "", noun).
    chat: measured by soak's load, so a saturated load generator can distort it.
    samples: the summary key counting the samples behind the value, and how many it needs.
    """

    name: str
    field: str
    kind: str
    label: str
    unit: str
    quantity: str = ""
    series: tuple[str, str, str] | None = None
    chat: bool = False
    samples: tuple[str, int] | None = None

    def raw(self, summary: Mapping[str, Any]) -> Any:
        """The summary entry behind the metric."""
        return summary.get(self.field)

    def value(self, summary: Mapping[str, Any]) -> float | None:
        """The metric's value in `unit`, or None when the summary does not have it.

        A time to limit of a series that is not growing is infinite (it never gets there).
        """
        raw = _num(self.raw(summary))
        if self.kind == "rate":
            turns = _num(summary.get("turns")) or 0
            return raw / turns if raw is not None and turns > 0 else None
        if self.kind == "hours" and raw is None and self.series is not None:
            key, mb, _ = self.series
            growth = _num(summary.get(f"{key}_growth{mb}_per_hour"))
            return math.inf if growth is not None and growth <= 0 else None
        return raw

    def format(self, value: float) -> str:
        """A value or threshold of this metric for people."""
        if self.kind == "growth":
            return format_growth(value, self.quantity)
        if self.kind == "rate":
            return f"{format_number(value * 100)}%"
        if self.kind == "time":
            return format_seconds(value)
        if self.kind == "percent":
            return f"{format_number(value)}%"
        if self.kind == "hours":
            return "never" if math.isinf(value) else format_hours(value)
        if self.kind == "points":
            return f"{format_number(value)} points {_PER_1K}"
        if self.kind == "per_work":
            return f"{format_number(value)}{self.quantity} {self.unit.split('/', 1)[1]}"
        return f"{format_number(value)}{self.quantity}"

    def describe(self, value: float, summary: Mapping[str, Any]) -> str:
        """What the value says, with the context a person needs to act on it."""
        text = self._describe(value, summary)
        saturated = _num(summary.get("soak_saturated_percent"))
        if self.chat and saturated:
            text += (
                f" (soak itself was saturated for {format_number(saturated)}% of the run, "
                "which can inflate this: see soak's own health)"
            )
        return text

    def _describe(self, value: float, summary: Mapping[str, Any]) -> str:
        if self.series is not None:
            view = series_view(summary, *self.series)
            if self.kind == "growth":
                return growth_sentence(view)
            if self.kind == "hours":
                return self._describe_hours(value, view)
            text = f"{view.noun} {view.verb} {self.format(value)}"
            ci = summary.get(self.field.replace("_growth", "_growth_ci"))
            if _pair(ci):
                text += f" (95% CI {format_number(ci[0])}–{format_number(ci[1])})"
            return text + (production_clause(view) if self.field.endswith("_1k_replies") else "")
        if self.kind in ("count", "rate"):
            count = int(_num(self.raw(summary)) or 0)
            turns = int(_num(summary.get("turns")) or 0)
            if self.kind == "count" and self.field in _PLAIN_COUNTS:
                return f"{count:,} {self.label}"
            share = f" ({format_number(100 * count / turns)}%)" if turns else ""
            return f"{count:,} {self.label} in {turns:,} turns{share}"
        if self.kind == "percent":
            samples = summary.get(self.field.replace("_percent", "_samples"))
            basis = f" (median of {samples:,} samples)" if isinstance(samples, int) else ""
            return f"{self.label} {self.format(value)} of one core{basis}"
        if self.kind == "points":
            early = _num(summary.get("idle_cpu_early_percent"))
            late = _num(summary.get("idle_cpu_late_percent"))
            span = (
                f" ({format_number(early)}% → {format_number(late)}% of one core from the "
                "first to the last idle period)"
                if early is not None and late is not None
                else ""
            )
            return f"{self.label} {format_number(value)} points {_PER_1K}{span}"
        return f"{self.label} {self.format(value)}"

    def _describe_hours(self, value: float, view: SeriesView) -> str:
        limit = f"{format_number(view.limit or 0)}{view.quantity}"
        source = f" ({view.limit_source})" if view.limit_source else ""
        if math.isinf(value):
            rate = format_rate(view.per_hour or 0.0, view.quantity)
            return f"{view.noun} are not growing ({rate}), so they never reach {limit}{source}"
        rate = format_rate(view.per_hour or 0.0, view.quantity, view.ci)
        return f"{view.noun} reach {limit}{source} in ~{format_hours(value)} at {rate}"

    def ci(self, summary: Mapping[str, Any]) -> tuple[float, float] | None:
        """The 95% confidence interval of the value, for growth rates that have one."""
        if self.kind == "growth" or (self.kind == "per_work" and "_1k_" in self.field):
            ci = summary.get(self.field.replace("_growth", "_growth_ci", 1))
            return (float(ci[0]), float(ci[1])) if _pair(ci) else None
        return None

    def doubt(self, summary: Mapping[str, Any], passed: bool) -> str | None:
        """Why a measured value is no evidence for a verdict (None: it is).

        Both ways for too few samples and for a trend fitted over too little of the load;
        for a trend that cannot tell a plateau from a leak, and for a count of zero
        problems in a handful of turns, only when it would pass / fail on weak grounds.
        """
        if self.series is not None:
            key = self.series[0]
            said = summary.get(f"{key}_doubt")
            if said:
                return str(said)
            if summary.get(f"{key}_trend") == "undecided" and not passed:
                return (
                    f"{self.series[2]} rose, but the end of the load is too short or too "
                    "noisy to tell a level that settles (a pool filling up, an allocator "
                    "keeping its high-water mark) from one that keeps growing (a leak); "
                    "run longer"
                )
            return None
        turns = int(_num(summary.get("turns")) or 0)
        if not passed and self.chat and self.field in ("stalls", "first_token_timeouts", "replies"):
            saturated = _saturated_timeouts(summary, turns, self.field)
            if saturated:
                return saturated
        weak_turns = (
            f"only {turns:,} turns ended ({MIN_TURNS} needed for an outcome rate); run longer "
            "or with more users"
        )
        if self.kind == "rate" and turns < MIN_TURNS:
            return weak_turns
        problems = self.kind == "count" and self.chat and self.field not in _PLAIN_COUNTS
        if problems and passed and turns < MIN_TURNS:
            return weak_turns
        if self.samples is not None:
            key, needed = self.samples
            count = int(_num(summary.get(key)) or 0)
            if count < needed:
                return (
                    f"only {count:,} samples behind it ({needed:,} needed for "
                    f"{self.name}); run longer"
                )
        return None

    def unavailable(self, summary: Mapping[str, Any]) -> str:
        """Why the value is missing, and what to change."""
        reasons = summary.get("unavailable") or {}
        key = "turns" if self.kind == "rate" and self.raw(summary) is not None else self.field
        if reasons.get(key):
            return str(reasons[key])
        if self.kind == "rate":
            return "no turns ended for this target, so there is no rate; check that its load ran"
        return "this run recorded no data for it"


def _saturated_timeouts(summary: Mapping[str, Any], turns: int, field: str) -> str | None:
    """Why failing timeouts (stalls, first-token timeouts, or an ok rate they pull down) are
    no evidence: most of them fell while soak's own load process was saturated, when its
    timers may have fired late."""
    drift = summary.get("drift") or {}
    stalls = int(_num(drift.get("stalls_while_soak_saturated")) or 0)
    first = int(_num(drift.get("first_token_timeouts_while_soak_saturated")) or 0)
    during, failed, noun = {
        "stalls": (stalls, summary.get("stalls"), "stalls"),
        "first_token_timeouts": (
            first,
            summary.get("first_token_timeouts"),
            "first-token timeouts",
        ),
        "replies": (stalls + first, turns - int(_num(summary.get("replies")) or 0), "failed turns"),
    }[field]
    failed = int(_num(failed) or 0)
    if not during or 2 * during < failed:
        return None
    return (
        f"{during:,} of its {failed:,} {noun} timed out while soak's own load process was "
        "saturated (over 90% CPU or 0.5 s of loop lag), so they may be soak's; run with "
        "more load workers (--workers) or fewer users per worker"
    )


@dataclass(frozen=True)
class HealthMetric(Metric):
    """`health.<dotted path>.<stat>`: a statistic of a numeric /health field."""

    path: str = ""
    stat: str = "max"

    def raw(self, summary: Mapping[str, Any]) -> Any:
        fields = summary.get("health_fields") or {}
        entry = fields.get(self.path) if isinstance(fields, dict) else None
        return entry.get(self.stat) if isinstance(entry, dict) else None

    def ci(self, summary: Mapping[str, Any]) -> tuple[float, float] | None:
        entry = (summary.get("health_fields") or {}).get(self.path) or {}
        ci = entry.get("growth_ci_per_hour")
        return (float(ci[0]), float(ci[1])) if self.kind == "growth" and _pair(ci) else None

    def doubt(self, summary: Mapping[str, Any], passed: bool) -> str | None:
        entry = (summary.get("health_fields") or {}).get(self.path) or {}
        count = int(_num(entry.get("samples")) or 0)
        if count < MIN_LEVEL_SAMPLES:
            return (
                f"only {count:,} /health samples carry {self.path} ({MIN_LEVEL_SAMPLES} "
                "needed); run longer or poll /health more often (collector.health_interval)"
            )
        if self.kind == "growth" and entry.get("trend") == "undecided" and not passed:
            return (
                f"/health {self.path} rose, but the last third of the run cannot tell a level "
                "that settles from one that keeps growing; run longer"
            )
        return None

    def _describe(self, value: float, summary: Mapping[str, Any]) -> str:
        if self.kind == "growth":
            entry = (summary.get("health_fields") or {}).get(self.path) or {}
            trend = entry.get("trend")
            rate = format_rate(value, "", entry.get("growth_ci_per_hour"))
            said = f"/health {self.path} grows {rate}"
            return f"{said} ({trend})" if trend and trend != "growing" else said
        return f"/health {self.path} {self.stat} {self.format(value)}"

    def unavailable(self, summary: Mapping[str, Any]) -> str:
        fields = list(summary.get("health_fields") or {})
        if self.path in fields:
            return f"the /health field {self.path!r} has no {self.stat} in this run"
        if not fields:
            return (
                "no numeric /health field was recorded for this target; give it a health "
                "URL (targets.health) that returns JSON"
            )
        close = difflib.get_close_matches(self.path, fields, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        shown = ", ".join(fields[:15]) + (", ..." if len(fields) > 15 else "")
        return (
            f"the /health field {self.path!r} is not a number in any sample.{hint} "
            f"Numeric fields: {shown}"
        )


def _metrics() -> dict[str, Metric]:
    metrics: list[Metric] = []
    for key, mb, noun, unit in (
        ("threads", "", "threads", "threads"),
        ("rss", "_mb", "RSS", "MB"),
        ("uss", "_mb", "USS", "MB"),
        ("fds", "", "open fds", "fds"),
    ):
        quantity = " MB" if mb else ""
        series = (key, mb, noun)
        for stat, word in (("max", "peaked at"), ("end", "ended at"), ("start", "started at")):
            name = f"{key}.{stat}{mb}"
            metrics.append(
                Metric(name, f"{key}_{stat}{mb}", "level", f"{noun} {word}", unit, quantity)
            )
        metrics += [
            Metric(
                f"{key}.growth{mb}_per_hour",
                f"{key}_growth{mb}_per_hour",
                "growth",
                f"{noun} growth",
                f"{unit}/h",
                quantity,
                series,
            ),
            Metric(
                f"{key}.growth{mb}_per_1k_replies",
                f"{key}_growth{mb}_per_1k_replies",
                "per_work",
                f"{noun} growth",
                f"{unit}/{_PER_1K}",
                quantity,
                series,
            ),
            Metric(
                f"{key}.growth{mb}_per_connection",
                f"{key}_growth{mb}_per_connection",
                "per_work",
                f"{noun} growth",
                f"{unit}/per new connection",
                quantity,
                series,
            ),
            Metric(
                f"{key}.hours_to_limit",
                f"{key}_hours_to_limit",
                "hours",
                f"{noun} time to limit",
                "h",
                quantity,
                series,
            ),
        ]
    metrics += [
        Metric("replies.count", "replies", "count", "replies", "replies", chat=True),
        Metric("ok.rate", "replies", "rate", "ok replies", "fraction of turns", chat=True),
        Metric(
            "stuck_chats.count",
            "chats_never_recovered",
            "count",
            "chats stuck to the end",
            "chats",
            chat=True,
        ),
        Metric("turns.count", "turns", "count", "turns ended", "turns", chat=True),
        Metric("restarts.count", "restarts", "count", "target restarts (new pid)", "restarts"),
        Metric(
            "idle_cpu.percent",
            "idle_cpu_percent",
            "percent",
            "idle CPU",
            "%",
            samples=("idle_cpu_samples", MIN_LEVEL_SAMPLES),
        ),
        Metric(
            "busy_cpu.percent",
            "busy_cpu_percent",
            "percent",
            "busy CPU",
            "%",
            samples=("busy_cpu_samples", MIN_LEVEL_SAMPLES),
        ),
        Metric(
            "idle_cpu.early_percent",
            "idle_cpu_early_percent",
            "percent",
            "idle CPU in the first idle period",
            "%",
        ),
        Metric(
            "idle_cpu.late_percent",
            "idle_cpu_late_percent",
            "percent",
            "idle CPU in the last idle period",
            "%",
        ),
        Metric(
            "idle_cpu.growth_per_1k_replies",
            "idle_cpu_growth_per_1k_replies",
            "points",
            "idle CPU grows",
            f"points/{_PER_1K}",
        ),
    ]
    outcomes = ("stalls", "errors", "disconnects", "violations", "mismatches")
    for noun in (*outcomes, "first_token_timeouts"):
        label = noun.replace("_", "-", 1).replace("_", " ")
        metrics.append(Metric(f"{noun}.count", noun, "count", label, noun, chat=True))
        metrics.append(Metric(f"{noun}.rate", noun, "rate", label, "fraction of turns", chat=True))
    for prefix, label, stats, chat in (
        ("ttft", "TTFT", ("p50", "p95", "p99"), True),
        ("reply", "reply time", ("p50", "p95", "p99"), True),
        ("ping", "ping round trip", ("p50", "p95", "p99", "max"), True),
        ("connect", "connect time", ("p50", "p95", "p99"), True),
        ("loop_lag", "loop lag", ("p50", "p95", "p99", "max"), False),
        ("health_latency", "/health latency", ("p50", "p99", "max"), False),
    ):
        for stat in stats:
            metrics.append(
                Metric(
                    f"{prefix}.{stat}",
                    f"{prefix}_{stat}_s",
                    "time",
                    f"{label} {stat}",
                    "s",
                    chat=chat,
                    samples=(f"{prefix}_samples", MIN_QUANTILE_SAMPLES[stat]),
                )  # fmt: skip
            )
    metrics.append(
        Metric("gap.max", "gap_max_s", "time", "longest gap between frames", "s", chat=True)
    )
    return {metric.name: metric for metric in metrics}


#: Every fixed metric a criterion can name, by name (plus health.<field>.<stat>).
METRICS: dict[str, Metric] = _metrics()


def metric_named(name: str, where: str = "") -> Metric:
    """The Metric of a name (health.<field>.<stat> included); ValueError lists valid ones.

    where: how the message introduces the name ("criterion 'x < 1' names").
    """
    where = f"{where} " if where else ""
    if name.lower().startswith(HEALTH_PREFIX):
        path, _, stat = name[len(HEALTH_PREFIX) :].rpartition(".")
        stat = stat.lower()
        if not path or stat not in HEALTH_STATS:
            example = f"{name}.max"
            raise ValueError(
                f"{where}{name!r}, which does not end in a statistic of a /health field; "
                f"write health.<field>.<stat> with <stat> one of {', '.join(HEALTH_STATS)}, "
                f"e.g. {example} < 200."
            )
        kind = "growth" if stat == "growth_per_hour" else "level"
        unit = "/h" if kind == "growth" else ""
        label = f"/health {path} {stat}"
        return HealthMetric(
            f"{HEALTH_PREFIX}{path}.{stat}", "", kind, label, unit, path=path, stat=stat
        )
    metric = METRICS.get(name.lower())
    if metric is None:
        close = difflib.get_close_matches(name.lower(), list(METRICS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"{where}unknown metric {name.lower()!r}.{hint} Valid metrics are: "
            f"{', '.join(sorted(METRICS))}, and health.<field>.<stat> for any numeric "
            f"/health field (<stat>: {', '.join(HEALTH_STATS)})."
        )
    return metric


# --- checks -----------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckResult:
    """The outcome of one criterion for one target; `passed` is None when skipped or
    inconclusive (measured, but no evidence either way)."""

    name: str
    expression: str
    passed: bool | None
    status: str
    value: float | None
    threshold: float
    unit: str
    message: str
    scope: str = SCOPE_PROFILE

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "expression": self.expression,
            "passed": self.passed,
            "status": self.status,
            "value": self.value,
            "threshold": self.threshold,
            "unit": self.unit,
            "message": self.message,
            "scope": self.scope,
        }


@dataclass(frozen=True)
class Criterion:
    """One parsed criterion: `metric op threshold` (threshold in the metric's unit)."""

    metric: Metric
    op: str
    threshold: float
    expression: str
    scope: str = SCOPE_PROFILE

    @property
    def name(self) -> str:
        return self.metric.name

    def check(self, target_summary: Mapping[str, Any]) -> CheckResult:
        """Check one target's summary; skipped (not failed) when the value is unavailable."""
        metric = self.metric
        value = metric.value(target_summary)
        if value is None:
            reason = metric.unavailable(target_summary).rstrip(".")
            return self._result(None, SKIPPED, None, f"{metric.name} not checked: {reason}.")
        passed = OPERATORS[self.op](value, self.threshold)
        limit = metric.format(self.threshold)
        limit = limit if self.op == "==" else f"{_SYMBOLS[self.op]} {limit}"
        said = metric.describe(value, target_summary)
        doubt = metric.doubt(target_summary, passed) or self._straddles(target_summary)
        if doubt:
            verb = "would meet" if passed else "would break"
            message = f"{said}; {verb} the limit {limit}, but not judged: {doubt.rstrip('.')}."
            return self._result(None, INCONCLUSIVE, value, message)
        verb = "meets" if passed else "breaks"
        message = f"{said}; {verb} the limit {limit}."
        return self._result(passed, PASS if passed else FAIL, value, message)

    def _straddles(self, summary: Mapping[str, Any]) -> str | None:
        """Why a growth rate is no evidence when its 95% CI reaches across the threshold:
        the data allow both a pass and a fail."""
        ci = self.metric.ci(summary)
        if ci is None or self.op in ("==", "!="):
            return None
        check = OPERATORS[self.op]
        if check(ci[0], self.threshold) == check(ci[1], self.threshold):
            return None
        span = f"{self.metric.format(ci[0])}–{self.metric.format(ci[1])}".replace("/h–", "–")
        return f"its 95% CI {span} reaches across the limit; run longer"

    def _result(
        self, passed: bool | None, status: str, value: float | None, message: str
    ) -> CheckResult:
        return CheckResult(
            name=self.metric.name,
            expression=self.expression,
            passed=passed,
            status=status,
            value=None if value is None or math.isinf(value) else value,
            threshold=self.threshold,
            unit=self.metric.unit,
            message=message,
            scope=self.scope,
        )


def parse_criterion(expression: str) -> Criterion:
    """Parse one `METRIC OP VALUE` expression; ValueError says what is wrong and what is valid."""
    if not isinstance(expression, str):
        raise ValueError(
            f"criterion {expression!r} is not a string; write criteria as strings "
            'such as "stalls.count == 0".'
        )
    match = _EXPRESSION.match(expression)
    if match is None:
        raise ValueError(f"criterion {expression!r} is not a comparison; {_FORM_HINT}.")
    op, raw = match["op"], match["value"]
    metric = metric_named(match["metric"], f"criterion {expression!r} names")
    threshold = _threshold(expression, metric, raw.strip("\"'").strip())
    return Criterion(
        metric=metric, op=op, threshold=threshold, expression=f"{metric.name} {op} {raw}"
    )


def parse_criteria(checks: list[str]) -> list[Criterion]:
    """Parse every criterion of a profile (once, before a run starts)."""
    return [parse_criterion(check) for check in checks]


def parse_target_overrides(value: Any) -> dict[str, dict[str, list[str]]]:
    """Validate `[criteria.targets.NAME]` tables: {name: {"checks": [...], "skip": [...]}}.

    ValueError says which target and key is wrong and what to write.
    """
    if not isinstance(value, dict):
        raise ValueError(
            "expected tables [criteria.targets.NAME] with checks = [...] and/or skip = [...], "
            f"got {value!r}"
        )
    overrides = {}
    for target, table in value.items():
        name = str(target).encode("unicode_escape").decode("ascii")  # one line in messages
        if not isinstance(table, dict):
            raise ValueError(f"[criteria.targets.{name}] must be a table, got {table!r}")
        unknown = sorted(set(table) - set(OVERRIDE_KEYS))
        if unknown:
            raise ValueError(
                f"[criteria.targets.{name}] has unknown key {unknown[0]!r}; "
                f"valid keys: {', '.join(OVERRIDE_KEYS)}"
            )
        entry: dict[str, list[str]] = {}
        for key in OVERRIDE_KEYS:
            items = table.get(key, [])
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise ValueError(
                    f"[criteria.targets.{name}] {key} must be a list of strings, got {items!r}"
                )
            entry[key] = list(items)
        parse_criteria(entry["checks"])
        for metric in entry["skip"]:
            metric_named(metric, f"[criteria.targets.{name}] skip names")
        overrides[str(target)] = entry
    return overrides


def criteria_by_target(
    general: list[Criterion], overrides: Mapping[str, Mapping[str, list[str]]], names: Iterable[str]
) -> dict[str, list[Criterion]]:
    """Each target's criteria: the general ones, less those its override replaces or skips,
    then its own (scope "target")."""
    result = {}
    for name in names:
        override = overrides.get(name) or {}
        own = [replace(c, scope=SCOPE_TARGET) for c in parse_criteria(override.get("checks", []))]
        dropped = {c.name for c in own} | {metric_named(m).name for m in override.get("skip", [])}
        result[name] = [c for c in general if c.name not in dropped] + own
    return result


def _threshold(expression: str, metric: Metric, raw: str) -> float:
    if metric.kind == "time":
        try:
            return parse_duration(raw)
        except ValueError:
            raise ValueError(
                f"criterion {expression!r} has threshold {raw!r}, which is not a duration; "
                f"{metric.name} is a time, so write {DURATION_HINT}."
            ) from None
    if metric.kind == "hours":
        try:
            return float(raw) if _is_number(raw) else parse_duration(raw) / 3600.0
        except ValueError:
            raise ValueError(
                f"criterion {expression!r} has threshold {raw!r}; {metric.name} is in hours, "
                'so write a number of hours (168) or a duration ("7d").'
            ) from None
    scale = 1.0
    text = raw
    if text.endswith("%") and metric.kind in ("rate", "percent"):
        text = text[:-1].strip()
        scale = 0.01 if metric.kind == "rate" else 1.0
    try:
        value = float(text) * scale
    except ValueError:
        value = float("nan")
    if not math.isfinite(value):
        accepted = {
            "rate": "a fraction of turns (0.001) or a percentage (0.1%)",
            "percent": "a percentage (5 or 5%)",
        }.get(metric.kind, f"a number ({metric.unit})" if metric.unit else "a number")
        raise ValueError(
            f"criterion {expression!r} has threshold {raw!r}, which {metric.name} cannot "
            f"take; write {accepted}."
        )
    return value


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False
