"""Targets sampled from Prometheus: canned API answers from a real HTTP server on loopback
(garbage, empty, error, slow, stale, down), and a real Prometheus + process-exporter
watching the built-in target beside psutil: both get the same verdicts."""

import json
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

from soak.collect.collector import Events, Settings
from soak.collect.prometheus import PRESETS, PrometheusWatch, expand_queries
from soak.errors import ProfileError
from soak.profile import profile_from_mapping
from soak.rundir import EVENTS, PROCESS, JsonlWriter, RunDir
from soak.target import start_target
from tests.prometheus_stack import binaries, cmdline_regex, prometheus_stack
from tests.servers import http_server

QUERIES = {
    "threads": "q_threads",
    "rss_bytes": "q_rss",
    "cpu_cores": "q_cpu",
    "fds": "q_fds",
    "start_time_seconds": "q_start",
    "sample_time_seconds": "q_fresh",
    "fds_limit": "q_fds_max",
    "memory_limit_bytes": "q_mem_max",
}


class CannedPrometheus:
    """Answers /api/v1/query with `answers[query]`: a number (a one-series vector now),
    None (no series), or a callable given the handler (anything else)."""

    def __init__(self) -> None:
        self.answers: dict = {}
        self.asked: list[str] = []

    def respond(self, handler) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(handler.path).query)["query"][0]
        self.asked.append(query)
        answer = self.answers.get(query)
        if callable(answer):
            answer(handler)
            return
        result = [] if answer is None else [{"metric": {}, "value": [time.time(), str(answer)]}]
        data = {"resultType": "vector", "result": result}
        send(handler, 200, {"status": "success", "data": data})


def send(handler, status: int, body) -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


@pytest.fixture
def canned():
    server = CannedPrometheus()
    server.answers = {
        "q_threads": 12, "q_rss": 50 * 1_048_576, "q_cpu": 0.25, "q_fds": 9,
        "q_start": 1_700_000_000, "q_fresh": None, "q_fds_max": 1024, "q_mem_max": None,
    }  # fmt: skip
    with http_server(server.respond) as health_url:
        yield server, health_url.removesuffix("/health")


def watch(tmp_path: Path, url: str, timeout: float = 2.0, **config):
    """A PrometheusWatch of target `api` with QUERIES; its events writer."""
    prometheus = {"url": url, "queries": QUERIES, "timeout": timeout, **config}
    target = profile_from_mapping({"targets": [{"name": "api", "prometheus": prometheus}]})
    run = RunDir(tmp_path)
    events_out = JsonlWriter(run.file(EVENTS))
    events = Events(events_out)
    return PrometheusWatch(vars(target.targets[0]), run, events, Settings()), events_out


def written(tmp_path: Path, watcher, events_out) -> tuple[list[dict], list[dict]]:
    watcher.close()
    events_out.close()
    run = RunDir(tmp_path)
    return list(run.target_records("api", PROCESS)), list(run.records(EVENTS))


