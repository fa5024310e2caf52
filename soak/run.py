"""`soak run`: create the run directory, start load and collector processes, watch them.

The orchestrator itself is a plain process. Load (Locust + gevent) and the
collector each run in a child process that gets the resolved profile (and its
secrets, for the child's redactor) on stdin, so secrets never reach argv or the
disk. The orchestrator only reads the run directory (for the live status) and
records the run's end.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

from soak.child import module_argv, module_env
from soak.collect.containers import container_pid
from soak.collect.metrics import check_metrics_port
from soak.collect.spawn import SpawnedTarget, start_spawned, stop_spawned
from soak.collect.wire import parse_address
from soak.errors import OutputClosed, ProfileError, RunError, StorageError, UsageError
from soak.live import LiveStatus
from soak.profile import (
    MIN_SECRET_CHARS,
    Profile,
    profile_from_mapping,
    redact_url,
    require_targets,
)
from soak.redact import PAYLOAD_SECRETS
from soak.redact import install as install_redactor
from soak.rundir import (
    CHATS,
    EVENTS,
    EXIT_CHILD_STORAGE,
    STATUS_ABORTED,
    STATUS_COMPLETED,
    STATUS_CRASHED,
    STATUS_FAILED,
    STATUS_RUNNING,
    JsonlWriter,
    RunDir,
    forget_storage_failures,
    storage_failure,
    unwritable,
    writer_fields,
)

#: How long the load process gets to stop after SIGTERM before it is killed, in seconds.
STOP_GRACE_S = 10.0
#: prctl option: the signal a child gets when its parent dies (linux/prctl.h).
PR_SET_PDEATHSIG = 1
#: Port of a load master that remote workers join when --master-bind gives none.
DEFAULT_MASTER_PORT = 5557
#: How often the live status line is refreshed, in seconds.
STATUS_EVERY_S = 2.0
#: Receives the live status after each refresh (the line, the warnings that started).
StatusSink = Callable[[LiveStatus], None]
#: How a run ends on SIGINT/SIGTERM.
RUN_ABORTED = "stopped by signal; the run directory is complete so far"
#: How a collect with --duration ends on SIGINT/SIGTERM (without one, that is its end).
COLLECT_ABORTED = "stopped by signal before --duration; the run directory is complete so far"


class Interrupted(Exception):
    """SIGINT or SIGTERM reached the orchestrator."""


@dataclass
class RunOutcome:
    run: RunDir
    status: str
    message: str = ""


def preflight(profile: Profile, timeout: float = 5.0) -> None:
    """Fail fast, before any run directory exists, when a target does not accept TCP.

    Targets soak starts itself (spawn) are checked once they are started.
    """
    for target in profile.targets:
        if target.url is None:
            raise ProfileError(
                f"{profile.source}: target {target.name} has no url; soak run chats over a "
                "WebSocket, so give url (or --target URL). To watch a process without load "
                "of soak's own, use soak collect."
            )
        if target.spawn:
            continue
        parts = urlsplit(target.url)
        port = parts.port or (443 if parts.scheme in ("wss", "https") else 80)
        try:
            with socket.create_connection((parts.hostname, port), timeout=timeout):
                pass
        except OSError as exc:
            raise RunError(
                f"target {target.name} at {redact_url(target.url)} is not reachable "
                f"({exc.strerror or exc}). Start the server first, or check --target "
                "(for the built-in one: soak target --port 8765)."
            ) from None


def execute_run(
    profile: Profile,
    *,
    out_root: Path,
    label: str,
    on_status: StatusSink | None = None,
    extra_manifest: dict | None = None,
    metrics_port: int | None = None,
    workers: int = 0,
    master_bind: str | None = None,
    web_port: int | None = None,
) -> RunOutcome:
    """Run the profile's load and collector to the end (or to an interrupt).

    Targets with `spawn` are started first and stopped at the end; with
    `metrics_port`, the collector serves Prometheus metrics on 127.0.0.1.
    With `workers` > 0 or `master_bind` ("HOST[:PORT]", where remote
    `soak worker`s join) the load process is a Locust master and `workers`
    local worker processes run the users; `web_port` serves Locust's web UI
    on 127.0.0.1.
    """
    _prepare(profile, metrics_port, reach=True)
    load_args, master_address = _load_args(workers, master_bind, web_port)
    distributed = {"local": workers, "master": master_address} if master_address else None
    manifest = {
        **({"load_workers": distributed} if distributed else {}),
        **(extra_manifest or {}),
    }
    session = RunSession.create(
        profile, out_root, label, profile.planned_duration_s, manifest, on_status=on_status
    )
    with session:
        _drive(session, metrics_port, load_args, workers, master_address)
    return session.outcome


def resume_run(
    run: RunDir,
    profile: Profile,
    *,
    on_status: StatusSink | None = None,
    metrics_port: int | None = None,
) -> RunOutcome:
    """Carry on a run that was cut off (crashed or aborted), appending to its directory.

    The load runs for what is left of load.duration (the load time already recorded
    is subtracted), then the idle phase; the collector appends to the same files,
    and the analysis sees one run with a gap.
    """
    manifest = run.manifest()
    status = run.status()
    if status not in (STATUS_CRASHED, STATUS_ABORTED):
        hint = "it is still running" if status == "running" else f"it is {status}"
        raise UsageError(
            f"cannot resume {run.path}: {hint}; only crashed or aborted runs can be resumed."
        )
    recorded = [t["name"] for t in manifest.get("targets", [])]
    if [t.name for t in profile.targets] != recorded:
        raise UsageError(
            f"cannot resume {run.path}: it recorded targets {recorded}, the profile now gives "
            f"{[t.name for t in profile.targets]}; pass the same profile and --target options."
        )
    _prepare(profile, metrics_port, reach=True)
    done = load_time_recorded(run)
    remaining = max(profile.load["duration"] - done, 0.0)
    if remaining == 0 and not profile.load["idle_after"]:
        raise UsageError(
            f"nothing left to run in {run.path}: its {done:.0f} s of load are all recorded. "
            f"Write the report with: soak report {run.path}"
        )
    profile.load["duration"] = max(remaining, 1.0)
    resumed_at = time.time()
    run.update_manifest(
        status=STATUS_RUNNING,
        **writer_fields(),
        ended_at=None,
        resumed=[*manifest.get("resumed", []), {"at": resumed_at, "load_done_s": round(done, 1)}],
    )
    run.keep_reserve()
    session = RunSession(run, profile, resumed_at, profile.planned_duration_s, on_status=on_status)
    session.event(
        "run_resume",
        f"resumed after {done:.0f} s of recorded load; {remaining:.0f} s to go",
        t=resumed_at,
    )
    with session:
        _drive(session, metrics_port)
    return session.outcome


@dataclass(frozen=True)
class Join:
    """Where a remote `soak collect` ships its samples: a running `soak run`'s [collector]
    listen address, and the secret they share (from the environment, never argv)."""

    address: tuple[str, int]
    secret: str


def execute_collect(
    profile: Profile,
    *,
    out_root: Path,
    label: str,
    duration_s: float | None = None,
    metrics_port: int | None = None,
    on_status: StatusSink | None = None,
    join: Join | None = None,
) -> RunOutcome:
    """`soak collect`: sample the targets with no load of soak's own, into a run directory.

    The collector runs in this process until `duration_s` (None: until SIGINT or
    SIGTERM, which then end the run as completed). The run directory has the
    same format as a run's, without chats.jsonl and anomalies.jsonl. With `join`,
    its target files are also shipped to that running `soak run` (soak.collect.shipper);
    a refusal ends the collect with the reason.
    """
    from soak.collect.collector import Collector
    from soak.collect.shipper import Shipper

    if join:
        profile.secrets = sorted({*profile.secrets, join.secret})
    _prepare(profile, metrics_port, reach=False)  # no load of soak's own: nothing to reach
    session = RunSession.create(
        profile,
        out_root,
        label,
        duration_s,
        {"mode": "collect", **({"joined": f"{join.address[0]}:{join.address[1]}"} if join else {})},
        on_status=on_status,
        interrupted=(STATUS_ABORTED, COLLECT_ABORTED) if duration_s else (STATUS_COMPLETED, ""),
        last_look=False,
    )
    with session:
        stop = threading.Event()
        session.at_end(stop.set)
        collector = Collector(session.run.path, profile.to_dict(), metrics_port)
        thread = threading.Thread(target=collector.run_until, args=(stop,), name="soak-collector")
        thread.start()
        session.at_end(thread.join)
        shipper = None
        if join:
            names = [t.name for t in profile.targets]
            shipper = Shipper(session.run, join.address, join.secret, names, session.event)
            shipper.start()
            session.at_end(shipper.finish)  # after the sampling stopped: ships the rest
        deadline = session.started_at + duration_s if duration_s else float("inf")
        while time.time() < deadline:
            if storage_failure():
                raise unwritable(session.run.path)
            if shipper and shipper.failure:
                raise RunError(shipper.failure)
            session.refresh()
            time.sleep(max(0.0, min(STATUS_EVERY_S, deadline - time.time())))
        session.refresh()
    return session.outcome


def resumable_profile(run: RunDir) -> Profile:
    """The profile a run recorded, when it can run again without its secrets."""
    recorded = run.manifest().get("profile")
    if not isinstance(recorded, dict) or "***" in json.dumps(recorded):
        raise UsageError(
            f"{run.path} recorded its profile with secrets redacted; pass the profile and the "
            "same --target/--health options again: soak run PROFILE ... --resume RUN_DIR"
        )
    return profile_from_mapping(recorded, source=f"{run.manifest_path} (recorded profile)")


def load_time_recorded(run: RunDir) -> float:
    """Seconds of load already in the run: per session (start or resume), last chat record."""
    starts = sorted(
        e["t"]
        for e in run.records(EVENTS)
        if e.get("kind") in ("run_start", "run_resume") and isinstance(e.get("t"), int | float)
    )
    if not starts:
        starts = [float(run.manifest().get("started_at") or 0.0)]
    last_chat = dict.fromkeys(starts, 0.0)
    for record in run.records(CHATS):
        t = record.get("t")
        if (
            not isinstance(t, int | float)
            or record.get("turns", 0) + record.get("in_flight", 0) == 0
        ):
            continue
        session = max((s for s in starts if s <= t), default=None)
        if session is not None:
            last_chat[session] = max(last_chat[session], t)
    return sum(max(end - start, 0.0) for start, end in last_chat.items() if end)


def _prepare(profile: Profile, metrics_port: int | None, *, reach: bool) -> None:
    """Checks and process state every entry point needs before its run directory exists.

    `reach`: also check that the targets accept TCP (a run chats with them; collect
    only watches).
    """
    install_redactor(profile.secrets)  # from now on every writer here masks them
    require_targets(profile)
    for target in profile.targets:
        if target.container:  # a docker daemon that is down, a typo: say so before the run
            container_pid(target.container)
    if reach:
        preflight(profile)
    if metrics_port is not None:
        check_metrics_port(metrics_port)
    if profile.collector["listen"]:
        check_listen(profile.collector["listen"])
    forget_storage_failures()  # an earlier run of this process says nothing about this one


def join_of(address: str | None, secret_env: str) -> Join | None:
    """`soak collect --join HOST:PORT`: the address, and the secret from `secret_env`."""
    if address is None:
        return None
    try:
        parsed = parse_address(address, "--join")
    except ValueError as exc:
        raise UsageError(f"{exc}; give the run's [collector] listen address.") from None
    secret = os.environ.get(secret_env, "")
    if len(secret) < MIN_SECRET_CHARS:
        raise UsageError(
            f"--join needs the secret shared with the run in ${secret_env} (at least "
            f"{MIN_SECRET_CHARS} characters): export {secret_env}=... with the value the run's "
            "[collector] secret reads (or name another variable with --secret-env)."
        )
    return Join(parsed, secret)


def check_listen(listen: str) -> None:
    """Fail before a run starts when [collector] listen cannot be listened on."""
    host, port = parse_address(listen, "[collector] listen")
    if port == 0:
        return
    try:
        socket.create_server((host, port)).close()
    except OSError as exc:
        raise RunError(
            f"[collector] listen = {listen!r}: cannot listen there ({exc.strerror or exc}); "
            "pick a free port (--collector-listen HOST:PORT)."
        ) from None


class RunSession:
    """One run's life in this process: its directory, events writer, spawned targets and
    stop signals.

    As a context manager it starts the spawned targets and installs StopSignals on
    entry; on exit it turns how the body stopped into the run's status and message
    (once, for every entry point), stops what was started in the order given to
    `at_end`, then the spawned targets, and ends the run exactly once. The exceptions
    a run ends on (Interrupted, RunError and its kinds) do not leave the block;
    anything else still ends the run (as crashed) and is raised on.
    """

    def __init__(
        self,
        run: RunDir,
        profile: Profile,
        started_at: float,
        planned_s: float | None,
        *,
        on_status: StatusSink | None = None,
        interrupted: tuple[str, str] = (STATUS_ABORTED, RUN_ABORTED),
        last_look: bool = True,
    ) -> None:
        """`interrupted`: the status and message a SIGINT/SIGTERM ends the run with;
        `last_look`: refresh the live status once more after everything stopped."""
        self.run = run
        self.profile = profile
        self.started_at = started_at
        self.status, self.message = STATUS_COMPLETED, ""
        self.events = JsonlWriter(run.file(EVENTS))
        self.live = LiveStatus(run, [t.name for t in profile.targets], planned_s, started_at)
        self.spawned: list[SpawnedTarget] = []
        self._on_status = on_status
        self._interrupted = interrupted
        self._last_look = last_look
        self._at_end: list[Callable[[], object]] = []
        self._signals = StopSignals()
        self._ended = False

    @classmethod
    def create(
        cls,
        profile: Profile,
        out_root: Path,
        label: str,
        planned_s: float | None,
        manifest: dict[str, Any],
        **options: Any,
    ) -> RunSession:
        """A new run directory for `profile` (its manifest: the shared fields, then
        `manifest`), with its run_start event written."""
        started_at = time.time()
        full = {**run_manifest(profile, planned_s), **manifest}
        run = RunDir.create(out_root, profile.name, label, full, started_at=started_at)
        session = cls(run, profile, started_at, planned_s, **options)
        session.event("run_start", run.path.name, t=started_at)
        return session

    @property
    def outcome(self) -> RunOutcome:
        return RunOutcome(self.run, self.status, self.message)

    def event(self, kind: str, message: str, *, t: float | None = None, **fields: Any) -> None:
        """Append one event of the run itself (source "run") to events.jsonl."""
        when = time.time() if t is None else t
        self.events.write({"t": when, "source": "run", "kind": kind, **fields, "message": message})

    def refresh(self) -> None:
        """Read the run directory's news; warnings that start or clear become events."""
        self.live.update()
        for warning in self.live.started:
            self.events.write(warning.event(started=True))
        for warning in self.live.cleared:
            self.events.write(warning.event(started=False))
        if self._on_status:
            self._on_status(self.live)

    def at_end(self, *stops: Callable[[], object]) -> None:
        """Call `stops` when the session ends, in this order (before the spawned targets
        are stopped), whatever ended it."""
        self._at_end.extend(stops)

    def stop_at_end(self, *processes: subprocess.Popen) -> None:
        """Stop these child processes (SIGTERM, then SIGKILL) when the session ends, in order."""
        self.at_end(*(functools.partial(_stop, p, STOP_GRACE_S) for p in processes))

    def end(self, status: str, message: str) -> None:
        """Record the end in events.jsonl and the manifest, as far as the disk still lets it;
        only the first call counts."""
        if self._ended:
            return
        self._ended = True
        self.run.release_reserve()
        with contextlib.suppress(StorageError):
            self.event("run_end", message or status, status=status)
        self.events.close()
        with contextlib.suppress(StorageError):  # unwritable: it reads as crashed, the CLI says why
            self.run.finish(status, message)

    def __enter__(self) -> RunSession:
        self._start_targets()
        self._signals.install()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> bool:
        self._signals.stopping = True  # from here a second Ctrl-C is only noted
        try:
            if exc is not None:
                self.status, self.message = self._ended_by(exc)
            for stop in self._at_end:
                stop()
            stop_spawned(self.spawned)
            if self._last_look:
                with contextlib.suppress(RunError):  # the last look: the end is recorded whatever
                    self.refresh()
        finally:
            self.end(self.status, self.message)
            self._signals.restore()
        return isinstance(exc, Interrupted | RunError)

    def _ended_by(self, exc: BaseException) -> tuple[str, str]:
        """The status and message of a run whose body raised `exc`."""
        if isinstance(exc, Interrupted):
            return self._interrupted
        if isinstance(exc, StorageError):
            return STATUS_FAILED, unwritable(self.run.path).message
        if isinstance(exc, OutputClosed):
            return STATUS_FAILED, exc.message
        if isinstance(exc, RunError):
            return STATUS_CRASHED, exc.message
        return STATUS_CRASHED, f"soak stopped on an unexpected error: {type(exc).__name__}: {exc}"

    def _start_targets(self) -> None:
        """Start the targets that have `spawn`; record their pids, or end the run as crashed."""
        if not any(t.spawn for t in self.profile.targets):
            return
        try:
            self.spawned = start_spawned(
                self.profile, self.run, self.profile.collector["spawn_timeout"]
            )
        except RunError as exc:
            self.end(STATUS_CRASHED, exc.message)
            raise
        self.run.update_manifest(targets=_target_entries(self.profile))
        for target in self.spawned:
            self.event(
                "target_spawned",
                f"{target.name}: started pid {target.pid}",
                target=target.name,
                pid=target.pid,
            )


