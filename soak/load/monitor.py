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
from collections.abc import Callable
from typing import Any

import gevent
import psutil

#: How often the loop-lag probe wakes, in seconds.
LAG_TICK_S = 0.1


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
        self._probe = gevent.spawn(self._measure_lag)

    def _measure_lag(self) -> None:
        while True:
            before = time.monotonic()
            gevent.sleep(LAG_TICK_S)
            self.lag_max_s = max(self.lag_max_s, time.monotonic() - before - LAG_TICK_S)

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
