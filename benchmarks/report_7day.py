"""`soak report` on a synthetic 7-day run at 1 s sampling: seconds and peak memory.

Writes a run directory as `soak run` would after a week with two targets (process,
thread-name and /health samples every second: about 600,000 samples per target and
file; chat aggregates every 10 s with latency and ping histograms; anomalies; soak's
own generator health), then times in fresh subprocesses:

- baseline: reading every data file line by line with json.loads (nothing else);
- `soak report` on the run directory (analysis, plots, all four report files).

It prints the wall and CPU seconds and the peak resident memory (the summed RSS of
the command and its child processes: `soak report` parses big runs in parallel child
processes) of each, the ratios of report to baseline, and the goals (<= 30 s, <= 2 GB).

    python benchmarks/report_7day.py                 # 7 days, in a temporary directory
    python benchmarks/report_7day.py --days 1 --keep /tmp/soak-bench
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from soak.rundir import (
    ANOMALIES,
    CHATS,
    EVENTS,
    GENERATOR,
    HEALTH,
    PROCESS,
    THREADS,
    RunDir,
    iso,
)

GOAL_SECONDS = 30.0
GOAL_MB = 2048.0
STARTED_AT = 1_795_000_000.0
TARGETS = ("unpatched", "patched")
CHAT_INTERVAL_S = 10
SAMPLE_S = 1

_BASELINE = """
import json, sys
from pathlib import Path
records = 0
for path in sorted(Path(sys.argv[1]).rglob("*.jsonl")):
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            json.loads(line)
            records += 1
