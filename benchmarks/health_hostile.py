"""Hostile /health bodies: the cost of analysing them, and what health.jsonl stores of them.

Writes three synthetic run directories of one target with POLLS /health records each
(no other data), with the profile naming `diagnostics.loop_lag_ms` (loop-lag field) and
`diagnostics.thread_count` (a criterion):

- baseline: a normal 10-field body every poll;
- hostile, as an older soak stored it: KB kilobytes of numeric fields whose keys change
  every poll (the named fields last), every key kept;
- hostile, as this soak stores it: the same bodies through the collector's caps
  (soak.collect.health.HealthBodies).

Then loads each in a fresh subprocess through soak's health analysis (load_run and
health_fields, as `soak report` does) and prints the file size, the wall seconds, the
peak resident memory (summed over the process and its parse workers) and the health
columns of each, with ratios to the baseline.

    python benchmarks/health_hostile.py                    # 2,000 polls x 200 KB
    python benchmarks/health_hostile.py --polls 500 --kb 50
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from report_7day import Measured, measure

from soak.collect.health import HealthBodies, named_fields
from soak.rundir import HEALTH, RunDir

STARTED_AT = 1_795_000_000.0
POLL_S = 5.0
PROFILE = {
    "name": "bench",
    "collector": {"loop_lag_field": "diagnostics.loop_lag_ms"},
    "criteria": {"checks": ["health.diagnostics.thread_count.max < 100"]},
}

_ANALYSE = """
import sys
from soak.analyze import load_run
from soak.analyze.health import health_fields
health = load_run(sys.argv[1]).targets["app"].health
fields = health_fields(health, 0.0, None, None, wanted=["diagnostics.thread_count"])
print(len(health.columns), len(fields))
"""


def normal_body(poll: int) -> str:
    """A 10-field body like the built-in target's (about 300 bytes)."""
    return json.dumps(
        {
            "status": "ok",
            "version": "1.0",
            "uptime_s": poll * POLL_S,
            "diagnostics": {
                "thread_count": 40 + poll % 3,
                "asyncio_task_count": 30,
                "active_chats": 12,
                "connections": 12,
                "replies": poll * 15,
                "history_bytes": 100_000 + poll,
                "loop_lag_ms": 2.5,
            },
        },
        separators=(",", ":"),
    )


def hostile_body(poll: int, kb: int) -> str:
    """About `kb` KB of numeric fields with keys new every poll, the named fields last."""
    fields = ",".join(f'"p{poll}_{i}":{i}' for i in range(kb * 1024 // 16))
    return f'{{{fields},"diagnostics":{{"thread_count":41,"loop_lag_ms":2.5}}}}'


def write(root: Path, label: str, bodies: Iterable[str]) -> Path:
    """A run directory named `label` whose health.jsonl holds one record per body."""
    target = {"name": "app", "url": "ws://127.0.0.1:1/ws", "health": "http://127.0.0.1:1/h"}
    manifest = {"profile": PROFILE, "targets": [target]}
    run = RunDir.create(root, "bench", label, manifest, STARTED_AT)
    run.target_dir("app").mkdir(parents=True, exist_ok=True)
    with open(run.target_file("app", HEALTH), "w", encoding="utf-8") as out:
        t = STARTED_AT
        for body in bodies:
            t += POLL_S
            out.write(f'{{"t":{t},"status":200,"latency_s":0.002,"body":{body}}}\n')
    run.update_manifest(status="completed", ended_at=t)
    return run.path


def stored(polls: int, kb: int) -> Iterator[str]:
    """The hostile bodies as this soak's collector stores them."""
    caps = HealthBodies(named_fields(PROFILE))
    for poll in range(polls):
        body, _ = caps.trim(json.loads(hostile_body(poll, kb)))
        yield json.dumps(body, separators=(",", ":"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--polls", type=int, default=2000, help="/health records per run")
    parser.add_argument("--kb", type=int, default=200, help="size of a hostile body (KB)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="soak-bench-health-"))
    try:
        began = time.perf_counter()
        runs = {
            "baseline (10-field body)": write(
                root, "baseline", (normal_body(p) for p in range(args.polls))
            ),
            f"hostile, stored whole ({args.kb} KB)": write(
                root, "old", (hostile_body(p, args.kb) for p in range(args.polls))
            ),
            "hostile, stored capped": write(root, "capped", stored(args.polls, args.kb)),
        }
        print(f"{args.polls:,} polls per run, written in {time.perf_counter() - began:.0f} s")
        results: dict[str, tuple[float, Measured]] = {}
        for label, path in runs.items():
            size_mb = path.joinpath("targets", "app", HEALTH).stat().st_size / 1_048_576
            results[label] = (size_mb, measure([sys.executable, "-c", _ANALYSE, str(path)]))
        base_mb, base = next(iter(results.values()))
        for label, (size_mb, m) in results.items():
            columns, fields = m.output.split()
            print(
                f"{label:32s} {size_mb:8.2f} MB ({size_mb / base_mb:6.1f}x)  "
                f"{m.seconds:6.1f} s ({m.seconds / base.seconds:5.1f}x)  "
                f"{m.peak_mb:6.0f} MB peak ({m.peak_mb / base.peak_mb:4.1f}x)  "
                f"{columns} columns, {fields} fields summarised"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