def _drive(
    session: RunSession,
    metrics_port: int | None,
    load_args: Sequence[str] = (),
    workers: int = 0,
    master_address: str | None = None,
) -> None:
    """Start collector, load and its local workers for the session; watch them until the
    load ends. How it ends (a child's failure, a signal) is the session's to record."""
    run, profile = session.run, session.profile
    payload = json.dumps({**profile.to_dict(), PAYLOAD_SECRETS: profile.secrets})
    metrics_args = [] if metrics_port is None else ["--metrics-port", str(metrics_port)]
    collector = _spawn("soak.collect", run, payload, metrics_args)
    load = _spawn("soak.load", run, payload, load_args)
    load_workers = [_spawn_worker(run, master_address, n) for n in range(1, workers + 1)]
    # the master first: it asks its workers for their final reports; the collector last
    session.stop_at_end(load, *load_workers, collector)
    while load.poll() is None:
        if collector.poll() == EXIT_CHILD_STORAGE:
            raise unwritable(run.path)
        if collector.poll() is not None:
            raise RunError(f"the collector stopped unexpectedly; see {run.file('collect.log')}")
        session.refresh()
        _wait(load, STATUS_EVERY_S)
    if load.returncode == EXIT_CHILD_STORAGE:
        raise unwritable(run.path)
    if load.returncode != 0:
        raise RunError(
            f"the load process failed (exit {load.returncode}); see {run.file('load.log')}"
        )


