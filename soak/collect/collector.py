"""The sampling loops: every interval each target's process, every health interval its /health.

Each target gets one thread for process samples and one for /health, so a
hanging /health never delays the process samples. A target whose process
ends is looked for again every interval (by its pid while that lives, by its
container or cgroup, by its process-name pattern, by the port it listens on, in
this network namespace or a container's); a process with another pid or start
time is recorded as a restart. Any unexpected error of a loop is
recorded as a `collector_error` event (rate-limited) and the loop goes on:
a collector that dies on day two has lost the run.
"""

from __future__ import annotations

import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from soak.cgroups import ProcessCgroups, cgroup_directories, cgroup_members, process_cgroups
from soak.collect.chat_metrics import ChatMetrics
from soak.collect.containers import (
    container_pid,
    namespace_pids,
    other_namespaces,
    pid_serving_port,
)
from soak.collect.forensics import (
    CensusError,
    Forensics,
    PySpy,
    find_pyspy,
    python_thread_names,
)
from soak.collect.health import (
    BODY_CAPS,
    HealthBodies,
    LatencyFloor,
    capped_message,
    named_fields,
    poll_health,
)
from soak.collect.metrics import Metrics
from soak.collect.process import (
    ProcessSampler,
    is_local_url,
    looks_like_python,
    pid_matching,
    port_of,
)
from soak.collect.prometheus import PrometheusWatch
from soak.collect.receiver import Receiver
from soak.collect.wire import parse_address
from soak.errors import RunError
from soak.limits import System, TargetLimits, read_limits
from soak.rundir import (
    CHATS,
    EVENTS,
    HEALTH,
    MAX_FAMILIES,
    PROCESS,
    TARGET_REPLACED,
    THREADS,
    THREADS_OTHER,
    JsonlWriter,
    RunDir,
    on_storage_failure,
)

#: The same loop error is recorded at most once per this many seconds.
ERROR_REPEAT_S = 60.0


#: Default /health polling period, in seconds, when the profile sets none.
DEFAULT_HEALTH_INTERVAL_S = 5.0


@dataclass(frozen=True)
class Settings:
    """The profile's [collector] section, in seconds."""

    interval: float = 5.0
    health_interval: float = 5.0
    health_timeout: float = 5.0
    detail_interval: float = 30.0
    loop_lag_field: str | None = None
    pyspy: bool = False
    pyspy_every: float = 1800.0
    python_threads: bool = True

    @classmethod
    def from_profile(cls, collector: dict[str, Any]) -> Settings:
        """Settings from a resolved profile's collector dict.

        /health defaults to every 5 s (or `interval` when longer): at 1 s a typical
        300-byte body alone costs ~32 MB per target per day; process samples stay at
        `interval`.
        """
        interval = float(collector.get("interval", cls.interval))
        health = collector.get("health_interval") or max(interval, DEFAULT_HEALTH_INTERVAL_S)
        return cls(
            interval=interval,
            health_interval=float(health),
            health_timeout=float(collector.get("health_timeout", cls.health_timeout)),
            detail_interval=max(float(collector.get("detail_interval", 30.0)), interval),
            loop_lag_field=collector.get("loop_lag_field"),
            pyspy=bool(collector.get("pyspy", False)),
            pyspy_every=float(collector.get("pyspy_every", cls.pyspy_every)),
            python_threads=bool(collector.get("python_threads", True)),
        )


class Events:
    """events.jsonl for the collector: one writer, shared by its threads."""

    def __init__(self, writer: JsonlWriter) -> None:
        self.writer = writer
        self._last_error: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def write(self, kind: str, message: str, target: str | None = None, **extra: Any) -> None:
        record = {"t": round(time.time(), 3), "source": "collector", "kind": kind}
        if target is not None:
            record["target"] = target
        try:
            self.writer.write({**record, "message": message, **extra})
        except (OSError, ValueError) as exc:  # disk full, closed: say so on stderr, go on
            print(f"soak collector: cannot write event {kind} ({exc}): {message}", file=sys.stderr)

    def error(self, where: str, message: str, target: str | None = None) -> None:
        """A collector_error event; a repeat of `where` at most once per ERROR_REPEAT_S."""
        now = time.monotonic()
        with self._lock:
            last, skipped = self._last_error.get(where, (-ERROR_REPEAT_S, 0))
            if now - last < ERROR_REPEAT_S:
                self._last_error[where] = (last, skipped + 1)
                return
            self._last_error[where] = (now, 0)
        more = f" ({skipped} more since the last report)" if skipped else ""
        self.write("collector_error", message + more, target, where=where)


