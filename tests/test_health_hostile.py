"""/health polling against hostile servers on loopback: every wait is bounded by one
deadline, credentials never reach another origin, and what a server returns is stored
and analysed within fixed caps."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import soak.analyze.load as load
from soak.analyze import load_run, summarize
from soak.collect.collector import Collector
from soak.collect.health import (
    BODY_CAPS,
    MAX_FIELDS_PER_POLL,
    MAX_PATHS_PER_RUN,
    HealthBodies,
    poll_health,
)
from soak.rundir import EVENTS, HEALTH, RunDir, flatten_into
from tests.rundir_factory import FakeRun, FakeTarget, write_run

TIMEOUT_S = 1.0
#: How much later than its timeout a poll may return on a loaded 2-core machine: generous,
#: since a poll without a deadline would run until the server stops (the test's end).
SLACK_S = 8.0


@dataclass
class Request:
    """What a test server received: the request line's path and the headers (lower-case)."""

    path: str
    headers: dict[str, str] = field(default_factory=dict)


Serve = Callable[[socket.socket, Request, threading.Event], None]


@contextlib.contextmanager
def raw_server(serve: Serve, read_request: bool = True) -> Iterator[tuple[int, list[Request]]]:
    """A TCP server on 127.0.0.1: each connection is `serve(conn, request, stop)` in a thread.

    Yields (port, the requests received). At the end `stop` is set and everything closed.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop = threading.Event()
    requests: list[Request] = []
    conns: list[socket.socket] = []

    def handle(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            request = Request("")
            if read_request:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data and (part := conn.recv(4096)):
                    data += part
                line, *lines = data.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
                request.path = line.split(" ")[1] if " " in line else ""
                for header in lines:
                    name, _, value = header.partition(":")
                    request.headers[name.strip().lower()] = value.strip()
                requests.append(request)
            serve(conn, request, stop)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conns.append(conn)
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield listener.getsockname()[1], requests
    finally:
        stop.set()
        acceptor.join(5)
        listener.close()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


def trickle(data: bytes, every_s: float = 0.05) -> Serve:
    """Send `data` one byte every `every_s` seconds, then hang until stopped."""

    def serve(conn: socket.socket, request: Request, stop: threading.Event) -> None:
        for byte in data:
            conn.sendall(bytes([byte]))
            if stop.wait(every_s):
                return
        stop.wait()

    return serve


def answer(status: int, body: bytes, extra: str = "") -> Serve:
    def serve(conn: socket.socket, request: Request, stop: threading.Event) -> None:
        head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
        conn.sendall(head.encode() + body)

    return serve


def timed_poll(url: str, headers: dict[str, str] | None = None) -> tuple[dict, float]:
    started = time.monotonic()
    record = poll_health(url, TIMEOUT_S, headers)
    return record, time.monotonic() - started


# --- every wait is a deadline ------------------------------------------------------------
@pytest.mark.parametrize(
    "response",
    [
        pytest.param(b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"a" * 1000, id="headers"),
        pytest.param(b"HTTP/1.1 200 OK" + b" " * 1000, id="status-line"),
    ],
)
def test_a_trickled_response_head_times_out_at_the_deadline(response):
    with raw_server(trickle(response)) as (port, _):
        record, took = timed_poll(f"http://127.0.0.1:{port}/health")
    assert record["error"] == "timeout after 1 s" and record["status"] is None
    assert took < TIMEOUT_S + SLACK_S
    assert set(record) == {"t", "status", "latency_s", "error"}


def test_a_trickled_body_times_out_and_keeps_the_status():
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"

    def serve(conn, request, stop):
        conn.sendall(head)
        trickle(b"{" * 1000)(conn, request, stop)

    with raw_server(serve) as (port, _):
        record, took = timed_poll(f"http://127.0.0.1:{port}/health")
    assert record["error"] == "timeout after 1 s" and record["status"] == 200
    assert took < TIMEOUT_S + SLACK_S


def test_an_endless_chunked_body_is_cut_off_by_size_or_by_the_deadline():
    def flood(conn, request, stop):
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        while not stop.is_set():
            conn.sendall(b"1000\r\n" + b"7" * 4096 + b"\r\n")

    def drip(conn, request, stop):
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        while not stop.wait(0.05):
            conn.sendall(b"1\r\n7\r\n")

    with raw_server(flood) as (port, _):
        record, took = timed_poll(f"http://127.0.0.1:{port}/health")
    assert record["status"] == 200 and "body" not in record
    assert record["error"] == "body larger than 1048576 bytes (not kept)"
    with raw_server(drip) as (port, _):
        record, took = timed_poll(f"http://127.0.0.1:{port}/health")
    assert record["error"] == "timeout after 1 s" and record["status"] == 200
    assert took < TIMEOUT_S + SLACK_S


def test_endless_headers_are_cut_off_by_size():
    def flood(conn, request, stop):
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        while not stop.is_set():
            conn.sendall(b"X-Junk: " + b"j" * 1000 + b"\r\n")

    with raw_server(flood) as (port, _):
        record, _ = timed_poll(f"http://127.0.0.1:{port}/health")
    assert record["error"] == "response head longer than 65536 bytes"


def test_a_chunked_json_body_is_read_and_a_closed_connection_is_said():
    def chunked(conn, request, stop):
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'5;ext=1\r\n{"a":\r\n3\r\n 1}\r\n0\r\n'  # trailers never come: not waited for
        )
        stop.wait()

    with raw_server(chunked) as (port, _):
        record, took = timed_poll(f"http://127.0.0.1:{port}/health")
    assert record["body"] == {"a": 1} and "error" not in record  # the trailers: not waited for
    with raw_server(lambda conn, request, stop: None) as (port, _):
        record, _ = timed_poll(f"http://127.0.0.1:{port}/health")
    assert record["error"] == "connection closed without an answer"


def test_a_connect_that_is_never_accepted_times_out():
    """A listener whose backlog is full drops SYNs: connect() would retry for minutes."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=0)
    port = listener.getsockname()[1]
    held = []
    try:
        for _ in range(4):
            client = socket.socket()
            client.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                client.connect(("127.0.0.1", port))
            held.append(client)
        time.sleep(0.1)
        record, took = timed_poll(f"http://127.0.0.1:{port}/health")
    finally:
        for client in held:
            client.close()
        listener.close()
    assert record["error"] == "timeout after 1 s" and record["status"] is None
    assert took < TIMEOUT_S + SLACK_S


