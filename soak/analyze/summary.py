"""From a loaded run to summary.json: trends, limits, idle CPU, drift, chats, criteria.

Builds the typed model of soak.analyze.model; its serialisation, summary.json, is a
documented contract (docs/summary-json.md): bump model.SCHEMA_VERSION when a field
changes meaning or disappears.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from soak import __version__
from soak.analyze.chats import (
    BUSY,
    IDLE,
    IdlePeriod,
    classify_samples,
    cumulative_at,
    idle_periods,
    latency_stats,
    outcome_totals,
)
from soak.analyze.drift import Drift, analyze_drift
from soak.analyze.findings import findings
from soak.analyze.generator import generator_summary, saturated_spans
from soak.analyze.health import health_fields
from soak.analyze.load import BODY_PREFIX, RunData, TargetData, load_run
from soak.analyze.trend import (
    MIN_FIT_SAMPLES,
    Fit,
    Segment,
    Trend,
    find_segments,
    fit_trend,
    headline_segment,
    hours_to_limit,
    lower_envelope,
    theil_sen,
)
from soak.criteria import (
    DEFAULT_CHAT_CHECKS,
    DEFAULT_CHECKS,
    FAIL,
    INCONCLUSIVE,
    PASS,
    SCOPE_DEFAULT,
    SKIPPED,
    Criterion,
    HealthMetric,
    capped_warmup,
    criteria_by_target,
    parse_criteria,
    parse_target_overrides,
)
from soak.errors import RunDirError
from soak.formatting import plural
from soak.limits import Limit, TargetLimits, target_limits
from soak.model import (
    CHAT_LATENCIES,
    OUTCOME_COUNTS,
    SERIES_UNITS,
    AnomalySummary,
    ChatSummary,
    CheckResult,
    CpuSummary,
    DriftSummary,
    HealthField,
    HealthSummary,
    Quantiles,
    RunSummary,
    SegmentSummary,
    SeriesSummary,
    TargetSummary,
    from_json,
    to_json,
)
from soak.rundir import STATUS_COMPLETED, STATUS_FAILED, STATUS_RUNNING, TARGET_REPLACED, iso
from soak.units import format_duration, parse_duration

#: A trend fitted over less than this share of the load phase is no evidence.
MIN_LOAD_COVERAGE = 0.5
#: Family trends use fewer bins than the headline fits: there can be dozens of families.
_FAMILY_FIT_POINTS = 400
#: Idle periods listed in the summary (the first and the last ones matter most).
_MAX_IDLE_PERIODS = 50
#: Stuck chats listed in the summary (the earliest).
_MAX_STUCK_LISTED = 50
#: Process series with a trend: summary series name -> process column. USS comes from
#: the collector's detail samples only; trended when recorded.
SERIES_COLUMNS = {"threads": "threads", "rss": "rss_mb", "fds": "fds", "uss": "uss_mb"}
_NO_PROCESS = (
    "no process samples were recorded for this target; check events.jsonl for "
    "target_lost or collector_error and that the collector can see the target's process"
)
_NO_REPLIES = "no ok replies were recorded, so there are no latencies; look at the outcome counts"
_NO_CHATS = (
    "this run has no chats.jsonl (a `soak collect` run records the process and /health "
    "only), so there are no chat numbers; run `soak run` to drive chats"
)
_DEFAULT_REPLY_TIMEOUT_S = 120.0
_QUANTILE_FIELDS = ("p50", "p95", "p99", "max")


@dataclass
class Settings:
    """What the manifest's profile asks of the analysis.

    criteria: the profile's general checks; target_criteria: each target's after its
    `[criteria.targets.NAME]` override (use `criteria_for`). replies_per_day: production
    traffic to extrapolate growth per reply to (criteria.replies_per_day), if given.
    """

    warmup_s: float
    criteria: list[Criterion]
    loop_lag_field: str | None
    target_criteria: dict[str, list[Criterion]] = field(default_factory=dict)
    replies_per_day: float | None = None
    reply_timeout_s: float = _DEFAULT_REPLY_TIMEOUT_S
    warmup_note: str | None = None
    criteria_source: str = "profile"

    def criteria_for(self, target: str) -> list[Criterion]:
        """The criteria that apply to one target."""
        return self.target_criteria.get(target, self.criteria)


@dataclass
class TargetAnalysis:
    """One target's analysis: segments, fits (x = elapsed s), sample states, its summary.

    fits: the verdict fit per process column (threads, rss_mb, fds, uss_mb); trends: the
    whole Trend behind each (shape, envelope, plateau). drift: the per-bin drift table.
    """

    data: TargetData
    segments: list[Segment]
    headline: Segment | None
    fits: dict[str, Fit | None]
    family_fits: dict[str, Fit]
    cpu_states: np.ndarray
    summary: TargetSummary
    checks: list[CheckResult] = field(default_factory=list)
    trends: dict[str, Trend | None] = field(default_factory=dict)
    limits: TargetLimits | None = None
    drift: Drift | None = None
    idle: list[IdlePeriod] = field(default_factory=list)


@dataclass
class Analysis:
    """A whole run analysed: the loaded data, each target's analysis and the summary."""

    run: RunData
    settings: Settings
    targets: dict[str, TargetAnalysis]
    summary: RunSummary
    saturated: np.ndarray = field(default_factory=lambda: np.empty((0, 2)))


