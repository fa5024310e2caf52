"""The collector's own cost at a 1 s interval: CPU as a share of one core, and storage per day.

Starts a target process with 500 threads and 1,000 open fds (sockets in several
TCP states, pipes, files) that serves a /health JSON body like the built-in
target's, then runs side by side, for the same measuring window:

- baseline: a bare psutil sampler of the same target every second (CPU percent, RSS,
  thread count; what psrecord does), writing nothing;
- `python -m soak.collect` at interval 1 s (/health polled every second too);
- the same with `health_interval = 5s`;
- the same without the Python thread census (`python_threads = false`): the census runs
  `py-spy dump --json --nonblocking` on every detail sample (30 s), and its CPU counts
  as the collector's (children's CPU is included for every row).

It prints each one's CPU (user + system, after a warm-up that leaves out start-up
imports) as a percentage of one core, its ratio to the baseline, the goal (<= 1%),
and the bytes each data file grew by, scaled to MB per target per day.

    python benchmarks/collector_cpu.py                 # 120 s window
    python benchmarks/collector_cpu.py --seconds 300   # longer, steadier figures
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil

GOAL_PERCENT = 1.0
STORAGE_GOAL_MB = 20.0
WARMUP_S = 5.0

TARGET = textwrap.dedent(
    """
    import json, os, socket, sys, threading, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    stop = threading.Event()
    for i in range(499):
        threading.Thread(target=stop.wait, name=f"worker-{i}", daemon=True).start()
    keep = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(512)
    for i in range(150):  # 300 established loopback sockets
        client = socket.create_connection(listener.getsockname())
        peer, _ = listener.accept()
        keep += [client, peer]
    for i in range(150):  # 150 pipes: 300 fds
        keep += list(os.pipe())
    while len(os.listdir("/proc/self/fd")) < 1000:
        keep.append(open(os.devnull))
    body = {"status": "ok", "version": "0.1.0", "build": "bench", "uptime_s": 0.0,
            "diagnostics": {"thread_count": 500, "asyncio_task_count": 12, "active_chats": 3,
                            "connections": 10, "replies": 12345, "history_size": 1000,
                            "history_bytes": 1234567, "loop_lag_ms": 0.123,
                            "loop_lag_max_ms": 1.234, "orphaned_tickers": 0,
                            "leaked_executors": 0}}
    started = time.monotonic()
    class Health(BaseHTTPRequestHandler):
        def do_GET(self):
            body["uptime_s"] = round(time.monotonic() - started, 3)
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        def log_message(self, *args):
            pass
    class Server(ThreadingHTTPServer):
        daemon_threads = True
    server = Server(("127.0.0.1", int(sys.argv[1])), Health)
    print(len(os.listdir("/proc/self/fd")), threading.active_count(), flush=True)
    server.serve_forever()
    """
)

BARE_SAMPLER = textwrap.dedent(
    """
    import sys, threading, psutil
    process = psutil.Process(int(sys.argv[1]))
    stop = threading.Event()
    while not stop.wait(1.0):
        with process.oneshot():
            process.cpu_percent(None), process.memory_info().rss, process.num_threads()
    """
)
BASELINE = "baseline: bare psutil sampler"


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_collector(
    run_dir: Path, pid: int, port: int, health_interval: float, census: bool
) -> subprocess.Popen:
    run_dir.mkdir(parents=True)
    profile = {
        "targets": [{"name": "bench", "pid": pid, "health": f"http://127.0.0.1:{port}/health"}],
        "collector": {
            "interval": 1.0,
            "health_interval": health_interval,
            "health_timeout": 2.0,
            "python_threads": census,
        },
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "soak.collect", "--run-dir", str(run_dir)],
        stdin=subprocess.PIPE,
    )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(profile).encode())
    proc.stdin.close()
    return proc


def cpu_seconds(pid: int) -> float:
    """CPU of a process and of its children that ended (py-spy runs of the census)."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system + times.children_user + times.children_system


def sizes(run_dir: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in (run_dir / "targets" / "bench").glob("*.jsonl")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="measuring window (s)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="soak-bench-collector-"))
    script = work / "target.py"
    script.write_text(TARGET)
    port = free_port()
    target = subprocess.Popen([sys.executable, str(script), str(port)], stdout=subprocess.PIPE)
    assert target.stdout is not None
    fds, threads = target.stdout.readline().split()
    runs = {
        "soak collector (health 1 s)": (1.0, True),
        "soak collector (health 5 s)": (5.0, True),
        "  the same, no thread census": (5.0, False),
    }
    procs: dict[str, subprocess.Popen] = {
        BASELINE: subprocess.Popen([sys.executable, "-c", BARE_SAMPLER, str(target.pid)])
    }
    dirs = {}
    for index, (name, (health_interval, census)) in enumerate(runs.items()):
        dirs[name] = work / f"run{index}"
        procs[name] = start_collector(dirs[name], target.pid, port, health_interval, census)
    try:
        time.sleep(WARMUP_S)
        cpu0 = {name: cpu_seconds(p.pid) for name, p in procs.items()}
        size0 = {name: sizes(path) for name, path in dirs.items()}
        wall0 = time.monotonic()
        time.sleep(args.seconds)
        wall = time.monotonic() - wall0
        share = {name: (cpu_seconds(p.pid) - cpu0[name]) / wall * 100 for name, p in procs.items()}
        grown = {
            name: {f: size - size0[name].get(f, 0) for f, size in sizes(path).items()}
            for name, path in dirs.items()
        }
    finally:
        for proc in (*procs.values(), target):
            proc.terminate()
            proc.wait()

    baseline = share[BASELINE]
    print(
        f"target: {threads.decode()} threads, {fds.decode()} open fds; interval 1 s; "
        f"window {wall:.0f} s after a {WARMUP_S:g} s warm-up"
    )
    print(f"{'':34}{'CPU, % of one core':>20}{'x baseline':>12}")
    for name, value in share.items():
        ratio = value / baseline if baseline > 0 else float("inf")
        print(f"{name:34}{value:>19.2f}%{ratio:>11.1f}x")
    with_census = share["soak collector (health 5 s)"]
    without = share["  the same, no thread census"]
    census_ratio = with_census / without if without > 0 else float("inf")
    print(f"thread census: {with_census - without:+.2f} points, {census_ratio:.2f}x without it")
    worst = max(share[name] for name in runs)
    verdict = "PASS" if worst <= GOAL_PERCENT else "FAIL"
    print(f"goal: collector <= {GOAL_PERCENT:g}% of one core: {verdict} ({worst:.2f}%)")
    print()
    print("storage per target per day at interval 1 s (MB = 10^6 bytes):")
    for name in runs:
        per_day = {f: grown[name].get(f, 0) / wall * 86400 / 1e6 for f in sorted(grown[name])}
        parts = ", ".join(f"{f} {mb:.1f}" for f, mb in per_day.items())
        print(f"  {name:30} {sum(per_day.values()):5.1f} MB/day ({parts})")
    default = next(iter(runs))
    own = sum(grown[default].get(f, 0) for f in ("process.jsonl", "threads.jsonl")) / wall * 0.0864
    mark = "PASS" if own <= STORAGE_GOAL_MB else "FAIL"
    print(
        f"goal: process + threads <= ~{STORAGE_GOAL_MB:g} MB/day: {mark} ({own:.1f} MB/day); "
        "/health adds its body size x 86,400 per day at 1 s"
    )


if __name__ == "__main__":
    main()
