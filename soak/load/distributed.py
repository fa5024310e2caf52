"""Distributed load: a Locust master that alone writes the run directory, and workers.

The master sends each worker the resolved profile when it asks (`soak_hello` ->
`soak_profile`; secrets included, so master and workers must talk over a
trusted network). Workers run the chat users and add their interval deltas,
anomalies and generator samples to Locust's own worker report (every
`REPORT_EVERY_S`); the master merges them into its recorder. At the end the
master asks every worker for a final report (`soak_flush` -> `soak_final`,
with the worker's cumulative totals, written to events.jsonl as
`worker_totals`) before it quits them, so no counted turn is lost.
"""

from __future__ import annotations

import logging
import time
from argparse import Namespace
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from soak.load.locust_compat import default_options, set_worker_report_interval, worker_ids
from soak.load.monitor import GeneratorMonitor, process_id
from soak.load.record import ChatRecorder
from soak.load.users import ChatSettings, user_classes
from soak.load.webui import bridge_turns_to_locust
from soak.protocols import adapter_for
from soak.redact import install_from_payload

log = logging.getLogger("soak.load")

#: How often workers report to the master, in seconds (Locust's default is 3).
REPORT_EVERY_S = 1.0
#: How long the master waits for the workers' final reports, in seconds.
FINAL_REPORT_TIMEOUT_S = 20.0
#: Default port of a master that remote workers join.
DEFAULT_MASTER_PORT = 5557


def master_options() -> Namespace:
    """Locust's default options (no config files, no LOCUST_* variables) with rebalancing
    on, so a worker that joins a running master gets its share of the users."""
    options = default_options()
    options.enable_rebalancing = True
    return options


def parse_address(text: str, default_port: int = DEFAULT_MASTER_PORT) -> tuple[str, int]:
    """HOST[:PORT] -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, default_port
    if not port.isdigit():
        raise ValueError(f"expected HOST[:PORT], got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


class MasterSide:
    """The master's half: hands out the profile, merges worker reports."""

    def __init__(
        self,
        runner: MasterRunner,
        recorder: ChatRecorder,
        profile: dict[str, Any],
        write_generator: Callable[[dict[str, Any]], None],
        write_event: Callable[[dict[str, Any]], None],
        web_stats: bool,
    ) -> None:
        self.runner = runner
        self.recorder = recorder
        self.write_generator = write_generator
        self.write_event = write_event
        self.finals: dict[str, dict[str, Any] | None] = {}
        events = runner.environment.events

        def on_hello(environment: Environment, msg: Any, **_: Any) -> None:
            runner.send_message(
                "soak_profile", {"profile": profile, "web_stats": web_stats}, msg.node_id
            )
            log.info("worker %s joined", msg.node_id)

        def on_report(client_id: str, data: dict[str, Any]) -> None:
            if "soak" in data:
                self._merge(data["soak"])

        events.worker_report.add_listener(on_report)
        runner.register_message("soak_hello", on_hello)
        runner.register_message("soak_final", self._on_final)

    def _merge(self, report: dict[str, Any]) -> None:
        if report.get("delta"):
            self.recorder.merge_delta(report["delta"])
        for sample in report.get("generator", []):
            self.write_generator(sample)

    def _on_final(self, environment: Environment, msg: Any, **_: Any) -> None:
        report = msg.data or {}
        self._merge(report)
        delta = report.get("delta")
        self.finals[msg.node_id] = delta
        if not delta:
            return  # a worker that never got the profile
        worker = str(delta.get("worker"))
        self.recorder.forget_worker(worker)
        self.write_event(
            {
                "t": time.time(),
                "source": "load",
                "kind": "worker_totals",
                "worker": worker,
                "outcomes": delta.get("totals", {}),
                "turns": sum(delta.get("totals", {}).values()),
                "message": f"worker {worker} final report",
            }
        )

    def wait_for_workers(self, count: int, timeout: float, stop: gevent.event.Event) -> bool:
        """Wait until `count` workers are connected (False after `timeout` s or a stop)."""
        deadline = time.monotonic() + timeout
        while self.runner.worker_count < count:
            if time.monotonic() > deadline or stop.wait(0.2):
                return False
        return True

    def collect_finals(self, timeout: float = FINAL_REPORT_TIMEOUT_S) -> None:
        """Ask every worker to stop its users and send what it has; wait for all answers."""
        expected = worker_ids(self.runner)
        self.runner.send_message("soak_flush")
        deadline = time.monotonic() + timeout
        while not expected <= set(self.finals) and time.monotonic() < deadline:
            gevent.sleep(0.1)
        missing = expected - set(self.finals)
        if missing:
            log.warning("no final report from %d worker(s): %s", len(missing), sorted(missing))


class WorkerSide:
    """A worker's half: waits for the profile, runs users, reports to the master."""

    def __init__(self, env: Environment, runner: WorkerRunner) -> None:
        self.env = env
        self.runner = runner
        self.worker = process_id()
        self.recorder: ChatRecorder | None = None
        self.monitor: GeneratorMonitor | None = None
        self.samples: list[dict[str, Any]] = []
        set_worker_report_interval(REPORT_EVERY_S)
        runner.register_message("soak_profile", self._on_profile)
        runner.register_message("soak_flush", self._on_flush)

        def on_report(client_id: str, data: dict[str, Any]) -> None:
            if self.recorder is not None:
                data["soak"] = self._report()

        env.events.report_to_master.add_listener(on_report)
        runner.send_message("soak_hello")  # handlers are in place: ask for the profile

    def _on_profile(self, environment: Environment, msg: Any, **_: Any) -> None:
        if self.recorder is not None:
            return  # a master that restarted its handshake: keep the users we have
        profile = msg.data["profile"]
        install_from_payload(profile)  # this worker's log masks the secrets too
        names = [target["name"] for target in profile["targets"]]
        self.recorder = ChatRecorder(names, None, None, worker=self.worker)
        settings = ChatSettings.from_profile(
            profile, adapter_for(profile["protocol"]), self.recorder
        )
        self.env.user_classes[:] = user_classes(profile["targets"], settings)
        if msg.data.get("web_stats"):
            bridge_turns_to_locust(self.env, self.recorder)
        recorder = self.recorder
        self.monitor = GeneratorMonitor(
            self.worker, lambda: self.runner.user_count, lambda: sum(recorder.connections.values())
        )
        recorder.pauses = self.monitor.pauses
        gevent.spawn(self._sample_every, profile["load"]["interval"])
        log.info("profile %s received: %d target(s)", profile.get("name"), len(names))

    def _sample_every(self, interval_s: float) -> None:
        assert self.monitor is not None
        while True:
            gevent.sleep(interval_s)
            self.samples.append(self.monitor.sample())

    def _report(self) -> dict[str, Any]:
        assert self.recorder is not None
        samples, self.samples = self.samples, []
        return {"delta": self.recorder.take_delta(), "generator": samples}

    def _on_flush(self, environment: Environment, msg: Any, **_: Any) -> None:
        self.runner.stop()  # users stop: turns cut short now are not counted
        if self.recorder is None:
            self.runner.send_message("soak_final", {})
            return
        if self.monitor is not None:
            self.samples.append(self.monitor.sample())
        self.runner.send_message("soak_final", self._report())
