"""Pass criteria: `METRIC OP VALUE` expressions, parsed once, checked per target.

Examples: ``threads.growth_per_hour < 100``, ``stalls.count == 0``, ``ttft.p95 < 2s``,
``stalls.rate <= 0.1%``, ``idle_cpu.percent < 5``, ``threads.hours_to_limit > 168``,
``health.diagnostics.thread_count.max < 200``. Time metrics take durations ("2s",
"250ms", a quoted "2s", or a bare number of seconds); rates (count / turns) take a
fraction or a percentage; hours-to-limit take hours or a duration ("7d"). A check reads
one target's summary (soak.model.TargetSummary) and says, with numbers, what it found.
Each kind of metric is a class (growth, per unit of work, hours to limit, level, count,
rate, time, percent, points, /health field); METRICS is derived from the summary model.

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
from typing import Any, ClassVar

from soak.formatting import (
    PER_1K,
    counted,
    format_growth,
    format_hours,
    format_number,
    format_rate,
    format_seconds,
    growth_sentence,
    is_pair,
    plural,
    production_clause,
)
from soak.model import (
    OUTCOME_COUNTS,
    SERIES_NOUNS,
    SERIES_UNITS,
    CheckResult,
    HealthField,
    Section,
    SeriesSummary,
    TargetSummary,
)
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


# --- metrics ---------------------------------------------------------------------------
def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


@dataclass(frozen=True)
class Metric:
    """A checkable number of a target's summary: one subclass per kind of number.

    section: the dotted attribute path of the summary section it reads ("chats",
    "threads", "chats.ttft"); field: the attribute of that section. label: what the
    number is, for people; unit: the unit of values and thresholds. chat: measured by
    soak's load, so a saturated load generator can distort it.
    """

    name: str
    section: str
    field: str
    label: str
    unit: str
    chat: bool = False

    def part(self, summary: TargetSummary) -> Any:
        """The summary section the metric reads."""
        part: Any = summary
        for attribute in self.section.split(".") if self.section else ():
            part = getattr(part, attribute)
        return part

    def raw(self, summary: TargetSummary) -> Any:
        """The summary value behind the metric."""
        return getattr(self.part(summary), self.field)

    def value(self, summary: TargetSummary) -> float | None:
        """The metric's value in `unit`, or None when the summary does not have it."""
        return _num(self.raw(summary))

    #: How a threshold ending in % scales (None: % is not accepted), and what to write.
    percent_scale: ClassVar[float | None] = None
    accepted: ClassVar[str] = ""

    def threshold(self, expression: str, raw: str) -> float:
        """The threshold `raw` of `expression` in `unit`; ValueError says what to write."""
        scale, text = 1.0, raw
        if text.endswith("%") and self.percent_scale is not None:
            text, scale = text[:-1].strip(), self.percent_scale
        try:
            value = float(text) * scale
        except ValueError:
            value = float("nan")
        if not math.isfinite(value):
            accepted = self.accepted or (f"a number ({self.unit})" if self.unit else "a number")
            raise ValueError(
                f"criterion {expression!r} has threshold {raw!r}, which {self.name} cannot "
                f"take; write {accepted}."
            )
        return value

    def format(self, value: float) -> str:
        """A value or threshold of this metric for people."""
        return format_number(value)

    def format_change(self, change: float) -> str:
        """A difference between two values of this metric, for people."""
        return self.format(change)

    def describe(self, value: float, summary: TargetSummary) -> str:
        """What the value says, with the context a person needs to act on it."""
        text = self._describe(value, summary)
        saturated = summary.soak_saturated_percent
        if self.chat and saturated:
            text += (
                f" (soak itself was saturated for {format_number(saturated)}% of the run, "
                "which can inflate this: see soak's own health)"
            )
        return text

    def _describe(self, value: float, summary: TargetSummary) -> str:
        return f"{self.label} {self.format(value)}"

    def ci(self, summary: TargetSummary) -> tuple[float, float] | None:
        """The 95% confidence interval of the value, for growth rates that have one."""
        return None

    def doubt(self, summary: TargetSummary, passed: bool) -> str | None:
        """Why a measured value is no evidence for a verdict (None: it is)."""
        return None

    def unavailable(self, summary: TargetSummary) -> str:
        """Why the value is missing, and what to change."""
        part = self.part(summary)
        said = part.why_missing(self.field) if isinstance(part, Section) else None
        return said or "this run recorded no data for it"


