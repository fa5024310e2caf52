"""Small scripted servers on loopback for tests: misbehaving chat and /health servers."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from websockets.asyncio.server import ServerConnection, serve

Handler = Callable[[ServerConnection, dict], Awaitable[None]]


@contextmanager
def scripted_chat_server(on_message: Handler) -> Iterator[str]:
    """A WebSocket server on 127.0.0.1 that greets like the built-in target, then lets
    `on_message(connection, message)` answer each client frame. Yields its ws:// URL."""
    ready = threading.Event()
    state: dict = {}

    async def handler(connection: ServerConnection) -> None:
        await connection.send(json.dumps({"type": "session_switched", "session_id": "s1"}))
        async for raw in connection:
            await on_message(connection, json.loads(raw))

    async def main() -> None:
        state["stop"] = asyncio.get_running_loop().create_future()
        async with serve(handler, "127.0.0.1", 0) as server:
            state["port"] = server.sockets[0].getsockname()[1]
            ready.set()
            await state["stop"]

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield f"ws://127.0.0.1:{state['port']}/ws"
    finally:
        loop.call_soon_threadsafe(state["stop"].set_result, None)
        thread.join(10)
        loop.close()


@contextmanager
def http_server(respond: Callable[[BaseHTTPRequestHandler], None]) -> Iterator[str]:
    """A threaded HTTP server on 127.0.0.1 whose GET handler is `respond`. Yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            respond(self)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/health"
    finally:
        server.shutdown()
        server.server_close()
