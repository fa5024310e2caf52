"""Per-interval chat aggregates: what one target's turns did in each interval.

Nothing is kept per request beyond the interval it ended in: a day at 500
replies/s costs one line per target per interval, plus at most
`MAX_ANOMALIES_PER_INTERVAL` anomaly records per target per interval.

In a distributed run each worker's recorder does not write: `take_delta`
hands its counts, histograms and anomalies since the last call to the master,
whose recorder `merge_delta`s them into the interval in progress and alone
writes the run directory.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from soak.formatting import plural
from soak.histogram import Histogram
from soak.protocols.turn import (
    DISCONNECT,
    FIRST_TOKEN_TIMEOUT,
    ID_LIMIT,
    MISMATCH,
    OK,
    OUTCOMES,
    STALL,
    TEXT_LIMIT,
    VIOLATION,
    TurnResult,
    clip,
)

MAX_ANOMALIES_PER_INTERVAL = 20
#: Failed turns in a row after which a chat is stuck: a `chat_stuck` record (outside the
#: per-interval cap: at most one per chat until it recovers, `chat_recovered`).
STUCK_TURNS = 3
#: Worker gauges (in flight, connections) older than this are ignored, in seconds.
GAUGE_MAX_AGE_S = 15.0
#: Outcomes that a load process standing still causes by itself: its own timeouts fire
#: before it reads what arrived meanwhile. (A hang-up is the server's act, so it counts.)
PAUSE_OUTCOMES = (STALL, FIRST_TOKEN_TIMEOUT)
#: Share of a failed turn's lifetime during which soak itself stood still that makes the
#: failure soak's: excluded from the target's counts (`excluded` in chats.jsonl).
BLAME_SHARE = 0.25
#: When in a turn's life an anomaly happened.
DURING_TURN, DURING_CONNECT, DURING_IDLE = "turn", "connect", "idle"

#: Sums of the token counts servers reported (OpenAI `usage`), and the turns that did.
_USAGE = ("usage_prompt_tokens", "usage_completion_tokens", "usage_turns")
_HISTOGRAMS = ("ttft", "reply", "ping", "connect", "itl", "tpot")
_COUNTERS = ("started", "tokens", "frames", "connects", "pings", "pings_lost", *_USAGE)


@dataclass
class IntervalStats:
    """Counters of one target for the interval in progress (latencies in seconds)."""

    started: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    violations: Counter[str] = field(default_factory=Counter)
    mismatches: Counter[str] = field(default_factory=Counter)
    #: Failed turns during which soak itself stood still, by outcome (not in `outcomes`).
    excluded: Counter[str] = field(default_factory=Counter)
    tokens: int = 0
    frames: int = 0
    usage_prompt_tokens: int = 0
    usage_completion_tokens: int = 0
    usage_turns: int = 0
    connects: int = 0
    pings: int = 0
    pings_lost: int = 0
    gap_max_s: float = 0.0
    ttft: Histogram = field(default_factory=Histogram)
    reply: Histogram = field(default_factory=Histogram)
    ping: Histogram = field(default_factory=Histogram)
    connect: Histogram = field(default_factory=Histogram)
    #: Inter-token latency (every gap between token frames) and time per output token
    #: (one per turn) of the ok turns.
    itl: Histogram = field(default_factory=Histogram)
    tpot: Histogram = field(default_factory=Histogram)
    anomalies_kept: int = 0
    anomalies_dropped: int = 0

    def to_delta(self) -> dict[str, Any]:
        """Plain data for a worker -> master report."""
        delta: dict[str, Any] = {name: getattr(self, name) for name in _COUNTERS}
        delta["outcomes"] = dict(self.outcomes)
        delta["violations"] = dict(self.violations)
        delta["mismatches"] = dict(self.mismatches)
        delta["excluded"] = dict(self.excluded)
        delta["gap_max_s"] = self.gap_max_s
        delta["anomalies_dropped"] = self.anomalies_dropped
        for name in _HISTOGRAMS:
            hist: Histogram = getattr(self, name)
            delta[name] = {"counts": hist.to_json(), "max_s": hist.max_s}
        return delta

    def merge(self, delta: dict[str, Any]) -> None:
        """Add a worker's `to_delta` into these counters."""
        for name in _COUNTERS:
            setattr(self, name, getattr(self, name) + int(delta.get(name, 0)))
        self.outcomes.update(delta.get("outcomes", {}))
        self.violations.update(delta.get("violations", {}))
        self.mismatches.update(delta.get("mismatches", {}))
        self.excluded.update(delta.get("excluded", {}))
        self.gap_max_s = max(self.gap_max_s, float(delta.get("gap_max_s", 0.0)))
        self.anomalies_dropped += int(delta.get("anomalies_dropped", 0))
        for name in _HISTOGRAMS:
            part = delta.get(name) or {}
            hist: Histogram = getattr(self, name)
            hist.merge(part.get("counts", {}))
            hist.max_s = max(hist.max_s, float(part.get("max_s", 0.0)))


