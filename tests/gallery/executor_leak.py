"""Chat server whose model client leaks one idle worker thread per reply.

Reproduces: "thread count grows forever". Every reply calls the (fake) Gemini
model through a *new* ``concurrent.futures.ThreadPoolExecutor`` created for
that call (``thread_name_prefix="gemini-call"``). The executor is remembered in
a list "so that it can be shut down on exit" and never shut down before that,
so its worker thread stays alive, idle, blocked on its work queue. The process
gains exactly one OS thread per reply and never loses it. Nothing else grows:
CPU is idle between turns and memory per idle thread is small (stack pages
only). Plain CPython 3.11: the threads carry Python-level names only; the
OS-level thread name (``/proc/PID/task/*/comm``) stays ``python``.

Start
-----
``python executor_leak.py --port 8765 [--patched] [--token-delay 0.006]``

  --port N          TCP port (always binds 127.0.0.1), required
  --patched         one shared executor (max 4 workers) for all calls: the
                    thread count stays flat
  --token-delay S   seconds between token frames (default 0.006)
  --model-latency S seconds the blocking model call takes before the first
                    token (default 0.02)

Runs until SIGTERM or SIGINT, then closes all WebSockets (code 1001) and exits 0.

WebSocket protocol
------------------
URL: ``ws://127.0.0.1:PORT/ws/chat`` (any other path: HTTP 404). One JSON
object per text frame; every frame has a ``type`` field. No authentication.

On connect the server sends::

    {"type": "hello", "conversation_id": "c-1a2b3c4d", "model": "gemini-fake",
     "version": "2.3.1"}

Client to server:

* ``{"type": "user_message", "text": "..."}`` starts a reply.
* ``{"type": "ping"}`` -> ``{"type": "pong", "ts": <unix seconds float>}``
  (answered at once, also while a reply streams).

Server to client, for one reply (one reply at a time per connection)::

    {"type": "reply_start", "reply_id": "r-7"}
    {"type": "text_delta", "reply_id": "r-7", "text": " said:"}     (one per token)
    {"type": "reply_end", "reply_id": "r-7", "stop_reason": "end_turn",
     "usage": {"input_tokens": 12, "output_tokens": 25}}

``reply_end`` is the only terminal frame of a reply. ``reply_id`` is chosen by
the server (``r-<n>``, rising per process); there are no client-side request
ids, so a reply is tied to its question by the connection and by its text: the
reply begins ``You said: <the prompt text>.`` followed by filler words.

Error frames (not terminal for anything else, the connection stays open)::

    {"type": "error", "code": "busy", "message": "a reply is already streaming"}
    {"type": "error", "code": "bad_request", "message": "..."}

``busy`` answers a ``user_message`` sent while a reply streams on the same
connection (that message is discarded). ``bad_request`` answers non-JSON,
non-object frames, unknown types, or a missing/empty ``text``.

Health
------
``GET http://127.0.0.1:PORT/healthz`` -> 200, JSON::

    {"ok": true, "version": "2.3.1", "uptime_s": 12.3, "live_threads": 7,
     "open_connections": 1, "replies_served": 40}

``live_threads`` is ``threading.active_count()`` (with the fault it rises by
one per reply served).
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
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

VERSION = "2.3.1"
WS_PATH = "/ws/chat"
HEALTH_PATH = "/healthz"

log = logging.getLogger("executor_leak")

_FILLER_TEXT = (
    "certainly here is a short answer that covers the main points of your question "
    "with some extra detail about context caveats and next steps to consider"
)
_FILLER = _FILLER_TEXT.split()


class GeminiClient:
    """A fake blocking model SDK call, wrapped for asyncio."""

    def __init__(self, patched: bool, latency: float) -> None:
        self.patched = patched
        self.latency = latency
        # Bug: executors are only kept "so we can shut them down on exit".
        self._executors: list[ThreadPoolExecutor] = []
        self._shared: ThreadPoolExecutor | None = None
        if patched:
            self._shared = ThreadPoolExecutor(max_workers=4, thread_name_prefix="gemini-call")

    def _generate_blocking(self, prompt: str, seed: int) -> list[str]:
        time.sleep(self.latency)  # network round trip of the SDK
        rng = random.Random(seed)
        words = prompt.split()
        tokens = ["You", " said:"] + [" " + w for w in words] + ["."]
        tokens += [" " + rng.choice(_FILLER) for _ in range(rng.randint(8, 20))]
        return tokens

    async def generate(self, prompt: str) -> list[str]:
        loop = asyncio.get_running_loop()
        if self._shared is not None:
            executor = self._shared
        else:
            executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gemini-call")
            self._executors.append(executor)
        return await loop.run_in_executor(
            executor, self._generate_blocking, prompt, random.getrandbits(32)
        )

    def close(self) -> None:
        for ex in self._executors:
            ex.shutdown(wait=False)
        self._executors.clear()
        if self._shared is not None:
            self._shared.shutdown(wait=False)


class ChatServer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.model = GeminiClient(args.patched, args.model_latency)
        self.started = time.monotonic()
        self.reply_ids = itertools.count(1)
        self.open_connections = 0
        self.replies_served = 0

    # -- HTTP ---------------------------------------------------------------

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path == WS_PATH:
            return None
        if path == HEALTH_PATH:
            body = {
                "ok": True,
                "version": VERSION,
                "uptime_s": round(time.monotonic() - self.started, 1),
                "live_threads": threading.active_count(),
                "open_connections": self.open_connections,
                "replies_served": self.replies_served,
            }
            response = connection.respond(200, json.dumps(body) + "\n")
            del response.headers["Content-Type"]
            response.headers["Content-Type"] = "application/json"
            return response
        return connection.respond(404, "not found\n")

    # -- WebSocket ------------------------------------------------------------

    async def handler(self, ws: ServerConnection) -> None:
        self.open_connections += 1
        conversation_id = "c-" + uuid.uuid4().hex[:8]
        current: asyncio.Task[None] | None = None
        try:
            await ws.send(
                json.dumps(
                    {
                        "type": "hello",
                        "conversation_id": conversation_id,
                        "model": "gemini-fake",
                        "version": VERSION,
                    }
                )
            )
            async for raw in ws:
                try:
                    msg = json.loads(raw)
                except (TypeError, ValueError):
                    await self._error(ws, "bad_request", "frame is not JSON")
                    continue
                if not isinstance(msg, dict):
                    await self._error(ws, "bad_request", "frame is not a JSON object")
                    continue
                kind = msg.get("type")
                if kind == "ping":
                    await ws.send(json.dumps({"type": "pong", "ts": time.time()}))
                elif kind == "user_message":
                    text = msg.get("text")
                    if not isinstance(text, str) or not text.strip():
                        await self._error(ws, "bad_request", "user_message needs a text")
                    elif current is not None and not current.done():
                        await self._error(ws, "busy", "a reply is already streaming")
                    else:
                        current = asyncio.create_task(self._reply(ws, text))
                else:
                    await self._error(ws, "bad_request", f"unknown type {kind!r}")
        except ConnectionClosed:
            pass
        finally:
            self.open_connections -= 1
            if current is not None and not current.done():
                current.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await current

    async def _error(self, ws: ServerConnection, code: str, message: str) -> None:
        await ws.send(json.dumps({"type": "error", "code": code, "message": message}))

    async def _reply(self, ws: ServerConnection, text: str) -> None:
        reply_id = f"r-{next(self.reply_ids)}"
        try:
            await ws.send(json.dumps({"type": "reply_start", "reply_id": reply_id}))
            tokens = await self.model.generate(text)
            for tok in tokens:
                await ws.send(json.dumps({"type": "text_delta", "reply_id": reply_id, "text": tok}))
                await asyncio.sleep(self.args.token_delay)
            await ws.send(
                json.dumps(
                    {
                        "type": "reply_end",
                        "reply_id": reply_id,
                        "stop_reason": "end_turn",
                        "usage": {"input_tokens": len(text.split()), "output_tokens": len(tokens)},
                    }
                )
            )
            self.replies_served += 1
        except ConnectionClosed:
            pass


async def main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[None] = loop.create_future()

    def _stop() -> None:
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _stop)
    app = ChatServer(args)
    try:
        async with serve(app.handler, "127.0.0.1", args.port, process_request=app.process_request):
            log.info(
                "listening on ws://127.0.0.1:%d%s patched=%s", args.port, WS_PATH, args.patched
            )
            await stop
    finally:
        app.model.close()
    log.info("stopped")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--patched", action="store_true")
    p.add_argument("--token-delay", type=float, default=0.006)
    p.add_argument("--model-latency", type=float, default=0.02)
    return p.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(main(parse_args()))
