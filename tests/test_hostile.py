"""Hostile targets: soak keeps running, with bounded memory, and records what happened.

One `soak run` drives eight misbehaving WebSocket servers at once (several targets
share one run), each started here on loopback: a handshake that never completes,
an abrupt TCP close mid-reply, binary and non-JSON frames, a 20 MB frame, an
endless flood of tokens with no terminal frame, megabyte ids in every frame, a
heartbeat that never becomes the ready frame, and a ready frame nested 100,000 deep.
"""

import asyncio
import contextlib
import json
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from websockets.asyncio.server import ServerConnection, serve

from soak.rundir import RunDir

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.e2e


async def greet(connection: ServerConnection) -> None:
    await connection.send(json.dumps({"type": "session_switched", "session_id": "s"}))


async def abrupt_close(connection: ServerConnection) -> None:
    await greet(connection)
    async for raw in connection:
        request = json.loads(raw)["request_id"]
        await connection.send(json.dumps({"type": "token", "request_id": request, "content": "a"}))
        connection.transport.abort()  # TCP reset: no close frame


async def binary_and_garbage(connection: ServerConnection) -> None:
    await greet(connection)
    async for _ in connection:
        await connection.send(b"\x00\xff binary")
        await connection.send("<html>not json</html>")


async def huge_frame(connection: ServerConnection) -> None:
    await greet(connection)
    async for _ in connection:
        await connection.send("x" * 20_000_000)


async def flood(connection: ServerConnection) -> None:
    await greet(connection)
    async for raw in connection:
        request = json.loads(raw)["request_id"]
        frame = json.dumps({"type": "token", "request_id": request, "content": "y" * 200})
        for _ in range(200_000):  # ~3 s of tokens at full speed, never a terminal frame
            await connection.send(frame)


async def giant_ids(connection: ServerConnection) -> None:
    """A 2 MB session id and a 1 MB request id in every frame."""
    await connection.send(json.dumps({"type": "session_switched", "session_id": "S" * 2_000_000}))
    async for _ in connection:
        request = "R" * 1_000_000
        await connection.send(json.dumps({"type": "token", "request_id": request, "content": "a"}))
        await connection.send(json.dumps({"type": "done", "request_id": request}))


async def heartbeat_only(connection: ServerConnection) -> None:
    """A heartbeat every 0.3 s, forever, and never the ready frame."""
    while True:
        await connection.send(json.dumps({"type": "heartbeat"}))
        await asyncio.sleep(0.3)


