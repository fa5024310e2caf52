"""Chat metrics on the collector's /metrics: chats.jsonl as the load process writes it
(soak.load.record.ChatRecorder, which imports neither locust nor gevent), followed by a
real Metrics server and scraped over HTTP; and the shipped Grafana dashboard asks only
for metrics that soak serves."""

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from soak.collect.chat_metrics import LE_BUCKETS, ChatMetrics, JsonlTail
from soak.collect.collector import Collector
from soak.collect.metrics import Metrics
from soak.load.record import ChatRecorder
from soak.protocols.turn import DISCONNECT, STALL, TurnResult
from soak.rundir import CHATS, JsonlWriter
from tests.servers import http_server

text_string_to_metric_families = pytest.importorskip(
    "prometheus_client.parser"
).text_string_to_metric_families

DASHBOARD = Path(__file__).resolve().parent.parent / "soak" / "dashboards" / "grafana-soak.json"


def test_the_recorder_and_the_chat_metrics_import_neither_gevent_nor_locust():
    """What lets this file use the load's real writer inside the test process (checked in
    a child interpreter: other test files may have imported gevent into this one)."""
    probe = (
        "import sys, soak.load.record, soak.collect.chat_metrics, soak.collect.collector\n"
        "assert not [m for m in sys.modules if m.startswith(('gevent', 'locust'))]\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of one scrape of 127.0.0.1:port/metrics."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def play(recorder: ChatRecorder, target: str, ok: int, stalls: int = 0, lost: int = 0) -> None:
    """Turns as users report them: `ok` replies (TTFT 20 ms, reply 400 ms), then stalls
    and disconnects."""
    for _ in range(ok):
        recorder.turn_started(target)
        result = TurnResult(request_id="r", tokens=5, frames=6)
        result.ttft_s, result.reply_s = 0.02, 0.4
        recorder.turn_finished(target, result, "s")
    for outcome, count in ((STALL, stalls), (DISCONNECT, lost)):
        for _ in range(count):
            recorder.turn_started(target)
            recorder.turn_finished(target, TurnResult(request_id="r", outcome=outcome), "s")


@pytest.fixture
def served(tmp_path):
    """A run directory whose chats.jsonl a ChatRecorder writes, and a real Metrics server
    following it: (recorder, chats path, port, ChatMetrics)."""
    path = tmp_path / CHATS
    metrics = Metrics(free_port())
    chats = ChatMetrics(path)
    metrics.serve_also(chats)
    anomalies = JsonlWriter(tmp_path / "anomalies.jsonl")
    writer = None

    def write(record: dict) -> None:
        nonlocal writer
        writer = writer or JsonlWriter(path)  # chats.jsonl appears with the first interval
        writer.write(record)

    recorder = ChatRecorder(["a", "b"], write, anomalies.write)
    try:
        yield recorder, path, metrics.port, chats
    finally:
        metrics.close()
        anomalies.close()
        if writer:
            writer.close()


def test_turns_by_outcome_gauges_and_histograms_over_http(served):
    recorder, path, port, chats = served
    before = scrape(port)  # no chats.jsonl yet (as in `soak collect`): served all the same
    assert not path.exists()
    assert value(before, "soak_chat_records_total") == 0.0
    assert not any(name == "soak_chat_turns_total" for name, _ in before)

    play(recorder, "a", ok=7, stalls=2, lost=1)
    play(recorder, "b", ok=3)
    recorder.turn_started("a")  # one turn still running at the interval's end
    recorder.flush()
    samples = scrape(port)
    assert value(samples, "soak_chat_turns_total", target="a", outcome="ok") == 7
    assert value(samples, "soak_chat_turns_total", target="a", outcome="stall") == 2
    assert value(samples, "soak_chat_turns_total", target="a", outcome="disconnect") == 1
    assert value(samples, "soak_chat_turns_total", target="a", outcome="error") == 0
    assert value(samples, "soak_chat_turns_total", target="b", outcome="ok") == 3
    assert value(samples, "soak_chat_turns_started_total", target="a") == 11
    assert value(samples, "soak_chat_turns_in_flight", target="a") == 1
    assert value(samples, "soak_chat_turns_in_flight", target="b") == 0
    assert value(samples, "soak_chat_tokens_total", target="a") == 35
    # TTFT / reply histograms: ok turns only, 20 ms and 400 ms within soak's 2.5 %
    assert value(samples, "soak_chat_ttft_seconds_count", target="a") == 7
    assert value(samples, "soak_chat_ttft_seconds_bucket", target="a", le="0.01") == 0
    assert value(samples, "soak_chat_ttft_seconds_bucket", target="a", le="0.025") == 7
    assert value(samples, "soak_chat_reply_seconds_bucket", target="a", le="0.3") == 0
    assert value(samples, "soak_chat_reply_seconds_bucket", target="a", le="0.5") == 7
    assert value(samples, "soak_chat_reply_seconds_bucket", target="b", le="+Inf") == 3
    assert value(samples, "soak_chat_reply_seconds_sum", target="a") == pytest.approx(2.8, 0.03)
    assert value(samples, "soak_chat_records_total") == 2
    assert scrape(port) == samples  # nothing new: nothing counted twice

    play(recorder, "a", ok=4, stalls=1)
    recorder.flush()
    later = scrape(port)
    assert value(later, "soak_chat_turns_total", target="a", outcome="ok") == 11
    assert value(later, "soak_chat_turns_total", target="a", outcome="stall") == 3
    assert value(later, "soak_chat_ttft_seconds_count", target="a") == 11
    assert value(later, "soak_chat_turns_in_flight", target="a") == 1
    assert chats.tail.offset == path.stat().st_size  # read up to the end, once


def test_a_torn_last_line_is_kept_until_its_rest_arrives_and_garbage_is_skipped(served):
    recorder, path, port, chats = served
    play(recorder, "a", ok=2)
    recorder.flush()
    lines = path.read_bytes().splitlines(keepends=True)
    record = json.loads(lines[0])
    record["outcomes"]["ok"] = 5
    line = json.dumps(record).encode() + b"\n"
    with path.open("ab") as out:  # a writer cut off mid-line, and a line that is no JSON
        out.write(b"{not json\n" + line[:40])
    samples = scrape(port)
    assert value(samples, "soak_chat_turns_total", target="a", outcome="ok") == 2
    assert value(samples, "soak_chat_records_skipped_total") == 1
    with path.open("ab") as out:
        out.write(line[40:])
    samples = scrape(port)
    assert value(samples, "soak_chat_turns_total", target="a", outcome="ok") == 7
    assert value(samples, "soak_chat_records_total") == 3


def test_tail_reads_only_what_was_appended(tmp_path):
    path = tmp_path / CHATS
    tail = JsonlTail(path)
    assert tail.poll() == []
    path.write_text('{"target": "a", "n": 1}\n{"target": "a", "n": 2}\n[1]\n\n{"tar')
    assert [r["n"] for r in tail.poll()] == [1, 2] and tail.skipped == 1
    offset = tail.offset
    with path.open("a") as out:
        out.write('get": "a", "n": 3}\n')
    assert [r["n"] for r in tail.poll()] == [3] and tail.offset > offset
    assert tail.poll() == []
    path.write_text('{"target": "a", "n": 4}\n')  # shorter: started over
    assert [r["n"] for r in tail.poll()] == [4] and tail.restarts == 1


def test_tail_catches_up_on_a_long_file_over_several_polls(tmp_path):
    path = tmp_path / CHATS
    lines = [f'{{"target": "a", "n": {n}}}\n' for n in range(100, 200)]  # all 26 bytes
    path.write_text("".join(lines))
    tail = JsonlTail(path, max_read=20 * len(lines[0]))  # 20 lines a poll
    polls = [[r["n"] for r in tail.poll()] for _ in range(6)]
    assert all(len(p) <= 20 for p in polls) and sum(polls, []) == list(range(100, 200))
    assert polls[-1] == [] and tail.skipped == 0


def test_an_unreadable_chats_file_is_told_and_the_scrape_goes_on(tmp_path):
    (tmp_path / CHATS).mkdir()  # a directory where chats.jsonl should be
    told = []
    metrics = Metrics(free_port())
    metrics.serve_also(ChatMetrics(tmp_path / CHATS, told.append))
    metrics.process("app", {"t": time.time(), "pid": 1, "threads": 3})
    try:
        samples = scrape(metrics.port)
    finally:
        metrics.close()
    assert value(samples, "soak_target_threads", target="app") == 3
    assert value(samples, "soak_chat_read_errors_total") == 1
    assert told and "chats.jsonl" in told[0]


def test_recorded_histograms_land_in_the_prometheus_bucket_of_their_latency(tmp_path):
    chats = ChatMetrics(tmp_path / CHATS)
    latencies = [0.0005, 0.003, 0.09, 1.2, 8.0, 45.0, 500.0]
    with JsonlWriter(tmp_path / CHATS) as writer:
        recorder = ChatRecorder(["a"], writer.write, None)
        for seconds in latencies:
            recorder.turn_started("a")
            result = TurnResult(request_id="r")
            result.ttft_s = result.reply_s = seconds
            recorder.turn_finished("a", result, "s")
        recorder.flush()
    chats.update()
    buckets = chats.targets["a"].buckets["reply_hist"]
    expected = [0] * (len(LE_BUCKETS) + 1)
    for seconds in latencies:
        expected[next((i for i, le in enumerate(LE_BUCKETS) if seconds <= le), -1)] += 1
    assert buckets == expected


# --- the dashboard -------------------------------------------------------------------------
def dashboard_exprs(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, expr) of every query of every panel (rows included) and of every
    template variable."""
    found = []
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            found += [(inner["title"], t["expr"]) for t in inner.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        found.append((f"${variable['name']}", variable["query"]["query"]))
    return found


def test_the_dashboard_asks_only_for_metrics_soak_serves(tmp_path):
    """Every metric name in every panel's query is in a real scrape of a real collector
    (its own process as the target, a /health with a loop lag, chats recorded)."""
    body = b'{"status": "ok", "diagnostics": {"loop_lag_ms": 3.5}}'

    def respond(handler):
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    with JsonlWriter(tmp_path / CHATS) as writer:
        recorder = ChatRecorder(["app"], writer.write, None)
        play(recorder, "app", ok=3, stalls=1)
        recorder.flush()
    port = free_port()
    with http_server(respond) as url:
        profile = {
            "targets": [{"name": "app", "pid": os.getpid(), "health": url}],
            "collector": {
                "interval": 0.2,
                "health_interval": 0.2,
                "detail_interval": 0.2,
                "loop_lag_field": "diagnostics.loop_lag_ms",
                "python_threads": False,
            },
        }
        stop = threading.Event()
        collector = Collector(tmp_path, profile, metrics_port=port)
        thread = threading.Thread(target=collector.run_until, args=(stop,))
        thread.start()
        try:
            deadline = time.monotonic() + 20
            while True:
                samples = scrape(port)
                names = {name for name, _ in samples}
                if {"soak_health_loop_lag_seconds", "soak_target_sockets"} <= names:
                    break
                assert time.monotonic() < deadline, sorted(names)
                time.sleep(0.2)
        finally:
            stop.set()
            thread.join(10)
    assert value(samples, "soak_chat_turns_total", target="app", outcome="stall") == 1

    dashboard = json.loads(DASHBOARD.read_text())
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    exprs = dashboard_exprs(dashboard)
    assert len(exprs) >= 10
    for title, expr in exprs:
        used = set(re.findall(r"\bsoak_[a-z0-9_]+", expr))
        assert used, f"{title}: {expr} asks for no soak metric"
        assert used <= names, f"{title}: {sorted(used - names)} are not served"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert all(p["datasource"]["uid"] == "${DS_PROMETHEUS}" for p in panels)
