"""Compare two targets (of two runs, or the two targets of one A/B run): metric by metric.

Every row compares one metric of the base with the candidate and gets a verdict:

- `fixed`: the base fails a criterion on this metric, the candidate passes it, and the
  change is significant; without a criterion on the metric, the base had a clear
  problem (turns that stall, a growth whose whole confidence interval is above the
  minimum effect) and the candidate has none.
- `new failure`: the candidate fails a criterion on this metric that the base passed
  (significant or not: a failing criterion is never waved through as noise); without a
  criterion, a clear problem appeared.
- `improved` / `regressed`: a significant change of at least the minimum effect.
- `unchanged`: anything that noise can explain, or smaller than the minimum effect.
- `n/a`: one side has no value, or too little data to tell change from noise (a
  bootstrap needs 5 time blocks a side); the reason says which.

Significance: slopes by non-overlapping 95% confidence intervals (Sen's method, from
summary.json); outcome rates by a two-proportion z-test at ALPHA; latency, loop-lag and
CPU percentiles by non-overlapping block-bootstrap 95% intervals; levels (threads at the
end, restarts) by the minimum effect alone. Every test also needs the minimum effect
(absolute and relative to the base), so a tight interval on a tiny change is no change.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from soak.analyze.chats import BUSY, IDLE
from soak.analyze.load import BODY_PREFIX
from soak.analyze.summary import Analysis, TargetAnalysis
from soak.compare.stats import (
    HistogramBlocks,
    intervals_overlap,
    quantile_ci,
    two_proportion_p,
)
from soak.criteria import FAIL, METRICS, PASS, Metric, TimeMetric
from soak.errors import UsageError
from soak.formatting import format_number
from soak.model import RunSummary, TargetSummary
from soak.units import format_duration

FIXED, IMPROVED, UNCHANGED = "fixed", "improved", "unchanged"
REGRESSED, NEW_FAILURE, NOT_AVAILABLE = "regressed", "new failure", "n/a"
#: Every row verdict, best first.
VERDICTS = (FIXED, IMPROVED, UNCHANGED, REGRESSED, NEW_FAILURE, NOT_AVAILABLE)
BETTER, WORSE, SAME = "better", "worse", "same"
#: Significance level of the two-proportion z-test (strict: a table tests ~20 metrics).
ALPHA = 0.01
#: `--fail-on` levels: the row verdicts that make `soak compare` exit 1.
FAIL_ON: dict[str, tuple[str, ...]] = {
    "never": (),
    "new-failure": (NEW_FAILURE,),
    "regressed": (NEW_FAILURE, REGRESSED),
}
#: Relative differences of run settings that make two runs "not comparable".
DURATION_TOLERANCE = 0.25
_LOAD_KEYS = (
    "think_time",
    "turns_per_connection",
    "reply_timeout",
    "first_token_timeout",
    "idle_after",
)


@dataclass(frozen=True)
class Side:
    """One side of a comparison: a target of an analysed run."""

    analysis: Analysis
    target: str

    @property
    def run_summary(self) -> RunSummary:
        return self.analysis.summary

    @property
    def summary(self) -> TargetSummary:
        """The target's summary."""
        return self.analysis.summary.targets[self.target]

    @property
    def data(self) -> TargetAnalysis:
        return self.analysis.targets[self.target]

    @property
    def name(self) -> str:
        """`<run_id>:<target>`, how the reports name this side."""
        return f"{self.run_summary.run_id}:{self.target}"

    def criteria_status(self, names: tuple[str, ...]) -> tuple[str | None, list[str]]:
        """(fail / pass / None, expressions) of this target's criteria on metrics `names`.

        fail when any fails; pass when at least one passes and none fails; None when the
        profile has none of them or all were skipped.
        """
        checks = [c for c in self.run_summary.checks_of(self.target) if c.name in names]
        statuses = {c.status for c in checks}
        status = FAIL if FAIL in statuses else PASS if PASS in statuses else None
        shown = [c.expression for c in checks if c.status in (FAIL, PASS)]
        return status, shown


BlockSource = Callable[[Side], HistogramBlocks]
#: Blocks per (id of the analysis, target, source): a source serves several rows.
BlockCache = dict[tuple[int, str, BlockSource], HistogramBlocks]