print(records)
"""


def synthesise(root: Path, days: float) -> Path:
    """Write the synthetic run directory under `root`; returns its path."""
    duration = days * 86400.0
    profile = {
        "name": "bench",
        "collector": {"interval": SAMPLE_S, "loop_lag_field": "diagnostics.loop_lag_ms"},
        "load": {"interval": CHAT_INTERVAL_S, "reply_timeout": 120},
        "criteria": {
            "warmup": 600,
            "checks": [
                "threads.growth_per_hour < 5",
                "rss.growth_mb_per_hour < 50",
                "stalls.rate < 0.1%",
                "ttft.p95 < 2s",
                "loop_lag.p99 < 500ms",
                "health.diagnostics.asyncio_task_count.max < 5000",
            ],
        },
    }
    targets = [
        {"name": n, "url": "ws://127.0.0.1:1/ws", "pid": 4000 + i} for i, n in enumerate(TARGETS)
    ]
    run = RunDir.create(root, "bench", "week", {"profile": profile, "targets": targets}, STARTED_AT)
    rng = random.Random(7)
    for index, name in enumerate(TARGETS):
        _target_files(run, name, 4000 + index, duration, leaking=index == 0, rng=rng)
    _chats(run, duration, rng)
    _generator(run, duration)
    with open(run.file(EVENTS), "w", encoding="utf-8") as events:
        events.write(json.dumps({"t": STARTED_AT, "source": "run", "kind": "run_start"}) + "\n")
    ended = STARTED_AT + duration
    run.update_manifest(status="completed", ended_at=ended, ended_at_iso=iso(ended))
    return run.path


def _target_files(
    run: RunDir, name: str, pid: int, duration: float, leaking: bool, rng: random.Random
) -> None:
    """process/threads/health.jsonl at 1 s: a slow thread leak and a GC sawtooth."""
    created = STARTED_AT - 30
    run.target_dir(name).mkdir(parents=True, exist_ok=True)
    with (
        open(run.target_file(name, PROCESS), "w", encoding="utf-8") as process,
        open(run.target_file(name, THREADS), "w", encoding="utf-8") as threads,
        open(run.target_file(name, HEALTH), "w", encoding="utf-8") as health,
    ):
        for step in range(1, int(duration / SAMPLE_S) + 1):
            s = step * SAMPLE_S
            t = STARTED_AT + s
            leaked = int(s // 3600) if leaking else 0
            pool = min(24, 4 + int(s // 60))
            count = 2 + pool + leaked
            rss = 180.0 + 40.0 * ((s % 900) / 900.0) + rng.random()
            cpu = 20.0 + 5.0 * rng.random()
            lag = 2.0 + 3.0 * rng.random()
            process.write(
                f'{{"t":{t:.3f},"pid":{pid},"create_time":{created},"threads":{count},'
                f'"rss_mb":{rss:.3f},"cpu_percent":{cpu:.2f},"cpu_user_s":{s * 0.2:.3f},'
                f'"cpu_system_s":{s * 0.05:.3f},"fds":{40 + pool},"children":0}}\n'
            )
            threads.write(
                f'{{"t":{t:.3f},"pid":{pid},"families":{{"MainThread":1,"asyncio_N":1,'
                f'"ThreadPoolExecutor-N_N":{pool},"reply-exec_N":{leaked}}}}}\n'
            )
            health.write(
                f'{{"t":{t + 0.01:.3f},"url":"http://127.0.0.1:1/health","status":200,'
                f'"latency_s":{0.002 + 0.001 * rng.random():.4f},"error":null,'
                f'"body":{{"status":"ok","version":"1.0","uptime_s":{s},"diagnostics":'
                f'{{"thread_count":{count},"asyncio_task_count":{30 + pool},'
                f'"active_chats":{pool},"replies":{s * 3},"loop_lag_ms":{lag:.3f}}}}}}}\n'
            )


def _chats(run: RunDir, duration: float, rng: random.Random) -> None:
    """chats.jsonl every 10 s per target, and a stall anomaly now and then."""
    with (
        open(run.file(CHATS), "w", encoding="utf-8") as chats,
        open(run.file(ANOMALIES), "w", encoding="utf-8") as anomalies,
    ):
        for step in range(1, int(duration / CHAT_INTERVAL_S) + 1):
            t = STARTED_AT + step * CHAT_INTERVAL_S
            for name in TARGETS:
                stall = 1 if rng.random() < 0.01 else 0
                ok = 30 - stall
                chats.write(
                    json.dumps(
                        {
                            "t": t,
                            "interval_s": CHAT_INTERVAL_S,
                            "target": name,
                            "started": 30,
                            "turns": 30,
                            "in_flight": 5,
                            "connections": 10,
                            "connects": 0,
                            "outcomes": {"ok": ok, "stall": stall},
                            "tokens": 600,
                            "frames": 630,
                            "ttft_hist": {"95": 10, "110": 15, "140": ok - 25},
                            "reply_hist": {"160": 20, "175": ok - 20},
                            "ping_hist": {"60": 8, "80": 2},
                            "ttft_max_s": 0.2,
                            "reply_max_s": 0.9,
                            "ping_max_s": 0.005,
                            "gap_max_s": 0.3,
                        },
                        separators=(",", ":"),
                    )
                    + "\n"
                )
                if stall:
                    anomalies.write(
                        json.dumps(
                            {
                                "t": t,
                                "target": name,
                                "kind": "stall",
                                "session": "s",
                                "request_id": f"r{step}",
                                "turn_elapsed_s": 120.0,
                                "detail": "no terminal frame within 120 s",
                                "last_frames": ['{"type":"token"}'],
                            }
                        )
                        + "\n"
                    )


def _generator(run: RunDir, duration: float) -> None:
    """generator.jsonl: two load workers every 10 s."""
    with open(run.file(GENERATOR), "w", encoding="utf-8") as out:
        for step in range(1, int(duration / CHAT_INTERVAL_S) + 1):
            t = STARTED_AT + step * CHAT_INTERVAL_S
            for worker in (0, 1):
                cpu = 35.0 + 10.0 * math.sin(step / 500.0)
                out.write(
                    f'{{"t":{t},"worker":{worker},"cpu_percent":{cpu:.1f},"rss_mb":90.0,'
                    f'"loop_lag_max_s":0.01,"users":10,"connections":10}}\n'
                )


@dataclass
class Measured:
    """One child command: wall seconds, CPU seconds (its own and its children's), and the
    peak of the summed RSS of it and its child processes (MB, sampled every 20 ms)."""

    seconds: float
    cpu_seconds: float
    peak_mb: float
    output: str


def measure(command: list[str]) -> Measured:
    """Run `command` to the end and measure it (exit 1, criteria failed, is fine)."""
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = [0.0]
    done = threading.Event()
    sampler = threading.Thread(target=_sample_tree, args=(child.pid, peak, done), daemon=True)
    sampler.start()
    assert child.stdout is not None
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    child.stdout.close()
    if child.returncode not in (0, 1):
        raise SystemExit(f"{command} failed ({child.returncode}):\n{output}")
    peak_mb = max(peak[0], usage.ru_maxrss / 1024.0)
    return Measured(seconds, usage.ru_utime + usage.ru_stime, peak_mb, output)


def _sample_tree(pid: int, peak: list[float], done: threading.Event) -> None:
    """Track the peak summed RSS (MB) of process `pid` and its descendants."""
    try:
        root = psutil.Process(pid)
    except psutil.Error:
        return
    while not done.wait(0.02):
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        total = 0.0
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        peak[0] = max(peak[0], total / 1_048_576)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=7.0, help="length of the run (days)")
    parser.add_argument("--keep", type=Path, help="write the run here and keep it")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="soak-bench-"))
    try:
        began = time.perf_counter()
        run_dir = synthesise(root, args.days)
        files = sorted(run_dir.rglob("*.jsonl"))
        size_mb = sum(p.stat().st_size for p in files) / 1_048_576
        lines = sum(1 for p in files for _ in open(p, "rb"))  # noqa: SIM115
        print(
            f"synthetic run: {args.days:g} days at {SAMPLE_S} s, {len(TARGETS)} targets, "
            f"{lines:,} records, {size_mb:,.0f} MB in {time.perf_counter() - began:.0f} s"
        )
        base = measure([sys.executable, "-c", _BASELINE, str(run_dir)])
        out = root / "report-out"
        report = measure([sys.executable, "-m", "soak", "report", str(run_dir), "--out", str(out)])
        for label, m in (("baseline (json.loads every line)", base), ("soak report", report)):
            print(
                f"{label:34s} {m.seconds:6.1f} s wall  {m.cpu_seconds:6.1f} s CPU  "
                f"{m.peak_mb:7.0f} MB peak"
            )
        print(
            f"soak report / baseline: {report.seconds / base.seconds:.2f}x the wall time, "
            f"{report.cpu_seconds / base.cpu_seconds:.2f}x the CPU time"
        )
        met = report.seconds <= GOAL_SECONDS and report.peak_mb <= GOAL_MB
        print(
            f"goal: <= {GOAL_SECONDS:.0f} s and <= {GOAL_MB / 1024:.0f} GB peak: "
            f"{'met' if met else 'MISSED'} ({report.seconds / GOAL_SECONDS:.0%} of the time, "
            f"{report.peak_mb / GOAL_MB:.0%} of the memory) on {os.cpu_count()} cores, "
            f"load average {os.getloadavg()[0]:.1f} at the end"
        )
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
