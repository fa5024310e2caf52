"""`soak collect` and `soak status` end to end, and the collector's profile fields."""

import json
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from soak.errors import ProfileError, RunError
from soak.load.record import ChatRecorder  # imports neither locust nor gevent
from soak.profile import apply_overrides, profile_from_mapping
from soak.protocols.turn import TurnResult
from soak.run import preflight
from soak.rundir import CHATS, PROCESS, JsonlWriter, RunDir

pytestmark = pytest.mark.e2e

#: A server soak can spawn: /health JSON on 127.0.0.1:PORT (argv[1]) and a new thread
#: named leaky_<i> every 0.2 s.
LEAKY_SERVER = textwrap.dedent(
    """
    import ctypes, json, sys, threading, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    libc = ctypes.CDLL(None)
    stop = threading.Event()
    class Health(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"status": "ok", "diagnostics": {
                "thread_count": threading.active_count(), "loop_lag_ms": 1.0}}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print("serving", flush=True)
    def named(name):
        libc.prctl(15, name.encode(), 0, 0, 0)
        stop.wait()
    for i in range(100000):
        threading.Thread(target=named, args=(f"leaky_{i}",), daemon=True).start()
        time.sleep(0.2)
    """
)

PROFILE = """
name = "staging"
[collector]
interval = "250ms"
health_interval = "250ms"
detail_interval = "2s"
loop_lag_field = "diagnostics.loop_lag_ms"
[criteria]
warmup = "0s"
checks = ["threads.growth_per_hour < 1"]
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def soak(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "soak", *args], capture_output=True, text=True, timeout=timeout
    )


def wait_for(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_collect_spawned_target_status_while_running_and_after_then_report(tmp_path):
    script = tmp_path / "server.py"
    script.write_text(LEAKY_SERVER)
    profile = tmp_path / "staging.toml"
    profile.write_text(PROFILE)
    port, metrics_port = free_port(), free_port()
    out = tmp_path / "reports"
    collect = subprocess.Popen(
        [
            sys.executable, "-m", "soak", "collect", str(profile),
            "--spawn", f"{sys.executable} {script} {port}", "--port", str(port),
            "--health", f"http://127.0.0.1:{port}/health", "--duration", "8s",
            "--metrics-port", str(metrics_port), "--out", str(out), "--label", "cli",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: out.exists() and any(out.iterdir()))
        run = RunDir(next(out.iterdir()))
        wait_for(lambda: len(list(run.target_records("t1", PROCESS))) >= 3)
        running = soak("status", str(run.path))
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
            metrics = response.read().decode()
        spawned_pid = run.manifest()["targets"][0]["pid"]
        stdout, stderr = collect.communicate(timeout=90)
    finally:
        if collect.poll() is None:
            collect.kill()
            collect.communicate()
    assert running.returncode == 0, running.stderr
    assert "running (collect)" in running.stdout and "t1: pid" in running.stdout
    assert 'soak_target_thread_family{family="leaky_N",target="t1"}' in metrics

    assert collect.returncode == 1, stdout + stderr  # the threads criterion fails, as it should
    assert not psutil.pid_exists(spawned_pid)  # the spawned target was stopped
    manifest = run.manifest()
    assert manifest["status"] == "completed" and manifest["mode"] == "collect"
    assert manifest["targets"][0]["spawn"][1] == str(script)
    assert not (run.path / "chats.jsonl").exists()
    assert (run.target_dir("t1") / "stdout.log").read_text().startswith("serving")
    assert (run.target_dir("t1") / "stderr.log").exists()
    summary = json.loads((run.path / "summary.json").read_text())
    target = summary["targets"]["t1"]
    assert target["top_growing_family"]["family"] == "leaky_N"
    assert target["threads"]["growth_per_hour"] > 1000 and target["verdict"] == "fail"
    assert (run.path / "report.html").exists()

    finished = soak("status", str(run.path))
    assert "completed (collect)" in finished.stdout and "/h so far" in finished.stdout
    data = json.loads(soak("status", str(run.path), "--json").stdout)
    assert data["targets"]["t1"]["growth_per_hour"]["threads"] > 1000
    assert data["targets"]["t1"]["loop_lag_ms"] == 1.0
    assert data["targets"]["t1"]["latest"]["pid"] == spawned_pid


def test_collect_spawn_that_dies_at_start_is_a_clear_error(tmp_path):
    crash = "import sys; sys.stderr.write('boom: no config'); sys.exit(4)"
    result = soak(
        "collect", "--spawn", f"{sys.executable} -c \"{crash}\"", "--port", str(free_port()),
        "--out", str(tmp_path), "--no-report",
    )  # fmt: skip
    assert result.returncode == 3
    assert "exited with code 4" in result.stderr and "boom: no config" in result.stderr
    assert "Traceback" not in result.stderr
    (run_path,) = tmp_path.iterdir()
    assert RunDir(run_path).manifest()["status"] == "crashed"


def test_soak_run_spawns_its_target_samples_it_and_stops_it(tmp_path):
    """...and serves its chat metrics (from chats.jsonl) beside the process ones."""
    pytest.importorskip("prometheus_client")
    port, metrics_port = free_port(), free_port()
    profile = tmp_path / "short.toml"
    profile.write_text(
        '[load]\nthink_time = "0.2s"\ninterval = "1s"\n[collector]\ninterval = "0.5s"\n'
    )
    run_proc = subprocess.Popen(
        [
            sys.executable, "-m", "soak", "run", str(profile),
            "--target", f"ws://127.0.0.1:{port}/ws",
            "--spawn", f"{sys.executable} -m soak.target --port {port} --patched",
            "--users", "2", "--duration", "6s", "--out", str(tmp_path / "out"), "--no-report",
            "--metrics-port", str(metrics_port),
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        scraped = {}

        def chatted() -> bool:
            scraped.update(chat_samples(metrics_port))
            return ok_turns(scraped) > 0

        wait_for(chatted, 60)
        stdout, stderr = run_proc.communicate(timeout=120)
    finally:
        if run_proc.poll() is None:
            run_proc.kill()
            run_proc.communicate()
    assert run_proc.returncode == 0, stdout + stderr
    (run_path,) = (tmp_path / "out").iterdir()
    run = RunDir(run_path)
    spawned = run.manifest()["targets"][0]["pid"]
    assert spawned and not psutil.pid_exists(spawned)
    assert {r["pid"] for r in run.target_records("t1", PROCESS)} == {spawned}
    assert (
        "listening"
        in (run.target_dir("t1") / "stdout.log").read_text()
        + (run.target_dir("t1") / "stderr.log").read_text()
    )
    recorded = sum(c["outcomes"]["ok"] for c in run.records("chats.jsonl"))
    assert 0 < ok_turns(scraped) <= recorded
    assert scraped[("soak_chat_ttft_seconds_count", "t1")] <= ok_turns(scraped)
    assert scraped[("soak_target_threads", "t1")] >= 1


def chat_samples(port: int) -> dict[tuple[str, str], float]:
    """{(sample name, target): value} of one scrape, of the samples labelled by target alone
    (ok turns as soak_chat_turns_ok); {} while nothing answers."""
    from prometheus_client.parser import text_string_to_metric_families

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return {}
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels = sample.name, dict(sample.labels)
            if name == "soak_chat_turns_total" and labels.pop("outcome", None) == "ok":
                name = "soak_chat_turns_ok"
            if list(labels) == ["target"]:
                samples[(name, labels["target"])] = sample.value
    return samples


def ok_turns(samples: dict[tuple[str, str], float], target: str = "t1") -> float:
    return samples.get(("soak_chat_turns_ok", target), 0.0)


def test_collector_process_serves_metrics_for_soak_run(tmp_path):
    """`soak run --metrics-port` passes the port to the collector process: scrape that,
    chat metrics included (from the chats.jsonl the load process appends to)."""
    pytest.importorskip("prometheus_client")
    port = free_port()
    profile = {"targets": [{"name": "me", "pid": psutil.Process().pid}], "collector": {}}
    chats = JsonlWriter(tmp_path / CHATS)
    recorder = ChatRecorder(["me"], chats.write, None)
    play_turns(recorder, "me", 4)
    recorder.flush()
    collector = subprocess.Popen(
        [sys.executable, "-m", "soak.collect", "--run-dir", str(tmp_path), "--metrics-port",
         str(port)],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    collector.stdin.write(json.dumps(profile))
    collector.stdin.close()
    try:
        samples = {}

        def scraped() -> bool:
            samples.update(chat_samples(port))
            return samples.get(("soak_target_up", "me")) == 1.0

        wait_for(scraped)
        first = ok_turns(samples, "me")
        play_turns(recorder, "me", 3)  # the load process appends an interval
        recorder.flush()
        wait_for(lambda: scraped() and ok_turns(samples, "me") == 7)
    finally:
        chats.close()
        collector.send_signal(signal.SIGTERM)
        collector.wait(timeout=30)
        err = collector.stderr.read()
        collector.stderr.close()
    assert collector.returncode == 0, err
    assert first == 4
    assert samples[("soak_chat_ttft_seconds_count", "me")] == 7
    assert ("soak_target_rss_bytes", "me") in samples


def play_turns(recorder: ChatRecorder, target: str, ok: int) -> None:
    """`ok` ok turns (TTFT 50 ms, reply 300 ms) as chat users report them."""
    for _ in range(ok):
        recorder.turn_started(target)
        result = TurnResult(request_id="r", tokens=3, frames=4)
        result.ttft_s, result.reply_s = 0.05, 0.3
        recorder.turn_finished(target, result, "s")


def test_collect_without_any_target_says_how_to_give_one(tmp_path):
    result = soak("collect", "--out", str(tmp_path))
    assert result.returncode == 2 and "no targets" in result.stderr


# --- profile fields of the collector -----------------------------------------------------------
def test_target_without_url_needs_a_way_to_find_its_process():
    with pytest.raises(ProfileError, match="url is required .* pid, port, process, spawn"):
        profile_from_mapping({"targets": [{"name": "a"}]})
    profile = profile_from_mapping({"targets": [{"name": "a", "process": r"uvicorn .*:app"}]})
    assert profile.targets[0].url is None and profile.targets[0].process == r"uvicorn .*:app"
    with pytest.raises(ProfileError, match="soak collect"):
        preflight(profile)  # soak run needs a url to chat with


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ({"process": "([unclosed"}, "not a valid regular expression"),
        ({"spawn": []}, "non-empty argv list"),
        ({"spawn": "python -m app"}, "list of strings"),
        ({"port": 70000}, "TCP port"),
        ({"health_headers": {"X-Token": 5}}, "header names to strings"),
    ],
)
def test_bad_collector_target_fields_are_rejected(target, message):
    with pytest.raises(ProfileError, match=message):
        profile_from_mapping({"targets": [{"name": "a", **target}]})


def test_health_header_secrets_are_redacted(monkeypatch):
    monkeypatch.setenv("SOAK_TEST_HEALTH_TOKEN", "hunter2")
    profile = profile_from_mapping(
        {
            "targets": [
                {
                    "name": "a",
                    "pid": 1,
                    "health_headers": {
                        "Authorization": "Bearer ${SOAK_TEST_HEALTH_TOKEN}",
                        "X-Api-Key": "literal-key",
                        "Accept": "application/json",
                    },
                }
            ]
        }
    )
    assert profile.targets[0].health_headers["Authorization"] == "Bearer hunter2"
    headers = profile.redacted()["targets"][0]["health_headers"]
    assert headers == {"Authorization": "***", "X-Api-Key": "***", "Accept": "application/json"}


def test_command_line_targets_for_collect_pair_in_order():
    base = profile_from_mapping({"name": "collect"})
    profile = apply_overrides(
        base, pids=[11], ports=[8765, 8766], spawn=[["srv", "--a"], ["srv", "--b"]]
    )
    assert [(t.name, t.pid, t.port, t.spawn) for t in profile.targets] == [
        ("t1", 11, 8765, ["srv", "--a"]),
        ("t2", None, 8766, ["srv", "--b"]),
    ]
    with pytest.raises(ProfileError, match="give one --process per target"):
        apply_overrides(profile, process=["a", "b", "c"])


def test_metrics_port_in_use_fails_before_the_run(tmp_path):
    pytest.importorskip("prometheus_client")
    from soak.collect.metrics import check_metrics_port

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(RunError, match="choose another --metrics-port"):
            check_metrics_port(busy.getsockname()[1])
    assert not list(Path(tmp_path).iterdir())


@pytest.mark.parametrize("command", ["collect", "status"])
def test_commands_have_help_with_an_example_and_a_readme_section(command):
    from typer.testing import CliRunner

    from soak.cli import app

    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0 and "Example:" in result.output
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert f"### `soak {command}" in readme
    assert "--metrics-port" in CliRunner().invoke(app, ["run", "--help"]).output
