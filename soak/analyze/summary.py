"""From a loaded run to summary.json: trends, idle CPU, chat totals, criteria, verdicts.

The summary's layout is a documented contract (docs/summary-json.md); bump
SCHEMA_VERSION when a field changes meaning or disappears.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from soak import __version__
from soak.analyze.chats import BUSY, IDLE, classify_samples, latency_quantiles, outcome_totals
from soak.analyze.load import BODY_PREFIX, RunData, TargetData, load_run
from soak.analyze.trend import (
    MIN_FIT_SAMPLES,
    Fit,
    Segment,
    find_segments,
    headline_segment,
    hours_to_limit,
    theil_sen,
    threads_limit,
)
from soak.criteria import FAIL, CheckResult, Criterion, parse_criteria
from soak.errors import RunDirError
from soak.rundir import iso
from soak.units import format_duration, parse_duration

SCHEMA_VERSION = 1
#: Family trends use fewer bins than the headline fits: there can be dozens of families.
_FAMILY_FIT_POINTS = 400
#: Summary counts: summary key -> outcome name in chats.jsonl.
_COUNTS = {
    "replies": "ok",
    "stalls": "stall",
    "errors": "error",
    "disconnects": "disconnect",
    "violations": "violation",
    "mismatches": "mismatch",
    "first_token_timeouts": "first_token_timeout",
}
_NO_PROCESS = (
    "no process samples were recorded for this target; check events.jsonl for "
    "target_lost or collector_error and that the collector can see the target's process"
)
_NO_REPLIES = "no ok replies were recorded, so there are no latencies; look at the outcome counts"


@dataclass
class Settings:
    """What the manifest's profile asks of the analysis."""

    warmup_s: float
    criteria: list[Criterion]
    loop_lag_field: str | None
    threads_limit: int


@dataclass
class TargetAnalysis:
    """One target's analysis: segments, fits (x = elapsed s), sample states, summary entry."""

    data: TargetData
    segments: list[Segment]
    headline: Segment | None
    fits: dict[str, Fit | None]
    family_fits: dict[str, Fit]
    cpu_states: np.ndarray
    summary: dict[str, Any]
    checks: list[CheckResult] = field(default_factory=list)


@dataclass
class Analysis:
    """A whole run analysed: the loaded data, each target's analysis and summary.json."""

    run: RunData
    settings: Settings
    targets: dict[str, TargetAnalysis]
    summary: dict[str, Any]


def summarize(run_path: Path | str) -> dict[str, Any]:
    """The summary.json content of a run directory (see docs/summary-json.md)."""
    return analyze_run(run_path).summary


def analyze_run(run_path: Path | str) -> Analysis:
    """Load and analyse a run directory; RunDirError when it cannot be read."""
    run = load_run(run_path)
    settings = read_settings(run)
    targets = {
        name: analyze_target(data, settings, run.started_at) for name, data in run.targets.items()
    }
    criteria_rows = []
    for name, target in targets.items():
        target.checks = [criterion.check(target.summary) for criterion in settings.criteria]
        failed = any(check.status == FAIL for check in target.checks)
        target.summary["verdict"] = "fail" if failed else "pass"
        criteria_rows += [{"target": name, **check.to_json()} for check in target.checks]
    verdict = "fail" if any(t.summary["verdict"] == "fail" for t in targets.values()) else "pass"
    manifest = run.manifest
    summary = {
        "schema_version": SCHEMA_VERSION,
        "soak_version": __version__,
        "recorded_with": manifest.get("soak_version"),
        "run_id": manifest.get("run_id") or run.path.name,
        "run_dir": str(run.path),
        "profile_name": manifest.get("profile_name"),
        "label": manifest.get("label"),
        "status": run.status,
        "started_at_iso": iso(run.started_at),
        "ended_at_iso": iso(run.ended_at),
        "duration_s": run.ended_at - run.started_at,
        "warmup_s": settings.warmup_s,
        "verdict": verdict,
        "criteria": criteria_rows,
        "targets": {name: target.summary for name, target in targets.items()},
    }
    return Analysis(run=run, settings=settings, targets=targets, summary=json_safe(summary))