class TargetWatch:
    """Finds and samples the process of one target, noticing restarts."""

    def __init__(
        self,
        target: dict[str, Any],
        run: RunDir,
        events: Events,
        settings: Settings,
        metrics: Metrics | None = None,
    ) -> None:
        self.name: str = target["name"]
        self.events = events
        self.settings = settings
        self.metrics = metrics
        self.pid_hint: int | None = target.get("pid")
        pattern = target.get("process")
        self.pattern = re.compile(pattern) if pattern else None
        self.container: str | None = target.get("container")
        self.cgroup: str | None = target.get("cgroup")
        #: The sampled process's cgroups when their usage is recorded (a container's).
        self.cgroups: ProcessCgroups | None = None
        self.port: int | None = target.get("port") or next(
            (port_of(u) for u in (target.get("url"), target.get("health")) if is_local_url(u)),
            None,
        )
        self.sampler: ProcessSampler | None = None
        self.identity: tuple[int, float] | None = None  # (pid, create_time) last sampled
        self.program: str | None = None  # what the last sampled process runs (program_of)
        #: py-spy for Python thread names: None when off, not found or not permitted.
        self.census_with = find_pyspy() if settings.python_threads else None
        self.python = False  # the sampled process runs Python
        self.census_reported = False
        self.families_capped = False
        self.lost_reported = False
        self.last_detail = float("-inf")
        self._families: tuple[dict[str, Any], bool] | None = None  # last record, written?
        self.process_out = JsonlWriter(run.target_file(self.name, PROCESS))
        self.threads_out = JsonlWriter(run.target_file(self.name, THREADS))
        if not self.findable:
            self.events.write(
                "target_lost",
                f"{self.name}: not on this machine, so its process is not sampled; run soak "
                "collect on the target's machine, give pid, process, port, container or "
                "cgroup, or read it from Prometheus ([targets.prometheus])",
                self.name,
            )

    @property
    def findable(self) -> bool:
        """Whether there is any way to find the target's process on this machine."""
        return bool(self.pid_hint or self.pattern or self.port or self.container or self.cgroup)

    @property
    def pid(self) -> int | None:
        sampler = self.sampler
        return sampler.pid if sampler else None

    def sample(self) -> None:
        """One process sample (and thread families), finding the process first if needed."""
        if not self.findable:
            return
        if self.sampler is not None and not self.sampler.alive():
            self._lose()
        if self.sampler is None:
            self._find()
        if self.sampler is None:
            self.process_out.write(
                {"t": round(time.time(), 3), "pid": None, "error": "process not found"}
            )
            return
        now = time.monotonic()
        detail = (
            now - self.last_detail >= self.settings.detail_interval - self.settings.interval / 2
        )
        try:
            record = self.sampler.sample(detail)
            families = self.sampler.families(refresh=detail)
        except psutil.Error as exc:
            self.process_out.write(
                {"t": round(time.time(), 3), "pid": self.sampler.pid, "error": type(exc).__name__}
            )
            self._lose()
            return
        if detail:
            self.last_detail = now
            if self.python and self.census_with:
                families = self._census(families)
        if self.cgroups is not None:
            record.update(self.cgroups.usage())
        self.process_out.write(record)
        self._write_families(
            {"t": record["t"], "pid": record["pid"], "families": families}, periodic=detail
        )
        if self.sampler.thread_names.capped and not self.families_capped:
            self.families_capped = True
            self.events.write(
                "families_capped",
                f"{self.name}: over {MAX_FAMILIES} thread-name families; the threads of later "
                f"ones are counted as '{THREADS_OTHER}'",
                self.name,
            )
        if self.metrics:
            self.metrics.process(self.name, record)
            self.metrics.families(self.name, families)

    def _census(self, families: dict[str, int]) -> dict[str, int]:
        """Thread families with the Python thread names py-spy reads (see ThreadNames);
        `families` as they were when py-spy cannot (said once when it never will).

        py-spy reads every thread's stack (~0.15 s of CPU for 500 threads), so it runs
        only when threads were born since the last census: a steady process costs one
        census, a leaking one a census per detail sample."""
        assert self.sampler is not None and self.census_with is not None
        names = self.sampler.thread_names
        alive = names.thread_ids()
        if names.censused and alive <= names.census_alive:
            return families
        try:
            census = python_thread_names(self.census_with, self.sampler.pid)
        except CensusError as exc:
            if exc.lasting:
                self.census_with = None
                self.census_off(f"{self.name}: {exc.message}; thread families come from /proc")
            else:
                self.events.error(f"census {self.name}", f"{self.name}: {exc.message}", self.name)
            return families
        names.set_census(census, alive)
        return self.sampler.families()

    def census_off(self, message: str) -> None:
        """Say once that Python thread names cannot be read (and why)."""
        if not self.census_reported:
            self.census_reported = True
            self.events.write("census_off", message, self.name)

    def _write_families(self, record: dict[str, Any], periodic: bool) -> None:
        """threads.jsonl: a record when the families change (with the last unchanged sample
        before it, so a step is exact) and on every detail sample, else none."""
        previous = self._families
        changed = (
            previous is None
            or previous[0]["pid"] != record["pid"]
            or previous[0]["families"] != record["families"]
        )
        if changed and previous and not previous[1] and previous[0]["pid"] == record["pid"]:
            self.threads_out.write(previous[0])
        write = changed or periodic
        if write:
            self.threads_out.write(record)
        self._families = (record, write)

    def _lose(self) -> None:
        """The sampled process is gone (or unreadable): say so once, forget its pid hint."""
        sampler, self.sampler = self.sampler, None
        if sampler is not None and sampler.pid == self.pid_hint:
            self.pid_hint = None  # a reused pid must never pass for the target
        if self.metrics:
            self.metrics.lost(self.name)
        if not self.lost_reported and sampler is not None:
            self.lost_reported = True
            self.events.write(
                "target_lost", f"{self.name}: pid {sampler.pid} is gone", self.name, pid=sampler.pid
            )

    def _candidates(self) -> list[tuple[str, Callable[[], int | None]]]:
        found: list[tuple[str, Callable[[], int | None]]] = []
        if self.pid_hint:
            hint = self.pid_hint
            found.append(("pid", lambda: hint))
        if self.container:
            found.append(("container", self._in_container))
        if self.cgroup:
            found.append(("cgroup", lambda: pid_matching(self.pattern, self._cgroup_members())))
        elif self.pattern and not self.container:
            pattern = self.pattern
            found.append(("process", lambda: pid_matching(pattern)))
        if self.port:
            port = self.port
            found.append(("port", lambda: pid_serving_port(port, self._cgroup_members())))
        return found

    def _in_container(self) -> int | None:
        """The container's main process, or its process matching `process` (with children)."""
        assert self.container is not None
        try:
            pid = container_pid(self.container)
        except RunError as exc:  # the daemon went away mid-run: the target is lost for now
            self.events.error(f"container {self.name}", exc.message, self.name)
            return None
        if pid is None or self.pattern is None:
            return pid
        try:
            tree = [pid, *(child.pid for child in psutil.Process(pid).children(recursive=True))]
        except psutil.Error:
            return None
        return pid_matching(self.pattern, tree)

    def _cgroup_members(self) -> list[int] | None:
        """The pids in the target's cgroup (and the cgroups below it); None: no cgroup."""
        if self.cgroup is None:
            return None
        return cgroup_members(cgroup_directories(System().cgroup, self.cgroup))

    def _find(self) -> None:
        for how, lookup in self._candidates():
            pid = lookup()
            if pid is None:
                continue
            try:
                sampler = ProcessSampler(pid)
            except psutil.Error:
                continue
            self._adopt(sampler, how)
            return
        if not self.lost_reported:
            self.lost_reported = True
            self.events.write(
                "target_lost",
                f"{self.name}: no process found (by {', '.join(h for h, _ in self._candidates())})",
                self.name,
            )

    def _adopt(self, sampler: ProcessSampler, how: str) -> None:
        identity = (sampler.pid, sampler.create_time)
        previous, self.identity = self.identity, identity
        program, self.program = self.program, sampler.program
        read = read_limits(sampler.pid)
        limits = read.to_json()  # a report made later or elsewhere: the same limits
        self.cgroups = self._usage_of(sampler.pid, how, read)
        ns_pid, apart = namespace_pids(sampler.pid)[-1], other_namespaces(sampler.pid)
        inside = f" (pid {ns_pid} in its pid namespace)" if "pid" in apart else ""
        where = {"ns_pid": ns_pid, "namespaces": apart}
        self.sampler = sampler
        self.python = looks_like_python(sampler.process)
        if self.python and self.settings.python_threads and self.census_with is None:
            self.census_off(
                f"{self.name}: pid {sampler.pid} is a Python process, but py-spy is not on "
                "PATH (pip install py-spy), so its threads are named by /proc, where "
                "CPython leaves them all as the program's name"
            )
        self.lost_reported = False
        self.last_detail = float("-inf")
        if previous is None:
            self.events.write(
                "target_found",
                f"{self.name}: sampling pid {sampler.pid}{inside}, {sampler.program} "
                f"(found by {how})",
                self.name,
                pid=sampler.pid,
                create_time=sampler.create_time,
                program=sampler.program,
                found_by=how,
                limits=limits,
                **where,
            )
        elif previous != identity and program not in (None, sampler.program):
            self.events.write(
                TARGET_REPLACED,
                f"{self.name}: a different program now holds its place: {sampler.program} "
                f"(pid {sampler.pid}; was {program}, pid {previous[0]}; found by {how}); "
                "its samples are not the target's",
                self.name,
                pid=sampler.pid,
                old_pid=previous[0],
                new_pid=sampler.pid,
                old_program=program,
                new_program=sampler.program,
                found_by=how,
                limits=limits,
                **where,
            )
        elif previous != identity:
            if self.metrics:
                self.metrics.restarted(self.name)
            self.events.write(
                "target_restart",
                f"{self.name}: new process pid {sampler.pid}{inside} (was {previous[0]}; "
                f"found by {how})",
                self.name,
                pid=sampler.pid,
                old_pid=previous[0],
                new_pid=sampler.pid,
                old_create_time=previous[1],
                new_create_time=sampler.create_time,
                program=sampler.program,
                found_by=how,
                limits=limits,
                **where,
            )
        else:
            self.events.write(
                "target_found", f"{self.name}: sampling pid {sampler.pid} again", self.name,
                pid=sampler.pid, create_time=sampler.create_time, found_by=how, limits=limits,
                **where,
            )  # fmt: skip

    @staticmethod
    def _usage_of(pid: int, how: str, limits: TargetLimits) -> ProcessCgroups | None:
        """The cgroups whose usage goes into the process records: those of a target found
        by its container or cgroup, or limited by a cgroup's memory limit or CPU quota."""
        limited = limits.memory_mb.source.startswith("cgroup") or limits.cpu_cores.value
        if how not in ("container", "cgroup") and not limited:
            return None
        system = System()
        return process_cgroups(system.proc, system.cgroup, pid)

    def close(self) -> None:
        self.process_out.close()
        self.threads_out.close()


