"""The live one-line status of a run, read from its run directory as it grows."""

from __future__ import annotations

import time
from collections import Counter

from soak.rundir import CHATS, PROCESS, JsonlTail, RunDir
from soak.units import format_duration


class LiveStatus:
    """Elapsed / planned, replies per second, and per target: ok, stalls, threads."""

    def __init__(self, run: RunDir, targets: list[str], planned_s: float, started_at: float):
        self.targets = targets
        self.planned_s = planned_s
        self.started_at = started_at
        self.chats = JsonlTail(run.file(CHATS))
        self.process = {name: JsonlTail(run.target_file(name, PROCESS)) for name in targets}
        self.totals = {name: Counter() for name in targets}
        self.threads: dict[str, int | None] = dict.fromkeys(targets)
        self.rate = 0.0

    def line(self) -> str:
        latest: dict[str, dict] = {}
        for record in self.chats.new_records():
            target = record.get("target")
            if target in self.totals:
                self.totals[target].update(record.get("outcomes", {}))
                latest[target] = record
        if latest:
            self.rate = sum(
                r.get("outcomes", {}).get("ok", 0) / max(r.get("interval_s", 1), 1e-6)
                for r in latest.values()
            )
        for name, tail in self.process.items():
            for record in tail.new_records():
                if record.get("threads") is not None:
                    self.threads[name] = record["threads"]
        elapsed = time.time() - self.started_at
        parts = [
            f"[{format_duration(elapsed)} / {format_duration(self.planned_s)}]",
            f"{self.rate:.1f} replies/s",
        ]
        for name in self.targets:
            totals = self.totals[name]
            bad = sum(count for outcome, count in totals.items() if outcome != "ok")
            threads = self.threads[name]
            parts.append(
                f"{name}: {totals['ok']} ok, {totals['stall']} stalls, {bad} not ok, "
                f"{'?' if threads is None else threads} threads"
            )
        return " | ".join(parts)