@dataclass(frozen=True)
class SampledMetric(Metric):
    """A statistic that needs `needed` samples (the section's `samples_field`) to say anything."""

    samples_field: str = "samples"
    needed: int = 1

    def samples(self, summary: TargetSummary) -> int:
        return int(_num(getattr(self.part(summary), self.samples_field, 0)) or 0)

    def doubt(self, summary: TargetSummary, passed: bool) -> str | None:
        count = self.samples(summary)
        if self.needed and count < self.needed:
            return (
                f"only {plural(count, 'sample')} behind it ({self.needed:,} needed for "
                f"{self.name}); run longer"
            )
        return None


@dataclass(frozen=True)
class LevelMetric(Metric):
    """A level of a process series: start (after the warm-up), end, max."""

    quantity: str = ""

    def format(self, value: float) -> str:
        return f"{format_number(value)}{self.quantity}"


@dataclass(frozen=True)
class SeriesMetric(Metric):
    """A trend number of a process series (the section is the series)."""

    def series(self, summary: TargetSummary) -> SeriesSummary:
        return self.part(summary)

    def doubt(self, summary: TargetSummary, passed: bool) -> str | None:
        """Both ways for a trend fitted over too little of the load; for a trend that
        cannot tell a plateau from a leak only when it would fail on weak grounds."""
        series = self.series(summary)
        if series.doubt:
            return series.doubt
        if series.trend == "undecided" and not passed:
            return (
                f"{series.noun} rose, but the end of the load is too short or too noisy to "
                "tell a level that settles (a pool filling up, an allocator keeping its "
                "high-water mark) from one that keeps growing (a leak); run longer"
            )
        return None


@dataclass(frozen=True)
class GrowthMetric(SeriesMetric):
    """Growth per hour of the verdict fit."""

    def format(self, value: float) -> str:
        return format_growth(value, self.series_quantity)

    @property
    def series_quantity(self) -> str:
        return " MB" if self.unit.startswith("MB") else ""

    def _describe(self, value: float, summary: TargetSummary) -> str:
        series = self.series(summary)
        return growth_sentence(series, summary.restarts, summary.replies_per_day, hourly=True)

    def ci(self, summary: TargetSummary) -> tuple[float, float] | None:
        ci = self.series(summary).growth_ci_per_hour
        return (float(ci[0]), float(ci[1])) if is_pair(ci) else None


@dataclass(frozen=True)
class PerWorkMetric(GrowthMetric):
    """Growth per 1,000 ok replies or per new connection (`ci_field` when it has a CI)."""

    ci_field: str | None = None

    def format(self, value: float) -> str:
        return f"{format_number(value)}{self.series_quantity} {self.unit.split('/', 1)[1]}"

    def _describe(self, value: float, summary: TargetSummary) -> str:
        series = self.series(summary)
        text = f"{series.noun} {series.verb} {self.format(value)}"
        ci = self.ci(summary)
        if ci:
            text += f" (95% CI {format_number(ci[0])}–{format_number(ci[1])})"
        if self.ci_field:
            text += production_clause(series, summary.replies_per_day)
        return text

    def ci(self, summary: TargetSummary) -> tuple[float, float] | None:
        ci = getattr(self.series(summary), self.ci_field) if self.ci_field else None
        return (float(ci[0]), float(ci[1])) if is_pair(ci) else None


@dataclass(frozen=True)
class HoursMetric(SeriesMetric):
    """Hours until the growth reaches the series' limit; infinite when it is not growing."""

    def threshold(self, expression: str, raw: str) -> float:
        try:
            return float(raw) if _is_number(raw) else parse_duration(raw) / 3600.0
        except ValueError:
            raise ValueError(
                f"criterion {expression!r} has threshold {raw!r}; {self.name} is in hours, "
                'so write a number of hours (168) or a duration ("7d").'
            ) from None

    def value(self, summary: TargetSummary) -> float | None:
        series = self.series(summary)
        if series.hours_to_limit is not None:
            return float(series.hours_to_limit)
        growth = series.growth_per_hour
        return math.inf if growth is not None and growth <= 0 else None

    def format(self, value: float) -> str:
        return "never" if math.isinf(value) else format_hours(value)

    def _describe(self, value: float, summary: TargetSummary) -> str:
        series = self.series(summary)
        q = series.quantity
        limit = f"{format_number(series.limit or 0)}{q}"
        source = f" ({series.limit_source})" if series.limit_source else ""
        if math.isinf(value):
            rate = format_rate(series.growth_per_hour or 0.0, q, hourly=True)
            return f"{series.noun} are not growing ({rate}), so they never reach {limit}{source}"
        rate = format_rate(series.growth_per_hour or 0.0, q, series.growth_ci_per_hour, True)
        return f"{series.noun} reach {limit}{source} in ~{format_hours(value)} at {rate}"


