"""Entry point of a load process.

    python -m soak.load --run-dir DIR [--workers N] [--master-bind HOST:PORT] [--web PORT] < P
    python -m soak.load --worker HOST[:PORT]

The first form runs the load alone, or as the master of N workers; the
resolved profile P (JSON, secrets included) arrives on stdin, never in argv or on
disk. The second form is a worker: it gets the profile from its master.
gevent must patch the standard library before anything else imports it.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from soak.errors import StorageError  # noqa: E402
from soak.load.distributed import parse_address  # noqa: E402
from soak.load.runner import run_load, run_worker  # noqa: E402
from soak.redact import guard_output, install_from_payload  # noqa: E402
from soak.rundir import EXIT_CHILD_STORAGE, storage_failure  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m soak.load")
    parser.add_argument("--run-dir", type=Path, help="run directory (alone or master)")
    parser.add_argument("--workers", type=int, default=0, help="workers to wait for (master)")
    parser.add_argument("--master-bind", type=parse_address, help="master address HOST:PORT")
    parser.add_argument("--web", type=int, metavar="PORT", help="Locust web UI on 127.0.0.1")
    parser.add_argument("--worker", type=parse_address, metavar="HOST:PORT", help="join a master")
    parser.add_argument("--log", type=Path, help="log file (worker; default: stderr)")
    args = parser.parse_args()
    sys.argv[1:] = []  # Locust's web UI parses sys.argv as its own options
    log_file = args.run_dir / "load.log" if args.run_dir else args.log
    logging.basicConfig(
        filename=log_file,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    guard_output()  # the log and stderr (tracebacks): a worker's secrets come with its profile
    if args.worker:
        return run_worker(*args.worker)
    if args.run_dir is None:
        parser.error("give --run-dir (alone or master) or --worker HOST:PORT")
    profile = json.load(sys.stdin)
    install_from_payload(profile)  # and the secrets stay in it, for the workers
    try:
        code = run_load(
            args.run_dir, profile, workers=args.workers, master_bind=args.master_bind,
            web_port=args.web,
        )  # fmt: skip
    except StorageError:
        code = EXIT_CHILD_STORAGE
    return EXIT_CHILD_STORAGE if storage_failure() else code


sys.exit(main())
