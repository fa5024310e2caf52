"""Synthetic run directories for analysis and report tests, written with soak.rundir.

`write_run` lays out a run exactly as `soak run` would (manifest, events, chats,
anomalies, per-target process/threads/health files) from small Python callables, so a
test states the behaviour it wants ("threads grow one per 5 minutes") and nothing else.
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


@dataclass
class FakeTarget:
    """How one synthetic target behaves, as functions of elapsed seconds."""

    name: str = "app"
    build: str = "test"
    threads: Series = lambda s: 50.0
    rss_mb: Series = lambda s: 100.0
    fds: Series = lambda s: 20.0
    busy_cpu: float = 40.0
    idle_cpu: float = 1.0
    #: Elapsed second at which the process restarts (new pid), if any.
    restart_at_s: float | None = None
    #: /health body per elapsed second; None writes no health file.
    health_body: Callable[[float], dict[str, Any]] | None = lambda s: {
        "status": "ok",
        "diagnostics": {"loop_lag_ms": 5.0},
    }
    health_error: str | None = None
    #: Thread-name families per (elapsed s, thread count).
    families: Callable[[float, int], dict[str, int]] = lambda s, n: {
        "MainThread": 1,
        "worker_N": n - 1,
    }
    stalls_per_interval: int = 0
    ttft_s: float = 0.1
    reply_s: float = 0.5
    anomaly_detail: str = "no terminal frame within 30 s"


@dataclass
class FakeRun:
    """A synthetic run's shape: duration, sampling, load and idle phases, criteria."""

    targets: Sequence[FakeTarget] = field(default_factory=lambda: [FakeTarget()])
    duration_s: float = 1800.0
    sample_s: float = 1.0
    chat_interval_s: float = 5.0
    #: Load runs until this elapsed second, then the run is idle (None: load throughout).
    idle_from_s: float | None = None
    checks: Sequence[str] = ()
    warmup_s: float = 0.0
    loop_lag_field: str | None = "diagnostics.loop_lag_ms"
    status: str = STATUS_COMPLETED
    turns_per_interval: int = 10


def write_run(root: Path, run: FakeRun) -> Path:
    """Write the run under `root`; returns the run directory."""
    profile = {
        "name": "synthetic",
        "criteria": {"warmup": run.warmup_s, "checks": list(run.checks)},
        "collector": {"loop_lag_field": run.loop_lag_field},
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
    _write_chats(rundir, run)
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
            cpu = target.busy_cpu if _is_busy(run, elapsed) else target.idle_cpu
            process.write(
                {
                    "t": t,
                    "pid": pid,
                    "create_time": created,
                    "threads": count,
                    "rss_mb": target.rss_mb(elapsed),
                    "cpu_percent": cpu,
                    "fds": int(target.fds(elapsed)),
                    "children": 0,
                }
            )
            threads.write({"t": t, "pid": pid, "families": target.families(elapsed, count)})
            if target.health_body is not None and int(elapsed) % 5 == 0:
                health.write(
                    {
                        "t": t,
                        "url": "http://127.0.0.1:1/health",
                        "status": None if target.health_error else 200,
                        "latency_s": 0.002,
                        "error": target.health_error,
                        "body": target.health_body(elapsed),
                    }
                )


def _write_chats(rundir: RunDir, run: FakeRun) -> None:
    interval = run.chat_interval_s
    with JsonlWriter(rundir.file(CHATS)) as chats, JsonlWriter(rundir.file(ANOMALIES)) as anomalies:
        for end in np.arange(interval, run.duration_s + interval / 2, interval):
            t = STARTED_AT + float(end)
            busy = _is_busy(run, end)
            for target in run.targets:
                ttft, reply = Histogram(), Histogram()
                stalls = target.stalls_per_interval if busy else 0
                ok = run.turns_per_interval - stalls if busy else 0
                for _ in range(ok):
                    ttft.add(target.ttft_s)
                    reply.add(target.reply_s)
                chats.write(
                    {
                        "t": t,
                        "interval_s": interval,
                        "target": target.name,
                        "started": run.turns_per_interval if busy else 0,
                        "turns": ok + stalls,
                        "in_flight": 2 if busy else 0,
                        "connections": 10,
                        "connects": 0,
                        "outcomes": {
                            "ok": ok,
                            "stall": stalls,
                            "error": 0,
                            "disconnect": 0,
                            "violation": 0,
                            "mismatch": 0,
                            "first_token_timeout": 0,
                        },
                        "ttft_hist": ttft.to_json(),
                        "reply_hist": reply.to_json(),
                    }
                )
                for _ in range(stalls):
                    anomalies.write(
                        {
                            "t": t,
                            "target": target.name,
                            "kind": "stall",
                            "session": "s1",
                            "request_id": "r1",
                            "turn_elapsed_s": 30.0,
                            "detail": target.anomaly_detail,
                            "last_frames": ["{}"],
                        }
                    )