def summarize(run_path: Path | str) -> dict[str, Any]:
    """The summary.json content of a run directory (see docs/summary-json.md)."""
    return analyze_run(run_path).summary.to_json()


def analyze_run(run_path: Path | str) -> Analysis:
    """Load and analyse a run directory; RunDirError when it cannot be read."""
    run = load_run(run_path)
    settings = read_settings(run)
    duration = run.ended_at - run.started_at
    generator = generator_summary(run.generator, duration)
    saturated = saturated_spans(run.generator)
    targets = {
        name: analyze_target(data, settings, run, saturated) for name, data in run.targets.items()
    }
    run_gaps = _run_gaps(run)
    checks: list[CheckResult] = []
    for name, target in targets.items():
        summary = target.summary
        summary.soak_saturated_percent = generator["saturated_percent"] if generator else None
        summary.replies_per_day = settings.replies_per_day
        target.checks = [
            replace(c.check(summary), target=name) for c in settings.criteria_for(name)
        ]
        summary.evidence_gaps = [*run_gaps, *_target_gaps(summary, run.has_chats)]
        summary.verdict, summary.verdict_reasons = judge(target.checks, summary.evidence_gaps)
        checks += target.checks
        summary.findings = findings(summary)
    manifest = run.manifest
    summary = RunSummary(
        soak_version=__version__,
        recorded_with=manifest.get("soak_version"),
        run_id=manifest.get("run_id") or run.path.name,
        run_dir=str(run.path),
        profile_name=manifest.get("profile_name"),
        label=manifest.get("label"),
        status=run.status,
        started_at_iso=iso(run.started_at),
        ended_at_iso=iso(run.ended_at),
        duration_s=duration,
        warmup_s=settings.warmup_s,
        warmup_note=settings.warmup_note,
        has_chats=run.has_chats,
        replies_per_day=settings.replies_per_day,
        verdict=run_verdict([t.summary.verdict or INCONCLUSIVE for t in targets.values()]),
        evidence_gaps=run_gaps,
        criteria_source=settings.criteria_source,
        criteria=checks,
        generator=generator,
        targets={name: target.summary for name, target in targets.items()},
    )
    return Analysis(
        run=run, settings=settings, targets=targets, summary=summary, saturated=saturated
    )


def read_settings(run: RunData) -> Settings:
    """Warm-up, criteria (with per-target overrides), loop-lag field and reply timeout from
    the manifest's profile, with defaults."""
    profile = run.profile
    criteria = _table(profile, "criteria")
    collector, load = _table(profile, "collector"), _table(profile, "load")
    try:
        warmup_s = parse_duration(criteria.get("warmup") or 0)
        checks = criteria.get("checks") or []
        parsed = parse_criteria(list(checks) if isinstance(checks, list | tuple) else [checks])
        overrides = parse_target_overrides(criteria.get("targets") or {})
        reply_timeout = parse_duration(load.get("reply_timeout") or _DEFAULT_REPLY_TIMEOUT_S)
        load_s = parse_duration(load.get("duration") or 0) if run.has_chats else 0.0
    except ValueError as exc:
        raise RunDirError(f"{run.path}: the profile in manifest.json has {exc}") from None
    source = "profile"
    if not parsed and not overrides:
        source = SCOPE_DEFAULT
        defaults = (*DEFAULT_CHECKS, *(DEFAULT_CHAT_CHECKS if run.has_chats else ()))
        parsed = [replace(c, scope=SCOPE_DEFAULT) for c in parse_criteria(list(defaults))]
    loaded_s = load_s or max(run.ended_at - run.started_at, 0.0)
    warmup_s, note = capped_warmup(warmup_s, loaded_s, "load" if load_s else "run")
    lag_field = collector.get("loop_lag_field")
    per_day = criteria.get("replies_per_day")
    return Settings(
        warmup_s=warmup_s,
        criteria=parsed,
        loop_lag_field=lag_field if isinstance(lag_field, str) and lag_field else None,
        target_criteria=criteria_by_target(parsed, overrides, run.targets),
        replies_per_day=float(per_day)
        if isinstance(per_day, int | float) and per_day > 0
        else None,
        reply_timeout_s=reply_timeout,
        warmup_note=note,
        criteria_source=source,
    )


