"""Findings: the sentences a person reads first, one per thing the run showed.

Built from a target's summary entry with the same sentence functions as the criteria
messages, so the numbers in the report's prose and in its checks always agree.
"""

from __future__ import annotations

from typing import Any

from soak.criteria import format_number, format_seconds, growth_sentence, series_view
from soak.units import format_duration

#: Idle CPU that at least doubles from the first to the last idle period, by at least this
#: many percentage points of one core, while growing with replies, is called the
#: orphaned-ticker signature.
TICKER_POINTS = 1.0
_OUTCOME_WORDS = (
    ("errors", "error frames"),
    ("first_token_timeouts", "first-token timeouts"),
    ("mismatches", "reply mismatches"),
)


def findings(summary: dict[str, Any]) -> list[str]:
    """The findings of one target, most important first."""
    out = [_threads(summary)]
    for key, mb, noun in (("rss", "_mb", "RSS"), ("fds", "", "open fds"), ("uss", "_mb", "USS")):
        trend = summary.get(f"{key}_trend")
        if key == "rss" or trend in ("growing", "plateau"):
            out.append(growth_sentence(series_view(summary, key, mb, noun)) + ".")
    out += _chats(summary)
    out += [_idle(summary), _drift(summary), _soak(summary), _restarts(summary)]
    out.append(_health(summary))
    return [sentence for sentence in out if sentence]


def _threads(summary: dict[str, Any]) -> str:
    if summary.get("threads_growth_per_hour") is None:
        return ""
    text = growth_sentence(series_view(summary, "threads", "", "threads"))
    family = summary.get("threads_top_growing_family")
    if family and summary.get("threads_trend") == "growing":
        text += (
            f"; fastest-growing thread family: {family['family']} "
            f"({format_number(family['growth_per_hour'])}/h, {format_number(family['end'])} "
            "at the end)"
        )
    return text + "."


def _stuck(summary: dict[str, Any]) -> list[str]:
    """Chats that stopped getting answers: which, since when, whether they came back."""
    stuck = summary.get("stuck_chats") or []
    never = [chat for chat in stuck if chat.get("recovered_s") is None]
    if not stuck:
        return []
    out = []
    if never:
        first = min(chat["since_s"] for chat in never)
        sessions = sorted({str(c["session"]) for c in never if c.get("session")})
        listed = ", ".join(sessions[:5]) + (", ..." if len(sessions) > 5 else "")
        of = summary.get("chats_max") or 0
        every = " (every chat: the server stopped answering anyone)" if len(never) >= of > 1 else ""
        out.append(
            f"{len(never):,} chat{'s' if len(never) != 1 else ''} stopped getting answers from "
            f"+{format_duration(first)} and never recovered{every}"
            + (f"; sessions {listed}" if listed else "")
            + "."
        )
    recovered = len(stuck) - len(never)
    if recovered:
        out.append(
            f"{recovered:,} chats got stuck (3 failed turns in a row or more), then recovered."
        )
    return out


def _chats(summary: dict[str, Any]) -> list[str]:
    turns = summary.get("turns")
    if turns is None:
        return []
    drift = summary.get("drift") or {}
    out = []
    stalls = summary.get("stalls") or 0
    share = f" ({format_number(100 * stalls / turns)}%)" if turns else ""
    text = f"{stalls:,} stalls in {turns:,} turns{share}"
    if stalls and drift.get("signals"):
        text += _stalls_vs_drift(stalls, drift)
    out.append(text + ".")
    disconnects = summary.get("disconnects") or 0
    if disconnects:
        codes = summary.get("disconnect_close_codes") or {}
        listed = ", ".join(f"{code} ×{count:,}" for code, count in sorted(codes.items()))
        suffix = f" (close codes of the kept records: {listed})" if listed else ""
        out.append(f"{disconnects:,} disconnects in {turns:,} turns{suffix}.")
    violations = summary.get("violations") or 0
    if violations:
        kinds = summary.get("violations_by_kind") or {}
        listed = ", ".join(f"{kind} ×{count:,}" for kind, count in sorted(kinds.items()))
        out.append(f"{violations:,} protocol violations{': ' + listed if listed else ''}.")
    out += _stuck(summary)
    for key, words in _OUTCOME_WORDS:
        count = summary.get(key) or 0
        if count:
            text = f"{count:,} {words} in {turns:,} turns"
            stale = (summary.get("mismatches_by_kind") or {}).get("stale_reply", 0)
            if key == "mismatches" and stale:
                text += f", {stale:,} of them answers to an earlier prompt of the same chat"
            out.append(text + ".")
    return out


def _stalls_vs_drift(stalls: int, drift: dict[str, Any]) -> str:
    """How many stalls came after a drift spike, against how much of the run did."""
    after = drift.get("stalls_after_drift") or 0
    window = format_seconds(drift.get("reply_timeout_s") or 0)
    if not after:
        return (
            "; none came after an event-loop drift spike, so look for lost or swallowed "
            "replies rather than a blocked loop"
        )
    text = f"; {after:,} of them within {window} after an event-loop drift spike"
    share = drift.get("near_drift_share") or 0.0
    if after / stalls <= min(1.0, 1.5 * share) or share > 0.5:
        text += (
            f", but {format_number(100 * share)}% of all intervals were, so the lag alone "
            "does not explain them"
        )
    return text


