"""What redaction costs the run directory's writers: per-record time of `JsonlWriter.write`.

Every line soak writes goes through the process redactor (soak.redact). The load writes
thousands of records a second when a target misbehaves, so the redactor must stay
cheap. This writes the same records, in the same process and interleaved rounds, with:

- baseline: redaction switched off (the writer as it was before redaction);
- URL rules only: no `${ENV}` secrets in the profile, the redactor a process has by
  default (secret parts of URLs are masked, found by a `://` test);
- 3 secrets: a long token, one with `#` and `"`, and an all-digit one (one compiled
  alternation of every written form, longest first).

for two kinds of record: a chat aggregate (about 1 kB, with latency histograms, no
URL) and an anomaly whose detail echoes the target URL with its token. It prints
microseconds per record (best of the rounds) and the ratio to the baseline.

    python benchmarks/redact_jsonl.py                    # 20,000 records per round
    python benchmarks/redact_jsonl.py --records 100000
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import soak.rundir
from soak import redact
from soak.histogram import Histogram
from soak.rundir import JsonlWriter

ROUNDS = 5
SECRETS = ["s3cr3t-Tok3n-4242-aF9xQ2mZ7LwP", 'Xq7"zR#k9Lm2-Pv5', "86420975"]
URL = f"ws://127.0.0.1:8765/ws?token={SECRETS[0]}&session=abc"


def chat_record(rng: random.Random) -> dict[str, Any]:
    """A chats.jsonl aggregate like the load's (histograms of a busy interval)."""
    hists = {}
    for name in ("ttft_hist", "reply_hist", "ping_hist", "connect_hist"):
        hist = Histogram()
        for _ in range(200):
            hist.add(rng.lognormvariate(-1.5, 0.6))
        hists[name] = hist.to_json()
    return {
        "t": time.time(), "interval_s": 5.0, "target": "patched", "started": 210,
        "turns": 208, "in_flight": 40, "connections": 50, "stuck": 0, "connects": 3,
        "outcomes": {"ok": 205, "stall": 1, "error": 1, "disconnect": 1},
        "violations": {}, "mismatches": {}, "tokens": 9120, "frames": 9540, **hists,
        "ttft_max_s": 0.81, "reply_max_s": 2.4, "gap_max_s": 0.3, "pings": 12,
    }  # fmt: skip


def anomaly_record(rng: random.Random) -> dict[str, Any]:
    """An anomalies.jsonl record of a failed connect that echoes the URL and its token."""
    return {
        "t": time.time(), "target": "patched", "kind": "disconnect",
        "session": f"s-{rng.randrange(10**6)}", "request_id": None, "during": "connect",
        "turn_elapsed_s": 0.004, "ttft_s": None, "tokens": 0, "frames": 0,
        "detail": f"connect failed: {URL} isn't a valid URI: fragment identifier is meaningless",
        "last_frames": [], "close_code": None, "close_reason": None,
    }  # fmt: skip


class _Off:
    """A redactor that does nothing: the baseline."""

    @staticmethod
    def text(text: str) -> str:
        return text


def per_record_us(path: Path, records: list[dict[str, Any]]) -> float:
    """Microseconds per JsonlWriter.write of `records` (a fresh file each time)."""
    path.unlink(missing_ok=True)
    with JsonlWriter(path) as writer:
        began = time.perf_counter()
        for record in records:
            writer.write(record)
        elapsed = time.perf_counter() - began
    return elapsed / len(records) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000, help="records per round")
    args = parser.parse_args()
    rng = random.Random(7)
    kinds = {
        "chat aggregate": [chat_record(rng) for _ in range(args.records)],
        "anomaly with URL": [anomaly_record(rng) for _ in range(args.records)],
    }
    configs: dict[str, Callable[[], Any]] = {
        "baseline (off)": lambda: _Off(),
        "URL rules only": lambda: redact.Redactor(),
        "3 secrets": lambda: redact.Redactor(SECRETS),
    }
    best = {(kind, name): float("inf") for kind in kinds for name in configs}
    with tempfile.TemporaryDirectory(prefix="soak-bench-") as folder:
        path = Path(folder) / "bench.jsonl"
        for _ in range(ROUNDS):  # interleaved: drift of the machine hits every config alike
            for name, make in configs.items():
                current = make()
                soak.rundir.redactor = lambda current=current: current
                for kind, records in kinds.items():
                    key = (kind, name)
                    best[key] = min(best[key], per_record_us(path, records))
        written = path.read_text()
    assert SECRETS[0] not in written, "the secret reached the file"
    print(f"JsonlWriter.write, {args.records:,} records per round, best of {ROUNDS} rounds")
    for kind in kinds:
        base = best[(kind, "baseline (off)")]
        for name in configs:
            us = best[(kind, name)]
            print(f"{kind:18s} {name:16s} {us:7.2f} us/record  {us / base:5.2f}x baseline")


if __name__ == "__main__":
    main()