# --- the verdict ---------------------------------------------------------------------
def judge(checks: list[CheckResult], gaps: list[str]) -> tuple[str, list[str]]:
    """(verdict, why) of one target: fail when a criterion fails; inconclusive when the
    evidence falls short (a gap, a criterion skipped or not judged, no criteria); else
    pass. A failure measured in a short or cut-off run is still a failure."""
    failed = [c.expression for c in checks if c.status == FAIL]
    if failed:
        return FAIL, [f"fails {expression}" for expression in failed]
    open_checks = [c for c in checks if c.status in (SKIPPED, INCONCLUSIVE)]
    reasons = list(gaps)
    if not checks:
        reasons.append("no criteria apply to this target: nothing was judged")
    if open_checks:
        names = ", ".join(c.name for c in open_checks)
        reasons.append(f"{len(open_checks)} of {len(checks)} criteria not judged ({names})")
    if reasons:
        return INCONCLUSIVE, reasons
    return PASS, [f"meets all {len(checks)} criteria"]


def run_verdict(verdicts: list[str]) -> str:
    """The run's verdict from its targets': fail, else inconclusive, else pass."""
    if FAIL in verdicts:
        return FAIL
    if INCONCLUSIVE in verdicts or not verdicts:
        return INCONCLUSIVE
    return PASS


def _run_gaps(run: RunData) -> list[str]:
    """What keeps the whole run from being evidence: it did not run to its planned end."""
    if run.status == STATUS_COMPLETED:
        return []
    ran = format_duration(max(run.ended_at - run.started_at, 0.0))
    planned = run.manifest.get("planned_duration_s")
    of = f" of the planned {format_duration(planned)}" if isinstance(planned, int | float) else ""
    if run.status == STATUS_RUNNING:
        return [f"the run is still going ({ran}{of} so far): an interim verdict"]
    why = run.manifest.get("end_message")
    if run.status == STATUS_FAILED and isinstance(why, str) and why:
        return [f"the run failed after {ran}{of}: {why.split('. ')[0]}"]
    return [f"the run was {run.status} after {ran}{of}, before its planned end"]


#: Anomaly groups (kind and message) listed in summary.json per target, the largest.
_MAX_GROUPS_LISTED = 20
#: Share of a target's turns excluded (soak itself stood still) that leaves a gap.
EXCLUDED_SHARE = 0.05


def _recorded_limits(events: pd.DataFrame, target: str, pid: int | None) -> TargetLimits | None:
    """The limits the collector recorded when it found process `pid` of `target`; `pid`
    None: of a target whose samples name no pid (sampled from Prometheus)."""
    same = events["pid"].isna() if pid is None else events["pid"] == pid
    mine = events[(events["target"] == target) & same]
    for value in reversed(mine["limits"].tolist()):
        limits = TargetLimits.from_json(value)
        if limits is not None:
            return limits
    return None


def _target_gaps(summary: TargetSummary, has_chats: bool) -> list[str]:
    """What keeps one target's numbers from being evidence: another program took its
    place, no turn ended, none was ok, many excluded because soak itself stood still."""
    gaps = [
        f"{message} — so what was sampled after that says nothing about the target"
        for message in summary.replaced
    ]
    if not has_chats:
        return gaps
    chats = summary.chats
    turns, replies, excluded = chats.count("turns"), chats.count("replies"), chats.excluded_turns
    if excluded and excluded >= EXCLUDED_SHARE * (turns + excluded):
        gaps.append(
            f"{excluded:,} of {plural(turns + excluded, 'turn')} failed while soak's own load "
            "process stood still (stopped or saturated); they are not counted, so the chats were "
            "not measured for that share of the run"
        )
    if not turns and not excluded:
        gaps.append("no chat turn ended for this target, so nothing about its chats was measured")
    elif turns and not replies:
        gaps.append(
            f"none of its {plural(turns, 'turn')} got an ok reply: the server did not answer, "
            "or the profile does not fit its protocol (see the anomalies)"
        )
    return gaps


def _table(profile: dict[str, Any], name: str) -> dict[str, Any]:
    value = profile.get(name)
    return value if isinstance(value, dict) else {}


