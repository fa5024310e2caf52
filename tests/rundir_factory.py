"""Synthetic run directories for analysis and report tests, written with soak.rundir.

`write_run` lays out a run exactly as `soak run` would (manifest, events, chats,
anomalies, generator health, per-target process/threads/health files) from small
Python callables, so a test states the behaviour it wants ("threads grow one per 5
minutes") and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from soak.histogram import Histogram
from soak.rundir import (
    ANOMALIES,
    CHATS,
    EVENTS,
    GENERATOR,
    HEALTH,
    PROCESS,
    STATUS_COMPLETED,
    THREADS,
    JsonlWriter,
    RunDir,
    iso,
)

STARTED_AT = 1_795_000_000.0

Series = Callable[[float], float]
#: A number per chat interval, or a function of the interval's end (elapsed s).
PerInterval = int | Callable[[float], int]


def _at(value: float | Callable[[float], float], elapsed: float) -> float:
    return value(elapsed) if callable(value) else value


@dataclass
class FakeTarget:
    """How one synthetic target behaves, as functions of elapsed seconds."""

    name: str = "app"
    build: str = "test"
    threads: Series = lambda s: 50.0
    rss_mb: Series = lambda s: 100.0
    fds: Series = lambda s: 20.0
    uss_mb: Series | None = None
    busy_cpu: float = 40.0
    idle_cpu: float | Series = 1.0
    #: Elapsed second at which the process restarts (new pid), if any.
    restart_at_s: float | None = None
    #: /health body per elapsed second; None writes no health file.
    health_body: Callable[[float], dict[str, Any]] | None = lambda s: {
        "status": "ok",
        "diagnostics": {"loop_lag_ms": 5.0},
    }
    health_error: str | None = None
    health_latency_s: float | Series = 0.002
    #: Thread-name families per (elapsed s, thread count).
    families: Callable[[float, int], dict[str, int]] = lambda s, n: {
        "MainThread": 1,
        "worker_N": n - 1,
    }
    stalls_per_interval: PerInterval = 0
    disconnects_per_interval: PerInterval = 0
    violations_per_interval: PerInterval = 0
    connects_per_interval: PerInterval = 0
    ttft_s: float | Series = 0.1
    reply_s: float = 0.5
    #: Protocol ping round trip (s) recorded per interval; None records no pings.
    ping_s: float | Series | None = None
    anomaly_detail: str = "no terminal frame within 30 s"
    close_reason: str = "going away"


@dataclass
class FakeRun:
    """A synthetic run's shape: duration, sampling, load and idle phases, criteria."""

    targets: Sequence[FakeTarget] = field(default_factory=lambda: [FakeTarget()])
    duration_s: float = 1800.0
    sample_s: float = 1.0
    chat_interval_s: float = 5.0
    #: Load runs until this elapsed second, then the run is idle (None: load throughout).
    idle_from_s: float | None = None
    #: Whether chats run at an elapsed second (overrides idle_from_s).
    busy: Callable[[float], bool] | None = None
    checks: Sequence[str] = ()
    criteria_targets: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    replies_per_day: float | None = None
    warmup_s: float = 0.0
    loop_lag_field: str | None = "diagnostics.loop_lag_ms"
    reply_timeout_s: float = 30.0
    status: str = STATUS_COMPLETED
    turns_per_interval: int = 10
    #: False: no chats.jsonl at all (a `soak collect` run).
    write_chats: bool = True
    #: soak's own load-process health per record time (elapsed s); None: no generator.jsonl.
    generator: Callable[[float], dict[str, Any]] | None = None
    generator_interval_s: float = 5.0


def write_run(root: Path, run: FakeRun) -> Path:
    """Write the run under `root`; returns the run directory."""
    criteria: dict[str, Any] = {"warmup": run.warmup_s, "checks": list(run.checks)}
    if run.criteria_targets:
        criteria["targets"] = run.criteria_targets
    if run.replies_per_day is not None:
        criteria["replies_per_day"] = run.replies_per_day
    profile = {
        "name": "synthetic",
        "criteria": criteria,
        "collector": {"loop_lag_field": run.loop_lag_field},
        "load": {"reply_timeout": run.reply_timeout_s},
    }
    targets = [
        {
            "name": t.name,
            "url": "ws://127.0.0.1:1/ws",
            "health": None,
            "pid": 1000,
            "build": t.build,
        }
        for t in run.targets
    ]
    rundir = RunDir.create(
        root, "synthetic", "test", {"profile": profile, "targets": targets}, started_at=STARTED_AT
    )
    times = np.arange(run.sample_s, run.duration_s + run.sample_s / 2, run.sample_s)
    for target in run.targets:
        _write_target(rundir, target, run, times)
    if run.write_chats:
        _write_chats(rundir, run)
    if run.generator is not None:
        _write_generator(rundir, run)
    with JsonlWriter(rundir.file(EVENTS)) as events:
        events.write(
            {
                "t": STARTED_AT,
                "source": "run",
                "kind": "phase",
                "phase": "load",
                "message": "load phase",
            }
        )
    if run.status != "running":
        ended = STARTED_AT + run.duration_s
        rundir.update_manifest(status=run.status, ended_at=ended, ended_at_iso=iso(ended))
    return rundir.path


