"""The load engine as a real process (`python -m soak.load`, real Locust runners) against
protocol servers on loopback: what every turn's outcome becomes in chats.jsonl,
anomalies.jsonl, generator.jsonl and events.jsonl."""

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import psutil
import pytest

from soak.profile import profile_from_mapping
from soak.rundir import read_jsonl
from soak.target import start_target
from tests.servers import Faults, hermes_server, nerve_server

pytestmark = pytest.mark.e2e

FAST_LOAD = {
    "users": 6,
    "spawn_rate": 50,
    "think_time": ["0.05s", "0.2s"],
    "duration": "4s",
    "idle_after": "1s",
    "interval": "1s",
    "first_token_timeout": "1s",
    "reply_timeout": "1s",
    "ping_every": "0.5s",
    "linger": "50ms",
    "reconnect_backoff": ["0.1s", "0.5s"],
}


def profile(targets: dict[str, str], protocol: dict | None = None, **load) -> dict:
    data = {
        "targets": [{"name": name, "url": url} for name, url in targets.items()],
        "protocol": protocol or {},
        "load": {**FAST_LOAD, **load},
    }
    return profile_from_mapping(data).to_dict()


def load_process(run_dir: Path, prof: dict, *args: str) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "soak.load", "--run-dir", str(run_dir), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    process.stdin.write(json.dumps(prof))
    process.stdin.close()
    return process


def finish(process: subprocess.Popen, run_dir: Path, timeout: float = 90) -> None:
    output = process.stdout.read()
    process.stdout.close()
    assert process.wait(timeout) == 0, output + (run_dir / "load.log").read_text()


def run(run_dir: Path, prof: dict) -> None:
    finish(load_process(run_dir, prof), run_dir)


def per_target(run_dir: Path) -> dict[str, Counter]:
    totals: dict[str, Counter] = {}
    for record in read_jsonl(run_dir / "chats.jsonl"):
        counter = totals.setdefault(record["target"], Counter())
        counter.update(record["outcomes"])
        counter.update({key: record[key] for key in ("turns", "started", "pings", "connects")})
    return totals


def test_healthy_server_is_all_ok_with_pings_phases_and_generator_health(tmp_path):
    nonce = {"require_nonce": True, "prompt": "Please repeat {nonce}"}
    with nerve_server() as server:
        run(tmp_path, profile({"nerve": server.url}, nonce))
    [totals] = per_target(tmp_path).values()
    assert totals["turns"] > 20 and totals["ok"] == totals["turns"], totals
    assert totals["pings"] > 0 and totals["connects"] == 6
    assert not list(read_jsonl(tmp_path / "anomalies.jsonl"))
    assert totals["ok"] <= server.replies <= totals["ok"] + 6  # in flight when users stopped
    chats = list(read_jsonl(tmp_path / "chats.jsonl"))
    assert any(r["ping_hist"] for r in chats) and any(r["connect_hist"] for r in chats)
    assert all(r["gap_max_s"] >= 0 and "ping_max_s" in r for r in chats)
    health = list(read_jsonl(tmp_path / "generator.jsonl"))
    assert len(health) >= 4 and max(r["users"] for r in health) == 6
    assert {"cpu_percent", "rss_mb", "loop_lag_max_s", "connections", "worker"} <= set(health[0])
    phases = [e["phase"] for e in read_jsonl(tmp_path / "events.jsonl") if e["kind"] == "phase"]
    assert phases == ["load", "idle", "stop"]


def test_faults_become_stalls_violations_and_mismatches_per_target(tmp_path):
    nonce = {"require_nonce": True, "prompt": "Please repeat {nonce}"}
    faulty = Faults(swallow_every=3, frame_after_done_every=4)
    with (
        nerve_server(faulty) as broken,
        nerve_server(Faults(answer_previous=True)) as confused,
        nerve_server() as healthy,
    ):
        targets = {"broken": broken.url, "confused": confused.url, "healthy": healthy.url}
        run(tmp_path, profile(targets, nonce, users=6))
    totals = per_target(tmp_path)
    assert totals["healthy"]["ok"] == totals["healthy"]["turns"] > 5
    assert totals["broken"]["stall"] > 0 and totals["broken"]["violation"] > 0
    assert totals["confused"]["mismatch"] > 0
    anomalies = list(read_jsonl(tmp_path / "anomalies.jsonl"))
    assert {a["target"] for a in anomalies} == {"broken", "confused"}
    violations = [a for a in anomalies if a["kind"] == "violation"]
    assert {a["subkind"] for a in violations} == {"frame_after_done"}
    stall = next(a for a in anomalies if a["kind"] == "stall")
    assert stall["last_frames"] and stall["session"] and stall["tokens"] > 0
    chats = list(read_jsonl(tmp_path / "chats.jsonl"))
    assert sum(r["violations"].get("frame_after_done", 0) for r in chats) == len(violations)


