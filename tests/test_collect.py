"""Collector parts against real processes and real HTTP servers on loopback."""

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest

from soak.analyze.load import load_run
from soak.analyze.trend import find_segments
from soak.collect.collector import Collector, Events, Settings, _every
from soak.collect.forensics import find_pyspy
from soak.collect.health import MAX_BODY_BYTES, LatencyFloor, field_value, poll_health
from soak.collect.metrics import require_prometheus_client
from soak.collect.process import (
    ProcessSampler,
    fold_thread_name,
    pid_listening_on,
    pid_matching,
    thread_families,
)
from soak.errors import UsageError
from soak.rundir import (
    ANOMALIES,
    EVENTS,
    HEALTH,
    MAX_FAMILIES,
    PROCESS,
    TARGET_REPLACED,
    THREADS,
    THREADS_OTHER,
    JsonlWriter,
    RunDir,
)
from soak.target import start_target
from tests.servers import http_server

#: A process that names a new thread `leaky_<i>` every PERIOD seconds (argv: PERIOD, tag),
#: holds a listening socket with one connection, and has one child process.
LEAKY = textwrap.dedent(
    """
    import ctypes, socket, subprocess, sys, threading, time
    libc = ctypes.CDLL(None)
    stop = threading.Event()
    def named(name):
        libc.prctl(15, name.encode(), 0, 0, 0)  # PR_SET_NAME: the OS-level thread name
        stop.wait()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    client = socket.create_connection(server.getsockname())
    peer, _ = server.accept()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    print(server.getsockname()[1], flush=True)
    for i in range(100000):
        threading.Thread(target=named, args=(f"leaky_{i}",), daemon=True).start()
        time.sleep(float(sys.argv[1]))
    """
)


@pytest.fixture
def leaky(tmp_path):
    """A running LEAKY process (a thread every 0.1 s); yields (Popen, tag in its argv)."""
    script = tmp_path / "leaky.py"
    script.write_text(LEAKY)
    tag = f"leaky-{uuid.uuid4().hex}"
    proc = subprocess.Popen(
        [sys.executable, str(script), "0.1", tag], stdout=subprocess.PIPE, text=True
    )
    proc.stdout.readline()  # listening and forked: ready
    try:
        yield proc, tag
    finally:
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
        proc.wait()
        proc.stdout.close()


def collect_for(run_dir: Path, profile: dict, seconds: float, **kwargs) -> None:
    """Run the collector in a thread for `seconds`."""
    stop = threading.Event()
    collector = Collector(run_dir, profile, **kwargs)
    thread = threading.Thread(target=collector.run_until, args=(stop,))
    thread.start()
    time.sleep(seconds)
    stop.set()
    thread.join(30)
    assert not thread.is_alive()


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- process -----------------------------------------------------------------------------
def test_fold_thread_name_groups_numbered_threads():
    assert fold_thread_name("asyncio_12") == "asyncio_N"
    assert fold_thread_name("ThreadPoolExecutor-3_0\n") == "ThreadPoolExecutor-N_N"
    assert fold_thread_name("MainThread") == "MainThread"


def test_fold_thread_name_folds_hex_ids_into_one_family():
    assert fold_thread_name("worker-3fa9c2") == fold_thread_name("worker-b07e11") == "worker-N"
    assert fold_thread_name("conn-550e8400-e29b-41d4") == "conn-N-N-N"
    assert fold_thread_name("uvicorn") == "uvicorn" and fold_thread_name("cafe") == "cafe"


#: A process with 150 threads, each named (OS-level) with its own letters: no digits to fold.
MANY_NAMES = textwrap.dedent(
    """
    import ctypes, itertools, threading
    libc = ctypes.CDLL(None)
    stop = threading.Event()
    def named(name):
        libc.prctl(15, name.encode(), 0, 0, 0)
        stop.wait()
    words = ("".join(w) for w in itertools.product("ghijklmnopqrstuvwxyz", repeat=3))
    for word in itertools.islice(words, 150):
        threading.Thread(target=named, args=(f"job-{word}",), daemon=True).start()
    print("ready", flush=True)
    stop.wait()
    """
)