def read_settings(run: RunData) -> Settings:
    """Warm-up, criteria and loop-lag field from the manifest's profile, with defaults."""
    profile = run.profile
    criteria = profile.get("criteria") if isinstance(profile.get("criteria"), dict) else {}
    collector = profile.get("collector") if isinstance(profile.get("collector"), dict) else {}
    try:
        warmup_s = parse_duration(criteria.get("warmup") or 0)
        checks = criteria.get("checks") or []
        parsed = parse_criteria(list(checks) if isinstance(checks, list | tuple) else [checks])
    except ValueError as exc:
        raise RunDirError(f"{run.path}: the profile in manifest.json has {exc}") from None
    lag_field = collector.get("loop_lag_field")
    return Settings(
        warmup_s=warmup_s,
        criteria=parsed,
        loop_lag_field=lag_field if isinstance(lag_field, str) and lag_field else None,
        threads_limit=threads_limit(),
    )


def analyze_target(data: TargetData, settings: Settings, started_at: float) -> TargetAnalysis:
    """Fits, idle CPU, chat totals and loop lag of one target; the summary entry."""
    process = data.process
    segments = find_segments(process)
    headline = headline_segment(segments)
    unavailable: dict[str, str] = {}
    summary: dict[str, Any] = {
        "verdict": None,
        "build": data.info.build,
        "url": data.info.url,
    }
    summary.update(_chat_summary(data, unavailable))

    fits: dict[str, Fit | None] = {}
    for column, key in (("threads", "threads"), ("rss_mb", "rss"), ("fds", "fds")):
        fits[column] = _segment_fit(process, headline, column, settings.warmup_s)
        start, end, peak = _levels(process, column, settings.warmup_s)
        mb = "_mb" if column == "rss_mb" else ""
        growth, ci = f"{key}_growth{mb}_per_hour", f"{key}_growth_ci{mb}_per_hour"
        summary.update(
            {
                f"{key}_start{mb}": start,
                f"{key}_end{mb}": end,
                f"{key}_max{mb}": peak,
                growth: fits[column].per_hour if fits[column] else None,
                ci: list(fits[column].ci_per_hour) if fits[column] else None,
            }
        )
        if end is None:
            reason = _missing_reason(process, column)
            unavailable.update(dict.fromkeys((f"{key}_end{mb}", f"{key}_max{mb}"), reason))
        if fits[column] is None:
            unavailable[growth] = _fit_reason(process, headline, column, settings.warmup_s)

    growth = summary["threads_growth_per_hour"]
    summary["threads_limit"] = settings.threads_limit
    summary["threads_hours_to_limit"] = hours_to_limit(
        summary["threads_end"], growth, settings.threads_limit
    )
    if summary["threads_hours_to_limit"] is None:
        unavailable["threads_hours_to_limit"] = unavailable.get(
            "threads_growth_per_hour", "threads are not growing after the warm-up"
        )
    family_fits = _family_fits(data, headline, settings.warmup_s)
    summary["threads_top_growing_family"] = _top_family(data, family_fits)

    cpu_states = classify_samples(process["t"].to_numpy(), data.chats)
    summary.update(_cpu_summary(process, cpu_states, unavailable))
    summary.update(_loop_lag_summary(data, settings, unavailable))
    summary["restarts"] = max(len(segments) - 1, 0)
    summary["segments"] = []
    warmup = settings.warmup_s
    for seg in segments:
        is_headline = seg is headline
        fit = fits["threads"] if is_headline else _segment_fit(process, seg, "threads", warmup)
        summary["segments"].append(
            {
                "pid": seg.pid,
                "start_s": seg.t_start,
                "end_s": seg.t_end,
                "samples": seg.stop - seg.start,
                "threads_growth_per_hour": fit.per_hour if fit else None,
                "headline": is_headline,
            }
        )
    summary["samples"] = len(process)
    summary["process_errors"] = data.process_errors
    summary["health_samples"] = len(data.health)
    failed = _health_failed(data.health)
    summary["health_errors"] = int(failed.sum())
    last_error = data.health.loc[failed, "error"].dropna()
    summary["health_last_error"] = str(last_error.iloc[-1]) if len(last_error) else None
    summary["anomaly_records"] = data.anomaly_records
    summary["unavailable"] = unavailable
    summary = json_safe(summary)
    return TargetAnalysis(
        data=data,
        segments=segments,
        headline=headline,
        fits=fits,
        family_fits=family_fits,
        cpu_states=cpu_states,
        summary=summary,
    )


