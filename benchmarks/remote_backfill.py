"""How fast a remote collector's backlog reaches the run after a cut, against a local copy.

Writes a remote run directory with N process samples of a target (like a day at 1 s
is 86,400), then, for the same records:

- baseline: read them with soak.rundir.read_jsonl and write them with JsonlWriter into
  another run directory (what importing costs with no network at all);
- backfill: a Receiver and a Shipper on loopback TCP, from connect until the run has
  every record (the wire protocol, its acknowledgements and the per-batch offsets file).

It prints records per second for each and the ratio backfill / baseline.

    python benchmarks/remote_backfill.py                   # 86,400 samples: a day at 1 s
    python benchmarks/remote_backfill.py --records 20000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from soak.collect.receiver import Receiver
from soak.collect.shipper import Shipper
from soak.rundir import PROCESS, JsonlWriter, RunDir, read_jsonl

TARGET = "gpu1"
SECRET = "benchmark-secret-0123456789"


def sample(n: int) -> dict:
    """A process sample of the size soak writes (about 300 bytes)."""
    return {
        "t": 1_800_000_000.0 + n, "pid": 4242, "create_time": 1_799_999_000.0,
        "threads": 60 + n % 7, "rss_mb": 812.25, "cpu_percent": 12.5, "cpu_user_s": n * 0.1,
        "cpu_system_s": n * 0.02, "fds": 120, "ctx_voluntary": n * 40,
        "ctx_involuntary": n, "io_read_mb": 1.5, "io_write_mb": 2.25, "children": 0,
        "sockets": {"ESTABLISHED": 20, "LISTEN": 1}, "uss_mb": 790.5,
    }  # fmt: skip


def run_dir(root: Path, name: str) -> RunDir:
    return RunDir.create(root, name, "bench", {"targets": [{"name": TARGET}]})


def count(run: RunDir) -> int:
    path = run.target_file(TARGET, PROCESS)
    return path.read_bytes().count(b"\n") if path.exists() else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=86_400)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        remote = run_dir(root / "remote", "collect")
        with JsonlWriter(remote.target_file(TARGET, PROCESS)) as out:
            for n in range(args.records):
                out.write(sample(n))

        began = time.perf_counter()
        local = run_dir(root / "local", "lab")
        with JsonlWriter(local.target_file(TARGET, PROCESS)) as out:
            for record in read_jsonl(remote.target_file(TARGET, PROCESS)):
                out.write(record)
        baseline_s = time.perf_counter() - began

        run = run_dir(root / "run", "lab")
        receiver = Receiver(run, ("127.0.0.1", 0), SECRET, [TARGET], lambda *a, **k: None)
        receiver.start()
        shipper = Shipper(remote, receiver.address, SECRET, [TARGET], lambda *a, **k: None)
        began = time.perf_counter()
        shipper.start()
        while count(run) < args.records:
            time.sleep(0.01)
        backfill_s = time.perf_counter() - began
        shipper.finish()
        receiver.close()

    rate = args.records / baseline_s, args.records / backfill_s
    print(f"records: {args.records:,}")
    print(f"baseline (read + write locally): {baseline_s:6.2f} s  {rate[0]:9,.0f} records/s")
    print(f"backfill over loopback TCP:      {backfill_s:6.2f} s  {rate[1]:9,.0f} records/s")
    print(f"ratio backfill / baseline:       {backfill_s / baseline_s:6.2f}x")


if __name__ == "__main__":
    main()