async def deep_ready(connection: ServerConnection) -> None:
    """A ready frame nested 100,000 deep: more than any JSON parser's recursion."""
    await connection.send(
        '{"type": "session_switched", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    )
    async for _ in connection:
        pass


class SilentHandshake:
    """A TCP server that reads the HTTP upgrade request and never answers it."""

    def __init__(self) -> None:
        self.writers: set[asyncio.StreamWriter] = set()

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        await reader.read(65536)

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@contextmanager
def hostile_servers() -> Iterator[dict[str, str]]:
    """Start every hostile server on 127.0.0.1 in one background event loop."""
    urls: dict[str, str] = {}
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    stop = loop.create_future()

    async def main() -> None:
        servers = []
        for name, handler in [
            ("abrupt", abrupt_close),
            ("garbage", binary_and_garbage),
            ("huge", huge_frame),
            ("flood", flood),
            ("giant_ids", giant_ids),
            ("heartbeat_only", heartbeat_only),
            ("deep_ready", deep_ready),
        ]:
            server = await serve(handler, "127.0.0.1", 0, max_size=None, compression=None)
            servers.append(server)
            urls[name] = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/ws"
        never_handshake = SilentHandshake()
        silent = await asyncio.start_server(never_handshake, "127.0.0.1", 0)
        urls["silent"] = f"ws://127.0.0.1:{silent.sockets[0].getsockname()[1]}/ws"
        ready.set()
        await stop
        silent.close()
        await never_handshake.close()
        await silent.wait_closed()
        for server in servers:
            server.close()
            await server.wait_closed()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield urls
    finally:
        loop.call_soon_threadsafe(stop.set_result, None)
        thread.join(10)
        loop.close()


def test_soak_survives_hostile_websocket_servers(tmp_path):
    profile = tmp_path / "hostile.toml"
    profile.write_text(
        '[load]\nusers = 10\nspawn_rate = 10\nthink_time = "0.2s"\nduration = "25s"\n'
        'connect_timeout = "2s"\nfirst_token_timeout = "3s"\nreply_timeout = "3s"\n'
        'interval = "5s"\n[collector]\ninterval = "1s"\n[criteria]\nwarmup = "0s"\n'
        'checks = ["stalls.count == 0"]\n'
    )
    with hostile_servers() as urls:
        targets = [arg for name, url in urls.items() for arg in ("--target", f"{name}={url}")]
        proc = subprocess.run(
            [sys.executable, "-m", "soak", "run", str(profile), *targets,
             "--out", str(tmp_path), "--label", "hostile"],
            capture_output=True, text=True, timeout=240,
        )  # fmt: skip
    assert proc.returncode in (1, 4), proc.stdout + proc.stderr  # fail or nothing ok: never 0
    assert "Traceback" not in proc.stderr
    run = RunDir(next(p for p in tmp_path.iterdir() if p.is_dir()))
    assert run.manifest()["status"] == "completed"

    outcomes: dict[str, Counter] = {name: Counter() for name in urls}
    started, ended = Counter(), Counter()
    for record in run.records("chats.jsonl"):
        outcomes[record["target"]].update(record["outcomes"])
        started[record["target"]] += record["started"]
        ended[record["target"]] += record["turns"] + sum(record.get("excluded", {}).values())
    # every turn ends with one outcome; only the turns the stop cut short (one a user) have none
    assert sum(started.values()) - sum(ended.values()) <= 10, (started, ended)
    assert all(started[name] >= ended[name] for name in urls), (started, ended)
    for name, counts in outcomes.items():
        assert sum(counts.values()) > 0, f"{name}: no turn recorded"
        assert counts["ok"] == 0, f"{name}: hostile server counted as ok: {counts}"
    assert outcomes["silent"]["disconnect"] > 0  # connect (handshake) timeouts
    assert outcomes["abrupt"]["disconnect"] > 0
    assert outcomes["huge"]["disconnect"] > 0  # frame over the size limit closes with 1009
    assert outcomes["flood"]["stall"] > 0
    assert outcomes["garbage"]["violation"] > 0  # binary and non-JSON instead of a reply
    assert outcomes["heartbeat_only"]["disconnect"] > 0  # the ready wait is a deadline
    assert outcomes["deep_ready"]["disconnect"] > 0  # an unparseable ready frame: recorded
    connects = Counter()
    for record in run.records("chats.jsonl"):
        connects[record["target"]] += record.get("connects", 0)
    assert connects["deep_ready"] < 100, connects  # backoff between failed connects
    anomalies = list(run.records("anomalies.jsonl"))
    assert {a["target"] for a in anomalies} == set(urls)  # each left an anomaly record
    garbage = [a for a in anomalies if a["target"] == "garbage"]
    assert {a.get("subkind") for a in garbage if a["kind"] == "violation"} == {"non_json"}
    assert any(a["kind"] == "chat_stuck" for a in garbage)  # its chats never got a reply
    assert {a.get("close_code") for a in anomalies if a["target"] == "huge"} >= {1009}

    for name in ("anomalies.jsonl", "events.jsonl", "chats.jsonl"):  # ids are cut, not kept
        longest = max(len(line) for line in (run.path / name).read_text().splitlines())
        assert longest < 20_000, f"{name}: a line of {longest:,} characters"

    peak_rss = max((g.get("rss_mb") or 0) for g in run.records("generator.jsonl"))
    assert 0 < peak_rss < 400, f"load generator RSS {peak_rss} MB"
    assert (run.path / "report.html").exists()