def test_https_is_verified_and_a_silent_tls_handshake_times_out(tmp_path):
    with raw_server(lambda conn, request, stop: stop.wait(), read_request=False) as (port, _):
        record, took = timed_poll(f"https://127.0.0.1:{port}/health")
    assert record["error"] == "timeout after 1 s" and took < TIMEOUT_S + SLACK_S
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
         "-days", "1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    def tls(conn, request, stop):
        with context.wrap_socket(conn, server_side=True) as secure:
            secure.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")

    with raw_server(tls, read_request=False) as (port, _):
        record, _ = timed_poll(f"https://localhost:{port}/health")
    assert "CERTIFICATE_VERIFY_FAILED" in record["error"]  # self-signed: refused, not trusted


# --- credentials never go to another origin ----------------------------------------------
SECRETS = {"Authorization": "Bearer s3cr3t", "X-Api-Key": "k3y"}


def test_a_redirect_to_another_origin_is_not_followed_and_gets_no_credentials():
    with raw_server(answer(200, b'{"stolen":true}')) as (other, received):
        location = f"http://127.0.0.1:{other}/collect?token=abc123&x=1"
        with raw_server(answer(302, b"", f"Location: {location}\r\n")) as (port, asked):
            records = [poll_health(f"http://127.0.0.1:{port}/health", 2, SECRETS) for _ in "ab"]
        time.sleep(0.2)
    assert not received  # not one request, with or without the header
    assert asked[0].headers["authorization"] == "Bearer s3cr3t"  # the named origin got it
    for record in records:
        assert record["status"] == 302
        assert record["error"] == (
            f"redirect to http://127.0.0.1:{other}/collect?token=***&x=1 not followed"
        )
        assert "abc123" not in json.dumps(record)


