"""Shared parts of the load benchmarks: a profile for the built-in target, one load process
run with its CPU time, and the run's numbers; for the CPU-per-frame benchmarks, a baseline
client run in a subprocess and the table of microseconds per frame. Not a benchmark itself."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from soak.profile import profile_from_mapping
from soak.rundir import read_jsonl


def load_profile(url: str, protocol: dict[str, Any] | None = None, **load: Any) -> dict[str, Any]:
    """A resolved profile (defaults filled) with one target `bench` at `url`, the [protocol]
    table `protocol` (default: the built-in target's WebSocket kind) and [load] `load`."""
    data = {"targets": [{"name": "bench", "url": url}], "load": load}
    if protocol:
        data["protocol"] = protocol
    return profile_from_mapping(data).to_dict()


@dataclass
class LoadRun:
    """One finished load process: its CPU seconds (user + system) and wall seconds."""

    run_dir: Path
    cpu_s: float
    wall_s: float

    def chats(self) -> list[dict[str, Any]]:
        return list(read_jsonl(self.run_dir / "chats.jsonl"))

    def generator(self) -> list[dict[str, Any]]:
        return list(read_jsonl(self.run_dir / "generator.jsonl"))

    def total(self, key: str) -> int:
        return sum(record[key] for record in self.chats())

    def outcomes(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for record in self.chats():
            for name, count in record["outcomes"].items():
                totals[name] = totals.get(name, 0) + count
        return totals


def run_load(run_dir: Path, profile: dict[str, Any], *args: str) -> LoadRun:
    """Run `python -m soak.load` to its end; CPU time from the child's rusage."""
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "soak.load", "--run-dir", str(run_dir), *args],
        stdin=subprocess.PIPE,
    )
    assert process.stdin is not None
    process.stdin.write(json.dumps(profile).encode())
    process.stdin.close()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"load process failed ({process.returncode}); see {run_dir}/load.log")
    return LoadRun(run_dir, usage.ru_utime + usage.ru_stime, time.monotonic() - started)


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per hour."""
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return cov / var * 3600 if var else 0.0


def soak_cpu(
    url: str, chats: int, seconds: float, folder: Path, protocol: dict[str, Any] | None = None
) -> tuple[float, float, int, int]:
    """One soak load run of `chats` chats asking back to back for `seconds` s: CPU seconds
    in the load phase (from generator.jsonl: start-up left out), CPU seconds of the whole
    process, frames and ok replies (from chats.jsonl)."""
    profile = load_profile(
        url, protocol, users=chats, spawn_rate=1000, think_time="0s", duration=seconds,
        idle_after=0, interval="2s", ping_every=0, linger=0,
    )  # fmt: skip
    run = run_load(folder, profile)
    steady = sum(r["cpu_percent"] / 100 * r["interval_s"] for r in run.generator())
    return steady, run.cpu_s, run.total("frames"), run.outcomes().get("ok", 0)


def run_baseline(script: str, *args: str, timeout: float) -> dict[str, Any]:
    """Run a baseline client (`python -c script args`, this interpreter) and return the JSON
    object it prints last ({"frames", "cpu_s", ...}); a clear SystemExit if it fails."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", script, *args], capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise SystemExit(f"the baseline client did not finish within {timeout:g} s") from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = done.stderr.strip()[-2000:] or "(no output)"
        raise SystemExit(f"the baseline client failed ({done.returncode}):\n{tail}")
    return json.loads(lines[-1])


@dataclass
class FrameCosts:
    """CPU microseconds per frame of each client over the rounds, printed as they come."""

    #: client name -> us/frame of each round (soak's: its load phase only)
    us: dict[str, list[float]] = field(default_factory=dict)
    #: soak's us/frame with its start-up (whole-process CPU), each round
    whole_us: list[float] = field(default_factory=list)

    def add(
        self, round_number: int, name: str, cpu_s: float, frames: int,
        replies: int | None = None, whole_s: float | None = None,
    ) -> None:  # fmt: skip
        """Record (and print) one client's run: `cpu_s` CPU seconds for `frames` frames of
        `replies` replies (shown as frames per reply, a check that both did the same work)."""
        if not frames:
            raise SystemExit(f"round {round_number}: {name} streamed no frames")
        self.us.setdefault(name, []).append(cpu_s / frames * 1e6)
        per_reply = f" ({frames / max(replies, 1):5.1f}/reply)" if replies is not None else ""
        line = (
            f"round {round_number} {name + ':':<11} {frames:>8,} frames{per_reply}  "
            f"{cpu_s:6.2f} s CPU  {self.us[name][-1]:6.1f} us/frame"
        )
        if whole_s is not None:
            self.whole_us.append(whole_s / frames * 1e6)
            line += f"  ({self.whole_us[-1]:.1f} with start-up)"
        print(line, flush=True)

    def summary(self, chats: int, soak: str = "soak", goal: float = 1.5) -> bool:
        """Print the medians and soak's ratio to each baseline; whether all meet `goal`."""
        median = {name: statistics.median(values) for name, values in self.us.items()}
        rounds = len(self.us[soak])
        parts = [f"{name} {us:.1f} us" for name, us in median.items()]
        whole = f" ({statistics.median(self.whole_us):.1f} us with start-up)" * bool(self.whole_us)
        print(f"\nCPU per frame, median of {rounds}: {', '.join(parts)}{whole}")
        met = True
        for name, us in median.items():
            if name == soak:
                continue
            ratio = median[soak] / us
            met = met and ratio <= goal
            print(
                f"ratio soak / {name}: {ratio:.2f}x (goal <= {goal:g}x) "
                f"{'PASS' if ratio <= goal else 'MISS'}; {chats} chats, {os.cpu_count()} cores"
            )
        return met
