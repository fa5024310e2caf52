"""Nerve-style chat server that sometimes answers the previous question.

Reproduces: "I ask, no answer; I ask again and it answers the previous
question". Every Nth message of a session (``--drop-every N``, counted per
session, so messages N, 2N, 3N, ...) is silently swallowed: the server sends
no frame at all for it, ever - the client just waits. The swallowed prompt is
parked on the session (as a send that arrived during a reconnect window would
be) and the *next* message on that session is answered with the parked
prompt's content; the text of that next message is lost. Messages after that
are answered normally until the next multiple of N. ``--patched``: every
message is answered with its own content.

Start
-----
``python stale_answer.py --port 8000 [--patched] [--drop-every 7] [--token TOKEN]``

  --port N          TCP port (always binds 127.0.0.1), required
  --patched         no drops, every prompt answered with its own content
  --drop-every N    swallow messages N, 2N, ... of each session (default 7; 0 = never)
  --token-delay S   seconds between token frames (default 0.005)
  --token TOKEN     require ``?token=TOKEN`` on the WebSocket URL (default: dev
                    mode, no auth)

Runs until SIGTERM or SIGINT, then closes all WebSockets (code 1001) and exits 0.

WebSocket protocol
------------------
URL: ``ws://127.0.0.1:PORT/ws`` (optionally ``?token=TOKEN``; a wrong token is
accepted at the HTTP level and then closed with code 4001 "invalid token").
``?session_id=ID`` re-attaches to an existing session (its turn count and any
parked prompt survive reconnects); an unknown id gets a fresh session. Without
it, every connection gets its own new session. One JSON object per text frame.

On connect the server sends::

    {"type": "session_switched", "session_id": "web-4f1c2a9e"}

Client to server:

* ``{"type": "message", "content": "...", "session_id": "web-4f1c2a9e"}``
  (``session_id`` optional; if present it must be the connection's session,
  else an ``error`` frame). Messages sent while a turn runs are queued and
  answered in order (turns of one session are serialised).
* ``{"type": "ping"}`` -> ``{"type": "pong"}``
* ``{"type": "stop"}`` stops the running turn -> ``{"type": "stopped", "session_id"}``
  (terminal for that turn; nothing is sent if no turn runs).

Server to client, for one answered turn (there are NO request ids)::

    {"type": "session_running", "session_id": "web-..", "is_running": true}
    {"type": "thinking", "session_id": "web-..", "content": "Reading the message."}
    {"type": "token", "session_id": "web-..", "content": "You"}        (many)
    {"type": "done", "session_id": "web-..", "usage": {"input_tokens": 9,
     "output_tokens": 24}, "num_turns": 3, "max_context_tokens": 200000}

Terminal frames of a turn: ``done``, ``stopped``, or
``{"type": "error", "session_id": "web-..", "error": "..."}``. Error frames
are also sent, outside any turn, for bad frames (not JSON, not an object,
unknown ``type``, empty ``content``, wrong ``session_id``). The answer text
is ``You said: <prompt text>.`` followed by filler words, so it names the
prompt it answers (with the fault: the *parked* prompt).

Health
------
``GET http://127.0.0.1:PORT/health`` -> 200 ``{"status": "ok", "version": "0.4.1"}``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import signal
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

VERSION = "0.4.1"
MAX_SESSIONS = 256

log = logging.getLogger("stale_answer")

_WORDS_TEXT = (
    "sure let me look into that for you the short version is that it depends on the "
    "details but here is what I would try first"
)
_WORDS = _WORDS_TEXT.split()


@dataclass
class Session:
    session_id: str
    received: int = 0
    num_turns: int = 0
    parked: str | None = None  # a prompt that "arrived during a reconnect"
    last_used: float = field(default_factory=time.monotonic)


class NerveLikeServer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sessions: OrderedDict[str, Session] = OrderedDict()

    # -- sessions -------------------------------------------------------------

    def _session_for(self, wanted: str | None) -> Session:
        if wanted and wanted in self.sessions:
            self.sessions.move_to_end(wanted)
            return self.sessions[wanted]
        sid = wanted or "web-" + uuid.uuid4().hex[:8]
        session = Session(sid)
        self.sessions[sid] = session
        while len(self.sessions) > MAX_SESSIONS:
            self.sessions.popitem(last=False)
        return session

    # -- HTTP -----------------------------------------------------------------

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path == "/ws":
            return None
        if path == "/health":
            response = connection.respond(200, json.dumps({"status": "ok", "version": VERSION}))
            del response.headers["Content-Type"]
            response.headers["Content-Type"] = "application/json"
            return response
        return connection.respond(404, "Not Found")

    # -- WebSocket --------------------------------------------------------------

    async def handler(self, ws: ServerConnection) -> None:
        query = parse_qs(urlsplit(ws.request.path).query)
        if self.args.token is not None and query.get("token", [""])[0] != self.args.token:
            await ws.close(4001, "invalid token")
            return
        session = self._session_for(query.get("session_id", [None])[0])
        queue: asyncio.Queue[str] = asyncio.Queue()
        running: dict[str, asyncio.Task[None]] = {}
        worker = asyncio.create_task(self._turns(ws, session, queue, running))
        try:
            await self._send(ws, {"type": "session_switched", "session_id": session.session_id})
            async for raw in ws:
                try:
                    msg = json.loads(raw)
                except (TypeError, ValueError):
                    await self._send(ws, {"type": "error", "error": "invalid JSON"})
                    continue
                if not isinstance(msg, dict):
                    await self._send(ws, {"type": "error", "error": "expected a JSON object"})
                    continue
                kind = msg.get("type")
                if kind == "ping":
                    await self._send(ws, {"type": "pong"})
                elif kind == "stop":
                    turn = running.get("turn")
                    if turn is not None and not turn.done():
                        running["stopped_by_user"] = turn
                        turn.cancel()
                elif kind == "message":
                    content = msg.get("content")
                    sid = msg.get("session_id")
                    if sid is not None and sid != session.session_id:
                        await self._send(ws, {"type": "error", "error": f"unknown session {sid}"})
                    elif not isinstance(content, str) or not content.strip():
                        await self._send(ws, {"type": "error", "error": "empty message"})
                    else:
                        queue.put_nowait(content)
                else:
                    await self._send(ws, {"type": "error", "error": f"unknown type {kind!r}"})
        except ConnectionClosed:
            pass
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    @staticmethod
    async def _send(ws: ServerConnection, frame: dict) -> None:
        await ws.send(json.dumps(frame))

    async def _turns(
        self,
        ws: ServerConnection,
        session: Session,
        queue: asyncio.Queue[str],
        running: dict[str, asyncio.Task[None]],
    ) -> None:
        """Serialised turns of one session."""
        while True:
            content = await queue.get()
            session.received += 1
            session.last_used = time.monotonic()
            n = self.args.drop_every
            if not self.args.patched:
                if n > 0 and session.received % n == 0:
                    # The send "lands" while the client is reconnecting: it is parked,
                    # nothing is sent back.
                    log.info("session %s: message %d parked", session.session_id, session.received)
                    session.parked = content
                    continue
                if session.parked is not None:
                    content, session.parked = session.parked, None
            turn = asyncio.create_task(self._answer(ws, session, content))
            running["turn"] = turn
            try:
                await turn
            except asyncio.CancelledError:
                if running.get("stopped_by_user") is not turn:
                    raise  # the connection is going away
                with contextlib.suppress(ConnectionClosed):
                    await self._send(ws, {"type": "stopped", "session_id": session.session_id})
            except ConnectionClosed:
                return
            finally:
                running.pop("turn", None)
                running.pop("stopped_by_user", None)

    async def _answer(self, ws: ServerConnection, session: Session, content: str) -> None:
        sid = session.session_id
        rng = random.Random()
        await self._send(ws, {"type": "session_running", "session_id": sid, "is_running": True})
        await self._send(
            ws, {"type": "thinking", "session_id": sid, "content": "Reading the message."}
        )
        tokens = ["You", " said:"] + [" " + w for w in content.split()] + ["."]
        tokens += [" " + rng.choice(_WORDS) for _ in range(rng.randint(8, 18))]
        for tok in tokens:
            await asyncio.sleep(self.args.token_delay)
            await self._send(ws, {"type": "token", "session_id": sid, "content": tok})
        session.num_turns += 1
        await self._send(
            ws,
            {
                "type": "done",
                "session_id": sid,
                "usage": {"input_tokens": len(content.split()), "output_tokens": len(tokens)},
                "num_turns": session.num_turns,
                "max_context_tokens": 200000,
            },
        )


async def main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[None] = loop.create_future()

    def _stop() -> None:
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _stop)
    app = NerveLikeServer(args)
    async with serve(app.handler, "127.0.0.1", args.port, process_request=app.process_request):
        log.info(
            "listening on ws://127.0.0.1:%d/ws patched=%s drop_every=%d",
            args.port,
            args.patched,
            args.drop_every,
        )
        await stop
    log.info("stopped")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--patched", action="store_true")
    p.add_argument("--drop-every", type=int, default=7)
    p.add_argument("--token-delay", type=float, default=0.005)
    p.add_argument("--token", default=None)
    return p.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)
    asyncio.run(main(parse_args()))