def test_a_same_origin_redirect_is_followed_once_with_its_headers():
    def serve(conn, request, stop):
        if request.path == "/health":
            answer(301, b"", "Location: /health/\r\n")(conn, request, stop)
        elif request.path == "/health/":
            answer(200, b'{"ok":1}')(conn, request, stop)
        else:
            answer(302, b"", f"Location: {request.path}x\r\n")(conn, request, stop)

    with raw_server(serve) as (port, asked):
        record = poll_health(f"http://127.0.0.1:{port}/health", 2, SECRETS)
        loop = poll_health(f"http://127.0.0.1:{port}/a", 2, SECRETS)
    assert record["status"] == 200 and record["body"] == {"ok": 1} and "error" not in record
    assert [r.path for r in asked] == ["/health", "/health/", "/a", "/ax"]
    assert all(r.headers["authorization"] == "Bearer s3cr3t" for r in asked)
    assert loop["status"] == 302
    assert loop["error"] == f"redirect to http://127.0.0.1:{port}/axx not followed"


# --- bounded server-controlled data ------------------------------------------------------
def collect(tmp_path: Path, url: str, seconds: float, **collector) -> RunDir:
    """Run the real collector against `url` for `seconds`; its run directory."""
    profile = {
        "targets": [{"name": "app", "pid": os.getpid(), "health": url}],
        "collector": {"interval": 1.0, "health_interval": 0.25, "health_timeout": 2.0,
                      "loop_lag_field": "diagnostics.loop_lag_ms", **collector},
        "criteria": {"checks": ["health.diagnostics.thread_count.max < 100"]},
    }  # fmt: skip
    run = RunDir.create(tmp_path, "hostile", "t", {"profile": profile, "targets": []})
    stop = threading.Event()
    thread = threading.Thread(target=Collector(run.path, profile).run_until, args=(stop,))
    thread.start()
    time.sleep(seconds)
    stop.set()
    thread.join(30)
    assert not thread.is_alive()
    return run


def numbers(body: dict) -> dict:
    flat: dict = {}
    flatten_into(body, flat)
    return flat


def test_a_body_of_100k_keys_is_stored_capped_with_the_named_fields(tmp_path):
    keys = {f"k{i:x}": 1 for i in range(100_000)}
    body = {"status": "ok", **keys, "diagnostics": {"thread_count": 7, "loop_lag_ms": 3.5}}
    raw = json.dumps(body, separators=(",", ":")).encode()
    assert len(raw) < 1_048_576
    with raw_server(answer(200, raw)) as (port, _):
        run = collect(tmp_path, f"http://127.0.0.1:{port}/health", 1.5)
    health = list(run.target_records("app", HEALTH))
    assert len(health) >= 3 and all("error" not in r for r in health)
    for record in health:
        stored = record["body"]
        assert stored["status"] == "ok"
        assert stored["diagnostics"] == {"thread_count": 7, "loop_lag_ms": 3.5}  # named: kept
        assert len(numbers(stored)) == MAX_FIELDS_PER_POLL + 2
    size = run.target_file("app", HEALTH).stat().st_size
    assert size < len(health) * 10_000 < len(health) * len(raw) / 100
    events = list(run.records(EVENTS))
    capped = [e for e in events if e["kind"] == "health_capped"]
    assert len(capped) == 1 and capped[0]["target"] == "app"  # once, not per poll
    assert capped[0]["caps"] == BODY_CAPS
    assert capped[0]["dropped"] == {"fields_per_poll": 100_000 - MAX_FIELDS_PER_POLL}
    assert not [e for e in events if e["kind"] == "collector_error"]


