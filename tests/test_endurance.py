"""Endurance: soak's own processes stay flat over a compressed long run (~30 min, marked).

`soak run` drives the built-in patched target on loopback at a high turn rate (many users,
short think time, a new connection every few turns) for SOAK_ENDURANCE_MINUTES (default 30).
Every `SAMPLE_EVERY_S` the test samples soak's OWN processes (the `soak run` orchestrator,
its load child and its collector child): RSS (MB), threads and open fds, plus the run
directory's size. After the warm-up it fits a Theil–Sen slope per series and asserts that
RSS grows less than `RSS_MB_PER_HOUR`, that threads and fds stay within a small constant, and
that the run directory grows less than `RUN_DIR_MB_PER_HOUR`. It prints a JSON summary (run
with `-s`) that the README quotes:

    python -m pytest -m endurance -s tests/test_endurance.py
    SOAK_ENDURANCE_MINUTES=5 python -m pytest -m endurance -s tests/test_endurance.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

from soak.analyze.trend import theil_sen
from soak.rundir import RunDir, read_jsonl
from soak.target import start_target

pytestmark = pytest.mark.endurance

#: Minutes of load (the test takes about this plus a minute or two for start and report).
MINUTES = float(os.environ.get("SOAK_ENDURANCE_MINUTES", "30"))
#: Concurrent chats; with the think time below and ~0.1 s replies, a few hundred turns/s.
USERS = 60
#: Seconds between two samples of soak's processes.
SAMPLE_EVERY_S = 10.0
#: Samples before this (seconds) are start-up, left out of every fit: 3 min, or a fifth of
#: a shorter run.
WARMUP_S = min(180.0, MINUTES * 60 / 5)
#: RSS slope bound per process, MB per hour. Measured over 30 min (README "Endurance"):
#: load +0.5, collector +0.1, orchestrator 0.0 MB/h; 20 MB/h (~0.5 GB a day) would be a leak.
#: Runs shorter than ~10 min still include the load process's start-up creep (~1 MB).
RSS_MB_PER_HOUR = 20.0
#: Threads and fds: max - min after the warm-up, per process. Measured: 0 for the orchestrator
#: and collector threads; 0-1 for every fd count (the load process holds one socket per chat).
THREADS_SPREAD = 2
FDS_SPREAD = 4
#: The load process's threads go 2..5 around a median of 3 with no trend: short-lived helper
#: threads (gevent's thread pool) that come and go with connects. Growth is caught by the slope.
LOAD_THREADS_SPREAD = 4
#: Thread and fd growth bound per process (robust slope per hour; measured 0.0 for all).
COUNT_PER_HOUR = 1.0
#: Run directory growth, MB per hour. Measured 0.9 MB/h at 269 turns/s (22 MB a day).
RUN_DIR_MB_PER_HOUR = 5.0
#: Non-ok turns allowed against the patched target (share of all turns).
FAILED_SHARE = 0.001

PROFILE = """\
name = "endurance"

[[targets]]
name = "patched"
url = "{ws_url}"
health = "{health_url}"
pid = {pid}
build = "patched"

[protocol]
kind = "json-events"
prompt = "Tell me about request {{request_id}}. nonce={{nonce}}"
require_nonce = true

[load]
users = {users}
spawn_rate = 30
think_time = ["0.05s", "0.2s"]
duration = "{seconds}s"
idle_after = "0s"
first_token_timeout = "5s"
reply_timeout = "5s"
turns_per_connection = 5
ping_every = "1s"
interval = "10s"

[collector]
interval = "5s"
health_interval = "5s"
health_timeout = "2s"
detail_interval = "30s"
loop_lag_field = "diagnostics.loop_lag_max_ms"
"""


def role_of(proc: psutil.Process, root_pid: int) -> str:
    """'orchestrator', 'load', 'collector' or 'other', from the pid and the command line."""
    if proc.pid == root_pid:
        return "orchestrator"
    cmdline = " ".join(proc.cmdline())
    for module, role in (("soak.load", "load"), ("soak.collect", "collector")):
        if module in cmdline:
            return role
    return "other"


def sample(root: psutil.Process, run_path: Path | None, started: float) -> dict[str, Any]:
    """One sample of soak's own processes: RSS (MB), threads, fds per role; run dir MB."""
    record: dict[str, Any] = {"t": round(time.monotonic() - started, 1)}
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return record
    for proc in procs:
        try:
            with proc.oneshot():
                values = {
                    "rss_mb": round(proc.memory_info().rss / 2**20, 2),
                    "threads": proc.num_threads(),
                    "fds": proc.num_fds(),
                }
            record[role_of(proc, root.pid)] = values
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    if run_path is not None:
        files = (p.stat().st_size for p in run_path.rglob("*") if p.is_file())
        record["run_dir_mb"] = round(sum(files) / 2**20, 3)
    return record


def fit(points: list[tuple[float, float]]) -> dict[str, float] | None:
    """Theil–Sen slope per hour with its 95% interval, and first/last/min/max of the values."""
    if len(points) < 3:
        return None
    x, y = np.array(points).T
    line = theil_sen(x, y)
    if line is None:
        return None
    per_hour = 3600.0
    return {
        "per_hour": round(line.slope * per_hour, 2),
        "low_per_hour": round(line.low * per_hour, 2),
        "high_per_hour": round(line.high * per_hour, 2),
        "first": float(y[0]),
        "last": float(y[-1]),
        "min": float(y.min()),
        "max": float(y.max()),
        "n": len(points),
    }


