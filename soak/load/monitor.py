"""Generator health: soak samples its own load process, so that a latency spike
can be told apart from soak itself being saturated.

A greenlet wakes every `LAG_TICK_S` and measures how late it woke (gevent loop
lag: every other greenlet ran that long without yielding); once per interval
the sampler turns that and the process's CPU and RSS into one generator.jsonl
record.
"""

from __future__ import annotations

import os
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import gevent
import psutil

#: How often the loop-lag probe wakes, in seconds.
LAG_TICK_S = 0.1
#: A probe this much later than due, with the process barely on the CPU meanwhile, means
#: the load process stood still (stopped, or starved of CPU), in seconds.
PAUSE_S = 1.0
#: CPU time per wall-clock second below which a late probe is standing still, not work.
STILL_CPU_SHARE = 0.5
#: Pauses remembered (the latest), enough for the longest turn's lifetime.
_PAUSES_KEPT = 256


class PauseLog:
    """When this load process stood still: stopped (SIGSTOP, a suspended VM or container)
    or starved of CPU by other processes, in time.monotonic() seconds.

    A turn that timed out while soak itself stood still says nothing about the target:
    the recorder asks `paused_s` for its lifetime (soak.load.record.BLAME_SHARE). A probe
    that was late because soak was busy (reading a flood of frames: CPU time went on)
    is saturation, not a stand-still: it may be the target's doing, and is only flagged.
    The span still in progress counts too: after a SIGCONT the turn's own timeout may
    fire before the probe has run.
    """

    def __init__(self, cpu_s: Callable[[], float] = time.process_time) -> None:
        self.spans: deque[tuple[float, float]] = deque(maxlen=_PAUSES_KEPT)
        self.cpu_s = cpu_s
        self.last_tick = time.monotonic()
        self.last_cpu = cpu_s()

    def tick(self, due: float, now: float) -> None:
        """The probe woke at `now`, due at `due`."""
        cpu = self.cpu_s()
        if now - due > PAUSE_S and self._still(now, cpu):
            self.spans.append((due, now))
        self.last_tick, self.last_cpu = now, cpu

    def paused_s(self, start: float, end: float) -> float:
        """Seconds of [start, end] during which the process stood still."""
        spans = [*self.spans]
        due = self.last_tick + LAG_TICK_S
        if end - due > PAUSE_S and self._still(end, self.cpu_s()):
            spans.append((due, end))
        return sum(max(0.0, min(stop, end) - max(begin, start)) for begin, stop in spans)

    def _still(self, now: float, cpu: float) -> bool:
        return cpu - self.last_cpu < STILL_CPU_SHARE * (now - self.last_tick)


def process_id() -> str:
    """This load process's id in generator.jsonl and anomalies: host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


class GeneratorMonitor:
    """CPU (percent of one core), RSS (MB) and gevent loop lag (s) of this process."""

    def __init__(
        self, worker: str | None, users: Callable[[], int], connections: Callable[[], int]
    ):
        self.worker = worker
        self.users = users
        self.connections = connections
        self.process = psutil.Process()
        self.process.cpu_percent(None)  # the first call only starts the measurement
        self.lag_max_s = 0.0
        self.sampled_at = time.monotonic()
        self.pauses = PauseLog()
        self._probe = gevent.spawn(self._measure_lag)

    def _measure_lag(self) -> None:
        while True:
            due = time.monotonic() + LAG_TICK_S
            gevent.sleep(LAG_TICK_S)
            now = time.monotonic()
            self.lag_max_s = max(self.lag_max_s, now - due)
            self.pauses.tick(due, now)

    def sample(self) -> dict[str, Any]:
        """One generator.jsonl record for the interval since the previous sample."""
        now = time.monotonic()
        record = {
            "t": time.time(),
            "interval_s": round(now - self.sampled_at, 3),
            "worker": self.worker,
            "cpu_percent": round(self.process.cpu_percent(None), 1),
            "rss_mb": round(self.process.memory_info().rss / 2**20, 1),
            "loop_lag_max_s": round(self.lag_max_s, 4),
            "users": self.users(),
            "connections": self.connections(),
        }
        self.lag_max_s = 0.0
        self.sampled_at = now
        return record

    def seconds_since_sample(self) -> float:
        return time.monotonic() - self.sampled_at

    def stop(self) -> None:
        self._probe.kill(block=False)
