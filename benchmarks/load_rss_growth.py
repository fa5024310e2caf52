"""Memory of one load process over a compressed long run: does RSS stay flat?

One soak load process drives `--chats` chats with no think time against the built-in
target (patched, but every 50th reply stalls) on loopback for `--seconds`: hundreds of
turns a second, a new connection every 20 turns, a ping probe every second, Locust's
web UI on (so Locust's own request statistics are fed too, and trimmed). RSS comes from
generator.jsonl every 5 s; after `--warmup` s the least-squares slope is printed in MB
per hour, with MB per million turns and the number of turns the run compressed.
Goal: flat (a slope within noise, a few MB/h at most).

    python benchmarks/load_rss_growth.py                 # ~8.5 minutes
    python benchmarks/load_rss_growth.py --seconds 600 --chats 100
"""

from __future__ import annotations

import argparse
import socket
import tempfile
from pathlib import Path

from load_common import load_profile, run_load, slope_per_hour

from soak.target import start_target


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=50, help="concurrent chats (50)")
    parser.add_argument("--seconds", type=float, default=480.0, help="run length (480)")
    parser.add_argument("--warmup", type=float, default=90.0, help="left out of the fit (90)")
    args = parser.parse_args()
    faults = ["--tokens", "10", "--token-interval", "0", "--stall-every", "50"]
    with (
        start_target(patched=True, extra_args=faults) as target,
        tempfile.TemporaryDirectory() as tmp,
    ):
        profile = load_profile(
            target.ws_url, users=args.chats, spawn_rate=100, think_time="0s",
            duration=args.seconds, idle_after=0, interval="5s", ping_every="1s",
            turns_per_connection=20, first_token_timeout="1s", reply_timeout="1s",
        )  # fmt: skip
        print(f"{args.chats} chats, no think time, {args.seconds:.0f} s ...")
        run = run_load(Path(tmp) / "run", profile, "--web", str(free_port()))
        samples = run.generator()
        turns = run.total("turns")
        outcomes = run.outcomes()
    start = samples[0]["t"]
    points = [(r["t"] - start, r["rss_mb"]) for r in samples if r["t"] - start >= args.warmup]
    slope = slope_per_hour(points)
    rate = turns / args.seconds
    rss = [v for _, v in points]
    print(f"turns: {turns:,} ({rate:.0f}/s; at 1 turn/min per chat that is "
          f"{turns / 60 / 24:,.0f} chat-days); outcomes {outcomes}")  # fmt: skip
    print(f"RSS after warm-up: {min(rss):.1f} .. {max(rss):.1f} MB over {len(rss)} samples")
    every = max(1, len(points) // 6)
    trail = ", ".join(f"{t / 60:.0f} min {v:.1f}" for t, v in points[::every])
    print(f"RSS along the run (MB): {trail}")
    print(f"RSS slope: {slope:+.1f} MB/hour = {slope / (rate * 3600) * 1e6:+.2f} MB per million "
          f"turns (goal: flat)")  # fmt: skip


if __name__ == "__main__":
    main()
