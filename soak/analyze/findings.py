"""Findings: the sentences a person reads first, one per thing the run showed.

Built from a target's summary entry with the same sentence functions as the criteria
messages, so the numbers in the report's prose and in its checks always agree.
"""

from __future__ import annotations

from soak.formatting import format_number, format_seconds, growth_sentence, plural
from soak.model import DriftSummary, SeriesSummary, TargetSummary
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


def findings(summary: TargetSummary) -> list[str]:
    """The findings of one target, most important first."""
    out = [_threads(summary)]
    for series in (summary.rss, summary.fds, summary.uss):
        if series.name == "rss" or series.trend in ("growing", "plateau"):
            out.append(_growth(summary, series) + ".")
    out += _chats(summary)
    out += [_idle(summary), _drift(summary), _soak(summary), _restarts(summary)]
    out.append(_health(summary))
    return [sentence for sentence in out if sentence]


def _growth(summary: TargetSummary, series: SeriesSummary) -> str:
    return growth_sentence(series, summary.restarts, summary.replies_per_day)


def _threads(summary: TargetSummary) -> str:
    if summary.threads.growth_per_hour is None:
        return ""
    text = _growth(summary, summary.threads)
    family = summary.top_growing_family
    if family and summary.threads.trend == "growing":
        text += (
            f"; fastest-growing thread family: {family['family']} "
            f"({format_number(family['growth_per_hour'])}/h, {format_number(family['end'])} "
            "at the end)"
        )
    return text + "."


def _stuck(summary: TargetSummary) -> list[str]:
    """Chats that stopped getting answers: which, since when, whether they came back."""
    stuck = summary.chats.stuck_chats
    never = [chat for chat in stuck if chat.get("recovered_s") is None]
    if not stuck:
        return []
    out = []
    if never:
        first = min(chat["since_s"] for chat in never)
        sessions = sorted({str(c["session"]) for c in never if c.get("session")})
        listed = ", ".join(sessions[:5]) + (", ..." if len(sessions) > 5 else "")
        of = summary.chats.chats_max
        every = " (every chat: the server stopped answering anyone)" if len(never) >= of > 1 else ""
        out.append(
            f"{plural(len(never), 'chat')} stopped getting answers from "
            f"+{format_duration(first)} and never recovered{every}"
            + (f"; sessions {listed}" if listed else "")
            + "."
        )
    recovered = len(stuck) - len(never)
    if recovered:
        out.append(
            f"{plural(recovered, 'chat')} got stuck (3 failed turns in a row or more), then "
            "recovered."
        )
    return out


def _chats(summary: TargetSummary) -> list[str]:
    chats, drift = summary.chats, summary.drift
    turns = chats.turns
    if turns is None:
        return []
    out = []
    stalls = chats.count("stalls")
    share = f" ({format_number(100 * stalls / turns)}%)" if turns else ""
    text = f"{plural(stalls, 'stall')} in {plural(turns, 'turn')}{share}"
    if stalls and drift.signals:
        text += _stalls_vs_drift(stalls, drift)
    out.append(text + ".")
    disconnects = chats.count("disconnects")
    if disconnects:
        codes = chats.disconnect_close_codes
        listed = ", ".join(f"{code} ×{count:,}" for code, count in sorted(codes.items()))
        suffix = f" (close codes of the kept records: {listed})" if listed else ""
        out.append(f"{plural(disconnects, 'disconnect')} in {plural(turns, 'turn')}{suffix}.")
    violations = chats.count("violations")
    if violations:
        kinds = chats.violations_by_kind
        listed = ", ".join(f"{kind} ×{count:,}" for kind, count in sorted(kinds.items()))
        said = plural(violations, "protocol violation")
        out.append(f"{said}{': ' + listed if listed else ''}.")
    out += _stuck(summary)
    for key, words in _OUTCOME_WORDS:
        count = chats.count(key)
        if count:
            text = f"{count:,} {words} in {plural(turns, 'turn')}"
            stale = chats.mismatches_by_kind.get("stale_reply", 0)
            if key == "mismatches" and stale:
                text += f", {stale:,} of them answers to an earlier prompt of the same chat"
            out.append(text + ".")
    return out


def _stalls_vs_drift(stalls: int, drift: DriftSummary) -> str:
    """How many stalls came after a drift spike, against how much of the run did."""
    after = drift.stalls_after_drift
    window = format_seconds(drift.reply_timeout_s or 0)
    if not after:
        return (
            "; none came after an event-loop drift spike, so look for lost or swallowed "
            "replies rather than a blocked loop"
        )
    text = f"; {after:,} of them within {window} after an event-loop drift spike"
    share = drift.near_drift_share or 0.0
    if after / stalls <= min(1.0, 1.5 * share) or share > 0.5:
        text += (
            f", but {format_number(100 * share)}% of all intervals were, so the lag alone "
            "does not explain them"
        )
    return text