@dataclass(frozen=True)
class MetricSpec:
    """How one metric is compared.

    test: slope (CI overlap), rate (z-test), quantile (bootstrap CI overlap), level
    (minimum effect only) or criterion (criterion flips only). `name` is the criteria
    metric it reads (soak.criteria.METRICS) and names the row; `criteria` are the
    criterion metrics whose pass/fail decide fixed / new failure for it. A change
    counts only when |change| >= min_abs and |change| / |base| >= min_rel.
    """

    name: str
    test: str
    min_abs: float
    min_rel: float
    criteria: tuple[str, ...]
    blocks: BlockSource | None = None
    q: float = 0.5

    @property
    def label(self) -> str:
        return _LABELS.get(self.name, self.name)

    def effect_text(self) -> str:
        absolute = METRICS[self.name].format_change(self.min_abs)
        return f"{absolute} and {format_number(self.min_rel * 100)}%" if self.min_rel else absolute


def _chat_blocks(column: str) -> BlockSource:
    def blocks(side: Side) -> HistogramBlocks:
        return HistogramBlocks.from_histograms(side.data.data.chats[column].tolist())

    return blocks


def _cpu_blocks(state: int) -> BlockSource:
    def blocks(side: Side) -> HistogramBlocks:
        target = side.data
        cpu = target.data.process["cpu_percent"].to_numpy(dtype=float)
        return HistogramBlocks.from_values(cpu[target.cpu_states == state])

    return blocks


def _loop_lag_blocks(side: Side) -> HistogramBlocks:
    """Loop-lag samples (s) after the warm-up, as summary.json's loop_lag_* use."""
    settings = side.analysis.settings
    health = side.data.data.health
    column = BODY_PREFIX + (settings.loop_lag_field or "")
    if settings.loop_lag_field is None or column not in health.columns:
        return HistogramBlocks.from_values(np.array([]))
    after = health.loc[health["elapsed"] >= settings.warmup_s, column]
    return HistogramBlocks.from_values(after.to_numpy(dtype=float) / 1000.0)


def _specs() -> list[MetricSpec]:
    specs = [
        MetricSpec("threads.growth_per_hour", "slope", 5.0, 0.2, ("threads.growth_per_hour",)),
        MetricSpec("threads.end", "level", 10.0, 0.2, ("threads.end", "threads.max")),
        MetricSpec("rss.growth_mb_per_hour", "slope", 10.0, 0.2, ("rss.growth_mb_per_hour",)),
        MetricSpec("rss.end_mb", "level", 20.0, 0.2, ("rss.end_mb", "rss.max_mb")),
        MetricSpec("fds.growth_per_hour", "slope", 5.0, 0.2, ("fds.growth_per_hour",)),
        MetricSpec("fds.end", "level", 10.0, 0.2, ("fds.end", "fds.max")),
    ]
    outcomes = ("stalls", "errors", "disconnects", "violations", "mismatches")
    for noun in (*outcomes, "first_token_timeouts"):
        criteria = (f"{noun}.count", f"{noun}.rate")
        specs.append(MetricSpec(f"{noun}.rate", "rate", 0.001, 0.25, criteria))
    # Tails are noisier than medians (and a shared machine moves them between runs).
    latency_effects = {0.5: (0.010, 0.2), 0.95: (0.020, 0.25), 0.99: (0.050, 0.3)}
    for kind in ("ttft", "reply"):
        blocks = _chat_blocks(f"{kind}_hist")  # one source: its blocks are cached per side
        for q, (min_abs, min_rel) in latency_effects.items():
            name = f"{kind}.p{round(q * 100)}"
            specs.append(MetricSpec(name, "quantile", min_abs, min_rel, (name,), blocks, q))
    lag_criteria = ("loop_lag.p50", "loop_lag.p95", "loop_lag.p99")
    specs += [
        MetricSpec("loop_lag.p99", "quantile", 0.010, 0.25, lag_criteria, _loop_lag_blocks, 0.99),
        MetricSpec("loop_lag.max", "level", 0.100, 0.5, ("loop_lag.max",)),
        MetricSpec(
            "idle_cpu.percent", "quantile", 2.0, 0.25, ("idle_cpu.percent",), _cpu_blocks(IDLE)
        ),
        MetricSpec(
            "busy_cpu.percent", "quantile", 5.0, 0.2, ("busy_cpu.percent",), _cpu_blocks(BUSY)
        ),
        MetricSpec("restarts.count", "level", 1.0, 0.0, ("restarts.count",)),
    ]
    return specs


