"""Run the chat load of one profile with Locust in library mode.

`run_load` runs alone (a local runner) or as the master of workers (the
workers run the users; the master merges their reports and alone writes the
run directory). Either way a `SoakShape` drives the user count along the
profile's shape, with a phase event at every change, then `idle_after`
seconds with every user stopped and every connection closed (idle CPU shows
orphaned work), then `stop`. SIGTERM/SIGINT end the run early; the last
partial interval is still written. `run_worker` is a worker process.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
from gevent.event import Event
from locust import LoadTestShape
from locust.env import Environment

from soak.formatting import plural
from soak.load.distributed import MasterSide, WorkerSide, master_options
from soak.load.locust_compat import master_port, stop_shape, version_note, worker_main
from soak.load.monitor import GeneratorMonitor
from soak.load.record import ChatRecorder
from soak.load.shapes import IDLE, Step, plan
from soak.load.users import ChatSettings, user_classes
from soak.load.webui import bridge_turns_to_locust, start_web_ui
from soak.protocols import adapter_for
from soak.rundir import ANOMALIES, CHATS, EVENTS, GENERATOR, JsonlWriter, on_storage_failure

log = logging.getLogger("soak.load")

#: How long a master waits for its workers to connect, in seconds.
WORKERS_TIMEOUT_S = 120.0
#: Exit code of a load process whose workers (or master) never came.
EXIT_NO_WORKERS = 3


class SoakShape(LoadTestShape):
    """Drives a Locust runner along `plan`; `on_phase(step)` hears every phase change."""

    def __init__(self, load: dict[str, Any], on_phase: Callable[[Step], None]) -> None:
        super().__init__()
        self.load = load
        self.on_phase = on_phase
        self.phase: str | None = None

    def tick(self) -> tuple[int, float]:
        step = plan(self.load, self.get_run_time()) or IDLE
        if step.phase != self.phase:
            self.phase = step.phase
            self.on_phase(step)
        return step.users, self.load["spawn_rate"]


def _stop_on_signals() -> Event:
    stop = Event()
    gevent.signal_handler(signal.SIGTERM, stop.set)
    gevent.signal_handler(signal.SIGINT, stop.set)
    return stop


def run_load(
    run_dir: Path,
    profile: dict[str, Any],
    *,
    workers: int = 0,
    master_bind: tuple[str, int] | None = None,
    web_port: int | None = None,
) -> int:
    """Drive the profile's load against its targets, writing into `run_dir`.

    With `workers` > 0 or a `master_bind` (host, port) this process is a
    Locust master listening there (port 0: any free port) and waits for
    max(workers, 1) workers before the load starts. `web_port`: serve
    Locust's web UI on 127.0.0.1. Returns the process exit code.
    """
    load = profile["load"]
    targets = profile["targets"]
    names = [target["name"] for target in targets]
    stop = _stop_on_signals()
    on_storage_failure(lambda error: stop.set())  # load that is not recorded is not a soak
    distributed = workers > 0 or master_bind is not None

    with (
        JsonlWriter(run_dir / CHATS) as chats,
        JsonlWriter(run_dir / ANOMALIES) as anomalies,
        JsonlWriter(run_dir / EVENTS) as events,
        JsonlWriter(run_dir / GENERATOR) as generator,
    ):

        def event(kind: str, message: str, **fields: Any) -> None:
            record = {"t": time.time(), "source": "load", "kind": kind, "message": message}
            events.write({**record, **fields})
            log.info(message)

        def on_phase(step: Step) -> None:
            event("phase", f"phase {step.phase}: {plural(step.users, 'user')}", phase=step.phase,
                  users=step.users)  # fmt: skip

        recorder = ChatRecorder(names, chats.write, anomalies.write)
        recorder.write_event = events.write
        settings = ChatSettings.from_profile(profile, adapter_for(profile["protocol"]), recorder)
        env = Environment(
            user_classes=user_classes(targets, settings), shape_class=SoakShape(load, on_phase)
        )
        master: MasterSide | None = None
        if distributed:
            host, port = master_bind or ("127.0.0.1", 0)
            env.parsed_options = master_options()
            runner = env.create_master_runner(master_bind_host=host, master_bind_port=port)
            master = MasterSide(
                runner, recorder, profile, generator.write, events.write, bool(web_port)
            )
            expected = max(workers, 1)
            port = master_port(runner)
            event("workers", f"master on {host}:{port} waiting for {plural(expected, 'worker')}",
                  workers=expected, port=port)  # fmt: skip
            if not master.wait_for_workers(expected, WORKERS_TIMEOUT_S, stop):
                connected = f"only {runner.worker_count} of {plural(expected, 'worker')} connected"
                event("stop", connected, phase="stop")
                runner.quit()
                return EXIT_NO_WORKERS
        else:
            runner = env.create_local_runner()
            if web_port:
                bridge_turns_to_locust(env, recorder)
        trimmer = start_web_ui(env, web_port) if web_port else None
        monitor = GeneratorMonitor(
            None,
            lambda: 0 if distributed else runner.user_count,
            lambda: sum(recorder.connections.values()),
        )
        recorder.pauses = monitor.pauses

        def flush_every(interval_s: float) -> None:
            next_at = time.monotonic() + interval_s
            while True:
                gevent.sleep(max(next_at - time.monotonic(), 0))
                recorder.flush()
                generator.write(monitor.sample())
                # after a pause, one record for the missed span, not a burst of empty ones
                next_at = max(next_at + interval_s, time.monotonic() + interval_s / 2)

        flusher = gevent.spawn(flush_every, load["interval"])
        targets_text = ", ".join(names)
        log.info("load: %s shape, up to %d users on %s", load["shape"], load["users"], targets_text)
        if note := version_note():
            log.warning(note)
        runner.start_shape()
        stop.wait(load["duration"] + load["idle_after"])
        stop_shape(runner)
        if master is not None:
            master.collect_finals()
        runner.quit()
        flusher.kill()
        recorder.flush()
        if monitor.seconds_since_sample() >= 1.0:  # a shorter tail says nothing about CPU
            generator.write(monitor.sample())
        monitor.stop()
        if trimmer is not None:
            trimmer.kill()
            env.web_ui.stop()
        outcome = "stopped early" if stop.is_set() else "finished"
        event("phase", f"load {outcome}: {dict(recorder.totals)}", phase="stop")
    return 0


def run_worker(master_host: str, master_port: int) -> int:
    """Join a master at master_host:master_port and run its users until it quits."""
    stop = _stop_on_signals()
    env = Environment(user_classes=[])
    try:
        runner = env.create_worker_runner(master_host, master_port)
    except ConnectionError:
        print(
            f"soak worker: no load master answered at {master_host}:{master_port}; start "
            "soak run ... --master-bind HOST:PORT there first, and check the address.",
            file=sys.stderr,
        )
        return EXIT_NO_WORKERS
    WorkerSide(env, runner)
    log.info("worker connected to %s:%d", master_host, master_port)
    done = gevent.spawn(worker_main(runner).join)
    while not done.ready():
        if stop.wait(1.0):
            runner.quit()
            break
    return 0