def test_blocked_event_loop_shows_as_stalls_and_disconnects(tmp_path):
    block = ["--block-loop-every", "5", "--block-loop-seconds", "5"]
    with start_target(patched=True, extra_args=block) as target:
        # turns in flight time out after 1.5 s; chats thinking meanwhile lose their connection
        # when a keepalive ping (sent after 1 s without sending) stays unanswered for 1 s
        prof = profile(
            {"blocked": target.ws_url}, {"keepalive": "1s"}, users=8, spawn_rate=2, duration="8s",
            think_time=["3s", "5s"], first_token_timeout="1.5s", reply_timeout="1.5s",
        )  # fmt: skip
        run(tmp_path, prof)
    totals = per_target(tmp_path)["blocked"]
    assert totals["ok"] > 0
    assert totals["stall"] + totals["first_token_timeout"] > 0, totals
    assert totals["disconnect"] > 0, totals
    lost = [a for a in read_jsonl(tmp_path / "anomalies.jsonl") if a["kind"] == "disconnect"]
    assert all("close_code" in a and "close_reason" in a for a in lost)
    assert any(a["close_code"] == 1011 or "timed out" in str(a["close_reason"]) for a in lost)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_master_and_two_workers_counts_add_up(tmp_path):
    rpc = {"kind": "jsonrpc"}
    port = free_port()
    with hermes_server() as server:
        prof = profile({"hermes": server.url}, rpc, users=6, duration="5s", idle_after="2s")
        master = load_process(
            tmp_path, prof, "--workers", "2", "--master-bind", f"127.0.0.1:{port}"
        )
        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "soak.load",
                    "--worker",
                    f"127.0.0.1:{port}",
                    "--log",
                    str(tmp_path / f"worker-{n}.log"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            for n in (1, 2)
        ]
        finish(master, tmp_path)
        assert [w.wait(30) for w in workers] == [0, 0]
    chats = list(read_jsonl(tmp_path / "chats.jsonl"))
    turns = sum(r["turns"] for r in chats)
    ok = sum(r["outcomes"]["ok"] for r in chats)
    finals = [e for e in read_jsonl(tmp_path / "events.jsonl") if e["kind"] == "worker_totals"]
    assert len(finals) == 2 and all(f["turns"] > 0 for f in finals)
    assert turns == sum(f["turns"] for f in finals) > 20
    assert ok == turns  # a healthy gateway
    assert ok <= server.replies <= ok + 6  # replies in flight when the users stopped
    generators = {r["worker"] for r in read_jsonl(tmp_path / "generator.jsonl")}
    assert len(generators - {None}) == 2 and None in generators


def test_web_ui_serves_live_turns_on_loopback_only(tmp_path):
    port = free_port()
    with nerve_server() as server:
        process = load_process(tmp_path, profile({"nerve": server.url}), "--web", str(port))
        deadline = time.monotonic() + 30
        stats: dict = {}
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats/requests") as reply:
                    stats = json.load(reply)
            except OSError:
                stats = {}
            if any(
                row["name"] == "nerve" and row["num_requests"] for row in stats.get("stats", [])
            ):
                break
            time.sleep(0.3)
        listening = [
            c.laddr
            for c in psutil.Process(process.pid).net_connections("tcp")
            if c.status == psutil.CONN_LISTEN
        ]
        finish(process, tmp_path)
    assert any(row["name"] == "nerve" and row["num_requests"] > 0 for row in stats["stats"])
    assert [addr.ip for addr in listening if addr.port == port] == ["127.0.0.1"]


TRIM_SCRIPT = """
import json, time
from locust.stats import RequestStats
from soak.load.webui import KEEP_SECONDS, trim_stats
stats = RequestStats()
now = time.time()
for second in range(3 * 86400, 0, -60):  # three days of turns, one a minute
    stats.get("target-a", "turn").log(150, 10)
    stats.total.num_reqs_per_sec[int(now) - second] += 1
    stats.get("target-a", "turn").num_reqs_per_sec[int(now) - second] += 1
before = len(stats.total.num_reqs_per_sec)
trim_stats(stats, now=now)
entry = stats.get("target-a", "turn")
# kept: the last KEEP_SECONDS, and what log() itself wrote at wall time during the loop
old = lambda table: sum(1 for second in table if second < int(now) - KEEP_SECONDS)
print(json.dumps([before, old(stats.total.num_reqs_per_sec), old(entry.num_reqs_per_sec),
                  entry.num_requests]))
"""


def test_locust_per_second_tables_are_trimmed_for_multi_day_runs():
    output = subprocess.run(
        [sys.executable, "-c", TRIM_SCRIPT], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    before, total_old_after, entry_old_after, requests = json.loads(output)
    assert before >= 4320 and total_old_after == 0 and entry_old_after == 0
    assert requests == 4320  # totals are kept: only the per-second table is bounded
