"""Entry point of the load process: `python -m soak.load --run-dir DIR < profile.json`.

The resolved profile (secrets included) arrives on stdin, never in argv or on
disk. gevent must patch the standard library before anything else imports it.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from soak.load.runner import run_load  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m soak.load")
    parser.add_argument("--run-dir", type=Path, required=True)
    args = parser.parse_args()
    profile = json.load(sys.stdin)
    logging.basicConfig(
        filename=args.run_dir / "load.log",
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    run_load(args.run_dir, profile)


main()