class PauseSource(Protocol):
    """Seconds of a monotonic-clock span during which the load process stood still."""

    def paused_s(self, start: float, end: float) -> float: ...


def _round(value: float) -> float:
    return round(value, 4)


class ChatRecorder:
    """Collects turn results from every user and writes them once per interval.

    `write_chats`/`write_anomaly` receive finished records (the run directory's
    writers, or nothing on a worker: then anomalies wait in `outbox`).
    `worker` is this load process's id in a distributed run (None when alone).
    """

    def __init__(
        self,
        targets: list[str],
        write_chats: Callable[[dict[str, Any]], None] | None,
        write_anomaly: Callable[[dict[str, Any]], None] | None,
        worker: str | None = None,
    ) -> None:
        self.write_chats = write_chats
        self.write_anomaly = write_anomaly
        self.worker = worker
        self.targets = list(targets)
        self.current = {name: IntervalStats() for name in targets}
        self.in_flight = dict.fromkeys(targets, 0)
        self.connections = dict.fromkeys(targets, 0)
        self.totals: Counter[str] = Counter()
        self.interval_started = time.time()
        self.outbox: list[dict[str, Any]] = []
        self.write_event: Callable[[dict[str, Any]], None] | None = None
        self.notices: list[dict[str, Any]] = []  # on a worker: events for the master
        self.noticed: set[tuple[str, str]] = set()
        #: (target, chat) -> [failed turns in a row, since (Unix s), session, reported]
        self.streaks: dict[tuple[str, int], list[Any]] = {}
        self.listeners: list[Callable[[str, TurnResult], None]] = []
        #: When this load process stood still (soak.load.monitor.PauseLog), once known.
        self.pauses: PauseSource | None = None
        self._dropped_carry = dict.fromkeys(targets, 0)
        self._worker_gauges: dict[str, tuple[float, dict[str, list[int]]]] = {}

    # -- called by users -----------------------------------------------------
    def turn_started(self, target: str) -> None:
        self.current[target].started += 1
        self.in_flight[target] += 1

    def turn_abandoned(self, target: str) -> None:
        """A turn cut short by soak itself (users stopping): not counted as an outcome."""
        self.in_flight[target] -= 1

    def turn_finished(
        self,
        target: str,
        result: TurnResult,
        session: str | None,
        during: str = DURING_TURN,
        chat: int | None = None,
    ) -> None:
        """Count one ended turn; a non-ok one also leaves an anomaly record. `chat`: the
        user it belongs to, whose failures in a row make it stuck (see STUCK_TURNS)."""
        self.in_flight[target] -= 1
        stats = self.current[target]
        paused = self._paused_during(result)
        if paused is not None:
            stats.excluded[result.outcome] += 1
            self.totals["excluded"] += 1
            record = _anomaly_record(target, result, session, during, self.worker)
            record["excluded"] = (
                f"soak's load process stood still {paused:.1f} s of this turn's "
                f"{result.elapsed_s:.1f} s: not counted against the target"
            )
            self._anomaly(target, record)
            return
        if chat is not None:
            self._streak(target, chat, session, result)
        stats.outcomes[result.outcome] += 1
        stats.tokens += result.tokens
        stats.frames += result.frames
        if result.usage_completion_tokens is not None or result.usage_prompt_tokens is not None:
            stats.usage_turns += 1
            stats.usage_prompt_tokens += result.usage_prompt_tokens or 0
            stats.usage_completion_tokens += result.usage_completion_tokens or 0
        stats.gap_max_s = max(stats.gap_max_s, result.longest_gap_s)
        self.totals[result.outcome] += 1
        for listener in self.listeners:
            listener(target, result)
        if result.outcome == OK:
            if result.ttft_s is not None:
                stats.ttft.add(result.ttft_s)
            if result.reply_s is not None:
                stats.reply.add(result.reply_s)
            for gap in result.token_gaps_s:
                stats.itl.add(gap)
            if (tpot := result.tpot_s) is not None:
                stats.tpot.add(tpot)
            return
        if result.outcome == VIOLATION and result.subkind:
            stats.violations[result.subkind] += 1
        elif result.outcome == MISMATCH and result.subkind:
            stats.mismatches[result.subkind] += 1
        self._anomaly(target, _anomaly_record(target, result, session, during, self.worker))

    def _paused_during(self, result: TurnResult) -> float | None:
        """Seconds soak stood still during a failed turn that make it soak's failure
        (BLAME_SHARE of its lifetime or more), else None."""
        if self.pauses is None or result.outcome not in PAUSE_OUTCOMES or result.elapsed_s <= 0:
            return None
        now = time.monotonic()
        paused = self.pauses.paused_s(now - result.elapsed_s, now)
        return paused if paused >= BLAME_SHARE * result.elapsed_s else None

    def lost(
        self,
        target: str,
        result: TurnResult,
        session: str | None,
        during: str,
        chat: int | None = None,
    ) -> None:
        """A connect that failed, or a connection that closed between turns: a disconnect
        outcome of its own (it costs the user a turn)."""
        self.turn_started(target)
        self.turn_finished(target, result, session, during, chat)

    def _streak(self, target: str, chat: int, session: str | None, result: TurnResult) -> None:
        """Follow one chat's failures in a row: stuck at STUCK_TURNS, recovered at an ok."""
        key = (target, chat)
        streak = self.streaks.get(key)
        if result.outcome == OK:
            if streak and streak[3]:
                self._chat_record(target, chat, "chat_recovered", streak, session)
            self.streaks.pop(key, None)
            return
        if streak is None:
            streak = self.streaks[key] = [0, time.time(), session, False]
        streak[0] += 1
        streak[2] = session or streak[2]
        if streak[0] >= STUCK_TURNS and not streak[3]:
            streak[3] = True
            self._chat_record(target, chat, "chat_stuck", streak, session)

    def _chat_record(
        self, target: str, chat: int, kind: str, streak: list[Any], session: str | None
    ) -> None:
        failed, since = streak[0], streak[1]
        what = "stuck: its last" if kind == "chat_stuck" else "recovered after"
        record = {
            "t": time.time(),
            "target": target,
            "kind": kind,
            "chat": chat,
            "session": clip(session or streak[2], ID_LIMIT),
            "since": round(since, 3),
            "failed_turns": failed,
            "detail": f"chat {what} {plural(failed, 'turn')} failed in a row since "
            f"{time.strftime('%H:%M:%S', time.gmtime(since))} UTC",
        }
        if self.worker is not None:
            record["worker"] = self.worker
        if self.write_anomaly is None:
            self.outbox.append(record)
        else:
            self.write_anomaly(record)

    def stuck(self, target: str) -> int:
        """Chats of `target` stuck now (STUCK_TURNS failed turns in a row, no ok since)."""
        return sum(1 for (name, _), s in self.streaks.items() if name == target and s[3])

    def notice(self, target: str, kind: str, message: str) -> None:
        """A feature the target lacks (no ping, no seq): one event per target and kind."""
        record = {"t": time.time(), "source": "load", "kind": kind, "target": target}
        self._notice({**record, "message": clip(f"{target}: {message}", TEXT_LIMIT)})

    def _notice(self, record: dict[str, Any]) -> None:
        key = (str(record.get("target")), str(record.get("kind")))
        if key in self.noticed:
            return
        self.noticed.add(key)
        if self.write_event is None:
            self.notices.append(record)
        else:
            self.write_event(record)

    def connected(self, target: str, seconds: float) -> None:
        """A connection (and its handshake) opened in `seconds`."""
        stats = self.current[target]
        stats.connects += 1
        stats.connect.add(seconds)
        self.connections[target] += 1

    def disconnected(self, target: str) -> None:
        self.connections[target] -= 1

    def pinged(self, target: str, seconds: float | None) -> None:
        """One ping round trip in seconds; None when the pong never came."""
        stats = self.current[target]
        stats.pings += 1
        if seconds is None:
            stats.pings_lost += 1
        else:
            stats.ping.add(seconds)

    # -- anomalies, bounded per interval ----------------------------------------
    def _anomaly(self, target: str, record: dict[str, Any]) -> None:
        stats = self.current[target]
        if stats.anomalies_kept >= MAX_ANOMALIES_PER_INTERVAL:
            stats.anomalies_dropped += 1
            return
        stats.anomalies_kept += 1
        if self._dropped_carry[target]:
            record["dropped_before"] = self._dropped_carry[target]
            self._dropped_carry[target] = 0
        if self.write_anomaly is None:
            self.outbox.append(record)
        else:
            self.write_anomaly(record)

    # -- distributed: worker side ------------------------------------------------
    def take_delta(self) -> dict[str, Any]:
        """Everything since the last call, for the master; resets the interval."""
        delta = {
            "worker": self.worker,
            "targets": {name: stats.to_delta() for name, stats in self.current.items()},
            "gauges": {
                name: [self.in_flight[name], self.connections[name], self.stuck(name)]
                for name in self.targets
            },
            "anomalies": self.outbox,
            "notices": self.notices,
            "totals": dict(self.totals),
        }
        self.current = {name: IntervalStats() for name in self.targets}
        self.outbox, self.notices = [], []
        return delta

    # -- distributed: master side ------------------------------------------------
    def merge_delta(self, delta: dict[str, Any], now: float | None = None) -> None:
        """Add one worker report to the interval in progress (its anomalies are written now,
        under this recorder's per-interval cap)."""
        worker = str(delta.get("worker"))
        for name, part in delta.get("targets", {}).items():
            if name in self.current:
                self.current[name].merge(part)
                self.totals.update(part.get("outcomes", {}))
                self.totals["excluded"] += sum(part.get("excluded", {}).values())
        gauges = delta.get("gauges") or {}
        self._worker_gauges[worker] = (now or time.time(), gauges)
        for record in delta.get("anomalies", []):
            if record.get("target") in self.current:
                self._anomaly(record["target"], record)
        for record in delta.get("notices", []):
            if record.get("target") in self.current:
                self._notice(record)

    def forget_worker(self, worker: str) -> None:
        """A worker that finished: its gauges no longer count."""
        self._worker_gauges.pop(worker, None)

    def _gauges(self, target: str, now: float) -> tuple[int, int, int]:
        """(turns in flight, open connections, stuck chats) here and on live workers."""
        in_flight, connections = self.in_flight[target], self.connections[target]
        stuck = self.stuck(target)
        for at, gauges in self._worker_gauges.values():
            if now - at <= GAUGE_MAX_AGE_S and target in gauges:
                values = [*gauges[target], 0, 0, 0]
                in_flight += int(values[0])
                connections += int(values[1])
                stuck += int(values[2])
        return in_flight, connections, stuck

    # -- called by the flusher -------------------------------------------------
    def flush(self, now: float | None = None) -> None:
        """Write one aggregate per target for the interval that just ended, and reset."""
        now = now or time.time()
        interval = max(now - self.interval_started, 1e-6)
        for target, stats in self.current.items():
            self._dropped_carry[target] += stats.anomalies_dropped
            in_flight, connections, stuck = self._gauges(target, now)
            if self.write_chats is not None:
                self.write_chats(
                    {
                        "t": now,
                        "interval_s": round(interval, 3),
                        "target": target,
                        "started": stats.started,
                        "turns": sum(stats.outcomes.values()),
                        "in_flight": in_flight,
                        "connections": connections,
                        "stuck": stuck,
                        "connects": stats.connects,
                        "outcomes": {name: stats.outcomes.get(name, 0) for name in OUTCOMES},
                        "violations": dict(stats.violations),
                        "mismatches": dict(stats.mismatches),
                        "excluded": dict(stats.excluded),
                        "tokens": stats.tokens,
                        "frames": stats.frames,
                        **{name: getattr(stats, name) for name in _USAGE},
                        "ttft_hist": stats.ttft.to_json(),
                        "reply_hist": stats.reply.to_json(),
                        "ping_hist": stats.ping.to_json(),
                        "connect_hist": stats.connect.to_json(),
                        "itl_hist": stats.itl.to_json(),
                        "tpot_hist": stats.tpot.to_json(),
                        "ttft_max_s": _round(stats.ttft.max_s),
                        "reply_max_s": _round(stats.reply.max_s),
                        "ping_max_s": _round(stats.ping.max_s),
                        "connect_max_s": _round(stats.connect.max_s),
                        "gap_max_s": _round(stats.gap_max_s),
                        "pings": stats.pings,
                        "pings_lost": stats.pings_lost,
                        "anomalies_dropped": stats.anomalies_dropped,
                    }
                )
            self.current[target] = IntervalStats()
        self.interval_started = now


def _anomaly_record(
    target: str, result: TurnResult, session: str | None, during: str, worker: str | None
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "t": time.time(),
        "target": target,
        "kind": result.outcome,
        "session": clip(session, ID_LIMIT),
        "request_id": clip(result.request_id, ID_LIMIT),
        "during": during,
        "turn_elapsed_s": round(result.elapsed_s, 3),
        "ttft_s": None if result.ttft_s is None else round(result.ttft_s, 4),
        "tokens": result.tokens,
        "frames": result.frames,
        "detail": clip(result.detail, TEXT_LIMIT),
        "last_frames": result.frame_excerpts(),
    }
    if result.outcome in (VIOLATION, MISMATCH):
        record["subkind"] = result.subkind
    if result.outcome == DISCONNECT:
        record["close_code"] = result.close_code
        record["close_reason"] = clip(result.close_reason, TEXT_LIMIT)
    if worker is not None:
        record["worker"] = worker
    return record
