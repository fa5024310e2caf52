"""Pass criteria: `METRIC OP VALUE` expressions, parsed once, checked per target.

Examples: ``threads.growth_per_hour < 100``, ``stalls.count == 0``, ``ttft.p95 < 2s``,
``stalls.rate <= 0.1%``, ``idle_cpu.percent < 5``. Time metrics take durations
("2s", "250ms", a quoted "2s", or a bare number of seconds); rates (count / turns)
take a fraction or a percentage. A check reads one target's entry of summary.json.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from soak.units import DURATION_HINT, parse_duration

PASS, FAIL, SKIPPED = "pass", "fail", "skipped"

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
    r"^\s*(?P<metric>[A-Za-z_][\w.]*)\s*(?P<op><=|>=|==|!=|<|>)\s*(?P<value>\S.*?)\s*$"
)
_FORM_HINT = 'write METRIC OP VALUE such as "ttft.p95 < 2s" with OP one of < <= > >= == !='


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


def format_hours(hours: float) -> str:
    """A time span in hours for people: "20 h", "3.5 days"."""
    if hours >= 48:
        return f"{format_number(round(hours / 24, 1))} days"
    return f"{format_number(round(hours, 1))} h"


@dataclass(frozen=True)
class Metric:
    """A checkable number of a target summary.

    kind: growth (per hour), level, count, rate (count / turns), time (s), percent.
    field: the summary key the value comes from (for a rate, the count's key).
    quantity: the unit word appended to numbers in messages (" MB").
    """

    name: str
    field: str
    kind: str
    label: str
    unit: str
    quantity: str = ""

    def value(self, summary: Mapping[str, Any]) -> float | None:
        """The metric's value in `unit`, or None when the summary does not have it."""
        raw = summary.get(self.field)
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            return None
        if self.kind == "rate":
            turns = summary.get("turns") or 0
            return raw / turns if turns > 0 else None
        return float(raw)

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
        return f"{format_number(value)}{self.quantity}"

    def describe(self, value: float, summary: Mapping[str, Any]) -> str:
        """What the value says, with the context a person needs to act on it."""
        if self.kind == "growth":
            return self._describe_growth(value, summary)
        if self.kind in ("count", "rate"):
            count = int(summary.get(self.field) or 0)
            turns = int(summary.get("turns") or 0)
            if self.field in ("turns", "restarts"):
                return f"{count:,} {self.label}"
            share = f" ({format_number(100 * count / turns)}%)" if turns else ""
            return f"{count:,} {self.label} in {turns:,} turns{share}"
        if self.kind == "percent":
            samples = summary.get(self.field.replace("_percent", "_samples"))
            basis = f" (median of {samples:,} samples)" if isinstance(samples, int) else ""
            return f"{self.label} {self.format(value)} of one core{basis}"
        return f"{self.label} {self.format(value)}"

    def _describe_growth(self, value: float, summary: Mapping[str, Any]) -> str:
        text = f"{self.label} {self.format(value)}"
        if abs(value) >= 60:
            text += f" ({format_number(value / 60)}{self.quantity}/min)"
        ci = summary.get(self.field.replace("_growth_", "_growth_ci_"))
        if isinstance(ci, list | tuple) and len(ci) == 2 and None not in ci:
            text += f" (95% CI {format_number(ci[0])}–{self.format(ci[1])})"
        prefix = self.field.split("_", 1)[0]
        hours, limit = summary.get(f"{prefix}_hours_to_limit"), summary.get(f"{prefix}_limit")
        if isinstance(hours, int | float) and isinstance(limit, int | float):
            text += f" → {format_number(limit)} reached in ~{format_hours(hours)}"
        restarts = summary.get("restarts") or 0
        if restarts:
            text += f", in the longest of {restarts + 1} process segments"
        return text


def _metrics() -> dict[str, Metric]:
    metrics = [
        Metric(
            "threads.growth_per_hour",
            "threads_growth_per_hour",
            "growth",
            "threads grow",
            "threads/h",
        ),
        Metric("threads.max", "threads_max", "level", "threads peaked at", "threads"),
        Metric("threads.end", "threads_end", "level", "threads ended at", "threads"),
        Metric(
            "rss.growth_mb_per_hour", "rss_growth_mb_per_hour", "growth", "RSS grows", "MB/h", " MB"
        ),
        Metric("rss.max_mb", "rss_max_mb", "level", "RSS peaked at", "MB", " MB"),
        Metric("rss.end_mb", "rss_end_mb", "level", "RSS ended at", "MB", " MB"),
        Metric("fds.growth_per_hour", "fds_growth_per_hour", "growth", "open fds grow", "fds/h"),
        Metric("fds.max", "fds_max", "level", "open fds peaked at", "fds"),
        Metric("fds.end", "fds_end", "level", "open fds ended at", "fds"),
        Metric("replies.count", "replies", "count", "replies", "replies"),
        Metric("turns.count", "turns", "count", "turns ended", "turns"),
        Metric("restarts.count", "restarts", "count", "target restarts (new pid)", "restarts"),
        Metric("idle_cpu.percent", "idle_cpu_percent", "percent", "idle CPU", "%"),
        Metric("busy_cpu.percent", "busy_cpu_percent", "percent", "busy CPU", "%"),
    ]
    outcomes = ("stalls", "errors", "disconnects", "violations", "mismatches")
    for noun in (*outcomes, "first_token_timeouts"):
        label = noun.replace("_", "-", 1).replace("_", " ")
        metrics.append(Metric(f"{noun}.count", noun, "count", label, noun))
        metrics.append(Metric(f"{noun}.rate", noun, "rate", label, "fraction of turns"))
    for prefix, label in (("ttft", "TTFT"), ("reply", "reply time"), ("loop_lag", "loop lag")):
        stats = ("p50", "p95", "p99", "max") if prefix == "loop_lag" else ("p50", "p95", "p99")
        for stat in stats:
            metrics.append(
                Metric(f"{prefix}.{stat}", f"{prefix}_{stat}_s", "time", f"{label} {stat}", "s")
            )
    return {metric.name: metric for metric in metrics}


#: Every metric a criterion can name, by name.
METRICS: dict[str, Metric] = _metrics()


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one criterion for one target; `passed` is None when skipped."""

    name: str
    expression: str
    passed: bool | None
    status: str
    value: float | None
    threshold: float
    unit: str
    message: str

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
        }


@dataclass(frozen=True)
class Criterion:
    """One parsed criterion: `metric op threshold` (threshold in the metric's unit)."""

    metric: Metric
    op: str
    threshold: float
    expression: str

    @property
    def name(self) -> str:
        return self.metric.name

    def check(self, target_summary: Mapping[str, Any]) -> CheckResult:
        """Check one target's summary; skipped (not failed) when the value is unavailable."""
        metric = self.metric
        value = metric.value(target_summary)
        if value is None:
            reasons = target_summary.get("unavailable") or {}
            reason = reasons.get(metric.field) or _default_reason(metric)
            return self._result(None, SKIPPED, None, f"{metric.name} not checked: {reason}.")
        passed = OPERATORS[self.op](value, self.threshold)
        limit = metric.format(self.threshold)
        limit = limit if self.op == "==" else f"{_SYMBOLS[self.op]} {limit}"
        verb = "meets" if passed else "breaks"
        said = metric.describe(value, target_summary)
        message = f"{said}; {verb} the limit {limit}."
        return self._result(passed, PASS if passed else FAIL, value, message)

    def _result(
        self, passed: bool | None, status: str, value: float | None, message: str
    ) -> CheckResult:
        return CheckResult(
            name=self.metric.name,
            expression=self.expression,
            passed=passed,
            status=status,
            value=value,
            threshold=self.threshold,
            unit=self.metric.unit,
            message=message,
        )


def _default_reason(metric: Metric) -> str:
    if metric.kind == "rate":
        return "no turns ended for this target, so there is no rate; check that its load ran"
    return "this run recorded no data for it"


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
    name, op, raw = match["metric"].lower(), match["op"], match["value"]
    metric = METRICS.get(name)
    if metric is None:
        raise ValueError(
            f"criterion {expression!r} names unknown metric {name!r}; "
            f"valid metrics are: {', '.join(sorted(METRICS))}."
        )
    threshold = _threshold(expression, metric, raw.strip("\"'").strip())
    canonical = f"{name} {op} {raw}"
    return Criterion(metric=metric, op=op, threshold=threshold, expression=canonical)


def parse_criteria(checks: list[str]) -> list[Criterion]:
    """Parse every criterion of a profile (once, before a run starts)."""
    return [parse_criterion(check) for check in checks]


def _threshold(expression: str, metric: Metric, raw: str) -> float:
    if metric.kind == "time":
        try:
            return parse_duration(raw)
        except ValueError:
            raise ValueError(
                f"criterion {expression!r} has threshold {raw!r}, which is not a duration; "
                f"{metric.name} is a time, so write {DURATION_HINT}."
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
    if value != value or value in (float("inf"), float("-inf")):
        accepted = {
            "rate": "a fraction of turns (0.001) or a percentage (0.1%)",
            "percent": "a percentage (5 or 5%)",
        }.get(metric.kind, f"a number ({metric.unit})")
        raise ValueError(
            f"criterion {expression!r} has threshold {raw!r}, which {metric.name} cannot "
            f"take; write {accepted}."
        )
    return value