def test_keys_that_change_every_poll_stop_growing_the_run_directory(tmp_path):
    polls = iter(range(10_000))

    def serve(conn, request, stop):
        poll = next(polls)
        body = {f"p{poll}_{i}": i for i in range(20_000)}  # ~270 KB, new keys each time
        body["diagnostics"] = {"loop_lag_ms": 2.0}
        answer(200, json.dumps(body).encode())(conn, request, stop)

    with raw_server(serve) as (port, _):
        run = collect(tmp_path, f"http://127.0.0.1:{port}/health", 2.5)
    health = list(run.target_records("app", HEALTH))
    assert len(health) >= 5
    paths = set().union(*(numbers(r["body"]) for r in health))
    assert len(paths) <= MAX_PATHS_PER_RUN + 1
    assert all(numbers(r["body"]) == {"diagnostics.loop_lag_ms": 2.0} for r in health[3:])
    assert run.target_file("app", HEALTH).stat().st_size < 60_000  # raw: > 1 MB
    capped = [e for e in run.records(EVENTS) if e["kind"] == "health_capped"]
    assert len(capped) == 1


def test_body_caps_on_depth_strings_lists_and_huge_numbers():
    deep: dict = {"leaf": 1}
    for _ in range(20):
        deep = {"d": deep}
    body = {
        "version": "v" * 10_000,
        "deep": deep,
        "checks": [{"db": "up"}] * 1000,
        "big": 10**400,
        "flags": {f"f{i}": True for i in range(50)},
        "x" * 300: 1,
    }
    stored, dropped = HealthBodies().trim(body)
    assert len(stored["version"]) == 200 and "checks" not in stored and "x" * 300 not in stored
    assert stored["big"] is None  # past a float: no number to keep
    assert len(stored["flags"]) == 19  # 20 text fields per poll, one of them the version
    assert dropped == {"depth": 1, "text_fields_per_poll": 31, "path_chars": 1}
    assert numbers(stored) == {}
    assert HealthBodies().trim({"n": 2**70})[0] == {"n": float(2**70)}
    named, _ = HealthBodies(keep=["deep" + ".d" * 20 + ".leaf"]).trim({"deep": deep})
    assert numbers(named) == {"deep" + ".d" * 20 + ".leaf": 1}


def test_analysis_of_an_old_uncapped_run_has_bounded_columns(tmp_path, monkeypatch):
    """A run directory of an older soak stored every key: the frame keeps the first
    MAX_HEALTH_FIELDS plus the fields the profile names, whenever they first appear."""

    def hostile(elapsed: float) -> dict:
        body = {f"k{int(elapsed)}_{i}": i for i in range(100)}
        if elapsed > 600:  # long after the first 200 fields were seen
            body["late"] = {"gauge": 5.0}
            body["diagnostics"] = {"loop_lag_ms": 2.0}
        return body

    run_dir = write_run(
        tmp_path,
        FakeRun(
            targets=[FakeTarget(health_body=hostile)],
            duration_s=1200.0,
            checks=["health.late.gauge.max < 10"],
        ),
    )
    kept = [f"body.k5_{i}" for i in range(100)] + [f"body.k10_{i}" for i in range(100)]
    named = ["body.diagnostics.loop_lag_ms", "body.late.gauge"]  # late: in name order
    for parallel in (False, True):  # parsed here, and by child processes
        monkeypatch.setattr(load, "PARALLEL_MIN_BYTES", 0 if parallel else 1 << 40)
        health = load_run(run_dir).targets["app"].health
        body = [c for c in health.columns if c.startswith("body.")]
        assert body == kept + named
        assert health["body.late.gauge"].max() == 5.0
    summary = summarize(run_dir)
    target = summary["targets"]["app"]
    assert target["health"]["fields"]["late.gauge"]["max"] == 5.0
    assert target["loop_lag"]["max"] == 0.002
    [check] = summary["criteria"]
    assert check["name"] == "health.late.gauge.max" and check["status"] == "pass"
