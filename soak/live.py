"""The live one-line status of a run, read from its run directory as it grows."""

from __future__ import annotations

import time
from collections import Counter

from soak.rundir import CHATS, PROCESS, JsonlTail, RunDir
from soak.units import format_duration


class LiveStatus:
    """Elapsed / planned, replies per second, and per target: ok, stalls, threads.

    Without chat records (soak collect), each target shows its process instead:
    threads, RSS and CPU.
    """

    def __init__(
        self, run: RunDir, targets: list[str], planned_s: float | None, started_at: float
    ) -> None:
        self.targets = targets
        self.planned_s = planned_s
        self.started_at = started_at
        self.chats = JsonlTail(run.file(CHATS))
        self.process = {name: JsonlTail(run.target_file(name, PROCESS)) for name in targets}
        self.totals = {name: Counter() for name in targets}
        self.latest: dict[str, dict] = {name: {} for name in targets}
        self.saw_chats = False
        self.rate = 0.0

    def line(self) -> str:
        latest: dict[str, dict] = {}
        for record in self.chats.new_records():
            target = record.get("target")
            if target in self.totals:
                self.totals[target].update(record.get("outcomes", {}))
                latest[target] = record
        if latest:
            self.saw_chats = True
            self.rate = sum(
                r.get("outcomes", {}).get("ok", 0) / max(r.get("interval_s", 1), 1e-6)
                for r in latest.values()
            )
        for name, tail in self.process.items():
            for record in tail.new_records():
                if record.get("threads") is not None:
                    self.latest[name] = record
        elapsed = time.time() - self.started_at
        planned = "until stopped" if self.planned_s is None else format_duration(self.planned_s)
        parts = [f"[{format_duration(elapsed)} / {planned}]"]
        if self.saw_chats:
            parts.append(f"{self.rate:.1f} replies/s")
        for name in self.targets:
            parts.append(f"{name}: {self._target(name)}")
        return " | ".join(parts)

    def _target(self, name: str) -> str:
        sample = self.latest[name]
        threads = sample.get("threads", "?")
        if self.saw_chats:
            totals = self.totals[name]
            bad = sum(count for outcome, count in totals.items() if outcome != "ok")
            return f"{totals['ok']} ok, {totals['stall']} stalls, {bad} not ok, {threads} threads"
        if not sample:
            return "no process sample yet"
        return (
            f"pid {sample.get('pid')}, {threads} threads, {sample.get('rss_mb', '?')} MB, "
            f"{sample.get('cpu_percent', '?')}% cpu"
        )