def series(samples: list[dict[str, Any]], role: str, key: str) -> list[tuple[float, float]]:
    """(seconds, value) of one role's metric after the warm-up."""
    return [(s["t"], s[role][key]) for s in samples if s["t"] >= WARMUP_S and role in s]


def chat_totals(run: RunDir) -> tuple[int, dict[str, int]]:
    """Turns ended and outcomes summed over chats.jsonl."""
    turns, outcomes = 0, {}
    for record in read_jsonl(run.path / "chats.jsonl"):
        turns += record["turns"]
        for name, count in record["outcomes"].items():
            outcomes[name] = outcomes.get(name, 0) + count
    return turns, outcomes


def generator_summary(run: RunDir) -> dict[str, Any]:
    """The load process's own records (generator.jsonl): RSS fit, CPU and loop lag."""
    records = list(read_jsonl(run.path / "generator.jsonl"))
    start = records[0]["t"]
    rss = [(r["t"] - start, r["rss_mb"]) for r in records if r["t"] - start >= WARMUP_S]
    cpu = [r["cpu_percent"] for r in records if r["t"] - start >= WARMUP_S]
    lag = [r["loop_lag_max_s"] for r in records]
    return {
        "records": len(records),
        "rss_mb": fit(rss),
        "cpu_percent_median": float(np.median(cpu)) if cpu else None,
        "loop_lag_max_s": max(lag),
        "loop_lag_p95_s": round(float(np.percentile(lag, 95)), 4),
    }


def test_soak_own_rss_threads_and_fds_stay_flat_over_a_long_run(tmp_path):
    seconds = round(MINUTES * 60)
    out = tmp_path / "runs"
    faults = ["--tokens", "10", "--token-interval", "0.01"]
    with start_target(patched=True, extra_args=faults) as target:
        profile = tmp_path / "endurance.toml"
        profile.write_text(
            PROFILE.format(
                ws_url=target.ws_url,
                health_url=target.health_url,
                pid=target.pid,
                users=USERS,
                seconds=seconds,
            )  # fmt: skip
        )
        started = time.monotonic()
        soak = subprocess.Popen(
            [sys.executable, "-m", "soak", "run", str(profile), "--out", str(out),
             "--label", "endurance"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        root = psutil.Process(soak.pid)
        deadline = started + seconds + 600  # start, report and a generous margin
        samples: list[dict[str, Any]] = []
        run_path: Path | None = None
        try:
            while soak.poll() is None and time.monotonic() < deadline:
                if run_path is None and out.exists():
                    run_path = next((p for p in out.iterdir() if p.is_dir()), None)
                samples.append(sample(root, run_path, started))
                time.sleep(SAMPLE_EVERY_S)
        finally:
            if soak.poll() is None:
                soak.kill()
            output, _ = soak.communicate(timeout=60)
        wall_s = time.monotonic() - started
    assert soak.returncode == 0, output[-3000:]
    assert run_path is not None
    run = RunDir(run_path)
    assert run.manifest()["status"] == "completed"

    turns, outcomes = chat_totals(run)
    failed = turns - outcomes.get("ok", 0)
    loaded = [s for s in samples if "load" in s]
    fits = {
        role: {key: fit(series(loaded, role, key)) for key in ("rss_mb", "threads", "fds")}
        for role in ("orchestrator", "load", "collector")
    }
    run_dir_mb = [(s["t"], s["run_dir_mb"]) for s in loaded if "run_dir_mb" in s]
    summary = {
        "minutes": MINUTES,
        "wall_s": round(wall_s),
        "warmup_s": WARMUP_S,
        "users": USERS,
        "turns": turns,
        "turns_per_s": round(turns / seconds, 1),
        "outcomes": outcomes,
        "fits": fits,
        "run_dir_mb_end": run_dir_mb[-1][1] if run_dir_mb else None,
        "run_dir": fit([p for p in run_dir_mb if p[0] >= WARMUP_S]),
        "generator": generator_summary(run),
        "other_processes": sorted(
            {k for s in samples for k in s} - set(fits) - {"t", "run_dir_mb"}
        ),
        "samples": samples,
    }
    (tmp_path / "endurance.json").write_text(json.dumps(summary, indent=1))
    brief = {k: v for k, v in summary.items() if k != "samples"}
    print("\nENDURANCE SUMMARY " + json.dumps(brief, indent=1))
    print("ENDURANCE SAMPLES " + json.dumps(samples))

    assert not summary["other_processes"], "soak run started processes other than load/collector"
    assert turns > 10 * seconds, f"only {turns} turns in {seconds} s: the load did not run"
    assert failed <= FAILED_SHARE * turns, f"{failed} of {turns} turns failed: {outcomes}"
    for role, metrics in fits.items():
        rss, threads, fds = metrics["rss_mb"], metrics["threads"], metrics["fds"]
        assert rss and threads and fds, f"too few samples of the {role} process after warm-up"
        assert rss["per_hour"] < RSS_MB_PER_HOUR, f"{role} RSS grows: {rss}"
        spread = LOAD_THREADS_SPREAD if role == "load" else THREADS_SPREAD
        assert threads["max"] - threads["min"] <= spread, f"{role} threads: {threads}"
        assert fds["max"] - fds["min"] <= FDS_SPREAD, f"{role} fds: {fds}"
        for name, fitted in (("threads", threads), ("fds", fds)):
            assert fitted["per_hour"] < COUNT_PER_HOUR, f"{role} {name} grow: {fitted}"
    assert summary["run_dir"]["per_hour"] < RUN_DIR_MB_PER_HOUR, summary["run_dir"]
