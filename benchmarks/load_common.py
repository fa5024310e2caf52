"""Shared parts of the load benchmarks: a profile for the built-in target, one load process
run with its CPU time, and the run's numbers. Not a benchmark itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from soak.profile import profile_from_mapping
from soak.rundir import read_jsonl


def load_profile(url: str, **load: Any) -> dict[str, Any]:
    """A resolved profile (defaults filled) with one target `bench` at `url`."""
    data = {"targets": [{"name": "bench", "url": url}], "load": load}
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
