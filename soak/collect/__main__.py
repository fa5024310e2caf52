"""Entry point of the collector process: `python -m soak.collect --run-dir DIR < profile.json`."""

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from soak.collect.collector import run_collector


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m soak.collect")
    parser.add_argument("--run-dir", type=Path, required=True)
    args = parser.parse_args()
    profile = json.load(sys.stdin)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    run_collector(args.run_dir, profile, stop)


main()