class HealthWatch:
    """Polls one target's /health into health.jsonl, its bodies bounded (HealthBodies).

    The first poll whose body a cap trims is told in one health_capped event per target.
    """

    def __init__(
        self,
        target: dict[str, Any],
        run: RunDir,
        settings: Settings,
        metrics: Metrics | None,
        events: Events,
        keep: Iterable[str] = (),
    ) -> None:
        self.name: str = target["name"]
        self.url: str = target["health"]
        self.headers: dict[str, str] = dict(target.get("health_headers") or {})
        self.timeout = settings.health_timeout
        self.metrics = metrics
        self.events = events
        self.floor = LatencyFloor()
        self.bodies = HealthBodies(keep)
        self.capped = False
        self.out = JsonlWriter(run.target_file(self.name, HEALTH))

    def poll(self) -> None:
        record = poll_health(self.url, self.timeout, self.headers)
        if "body" in record:
            record["body"], dropped = self.bodies.trim(record["body"])
            if dropped and not self.capped:
                self.capped = True
                message = capped_message(self.name, dropped)
                self.events.write(
                    "health_capped", message, self.name, caps=BODY_CAPS, dropped=dropped
                )
        self.out.write(record)
        over = self.floor.excess(record)
        if self.metrics:
            self.metrics.health(self.name, record, over)

    def close(self) -> None:
        self.out.close()