def test_thread_families_are_capped_with_one_event(tmp_path):
    script = tmp_path / "names.py"
    script.write_text(MANY_NAMES)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        profile = {
            "targets": [{"name": "app", "pid": proc.pid}],
            "collector": {"interval": 0.2, "detail_interval": 0.4},
        }
        collect_for(tmp_path, profile, 2.0)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    samples = records(tmp_path / "targets" / "app" / THREADS)
    assert samples
    for sample in samples:
        assert len(sample["families"]) <= MAX_FAMILIES + 1
        assert sum(sample["families"].values()) >= 151  # every thread still counted
        assert sample["families"][THREADS_OTHER] >= 150 - MAX_FAMILIES
    capped = [e for e in records(tmp_path / EVENTS) if e["kind"] == "families_capped"]
    assert len(capped) == 1 and "other" in capped[0]["message"]


def test_thread_families_count_every_thread_of_a_process():
    before = sum(thread_families(os.getpid()).values())
    stop = threading.Event()
    workers = [threading.Thread(target=stop.wait) for _ in range(3)]
    for worker in workers:
        worker.start()
    try:
        families = thread_families(os.getpid())
        assert sum(families.values()) == before + 3 == psutil.Process().num_threads()
    finally:
        stop.set()
        for worker in workers:
            worker.join()


def test_process_sample_of_a_live_target_and_its_port():
    with start_target(patched=True) as target:
        assert pid_listening_on(target.ws_url) == target.pid
        sampler = ProcessSampler(target.pid)
        time.sleep(0.2)
        sample = sampler.sample()
        assert sample["pid"] == target.pid and sample["threads"] >= 1
        assert sample["rss_mb"] > 5 and sample["fds"] > 3
        assert "sockets" not in sample  # a detail field: only on detail samples
        assert sampler.alive()
    assert not sampler.alive()


def test_detail_sample_has_sockets_children_uss_and_context_switches(leaky):
    proc, _ = leaky
    sampler = ProcessSampler(proc.pid)
    sample = sampler.sample(detail=True)
    assert sample["sockets"]["LISTEN"] == 1 and sample["sockets"]["ESTABLISHED"] == 2
    assert sample["children"] == 1 and sample["children_rss_mb"] > 1
    assert sample["children_threads"] >= 1
    assert 0 < sample["uss_mb"] <= sample["rss_mb"]
    assert sample["ctx_switches_voluntary"] > 0
    assert sampler.sample()["children"] == 1  # carried between detail samples


def test_process_found_by_name_pattern(leaky):
    proc, tag = leaky
    assert pid_matching(re.compile(re.escape(tag))) == proc.pid  # the parent, not its child
    assert pid_matching(re.compile(f"no-such-process-{uuid.uuid4().hex}")) is None


def test_growing_thread_family_is_recorded_by_family(leaky, tmp_path):
    proc, _ = leaky
    profile = {
        "targets": [{"name": "app", "pid": proc.pid}],
        "collector": {"interval": 0.2, "detail_interval": 1.0},
    }
    collect_for(tmp_path, profile, 2.5)
    run = RunDir(tmp_path)
    threads = list(run.target_records("app", THREADS))
    counts = [r["families"].get("leaky_N", 0) for r in threads]
    assert counts[-1] - counts[0] >= 10 and counts == sorted(counts)
    samples = list(run.target_records("app", PROCESS))
    assert len(samples) >= 8 and samples[-1]["threads"] > samples[0]["threads"]
    assert sum("sockets" in s for s in samples) >= 2  # detail samples, about every second
    events = list(run.records(EVENTS))
    assert [e["kind"] for e in events] == ["target_found"] and events[0]["found_by"] == "pid"


def test_threads_file_keeps_each_step_exact_and_a_periodic_record(tmp_path):
    """Unchanged families are written only periodically; a change is written with the
    sample before it, so readers see the step where it happened."""
    stop = threading.Event()
    profile = {
        "targets": [{"name": "me", "pid": os.getpid()}],
        "collector": {"interval": 0.1, "detail_interval": 1.0},
    }
    collector = Collector(tmp_path, profile)
    thread = threading.Thread(target=collector.run_until, args=(stop,))
    thread.start()
    time.sleep(1.5)
    extra = threading.Thread(target=stop.wait)
    extra.start()
    time.sleep(1.0)
    stop.set()
    thread.join(10)
    extra.join()
    samples = [r for r in RunDir(tmp_path).target_records("me", PROCESS) if "threads" in r]
    threads = list(RunDir(tmp_path).target_records("me", THREADS))
    assert len(threads) < len(samples) / 2  # unchanged samples were not all written
    totals = [sum(r["families"].values()) for r in threads]
    step = next(i for i in range(1, len(totals)) if totals[i] > totals[i - 1])
    assert threads[step]["t"] - threads[step - 1]["t"] < 0.35  # the sample before the change