@dataclass(frozen=True)
class CountMetric(Metric):
    """A count; `plain` ones are said on their own, the others as a share of the turns."""

    plain: bool = False

    def _describe(self, value: float, summary: TargetSummary) -> str:
        count, turns = int(_num(self.raw(summary)) or 0), summary.chats.count("turns")
        if self.plain:
            return counted(count, self.label)
        share = f" ({format_number(100 * count / turns)}%)" if turns else ""
        return f"{counted(count, self.label)} in {plural(turns, 'turn')}{share}"

    def doubt(self, summary: TargetSummary, passed: bool) -> str | None:
        if not self.chat:
            return None
        turns = summary.chats.count("turns")
        if not passed and self.field in _TIMEOUT_FIELDS:
            saturated = _saturated_timeouts(summary, turns, self.field)
            if saturated:
                return saturated
        if not self.plain and passed and turns < MIN_TURNS:
            return _weak_turns(turns)
        return None


@dataclass(frozen=True)
class RateMetric(CountMetric):
    """A chat outcome count as a fraction of the turns ended."""

    percent_scale: ClassVar[float | None] = 0.01
    accepted: ClassVar[str] = "a fraction of turns (0.001) or a percentage (0.1%)"

    def value(self, summary: TargetSummary) -> float | None:
        return summary.chats.share(self.field)

    def format(self, value: float) -> str:
        return f"{format_number(value * 100)}%"

    def format_change(self, change: float) -> str:
        return f"{format_number(change * 100)} pp"

    def doubt(self, summary: TargetSummary, passed: bool) -> str | None:
        turns = summary.chats.count("turns")
        said = super().doubt(summary, passed)
        return said or (_weak_turns(turns) if turns < MIN_TURNS else None)

    def unavailable(self, summary: TargetSummary) -> str:
        if self.raw(summary) is None:
            return super().unavailable(summary)
        return "no turns ended for this target, so there is no rate; check that its load ran"


@dataclass(frozen=True)
class TimeMetric(SampledMetric):
    """A latency statistic (s)."""

    def threshold(self, expression: str, raw: str) -> float:
        try:
            return parse_duration(raw)
        except ValueError:
            raise ValueError(
                f"criterion {expression!r} has threshold {raw!r}, which is not a duration; "
                f"{self.name} is a time, so write {DURATION_HINT}."
            ) from None

    def format(self, value: float) -> str:
        return format_seconds(value)


@dataclass(frozen=True)
class PercentMetric(SampledMetric):
    """CPU in percent of one core (a median of `needed` samples or more, when needed > 1)."""

    percent_scale: ClassVar[float | None] = 1.0
    accepted: ClassVar[str] = "a percentage (5 or 5%)"

    def format(self, value: float) -> str:
        return f"{format_number(value)}%"

    def format_change(self, change: float) -> str:
        return f"{format_number(change)} pp"

    def _describe(self, value: float, summary: TargetSummary) -> str:
        basis = ""
        if self.needed > 1:
            basis = f" (median of {plural(self.samples(summary), 'sample')})"
        return f"{self.label} {self.format(value)} of one core{basis}"


@dataclass(frozen=True)
class RateOfTokensMetric(Metric):
    """Output tokens per second of a reply (streaming speed: 1 / time per output token)."""

    def format(self, value: float) -> str:
        return f"{format_number(value)} tokens/s"

    def doubt(self, summary: TargetSummary, passed: bool) -> str | None:
        samples = summary.chats.tpot.samples
        if samples < MIN_QUANTILE_SAMPLES["p50"]:
            return (
                f"only {plural(samples, 'reply', 'replies')} of 2+ token frames behind it "
                f"({MIN_QUANTILE_SAMPLES['p50']} needed); run longer"
            )
        return None


@dataclass(frozen=True)
class PointsMetric(Metric):
    """Idle CPU growth in percentage points of one core per 1,000 replies."""

    def format(self, value: float) -> str:
        return f"{format_number(value)} points {PER_1K}"

    def _describe(self, value: float, summary: TargetSummary) -> str:
        early, late = summary.cpu.idle_early_percent, summary.cpu.idle_late_percent
        span = (
            f" ({format_number(early)}% → {format_number(late)}% of one core from the "
            "first to the last idle period)"
            if early is not None and late is not None
            else ""
        )
        return f"{self.label} {format_number(value)} points {PER_1K}{span}"