class Collector:
    """All of a run's sampling: built (and able to fail) before any thread starts."""

    def __init__(
        self, run_dir: Path, profile: dict[str, Any], metrics_port: int | None = None
    ) -> None:
        self.run = RunDir(run_dir)
        self.settings = Settings.from_profile(profile.get("collector") or {})
        self.metrics = Metrics(metrics_port, self.settings.loop_lag_field) if metrics_port else None
        self._events_out = JsonlWriter(self.run.file(EVENTS))
        self.events = Events(self._events_out)
        if self.metrics:  # what the load process records, beside what is sampled here
            self.metrics.serve_also(ChatMetrics(self.run.file(CHATS), self._chats_problem))
        targets = [t for t in profile["targets"] if not t.get("remote")]
        self.watches = [
            (PrometheusWatch if t.get("prometheus") else TargetWatch)(
                t, self.run, self.events, self.settings, self.metrics
            )
            for t in targets
        ]
        keep = named_fields(profile)
        self.healths = [
            HealthWatch(t, self.run, self.settings, self.metrics, self.events, keep)
            for t in targets
            if t.get("health")
        ]
        self.receiver = _receiver(self.run, profile, self.events)

    def _loops(self) -> list[tuple[str, float, Callable[[], None]]]:
        loops = [(f"{w.name} process", self.settings.interval, w.sample) for w in self.watches]
        loops += [(f"{h.name} health", self.settings.health_interval, h.poll) for h in self.healths]
        if self.settings.pyspy:
            forensics = Forensics(
                self.run,
                lambda: {w.name: w.pid for w in self.watches},
                PySpy(self.run, self._pyspy_problem),
                self._dumped,
                self.settings.pyspy_every,
            )
            loops.append(("forensics", self.settings.interval, forensics.tick))
        return loops

    def _chats_problem(self, message: str) -> None:
        self.events.error("chat metrics", message)

    def _pyspy_problem(self, message: str, target: str | None) -> None:
        self.events.error(f"pyspy {target}", message, target)

    def _dumped(self, target: str, pid: int, reason: str, path: Path) -> None:
        self.events.write(
            "pyspy_dump",
            f"{target}: py-spy dump of pid {pid} ({reason})",
            target,
            pid=pid,
            reason=reason,
            path=str(path.relative_to(self.run.path)),
        )

    def run_until(self, stop: threading.Event) -> None:
        """Sample until `stop` is set, then close every file (and the metrics server)."""
        threads = [
            threading.Thread(
                target=_every,
                args=(interval, stop, action, self._on_error(where)),
                name=f"soak-{where}",
                daemon=True,
            )  # fmt: skip
            for where, interval, action in self._loops()
        ]
        on_storage_failure(lambda error: stop.set())  # samples not recorded are not a soak
        try:
            if self.receiver:
                self.receiver.start()
            for thread in threads:
                thread.start()
            stop.wait()
            for thread in threads:
                thread.join(timeout=self.settings.health_timeout + 1)
        finally:
            if self.receiver:
                self.receiver.close()
            for part in (*self.watches, *self.healths):
                part.close()
            self._events_out.close()
            if self.metrics:
                self.metrics.close()

    def _on_error(self, where: str) -> Callable[[BaseException], None]:
        def report(exc: BaseException) -> None:
            frame = traceback.extract_tb(exc.__traceback__)[-1:]
            at = f" at {Path(frame[0].filename).name}:{frame[0].lineno}" if frame else ""
            self.events.error(where, f"{where}: {type(exc).__name__}: {exc}{at}")

        return report


