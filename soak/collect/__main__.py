"""Entry point of the collector process.

`python -m soak.collect --run-dir DIR [--metrics-port PORT] < profile.json`: the
resolved profile (secrets included) comes on stdin, never in argv or on disk; its
secrets make the redactor of this process (its files, its stderr).
"""

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from soak.collect.collector import run_collector
from soak.errors import SoakError
from soak.redact import guard_output, install_from_payload
from soak.rundir import EXIT_CHILD_STORAGE, storage_failure


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m soak.collect")
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--metrics-port", type=int, default=None)
    args = parser.parse_args()
    profile = json.load(sys.stdin)
    install_from_payload(profile)
    guard_output()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        run_collector(args.run_dir, profile, stop, args.metrics_port)
    except SoakError as exc:
        print(f"soak collector: error: {exc.message}", file=sys.stderr)
        sys.exit(EXIT_CHILD_STORAGE if storage_failure() else exc.exit_code)
    if storage_failure():
        sys.exit(EXIT_CHILD_STORAGE)


main()
