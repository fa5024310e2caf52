"""The parts of Locust soak uses that are not its documented API, in one place.

soak drives Locust as a library (no locustfile, no command-line main), which reaches a few
internals: the option defaults a master needs, its worker list and port, the report
interval of workers, the shape greenlet, the per-second counters of its stats. They are
read here only, for the Locust versions in TESTED (pyproject's range); a release that
moves one fails tests/test_locust_compat.py, which names it, instead of a run days in.
"""

from __future__ import annotations

from argparse import Namespace
from typing import Any

import locust
import locust.runners
from locust import argument_parser
from locust.runners import MasterRunner, Runner, WorkerRunner
from locust.stats import RequestStats

#: Locust versions soak is tested with (as in pyproject.toml's dependency).
TESTED = ">=2.30,<3"


def version_note() -> str | None:
    """A line for the load log when the installed Locust is outside TESTED, else None."""
    major, minor = (int(part) for part in locust.__version__.split(".")[:2])
    if (2, 30) <= (major, minor) < (3, 0):
        return None
    return f"Locust {locust.__version__} is outside the versions soak is tested with ({TESTED})"


def default_options() -> Namespace:
    """Locust's default options, read from no config file and no LOCUST_* variable."""
    parser = argument_parser.get_empty_argument_parser()
    argument_parser.setup_parser_arguments(parser)
    return parser.parse_args(args=[], config_file_contents="", env_vars={})


def set_worker_report_interval(seconds: float) -> None:
    """How often a worker reports to its master (a module global of locust.runners)."""
    locust.runners.WORKER_REPORT_INTERVAL = seconds


def worker_ids(runner: MasterRunner) -> set[str]:
    """The ids of the workers connected to a master."""
    return {client.id for client in runner.clients.all}


def master_port(runner: MasterRunner) -> int:
    """The port a master listens on (the one it bound when asked for port 0)."""
    return int(runner.server.port)


def stop_shape(runner: Runner) -> None:
    """Stop the greenlet that drives the load shape, if one runs."""
    if runner.shape_greenlet is not None:
        runner.shape_greenlet.kill(block=True)


def worker_main(runner: WorkerRunner) -> Any:
    """The greenlet a worker runs until its master tells it to quit."""
    return runner.greenlet


def per_second_counters(stats: RequestStats) -> list[dict[int, int]]:
    """Every per-second counter of `stats` ({unix second: count}), total and per name."""
    entries = (stats.total, *stats.entries.values())
    return [c for e in entries for c in (e.num_reqs_per_sec, e.num_fail_per_sec)]


def stats_history(stats: RequestStats) -> list[Any]:
    """The history list of `stats` (filled by Locust's own main only, trimmed by soak)."""
    return stats.history