_LABELS = {
    "threads.growth_per_hour": "thread growth",
    "threads.end": "threads at end",
    "rss.growth_mb_per_hour": "RSS growth",
    "rss.end_mb": "RSS at end",
    "fds.growth_per_hour": "open fd growth",
    "fds.end": "open fds at end",
    "stalls.rate": "stall rate",
    "errors.rate": "error rate",
    "disconnects.rate": "disconnect rate",
    "violations.rate": "violation rate",
    "mismatches.rate": "mismatch rate",
    "first_token_timeouts.rate": "first-token timeout rate",
    "loop_lag.p99": "loop lag p99",
    "loop_lag.max": "loop lag max",
    "idle_cpu.percent": "idle CPU",
    "busy_cpu.percent": "busy CPU",
    "restarts.count": "restarts",
    **{
        f"{kind}.p{p}": f"{label} p{p}"
        for kind, label in (("ttft", "TTFT"), ("reply", "reply time"))
        for p in (50, 95, 99)
    },
}

#: The compared metrics, in table order.
SPECS: list[MetricSpec] = _specs()


@dataclass
class Row:
    """One metric compared: values in the metric's unit (rates as fractions of turns)."""

    name: str
    label: str
    unit: str
    test: str
    base: float | None
    candidate: float | None
    base_ci: tuple[float, float] | None = None
    candidate_ci: tuple[float, float] | None = None
    p_value: float | None = None
    significant: bool = False
    direction: str = SAME
    base_criteria: str | None = None
    candidate_criteria: str | None = None
    criteria: list[str] = field(default_factory=list)
    verdict: str = UNCHANGED
    reason: str = ""

    @property
    def change(self) -> float | None:
        """candidate - base; None when a side is missing or infinite (hours to a limit
        of a series that does not grow)."""
        if self.base is None or self.candidate is None:
            return None
        change = self.candidate - self.base
        return change if math.isfinite(change) else None

    @property
    def change_relative(self) -> float | None:
        change = self.change
        if change is None or not self.base:
            return None
        return change / abs(self.base)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "unit": self.unit,
            "test": self.test,
            "base": self.base,
            "candidate": self.candidate,
            "base_ci": list(self.base_ci) if self.base_ci else None,
            "candidate_ci": list(self.candidate_ci) if self.candidate_ci else None,
            "change": self.change,
            "change_relative": self.change_relative,
            "p_value": self.p_value,
            "significant": self.significant,
            "direction": self.direction,
            "base_criteria": self.base_criteria,
            "candidate_criteria": self.candidate_criteria,
            "criteria": self.criteria,
            "verdict": self.verdict,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Note:
    """A reason the two sides may not be comparable: kind (profile, load, duration, host,
    criteria, status) and a sentence."""

    kind: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "message": self.message}


@dataclass
class Comparison:
    """Base vs candidate: one row per metric with data, and comparability warnings.

    `paired` is True for two targets of one run: the same load at the same time on the
    same host, the strongest comparison soak can make.
    """

    base: Side
    candidate: Side
    rows: list[Row]
    warnings: list[Note]

    @property
    def paired(self) -> bool:
        return self.base.analysis is self.candidate.analysis

    @property
    def counts(self) -> dict[str, int]:
        """Rows per verdict (every verdict present, 0 when none)."""
        return {verdict: sum(row.verdict == verdict for row in self.rows) for verdict in VERDICTS}

    @property
    def verdict(self) -> str:
        """improved, regressed, mixed (both) or unchanged, over all rows."""
        counts = self.counts
        better = counts[FIXED] + counts[IMPROVED]
        worse = counts[REGRESSED] + counts[NEW_FAILURE]
        if better and worse:
            return "mixed"
        return IMPROVED if better else REGRESSED if worse else UNCHANGED

    def failed(self, fail_on: str) -> list[Row]:
        """The rows whose verdict trips the `--fail-on` level."""
        return [row for row in self.rows if row.verdict in FAIL_ON[fail_on]]