def analyze_target(
    data: TargetData,
    settings: Settings,
    run: RunData,
    saturated: np.ndarray | None = None,
) -> TargetAnalysis:
    """Trends, limits, idle CPU, drift, chat totals and loop lag of one target; its summary.

    saturated: (start, end) elapsed spans when soak's own load processes were saturated.
    """
    process = data.process
    segments = find_segments(process)
    headline = headline_segment(segments)
    summary = TargetSummary(
        name=data.info.name,
        build=data.info.build,
        url=data.info.url,
        chats=_chat_summary(data, run.has_chats),
    )
    events = run.events
    replaced = events[(events["kind"] == TARGET_REPLACED) & (events["target"] == data.info.name)]
    summary.replaced = [str(message) for message in replaced["message"]]
    busy = _busy_span(data.chats) if run.has_chats else None
    busy_until = busy[1] if busy else None
    last = process.iloc[-1] if len(process) else None
    last_pid = None if last is None or pd.isna(last["pid"]) else int(last["pid"])
    limits = target_limits(
        run.manifest,
        last_pid,
        None if last is None or pd.isna(last["create_time"]) else float(last["create_time"]),
        recorded=None if last is None else _recorded_limits(events, data.info.name, last_pid),
    )
    target = TargetAnalysis(
        data=data,
        segments=segments,
        headline=headline,
        fits={},
        family_fits=_family_fits(data, headline, settings.warmup_s),
        cpu_states=classify_samples(process["t"].to_numpy(), data.chats),
        summary=summary,
        limits=limits,
    )
    limit_of = {"threads": limits.threads, "rss": limits.memory_mb, "fds": limits.fds}
    limit_of["uss"] = limits.memory_mb
    for name, column in SERIES_COLUMNS.items():
        context = _SeriesContext(column, name, limit_of[name], busy_until, busy)
        setattr(summary, name, _series_summary(target, settings, context))
    summary.top_growing_family = _top_family(data, target.family_fits)

    target.idle = idle_periods(process, target.cpu_states, data.chats)
    summary.cpu = _cpu_summary(process, target.cpu_states, target.idle)
    summary.cpu.limit_cores = limits.cpu_cores.value
    summary.cpu.limit_source = limits.cpu_cores.source
    summary.cpu.throttled_percent = cgroup_throttled_percent(process)
    summary.loop_lag = _loop_lag_summary(data, settings)
    duration = run.ended_at - run.started_at
    target.drift = analyze_drift(
        data,
        settings.loop_lag_field,
        settings.reply_timeout_s,
        duration,
        saturated if saturated is not None else np.empty((0, 2)),
    )
    summary.drift = from_json(DriftSummary, target.drift.summary)
    summary.health = _health_summary(
        data, settings, _window(headline, settings.warmup_s), busy_until
    )
    summary.restarts = max(len(segments) - 1, 0)
    summary.segments = [
        _segment_entry(target, seg, settings.warmup_s, busy_until) for seg in segments
    ]
    summary.samples = len(process)
    summary.process_errors = data.process_errors
    summary.anomalies = AnomalySummary(
        records=data.anomaly_records,
        kinds=data.anomaly_kinds,
        groups=data.anomaly_groups[:_MAX_GROUPS_LISTED],
    )
    summary.chats.disconnect_close_codes = data.close_codes
    target.summary = from_json(TargetSummary, to_json(summary))  # plain numbers, no NaN
    return target


# --- chats ---------------------------------------------------------------------------
def _chat_summary(data: TargetData, has_chats: bool) -> ChatSummary:
    """Outcome counts, rates, stuck chats and latencies of the chats (None without chats)."""
    if not has_chats:
        summary = ChatSummary()
        names = [f.name for f in dataclasses.fields(ChatSummary) if f.name != "missing"]
        summary.mark_missing(_NO_CHATS, *names)
        for kind in CHAT_LATENCIES:
            getattr(summary, kind).mark_missing(_NO_CHATS, *_QUANTILE_FIELDS)
        return summary
    chats = data.chats
    totals = outcome_totals(chats)
    summary = ChatSummary(**{key: totals[outcome] for key, outcome in OUTCOME_COUNTS.items()})
    summary.turns, summary.turns_started = totals["turns"], totals["started"]
    summary.stall_rate = summary.share("stalls")
    active = (chats["started"] > 0) | (chats["turns"] > 0) | (chats["in_flight"] > 0)
    busy_s = float(chats.loc[active, "interval_s"].sum())
    summary.turns_per_s = totals["turns"] / busy_s if busy_s > 0 else None
    summary.ok_per_s = totals["ok"] / busy_s if busy_s > 0 else None
    summary.violations_by_kind = _merged_counts(chats["violations"])
    summary.mismatches_by_kind = _merged_counts(chats["mismatches"])
    summary.excluded_by_outcome = _merged_counts(chats["excluded"])
    summary.excluded_turns = sum(summary.excluded_by_outcome.values())
    stuck = sorted(data.stuck_chats, key=lambda chat: chat["since_s"])
    summary.chats_stuck = len(stuck)
    summary.chats_never_recovered = sum(1 for chat in stuck if chat["recovered_s"] is None)
    summary.stuck_chats = stuck[:_MAX_STUCK_LISTED]
    summary.chats_max = int(chats["connections"].max()) if len(chats) else 0
    summary.pings = int(chats["pings"].sum())
    summary.pings_lost = int(chats["pings_lost"].sum())
    gaps = chats["gap_max_s"].dropna()
    summary.gap_max_s = float(gaps.max()) if len(gaps) else None
    if not totals["turns"]:
        summary.mark_missing(
            "no turns ended for this target; check that its load ran", "stall_rate"
        )
    if summary.gap_max_s is None:
        summary.mark_missing(
            "the chat aggregates carry no gap_max_s (recorded by newer soak)", "gap_max_s"
        )
    for kind in CHAT_LATENCIES:
        quantiles = _latencies(chats[f"{kind}_hist"].tolist())
        reason = _NO_REPLIES if kind in ("ttft", "reply") else _no_hist(kind)
        quantiles.mark_missing(
            reason, *(s for s in ("p50", "p95", "p99") if getattr(quantiles, s) is None)
        )
        setattr(summary, kind, quantiles)
    tpot = summary.tpot.p50
    summary.tokens_per_s = 1.0 / tpot if tpot else None
    if summary.tokens_per_s is None:
        summary.mark_missing(_no_hist("tpot"), "tokens_per_s")
    pings = chats["ping_max_s"].dropna()
    summary.ping.max = float(pings.max()) if len(pings) and summary.ping.p50 else None
    if summary.ping.max is None:
        summary.ping.mark_missing(_no_hist("ping"), "max")
    return summary