def json_safe(value: Any) -> Any:
    """A copy with numpy scalars as Python numbers, tuples as lists and NaN/inf as None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _chat_summary(data: TargetData, unavailable: dict[str, str]) -> dict[str, Any]:
    chats = data.chats
    totals = outcome_totals(chats)
    summary: dict[str, Any] = {key: totals[outcome] for key, outcome in _COUNTS.items()}
    summary["turns"] = totals["turns"]
    summary["turns_started"] = totals["started"]
    summary["stall_rate"] = totals["stall"] / totals["turns"] if totals["turns"] else None
    if not totals["turns"]:
        unavailable["stall_rate"] = "no turns ended for this target; check that its load ran"
    for kind, column in (("ttft", "ttft_hist"), ("reply", "reply_hist")):
        quantiles = latency_quantiles(chats[column].tolist(), (0.5, 0.95, 0.99))
        for q, value in quantiles.items():
            key = f"{kind}_p{round(q * 100)}_s"
            summary[key] = value
            if value is None:
                unavailable[key] = _NO_REPLIES
    return summary


def _after_warmup(process: pd.DataFrame, segment: Segment, warmup_s: float) -> pd.DataFrame:
    rows = process.iloc[segment.start : segment.stop]
    return rows[rows["elapsed"] >= segment.t_start + warmup_s]


def _segment_fit(
    process: pd.DataFrame, segment: Segment | None, column: str, warmup_s: float
) -> Fit | None:
    """Theil–Sen fit of `column` over the segment's samples after the warm-up."""
    if segment is None:
        return None
    rows = _after_warmup(process, segment, warmup_s)
    values = rows[column].to_numpy(dtype=float)
    if np.count_nonzero(np.isfinite(values)) < MIN_FIT_SAMPLES:
        return None
    return theil_sen(rows["elapsed"].to_numpy(dtype=float), values)


def _fit_reason(
    process: pd.DataFrame, segment: Segment | None, column: str, warmup_s: float
) -> str:
    """Why `_segment_fit` gave no trend for `column`."""
    if process[column].notna().sum() == 0:
        return _missing_reason(process, column)
    rows = _after_warmup(process, segment, warmup_s) if segment else process.iloc[:0]
    usable = int(rows[column].notna().sum())
    if usable >= MIN_FIT_SAMPLES:
        return f"all {column} samples after the warm-up share one time stamp"
    return (
        f"only {usable} {column} samples after the {format_duration(warmup_s)} warm-up in the "
        f"longest process segment ({MIN_FIT_SAMPLES} needed); run longer or lower "
        "criteria.warmup"
    )


def _missing_reason(process: pd.DataFrame, column: str) -> str:
    """Why a process column has no values at all."""
    if process.empty:
        return _NO_PROCESS
    hint = " (open fds need permission to list /proc/PID/fd)" if column == "fds" else ""
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


def _cpu_summary(
    process: pd.DataFrame, states: np.ndarray, unavailable: dict[str, str]
) -> dict[str, Any]:
    cpu = process["cpu_percent"].to_numpy(dtype=float)
    summary: dict[str, Any] = {}
    for key, state in (("idle_cpu", IDLE), ("busy_cpu", BUSY)):
        values = cpu[(states == state) & np.isfinite(cpu)]
        summary[f"{key}_percent"] = float(np.median(values)) if len(values) else None
        summary[f"{key}_samples"] = len(values)
    if summary["idle_cpu_percent"] is None:
        unavailable["idle_cpu_percent"] = (
            "no process sample fell in an idle interval (no turn started, ended or in flight, "
            "after an interval that ended with none in flight); add an idle phase to the "
            "profile's load to measure idle CPU"
        )
    if summary["busy_cpu_percent"] is None:
        unavailable["busy_cpu_percent"] = "no process sample fell in an interval with chat traffic"
    return summary


def _loop_lag_summary(
    data: TargetData, settings: Settings, unavailable: dict[str, str]
) -> dict[str, Any]:
    """Loop-lag percentiles (s) from the configured /health field (ms) after the warm-up."""
    keys = ("loop_lag_p50_s", "loop_lag_p95_s", "loop_lag_p99_s", "loop_lag_max_s")
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
    if not len(values):
        unavailable.update(dict.fromkeys(keys, reason))
        return dict.fromkeys(keys)
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return dict(zip(keys, (p50, p95, p99, values.max()), strict=True))


def _health_failed(health: pd.DataFrame) -> pd.Series:
    """Per /health sample: True when the poll failed (an error or a non-2xx status)."""
    status = health["status"]
    return health["error"].notna() | status.isna() | (status < 200) | (status >= 300)