def _receiver(run: RunDir, profile: dict[str, Any], events: Events) -> Receiver | None:
    """The receiver of remote collectors, when [collector] listen is set."""
    collector = profile.get("collector") or {}
    if not collector.get("listen"):
        return None
    remote = [t["name"] for t in profile["targets"] if t.get("remote")]
    address = parse_address(collector["listen"], "[collector] listen")
    try:
        receiver = Receiver(run, address, collector["secret"], remote, events.write)
    except OSError as exc:
        raise RunError(
            f"[collector] listen = {collector['listen']!r}: cannot listen there "
            f"({exc.strerror or exc}); pick a free port (or stop what uses it)."
        ) from None
    events.write(
        "remote_listening",
        f"waiting for remote collectors of {', '.join(remote) or 'no target'} on "
        f"{receiver.address[0]}:{receiver.address[1]}",
        address=f"{receiver.address[0]}:{receiver.address[1]}",
    )
    return receiver


def run_collector(
    run_dir: Path, profile: dict[str, Any], stop: threading.Event, metrics_port: int | None = None
) -> None:
    """Sample every target of `profile` into `run_dir` until `stop` is set."""
    Collector(run_dir, profile, metrics_port).run_until(stop)


def _every(
    interval: float,
    stop: threading.Event,
    action: Callable[[], None],
    on_error: Callable[[BaseException], None],
) -> None:
    """Call `action` every `interval` seconds on a fixed schedule (no drift) until stopped.

    An exception of `action` goes to `on_error` and the schedule goes on.
    """
    next_at = time.monotonic()
    while not stop.is_set():
        try:
            action()
        except Exception as exc:  # noqa: BLE001 - survive anything; it is recorded
            on_error(exc)
        next_at += interval
        delay = next_at - time.monotonic()
        if delay < 0:  # an action overran: skip the missed ticks instead of bursting
            next_at = time.monotonic()
            delay = 0
        stop.wait(delay)
