"""Run the chat load of one profile with Locust in library mode.

Phases: `load` for load.duration (users spawned at load.spawn_rate), then
`idle` for load.idle_after with every user stopped and every connection
closed (idle CPU shows orphaned work), then `stop`. SIGTERM/SIGINT end the
current phase early; the last partial interval is still written.
"""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path
from typing import Any

import gevent
from gevent.event import Event
from locust.env import Environment

from soak.load.record import ChatRecorder
from soak.load.users import user_classes
from soak.protocols import adapter_for
from soak.rundir import ANOMALIES, CHATS, EVENTS, JsonlWriter

log = logging.getLogger("soak.load")


def run_load(run_dir: Path, profile: dict[str, Any]) -> None:
    """Drive the profile's load against its targets, writing into `run_dir`."""
    load = profile["load"]
    targets = profile["targets"]
    names = [target["name"] for target in targets]
    stop = Event()
    gevent.signal_handler(signal.SIGTERM, stop.set)
    gevent.signal_handler(signal.SIGINT, stop.set)

    with (
        JsonlWriter(run_dir / CHATS) as chats,
        JsonlWriter(run_dir / ANOMALIES) as anomalies,
        JsonlWriter(run_dir / EVENTS) as events,
    ):
        recorder = ChatRecorder(names, chats, anomalies)
        adapter = adapter_for(profile["protocol"])
        classes = user_classes(
            targets, load["users"], load, profile["protocol"]["prompt"], adapter, recorder
        )
        env = Environment(user_classes=classes)
        runner = env.create_local_runner()
        flusher = gevent.spawn(_flush_every, recorder, load["interval"])

        def phase(name: str, message: str) -> None:
            events.write(
                {
                    "t": time.time(),
                    "source": "load",
                    "kind": "phase",
                    "phase": name,
                    "message": message,
                }
            )
            log.info(message)

        phase(
            "load", f"{load['users']} users on {len(targets)} target(s) for {load['duration']:g} s"
        )
        runner.start(load["users"], spawn_rate=load["spawn_rate"])
        stop.wait(load["duration"])
        runner.stop()
        if load["idle_after"] and not stop.is_set():
            phase("idle", f"all users stopped; idle for {load['idle_after']:g} s")
            stop.wait(load["idle_after"])
        runner.quit()
        flusher.kill()
        recorder.flush()
        outcome = "stopped early" if stop.is_set() else "finished"
        phase("stop", f"load {outcome}: {dict(recorder.totals)}")


def _flush_every(recorder: ChatRecorder, interval_s: float) -> None:
    next_at = time.monotonic() + interval_s
    while True:
        gevent.sleep(max(next_at - time.monotonic(), 0))
        recorder.flush()
        next_at += interval_s
