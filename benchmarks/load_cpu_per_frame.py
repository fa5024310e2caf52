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
import tempfile
from pathlib import Path

from load_common import FrameCosts, run_baseline, soak_cpu

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=20, help="concurrent chats (default 20)")
    parser.add_argument("--seconds", type=float, default=15.0, help="per measurement (15)")
    parser.add_argument("--tokens", type=int, default=100, help="frames per reply (100)")
    args = parser.parse_args()
    extra = ["--tokens", str(args.tokens), "--token-interval", "0"]
    costs = FrameCosts()
    with (
        start_target(patched=True, extra_args=extra) as target,
        tempfile.TemporaryDirectory() as tmp,
    ):
        for round_number in (1, 2):
            argv = (target.ws_url, str(args.chats), str(args.seconds))
            result = run_baseline(BASELINE, *argv, timeout=args.seconds + 60)
            costs.add(round_number, "websockets", result["cpu_s"], result["frames"])
            folder = Path(tmp) / f"r{round_number}"
            steady, whole, frames, _ = soak_cpu(target.ws_url, args.chats, args.seconds, folder)
            costs.add(round_number, "soak", steady, frames, whole_s=whole)
    costs.summary(args.chats)


if __name__ == "__main__":
    main()
