"""The sampling loop: every interval, each target's process and its /health.

Each target gets two threads, one for process samples and one for /health,
so a hanging /health never delays the process samples. A target that dies
is looked for again every interval (by its pid, then by its listening port);
a new pid is recorded as a restart.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import psutil

from soak.collect.health import poll_health
from soak.collect.process import ProcessSampler, pid_listening_on, thread_families
from soak.rundir import EVENTS, HEALTH, PROCESS, THREADS, JsonlWriter, RunDir


class TargetWatch:
    """Finds and samples the process of one target, noticing restarts."""

    def __init__(self, target: dict[str, Any], run: RunDir, events: JsonlWriter) -> None:
        self.name = target["name"]
        self.url = target["url"]
        self.pid_hint: int | None = target.get("pid")
        self.events = events
        self.sampler: ProcessSampler | None = None
        self.lost_reported = False
        self.process_out = JsonlWriter(run.target_file(self.name, PROCESS))
        self.threads_out = JsonlWriter(run.target_file(self.name, THREADS))

    def sample(self) -> None:
        if self.sampler is None or not self.sampler.alive():
            self._find()
        if self.sampler is None:
            self.process_out.write({"t": time.time(), "pid": None, "error": "process not found"})
            return
        try:
            record = self.sampler.sample()
            families = thread_families(self.sampler.pid)
        except psutil.Error as exc:
            self.process_out.write(
                {"t": time.time(), "pid": self.sampler.pid, "error": type(exc).__name__}
            )
            self.sampler = None
            return
        self.process_out.write(record)
        self.threads_out.write({"t": record["t"], "pid": record["pid"], "families": families})

    def _find(self) -> None:
        previous = self.sampler
        candidates = [self.pid_hint, pid_listening_on(self.url)]
        for pid in candidates:
            if pid is None:
                continue
            try:
                sampler = ProcessSampler(pid)
            except psutil.Error:
                continue
            if previous is not None and (sampler.pid, sampler.create_time) == (
                previous.pid,
                previous.create_time,
            ):
                continue
            self.sampler = sampler
            self.lost_reported = False
            if previous is not None:
                self._event(
                    "target_restart",
                    f"{self.name}: new process pid {pid}",
                    old_pid=previous.pid,
                    new_pid=pid,
                )
            else:
                self._event("target_found", f"{self.name}: sampling pid {pid}", pid=pid)
            return
        self.sampler = None
        if not self.lost_reported:
            self.lost_reported = True
            hint = "" if previous else " (give --pid, or run soak on the target's machine)"
            self._event("target_lost", f"{self.name}: no process to sample{hint}")

    def _event(self, kind: str, message: str, **extra: Any) -> None:
        self.events.write(
            {
                "t": time.time(),
                "source": "collector",
                "kind": kind,
                "target": self.name,
                "message": message,
                **extra,
            }
        )

    def close(self) -> None:
        self.process_out.close()
        self.threads_out.close()


def run_collector(run_dir: Path, profile: dict[str, Any], stop: threading.Event) -> None:
    """Sample every target each collector.interval seconds until `stop` is set."""
    run = RunDir(run_dir)
    collector = profile["collector"]
    interval = collector["interval"]
    with JsonlWriter(run.file(EVENTS)) as events:
        watches = [TargetWatch(target, run, events) for target in profile["targets"]]
        threads = [
            threading.Thread(target=_every, args=(interval, stop, watch.sample), daemon=True)
            for watch in watches
        ]
        for target in profile["targets"]:
            if target.get("health"):
                writer = JsonlWriter(run.target_file(target["name"], HEALTH))
                poll = _health_poller(target["health"], collector["health_timeout"], writer)
                threads.append(
                    threading.Thread(target=_every, args=(interval, stop, poll), daemon=True)
                )
        for thread in threads:
            thread.start()
        stop.wait()
        for thread in threads:
            thread.join(timeout=collector["health_timeout"] + 1)
        for watch in watches:
            watch.close()


def _health_poller(url: str, timeout: float, writer: JsonlWriter):
    def poll() -> None:
        writer.write(poll_health(url, timeout))

    return poll


def _every(interval: float, stop: threading.Event, action) -> None:
    """Call `action` every `interval` seconds on a fixed schedule (no drift) until stopped."""
    next_at = time.monotonic()
    while not stop.is_set():
        action()
        next_at += interval
        delay = next_at - time.monotonic()
        if delay < 0:  # an action overran: skip the missed ticks instead of bursting
            next_at = time.monotonic()
            delay = 0
        stop.wait(delay)
