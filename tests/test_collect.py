"""Collector parts against real processes and real HTTP servers on loopback."""

import os
import threading
import time

import psutil

from soak.collect.health import poll_health
from soak.collect.process import ProcessSampler, fold_thread_name, pid_listening_on, thread_families
from soak.target import start_target
from tests.servers import http_server


def test_fold_thread_name_groups_numbered_threads():
    assert fold_thread_name("asyncio_12") == "asyncio_N"
    assert fold_thread_name("ThreadPoolExecutor-3_0\n") == "ThreadPoolExecutor-N_N"
    assert fold_thread_name("MainThread") == "MainThread"


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
        assert sampler.alive()
    assert not sampler.alive()


def respond_with(status: int, body: bytes, content_type: str = "application/json"):
    def respond(handler):
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return respond


def test_health_json_is_kept_whole():
    with http_server(respond_with(200, b'{"status":"ok","diagnostics":{"thread_count":7}}')) as url:
        record = poll_health(url, timeout=2)
    assert record["status"] == 200 and record["error"] is None
    assert record["body"]["diagnostics"]["thread_count"] == 7
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