def _latencies(histograms: list[Any]) -> Quantiles:
    """p50/p95/p99 (s) of merged latency histograms, and how many samples they hold."""
    quantiles, samples = latency_stats(histograms, (0.5, 0.95, 0.99))
    p50, p95, p99 = (quantiles[q] for q in (0.5, 0.95, 0.99))
    return Quantiles(p50=p50, p95=p95, p99=p99, samples=samples)


def _no_hist(kind: str) -> str:
    what = {
        "ping": "protocol pings",
        "connect": "connects",
        "itl": "gaps between tokens (ok replies of 2+ token frames)",
        "tpot": "times per output token (ok replies of 2+ token frames)",
    }[kind]
    return f"no {what} were timed in this run (the chat aggregates have no {kind}_hist)"


def _merged_counts(column: pd.Series) -> dict[str, int]:
    merged: dict[str, int] = {}
    for counts in column:
        for key, value in counts.items():
            if isinstance(value, int | float):
                merged[str(key)] = merged.get(str(key), 0) + int(value)
    return merged


def _busy_span(chats: pd.DataFrame) -> tuple[float, float] | None:
    """(elapsed start of the first, end of the last) chats interval with a turn started,
    ended or in flight: the load phase."""
    active = (chats["started"] > 0) | (chats["turns"] > 0) | (chats["in_flight"] > 0)
    if not active.any():
        return None
    rows = chats.loc[active]
    first = rows.iloc[0]
    width = first["interval_s"] if pd.notna(first["interval_s"]) else 0.0
    return max(float(first["elapsed"] - width), 0.0), float(rows["elapsed"].iloc[-1])


# --- process series ---------------------------------------------------------------------
@dataclass(frozen=True)
class _SeriesContext:
    column: str
    name: str
    limit: Limit
    busy_until: float | None
    busy: tuple[float, float] | None = None


def _series_summary(
    target: TargetAnalysis, settings: Settings, context: _SeriesContext
) -> SeriesSummary:
    """Levels, verdict trend, growth per unit of work and time to limit of one series."""
    process, headline = target.data.process, target.headline
    column, name = context.column, context.name
    trend = _segment_trend(process, headline, column, settings.warmup_s, context.busy_until)
    fit = trend.fit if trend else None
    target.trends[column], target.fits[column] = trend, fit
    start, end, peak = _levels(process, column, settings.warmup_s)
    out = SeriesSummary(
        name=name,
        unit=SERIES_UNITS[name],
        start=start,
        end=end,
        max=peak,
        growth_per_hour=fit.per_hour if fit else None,
        growth_ci_per_hour=list(fit.ci_per_hour) if fit else None,
        growth_overall_per_hour=trend.overall.per_hour if trend else None,
        trend=trend.shape if trend else None,
        envelope=bool(trend and trend.envelope),
        drops=trend.drops if trend else 0,
        level_since_s=trend.level_since if trend else None,
        doubt=_coverage_doubt(trend, context.busy, headline) if trend else None,
        limit=context.limit.value,
        limit_source=context.limit.source,
    )
    if end is None:
        out.mark_missing(_missing_reason(process, column), "end", "max")
    if fit is None:
        out.mark_missing(
            _fit_reason(process, headline, column, settings.warmup_s), "growth_per_hour"
        )
    _work_summary(target, trend, context, out)
    if context.limit.value is not None:
        out.hours_to_limit = hours_to_limit(end, out.growth_per_hour, context.limit.value)
    if out.hours_to_limit is None:
        out.mark_missing(
            out.why_missing("growth_per_hour")
            or (
                f"no {name} limit is known: {context.limit.source}"
                if context.limit.value is None
                else f"no growth of {name} after the warm-up"
            ),
            "hours_to_limit",
        )
    per_1k = out.growth_per_1k_replies
    if settings.replies_per_day and per_1k and per_1k > 0 and context.limit.value:
        per_hour = per_1k * settings.replies_per_day / 1000.0 / 24.0
        out.hours_to_limit_at_replies_per_day = hours_to_limit(end, per_hour, context.limit.value)
    return out


