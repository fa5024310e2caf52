"""How many concurrent open chats one load process holds at one turn a minute each.

One soak load process (one core at most: gevent runs in one thread) ramps to `--chats`
chats against the built-in target (patched: no faults) on loopback, each chat one
long-lived WebSocket with a turn every 30-90 s and a ping probe every 30 s, and holds
them for `--hold` seconds. Prints, for the hold phase: chats connected, turns per
second, outcomes (goal: no stall, timeout or disconnect), TTFT p50/p95, and the load
process's own CPU (percent of one core) and worst gevent loop lag from generator.jsonl
(goal: far from saturated, so no stall is caused by soak itself). Goal: >= 2,000 chats.

    python benchmarks/load_concurrent_chats.py                  # ~5 minutes, 2,000 chats
    python benchmarks/load_concurrent_chats.py --chats 3000 --hold 300
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from load_common import load_profile, run_load

from soak.histogram import merge_all, quantile
from soak.target import start_target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=2000, help="chats to hold (2000)")
    parser.add_argument("--spawn-rate", type=float, default=25.0, help="chats opened per second")
    parser.add_argument("--hold", type=float, default=150.0, help="seconds at full count (150)")
    args = parser.parse_args()
    ramp_s = args.chats / args.spawn_rate
    with start_target(patched=True) as target, tempfile.TemporaryDirectory() as tmp:
        profile = load_profile(
            target.ws_url, users=args.chats, spawn_rate=args.spawn_rate,
            think_time=["30s", "90s"], duration=ramp_s + args.hold, idle_after=0,
            interval="10s", ping_every="30s", first_token_timeout="10s", reply_timeout="30s",
        )  # fmt: skip
        print(f"ramping to {args.chats:,} chats in {ramp_s:.0f} s, holding {args.hold:.0f} s ...")
        started = time.time()
        run = run_load(Path(tmp) / "run", profile)
        hold_from = started + ramp_s + 15  # the first turns of the last chats settle
        hold_to = started + ramp_s + args.hold  # then the users are stopped
        chats = [r for r in run.chats() if hold_from <= r["t"] <= hold_to]
        health = [r for r in run.generator() if hold_from <= r["t"] <= hold_to]
        everything = run.outcomes()
    held = [r["connections"] for r in chats]
    turns = sum(r["turns"] for r in chats)
    seconds = sum(r["interval_s"] for r in chats)
    ttft = merge_all(r["ttft_hist"] for r in chats)
    bad = {k: v for k, v in everything.items() if k != "ok" and v}
    cpu = [r["cpu_percent"] for r in health]
    lag_ms = max(r["loop_lag_max_s"] for r in health) * 1000
    print(f"chats connected during the hold: min {min(held):,}, max {max(held):,}")
    print(f"turns in the hold: {turns:,} ({turns / seconds:.1f}/s); whole run: {everything}")
    print(f"TTFT p50 {quantile(ttft, 0.5) * 1000:.1f} ms, p95 {quantile(ttft, 0.95) * 1000:.1f} ms")
    print(f"load process: CPU {statistics.mean(cpu):.0f}% of one core on average, "
          f"{max(cpu):.0f}% at most; RSS {max(r['rss_mb'] for r in health):.0f} MB; "
          f"gevent loop lag max {lag_ms:.0f} ms")  # fmt: skip
    verdict = "PASS" if min(held) >= args.chats and not bad else "MISS"
    print(
        f"held {min(held):,} of {args.chats:,} chats with "
        f"{bad or 'no failed turn'} (goal >= 2,000, none failed): {verdict}"
    )


if __name__ == "__main__":
    main()
