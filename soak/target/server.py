"""The built-in target: one asyncio chat server with switchable slow failures.

One port serves WebSocket chat on `/ws` (nerve-style plain JSON events, below) and, over
keep-alive HTTP/1.1, `GET /health` with diagnostics and three streaming HTTP protocols
(OpenAI-compatible chat completions, Trinity-style SSE, agentex-style NDJSON; see
`soak.target.http`). Every protocol streams the same replies with the same faults, each
behind a rate (0 = off); `patched=True` turns them all off.

WebSocket protocol
------------------
- On connect: `{"type": "session_switched", "session_id": HEX}`.
- Client: `{"type": "message", "content": TEXT, "session_id"?, "request_id"?}`. The server
  streams `{"type": "token", "session_id", "request_id", "content": "WORD "}` frames, then one
  `{"type": "done", "session_id", "request_id", "usage": {"tokens": N}}`. The reply is
  "You said: <the prompt's words>" padded with filler words up to `tokens` words (a longer
  prompt gives a longer reply, so a nonce in the prompt always appears in the reply).
  `request_id` is echoed on every frame of the reply (null if not given); frames always carry
  the connection's own `session_id`, whatever the client sent.
- One turn per connection at a time: a message while a reply is still streaming gets
  `{"type": "error", "request_id", "error": "session busy"}` (a stalled reply is no longer
  streaming, so the connection stays usable).
- `{"type": "ping"}` -> `{"type": "pong"}`, answered by the reader even while a reply streams.
- Anything malformed -> `{"type": "error", "session_id", "request_id", "error": REASON}`.
"""

import asyncio
import contextlib
import http
import json
import os
import signal
import tempfile
import threading
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from soak.target.config import OPTIONS, TargetConfig, TargetOption
from soak.target.http import Endpoints, HttpConnection
from soak.target.replies import ChatMemory, SimulatedFault, TargetState, stream_reply

__all__ = ["OPTIONS", "TargetConfig", "TargetOption", "run", "serve"]

MAX_REQUEST_HEAD_BYTES = 64 * 1024
OPEN_TIMEOUT_S = 10.0


class Chat:
    """One WebSocket connection: its session id and the reply currently streaming, if any."""

    def __init__(self, state: TargetState, ws: ServerConnection) -> None:
        self.state = state
        self.ws = ws
        self.session_id = uuid.uuid4().hex
        self.turn: asyncio.Task[None] | None = None
        self.memory = ChatMemory()

    async def send(self, frame: dict[str, Any]) -> None:
        """Send one JSON frame."""
        await self.ws.send(json.dumps(frame))

    async def error(self, request_id: Any, reason: str) -> None:
        """Send an error frame for `request_id` (None if unknown)."""
        frame = {"type": "error", "session_id": self.session_id, "request_id": request_id}
        await self.send({**frame, "error": reason})

    async def serve(self) -> None:
        """Greet, then read frames until the client leaves; replies stream in their own task."""
        await self.send({"type": "session_switched", "session_id": self.session_id})
        try:
            async for raw in self.ws:
                await self.handle(raw)
        finally:
            if self.turn is not None:
                self.turn.cancel()
                self.turn = None  # a stalled turn is then freed while its exception stays silent

    async def handle(self, raw: str | bytes) -> None:
        """Answer one client frame."""
        if isinstance(raw, bytes):
            await self.error(None, "expected a text frame with a JSON object")
            return
        try:
            frame = json.loads(raw)
        except json.JSONDecodeError as exc:
            await self.error(None, f"malformed JSON: {exc}")
            return
        if not isinstance(frame, dict):
            await self.error(None, "expected a JSON object")
            return
        request_id = frame.get("request_id")
        kind = frame.get("type")
        if kind == "ping":
            await self.send({"type": "pong"})
        elif kind != "message":
            await self.error(request_id, f"unknown message type {kind!r}")
        elif not isinstance(frame.get("content"), str):
            await self.error(request_id, "field 'content' must be a string")
        elif self.turn is not None and not self.turn.done():
            await self.error(request_id, "session busy")
        else:
            # Fire and forget: nobody ever retrieves this task's exception (see stall_every).
            self.turn = asyncio.create_task(self.reply(frame["content"], request_id))

    async def reply(self, content: str, request_id: Any) -> None:
        """Stream one reply as token frames, then done (unless a fault stalls it)."""
        frame = {"type": "token", "session_id": self.session_id, "request_id": request_id}
        words = self.state.reply_words(content, self.memory)

        async def send_token(token: str) -> None:
            await self.send({**frame, "content": token})

        try:
            await stream_reply(self.state, words, send_token, {**frame, "prompt": content})
            done = {"type": "done", "session_id": self.session_id, "request_id": request_id}
            await self.send({**done, "usage": {"tokens": len(words)}})
        except ConnectionClosed:
            pass


def _is_websocket_upgrade(head: bytes) -> bool:
    """True if this request head asks for a WebSocket upgrade (header `Upgrade: websocket`)."""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"upgrade" and b"websocket" in value.lower():
            return True
    return False