def _work_summary(
    target: TargetAnalysis, trend: Trend | None, context: _SeriesContext, out: SeriesSummary
) -> None:
    """Growth per 1,000 ok replies and per new connection over the verdict fit's window.

    The series (or its lower envelope) is fitted against the cumulative replies and
    connects, so idle phases (no work, no growth) do not dilute the rate.
    """
    names = {
        ("ok", 1000.0): ("growth_per_1k_replies", "growth_ci_per_1k_replies"),
        ("connects", 1.0): ("growth_per_connection", None),
    }
    chats, process = target.data.chats, target.data.process
    if trend is None or chats.empty or target.headline is None:
        reason = (
            "no chat intervals were recorded, so there is no work to divide the growth by"
            if chats.empty
            else out.why_missing("growth_per_hour") or "no trend"
        )
        out.mark_missing(reason, *(n for pair in names.values() for n in pair if n))
        return
    rows = process.iloc[target.headline.start : target.headline.stop]
    x = rows["elapsed"].to_numpy(dtype=float)
    y = rows[context.column].to_numpy(dtype=float)
    finite = np.isfinite(y)
    x, y = x[finite], y[finite]
    if trend.envelope:
        y = lower_envelope(y, trend.envelope_window)
    window = (x >= trend.fit.x_start) & (x <= trend.fit.x_end)
    for (column, scale), (value_name, ci_name) in names.items():
        work = cumulative_at(chats, column, x[window])
        fit = theil_sen(work, y[window]) if len(work) and np.ptp(work) > 0 else None
        if fit is None:
            what = "ok replies" if column == "ok" else "new connections (chats keep theirs open)"
            out.mark_missing(f"no {what} in the fitted window", value_name)
            continue
        setattr(out, value_name, fit.slope * scale)
        if ci_name:
            setattr(out, ci_name, [fit.low * scale, fit.high * scale])


def _coverage_doubt(
    trend: Trend, busy: tuple[float, float] | None, segment: Segment | None
) -> str | None:
    """Why a trend is no evidence because it saw too little of the load (None: enough).

    The fit must span MIN_LOAD_COVERAGE of the load phase (of the process segment, in a
    run without chats): a leak per reply shows only while replies are made.
    """
    span = busy or ((segment.t_start, segment.t_end) if segment else None)
    if span is None or span[1] <= span[0]:
        return None
    low, high = max(trend.overall.x_start, span[0]), min(trend.overall.x_end, span[1])
    share = max(high - low, 0.0) / (span[1] - span[0])
    if share >= MIN_LOAD_COVERAGE:
        return None
    what = "load phase" if busy else "run"
    cause = (
        "the target restarted, and its longest process segment"
        if segment is not None and busy and segment.t_start > span[0] + 1.0
        else "the fit after the warm-up"
    )
    return (
        f"{cause} covers {share:.0%} of the {what} ({format_duration(span[0])}–"
        f"{format_duration(span[1])}), less than {MIN_LOAD_COVERAGE:.0%}; run longer or "
        "lower criteria.warmup"
    )


def _window(segment: Segment | None, warmup_s: float) -> tuple[float, float] | None:
    """(start, end) elapsed seconds of a segment after its warm-up."""
    if segment is None or segment.t_start + warmup_s > segment.t_end:
        return None
    return segment.t_start + warmup_s, segment.t_end


def _after_warmup(process: pd.DataFrame, segment: Segment, warmup_s: float) -> pd.DataFrame:
    rows = process.iloc[segment.start : segment.stop]
    return rows[rows["elapsed"] >= segment.t_start + warmup_s]


def _segment_trend(
    process: pd.DataFrame,
    segment: Segment | None,
    column: str,
    warmup_s: float,
    busy_until: float | None,
) -> Trend | None:
    """The trend of `column` over the segment's samples after the warm-up."""
    if segment is None:
        return None
    rows = _after_warmup(process, segment, warmup_s)
    values = rows[column].to_numpy(dtype=float)
    if np.count_nonzero(np.isfinite(values)) < MIN_FIT_SAMPLES:
        return None
    return fit_trend(rows["elapsed"].to_numpy(dtype=float), values, busy_until)


#: Series fitted per process segment (USS has too few detail samples for that).
_SEGMENT_SERIES = ("threads", "rss", "fds")


def _segment_entry(
    target: TargetAnalysis, seg: Segment, warmup_s: float, busy_until: float | None
) -> SegmentSummary:
    """One process segment with its own fits."""
    process = target.data.process
    entry = SegmentSummary(
        pid=seg.pid,
        start_s=seg.t_start,
        end_s=seg.t_end,
        samples=seg.stop - seg.start,
        headline=seg is target.headline,
    )
    for name in _SEGMENT_SERIES:
        column = SERIES_COLUMNS[name]
        trend = (
            target.trends.get(column)
            if seg is target.headline
            else _segment_trend(process, seg, column, warmup_s, busy_until)
        )
        entry.growth_per_hour[name] = trend.fit.per_hour if trend else None
        entry.trend[name] = trend.shape if trend else None
    return entry


