"""Per-interval chat aggregates: what one target's turns did in each interval.

Nothing is kept per request beyond the interval it ended in: a day at 500
replies/s costs one line per target per interval, plus at most
`MAX_ANOMALIES_PER_INTERVAL` anomaly records per target per interval.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from soak.histogram import Histogram
from soak.protocols.turn import OK, OUTCOMES, TurnResult
from soak.rundir import JsonlWriter

MAX_ANOMALIES_PER_INTERVAL = 20


@dataclass
class IntervalStats:
    """Counters of one target for the interval in progress."""

    started: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    tokens: int = 0
    frames: int = 0
    connects: int = 0
    ttft: Histogram = field(default_factory=Histogram)
    reply: Histogram = field(default_factory=Histogram)
    anomalies_kept: int = 0
    anomalies_dropped: int = 0


class ChatRecorder:
    """Collects turn results from every user and writes them once per interval."""

    def __init__(self, targets: list[str], chats: JsonlWriter, anomalies: JsonlWriter) -> None:
        self.chats = chats
        self.anomalies = anomalies
        self.current = {name: IntervalStats() for name in targets}
        self.in_flight = dict.fromkeys(targets, 0)
        self.connections = dict.fromkeys(targets, 0)
        self.totals: Counter[str] = Counter()
        self.interval_started = time.time()
        self._dropped_carry = dict.fromkeys(targets, 0)

    # -- called by users -----------------------------------------------------
    def turn_started(self, target: str) -> None:
        self.current[target].started += 1
        self.in_flight[target] += 1

    def turn_abandoned(self, target: str) -> None:
        """A turn cut short by soak itself (users stopping): not counted as an outcome."""
        self.in_flight[target] -= 1

    def turn_finished(self, target: str, result: TurnResult, session: str | None) -> None:
        self.in_flight[target] -= 1
        stats = self.current[target]
        stats.outcomes[result.outcome] += 1
        stats.tokens += result.tokens
        stats.frames += result.frames
        self.totals[result.outcome] += 1
        if result.outcome == OK:
            if result.ttft_s is not None:
                stats.ttft.add(result.ttft_s)
            if result.reply_s is not None:
                stats.reply.add(result.reply_s)
            return
        if stats.anomalies_kept >= MAX_ANOMALIES_PER_INTERVAL:
            stats.anomalies_dropped += 1
            return
        stats.anomalies_kept += 1
        record: dict[str, Any] = {
            "t": time.time(),
            "target": target,
            "kind": result.outcome,
            "session": session,
            "request_id": result.request_id,
            "turn_elapsed_s": round(result.elapsed_s, 3),
            "tokens": result.tokens,
            "detail": result.detail,
            "last_frames": list(result.last_frames),
        }
        if self._dropped_carry[target]:
            record["dropped_before"] = self._dropped_carry[target]
            self._dropped_carry[target] = 0
        self.anomalies.write(record)

    def connected(self, target: str) -> None:
        self.current[target].connects += 1
        self.connections[target] += 1

    def disconnected(self, target: str) -> None:
        self.connections[target] -= 1

    # -- called by the flusher -------------------------------------------------
    def flush(self, now: float | None = None) -> None:
        """Write one aggregate per target for the interval that just ended, and reset."""
        now = now or time.time()
        interval = max(now - self.interval_started, 1e-6)
        for target, stats in self.current.items():
            self._dropped_carry[target] += stats.anomalies_dropped
            self.chats.write(
                {
                    "t": now,
                    "interval_s": round(interval, 3),
                    "target": target,
                    "started": stats.started,
                    "turns": sum(stats.outcomes.values()),
                    "in_flight": self.in_flight[target],
                    "connections": self.connections[target],
                    "connects": stats.connects,
                    "outcomes": {name: stats.outcomes.get(name, 0) for name in OUTCOMES},
                    "tokens": stats.tokens,
                    "frames": stats.frames,
                    "ttft_hist": stats.ttft.to_json(),
                    "reply_hist": stats.reply.to_json(),
                    "ttft_max_s": round(stats.ttft.max_s, 4),
                    "reply_max_s": round(stats.reply.max_s, 4),
                    "anomalies_dropped": stats.anomalies_dropped,
                }
            )
            self.current[target] = IntervalStats()
        self.interval_started = now
