"""A target sampled by a separately started `soak collect --join`, end to end over real TCP.

One `soak run` loads the built-in (unpatched) target; its process and /health are
sampled only by a second process, `soak collect --join`, that reaches the run's
receiver through a TCP proxy of this test. The proxy cuts the connection (closes it and
refuses new ones) for a while; afterwards every sample the remote wrote is in the run,
once, in order, and the report judges the target as it judges a local one (the demo's
verdicts for the unpatched build). The clock test shifts the remote's clock with
Debian's faketime and checks that the run corrects its timestamps.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from soak.collect.receiver import Receiver
from soak.rundir import EVENTS, HEALTH, PROCESS, RunDir
from soak.status import run_status
from soak.target import TargetProcess, start_target

pytestmark = pytest.mark.e2e
SECRET = "e2e-secret-0123456789abcdef"
TARGET = "remote1"
#: How long the run may take to create its run directory, in seconds.
START_WAIT_S = 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class CuttableProxy:
    """Forwards TCP from its port to `upstream`; `cut()` closes every connection and the
    port (new connections are refused) until `restore()`."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.connections: list[socket.socket] = []
        self.listener: socket.socket | None = None
        self.accepted = 0
        self._lock = threading.Lock()
        self.restore()

    def restore(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self.accepted += 1
                self.connections += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    def cut(self) -> None:
        assert self.listener is not None
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        with self._lock:
            for sock in self.connections:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self.connections = []

    def close(self) -> None:
        self.cut()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


@pytest.fixture
def unpatched() -> Iterator[TargetProcess]:
    with start_target(patched=False) as target:
        yield target


def remote_profile(path: Path, target: TargetProcess) -> Path:
    """The remote side's profile: the target by its pid, sampled like the demo samples it."""
    path.write_text(
        f"""name = "remote"
[[targets]]
name = "{TARGET}"
url = "{target.ws_url}"
health = "{target.health_url}"
pid = {target.pid}
[collector]
interval = "1s"
health_interval = "1s"
health_timeout = "2s"
loop_lag_field = "diagnostics.loop_lag_max_ms"
python_threads = false
"""
    )
    return path


def run_profile(path: Path, target: TargetProcess, listen_port: int, load_s: int) -> Path:
    """The orchestrator's profile: the demo's load and criteria against one remote target."""
    demo = (Path(__file__).resolve().parent.parent / "profiles" / "demo.toml").read_text()
    settings = demo[demo.index("[protocol]") :]
    settings = settings.replace('duration = "100s"', f'duration = "{load_s}s"').replace(
        'idle_after = "20s"', 'idle_after = "15s"'
    )
    settings = settings.replace(
        "[collector]\n",
        f'[collector]\nlisten = "127.0.0.1:{listen_port}"\nsecret = "${{SOAK_COLLECT_SECRET}}"\n',
    )
    settings = settings.replace("users = 20 ", "users = 10 ")
    path.write_text(
        f"""name = "lab"
[[targets]]
name = "{TARGET}"
url = "{target.ws_url}"
remote = true
{settings}"""
    )
    return path


def soak_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "SOAK_COLLECT_SECRET": SECRET, **extra}


def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def only_run(root: Path) -> RunDir | None:
    runs = [p for p in root.iterdir() if p.is_dir()] if root.exists() else []
    return RunDir(runs[0]) if len(runs) == 1 else None


def events_of(run: RunDir, kind: str) -> list[dict[str, Any]]:
    return [e for e in run.records(EVENTS) if e.get("kind") == kind]