def _fit_reason(
    process: pd.DataFrame, segment: Segment | None, column: str, warmup_s: float
) -> str:
    """Why `_segment_trend` gave no trend for `column`."""
    if process[column].notna().sum() == 0:
        return _missing_reason(process, column)
    rows = _after_warmup(process, segment, warmup_s) if segment else process.iloc[:0]
    usable = int(rows[column].notna().sum())
    if usable >= MIN_FIT_SAMPLES:
        return f"all {column} samples after the warm-up share one time stamp"
    return (
        f"only {plural(usable, column + ' sample')} after the {format_duration(warmup_s)} "
        f"warm-up in the longest process segment ({MIN_FIT_SAMPLES} needed); run longer or lower "
        "criteria.warmup"
    )


def _missing_reason(process: pd.DataFrame, column: str) -> str:
    """Why a process column has no values at all."""
    if process.empty:
        return _NO_PROCESS
    hint = {
        "fds": " (open fds need permission to list /proc/PID/fd)",
        "uss_mb": " (USS comes with the collector's detail samples and needs permission to "
        "read /proc/PID/smaps_rollup)",
    }.get(column, "")
    return f"the process samples carry no {column} values{hint}"


def _levels(
    process: pd.DataFrame, column: str, warmup_s: float
) -> tuple[float | None, float | None, float | None]:
    """(start, end, max): start is the first value at or after the warm-up."""
    rows = process[process[column].notna()]
    if rows.empty:
        return None, None, None
    after = rows[rows["elapsed"] >= warmup_s]
    start = (after if not after.empty else rows)[column].iloc[0]
    return float(start), float(rows[column].iloc[-1]), float(rows[column].max())


def _family_fits(data: TargetData, segment: Segment | None, warmup_s: float) -> dict[str, Fit]:
    """Trend of every thread-name family that changes in the headline segment after warm-up."""
    if segment is None or data.families.empty:
        return {}
    threads = data.threads
    window = (threads["elapsed"] >= segment.t_start + warmup_s) & (
        threads["elapsed"] <= segment.t_end
    )
    if segment.pid is not None:
        window &= threads["pid"] == segment.pid
    if window.sum() < MIN_FIT_SAMPLES:
        return {}
    x = threads.loc[window, "elapsed"].to_numpy(dtype=float)
    fits = {}
    for name, column in data.families.loc[window].items():
        values = column.to_numpy(dtype=float)
        if values.min() != values.max():
            fit = theil_sen(x, values, max_points=_FAMILY_FIT_POINTS)
            if fit is not None:
                fits[str(name)] = fit
    return fits


def _top_family(data: TargetData, fits: dict[str, Fit]) -> dict[str, Any] | None:
    """The fastest-growing thread-name family, or None when no family grows."""
    growing = {name: fit for name, fit in fits.items() if fit.slope > 0}
    if not growing:
        return None
    name, fit = max(growing.items(), key=lambda item: item[1].slope)
    return {
        "family": name,
        "growth_per_hour": fit.per_hour,
        "end": float(data.families[name].iloc[-1]),
    }


# --- CPU, idle periods, loop lag, /health latency -------------------------------------
def _cpu_summary(
    process: pd.DataFrame, states: np.ndarray, periods: list[IdlePeriod]
) -> CpuSummary:
    """Median CPU (percent of one core) when idle and busy, and idle CPU over time."""
    cpu = process["cpu_percent"].to_numpy(dtype=float)
    summary = CpuSummary()
    for name, state in (("idle", IDLE), ("busy", BUSY)):
        values = cpu[(states == state) & np.isfinite(cpu)]
        setattr(summary, f"{name}_percent", float(np.median(values)) if len(values) else None)
        setattr(summary, f"{name}_samples", len(values))
    if summary.idle_percent is None:
        summary.mark_missing(
            "no process sample fell in an idle interval (no turn started, ended or in flight, "
            "after an interval that ended with none in flight); add an idle phase to the "
            "profile's load to measure idle CPU",
            "idle_percent",
        )
    if summary.busy_percent is None:
        summary.mark_missing(
            "no process sample fell in an interval with chat traffic", "busy_percent"
        )
    _idle_trend(periods, summary)
    return summary


def cgroup_throttled_percent(process: pd.DataFrame) -> float | None:
    """Percent of the cgroup's CPU periods that were throttled over the run (its counters
    rise between samples; a drop is a new cgroup, a restart, and starts over)."""
    periods = process["cgroup_cpu_periods"].to_numpy(dtype=float)
    throttled = process["cgroup_cpu_throttled_periods"].to_numpy(dtype=float)
    known = np.isfinite(periods) & np.isfinite(throttled)
    if known.sum() < 2:
        return None
    steps = np.diff(periods[known]), np.diff(throttled[known])
    rising = (steps[0] >= 0) & (steps[1] >= 0)
    total = float(steps[0][rising].sum())
    return round(100 * float(steps[1][rising].sum()) / total, 1) if total else 0.0


#: Idle CPU (points of one core) that a fitted rise over the whole run must reach to be
#: growth: below it the idle periods differ by what CPU-time counters, /health polls and
#: a busy machine move anyway (0.31% -> 0.41% of a healthy server in a 2-minute run made
#: "1.28 points per 1,000 replies" out of 80 replies). An orphaned 50 ms ticker per
#: stream adds whole points.
IDLE_CPU_RESOLUTION_POINTS = 0.5