def compare_sides(base: Side, candidate: Side, specs: list[MetricSpec] | None = None) -> Comparison:
    """Compare every metric of `candidate` against `base`; UsageError for a side with itself."""
    if base.analysis is candidate.analysis and base.target == candidate.target:
        raise UsageError(
            f"base and candidate are both {base.name}; name two runs, or two targets "
            "of one run (RUN:unpatched RUN:patched)."
        )
    rows = []
    cache: BlockCache = {}
    specs = SPECS if specs is None else specs
    for spec in specs:
        row = compare_metric(spec, base, candidate, cache)
        if row is not None:
            rows.append(row)
    covered = {name for spec in specs for name in spec.criteria}
    rows += _criterion_rows(base, candidate, covered)
    return Comparison(base, candidate, rows, comparability(base, candidate))


def compare_metric(
    spec: MetricSpec,
    base: Side,
    candidate: Side,
    cache: BlockCache | None = None,
) -> Row | None:
    """One row; None when neither side has a value for the metric."""
    metric = METRICS[spec.name]
    values = metric.value(base.summary), metric.value(candidate.summary)
    if values == (None, None):
        return None
    row = Row(spec.name, spec.label, metric.unit, spec.test, *values)
    row.base_criteria, base_shown = base.criteria_status(spec.criteria)
    row.candidate_criteria, cand_shown = candidate.criteria_status(spec.criteria)
    row.criteria = sorted(set(base_shown) | set(cand_shown))
    if row.base is None or row.candidate is None:
        row.verdict = NOT_AVAILABLE
        side, summary = (
            ("base", base.summary) if row.base is None else ("candidate", candidate.summary)
        )
        why = metric.unavailable(summary).rstrip(".")
        row.reason = f"the {side} has no {spec.label}: {why}."
        return row
    different_length = _different_length(base, candidate)
    if spec.test == "level" and spec.name in _END_LEVELS and different_length:
        row.verdict = NOT_AVAILABLE
        row.reason = (
            f"not compared: {different_length}, and a level at the end of a run grows with "
            "its length (compare the growth rates instead)."
        )
        return row
    tested, evidence = _test(spec, row, base, candidate, cache if cache is not None else {})
    big_enough = _big_enough(spec, row)
    row.significant = bool(tested) and big_enough
    if row.significant:
        row.direction = WORSE if (row.change or 0) > 0 else BETTER
    if not big_enough and tested:
        evidence += f"; smaller than the minimum effect ({spec.effect_text()})"
    row.verdict, headline = _verdict(spec, row, testable=tested is not None)
    row.reason = f"{headline}{evidence}." if evidence else f"{headline}."
    return row


#: Levels read at the end of a run: runs of different length reach different levels.
_END_LEVELS = ("threads.end", "rss.end_mb", "fds.end")


def _different_length(base: Side, candidate: Side) -> str | None:
    """ "the runs last 10m vs 1h" when two runs differ in length by more than
    DURATION_TOLERANCE (None for two targets of one run, or runs of about one length)."""
    if base.analysis is candidate.analysis:
        return None
    a, b = base.run_summary.duration_s, candidate.run_summary.duration_s
    longer = max(a, b)
    if longer <= 0 or (longer - min(a, b)) / longer <= DURATION_TOLERANCE:
        return None
    return f"the runs last {format_duration(a)} vs {format_duration(b)}"


def _big_enough(spec: MetricSpec, row: Row) -> bool:
    change = abs(row.change or 0.0)
    relative = row.change_relative
    return change >= spec.min_abs and (relative is None or abs(relative) >= spec.min_rel)


def _test(
    spec: MetricSpec,
    row: Row,
    base: Side,
    candidate: Side,
    cache: BlockCache,
) -> tuple[bool | None, str]:
    """(the statistical test says the two differ, a clause that says why).

    None instead of a bool when the test cannot be made (too little data).
    """
    metric = METRICS[spec.name]
    if spec.test == "rate":
        hits = [side.summary.chats.count(metric.field) for side in (base, candidate)]
        turns = [side.summary.chats.count("turns") for side in (base, candidate)]
        row.p_value = two_proportion_p(hits[0], turns[0], hits[1], turns[1])
        counts = f"{hits[0]:,}/{turns[0]:,} vs {hits[1]:,}/{turns[1]:,} turns"
        if row.p_value is None:
            return None, f"; {counts}: a side has no turns"
        return (
            row.p_value < ALPHA,
            f"; {counts}, p {_p_text(row.p_value)} (two-proportion z-test)",
        )
    if spec.test == "slope":
        row.base_ci, row.candidate_ci = (metric.ci(side.summary) for side in (base, candidate))
        return _interval_test(metric, row, "95% CIs")
    if spec.test == "quantile" and spec.blocks is not None:
        cis = []
        for side, value in ((base, row.base), (candidate, row.candidate)):
            key = (id(side.analysis), side.target, spec.blocks)
            if key not in cache:
                cache[key] = spec.blocks(side)
            ci = quantile_ci(cache[key], spec.q)
            if ci is not None and value is not None:  # the CI holds its point estimate
                ci = (min(ci[0], value), max(ci[1], value))
            cis.append(ci)
        row.base_ci, row.candidate_ci = cis
        return _interval_test(metric, row, "bootstrap 95% CIs")
    if spec.test == "level":
        return True, ""
    return False, ""