def _idle(summary: TargetSummary) -> str:
    cpu = summary.cpu
    early, late = cpu.idle_early_percent, cpu.idle_late_percent
    per_1k = cpu.idle_growth_per_1k_replies
    periods = cpu.idle_periods
    if early is not None and late is not None:
        replies = periods[-1]["replies_before"] if periods else 0
        text = (
            f"idle CPU {format_number(early)}% → {format_number(late)}% of one core from the "
            f"first to the last idle period (after {plural(int(replies), 'reply', 'replies')}"
        )
        text += f", {format_number(per_1k)} points per 1,000 replies)" if per_1k else ")"
        if late - early >= max(TICKER_POINTS, early) and (per_1k or 0) > 0:
            text += (
                ": CPU with nothing to do climbs with finished replies, the signature of "
                "per-stream timers or tasks that outlive their stream (orphaned tickers)"
            )
        return text + "."
    idle = cpu.idle_percent
    if idle is None:
        return ""
    when = ""
    if periods:
        when = (
            f" in 1 idle period from +{format_duration(periods[-1]['start_s'])}, after "
            f"{plural(int(periods[-1]['replies_before']), 'reply', 'replies')}"
        )
    return (
        f"idle CPU {format_number(idle)}% of one core (median of "
        f"{plural(cpu.idle_samples, 'sample')}{when})."
    )


def _drift(summary: TargetSummary) -> str:
    drift = summary.drift
    if not drift.signals or drift.drift_max_s is None:
        return ""
    lag_p99, lag_max = summary.loop_lag.p99, summary.loop_lag.max
    lag = (
        f"loop lag p99 {format_seconds(lag_p99)}, max {format_seconds(lag_max)}; "
        if lag_p99 is not None and lag_max is not None
        else ""
    )
    spikes, bins = drift.drift_spike_bins, drift.bins
    threshold = format_seconds(drift.spike_threshold_s or 0)
    width = format_duration(drift.bin_s or 0)
    if not spikes:
        return (
            f"event loop: {lag}no interval ({width} each) answered {threshold} or more late "
            f"(worst {format_seconds(drift.drift_max_s)})."
        )
    text = (
        f"event loop: {lag}{spikes:,} of {plural(bins, 'interval')} ({width} each) answered "
        f"≥ {threshold} late"
    )
    latency = drift.latency_spike_bins
    if latency:
        text += f"; {drift.latency_spikes_with_drift:,} of {latency:,} TTFT spikes came with one"
    return text + "."


def _soak(summary: TargetSummary) -> str:
    saturated = summary.soak_saturated_percent
    excluded = summary.chats.excluded_turns
    by_outcome = ", ".join(
        f"{n:,} {kind.replace('_', ' ')}" for kind, n in summary.chats.excluded_by_outcome.items()
    )
    stood_still = (
        f"{plural(excluded, 'failed turn')} ({by_outcome}) fell while "
        "soak's own load process stood still (stopped, or its loop blocked, for a quarter of "
        "the turn or more) and are not counted against the target"
        if excluded
        else ""
    )
    if not saturated:
        return stood_still + "." if stood_still else ""
    drift = summary.drift
    text = (
        f"soak itself was saturated for {format_number(saturated)}% of the run (a load "
        "process over 90% CPU or with 0.5 s of loop lag)"
    )
    if stood_still:
        text += f"; {stood_still}"
    spikes = drift.latency_spikes_while_soak_saturated
    stalls = drift.stalls_while_soak_saturated
    if spikes or stalls:
        text += (
            f": {plural(spikes, 'TTFT spike')} and {plural(stalls, 'stall')} fell then and may "
            "be soak's, not the target's; use more load workers or fewer users per worker"
        )
    return text + "."


def _restarts(summary: TargetSummary) -> str:
    restarts = summary.restarts
    if not restarts:
        return ""
    return (
        f"the target restarted {plural(restarts, 'time')} (new pid or start time); "
        f"trends are fitted per process segment, the longest one carries the verdict."
    )


def _health(summary: TargetSummary) -> str:
    errors, samples = summary.health.errors, summary.health.samples
    if not errors:
        return ""
    last = summary.health.last_error
    return f"/health failed {errors:,} of {samples:,} polls" + (
        f" (last: {last})." if last else "."
    )
