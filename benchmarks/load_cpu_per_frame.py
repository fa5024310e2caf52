"""CPU cost per streamed frame: soak's chat users vs a minimal asyncio `websockets` client.

Both drive the same built-in target (patched, long replies streamed without pauses) on
loopback with the same number of concurrent chats, one after the other, twice each
(baseline, soak, baseline, soak). The baseline is the least a correct client does: send a
prompt, json-parse every frame until `done`. soak's figure is its load process's CPU
(from generator.jsonl, so Python and Locust start-up are left out; the whole-process
figure is printed too) divided by the frames it recorded in chats.jsonl. Prints CPU
microseconds per frame for each and the ratio soak / baseline (goal <= 1.5).

    python benchmarks/load_cpu_per_frame.py                  # ~2 minutes
    python benchmarks/load_cpu_per_frame.py --chats 50 --seconds 20
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from load_common import load_profile, run_load

from soak.target import start_target

BASELINE = r"""
import asyncio, json, sys, time, uuid
from websockets.asyncio.client import connect

async def chat(url, deadline, counts):
    async with connect(url, compression=None, max_size=None, proxy=None) as ws:
        await ws.recv()  # session_switched
        while time.monotonic() < deadline:
            rid = uuid.uuid4().hex[:12]
            prompt = f"Reply to request {rid}. nonce={uuid.uuid4().hex[:8]}"
            await ws.send(json.dumps({"type": "message", "content": prompt, "request_id": rid}))
            while True:
                frame = json.loads(await ws.recv())
                counts[0] += 1
                if frame.get("type") in ("done", "error"):
                    break

async def main(url, chats, seconds):
    counts = [0]
    cpu = time.process_time()
    deadline = time.monotonic() + seconds
    await asyncio.gather(*(chat(url, deadline, counts) for _ in range(chats)))
    print(json.dumps({"frames": counts[0], "cpu_s": time.process_time() - cpu}))

asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
"""


def baseline(url: str, chats: int, seconds: float) -> tuple[float, int]:
    """CPU seconds (after imports) and frames of the minimal asyncio client."""
    output = subprocess.run(
        [sys.executable, "-c", BASELINE, url, str(chats), str(seconds)],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    ).stdout  # fmt: skip
    result = json.loads(output)
    return result["cpu_s"], result["frames"]


def soak(url: str, chats: int, seconds: float, folder: Path) -> tuple[float, float, int]:
    """CPU seconds in the load phase, CPU seconds of the whole process, and frames."""
    profile = load_profile(
        url, users=chats, spawn_rate=1000, think_time="0s", duration=seconds, idle_after=0,
        interval="2s", ping_every=0, linger=0,
    )  # fmt: skip
    run = run_load(folder, profile)
    steady = sum(r["cpu_percent"] / 100 * r["interval_s"] for r in run.generator())
    return steady, run.cpu_s, run.total("frames")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=20, help="concurrent chats (default 20)")
    parser.add_argument("--seconds", type=float, default=15.0, help="per measurement (15)")
    parser.add_argument("--tokens", type=int, default=100, help="frames per reply (100)")
    args = parser.parse_args()
    extra = ["--tokens", str(args.tokens), "--token-interval", "0"]
    base_us, soak_us, whole_us = [], [], []
    with (
        start_target(patched=True, extra_args=extra) as target,
        tempfile.TemporaryDirectory() as tmp,
    ):
        for round_number in (1, 2):
            cpu, frames = baseline(target.ws_url, args.chats, args.seconds)
            base_us.append(cpu / frames * 1e6)
            print(f"round {round_number} baseline: {frames:>8,} frames  {cpu:6.2f} s CPU  "
                  f"{base_us[-1]:6.1f} us/frame")  # fmt: skip
            steady, whole, frames = soak(
                target.ws_url, args.chats, args.seconds, Path(tmp) / f"r{round_number}"
            )
            soak_us.append(steady / frames * 1e6)
            whole_us.append(whole / frames * 1e6)
            print(f"round {round_number} soak:     {frames:>8,} frames  {steady:6.2f} s CPU  "
                  f"{soak_us[-1]:6.1f} us/frame  ({whole_us[-1]:.1f} with start-up)")  # fmt: skip
    ratio = statistics.median(soak_us) / statistics.median(base_us)
    print(f"\nCPU per frame, median of 2: baseline {statistics.median(base_us):.1f} us, "
          f"soak {statistics.median(soak_us):.1f} us "
          f"({statistics.median(whole_us):.1f} us with start-up)")  # fmt: skip
    print(
        f"ratio soak / asyncio baseline: {ratio:.2f}x (goal <= 1.5x) "
        f"{'PASS' if ratio <= 1.5 else 'MISS'}; {args.chats} chats, {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
