"""JSON-RPC agent gateway whose CPU-heavy turns starve the event loop.

Reproduces (after hermes-agent's tui_gateway): a GIL/CPU-heavy step of a turn
runs on the event loop thread. Every Nth turn (``--block-every N``, counted per
process) runs a pure-Python "index the repository" tool for ``--block-seconds``
seconds right on the loop, so for that long nothing else happens: no frames,
no ``ping`` answers, no health answers, no pongs read. The server keeps its
own keepalive: every ``--ping-interval`` seconds it sends a WebSocket ping on
each connection and, before sending the next one, closes the connection with
code 1011 "keepalive ping timeout" if no timely pong (one that came back within
``ping_timeout``) was seen for more than ``ping_interval + ping_timeout``
seconds. After a long enough block that
check fires on every connection at once, idle and healthy ones included, and
the blocked turn itself never sends ``message.complete``. A 2 s heartbeat
task measures how late it wakes up (loop lag), logs
``event loop stalled 43.7s`` to stderr when the lag exceeds 1 s, and
exposes it in the status endpoint.

``--patched``: the heavy tool runs in a worker thread; the loop stays
responsive (lag of a few ms), pongs are read in time, nothing is dropped;
the heavy turn just takes ``--block-seconds`` longer.

Start
-----
``python loop_starve.py --port 9119 [--patched] [--block-every 10] [--block-seconds 45]``

  --port N            TCP port (always binds 127.0.0.1), required
  --patched           run the heavy tool off the event loop
  --block-every N     every Nth turn of the process is heavy (default 10; 0 = never)
  --block-seconds S   CPU seconds of the heavy tool (default 45)
  --ping-interval S   server keepalive ping period (default 20; 0 disables keepalive)
  --ping-timeout S    pong grace on top of the interval (default 20)
  --token TOKEN       require ``?token=TOKEN`` (default: no auth)
  --token-delay S     seconds between generated tokens (default 0.01)

With the defaults a heavy turn (45 s) exceeds 20 + 20 s, so it drops every
open connection. Runs until SIGTERM or SIGINT, then closes all WebSockets
(code 1001) and exits 0 (unpatched, a heavy step in progress finishes first,
since the signal is handled on the blocked loop).

WebSocket protocol (JSON-RPC 2.0, one object per text frame)
-----------------------------------------------------------
URL: ``ws://127.0.0.1:PORT/api/ws`` (``?token=TOKEN`` if ``--token``; a
wrong or missing token is accepted, then closed with code 4401 "unauthorized").

First frame from the server::

    {"jsonrpc": "2.0", "method": "event",
     "params": {"type": "gateway.ready", "payload": {"version": "0.19.0", "server": "loop-starve"}}}

Requests (``id`` is any JSON scalar, echoed in the response):

* ``session.create`` params ``{"source"?: str, "cwd"?: str}`` ->
  ``{"session_id": "s-...", "info": {"model": "fake-large", "cwd": ..., "source": ...}}``
* ``prompt.submit`` params ``{"session_id", "text"}`` -> ``{"status": "streaming"}``,
  then the turn's events. While a turn of that session runs: error 4009
  "session busy". Unknown session: error 4004 "session not found".
* ``session.close`` params ``{"session_id"}`` -> ``{"closed": true}``
* ``ping`` (no params) -> ``{"pong": true}``, answered on the reader, even
  while turns stream (but not while the loop is blocked).
* anything else: error -32601 "method not found"; bad params -32602; an
  object without ``method``: -32600; non-JSON: -32700 with ``id: null``.

Errors: ``{"jsonrpc": "2.0", "id": 3, "error": {"code": 4009, "message": "session busy"}}``

Events: ``{"jsonrpc": "2.0", "method": "event", "params": {"type": T,
"session_id": "s-...", "payload": {...}, "seq": n}}``, ``seq`` = 1, 2, 3 ...
per session with no gaps. Types in a turn, in order:

* ``message.start`` payload ``{"message_id": "m-..."}``
* ``message.delta`` payload ``{"text": "..."}`` - tokens batched about every 33 ms
* on a heavy turn, between deltas: ``tool.start`` payload
  ``{"tool_id", "name": "index_repository"}`` and ``tool.complete`` payload
  ``{"tool_id", "name", "duration_s"}``
* ``message.complete`` payload ``{"text": <full reply>, "status": "complete",
  "usage": {"input_tokens", "output_tokens"}}`` - the terminal event.

The reply text is ``You said: <prompt text>.`` followed by filler words.

Health
------
``GET http://127.0.0.1:PORT/api/status`` -> 200, JSON::

    {"version": "0.19.0", "gateway": {"state": "running", "connections": 2},
     "active_sessions": 2, "loop_lag_ms": 1.2, "max_loop_lag_ms": 43712.0,
     "loop_stalls": 1, "keepalive": {"ping_interval": 20.0, "ping_timeout": 20.0,
     "dropped_connections": 2}, "turns": 10}

(It is served by the same event loop, so it does not answer during a block.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import random
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

VERSION = "0.19.0"
HEARTBEAT_S = 2.0
DELTA_BATCH_S = 0.033

log = logging.getLogger("loop_starve")

_FILLER_TEXT = (
    "I checked the files and the change looks safe the tests cover the main path "
    "and the remaining risk is in the error handling branch"
)
_FILLER = _FILLER_TEXT.split()


def index_repository(seconds: float, abort: threading.Event | None = None) -> int:
    """Pure-Python CPU work: holds the GIL between bytecode switches."""
    deadline = time.perf_counter() + seconds
    x, n = 12345, 0
    while time.perf_counter() < deadline and not (abort is not None and abort.is_set()):
        for _ in range(20000):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        n += 1
    return n


@dataclass
class Session:
    session_id: str
    cwd: str
    source: str
    seq: int = 0
    turn: asyncio.Task[None] | None = None


@dataclass(eq=False)
class Conn:
    ws: ServerConnection
    last_pong: float
    sessions: dict[str, Session] = field(default_factory=dict)


class Gateway:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.conns: set[Conn] = set()
        self.turns = itertools.count(1)
        self.turns_done = 0
        self.loop_lag_ms = 0.0
        self.max_loop_lag_ms = 0.0
        self.loop_stalls = 0
        self.dropped = 0
        self.tool_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tool-worker")
        self.abort = threading.Event()  # set on shutdown: stops heavy work in the pool

    # -- heartbeat ----------------------------------------------------------------

    async def heartbeat(self) -> None:
        loop = asyncio.get_running_loop()
        expected = loop.time() + HEARTBEAT_S
        while True:
            await asyncio.sleep(max(0.0, expected - loop.time()))
            now = loop.time()
            lag = max(0.0, now - expected)
            self.loop_lag_ms = round(lag * 1000, 1)
            self.max_loop_lag_ms = max(self.max_loop_lag_ms, self.loop_lag_ms)
            if lag > 1.0:
                self.loop_stalls += 1
                log.warning("event loop stalled %.1fs", lag)
            expected = now + HEARTBEAT_S

    async def keepalive(self, conn: Conn) -> None:
        loop = asyncio.get_running_loop()
        interval, timeout = self.args.ping_interval, self.args.ping_timeout

        def _pong(fut: asyncio.Future) -> None:
            # The waiter resolves with the round-trip latency; a pong that took
            # longer than the timeout does not count as a sign of life.
            if not fut.cancelled() and fut.exception() is None and fut.result() <= timeout:
                conn.last_pong = loop.time()

        while True:
            await asyncio.sleep(interval)
            silent = loop.time() - conn.last_pong
            if silent > interval + timeout:
                self.dropped += 1
                log.warning("keepalive ping timeout (no pong for %.1fs): closing", silent)
                await conn.ws.close(1011, "keepalive ping timeout")
                return
            try:
                waiter = await conn.ws.ping()
            except ConnectionClosed:
                return
            waiter.add_done_callback(_pong)

    # -- HTTP ------------------------------------------------------------------------

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path == "/api/ws":
            return None
        if path == "/api/status":
            body = {
                "version": VERSION,
                "gateway": {"state": "running", "connections": len(self.conns)},
                "active_sessions": sum(len(c.sessions) for c in self.conns),
                "loop_lag_ms": self.loop_lag_ms,
                "max_loop_lag_ms": self.max_loop_lag_ms,
                "loop_stalls": self.loop_stalls,
                "keepalive": {
                    "ping_interval": self.args.ping_interval,
                    "ping_timeout": self.args.ping_timeout,
                    "dropped_connections": self.dropped,
                },
                "turns": self.turns_done,
            }
            response = connection.respond(200, json.dumps(body))
            del response.headers["Content-Type"]
            response.headers["Content-Type"] = "application/json"
            return response
        return connection.respond(404, "Not Found")

    # -- WebSocket ----------------------------------------------------------------------

    @staticmethod
    async def _send(ws: ServerConnection, obj: dict) -> None:
        await ws.send(json.dumps(obj))

    async def _event(self, conn: Conn, session: Session, etype: str, payload: dict) -> None:
        session.seq += 1
        await self._send(
            conn.ws,
            {
                "jsonrpc": "2.0",
                "method": "event",
                "params": {
                    "type": etype,
                    "session_id": session.session_id,
                    "payload": payload,
                    "seq": session.seq,
                },
            },
        )

    async def handler(self, ws: ServerConnection) -> None:
        query = parse_qs(urlsplit(ws.request.path).query)
        if self.args.token is not None and query.get("token", [""])[0] != self.args.token:
            await ws.close(4401, "unauthorized")
            return
        loop = asyncio.get_running_loop()
        conn = Conn(ws, last_pong=loop.time())
        self.conns.add(conn)
        ka = None
        if self.args.ping_interval > 0:
            ka = asyncio.create_task(self.keepalive(conn))
        try:
            await self._send(
                ws,
                {
                    "jsonrpc": "2.0",
                    "method": "event",
                    "params": {
                        "type": "gateway.ready",
                        "payload": {"version": VERSION, "server": "loop-starve"},
                    },
                },
            )
            async for raw in ws:
                await self._dispatch(conn, raw)
        except ConnectionClosed:
            pass
        finally:
            self.conns.discard(conn)
            tasks = [s.turn for s in conn.sessions.values() if s.turn and not s.turn.done()]
            if ka is not None:
                tasks.append(ka)
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await t
            conn.sessions.clear()

    async def _dispatch(self, conn: Conn, raw: str | bytes) -> None:
        ws = conn.ws
        try:
            msg = json.loads(raw)
        except (TypeError, ValueError):
            await self._send(
                ws,
                {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}},
            )
            return
        if not isinstance(msg, dict) or not isinstance(msg.get("method"), str):
            rid = msg.get("id") if isinstance(msg, dict) else None
            await self._send(
                ws,
                {
                    "jsonrpc": "2.0",
                    "id": rid,
                    "error": {"code": -32600, "message": "invalid request"},
                },
            )
            return
        rid = msg.get("id")
        method = msg["method"]
        params = msg.get("params") or {}

        async def result(value: dict) -> None:
            await self._send(ws, {"jsonrpc": "2.0", "id": rid, "result": value})

        async def error(code: int, message: str) -> None:
            await self._send(
                ws, {"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}}
            )

        if not isinstance(params, dict):
            await error(-32602, "params must be an object")
        elif method == "ping":
            await result({"pong": True})
        elif method == "session.create":
            sid = "s-" + uuid.uuid4().hex[:12]
            session = Session(sid, str(params.get("cwd", "/")), str(params.get("source", "api")))
            conn.sessions[sid] = session
            await result(
                {
                    "session_id": sid,
                    "info": {"model": "fake-large", "cwd": session.cwd, "source": session.source},
                }
            )
        elif method == "session.close":
            session = conn.sessions.pop(str(params.get("session_id")), None)
            if session is None:
                await error(4004, "session not found")
                return
            if session.turn is not None:
                session.turn.cancel()
            await result({"closed": True})
        elif method == "prompt.submit":
            session = conn.sessions.get(str(params.get("session_id")))
            text = params.get("text")
            if session is None:
                await error(4004, "session not found")
            elif not isinstance(text, str) or not text.strip():
                await error(-32602, "text is required")
            elif session.turn is not None and not session.turn.done():
                await error(4009, "session busy")
            else:
                await result({"status": "streaming"})
                session.turn = asyncio.create_task(self._turn(conn, session, text))
        else:
            await error(-32601, "method not found")

    async def _turn(self, conn: Conn, session: Session, text: str) -> None:
        n = next(self.turns)
        every = self.args.block_every
        heavy = every > 0 and n % every == 0
        loop = asyncio.get_running_loop()
        rng = random.Random()
        tokens = ["You", " said:"] + [" " + w for w in text.split()] + ["."]
        tokens += [" " + rng.choice(_FILLER) for _ in range(rng.randint(10, 22))]
        tool_at = min(4, len(tokens) - 1)
        try:
            await self._event(conn, session, "message.start", {"message_id": f"m-{n}"})
            pending = ""
            last_flush = loop.time()
            for i, tok in enumerate(tokens):
                if heavy and i == tool_at:
                    if pending:
                        await self._event(conn, session, "message.delta", {"text": pending})
                        pending = ""
                    await self._heavy_tool(conn, session)
                await asyncio.sleep(self.args.token_delay)
                pending += tok
                if loop.time() - last_flush >= DELTA_BATCH_S:
                    await self._event(conn, session, "message.delta", {"text": pending})
                    pending, last_flush = "", loop.time()
            if pending:
                await self._event(conn, session, "message.delta", {"text": pending})
            await self._event(
                conn,
                session,
                "message.complete",
                {
                    "text": "".join(tokens),
                    "status": "complete",
                    "usage": {"input_tokens": len(text.split()), "output_tokens": len(tokens)},
                },
            )
            self.turns_done += 1
        except ConnectionClosed:
            pass

    async def _heavy_tool(self, conn: Conn, session: Session) -> None:
        tool_id = "t-" + uuid.uuid4().hex[:8]
        name = "index_repository"
        await self._event(conn, session, "tool.start", {"tool_id": tool_id, "name": name})
        t0 = time.monotonic()
        if self.args.patched:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(
                self.tool_pool, index_repository, self.args.block_seconds, self.abort
            )
        else:
            index_repository(self.args.block_seconds)  # the bug: on the loop thread
        await self._event(
            conn,
            session,
            "tool.complete",
            {"tool_id": tool_id, "name": name, "duration_s": round(time.monotonic() - t0, 2)},
        )


async def main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[None] = loop.create_future()

    def _stop() -> None:
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _stop)
    app = Gateway(args)
    beat = asyncio.create_task(app.heartbeat())
    try:
        async with serve(
            app.handler,
            "127.0.0.1",
            args.port,
            process_request=app.process_request,
            ping_interval=None,  # the gateway runs its own keepalive
        ):
            log.info("listening on ws://127.0.0.1:%d/api/ws patched=%s", args.port, args.patched)
            await stop
    finally:
        beat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beat
        app.abort.set()
        app.tool_pool.shutdown(wait=False, cancel_futures=True)
    log.info("stopped")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--patched", action="store_true")
    p.add_argument("--block-every", type=int, default=10)
    p.add_argument("--block-seconds", type=float, default=45.0)
    p.add_argument("--ping-interval", type=float, default=20.0)
    p.add_argument("--ping-timeout", type=float, default=20.0)
    p.add_argument("--token", default=None)
    p.add_argument("--token-delay", type=float, default=0.01)
    return p.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)
    asyncio.run(main(parse_args()))