def _is_busy(run: FakeRun, elapsed: float) -> bool:
    if run.busy is not None:
        return run.busy(elapsed)
    return run.idle_from_s is None or elapsed <= run.idle_from_s


def _write_target(rundir: RunDir, target: FakeTarget, run: FakeRun, times: np.ndarray) -> None:
    with (
        JsonlWriter(rundir.target_file(target.name, PROCESS)) as process,
        JsonlWriter(rundir.target_file(target.name, THREADS)) as threads,
        JsonlWriter(rundir.target_file(target.name, HEALTH)) as health,
    ):
        for elapsed in times:
            t = STARTED_AT + float(elapsed)
            restarted = target.restart_at_s is not None and elapsed >= target.restart_at_s
            pid = 2000 if restarted else 1000
            created = STARTED_AT - 10 + (target.restart_at_s if restarted else 0)
            count = int(target.threads(elapsed))
            cpu = target.busy_cpu if _is_busy(run, elapsed) else _at(target.idle_cpu, elapsed)
            record = {
                "t": t,
                "pid": pid,
                "create_time": created,
                "threads": count,
                "rss_mb": target.rss_mb(elapsed),
                "cpu_percent": cpu,
                "fds": int(target.fds(elapsed)),
                "children": 0,
            }
            if target.uss_mb is not None:
                record["uss_mb"] = target.uss_mb(elapsed)
            process.write(record)
            threads.write({"t": t, "pid": pid, "families": target.families(elapsed, count)})
            if target.health_body is not None and int(elapsed) % 5 == 0:
                health.write(
                    {
                        "t": t,
                        "url": "http://127.0.0.1:1/health",
                        "status": None if target.health_error else 200,
                        "latency_s": _at(target.health_latency_s, elapsed),
                        "error": target.health_error,
                        "body": target.health_body(elapsed),
                    }
                )


def _write_chats(rundir: RunDir, run: FakeRun) -> None:
    interval = run.chat_interval_s
    with JsonlWriter(rundir.file(CHATS)) as chats, JsonlWriter(rundir.file(ANOMALIES)) as anomalies:
        for end in np.arange(interval, run.duration_s + interval / 2, interval):
            end = float(end)
            t = STARTED_AT + end
            busy = _is_busy(run, end)
            for target in run.targets:
                bad = {
                    kind: int(_at(count, end)) if busy else 0
                    for kind, count in (
                        ("stall", target.stalls_per_interval),
                        ("disconnect", target.disconnects_per_interval),
                        ("violation", target.violations_per_interval),
                    )
                }
                ok = run.turns_per_interval - sum(bad.values()) if busy else 0
                ttft, reply, ping = Histogram(), Histogram(), Histogram()
                for _ in range(ok):
                    ttft.add(_at(target.ttft_s, end))
                    reply.add(target.reply_s)
                if target.ping_s is not None and busy:
                    for _ in range(4):
                        ping.add(_at(target.ping_s, end))
                chats.write(
                    {
                        "t": t,
                        "interval_s": interval,
                        "target": target.name,
                        "started": run.turns_per_interval if busy else 0,
                        "turns": ok + sum(bad.values()),
                        "in_flight": 2 if busy else 0,
                        "connections": 10,
                        "connects": int(_at(target.connects_per_interval, end)) if busy else 0,
                        "outcomes": {
                            "ok": ok,
                            "error": 0,
                            "mismatch": 0,
                            "first_token_timeout": 0,
                            **bad,
                        },
                        "violations": {"frame_after_done": bad["violation"]}
                        if bad["violation"]
                        else {},
                        "ttft_hist": ttft.to_json(),
                        "reply_hist": reply.to_json(),
                        "ping_hist": ping.to_json(),
                        "ping_max_s": ping.max_s,
                        "gap_max_s": 0.05 if busy else 0.0,
                        "pings": ping.total,
                        "pings_lost": 0,
                    }
                )
                for kind, count in bad.items():
                    for _ in range(count):
                        anomalies.write(_anomaly(target, kind, t))


def _anomaly(target: FakeTarget, kind: str, t: float) -> dict[str, Any]:
    record: dict[str, Any] = {
        "t": t,
        "target": target.name,
        "kind": kind,
        "session": "s1",
        "request_id": "r1",
        "turn_elapsed_s": 30.0,
        "detail": target.anomaly_detail,
        "last_frames": ["{}"],
    }
    if kind == "violation":
        record["subkind"] = "frame_after_done"
    if kind == "disconnect":
        record.update(close_code=1006, close_reason=target.close_reason)
    return record


def _write_generator(rundir: RunDir, run: FakeRun) -> None:
    assert run.generator is not None
    step = run.generator_interval_s
    with JsonlWriter(rundir.file(GENERATOR)) as out:
        for end in np.arange(step, run.duration_s + step / 2, step):
            defaults = {
                "worker": "host:1",
                "cpu_percent": 30.0,
                "rss_mb": 80.0,
                "loop_lag_max_s": 0.01,
                "users": 10,
                "connections": 10,
            }
            out.write({"t": STARTED_AT + float(end), **defaults, **run.generator(float(end))})