def test_answers_become_process_records_in_psutil_units_with_found_and_restart(tmp_path, canned):
    server, url = canned
    watcher, events_out = watch(tmp_path, url)
    watcher.sample()
    server.answers["q_threads"] = 13
    watcher.sample()
    server.answers["q_start"] = 1_700_000_500  # a new process
    watcher.sample()
    records, events = written(tmp_path, watcher, events_out)
    first = records[0]
    assert first["threads"] == 12 and first["rss_mb"] == 50.0 and first["cpu_percent"] == 25.0
    assert first["fds"] == 9 and first["create_time"] == 1_700_000_000
    assert first["pid"] is None and first["source"] == "prometheus"
    assert [r["threads"] for r in records] == [12, 13, 13]
    kinds = [e["kind"] for e in events]
    assert kinds == ["target_found", "target_restart"]
    found, restart = events
    assert found["limits"]["fds"] == [1024, "Prometheus fds_limit"]
    assert found["limits"]["memory_mb"][0] is None
    assert restart["old_create_time"] == 1_700_000_000
    assert restart["new_create_time"] == 1_700_000_500
    assert server.asked.count("q_fds_max") == 2  # limits: once per process, not per sample


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (lambda h: send(h, 200, b"<html>not json</html>"), "non-JSON body"),
        (lambda h: send(h, 200, {"status": "success", "data": {"resultType": "matrix",
                                                              "result": []}}), "instant vector"),
        (lambda h: send(h, 200, [1, 2]), "not a Prometheus query answer"),
        (lambda h: send(h, 400, {"status": "error", "errorType": "bad_data",
                                 "error": "parse error at char 3"}), "parse error at char 3"),
        (lambda h: send(h, 503, b"overloaded"), "HTTP 503"),
        (None, "no series for threads"),
        (lambda h: send(h, 200, {"status": "success", "data": {"resultType": "vector",
         "result": [{"value": [time.time(), "1"]}, {"value": [time.time(), "2"]}]}}), "2 series"),
        (lambda h: send(h, 200, {"status": "success", "data": {"resultType": "vector",
         "result": [{"value": [time.time(), "many"]}]}}), "not a [time, value] sample"),
    ],
)  # fmt: skip
def test_a_bad_answer_is_an_error_record_and_one_event_never_a_crash(
    tmp_path, canned, answer, expected
):
    server, url = canned
    server.answers["q_threads"] = answer
    watcher, events_out = watch(tmp_path, url)
    for _ in range(3):
        watcher.sample()
    records, events = written(tmp_path, watcher, events_out)
    assert len(records) == 3
    assert all(expected in r["error"] and "threads" not in r for r in records), records
    errors = [e for e in events if e["kind"] == "collector_error"]
    assert len(errors) == 1 and expected in errors[0]["message"]  # rate-limited


def test_stale_samples_are_not_recorded_as_fresh(tmp_path, canned):
    server, url = canned
    server.answers["q_fresh"] = time.time() - 600  # scraped ten minutes ago
    watcher, events_out = watch(tmp_path, url, max_age="2m")
    watcher.sample()
    server.answers["q_fresh"] = lambda h: send(h, 200, {"status": "success", "data": {
        "resultType": "vector", "result": [{"value": [time.time() - 900, "1"]}]}})  # fmt: skip
    watcher.sample()
    records, _ = written(tmp_path, watcher, events_out)
    assert "scraped 600 s ago" in records[0]["error"] and "threads" not in records[0]
    assert "evaluated 900 s ago" in records[1]["error"] and "threads" not in records[1]


def test_a_slow_or_absent_prometheus_is_a_timeout_or_refused_within_the_timeout(tmp_path, canned):
    server, url = canned
    server.answers["q_rss"] = lambda h: time.sleep(3)
    watcher, events_out = watch(tmp_path, url, timeout=0.5)
    started = time.monotonic()
    watcher.sample()
    took = time.monotonic() - started
    watcher.source.url = "http://127.0.0.1:9"  # nothing listens there
    watcher.sample()
    records, events = written(tmp_path, watcher, events_out)
    assert "timeout" in records[0]["error"] and took < 2.5
    assert "refused" in records[1]["error"]
    assert [e["kind"] for e in events] == ["collector_error"]  # the second within a minute


def test_lost_and_found_again_after_prometheus_comes_back(tmp_path, canned):
    server, url = canned
    watcher, events_out = watch(tmp_path, url)
    watcher.sample()
    server.answers["q_threads"] = None
    watcher.sample()
    server.answers["q_threads"] = 12
    watcher.sample()
    records, events = written(tmp_path, watcher, events_out)
    assert [("error" in r) for r in records] == [False, True, False]
    kinds = [e["kind"] for e in events]
    assert kinds == ["target_found", "collector_error", "target_lost", "target_found"]
    assert "again" in events[-1]["message"]