def _load_args(
    workers: int, master_bind: str | None, web_port: int | None
) -> tuple[list[str], str | None]:
    """Arguments of the load process, and the master's address when the run is distributed."""
    args = [] if web_port is None else ["--web", str(web_port)]
    if workers < 0:
        raise UsageError(f"--workers must be 0 or more, got {workers}.")
    if not workers and master_bind is None:
        return args, None
    if master_bind is None:
        with socket.socket() as probe:  # a free loopback port for the local workers
            probe.bind(("127.0.0.1", 0))
            master_bind = f"127.0.0.1:{probe.getsockname()[1]}"
    elif ":" not in master_bind:
        master_bind = f"{master_bind}:{DEFAULT_MASTER_PORT}"
    return [*args, "--workers", str(workers), "--master-bind", master_bind], master_bind


def _spawn_worker(run: RunDir, master: str | None, number: int) -> subprocess.Popen:
    """One local load worker joining the master at `master` (host:port)."""
    assert master is not None
    host, _, port = master.rpartition(":")
    if host in ("0.0.0.0", "*", "", "::"):
        host = "127.0.0.1"  # a wildcard bind is reached on loopback
    log = run.file(f"worker-{number}.log")
    return subprocess.Popen(
        module_argv("soak.load", "--worker", f"{host}:{port}", "--log", str(log)),
        env=module_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_stop_with_parent,
    )