def _idle(summary: dict[str, Any]) -> str:
    early, late = summary.get("idle_cpu_early_percent"), summary.get("idle_cpu_late_percent")
    per_1k = summary.get("idle_cpu_growth_per_1k_replies")
    periods = summary.get("idle_periods") or []
    if early is not None and late is not None:
        replies = periods[-1]["replies_before"] if periods else 0
        text = (
            f"idle CPU {format_number(early)}% → {format_number(late)}% of one core from the "
            f"first to the last idle period (after {format_number(replies)} replies"
        )
        text += f", {format_number(per_1k)} points per 1,000 replies)" if per_1k else ")"
        if late - early >= max(TICKER_POINTS, early) and (per_1k or 0) > 0:
            text += (
                ": CPU with nothing to do climbs with finished replies, the signature of "
                "per-stream timers or tasks that outlive their stream (orphaned tickers)"
            )
        return text + "."
    idle = summary.get("idle_cpu_percent")
    if idle is None:
        return ""
    when = ""
    if periods:
        when = (
            f" in 1 idle period from +{format_duration(periods[-1]['start_s'])}, after "
            f"{format_number(periods[-1]['replies_before'])} replies"
        )
    return (
        f"idle CPU {format_number(idle)}% of one core (median of "
        f"{summary.get('idle_cpu_samples', 0):,} samples{when})."
    )


def _drift(summary: dict[str, Any]) -> str:
    drift = summary.get("drift") or {}
    signals = drift.get("signals") or []
    if not signals or drift.get("drift_max_s") is None:
        return ""
    lag_p99, lag_max = summary.get("loop_lag_p99_s"), summary.get("loop_lag_max_s")
    lag = (
        f"loop lag p99 {format_seconds(lag_p99)}, max {format_seconds(lag_max)}; "
        if lag_p99 is not None and lag_max is not None
        else ""
    )
    spikes, bins = drift.get("drift_spike_bins") or 0, drift.get("bins") or 0
    threshold = format_seconds(drift.get("spike_threshold_s") or 0)
    width = format_duration(drift.get("bin_s") or 0)
    if not spikes:
        return (
            f"event loop: {lag}no interval ({width} each) answered {threshold} or more late "
            f"(worst {format_seconds(drift['drift_max_s'])})."
        )
    text = (
        f"event loop: {lag}{spikes:,} of {bins:,} intervals ({width} each) answered "
        f"≥ {threshold} late"
    )
    latency = drift.get("latency_spike_bins") or 0
    if latency:
        text += (
            f"; {drift.get('latency_spikes_with_drift', 0):,} of {latency:,} TTFT spikes "
            "came with one"
        )
    return text + "."


def _soak(summary: dict[str, Any]) -> str:
    saturated = summary.get("soak_saturated_percent")
    excluded = summary.get("excluded_turns") or 0
    by_outcome = ", ".join(
        f"{n:,} {kind.replace('_', ' ')}"
        for kind, n in (summary.get("excluded_by_outcome") or {}).items()
    )
    stood_still = (
        f"{excluded:,} failed turn{'s' if excluded != 1 else ''} ({by_outcome}) fell while "
        "soak's own load process stood still (stopped, or its loop blocked, for a quarter of "
        "the turn or more) and are not counted against the target"
        if excluded
        else ""
    )
    if not saturated:
        return stood_still + "." if stood_still else ""
    drift = summary.get("drift") or {}
    text = (
        f"soak itself was saturated for {format_number(saturated)}% of the run (a load "
        "process over 90% CPU or with 0.5 s of loop lag)"
    )
    if stood_still:
        text += f"; {stood_still}"
    spikes = drift.get("latency_spikes_while_soak_saturated") or 0
    stalls = drift.get("stalls_while_soak_saturated") or 0
    if spikes or stalls:
        text += (
            f": {spikes:,} TTFT spikes and {stalls:,} stalls fell then and may be soak's, not "
            "the target's; use more load workers or fewer users per worker"
        )
    return text + "."


def _restarts(summary: dict[str, Any]) -> str:
    restarts = summary.get("restarts") or 0
    if not restarts:
        return ""
    return (
        f"the target restarted {restarts:,} time{'s' if restarts > 1 else ''} (new pid); "
        f"trends are fitted per process segment, the longest one carries the verdict."
    )


def _health(summary: dict[str, Any]) -> str:
    errors, samples = summary.get("health_errors") or 0, summary.get("health_samples") or 0
    if not errors:
        return ""
    last = summary.get("health_last_error")
    return f"/health failed {errors:,} of {samples:,} polls" + (
        f" (last: {last})." if last else "."
    )