def _interval_test(metric: Metric, row: Row, what: str) -> tuple[bool | None, str]:
    if row.base_ci is None or row.candidate_ci is None:
        return None, "; too little data for a confidence interval on each side"
    overlap = intervals_overlap(row.base_ci, row.candidate_ci)
    spans = " vs ".join(span_text(metric, ci) for ci in (row.base_ci, row.candidate_ci))
    return not overlap, f"; {what} {spans} {'overlap' if overlap else 'do not overlap'}"


def span_text(metric: Metric, span: tuple[float, float]) -> str:
    """`1,800–2,700/h`, `19 ms–1.53 s`: an interval with its unit once (times: both ends)."""
    low = metric.format(span[0]) if isinstance(metric, TimeMetric) else format_number(span[0])
    return f"{low}–{metric.format(span[1])}"


def _verdict(spec: MetricSpec, row: Row, testable: bool) -> tuple[str, str]:
    """(verdict, the sentence's start) from criteria flips, clear problems and direction."""
    was, now = row.base_criteria, row.candidate_criteria
    if was == PASS and now == FAIL:
        noise = "" if row.significant else " (the change itself is within noise)"
        return NEW_FAILURE, f"candidate fails {_names(row)} that base passed{noise}"
    if not testable:
        return NOT_AVAILABLE, "cannot tell change from noise"
    if was == FAIL and now == PASS:
        if row.direction == BETTER or spec.test == "criterion":
            return FIXED, f"base fails {_names(row)}, candidate passes"
        return UNCHANGED, f"candidate passes {_names(row)} that base failed, but within noise"
    if was is None and now is None and row.direction != SAME:
        problem = _clear_problem(spec, row)
        if problem is not None and row.direction == BETTER:
            return FIXED, f"base {problem}, candidate does not"
        if problem is not None:
            return NEW_FAILURE, f"candidate {problem}, base does not"
    still = f"; both fail {_names(row)}" if was == FAIL and now == FAIL else ""
    if row.direction == BETTER:
        return IMPROVED, f"lower by {_change_text(row)}{still}"
    if row.direction == WORSE:
        return REGRESSED, f"higher by {_change_text(row)}{still}"
    return UNCHANGED, f"no significant change{still}"


def _clear_problem(spec: MetricSpec, row: Row) -> str | None:
    """What the worse side clearly has that the better one does not (for rows without
    criteria): turns with this outcome against none, or a growth whose CI is wholly above
    the minimum effect against one whose CI is not."""
    worse_first = row.direction == BETTER  # the base is the worse side
    worse, better = (row.base, row.candidate) if worse_first else (row.candidate, row.base)
    if spec.test == "rate" and better == 0 and (worse or 0) > 0:
        return f"has {spec.label.replace(' rate', 's')}"
    cis = (row.base_ci, row.candidate_ci) if worse_first else (row.candidate_ci, row.base_ci)
    if spec.test == "slope" and cis[0] and cis[1] and cis[0][0] >= spec.min_abs > cis[1][0]:
        return f"has a clear {spec.label} ({METRICS[spec.name].format(worse or 0)})"
    return None


def _criterion_rows(base: Side, candidate: Side, covered: set[str]) -> list[Row]:
    """Rows for criteria on metrics no spec covers (replies.count, ...): flips only."""
    names = [
        c.name
        for side in (base, candidate)
        for c in side.run_summary.checks_of(side.target)
        if c.name not in covered
    ]
    spec_rows = []
    for name in dict.fromkeys(names):
        spec = MetricSpec(name, "criterion", 0.0, 0.0, (name,))
        row = compare_metric(spec, base, candidate)
        if row is not None:
            spec_rows.append(row)
    return spec_rows


