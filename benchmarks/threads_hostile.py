"""Churning thread names: the cost of analysing them, and what threads.jsonl stores of them.

A server that gives every thread a name of its own (a random suffix, a request id) made
an older soak write one family per name: ~460 MB of threads.jsonl a day for 300 threads,
and a report with one column per name. Writes three synthetic run directories of one
target with SAMPLES thread samples (one a second) and the matching process samples:

- baseline: 20 families that never change;
- hostile, as an older soak stored it: THREADS families whose names change every sample;
- hostile, as this soak stores it: the same threads through the collector's family cap
  (soak.collect.process.ThreadNames: the first 64 families, the rest as `other`).

Then loads each in a fresh subprocess through soak's analysis (load_run, as `soak
report` does) and prints the file size, wall seconds, peak resident memory and family
columns of each, with ratios to the baseline.

    python benchmarks/threads_hostile.py                      # 20,000 samples x 300 threads
    python benchmarks/threads_hostile.py --samples 5000 --threads 100
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from report_7day import Measured, measure

from soak.rundir import PROCESS, THREADS, FamilyCap, RunDir

STARTED_AT = 1_795_000_000.0

_ANALYSE = """
import sys
from soak.analyze import load_run
families = load_run(sys.argv[1]).targets["app"].families
print(families.shape[1])
"""

Families = Callable[[int], dict[str, int]]


def stable(sample: int) -> dict[str, int]:
    """20 families of a well-behaved server."""
    return {f"worker-{chr(97 + i)}": 2 for i in range(20)}


def churning(threads: int) -> Families:
    """`threads` families whose names are new every sample (letters: nothing folds)."""

    def names(sample: int) -> dict[str, int]:
        return {f"job-{_letters(sample * threads + i)}": 1 for i in range(threads)}

    return names


def capped(families: Families) -> Families:
    """`families` as the collector stores them (soak.rundir.FamilyCap)."""
    cap = FamilyCap()

    def bounded(sample: int) -> dict[str, int]:
        out: Counter[str] = Counter()
        for family, count in families(sample).items():
            out[cap(family)] += count
        return dict(out)

    return bounded


def _letters(n: int) -> str:
    word = ""
    while True:
        n, digit = divmod(n, 26)
        word += chr(97 + digit)
        if not n:
            return word


def write(root: Path, label: str, samples: int, families: Families) -> Path:
    """A run directory named `label` with `samples` process and thread samples."""
    manifest = {"profile": {"name": "bench"}, "targets": [{"name": "app", "pid": 7}]}
    run = RunDir.create(root, "bench", label, manifest, STARTED_AT)
    run.target_dir("app").mkdir(parents=True, exist_ok=True)
    with (
        open(run.target_file("app", PROCESS), "w", encoding="utf-8") as process,
        open(run.target_file("app", THREADS), "w", encoding="utf-8") as threads,
    ):
        for sample in range(samples):
            t = STARTED_AT + sample
            counts = families(sample)
            total = sum(counts.values())
            process.write(
                f'{{"t":{t},"pid":7,"create_time":{STARTED_AT},"threads":{total},'
                f'"rss_mb":100.0,"cpu_percent":1.0,"cpu_user_s":{sample * 0.01:.2f},'
                f'"cpu_system_s":0.0,"fds":20,"children":0}}\n'
            )
            record = {"t": t, "pid": 7, "families": counts}
            threads.write(json.dumps(record, separators=(",", ":")) + "\n")
    run.update_manifest(status="completed", ended_at=STARTED_AT + samples)
    return run.path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20_000, help="samples per run (1 s)")
    parser.add_argument("--threads", type=int, default=300, help="threads of the churner")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="soak-bench-threads-"))
    try:
        began = time.perf_counter()
        churn = churning(args.threads)
        runs = {
            "baseline (20 stable families)": write(root, "baseline", args.samples, stable),
            f"churning, stored whole ({args.threads})": write(root, "old", args.samples, churn),
            "churning, stored capped": write(root, "capped", args.samples, capped(churn)),
        }
        print(f"{args.samples:,} samples per run, written in {time.perf_counter() - began:.0f} s")
        results: dict[str, tuple[float, Measured]] = {}
        for label, path in runs.items():
            size_mb = path.joinpath("targets", "app", THREADS).stat().st_size / 1_048_576
            results[label] = (size_mb, measure([sys.executable, "-c", _ANALYSE, str(path)]))
        base_mb, base = next(iter(results.values()))
        for label, (size_mb, m) in results.items():
            print(
                f"{label:34s} {size_mb:8.2f} MB ({size_mb / base_mb:6.1f}x)  "
                f"{m.seconds:6.1f} s ({m.seconds / base.seconds:5.1f}x)  "
                f"{m.peak_mb:6.0f} MB peak ({m.peak_mb / base.peak_mb:4.1f}x)  "
                f"{m.output.strip()} family columns"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