def _idle_trend(periods: list[IdlePeriod], summary: CpuSummary) -> None:
    """Idle CPU of the first and last idle period and its growth per 1,000 replies.

    The orphaned-ticker signature: CPU with nothing to do that climbs with every
    finished reply. With three or more periods the growth is a Theil–Sen slope over
    them, with two the line through both; a rise over the run smaller than
    IDLE_CPU_RESOLUTION_POINTS is no growth (`idle_rise_points` keeps it).
    """
    summary.idle_periods = [p.to_json() for p in periods[:_MAX_IDLE_PERIODS]]
    if len(periods) < 2:
        summary.mark_missing(
            f"{len(periods)} idle period in this run (2 needed to compare early and late); "
            "add idle gaps to the load (or a quiet start before it) to see idle CPU over time",
            "idle_early_percent",
            "idle_late_percent",
            "idle_growth_per_1k_replies",
            "idle_rise_points",
        )
        return
    first, last = periods[0], periods[-1]
    summary.idle_early_percent = first.cpu_percent
    summary.idle_late_percent = last.cpu_percent
    replies = np.array([p.replies_before for p in periods])
    cpu = np.array([p.cpu_percent for p in periods])
    if np.ptp(replies) <= 0:
        summary.mark_missing("no reply finished between idle periods", "idle_growth_per_1k_replies")
        return
    fit = theil_sen(replies, cpu) if len(periods) >= 3 else None
    slope = fit.slope if fit else (last.cpu_percent - first.cpu_percent) / np.ptp(replies)
    rise = slope * float(np.ptp(replies))
    summary.idle_rise_points = rise
    if abs(rise) < IDLE_CPU_RESOLUTION_POINTS:
        slope = 0.0  # a tenth of a point over a short run is the measurement, not a ticker
    summary.idle_growth_per_1k_replies = slope * 1000.0


def _loop_lag_summary(data: TargetData, settings: Settings) -> Quantiles:
    """Loop-lag percentiles (s) from the configured /health field (ms) after the warm-up."""
    field_name = settings.loop_lag_field
    column = BODY_PREFIX + (field_name or "")
    health = data.health
    values = np.array([])
    if field_name is None:
        reason = (
            "no loop-lag field is configured; set collector.loop_lag_field in the profile "
            "to the /health field that holds the event-loop lag in ms"
        )
    elif column not in health.columns:
        reason = (
            f"the /health field {field_name!r} is not a number in any sample; check "
            "collector.loop_lag_field against the bodies in health.jsonl"
        )
    else:
        after = health.loc[health["elapsed"] >= settings.warmup_s, column]
        values = after.to_numpy(dtype=float) / 1000.0
        values = values[np.isfinite(values)]
        reason = (
            f"no /health sample has {field_name!r} after the "
            f"{format_duration(settings.warmup_s)} warm-up; run longer or lower criteria.warmup"
        )
    return _quantiles_of(values, ("p50", "p95", "p99"), reason)


def _quantiles_of(values: np.ndarray, stats: tuple[str, ...], reason: str) -> Quantiles:
    """Percentiles `stats` and the max of `values` (s); all missing for `reason` if none."""
    if not len(values):
        summary = Quantiles()
        summary.mark_missing(reason, *stats, "max")
        return summary
    points = np.percentile(values, [float(stat[1:]) for stat in stats])
    summary = Quantiles(max=float(values.max()), samples=len(values))
    for stat, value in zip(stats, points, strict=True):
        setattr(summary, stat, float(value))
    return summary


def _health_summary(
    data: TargetData,
    settings: Settings,
    window: tuple[float, float] | None,
    busy_until: float | None,
) -> HealthSummary:
    """/health polls: counts, failures, the latency (s) of answered ones, numeric fields."""
    health = data.health
    failed = _health_failed(health)
    last_error = health.loc[failed, "error"].dropna()
    latency = health["latency_s"].to_numpy(dtype=float)
    latency = latency[np.isfinite(latency) & ~failed.to_numpy()]
    wanted = [
        c.metric.path
        for c in settings.criteria_for(data.name)
        if isinstance(c.metric, HealthMetric)
    ]
    fields = health_fields(health, settings.warmup_s, window, busy_until, wanted=wanted)
    return HealthSummary(
        samples=len(health),
        errors=int(failed.sum()),
        last_error=str(last_error.iloc[-1]) if len(last_error) else None,
        latency=_quantiles_of(latency, ("p50", "p99"), "no /health poll was answered in this run"),
        fields={path: from_json(HealthField, entry) for path, entry in fields.items()},
    )


def _health_failed(health: pd.DataFrame) -> pd.Series:
    """Per /health sample: True when the poll failed (an error or a non-2xx status)."""
    status = health["status"]
    return health["error"].notna() | status.isna() | (status < 200) | (status >= 300)
