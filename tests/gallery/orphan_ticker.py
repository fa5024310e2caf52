"""Agent server (raw ASGI on uvicorn) whose finished streams keep ticking.

Reproduces (after agentex's streaming bugs): every streamed reply gets a
coalescing ticker task that wakes every 50 ms, polls the stream's state and
publishes whatever tokens piled up since the last tick as one ``delta`` frame.
The ticker is stopped only on the ``done`` path. A stream that ends with a
``full`` message (the default here) leaves its ticker running forever: it keeps
waking up 20 times a second and polling a stream that will never change. Each
finished stream adds an orphan, so idle CPU (with no traffic at all) climbs
with the number of streams served, and so do the event loop's pending tasks.
Health stays green: ``active_streams`` counts open streams, not tickers.

Two further agentex bugs can be switched on:

* ``--late-delta``: the model's trailing token lands in the stream buffer
  about 80 ms after the terminal frame, and the still-running (orphaned)
  ticker publishes it: one ``delta`` frame arrives after ``full``. (Needs
  ``--end-with full``; with ``done`` the ticker is already gone.)
* ``--dup-done``: after the terminal frame the server publishes one extra
  ``done`` (with ``--end-with done`` that is a duplicate ``done``).

``--patched`` cancels the ticker on every terminal path and disables
``--late-delta`` and ``--dup-done``.

Start
-----
``python orphan_ticker.py --port 5003 [--patched] [--end-with full|done]``
``[--late-delta] [--dup-done]``

  --port N          TCP port (always binds 127.0.0.1), required
  --patched         fixed build (see above)
  --end-with E      terminal frame of a stream: ``full`` (default) or ``done``
  --late-delta      publish a delta after the terminal frame (see above)
  --dup-done        publish an extra ``done`` after the terminal frame
  --token-delay S   seconds between model tokens (default 0.012; tokens are
                    coalesced into one ``delta`` per 50 ms tick)

Served by uvicorn (``ws="websockets-sansio"``). Runs until SIGTERM or SIGINT;
open WebSockets are then closed by uvicorn with code 1012, and it exits 0.

WebSocket protocol (JSON-RPC 2.0 framing, one object per text frame)
--------------------------------------------------------------------
URL: ``ws://127.0.0.1:PORT/agents/fake-agent/ws`` (other agent names: the
handshake is refused, HTTP 403). No auth. Nothing is sent on connect. Each
connection is one task (``task_id`` ``task-<hex>``, shown in ``start``).

Requests:

* ``{"jsonrpc": "2.0", "id": 1, "method": "message/send", "params":
  {"content": {"type": "text", "author": "user", "content": "..."},
  "stream": true}}`` - ``content`` may also be a plain string. Several
  requests may stream at once; every frame of a stream carries its ``id``.
* ``stream: false`` -> one response ``{"jsonrpc": "2.0", "id": 1, "result":
  {"task_id": "task-..", "messages": [{"type": "text", "author": "agent",
  "content": "<full reply>"}]}}``.
* ``{"jsonrpc": "2.0", "id": 2, "method": "ping"}`` -> ``{"jsonrpc": "2.0",
  "id": 2, "result": {"pong": true}}``.

Stream frames (``index`` = the message's index within the task, 0, 1, 2 ...)::

    {"jsonrpc": "2.0", "id": 1, "result": {"type": "start", "index": 0,
        "task_id": "task-3f2a", "content": {"type": "text", "author": "agent", "content": ""}}}
    {"jsonrpc": "2.0", "id": 1, "result": {"type": "delta", "index": 0,
        "delta": {"type": "text", "text_delta": "You said:"}}}                (many)
    {"jsonrpc": "2.0", "id": 1, "result": {"type": "full", "index": 0,
        "content": {"type": "text", "author": "agent", "content": "<full reply>"}}}

With ``--end-with done`` the last frame is instead
``{"jsonrpc": "2.0", "id": 1, "result": {"type": "done", "index": 0}}`` and the
client assembles the reply from the deltas. ``full`` / ``done`` is the
terminal frame. The reply text is ``You said: <prompt>.`` followed by filler.

Errors: ``{"jsonrpc": "2.0", "id": <id or null>, "error": {"code": C, "message": M}}``
with -32700 (not JSON), -32600 (no method), -32601 (unknown method),
-32602 (missing content).

Health
------
``GET http://127.0.0.1:PORT/healthz`` -> 200
``{"status": "healthy", "version": "0.6.0", "active_streams": 0, "streams_total": 12}``
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
import uuid

import uvicorn

VERSION = "0.6.0"
AGENT_PATH = "/agents/fake-agent/ws"
TICK_S = 0.05

log = logging.getLogger("orphan_ticker")

_FILLER_TEXT = (
    "here is what I found the task is done and the summary below lists each step "
    "together with the files that changed and why"
)
_FILLER = _FILLER_TEXT.split()


class Channel:
    """One WebSocket connection: serialises ASGI sends."""

    def __init__(self, send) -> None:
        self._send = send
        self._lock = asyncio.Lock()
        self.open = True

    async def publish(self, obj: dict) -> None:
        if not self.open:
            return
        async with self._lock:
            try:
                await self._send({"type": "websocket.send", "text": json.dumps(obj)})
            except Exception:  # client went away mid-send
                self.open = False


class MessageStream:
    def __init__(self, app: AgentApp, chan: Channel, task_id: str, rid, index: int) -> None:
        self.app = app
        self.task_id = task_id
        self.chan = chan
        self.rid = rid
        self.index = index
        self.buffer: list[str] = []
        self.text = ""
        self.state = "open"
        self._last_snapshot = ""
        self.ticker = asyncio.create_task(self._tick())
        app.tickers.add(self.ticker)
        self.ticker.add_done_callback(app.tickers.discard)

    def _result(self, result: dict) -> dict:
        return {"jsonrpc": "2.0", "id": self.rid, "result": result}

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            # Poll: has anything about the stream changed since the last tick?
            snapshot = json.dumps(
                {
                    "index": self.index,
                    "state": self.state,
                    "text": self.text,
                    "pending": self.buffer,
                }
            )
            if snapshot == self._last_snapshot:
                continue
            self._last_snapshot = snapshot
            await self.flush()

    async def flush(self) -> None:
        if not self.buffer:
            return
        chunk = "".join(self.buffer)
        self.buffer.clear()
        self.text += chunk
        await self.chan.publish(
            self._result(
                {
                    "type": "delta",
                    "index": self.index,
                    "delta": {"type": "text", "text_delta": chunk},
                }
            )
        )

    def stop_ticker(self) -> None:
        self.ticker.cancel()

    async def run(self, prompt: str) -> None:
        args = self.app.args
        rng = random.Random()
        tokens = ["You", " said:"] + [" " + w for w in prompt.split()] + ["."]
        tokens += [" " + rng.choice(_FILLER) for _ in range(rng.randint(10, 22))]
        late = args.late_delta and not args.patched and args.end_with == "full"
        trailing = tokens.pop() if late else None
        self.app.active += 1
        try:
            await self.chan.publish(
                self._result(
                    {
                        "type": "start",
                        "index": self.index,
                        "task_id": self.task_id,
                        "content": {"type": "text", "author": "agent", "content": ""},
                    }
                )
            )
            for tok in tokens:
                await asyncio.sleep(args.token_delay)
                self.buffer.append(tok)
            full = "".join(tokens) + (trailing or "")
            if args.end_with == "full":
                self.buffer.clear()  # the full message supersedes pending deltas
                self.text = full
                self.state = "full"
                await self.chan.publish(
                    self._result(
                        {
                            "type": "full",
                            "index": self.index,
                            "content": {"type": "text", "author": "agent", "content": full},
                        }
                    )
                )
                if args.patched:
                    self.stop_ticker()
                # Bug: only the done path below stops the ticker.
            else:
                await self.flush()
                self.state = "done"
                self.stop_ticker()
                await self.chan.publish(self._result({"type": "done", "index": self.index}))
            if args.dup_done and not args.patched:
                await self.chan.publish(self._result({"type": "done", "index": self.index}))
            if trailing is not None:
                await asyncio.sleep(0.08)
                self.buffer.append(trailing)  # the orphaned ticker will publish it
        finally:
            if args.patched:  # every path: a client that hangs up mid-stream too
                self.stop_ticker()
            self.app.active -= 1
            self.app.streams_total += 1


class AgentApp:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tickers: set[asyncio.Task[None]] = set()
        self.active = 0
        self.streams_total = 0

    async def __call__(self, scope, receive, send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                log.info("agent server %s up, patched=%s", VERSION, self.args.patched)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for t in list(self.tickers):
                    t.cancel()
                for t in list(self.tickers):
                    with contextlib.suppress(asyncio.CancelledError):
                        await t
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope, receive, send) -> None:
        if scope["path"] == "/healthz" and scope["method"] in ("GET", "HEAD"):
            status = 200
            body = json.dumps(
                {
                    "status": "healthy",
                    "version": VERSION,
                    "active_streams": self.active,
                    "streams_total": self.streams_total,
                }
            ).encode()
            ctype = b"application/json"
        else:
            status, body, ctype = 404, b'{"detail": "Not Found"}', b"application/json"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _websocket(self, scope, receive, send) -> None:
        first = await receive()
        if first["type"] != "websocket.connect":
            return
        if scope["path"] != AGENT_PATH:
            await send({"type": "websocket.close", "code": 4404})
            return
        await send({"type": "websocket.accept"})
        chan = Channel(send)
        task_id = "task-" + uuid.uuid4().hex[:8]
        index = itertools.count()
        streams: set[asyncio.Task[None]] = set()
        try:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    break
                raw = message.get("text")
                if raw is None:
                    raw = (message.get("bytes") or b"").decode("utf-8", "replace")
                await self._dispatch(chan, task_id, index, streams, raw)
        finally:
            chan.open = False
            for t in list(streams):
                t.cancel()
            for t in list(streams):
                with contextlib.suppress(asyncio.CancelledError):
                    await t

    async def _dispatch(self, chan: Channel, task_id: str, index, streams: set, raw: str) -> None:
        try:
            msg = json.loads(raw)
        except ValueError:
            await chan.publish(
                {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error"}}
            )
            return
        if not isinstance(msg, dict) or not isinstance(msg.get("method"), str):
            rid = msg.get("id") if isinstance(msg, dict) else None
            await chan.publish(
                {
                    "jsonrpc": "2.0",
                    "id": rid,
                    "error": {"code": -32600, "message": "Invalid Request"},
                }
            )
            return
        rid = msg.get("id")
        method = msg["method"]
        params = msg.get("params") if isinstance(msg.get("params"), dict) else {}
        if method == "ping":
            await chan.publish({"jsonrpc": "2.0", "id": rid, "result": {"pong": True}})
            return
        if method != "message/send":
            await chan.publish(
                {
                    "jsonrpc": "2.0",
                    "id": rid,
                    "error": {"code": -32601, "message": "Method not found"},
                }
            )
            return
        content = params.get("content")
        if isinstance(content, dict):
            content = content.get("content")
        if not isinstance(content, str) or not content.strip():
            await chan.publish(
                {
                    "jsonrpc": "2.0",
                    "id": rid,
                    "error": {"code": -32602, "message": "content required"},
                }
            )
            return
        if params.get("stream", True) is False:
            rng = random.Random()
            words = [rng.choice(_FILLER) for _ in range(rng.randint(10, 22))]
            text = "You said: " + content + ". " + " ".join(words)
            next(index)
            await chan.publish(
                {
                    "jsonrpc": "2.0",
                    "id": rid,
                    "result": {
                        "task_id": task_id,
                        "messages": [{"type": "text", "author": "agent", "content": text}],
                    },
                }
            )
            return
        stream = MessageStream(self, chan, task_id, rid, next(index))
        task = asyncio.create_task(stream.run(content))
        streams.add(task)
        task.add_done_callback(streams.discard)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--patched", action="store_true")
    p.add_argument("--end-with", choices=["full", "done"], default="full")
    p.add_argument("--late-delta", action="store_true")
    p.add_argument("--dup-done", action="store_true")
    p.add_argument("--token-delay", type=float, default=0.012)
    return p.parse_args(argv)


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # uvicorn shuts down gracefully on SIGTERM/SIGINT and then re-raises the signal
    # against the previous handlers; make those no-ops so that the process exits 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _sig, _frame: None)
    uvicorn.run(
        AgentApp(args),
        host="127.0.0.1",
        port=args.port,
        ws="websockets-sansio",
        lifespan="on",
        log_level="warning",
        access_log=False,
    )
    log.info("stopped")


if __name__ == "__main__":
    main()