#: Counts whose failure a saturated load generator can cause (its timers fire late).
_TIMEOUT_FIELDS = ("stalls", "first_token_timeouts", "replies")


def _weak_turns(turns: int) -> str:
    return (
        f"only {plural(turns, 'turn')} ended ({MIN_TURNS} needed for an outcome rate); run longer "
        "or with more users"
    )


def _saturated_timeouts(summary: TargetSummary, turns: int, field: str) -> str | None:
    """Why failing timeouts (stalls, first-token timeouts, or an ok rate they pull down) are
    no evidence: most of them fell while soak's own load process was saturated, when its
    timers may have fired late."""
    drift, chats = summary.drift, summary.chats
    stalls, first = (
        drift.stalls_while_soak_saturated,
        drift.first_token_timeouts_while_soak_saturated,
    )
    during, failed, noun = {
        "stalls": (stalls, chats.count("stalls"), "stalls"),
        "first_token_timeouts": (
            first,
            chats.count("first_token_timeouts"),
            "first-token timeouts",
        ),
        "replies": (stalls + first, turns - chats.count("replies"), "failed turns"),
    }[field]
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

    def entry(self, summary: TargetSummary) -> HealthField | None:
        return summary.health.fields.get(self.path)

    def raw(self, summary: TargetSummary) -> Any:
        entry = self.entry(summary)
        return getattr(entry, self.stat) if entry is not None else None

    def format(self, value: float) -> str:
        return format_growth(value) if self.stat == "growth_per_hour" else format_number(value)

    def ci(self, summary: TargetSummary) -> tuple[float, float] | None:
        entry = self.entry(summary)
        ci = entry.growth_ci_per_hour if entry else None
        return (
            (float(ci[0]), float(ci[1])) if self.stat == "growth_per_hour" and is_pair(ci) else None
        )

    def doubt(self, summary: TargetSummary, passed: bool) -> str | None:
        entry = self.entry(summary) or HealthField()
        if entry.samples < MIN_LEVEL_SAMPLES:
            return (
                f"only {entry.samples:,} /health samples carry {self.path} ({MIN_LEVEL_SAMPLES} "
                "needed); run longer or poll /health more often (collector.health_interval)"
            )
        if self.stat == "growth_per_hour" and entry.trend == "undecided" and not passed:
            return (
                f"/health {self.path} rose, but the last third of the run cannot tell a level "
                "that settles from one that keeps growing; run longer"
            )
        return None

    def _describe(self, value: float, summary: TargetSummary) -> str:
        if self.stat == "growth_per_hour":
            entry = self.entry(summary) or HealthField()
            rate = format_rate(value, "", entry.growth_ci_per_hour, hourly=True)
            said = f"/health {self.path} grows {rate}"
            return f"{said} ({entry.trend})" if entry.trend and entry.trend != "growing" else said
        return f"/health {self.path} {self.stat} {self.format(value)}"

    def unavailable(self, summary: TargetSummary) -> str:
        fields = list(summary.health.fields)
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


def _series_metrics(name: str) -> list[Metric]:
    """The metrics of one process series, named as criteria always named them
    (`rss.growth_mb_per_hour`, `rss.end_mb`: MB series carry `_mb`)."""
    noun, unit = SERIES_NOUNS[name], SERIES_UNITS[name] or name
    mb = "_mb" if SERIES_UNITS[name] else ""
    quantity = " MB" if mb else ""
    metrics: list[Metric] = [
        LevelMetric(f"{name}.{stat}{mb}", name, stat, f"{noun} {word}", unit, quantity=quantity)
        for stat, word in (("max", "peaked at"), ("end", "ended at"), ("start", "started at"))
    ]
    return [
        *metrics,
        GrowthMetric(
            f"{name}.growth{mb}_per_hour", name, "growth_per_hour", f"{noun} growth", f"{unit}/h"
        ),
        PerWorkMetric(
            f"{name}.growth{mb}_per_1k_replies",
            name,
            "growth_per_1k_replies",
            f"{noun} growth",
            f"{unit}/{PER_1K}",
            ci_field="growth_ci_per_1k_replies",
        ),
        PerWorkMetric(
            f"{name}.growth{mb}_per_connection",
            name,
            "growth_per_connection",
            f"{noun} growth",
            f"{unit}/per new connection",
        ),
        HoursMetric(f"{name}.hours_to_limit", name, "hours_to_limit", f"{noun} time to limit", "h"),
    ]


