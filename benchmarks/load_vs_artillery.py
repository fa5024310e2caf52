"""soak's load generator against the asyncio floor and Artillery 2, busy and idle, one run.

Every client runs in its own subprocess against the same built-in target (patched, 100-token
replies streamed without pauses) on loopback, one after the other:

- floor: a bare asyncio `websockets` client (load_cpu_per_frame.py's baseline; idle: its
  own minimal idle client), CPU from inside the process after its imports;
- soak: the load process (`python -m soak.load`, profile kind json-events); busy CPU from
  generator.jsonl (start-up left out), idle CPU with psutil over the window;
- artillery: Artillery 2 from npm, installed pinned under ~/.cache/soak-bench by this
  script, built-in ws engine (benchmarks/artillery/*-builtin.yml); CPU of its process tree
  with psutil from "Phase started" (Node start-up and module loading left out) to its end;
- artillery+js: Artillery with a small processor (benchmarks/artillery/chat.js) that
  json-parses every frame until `done` (busy only).

Busy: N chats asking back to back for S seconds; CPU microseconds per streamed frame, each
client counting its own frames (soak: chats.jsonl; floor: its counter; artillery:
websocket.messages_received less one session_switched frame per chat; artillery+js: its
chat.frames counter). Idle: M chats, one turn each, then nothing but an application ping
every 30 s; CPU microseconds per chat-second and RSS (whole process tree) per open chat
over a window. Workers: soak busy with --workers 1, 2, ... (a Locust master and local
workers, as `soak run --workers` starts them): chats held, replies and frames per second.
Prints the ratios against the floor measured in the same run and the goals of issue 15.

    python benchmarks/load_vs_artillery.py                 # ~5 minutes (+1 min first install)
    python benchmarks/load_vs_artillery.py --quick         # ~1.5 minutes
    python benchmarks/load_vs_artillery.py --idle-chats 2000 --skip-artillery
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from load_common import load_profile, run_baseline, soak_cpu
from load_cpu_per_frame import BASELINE

from soak.rundir import read_jsonl
from soak.target import start_target

#: Artillery pinned: the newest 2.x whose engines accept Node 20 (2.0.22 on need Node 22).
ARTILLERY_VERSION = "2.0.21"
ARTILLERY_HOME = Path.home() / ".cache" / "soak-bench" / f"artillery-{ARTILLERY_VERSION}"
SCENARIOS = Path(__file__).resolve().parent / "artillery"
#: Seconds between two application pings of an idle chat.
PING_EVERY_S = 30.0
#: A turn every ten minutes: in a window shorter than that, an idle chat asks nothing.
IDLE_THINK = "600s"

IDLE_FLOOR = r"""
import asyncio, json, random, sys, time
from websockets.asyncio.client import connect

async def chat(url, opened, ready, hold_until, ping_every):
    # no library keepalive: the application pings are the only traffic, as for the others
    async with connect(url, compression=None, max_size=None, proxy=None,
                       ping_interval=None) as ws:
        await ws.recv()  # session_switched
        await ws.send(json.dumps({"type": "message", "content": "Reply to request idle.",
                                  "request_id": "idle"}))
        while json.loads(await ws.recv()).get("type") not in ("done", "error"):
            pass
        opened.append(1)
        await ready.wait()
        await asyncio.sleep(random.uniform(0, ping_every))
        while time.monotonic() < hold_until:
            await ws.send('{"type": "ping"}')
            while json.loads(await ws.recv()).get("type") != "pong":
                pass
            await asyncio.sleep(ping_every)

async def main(url, chats, hold, ping_every):
    opened, ready = [], asyncio.Event()
    hold_until = time.monotonic() + hold
    tasks = []
    for start in range(0, chats, 100):  # connect in batches: the listen backlog is finite
        tasks += [asyncio.create_task(chat(url, opened, ready, hold_until, ping_every))
                  for _ in range(start, min(start + 100, chats))]
        while len(opened) < len(tasks) and not any(t.done() for t in tasks):
            await asyncio.sleep(0.05)
    ready.set()
    print("ready", flush=True)
    await asyncio.gather(*tasks)

asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])))
"""


class BenchError(Exception):
    """A client that could not be run or measured; the report says why and goes on."""


# -- processes ----------------------------------------------------------------------------
def tree(pid: int) -> list[psutil.Process]:
    """The process `pid` and all its descendants (those still alive)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of the process tree under `pid`, living processes only."""
    total = 0.0
    for process in tree(pid):
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def tree_rss_mb(pid: int) -> float:
    """Resident memory of the process tree under `pid`, in MB (2**20 bytes)."""
    total = 0
    for process in tree(pid):
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 2**20


def stop_tree(popen: subprocess.Popen[Any], grace_s: float = 15.0) -> None:
    """Stop a process we started and its descendants, by pid: SIGTERM, then SIGKILL."""
    members = tree(popen.pid)
    for process in reversed(members):
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _, alive = psutil.wait_procs(members, timeout=grace_s)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        popen.wait(timeout=5)


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `check` every 0.2 s until it holds; BenchError after `timeout_s` seconds."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not within {timeout_s:g} s")
        time.sleep(0.2)


@dataclass
class Window:
    """CPU seconds and wall seconds of a process tree over a measuring window, RSS at its end."""

    cpu_s: float
    wall_s: float
    rss_mb: float


def measure_window(pid: int, seconds: float, alive: Callable[[], bool]) -> Window:
    """CPU and wall time of the tree under `pid` over the next `seconds` s, then its RSS."""
    cpu0, t0 = tree_cpu_s(pid), time.monotonic()
    time.sleep(seconds)
    if not alive():
        raise BenchError("the client ended during the idle window")
    return Window(tree_cpu_s(pid) - cpu0, time.monotonic() - t0, tree_rss_mb(pid))


def settle(pid: int, max_s: float = 20.0, share: float = 0.1) -> None:
    """Wait until the tree under `pid` spends less than `share` of a core over 1 s (the
    first turns' replies read), at most `max_s` s."""
    deadline = time.monotonic() + max_s
    last = tree_cpu_s(pid)
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = tree_cpu_s(pid)
        if now - last < share:
            return
        last = now


# -- Artillery ----------------------------------------------------------------------------
def artillery_env() -> dict[str, str]:
    """Environment of an Artillery run: no telemetry (there is no network but loopback)."""
    return {**os.environ, "ARTILLERY_DISABLE_TELEMETRY": "true", "NO_COLOR": "1"}


def install_artillery() -> Path:
    """The `artillery` entry script, installed with npm under ARTILLERY_HOME once (pinned,
    without install scripts: no browser download for its Playwright engine)."""
    entry = ARTILLERY_HOME / "node_modules" / "artillery" / "bin" / "run"
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise BenchError("node and npm are not on PATH (apt-get install nodejs npm)")
    if not entry.exists():
        print(f"installing artillery@{ARTILLERY_VERSION} under {ARTILLERY_HOME} ...", flush=True)
        ARTILLERY_HOME.mkdir(parents=True, exist_ok=True)
        command = [
            npm,
            "install",
            "--prefix",
            str(ARTILLERY_HOME),
            "--no-audit",
            "--no-fund",
            "--ignore-scripts",
            "--loglevel=error",
            f"artillery@{ARTILLERY_VERSION}",
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            raise BenchError("npm install artillery did not finish within 15 minutes") from None
        if done.returncode != 0 or not entry.exists():
            raise BenchError(f"npm install artillery failed:\n{done.stderr.strip()[-1500:]}")
    try:
        version = subprocess.run(
            [node, str(entry), "version"],
            capture_output=True,
            text=True,
            timeout=60,
            env=artillery_env(),
        )
    except subprocess.TimeoutExpired:
        raise BenchError("`artillery version` did not answer within 60 s") from None
    if f"Artillery: {ARTILLERY_VERSION}" not in version.stdout:
        tail = (version.stdout + version.stderr).strip()[-1500:]
        raise BenchError(f"artillery {ARTILLERY_VERSION} does not run here:\n{tail}")
    return entry


class ArtilleryRun:
    """One `artillery run` subprocess: its stdout lines watched (and logged), its report."""

    def __init__(
        self,
        entry: Path,
        scenario: str,
        url: str,
        vusers: int,
        variables: dict[str, Any],
        folder: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.report = folder / "report.json"
        self.log = folder / "artillery.log"
        arrive_s = max(1, math.ceil(vusers / 250))
        overrides = {
            "config": {
                "target": url,
                "phases": [
                    {"duration": arrive_s, "arrivalCount": vusers},
                ],
            }
        }
        command = [
            shutil.which("node") or "node",
            str(entry),
            "run",
            "--overrides",
            json.dumps(overrides),
            "--variables",
            json.dumps(variables),
            "--output",
            str(self.report),
            str(SCENARIOS / scenario),
        ]
        self.events: dict[str, float] = {}
        self.phase_cpu_s: float | None = None
        self.popen = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**artillery_env(), **(env or {})},
            cwd=SCENARIOS,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        with self.log.open("w") as log:
            for line in self.popen.stdout:
                log.write(line)
                for event in ("Phase started", "Phase completed", "Callback was already"):
                    if event in line and event not in self.events:
                        if event == "Phase started":
                            self.phase_cpu_s = tree_cpu_s(self.popen.pid)
                        self.events[event] = time.monotonic()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def finish(self, timeout_s: float) -> tuple[float, dict[str, int]]:
        """Wait for the run's end: CPU seconds of its tree since "Phase started" (rusage of
        the node process, which includes any children it reaped) and the report's counters."""
        deadline = time.monotonic() + timeout_s
        usage = None
        while usage is None:
            pid, status, rusage = os.wait4(self.popen.pid, os.WNOHANG)
            if pid:
                self.popen.returncode = os.waitstatus_to_exitcode(status)
                usage = rusage
            elif time.monotonic() > deadline:
                self.stop()
                raise BenchError(f"artillery did not finish within {timeout_s:g} s; see {self.log}")
            else:
                time.sleep(0.1)
        self.reader.join(timeout=5)
        if "Callback was already" in self.events or self.popen.returncode != 0:
            raise BenchError(f"artillery failed (exit {self.popen.returncode}); see {self.log}")
        if self.phase_cpu_s is None or not self.report.exists():
            raise BenchError(f"artillery ran no phase or wrote no report; see {self.log}")
        counters = json.loads(self.report.read_text())["aggregate"]["counters"]
        return usage.ru_utime + usage.ru_stime - self.phase_cpu_s, counters

    def stop(self) -> None:
        if self.alive():
            stop_tree(self.popen)
        self.reader.join(timeout=5)


def artillery_busy(
    entry: Path, url: str, chats: int, turns: int, tokens: int, folder: Path
) -> tuple[float, int, int]:
    """Built-in ws engine, `turns` back-to-back turns per chat: CPU seconds after start-up,
    frames (messages received less the session_switched ones) and replies (messages sent)."""
    run = ArtilleryRun(
        entry, "busy-builtin.yml", url, chats, {"turns": turns, "rest": tokens}, folder
    )
    try:
        cpu_s, counters = run.finish(timeout_s=turns * 10 + 120)
    finally:
        run.stop()
    if counters.get("vusers.failed", 0):
        raise BenchError(f"{counters['vusers.failed']} artillery users failed; see {run.log}")
    received = counters.get("websocket.messages_received", 0)
    return (
        cpu_s,
        received - counters.get("vusers.created", 0),
        counters.get("websocket.messages_sent", 0),
    )


def artillery_processor_busy(
    entry: Path, url: str, chats: int, seconds: float, folder: Path
) -> tuple[float, int, int]:
    """Artillery with chat.js, asking for `seconds` s: CPU seconds after start-up, frames
    and replies (its chat.frames and chat.replies counters)."""
    env = {"SOAK_BENCH_SECONDS": str(seconds)}
    run = ArtilleryRun(entry, "busy-processor.yml", url, chats, {}, folder, env)
    try:
        cpu_s, counters = run.finish(timeout_s=seconds + 180)
    finally:
        run.stop()
    if counters.get("vusers.failed", 0):
        raise BenchError(f"{counters['vusers.failed']} artillery users failed; see {run.log}")
    return cpu_s, counters.get("chat.frames", 0), counters.get("chat.replies", 0)


def artillery_idle(entry: Path, url: str, chats: int, window_s: float, folder: Path) -> Window:
    """Built-in ws engine, `chats` idle chats: the window once all arrived and settled."""
    pings = math.ceil((window_s + 120) / PING_EVERY_S)
    run = ArtilleryRun(entry, "idle-builtin.yml", url, chats, {"pings": pings}, folder)
    try:
        wait_for(
            lambda: "Phase completed" in run.events or not run.alive(),
            120,
            "artillery's idle chats arriving",
        )
        if not run.alive():
            raise BenchError(f"artillery ended early (exit {run.popen.returncode}); see {run.log}")
        settle(run.popen.pid)
        return measure_window(run.popen.pid, window_s, run.alive)
    finally:
        run.stop()


# -- floor and soak -----------------------------------------------------------------------
def floor_idle(url: str, chats: int, window_s: float) -> Window:
    """The asyncio floor holding `chats` idle chats: the window once all asked once."""
    hold = window_s + 90
    popen = subprocess.Popen(
        [sys.executable, "-c", IDLE_FLOOR, url, str(chats), str(hold), str(PING_EVERY_S)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert popen.stdout is not None
        line = popen.stdout.readline()  # blocks until "ready", or "" when it died
        if line.strip() != "ready":
            raise BenchError(f"the idle floor client failed (exit {popen.wait()})")
        settle(popen.pid)
        return measure_window(popen.pid, window_s, lambda: popen.poll() is None)
    finally:
        stop_tree(popen)


def start_load(run_dir: Path, profile: dict[str, Any], *args: str) -> subprocess.Popen[bytes]:
    """Start `python -m soak.load --run-dir run_dir args` with `profile` on its stdin."""
    run_dir.mkdir(parents=True, exist_ok=True)
    popen = subprocess.Popen(
        [sys.executable, "-m", "soak.load", "--run-dir", str(run_dir), *args],
        stdin=subprocess.PIPE,
    )
    assert popen.stdin is not None
    popen.stdin.write(json.dumps(profile).encode())
    popen.stdin.close()
    return popen


class BurstServer:
    """benchmarks/burst_server.py in a subprocess: where it listens, its pid; stop() ends it."""

    def __init__(self, tokens: int) -> None:
        script = Path(__file__).with_name("burst_server.py")
        self.popen = subprocess.Popen(
            [sys.executable, str(script), "--tokens", str(tokens)], stdout=subprocess.PIPE
        )
        assert self.popen.stdout is not None
        line = self.popen.stdout.readline()
        if not line:
            raise BenchError(f"the burst server did not start (exit {self.popen.wait()})")
        info = json.loads(line)
        self.pid: int = info["pid"]
        self.url = f"ws://127.0.0.1:{info['port']}/ws"

    def stop(self) -> None:
        stop_tree(self.popen)


def turns_done(run_dir: Path) -> int:
    """Turns soak finished so far (chats.jsonl)."""
    path = run_dir / "chats.jsonl"
    return sum(r["turns"] for r in read_jsonl(path)) if path.exists() else 0


def soak_idle(url: str, chats: int, window_s: float, folder: Path) -> Window:
    """soak holding `chats` idle chats (a turn every 10 minutes, pings every 30 s): the
    window once every chat finished its first turn."""
    profile = load_profile(
        url,
        users=chats,
        spawn_rate=max(chats / 2, 10),
        think_time=IDLE_THINK,
        duration=window_s + 300,
        idle_after=0,
        interval="5s",
        ping_every=PING_EVERY_S,
    )
    popen = start_load(folder, profile)
    try:
        wait_for(
            lambda: turns_done(folder) >= chats or popen.poll() is not None,
            120,
            "soak's idle chats asking once",
        )
        if popen.poll() is not None:
            raise BenchError(f"soak's load process ended early; see {folder}/load.log")
        settle(popen.pid)
        return measure_window(popen.pid, window_s, lambda: popen.poll() is None)
    finally:
        stop_tree(popen)


@dataclass
class Throughput:
    """What soak achieved with some workers: chats held, replies and frames per second."""

    workers: int
    chats: int
    replies_per_s: float
    frames_per_s: float
    #: CPU of the load processes (master and workers) and of the server, % of one core
    load_cpu_percent: float
    server_cpu_percent: float


def soak_workers(
    server: BurstServer, chats: int, seconds: float, workers: int, folder: Path
) -> Throughput:
    """soak busy against the burst server as a Locust master with `workers` local workers (as
    `soak run --workers` starts them); rates over the intervals after the first (the ramp),
    CPU of load and server over the whole run."""
    url = server.url
    profile = load_profile(
        url,
        users=chats,
        spawn_rate=1000,
        think_time="0s",
        duration=seconds,
        idle_after=0,
        interval="2s",
        ping_every=0,
        linger=0,
    )
    with socket.socket() as probe:  # a free loopback port for the master
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    server_cpu0, started = tree_cpu_s(server.pid), time.monotonic()
    master = start_load(folder, profile, "--workers", str(workers), "--master-bind", address)
    local = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "soak.load",
                "--worker",
                address,
                "--log",
                str(folder / f"worker-{n}.log"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for n in range(1, workers + 1)
    ]
    load_cpu_s = 0.0
    try:
        try:
            while master.poll() is None and time.monotonic() - started < seconds + 120:
                load_cpu_s = max(load_cpu_s, sum(tree_cpu_s(p.pid) for p in (master, *local)))
                time.sleep(0.5)
            code = master.wait(timeout=1)
        except subprocess.TimeoutExpired:
            raise BenchError(f"the master did not finish; see {folder}/load.log") from None
        if code != 0:
            raise BenchError(f"the master failed (exit {code}); see {folder}/load.log")
    finally:
        for popen in (master, *local):
            stop_tree(popen, grace_s=10)
    records = list(read_jsonl(folder / "chats.jsonl"))
    steady = records[1:] or records
    span = sum(r["interval_s"] for r in steady) or 1.0
    wall_s = time.monotonic() - started
    return Throughput(
        workers,
        max((r["connections"] for r in records), default=0),
        sum(r["turns"] for r in steady) / span,
        sum(r["frames"] for r in steady) / span,
        load_cpu_s / wall_s * 100,
        (tree_cpu_s(server.pid) - server_cpu0) / wall_s * 100,
    )


def measure_workers(
    server: BurstServer, chats: int, seconds: float, counts: list[int], folder: Path,
    notes: list[str],
) -> list[Throughput]:  # fmt: skip
    """soak_workers for each worker count, printed as they come."""
    throughput = []
    for count in counts:
        result = attempt(
            f"soak --workers {count}",
            notes,
            lambda count=count: soak_workers(
                server, chats, seconds, count, folder / f"workers-{count}"
            ),
        )
        if result is not None:
            throughput.append(result)
            print(
                f"  --workers {count}: {result.chats} chats, {result.replies_per_s:,.0f} "
                f"replies/s, {result.frames_per_s:,.0f} frames/s; load "
                f"{result.load_cpu_percent:.0f}% of a core, server "
                f"{result.server_cpu_percent:.0f}%",
                flush=True,
            )
    return throughput


# -- the report ---------------------------------------------------------------------------
@dataclass
class Busy:
    """One client's busy run: CPU seconds after start-up, frames and replies it counted."""

    cpu_s: float
    frames: int
    replies: int

    @property
    def us_per_frame(self) -> float:
        return self.cpu_s / self.frames * 1e6 if self.frames else math.inf


def attempt(name: str, notes: list[str], run: Callable[[], Any]) -> Any:
    """`run()`, or None with a note when the client could not be run or measured."""
    try:
        return run()
    except (BenchError, SystemExit, OSError, ValueError, KeyError) as exc:
        notes.append(f"{name}: {exc}")
        print(f"  {name}: NOT MEASURED: {exc}", flush=True)
        return None


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, help="busy concurrent chats (default 100)")
    parser.add_argument("--seconds", type=float, help="busy seconds per client (default 20)")
    parser.add_argument("--idle-chats", type=int, help="idle chats open (default 500; 2000)")
    parser.add_argument("--idle-window", type=float, help="idle seconds measured (default 30)")
    parser.add_argument("--workers", help="soak worker counts, comma-separated (default 1,2,4)")
    parser.add_argument("--worker-seconds", type=float, help="per worker count (default 15)")
    parser.add_argument("--tokens", type=int, default=100, help="tokens per reply (100)")
    parser.add_argument("--skip-artillery", action="store_true", help="floor and soak only")
    parser.add_argument("--quick", action="store_true", help="small and short (~1.5 min)")
    args = parser.parse_args()
    quick = args.quick
    chats = args.chats or (20 if quick else 100)
    seconds = args.seconds or (6.0 if quick else 20.0)
    idle_chats = args.idle_chats or (100 if quick else 500)
    window = args.idle_window or (10.0 if quick else 30.0)
    worker_counts = [int(n) for n in (args.workers or ("1,2" if quick else "1,2,4")).split(",")]
    worker_seconds = args.worker_seconds or (6.0 if quick else 15.0)
    notes: list[str] = []
    entry: Path | None = None
    if not args.skip_artillery:
        entry = attempt("artillery", notes, install_artillery)
    started = time.monotonic()
    extra = ["--tokens", str(args.tokens), "--token-interval", "0"]
    busy: dict[str, Busy] = {}
    idle: dict[str, Window] = {}
    throughput: list[Throughput] = []
    with (
        start_target(patched=True, extra_args=extra) as target,
        tempfile.TemporaryDirectory() as tmp_name,
    ):
        tmp, url = Path(tmp_name), target.ws_url
        server: dict[str, float] = {}

        def busy_run(name: str, run: Callable[[], Busy | None]) -> None:
            cpu0, t0 = tree_cpu_s(target.pid), time.monotonic()
            result = attempt(name, notes, run)
            server[name] = (tree_cpu_s(target.pid) - cpu0) / (time.monotonic() - t0) * 100
            if result is not None:
                busy[name] = result
                print(
                    f"  busy {name:<13} {result.frames:>9,} frames "
                    f"({result.frames / max(result.replies, 1):.1f}/reply) {result.cpu_s:6.2f} s "
                    f"CPU {result.us_per_frame:6.1f} us/frame; server {server[name]:.0f}% of a "
                    f"core",
                    flush=True,
                )

        print(f"busy: {chats} chats, {args.tokens}-token replies back to back, {seconds:g} s")

        def floor_busy() -> Busy:
            out = run_baseline(BASELINE, url, str(chats), str(seconds), timeout=seconds + 120)
            return Busy(out["cpu_s"], out["frames"], out["frames"] // (args.tokens + 1))

        def soak_busy() -> Busy:
            steady, _, frames, ok = soak_cpu(url, chats, seconds, tmp / "busy-soak")
            return Busy(steady, frames, ok)

        busy_run("floor", floor_busy)
        busy_run("soak", soak_busy)
        if entry is not None:
            # the built-in engine cannot stop on a clock: as many turns as the floor did
            floor_replies = busy["floor"].replies if "floor" in busy else chats * 10
            turns = max(2, round(floor_replies / chats))
            busy_run(
                "artillery",
                lambda: Busy(
                    *artillery_busy(entry, url, chats, turns, args.tokens, tmp / "busy-art")
                ),
            )
            busy_run(
                "artillery+js",
                lambda: Busy(
                    *artillery_processor_busy(entry, url, chats, seconds, tmp / "busy-art-js")
                ),
            )

        print(f"idle: {idle_chats} chats, one turn per 10 min, pings every 30 s, {window:g} s")
        runs: list[tuple[str, Callable[[], Window]]] = [
            ("floor", lambda: floor_idle(url, idle_chats, window)),
            ("soak", lambda: soak_idle(url, idle_chats, window, tmp / "idle-soak")),
        ]
        if entry is not None:
            runs.append(
                (
                    "artillery",
                    lambda: artillery_idle(entry, url, idle_chats, window, tmp / "idle-art"),
                )
            )
        for name, run in runs:
            result = attempt(name, notes, run)
            if result is not None:
                idle[name] = result
                print(
                    f"  idle {name:<10} {result.cpu_s:6.3f} s CPU in {result.wall_s:.1f} s, "
                    f"RSS {result.rss_mb:.0f} MB",
                    flush=True,
                )

        print(
            f"workers: soak, {chats} chats busy against the burst server (a reply in one "
            f"write), {worker_seconds:g} s each"
        )
        burst = attempt("burst server", notes, lambda: BurstServer(args.tokens))
        if burst:
            try:
                throughput = measure_workers(
                    burst, chats, worker_seconds, worker_counts, tmp, notes
                )
            finally:
                burst.stop()
    report(busy, idle, throughput, idle_chats, notes, entry is not None)
    print(f"\n{os.cpu_count()} cores; measured in {time.monotonic() - started:.0f} s")


def report(
    busy: dict[str, Busy],
    idle: dict[str, Window],
    throughput: list[Throughput],
    idle_chats: int,
    notes: list[str],
    artillery: bool,
) -> None:
    """Print the tables and the goals (ratios against the floor of this run)."""
    floor = busy.get("floor")
    print("\n| client | us per frame | vs floor |\n|---|---|---|")
    for name, result in busy.items():
        ratio = f"{result.us_per_frame / floor.us_per_frame:.2f}x" if floor else "-"
        print(f"| {name} | {result.us_per_frame:.1f} | {ratio} |")
    base = idle.get("floor")
    print(
        f"\n| idle, {idle_chats} chats | us per chat-second | % of a core | RSS MB | "
        "MB per chat | vs floor |\n|---|---|---|---|---|---|"
    )
    per_chat_s = {n: w.cpu_s / w.wall_s / idle_chats * 1e6 for n, w in idle.items()}
    for name, result in idle.items():
        ratio = f"{per_chat_s[name] / per_chat_s['floor']:.2f}x" if base and base.cpu_s else "-"
        print(
            f"| {name} | {per_chat_s[name]:.1f} | {result.cpu_s / result.wall_s * 100:.2f} | "
            f"{result.rss_mb:.0f} | {result.rss_mb / idle_chats:.3f} | {ratio} |"
        )
    if throughput:
        one = throughput[0].frames_per_s or 1.0
        print(
            "\n| soak --workers | chats | replies/s | frames/s | vs 1 worker | load % of a core "
            "| server % |\n|---|---|---|---|---|---|---|"
        )
        for t in throughput:
            print(
                f"| {t.workers} | {t.chats} | {t.replies_per_s:,.0f} | {t.frames_per_s:,.0f} | "
                f"{t.frames_per_s / one:.2f}x | {t.load_cpu_percent:.0f} | "
                f"{t.server_cpu_percent:.0f} |"
            )
    print("\ngoals (issue 15):")
    soak = busy.get("soak")
    if soak and "artillery" in busy:
        art = busy["artillery"].us_per_frame
        print(
            f"  CPU per frame <= Artillery built-in: {soak.us_per_frame:.1f} vs {art:.1f} us "
            f"{verdict(soak.us_per_frame <= art)}"
        )
    if soak and floor:
        ratio = soak.us_per_frame / floor.us_per_frame
        print(f"  CPU per frame <= 0.75x floor: {ratio:.2f}x {verdict(ratio <= 0.75)}")
    if "soak" in idle and base and base.cpu_s:
        ratio = per_chat_s["soak"] / per_chat_s["floor"]
        print(f"  idle CPU <= 2x floor: {ratio:.2f}x {verdict(ratio <= 2)}")
    if "soak" in idle and "artillery" in idle:
        mine, theirs = idle["soak"].rss_mb, idle["artillery"].rss_mb
        print(
            f"  memory per chat <= Artillery's: {mine / idle_chats:.3f} vs "
            f"{theirs / idle_chats:.3f} MB {verdict(mine <= theirs)}"
        )
    if not artillery:
        print("  (Artillery not measured: the goals against it are not checked)")
    for note in notes:
        print(f"NOTE {note}")


if __name__ == "__main__":
    main()