def _names(row: Row) -> str:
    return " and ".join(row.criteria) or "its criterion"


def _change_text(row: Row) -> str:
    """`3,410/h (-99%)`: the absolute change (rates in percentage points) and relative."""
    text = METRICS[row.name].format_change(abs(row.change or 0.0))
    if row.change_relative is not None:
        text += f" ({format_number(abs(row.change_relative) * 100)}%)"
    return text


def _p_text(p: float) -> str:
    """`< 0.0001` or `= 0.032`."""
    return "< 0.0001" if p < 1e-4 else f"= {p:.2g}"


def comparability(base: Side, candidate: Side) -> list[Note]:
    """Why the two sides may not be comparable (empty when nothing stands out).

    Two targets of one run share load, time and host; only an unfinished run is noted.
    """
    runs = [base] if base.analysis is candidate.analysis else [base, candidate]
    notes = [
        Note("status", f"run {side.run_summary.run_id} is {side.run_summary.status}, "
             "not completed: it may have been cut short")
        for side in runs
        if side.run_summary.status != "completed"
    ]  # fmt: skip
    notes += [
        Note(
            "evidence",
            f"{side.name} is inconclusive ({'; '.join(side.summary.verdict_reasons)}):"
            " its numbers are shown, but they are weak evidence for a change",
        )
        for side in (base, candidate)
        if side.summary.verdict == "inconclusive"
    ]
    if len(runs) == 1:
        return notes
    a, b = base.run_summary, candidate.run_summary
    if a.profile_name != b.profile_name:
        notes.append(Note("profile", f"different profiles: {a.profile_name} vs {b.profile_name}"))
    load = _differences(_load(base), _load(candidate))
    if load:
        notes.append(Note("load", f"different load: {load}"))
    if _different_length(base, candidate):
        notes.append(
            Note(
                "duration",
                f"durations differ: {format_duration(a.duration_s)} vs "
                f"{format_duration(b.duration_s)} (trends and tails grow with time; levels "
                "at the end are not compared)",
            )
        )
    host = _differences(_host(base), _host(candidate))
    if host:
        notes.append(Note("host", f"different hosts: {host}"))
    criteria = _differences(*_criteria(base, candidate))
    if criteria:
        notes.append(
            Note(
                "criteria", f"different criteria ({criteria} only): each side is judged by its own"
            )
        )
    return notes


def _load(side: Side) -> dict[str, Any]:
    """The profile's load settings that change what a run measures; users per target."""
    profile = side.analysis.run.profile
    load = profile.get("load") if isinstance(profile.get("load"), dict) else {}
    targets = max(len(side.analysis.run.targets), 1)
    users = load.get("users")
    shown: dict[str, Any] = {
        "chats per target": users / targets if isinstance(users, int | float) else None
    }
    shown.update((key, load.get(key)) for key in _LOAD_KEYS)
    return shown


def _host(side: Side) -> dict[str, Any]:
    host = side.analysis.run.manifest.get("host")
    host = host if isinstance(host, dict) else {}
    return {"hostname": host.get("hostname"), "cpu_count": host.get("cpu_count")}


def _criteria(base: Side, candidate: Side) -> list[dict[str, Any]]:
    """Warm-up and the checks only one side has, as `_differences` input per side."""
    checks = [
        {c.expression for c in side.run_summary.checks_of(side.target)}
        for side in (base, candidate)
    ]
    return [
        {
            "warm-up": side.run_summary.warmup_s,
            "checks not in the other": "; ".join(sorted(own - other)) or "none",
        }
        for side, own, other in ((base, *checks), (candidate, *checks[::-1]))
    ]


def _differences(a: dict[str, Any], b: dict[str, Any]) -> str:
    """`key a vs b, ...` for the keys whose values differ."""
    return ", ".join(
        f"{key} {_setting(a[key])} vs {_setting(b[key])}" for key in a if a[key] != b.get(key)
    )


def _setting(value: Any) -> str:
    if isinstance(value, float):
        return format_number(value)
    if isinstance(value, list):
        return "–".join(_setting(v) for v in value)
    return "-" if value is None else str(value)