def test_killed_and_restarted_target_gives_a_restart_event_and_two_pids(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    first = start_target(patched=True, extra_args=["--port", str(port)])
    profile = {
        "targets": [{"name": "app", "url": f"ws://127.0.0.1:{port}/ws", "pid": first.pid}],
        "collector": {"interval": 0.2},
    }
    run = RunDir.create(tmp_path, "restart", "t", {"targets": profile["targets"], "profile": {}})
    stop = threading.Event()
    collector = Collector(run.path, profile)
    thread = threading.Thread(target=collector.run_until, args=(stop,))
    thread.start()
    second = None
    try:
        time.sleep(1.0)
        first.popen.kill()
        first.stop()
        time.sleep(0.6)
        second = start_target(patched=True, extra_args=["--port", str(port)])
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not any(
            e["kind"] == "target_restart" for e in run.records(EVENTS)
        ):
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join(10)
        if second:
            second.stop()
    run.finish("completed")
    events = list(run.records(EVENTS))
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "target_found" and "target_lost" in kinds
    restart = next(e for e in events if e["kind"] == "target_restart")
    assert (restart["old_pid"], restart["new_pid"]) == (first.pid, second.pid)
    assert restart["found_by"] == "port"
    pids = [r["pid"] for r in run.target_records("app", PROCESS) if "threads" in r]
    assert pids[0] == first.pid and pids[-1] == second.pid and set(pids) == {first.pid, second.pid}
    segments = find_segments(load_run(run.path).targets["app"].process)
    assert [segment.pid for segment in segments] == [first.pid, second.pid]


# --- /health -------------------------------------------------------------------------------
def respond_with(status: int, body: bytes, content_type: str = "application/json"):
    def respond(handler):
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return respond


def test_health_json_is_kept_whole_and_headers_are_sent():
    seen = {}

    def respond(handler):
        seen["auth"] = handler.headers.get("Authorization")
        respond_with(200, b'{"status":"ok","diagnostics":{"thread_count":7,"lag_ms":3}}')(handler)

    with http_server(respond) as url:
        record = poll_health(url, timeout=2, headers={"Authorization": "Bearer s3cr3t"})
    assert seen["auth"] == "Bearer s3cr3t"
    assert record["status"] == 200 and "error" not in record
    assert record["body"]["diagnostics"]["thread_count"] == 7
    assert field_value(record["body"], "diagnostics.lag_ms") == 3.0
    assert field_value(record["body"], "diagnostics.missing") is None
    assert record["latency_s"] >= 0


def test_health_garbage_500_hang_and_refused_are_data():
    with http_server(respond_with(200, b"<html>oops</html>", "text/html")) as url:
        assert "non-JSON body" in poll_health(url, timeout=2)["error"]
    with http_server(respond_with(500, b'{"error":"db down"}')) as url:
        record = poll_health(url, timeout=2)
        assert record["status"] == 500 and record["error"] == "HTTP 500"
        assert record["body"] == {"error": "db down"}
    release = threading.Event()
    with http_server(lambda handler: release.wait(5)) as url:
        record = poll_health(url, timeout=0.3)
        release.set()
    assert record["error"].startswith("timeout") and record["status"] is None
    assert poll_health("http://127.0.0.1:9/health", timeout=1)["error"] == "refused"


def test_health_huge_and_trickling_bodies_are_bounded():
    huge = b'{"pad":"' + b"x" * (10 * 1_048_576) + b'"}'
    with http_server(respond_with(200, huge)) as url:
        before = psutil.Process().memory_info().rss
        record = poll_health(url, timeout=5)
        grown = psutil.Process().memory_info().rss - before
    assert record["status"] == 200 and "larger than" in record["error"] and "body" not in record
    assert grown < 5 * MAX_BODY_BYTES  # read in bounded chunks, never the whole 10 MB

    def trickle(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        for _ in range(100):
            handler.wfile.write(b" ")
            handler.wfile.flush()
            time.sleep(0.1)

    with http_server(trickle) as url:
        started = time.monotonic()
        record = poll_health(url, timeout=0.5)
    # a body trickled for 10 s is cut at the 0.5 s deadline (generous bound: a loaded CI box)
    assert record["error"].startswith("timeout") and time.monotonic() - started < 8


def test_latency_floor_gives_the_excess_over_the_best_latency():
    floor = LatencyFloor()
    assert floor.excess({"latency_s": 0.010}) == 0.0
    assert floor.excess({"latency_s": 0.004}) == 0.0
    assert floor.excess({"latency_s": 0.054}) == 0.05
    assert floor.excess({"latency_s": 2.0, "error": "timeout after 2 s"}) is None


def test_collector_survives_a_health_that_returns_garbage_hangs_and_500s(tmp_path):
    answers = iter(range(10_000))

    def respond(handler):
        n = next(answers) % 4
        if n == 0:
            respond_with(200, b"not json at all", "text/plain")(handler)
        elif n == 1:
            time.sleep(1.0)  # longer than health_timeout
        elif n == 2:
            respond_with(503, b"<h1>Service Unavailable</h1>", "text/html")(handler)
        else:
            respond_with(200, b'{"ok":true,"lag_ms":1.5}')(handler)

    with http_server(respond) as url:
        profile = {
            "targets": [{"name": "app", "pid": os.getpid(), "health": url}],
            "collector": {"interval": 0.2, "health_interval": 0.2, "health_timeout": 0.4},
        }
        collect_for(tmp_path, profile, 3.0)
    run = RunDir(tmp_path)
    health = list(run.target_records("app", HEALTH))
    errors = " | ".join(r.get("error") or "" for r in health)
    assert "non-JSON" in errors and "timeout" in errors and "HTTP 503" in errors
    assert any(r.get("body") == {"ok": True, "lag_ms": 1.5} for r in health)
    assert len(list(run.target_records("app", PROCESS))) >= 10  # never held up by /health
    assert not [e for e in run.records(EVENTS) if e["kind"] == "collector_error"]


def test_a_failing_loop_is_recorded_once_per_minute_and_goes_on(tmp_path):
    calls = []

    def broken():
        calls.append(time.monotonic())
        raise RuntimeError("disk on fire")

    with JsonlWriter(tmp_path / EVENTS) as writer:
        events = Events(writer)
        stop = threading.Event()

        def report(exc):
            events.error("broken", f"broken: {exc}")

        timer = threading.Timer(1.0, stop.set)
        timer.start()
        _every(0.1, stop, broken, report)
    errors = list(RunDir(tmp_path).records(EVENTS))
    assert len(calls) >= 5  # it kept going
    assert [e["kind"] for e in errors] == ["collector_error"]  # and said so once
    assert "disk on fire" in errors[0]["message"]


def test_settings_health_interval_defaults_to_5s_or_the_interval_and_detail_to_at_least_it():
    assert Settings.from_profile({"interval": 1.0}).health_interval == 5.0
    assert Settings.from_profile({"interval": 10.0}).health_interval == 10.0
    assert Settings.from_profile({"interval": 1.0, "health_interval": 1.0}).health_interval == 1.0
    assert Settings.from_profile({"interval": 60.0, "detail_interval": 30.0}).detail_interval == 60


# --- forensics ---------------------------------------------------------------------------------
def stall_record(target: str) -> dict:
    return {"t": time.time(), "target": target, "kind": "stall", "detail": "no done frame"}


def test_pyspy_missing_is_reported_clearly(tmp_path, monkeypatch, leaky):
    proc, _ = leaky
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # a PATH without py-spy,
    monkeypatch.setattr(sys, "executable", str(tmp_path / "empty-bin" / "python"))  # nor beside
    profile = {
        "targets": [{"name": "app", "pid": proc.pid}],
        "collector": {"interval": 0.2, "pyspy": True, "pyspy_every": 0},
    }
    with JsonlWriter(tmp_path / ANOMALIES) as anomalies:
        anomalies.write(stall_record("app"))
    collect_for(tmp_path, profile, 1.0)
    errors = [e for e in RunDir(tmp_path).records(EVENTS) if e["kind"] == "collector_error"]
    assert len(errors) == 1 and "py-spy is not installed or not on PATH" in errors[0]["message"]
    assert "pip install" in errors[0]["message"]
    assert not (tmp_path / "targets" / "app" / "pyspy").exists()


@pytest.mark.skipif(find_pyspy() is None, reason="py-spy is not installed here")
def test_pyspy_dumps_the_target_on_its_first_stall_and_periodically(tmp_path, leaky):
    proc, _ = leaky
    profile = {
        "targets": [{"name": "app", "pid": proc.pid}],
        "collector": {"interval": 0.2, "pyspy": True, "pyspy_every": 2.0},
    }
    with JsonlWriter(tmp_path / ANOMALIES) as anomalies:
        anomalies.write(stall_record("app"))
        anomalies.write(stall_record("app"))  # only the first stall is dumped
    collect_for(tmp_path, profile, 3.5)
    events = list(RunDir(tmp_path).records(EVENTS))
    problems = [e["message"] for e in events if e["kind"] == "collector_error"]
    if any("not permitted" in message for message in problems):
        pytest.skip(f"py-spy may not attach here: {problems[0]}")
    dumps = [e for e in events if e["kind"] == "pyspy_dump"]
    assert [d["reason"] for d in dumps] == ["first-stall", "periodic"], problems
    text = (tmp_path / dumps[0]["path"]).read_text()
    assert f"Process {proc.pid}" in text and "Thread" in text


# --- metrics ---------------------------------------------------------------------------------
def test_metrics_port_serves_the_latest_samples_to_prometheus(tmp_path):
    pytest.importorskip("prometheus_client")
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    body = b'{"status":"ok","diagnostics":{"loop_lag_ms":12.5,"tasks":4}}'
    with http_server(respond_with(200, body)) as url:
        profile = {
            "targets": [{"name": "app", "pid": os.getpid(), "health": url}],
            "collector": {
                "interval": 0.2,
                "health_interval": 0.2,
                "loop_lag_field": "diagnostics.loop_lag_ms",
            },
        }
        stop = threading.Event()
        collector = Collector(tmp_path, profile, metrics_port=port)
        thread = threading.Thread(target=collector.run_until, args=(stop,))
        thread.start()
        try:
            time.sleep(1.0)
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                text = response.read().decode()
            threads = psutil.Process().num_threads()
        finally:
            stop.set()
            thread.join(10)
    match = re.search(r'^soak_target_threads\{target="app"\} (\S+)$', text, re.MULTILINE)
    assert match and abs(float(match.group(1)) - threads) <= 3
    assert 'soak_target_up{target="app"} 1.0' in text
    assert 'soak_health_loop_lag_seconds{target="app"} 0.0125' in text
    assert 'soak_health_field{field="diagnostics.tasks",target="app"} 4.0' in text
    assert re.search(r'soak_target_thread_family\{family="[^"]+",target="app"\}', text)
    assert 'soak_target_cpu_seconds_total{mode="user",target="app"}' in text
    with pytest.raises(OSError):  # the server is gone with the collector
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_metrics_without_prometheus_client_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    with pytest.raises(UsageError, match=r"pip install 'soak\[metrics\]'"):
        require_prometheus_client()


#: A process that listens on the port in argv[1] until killed (SO_REUSEADDR: a restart
#: on the same port binds at once).
LISTENER = textwrap.dedent(
    """
    import socket, sys, time
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", int(sys.argv[1])))
    server.listen()
    print("ready", flush=True)
    time.sleep(120)
    """
)


def test_a_different_program_on_the_targets_port_is_replaced_not_restarted(tmp_path):
    for name in ("server.py", "intruder.py"):
        (tmp_path / name).write_text(LISTENER)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    def listen(script: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, str(tmp_path / script), str(port)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline().strip() == "ready"
        return proc

    profile = {"targets": [{"name": "app", "port": port}], "collector": {"interval": 0.2}}
    run_dir = tmp_path / "run"
    stop = threading.Event()
    collector = Collector(run_dir, profile)
    thread = threading.Thread(target=collector.run_until, args=(stop,))
    procs = [listen("server.py")]
    thread.start()
    try:
        for script in ("server.py", "intruder.py"):  # a restart, then another program
            time.sleep(1.0)
            procs[-1].kill()
            procs[-1].wait()
            procs.append(listen(script))
        time.sleep(1.0)
    finally:
        stop.set()
        thread.join(30)
        for proc in procs:
            proc.kill()
            proc.wait()
            proc.stdout.close()
    kinds = [e["kind"] for e in records(run_dir / EVENTS) if e.get("target") == "app"]
    kinds = [k for k in kinds if k in ("target_found", "target_restart", TARGET_REPLACED)]
    assert kinds == ["target_found", "target_restart", TARGET_REPLACED]
    replaced = next(e for e in records(run_dir / EVENTS) if e["kind"] == TARGET_REPLACED)
    assert replaced["old_program"].endswith("server.py")
    assert replaced["new_program"].endswith("intruder.py")