def test_soak_collect_samples_a_target_known_only_to_prometheus(tmp_path, canned):
    """No url, no pid, no port: `soak collect` of a profile whose one target is sampled
    from Prometheus, as a subprocess, then its run directory."""
    _, url = canned
    queries = "\n".join(f"{metric} = '{query}'" for metric, query in QUERIES.items())
    profile = tmp_path / "remote.toml"
    profile.write_text(
        f'[[targets]]\nname = "api"\n[targets.prometheus]\nurl = "{url}"\n'
        f"[targets.prometheus.queries]\n{queries}\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "soak", "collect", str(profile), "--interval", "0.5s",
         "--duration", "3s", "--out", str(tmp_path / "runs"), "--no-report"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    records = list(RunDir(run_dir).target_records("api", PROCESS))
    assert len(records) >= 3 and all(r["threads"] == 12 for r in records), records
    events = [e for e in RunDir(run_dir).records(EVENTS) if e.get("target") == "api"]
    assert [e["kind"] for e in events] == ["target_found"]


# --- the profile ---------------------------------------------------------------------------
def prometheus_profile(**table) -> dict:
    return {"targets": [{"name": "gw", "url": "ws://10.0.0.5:8765/ws", "prometheus": table}]}


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"url": "http://p:9090", "preset": "statsd"},
         "unknown preset 'statsd'; valid: process-exporter, client, cadvisor"),
        ({"url": "file:///x", "preset": "client"}, "prometheus] url: expected an http"),
        ({"url": "http://", "preset": "client"}, "with a host"),
        ({"url": "http://p:9090", "preset": "client", "queries": {"thread": "go_threads"}},
         "[targets[0].prometheus.queries] thread: unknown key. Did you mean 'threads'?"),
        ({"url": "http://p:9090", "queries": {"rss_bytes": "x"}}, "preset is required unless"),
        ({"url": "http://p:9090", "preset": "client", "selector": "job=chat"},
         "selector: expected PromQL label matchers"),
        ({"url": "http://p:9090", "preset": "client", "queries": {"threads": " "}},
         "threads: expected a PromQL query"),
    ],
)  # fmt: skip
def test_profile_errors_name_the_field_and_what_to_write(table, message):
    with pytest.raises(ProfileError) as caught:
        profile_from_mapping(prometheus_profile(**table))
    assert message in caught.value.message


def test_profile_rejects_local_finders_and_redacts_its_headers(monkeypatch):
    table = {"url": "http://p:9090", "preset": "client"}
    data = prometheus_profile(**table)
    data["targets"][0]["port"] = 8765
    with pytest.raises(ProfileError, match="port does not apply to a target sampled from Pro"):
        profile_from_mapping(data)
    monkeypatch.setenv("PROM_TOKEN", "s3cret-token")
    table["headers"] = {"Authorization": "Bearer ${PROM_TOKEN}"}
    profile = profile_from_mapping(prometheus_profile(**table))
    assert profile.targets[0].prometheus["headers"]["Authorization"] == "Bearer s3cret-token"
    assert "s3cret-token" not in json.dumps(profile.redacted())
    again = profile_from_mapping(profile.to_dict())  # the collector's copy validates the same
    assert again.targets[0].prometheus == profile.targets[0].prometheus


def test_presets_fill_in_the_selector_and_the_window():
    config = {"preset": "cadvisor", "selector": '{pod="chat-0"}', "window": 30.0, "queries": {}}
    queries = expand_queries(config)
    assert set(queries) == set(PRESETS["cadvisor"])
    assert queries["cpu_cores"] == (
        'sum(rate(container_cpu_usage_seconds_total{pod="chat-0"}[30s]))'
    )
    config["queries"] = {"threads": "sum(go_threads{$selector})"}
    assert expand_queries(config)["threads"] == 'sum(go_threads{pod="chat-0"})'


# --- a real Prometheus ---------------------------------------------------------------------
PROFILE = """
[[targets]]
name = "{name}-psutil"
url = "{url}"
[[targets]]
name = "{name}-prom"
url = "{url}"
[targets.prometheus]
url = "{prometheus}"
preset = "process-exporter"
selector = '{{groupname="{name}"}}'
window = "5s"
max_age = "30s"
"""


def sample_until(watcher, done, seconds: float = 20.0) -> None:
    """Sample every 0.5 s until `done()` (at most `seconds`)."""
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "not done in time"
        time.sleep(0.5)
        watcher.sample()