def run_manifest(profile: Profile, planned_duration_s: float | None) -> dict[str, Any]:
    """The manifest fields a run and a collect-only run share: profile and targets."""
    return {
        "profile": profile.redacted(),
        "profile_path": profile.source,
        "targets": _target_entries(profile),
        "planned_duration_s": planned_duration_s,
    }


def _target_entries(profile: Profile) -> list[dict[str, Any]]:
    redacted = {t["name"]: t for t in profile.redacted()["targets"]}
    return [
        {
            "name": t.name,
            "url": t.url and redact_url(t.url),
            "health": t.health and redact_url(t.health),
            "pid": t.pid,
            "build": t.build,
            **{
                key: redacted[t.name][key]
                for key in ("port", "process", "spawn", "remote")
                if getattr(t, key)
            },
        }
        for t in profile.targets
    ]


def _spawn(module: str, run: RunDir, payload: str, args: Sequence[str] = ()) -> subprocess.Popen:
    log_name = "load.log" if module == "soak.load" else "collect.log"
    with open(run.file(log_name), "ab") as log:
        process = subprocess.Popen(
            module_argv(module, "--run-dir", str(run.path), *args),
            env=module_env(),
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C reaches the orchestrator, which stops children
            preexec_fn=_stop_with_parent,
        )
    assert process.stdin is not None
    process.stdin.write(payload.encode())
    process.stdin.close()
    return process


def _stop_with_parent() -> None:
    """In the child, before exec: ask Linux for SIGTERM when the orchestrator dies.

    A SIGKILLed orchestrator must not leave load running against a target forever;
    the children then stop as on Ctrl-C and the run directory reads as crashed.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _wait(process: subprocess.Popen, seconds: float) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=seconds)


def _stop(process: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM, then SIGKILL after `grace_s` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class StopSignals:
    """SIGINT/SIGTERM raise Interrupted while the run goes; once soak is stopping they are
    only noted, so a second Ctrl-C cannot cut the closing of the run directory short.

    Stopping takes up to STOP_GRACE_S seconds per child process.
    """

    def __init__(self) -> None:
        self.stopping = False
        self._previous: dict[int, Any] = {}

    def install(self) -> StopSignals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._received)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _received(self, signum: int, frame: FrameType | None) -> None:
        if not self.stopping:
            self.stopping = True
            raise Interrupted(signal.Signals(signum).name)
        with contextlib.suppress(OSError):
            os.write(2, f"soak: already stopping (up to {STOP_GRACE_S:g} s a process)\n".encode())