class RoutedConnection(ServerConnection):
    """An accepted connection: a WebSocket upgrade stays with websockets, the rest is HTTP.

    websockets' server owns the port, and its HTTP parser knows only the GET of an upgrade.
    This connection holds back the request head until it is complete; a WebSocket upgrade is
    then fed to websockets as usual, anything else moves the transport to an
    `HttpConnection` (keep-alive HTTP/1.1 on h11). The websockets handler of a moved
    connection waits in `handshake` until the HTTP side closes, so websockets' own shutdown
    sees it finish.
    """

    def __init__(self, *args: Any, endpoints: Endpoints, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.endpoints = endpoints
        self.head = bytearray()
        self.http: HttpConnection | None = None
        self.routed: asyncio.Future[None] = self.loop.create_future()

    def data_received(self, data: bytes) -> None:  # noqa: D102
        if self.routed.done():
            super().data_received(data)
            return
        self.head += data
        if b"\r\n\r\n" in self.head or len(self.head) >= MAX_REQUEST_HEAD_BYTES:
            head = bytes(self.head)
            self.head.clear()
            if _is_websocket_upgrade(head):
                self.routed.set_result(None)
                super().data_received(head)
            else:
                self.hand_over(head)

    def hand_over(self, head: bytes) -> None:
        """Move the transport to a new HTTP connection and give it what was read so far."""
        self.http = self.endpoints.connection()
        self.transport.set_protocol(self.http)
        self.http.connection_made(self.transport)
        self.http.data_received(head)
        self.routed.set_result(None)

    def eof_received(self) -> None:  # noqa: D102
        if not self.routed.done():  # a client gone before its request head was complete
            self.routed.set_result(None)
            super().data_received(bytes(self.head))
        super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: D102
        if not self.routed.done():
            self.routed.set_result(None)
        super().connection_lost(exc)

    async def handshake(self, *args: Any, **kwargs: Any) -> None:  # noqa: D102
        async with asyncio.timeout(OPEN_TIMEOUT_S):
            await self.routed
            if self.http is None:
                await super().handshake(*args, **kwargs)
                return
        await self.http.closed  # the HTTP side serves it, for as long as it stays open


def _ignore_simulated_faults(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Loop exception handler that keeps stalled replies silent and reports everything else."""
    if not isinstance(context.get("exception"), SimulatedFault):
        loop.default_exception_handler(context)


def _url_host(host: str) -> str:
    """`host` as it appears in a URL (IPv6 addresses in brackets)."""
    return f"[{host}]" if ":" in host else host


def _write_ready_file(path: str, info: dict[str, Any]) -> None:
    """Write `info` as JSON to `path` atomically (temporary file in the same directory)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".ready-", dir=directory)
    with os.fdopen(fd, "w") as handle:
        json.dump(info, handle)
    os.replace(tmp, path)


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event, state: TargetState) -> Iterator[None]:
    """Set `stop` on SIGINT/SIGTERM, even while a block holds the loop (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()

    def on_signal(signum: int, frame: object) -> None:
        state.stopping.set()
        loop.call_soon_threadsafe(stop.set)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


async def serve(config: TargetConfig, stop: asyncio.Event | None = None) -> None:
    """Serve until SIGINT/SIGTERM (main thread) or until `stop` is set, then shut down (< 1 s)."""
    stop = asyncio.Event() if stop is None else stop
    state = TargetState(config)
    loop = asyncio.get_running_loop()
    previous_handler = loop.get_exception_handler()
    loop.set_exception_handler(_ignore_simulated_faults)

    async def handler(ws: ServerConnection) -> None:
        state.connections += 1
        try:
            await Chat(state, ws).serve()
        finally:
            state.connections -= 1

    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        if urllib.parse.urlsplit(request.path).path == "/ws":
            return None
        return connection.respond(http.HTTPStatus.NOT_FOUND, "WebSocket chat is on /ws\n")

    endpoints = Endpoints(state)

    def connection(*args: Any, **kwargs: Any) -> RoutedConnection:
        return RoutedConnection(*args, endpoints=endpoints, **kwargs)

    heartbeat = asyncio.create_task(state.heartbeat())
    try:
        with _stop_on_signals(stop, state):
            async with ws_serve(
                handler,
                config.host,
                config.port,
                process_request=process_request,
                create_connection=connection,
                open_timeout=None,  # RoutedConnection.handshake times WebSocket openings
                compression=None,
                close_timeout=0.5,
            ) as server:
                host, port = server.sockets[0].getsockname()[:2]
                base = f"{_url_host(host)}:{port}"
                info = {
                    "pid": os.getpid(),
                    "host": host,
                    "port": port,
                    "ws_url": f"ws://{base}/ws",
                    "http_url": f"http://{base}",
                    "health_url": f"http://{base}/health",
                    "build": config.build,
                }
                print(
                    f"soak target ({config.build}) listening on {info['ws_url']}  "
                    f"HTTP {info['http_url']}  health {info['health_url']}",
                    flush=True,
                )
                if config.ready_file:
                    _write_ready_file(config.ready_file, info)
                await stop.wait()
                state.stopping.set()
                endpoints.close_all()  # websockets' shutdown waits for every handler
    finally:
        heartbeat.cancel()
        for task in state.orphans:
            task.cancel()
        loop.set_exception_handler(previous_handler)


def run(config: TargetConfig) -> None:
    """Run the target in the foreground until SIGINT or SIGTERM (blocking)."""
    asyncio.run(serve(config))