def _metrics() -> dict[str, Metric]:
    """Every fixed metric, derived from the summary model's sections."""
    metrics: list[Metric] = [m for name in SERIES_UNITS for m in _series_metrics(name)]
    metrics += [
        CountMetric("replies.count", "chats", "replies", "replies", "replies", True, plain=True),
        RateMetric("ok.rate", "chats", "replies", "ok replies", "fraction of turns", True),
        CountMetric(
            "stuck_chats.count",
            "chats",
            "chats_never_recovered",
            "chats stuck to the end",
            "chats",
            True,
            plain=True,
        ),
        CountMetric("turns.count", "chats", "turns", "turns ended", "turns", True, plain=True),
        CountMetric(
            "restarts.count", "", "restarts", "target restarts (new pid)", "restarts", plain=True
        ),
        PercentMetric(
            "idle_cpu.percent",
            "cpu",
            "idle_percent",
            "idle CPU",
            "%",
            False,
            "idle_samples",
            MIN_LEVEL_SAMPLES,
        ),
        PercentMetric(
            "busy_cpu.percent",
            "cpu",
            "busy_percent",
            "busy CPU",
            "%",
            False,
            "busy_samples",
            MIN_LEVEL_SAMPLES,
        ),
        PercentMetric(
            "idle_cpu.early_percent",
            "cpu",
            "idle_early_percent",
            "idle CPU in the first idle period",
            "%",
            samples_field="idle_samples",
            needed=0,
        ),
        PercentMetric(
            "idle_cpu.late_percent",
            "cpu",
            "idle_late_percent",
            "idle CPU in the last idle period",
            "%",
            samples_field="idle_samples",
            needed=0,
        ),
        PointsMetric(
            "idle_cpu.growth_per_1k_replies",
            "cpu",
            "idle_growth_per_1k_replies",
            "idle CPU grows",
            f"points/{PER_1K}",
        ),
    ]
    for noun in OUTCOME_COUNTS:
        if noun == "replies":
            continue
        label = noun.replace("_", "-", 1).replace("_", " ")
        metrics.append(CountMetric(f"{noun}.count", "chats", noun, label, noun, True))
        metrics.append(RateMetric(f"{noun}.rate", "chats", noun, label, "fraction of turns", True))
    for section, label, stats, chat in (
        ("chats.ttft", "TTFT", ("p50", "p95", "p99"), True),
        ("chats.reply", "reply time", ("p50", "p95", "p99"), True),
        ("chats.ping", "ping round trip", ("p50", "p95", "p99", "max"), True),
        ("chats.connect", "connect time", ("p50", "p95", "p99"), True),
        ("chats.itl", "inter-token latency", ("p50", "p95", "p99"), True),
        ("chats.tpot", "time per output token", ("p50", "p95", "p99"), True),
        ("loop_lag", "loop lag", ("p50", "p95", "p99", "max"), False),
        ("health.latency", "/health latency", ("p50", "p99", "max"), False),
    ):
        prefix = {"health.latency": "health_latency"}.get(section, section.split(".")[-1])
        for stat in stats:
            metrics.append(
                TimeMetric(
                    f"{prefix}.{stat}",
                    section,
                    stat,
                    f"{label} {stat}",
                    "s",
                    chat,
                    needed=MIN_QUANTILE_SAMPLES[stat],
                )
            )
    metrics.append(
        TimeMetric(
            "gap.max", "chats", "gap_max_s", "longest gap between frames", "s", True, needed=0
        )
    )
    metrics.append(
        RateOfTokensMetric(
            "tokens_per_s.p50", "chats", "tokens_per_s", "output tokens per second of the "
            "median reply", "tokens/s", True,
        )
    )  # fmt: skip
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
        unit = "/h" if stat == "growth_per_hour" else ""
        label = f"/health {path} {stat}"
        return HealthMetric(
            f"{HEALTH_PREFIX}{path}.{stat}", "health", stat, label, unit, path=path, stat=stat
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

    def check(self, target_summary: TargetSummary) -> CheckResult:
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

    def _straddles(self, summary: TargetSummary) -> str | None:
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
    threshold = metric.threshold(expression, raw.strip("\"'").strip())
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


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False
