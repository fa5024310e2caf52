"""Synthetic run directories with independent noise, for the compare tests.

`python -m tests.data.make_compare_runs` rewrites the committed pair under
tests/data/runs/ (a faulty 1.4.1 and a 1.4.2 that fixes its leak and stalls but
brings errors and slower first tokens); the tests also call `write_synthetic` for
pairs of runs of one healthy build that differ by noise alone. Every value is drawn
from a seeded generator, so a run is the same on every machine.

After regenerating, check tests/data/compare_expected.txt by eye and update it
(`python -m tests.data.make_compare_runs --table` prints the new table).
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from soak.histogram import Histogram
from soak.rundir import (
    ANOMALIES,
    CHATS,
    EVENTS,
    HEALTH,
    PROCESS,
    THREADS,
    JsonlWriter,
    RunDir,
    iso,
)

HERE = Path(__file__).resolve().parent
RUNS = HERE / "runs"
EXPECTED = HERE / "compare_expected.txt"
CHECKS = [
    "threads.growth_per_hour < 20",
    "stalls.count == 0",
    "errors.rate < 1%",
    "ttft.p95 < 2s",
    "rss.growth_mb_per_hour < 200",
    "loop_lag.max < 500ms",
    "idle_cpu.percent < 5",
]


@dataclass(frozen=True)
class Build:
    """How a synthetic build behaves: levels, growth per hour, noise, outcome odds."""

    build: str
    threads_per_hour: float = 0.0
    rss_mb_per_hour: float = 2.0
    stall_p: float = 0.0
    error_p: float = 0.0
    disconnect_p: float = 0.0005
    ttft_median_s: float = 0.12
    reply_median_s: float = 1.5
    loop_lag_ms: float = 4.0
    busy_cpu: float = 35.0
    idle_cpu: float = 1.0


@dataclass(frozen=True)
class Shape:
    """The run: one hour, a sample every 30 s, a chat aggregate a minute, idle at the end."""

    duration_s: float = 3600.0
    sample_s: float = 30.0
    interval_s: float = 60.0
    idle_from_s: float = 3000.0
    turns_per_interval: int = 100
    warmup_s: float = 300.0


FAULTY = Build("1.4.1", threads_per_hour=120.0, rss_mb_per_hour=60.0, stall_p=0.01)
FIXED = Build("1.4.2", error_p=0.02, ttft_median_s=0.3)
HEALTHY = Build("1.4.2-healthy")


def write_synthetic(
    root: Path, build: Build, seed: int, started_at: float, label: str, shape: Shape = Shape()
) -> Path:
    """One run of one target named `app`, drawn from `build` with `seed`; returns its path."""
    rng = np.random.default_rng(seed)
    profile = {
        "name": "nightly",
        "load": {
            "users": 50,
            "think_time": [1.0, 5.0],
            "turns_per_connection": 0,
            "reply_timeout": 120.0,
            "first_token_timeout": 30.0,
            "idle_after": 600.0,
        },
        "collector": {"interval": shape.sample_s, "loop_lag_field": "diagnostics.loop_lag_ms"},
        "criteria": {"warmup": shape.warmup_s, "checks": CHECKS},
    }
    target = {
        "name": "app",
        "url": "ws://127.0.0.1:1/ws",
        "health": None,
        "pid": 4242,
        "build": build.build,
    }
    run = RunDir.create(
        root, "nightly", label, {"profile": profile, "targets": [target]}, started_at=started_at
    )
    _write_samples(run, build, shape, rng, started_at)
    _write_chats(run, build, shape, rng, started_at)
    with JsonlWriter(run.file(EVENTS)) as events:
        events.write(
            {
                "t": started_at,
                "source": "run",
                "kind": "phase",
                "phase": "load",
                "message": "load phase",
            }
        )
    ended = started_at + shape.duration_s
    run.update_manifest(status="completed", ended_at=ended, ended_at_iso=iso(ended), pid=None)
    return run.path


def _write_samples(
    run: RunDir, build: Build, shape: Shape, rng: np.random.Generator, started_at: float
) -> None:
    times = np.arange(shape.sample_s, shape.duration_s + 1, shape.sample_s)
    hours = times / 3600.0
    threads = np.round(40 + build.threads_per_hour * hours + rng.normal(0, 1.0, len(times)))
    rss = 100 + build.rss_mb_per_hour * hours + rng.normal(0, 0.8, len(times))
    busy = times <= shape.idle_from_s
    cpu = np.where(busy, build.busy_cpu, build.idle_cpu) * rng.lognormal(0, 0.15, len(times))
    lag = build.loop_lag_ms * rng.lognormal(0, 0.3, len(times))
    with (
        JsonlWriter(run.target_file("app", PROCESS)) as process,
        JsonlWriter(run.target_file("app", THREADS)) as families,
        JsonlWriter(run.target_file("app", HEALTH)) as health,
    ):
        for i, elapsed in enumerate(times):
            t = round(started_at + elapsed, 3)
            process.write(
                {
                    "t": t,
                    "pid": 4242,
                    "create_time": started_at - 5,
                    "threads": int(threads[i]),
                    "rss_mb": round(float(rss[i]), 2),
                    "cpu_percent": round(float(cpu[i]), 1),
                    "fds": 30,
                    "children": 0,
                }
            )
            families.write(
                {
                    "t": t,
                    "pid": 4242,
                    "families": {"MainThread": 1, "worker_N": int(threads[i]) - 1},
                }
            )
            health.write(
                {
                    "t": t,
                    "url": "http://127.0.0.1:1/health",
                    "status": 200,
                    "latency_s": 0.002,
                    "error": None,
                    "body": {"diagnostics": {"loop_lag_ms": round(float(lag[i]), 2)}},
                }
            )


def _write_chats(
    run: RunDir, build: Build, shape: Shape, rng: np.random.Generator, started_at: float
) -> None:
    odds = [build.stall_p, build.error_p, build.disconnect_p]
    with JsonlWriter(run.file(CHATS)) as chats, JsonlWriter(run.file(ANOMALIES)) as anomalies:
        for end in np.arange(shape.interval_s, shape.duration_s + 1, shape.interval_s):
            t = started_at + float(end)
            turns = shape.turns_per_interval if end <= shape.idle_from_s else 0
            stalls, errors, disconnects, ok = (
                int(n) for n in rng.multinomial(turns, [*odds, 1 - sum(odds)])
            )
            ttft, reply = Histogram(), Histogram()
            for value in build.ttft_median_s * rng.lognormal(0, 0.35, ok):
                ttft.add(float(value))
            for value in build.reply_median_s * rng.lognormal(0, 0.25, ok):
                reply.add(float(value))
            outcomes = {
                "ok": ok,
                "stall": stalls,
                "error": errors,
                "disconnect": disconnects,
                "violation": 0,
                "mismatch": 0,
                "first_token_timeout": 0,
            }
            chats.write(
                {
                    "t": t,
                    "interval_s": shape.interval_s,
                    "target": "app",
                    "started": turns,
                    "turns": turns,
                    "in_flight": 5 if turns else 0,
                    "connections": 50,
                    "connects": 0,
                    "outcomes": outcomes,
                    "ttft_hist": ttft.to_json(),
                    "reply_hist": reply.to_json(),
                }
            )
            for kind, count in (("stall", stalls), ("error", errors), ("disconnect", disconnects)):
                for n in range(min(count, 3)):
                    anomalies.write(
                        {
                            "t": t,
                            "target": "app",
                            "kind": kind,
                            "session": f"s{n}",
                            "request_id": f"r{int(end)}-{n}",
                            "turn_elapsed_s": 120.0,
                            "detail": f"synthetic {kind}",
                            "last_frames": [],
                        }
                    )


#: The committed pair: (build, seed, start, label).
COMMITTED = [
    (FAULTY, 1, 1_795_000_000.0, "v1.4.1"),
    (FIXED, 2, 1_795_090_000.0, "v1.4.2"),
]


def regenerate(root: Path = RUNS) -> list[Path]:
    """Rewrite the committed synthetic runs (the recorded demo run is left alone)."""
    for path in root.glob("*_nightly_v1.4.*"):
        shutil.rmtree(path)
    return [write_synthetic(root, *args) for args in COMMITTED]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", action="store_true", help="print the compare table")
    args = parser.parse_args()
    base, candidate = regenerate()
    if args.table:
        from soak.compare.build import open_sides
        from soak.compare.core import compare_sides
        from soak.compare.render import table_rows
        from soak.runs import text_table

        comparison = compare_sides(*open_sides([str(base), str(candidate)], RUNS))
        header = ("metric", "base", "candidate", "change", "verdict")
        print(text_table([header, *table_rows(comparison)]))


if __name__ == "__main__":
    main()
