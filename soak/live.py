"""The live status of a run, read from its run directory as it grows: one line, and warnings.

The line shows elapsed / planned time, replies per second and per target ok turns,
stalls and threads (a `soak collect` run: threads, RSS and CPU), shortened to fit the
terminal. Warnings say while the run goes on what the report would only say at the end:
a /health that keeps failing, a target process that is gone, a load generator that is
itself saturated, a target whose turns are all failing or that ends none at all. Each
warning is an event when it starts and when it clears.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from soak.formatting import plural, sampled_from
from soak.rundir import CHATS, GENERATOR, HEALTH, PROCESS, JsonlTail, RunDir
from soak.units import format_duration

#: A load process above this CPU (percent of one core) is saturated.
SATURATED_CPU_PERCENT = 90.0
#: A load process whose event loop lagged this long (s) is saturated.
SATURATED_LAG_S = 0.5
#: Failed /health polls in a row before a warning.
HEALTH_FAILS = 3
#: Process samples in a row without the target's process before a warning.
PROCESS_MISSES = 2
#: Failed turns in one interval, none ok, before a warning.
MIN_FAILED_TURNS = 5


@dataclass(frozen=True)
class LiveWarning:
    """One live warning: what (kind), about which target (None: soak itself), and why."""

    kind: str
    target: str | None
    message: str

    @property
    def key(self) -> tuple[str, str | None]:
        return self.kind, self.target

    def event(self, started: bool) -> dict[str, Any]:
        """The events.jsonl record of this warning starting (or clearing)."""
        return {
            "t": time.time(),
            "source": "run",
            "kind": "warning" if started else "warning_cleared",
            "warning": self.kind,
            **({"target": self.target} if self.target else {}),
            "message": self.message if started else f"cleared: {self.message}",
        }


class LiveStatus:
    """Reads the run directory's new records on `update()`; renders `line(width)`."""

    def __init__(
        self, run: RunDir, targets: list[str], planned_s: float | None, started_at: float
    ) -> None:
        self.targets = targets
        self.planned_s = planned_s
        self.started_at = started_at
        self.chats = JsonlTail(run.file(CHATS))
        self.generator = JsonlTail(run.file(GENERATOR))
        self.process = {name: JsonlTail(run.target_file(name, PROCESS)) for name in targets}
        self.health = {name: JsonlTail(run.target_file(name, HEALTH)) for name in targets}
        self.totals = {name: Counter() for name in targets}
        self.latest: dict[str, dict] = {name: {} for name in targets}
        self.health_fails = dict.fromkeys(targets, 0)
        self.last_health_error: dict[str, str] = {}
        self.process_misses = dict.fromkeys(targets, 0)
        self.last_chats: dict[str, dict] = {}
        self.saturation: str | None = None
        self.saw_chats = False
        self.rate = 0.0
        self.active: dict[tuple[str, str | None], LiveWarning] = {}
        #: Warnings that started and cleared in the last `update()`.
        self.started: list[LiveWarning] = []
        self.cleared: list[LiveWarning] = []

    # -- reading ------------------------------------------------------------------------
    def update(self) -> None:
        """Read what was appended since the last call; set `started` / `cleared`."""
        latest: dict[str, dict] = {}
        for record in self.chats.new_records():
            target = record.get("target")
            if target in self.totals:
                self.totals[target].update(record.get("outcomes", {}))
                latest[target] = record
        if latest:
            self.saw_chats = True
            self.last_chats.update(latest)
            self.rate = sum(
                r.get("outcomes", {}).get("ok", 0) / max(r.get("interval_s", 1), 1e-6)
                for r in latest.values()
            )
        for name, tail in self.process.items():
            for record in tail.new_records():
                if record.get("threads") is not None:
                    self.latest[name] = record
                    self.process_misses[name] = 0
                elif record.get("error"):
                    self.process_misses[name] += 1
        for name, tail in self.health.items():
            for record in tail.new_records():
                failed = _health_problem(record)
                self.health_fails[name] = self.health_fails[name] + 1 if failed else 0
                if failed:
                    self.last_health_error[name] = failed
        for record in self.generator.new_records():
            self.saturation = _saturation(record)
        self._settle_warnings(self._current_warnings())

    def _current_warnings(self) -> list[LiveWarning]:
        found = []
        for name in self.targets:
            if self.health_fails[name] >= HEALTH_FAILS:
                found.append(
                    LiveWarning(
                        "health_failing",
                        name,
                        f"{name}: /health keeps failing ({self.health_fails[name]} polls in "
                        f"a row, last: {self.last_health_error[name]})",
                    )
                )
            if self.process_misses[name] >= PROCESS_MISSES:
                found.append(LiveWarning("process_lost", name, f"{name}: its process is not found"))
            chats = self.last_chats.get(name)
            if chats:
                found += _chat_warnings(name, chats, soak_stood_still=bool(self.saturation))
        if self.saturation:
            found.append(LiveWarning("soak_saturated", None, f"soak itself is {self.saturation}"))
        return found

    def _settle_warnings(self, current: list[LiveWarning]) -> None:
        now = {w.key: w for w in current}
        self.started = [w for key, w in now.items() if key not in self.active]
        self.cleared = [w for key, w in self.active.items() if key not in now]
        self.active = now

    # -- the line -------------------------------------------------------------------------
    def line(self, width: int = 200) -> str:
        """The status line, at most `width` characters: shorter forms when it must."""
        elapsed = time.time() - self.started_at
        planned = "until stopped" if self.planned_s is None else format_duration(self.planned_s)
        head = f"[{format_duration(elapsed)} / {planned}]"
        rate = f"{self.rate:.1f} replies/s" if self.saw_chats else ""
        alert = f"! {len(self.active)} warning{'s' if len(self.active) != 1 else ''}"
        alert = alert if self.active else ""
        for compact in (False, True):
            parts = [head, rate, *(self._target(name, compact) for name in self.targets), alert]
            text = " | ".join(p for p in parts if p)
            if len(text) <= width:
                return text
        return text[: max(width - 1, 0)] + "…"

    def _target(self, name: str, compact: bool) -> str:
        sample = self.latest[name]
        threads = sample.get("threads", "?")
        if self.saw_chats:
            totals = self.totals[name]
            bad = sum(count for outcome, count in totals.items() if outcome != "ok")
            ok, stalls = totals["ok"], totals["stall"]
            if compact:
                return f"{name} {ok} ok {bad} bad {threads} thr"
            return f"{name}: {ok} ok, {plural(stalls, 'stall')}, {bad} not ok, {threads} threads"
        if not sample:
            return f"{name}: -" if compact else f"{name}: no process sample yet"
        if compact:
            return f"{name} {threads} thr {sample.get('rss_mb', '?')} MB"
        return (
            f"{name}: {sampled_from(sample)}, {threads} threads, {sample.get('rss_mb', '?')} MB, "
            f"{sample.get('cpu_percent', '?')}% cpu"
        )