def start(command: list[str], log: Path) -> subprocess.Popen:
    """A soak process with the shared secret, its output into `log`."""
    with log.open("wb") as out:
        return subprocess.Popen(command, env=soak_env(), stdout=out, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 60) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.parametrize(
    ("cut_s", "load_s"),
    [
        pytest.param(15, 45, id="cut-15s"),
        pytest.param(60, 150, id="cut-60s", marks=pytest.mark.endurance),
    ],
)
def test_a_remote_collector_supplies_every_sample_across_a_cut(
    tmp_path: Path, unpatched: TargetProcess, cut_s: int, load_s: int
) -> None:
    listen_port = free_port()
    profile = run_profile(tmp_path / "lab.toml", unpatched, listen_port, load_s)
    out, remote_out = tmp_path / "runs", tmp_path / "remote"
    run_cmd = [sys.executable, "-m", "soak", "run", str(profile), "--out", str(out), "--no-report"]
    started = time.monotonic()
    run_log, remote_log = tmp_path / "run.log", tmp_path / "remote.log"
    orchestrator = start(run_cmd, run_log)
    proxy: CuttableProxy | None = None
    remote: subprocess.Popen | None = None
    try:
        run = wait_for(lambda: only_run(out), START_WAIT_S, "the run directory")
        wait_for(lambda: events_of(run, "remote_listening"), 60, "the receiver")
        started = time.monotonic()
        proxy = CuttableProxy(("127.0.0.1", listen_port))
        remote = start(
            [sys.executable, "-m", "soak", "collect", str(remote_profile(tmp_path / "r.toml",
             unpatched)), "--out", str(remote_out), "--join", f"127.0.0.1:{proxy.port}",
             "--no-report"],
            remote_log,
        )  # fmt: skip
        wait_for(lambda: sum(1 for _ in run.target_records(TARGET, PROCESS)) >= 5, 60, "samples")
        time.sleep(max(0.0, 15 - (time.monotonic() - started)))
        proxy.cut()
        cut_at = time.time()
        time.sleep(cut_s)
        restored_at = time.time()
        proxy.restore()
        backfilled = wait_for(
            lambda: [e for e in events_of(run, "remote_backfilled") if e["t"] > restored_at],
            60, "the backfill after the cut",
        )  # fmt: skip
        # stop the remote before the run ends, so all it wrote must be in the run
        time.sleep(max(0.0, load_s + 5 - (time.monotonic() - started)))
        stop(remote, signal.SIGINT)
        assert remote.returncode == 0, remote_log.read_text()
        orchestrator.wait(timeout=load_s + 120)
        assert orchestrator.returncode == 0, run_log.read_text()
    finally:
        for process in (remote, orchestrator):
            if process is not None:
                stop(process)
        if proxy is not None:
            proxy.close()

    remote_run = only_run(remote_out)
    assert remote_run is not None
    for name in (PROCESS, HEALTH):
        theirs = list(remote_run.target_records(TARGET, name))
        ours = list(run.target_records(TARGET, name))
        assert len(ours) == len(theirs) > load_s // 2, name  # none lost, none doubled
        assert [r.get("threads", r.get("status")) for r in ours] == [
            r.get("threads", r.get("status")) for r in theirs
        ]
        assert all(abs(a["t"] - b["t"]) < 0.5 for a, b in zip(ours, theirs, strict=True))
        times = [r["t"] for r in ours]
        assert times == sorted(times)
    during_cut = [
        r for r in run.target_records(TARGET, PROCESS) if cut_at + 1 < r["t"] < restored_at - 1
    ]
    assert len(during_cut) >= cut_s - 4  # sampled there while apart, backfilled here
    assert {e["source"] for e in run.records(EVENTS)} <= {"run", "load", "collector"}
    assert len(events_of(run, "remote_joined")) >= 2
    assert events_of(run, "remote_lost")
    assert backfilled[0]["records"] >= len(during_cut)
    assert proxy is not None and proxy.accepted >= 2
    merged = subprocess.run(
        [sys.executable, "-m", "soak", "merge", str(run.path), str(remote_run.path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert merged.returncode == 0 and "merged 0 records" in merged.stdout, merged  # one path
    for path in [*run.path.rglob("*"), *remote_run.path.rglob("*")]:  # the secret nowhere
        assert not path.is_file() or SECRET.encode() not in path.read_bytes(), path
    live = run_status(run.path)["targets"][TARGET]  # soak status sees it as a local target
    assert live["latest"]["pid"] == unpatched.pid

    report = subprocess.run(
        [sys.executable, "-m", "soak", "report", str(run.path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert report.returncode == 1, report.stdout + report.stderr  # criteria failed
    summary = json.loads((run.path / "summary.json").read_text())
    judged = summary["targets"][TARGET]
    assert judged["verdict"] == "fail"
    failed = {
        c["name"] for c in summary["criteria"] if c["target"] == TARGET and c["status"] == "fail"
    }
    assert {"threads.growth_per_hour", "stalls.count"} <= failed  # as soak demo's unpatched
    assert judged["threads"]["growth_per_hour"] > 100


FAKETIME = shutil.which("faketime")
SHIFT_S = 3600.0
#: `soak` with time.sleep waiting on a lock instead. faketime 0.9.10 shifts either both
#: clocks (then a lock's timeout, measured on the real monotonic clock from a shifted
#: start, waits an hour) or the wall clock only (FAKETIME_DONT_FAKE_MONOTONIC=1; then its
#: clock_nanosleep wrapper fails every time.sleep with EINVAL). The wall clock is the one
#: machines disagree on.
SLEEP_BY_LOCK = (
    "import sys, threading, time; "
    "time.sleep = lambda s: threading.Event().wait(s) and None; "
    "sys.argv[0] = 'soak'; from soak.cli import main; main()"
)


@pytest.mark.skipif(
    FAKETIME is None, reason="faketime is not installed (apt-get install -y faketime)"
)
def test_the_run_corrects_a_remote_clock_that_is_off(
    tmp_path: Path, unpatched: TargetProcess
) -> None:
    run = RunDir.create(tmp_path / "runs", "lab", "clock", {"targets": [{"name": TARGET}]})
    events: list[dict[str, Any]] = []
    receiver = Receiver(
        run, ("127.0.0.1", 0), SECRET, [TARGET], lambda kind, message, target=None, **f:
        events.append({"kind": kind, **f}),
    )  # fmt: skip
    receiver.start()
    remote_out = tmp_path / "remote"
    command = [
        FAKETIME, "-f", f"+{SHIFT_S:g}s", sys.executable, "-c", SLEEP_BY_LOCK, "collect",
        str(remote_profile(tmp_path / "r.toml", unpatched)), "--out", str(remote_out),
        "--join", f"127.0.0.1:{receiver.address[1]}", "--duration", "8s", "--no-report",
    ]  # fmt: skip
    began = time.time()
    try:
        remote = subprocess.run(
            command, env=soak_env(FAKETIME_DONT_FAKE_MONOTONIC="1"),  # the wall clock only
            capture_output=True, text=True, timeout=90,
        )  # fmt: skip
    finally:
        receiver.close()
    ended = time.time()
    assert remote.returncode == 0, remote.stdout + remote.stderr
    offsets = [e["offset_s"] for e in events if e["kind"] == "clock_offset"]
    assert offsets and all(abs(o - SHIFT_S) < 1.0 for o in offsets), offsets
    ours = list(run.target_records(TARGET, PROCESS))
    remote_run = only_run(remote_out)
    assert remote_run is not None
    theirs = list(remote_run.target_records(TARGET, PROCESS))
    assert len(ours) == len(theirs) >= 5
    assert all(theirs_t["t"] > ended + SHIFT_S / 2 for theirs_t in theirs)  # written shifted
    for record, original in zip(ours, theirs, strict=True):
        assert began - 1 < record["t"] < ended + 1  # on this machine's clock again
        assert abs(original["t"] - SHIFT_S - record["t"]) < 1.0