def test_a_real_restart_is_lost_then_a_new_segment(tmp_path):
    """The built-in target seen through process-exporter and Prometheus: it ends (the
    exporter keeps its group with no processes: no sample, target_lost), a new one starts
    (target_restart with the new start time)."""
    binaries()
    tag = ["--token-interval", "0.0123"]  # what the exporter's group matches on
    target = start_target(patched=True, extra_args=tag)
    try:
        groups = {"restarting": r"soak\.target.*--token-interval 0\.0123"}
        with prometheus_stack(tmp_path, groups) as url:
            selector = '{groupname="restarting"}'
            watcher, events_out = watch(tmp_path, url, preset="process-exporter", queries={},
                                        selector=selector, window="5s", max_age="30s")  # fmt: skip
            watcher.sample()
            target.stop()
            sample_until(watcher, lambda: watcher.lost_reported)
            target = start_target(patched=True, extra_args=tag)
            sample_until(watcher, lambda: not watcher.lost_reported)
            records, events = written(tmp_path, watcher, events_out)
    finally:
        target.stop()
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "target_found" and "target_lost" in kinds, kinds
    assert kinds[-1] == "target_restart", kinds
    restart = events[-1]
    assert restart["new_create_time"] > restart["old_create_time"] > 1e9
    good = [r for r in records if "error" not in r]
    assert good[0]["create_time"] == restart["old_create_time"]
    assert good[-1]["create_time"] == restart["new_create_time"]
    assert all(r["threads"] >= 1 for r in good)  # never the ended group's zeros


@pytest.mark.e2e
def test_a_prometheus_target_gets_the_same_verdicts_as_a_psutil_one(tmp_path):
    """`soak run` of the leaky and the patched build, each watched by psutil and through
    a real Prometheus scraping a real process-exporter, then `soak report`: the threads
    verdicts and trends agree."""
    binaries()
    leaky = start_target(patched=True, extra_args=["--leak-thread-every", "2"])
    patched = start_target(patched=True)
    try:
        groups = {"leaky": cmdline_regex(str(leaky._workdir)),
                  "patched": cmdline_regex(str(patched._workdir))}  # fmt: skip
        with prometheus_stack(tmp_path, groups) as prometheus:
            profile = tmp_path / "both.toml"
            profile.write_text(
                PROFILE.format(name="leaky", url=leaky.ws_url, prometheus=prometheus)
                + PROFILE.format(name="patched", url=patched.ws_url, prometheus=prometheus)
                + '[load]\nusers = 8\nspawn_rate = 8\nduration = "20s"\ninterval = "2s"\n'
                'think_time = "0.1s"\n[collector]\ninterval = "1s"\n'
                '[criteria]\nwarmup = "5s"\nchecks = ["threads.growth_per_hour < 100"]\n'
            )
            run = subprocess.run(
                [sys.executable, "-m", "soak", "run",
                 str(profile), "--out", str(tmp_path / "runs"), "--no-report"],
                capture_output=True, text=True, timeout=300,
            )  # fmt: skip
    finally:
        leaky.stop()
        patched.stop()
    assert run.returncode in (0, 1), run.stdout + run.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    report = subprocess.run(
        [sys.executable, "-m", "soak", "report", str(run_dir)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert report.returncode == 1, report.stdout + report.stderr  # the leaky build fails
    summary = json.loads((run_dir / "summary.json").read_text())["targets"]
    prom = list(RunDir(run_dir).target_records("leaky-prom", PROCESS))
    assert prom and all(r["source"] == "prometheus" for r in prom)
    assert sum("error" in r for r in prom) <= 3, [r for r in prom if "error" in r]
    for build, verdict in (("leaky", "fail"), ("patched", "pass")):
        local, remote = summary[f"{build}-psutil"], summary[f"{build}-prom"]
        assert local["verdict"] == remote["verdict"] == verdict, (build, local, remote)
        assert remote["process_errors"] == 0 and remote["restarts"] == 0
        growth = local["threads"]["growth_per_hour"], remote["threads"]["growth_per_hour"]
        assert abs(growth[0] - growth[1]) <= 0.1 * max(abs(growth[0]), 400), growth
        # one scrape interval behind: a leaked thread or two, the same memory and files
        assert abs(local["threads"]["max"] - remote["threads"]["max"]) <= 8
        assert abs(local["rss"]["max"] - remote["rss"]["max"]) <= 0.1 * local["rss"]["max"]
        assert abs(local["fds"]["max"] - remote["fds"]["max"]) <= 3
    assert summary["leaky-prom"]["fds"]["limit_source"].startswith("Prometheus fds_limit")
    status = subprocess.run(
        [sys.executable, "-m", "soak", "status", str(run_dir)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "leaky-prom: from Prometheus, sampled" in status.stdout, status.stdout + status.stderr