def _health_problem(record: dict[str, Any]) -> str | None:
    """Why one /health poll failed (None: it did not)."""
    if record.get("error"):
        return str(record["error"])[:120]
    status = record.get("status")
    if not isinstance(status, int) or not 200 <= status < 300:
        return f"HTTP {status}"
    return None


def _saturation(record: dict[str, Any]) -> str | None:
    """How one generator record says soak's load process is saturated (None: it is not)."""
    cpu, lag = record.get("cpu_percent"), record.get("loop_lag_max_s")
    worker = f" ({record['worker']})" if record.get("worker") else ""
    if isinstance(cpu, int | float) and cpu > SATURATED_CPU_PERCENT:
        return f"saturated: load process{worker} at {cpu:.0f}% of a core"
    if isinstance(lag, int | float) and lag > SATURATED_LAG_S:
        return f"saturated: load process{worker} event loop {lag:.1f} s late"
    return None


def _chat_warnings(
    name: str, record: dict[str, Any], soak_stood_still: bool = False
) -> list[LiveWarning]:
    """A target's last chat interval: every turn failed (at least MIN_FAILED_TURNS of
    them: one unlucky turn in a short interval is no news), or none ended with chats
    waiting (unless soak itself stood still then: that is its own warning)."""
    outcomes = record.get("outcomes") or {}
    turns, ok = record.get("turns") or 0, outcomes.get("ok", 0)
    in_flight = record.get("in_flight") or 0
    interval = format_duration(record.get("interval_s") or 0)
    if turns >= MIN_FAILED_TURNS and not ok:
        worst = max((k for k in outcomes if k != "ok"), key=lambda k: outcomes[k], default="?")
        return [
            LiveWarning(
                "no_ok_turns",
                name,
                f"{name}: none of its {turns} turns in the last {interval} was ok (mostly {worst})",
            )
        ]
    if not turns and in_flight and not record.get("started") and not soak_stood_still:
        return [
            LiveWarning(
                "no_turn_ended",
                name,
                f"{name}: no turn ended in the last {interval} with {in_flight} waiting for a "
                "reply (a wedged server?)",
            )
        ]
    return []
