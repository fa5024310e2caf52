"""Token-streaming server that says nothing until it is asked something.

A healthy server by default. Unlike most chat servers it sends NO frame when a
WebSocket opens: a client that waits for a greeting waits forever. Requests
may carry a ``request_id`` which is echoed in every frame of their reply, and
several requests may stream at once on one connection.

Optional fault (``--fault silent-stop``), after agent-zero's "exceptions of
background tasks swallowed, the chat silently stops": every Nth generate
request (``--fault-every N``, counted per process) dies part-way through its
stream. The generation runs as a fire-and-forget task whose exception nobody
retrieves, so after a few ``token`` frames nothing more is sent for that
request: no ``final``, no ``error``. The connection stays healthy and other
requests keep working.

Start
-----
``python silent_connect.py --port 8200 [--fault none|silent-stop] [--fault-every 5]``

  --port N          TCP port (always binds 127.0.0.1), required
  --fault F         ``none`` (default) or ``silent-stop``
  --fault-every N   with ``silent-stop``: requests N, 2N, ... die (default 5)
  --patched         the fixed build: the doomed requests still fail, but the
                    failure is reported as a terminal ``error`` frame
                    (code ``internal``) instead of being swallowed
  --token-delay S   seconds between token frames (default 0.005)

Runs until SIGTERM or SIGINT, then closes all WebSockets (code 1001) and exits 0.

WebSocket protocol
------------------
URL: ``ws://127.0.0.1:PORT/api/v1/stream`` (no auth). One JSON object per
text frame; every frame has an ``op`` field.

On connect: nothing.

Client to server:

* ``{"op": "generate", "input": "...", "request_id": "any string"}``
  (``request_id`` optional; when present it is echoed in every frame of the
  reply, when absent the reply's frames carry no ``request_id`` at all)
* ``{"op": "cancel", "request_id": "..."}`` stops that request ->
  ``{"op": "cancelled", "request_id": "..."}`` (its terminal frame)
* ``{"op": "ping", "request_id": "optional"}`` -> ``{"op": "pong", "request_id": ...}``

Server to client, for one request::

    {"op": "token", "request_id": "q1", "index": 0, "text": "You"}      (many)
    {"op": "final", "request_id": "q1", "text": "<full reply>",
     "finish_reason": "stop", "usage": {"prompt_tokens": 9, "completion_tokens": 23}}

``final`` is the normal terminal frame; ``cancelled`` and ``error`` are the
others. The reply text is ``You said: <input>.`` followed by filler words.
``index`` counts tokens from 0 within a reply. Error frames::

    {"op": "error", "request_id": "q1", "code": "bad_request", "message": "..."}

(``request_id`` present only if it was known; codes: ``bad_request`` for
non-JSON/non-object frames, unknown ``op``, empty ``input``, a duplicate
running ``request_id``; ``not_found`` for cancel of an unknown id;
``internal`` for a failed generation, only with ``--patched --fault silent-stop``.)

Health
------
``GET http://127.0.0.1:PORT/v1/health`` -> 200
``{"status": "healthy", "model": "fake-7b", "version": "0.11.2", "active_requests": 0}``
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
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

VERSION = "0.11.2"
WS_PATH = "/api/v1/stream"

log = logging.getLogger("silent_connect")

_FILLER_TEXT = (
    "in short yes although there are a few edge cases worth a look such as retries "
    "timeouts and what happens when the input is empty"
)
_FILLER = _FILLER_TEXT.split()


class ModelCrashed(RuntimeError):
    pass


class StreamServer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.counter = itertools.count(1)
        self.active = 0
        self._background: set[asyncio.Task[None]] = set()

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path == WS_PATH:
            return None
        if path == "/v1/health":
            body = {
                "status": "healthy",
                "model": "fake-7b",
                "version": VERSION,
                "active_requests": self.active,
            }
            response = connection.respond(200, json.dumps(body))
            del response.headers["Content-Type"]
            response.headers["Content-Type"] = "application/json"
            return response
        return connection.respond(404, "Not Found")

    @staticmethod
    def _frame(op: str, rid: str | None, **fields) -> str:
        frame: dict = {"op": op}
        if rid is not None:
            frame["request_id"] = rid
        frame.update(fields)
        return json.dumps(frame)

    async def handler(self, ws: ServerConnection) -> None:
        running: dict[str | None, asyncio.Task[None]] = {}
        anonymous = itertools.count()
        try:
            async for raw in ws:
                try:
                    msg = json.loads(raw)
                except (TypeError, ValueError):
                    msg = None
                if not isinstance(msg, dict):
                    await ws.send(
                        self._frame("error", None, code="bad_request", message="not a JSON object")
                    )
                    continue
                op = msg.get("op")
                rid = msg.get("request_id")
                rid = None if rid is None else str(rid)
                if op == "ping":
                    await ws.send(self._frame("pong", rid))
                elif op == "generate":
                    text = msg.get("input")
                    if not isinstance(text, str) or not text.strip():
                        await ws.send(
                            self._frame("error", rid, code="bad_request", message="empty input")
                        )
                    elif rid is not None and rid in running:
                        await ws.send(
                            self._frame(
                                "error", rid, code="bad_request", message="request_id is running"
                            )
                        )
                    else:
                        key = rid if rid is not None else f"\0anon{next(anonymous)}"
                        task = asyncio.create_task(self._generate(ws, rid, text))
                        running[key] = task
                        task.add_done_callback(lambda _t, k=key: running.pop(k, None))
                        # Fire and forget: nobody looks at the task's exception.
                        self._background.add(task)
                        task.add_done_callback(self._background.discard)
                elif op == "cancel":
                    task = running.get(rid) if rid is not None else None
                    if task is None:
                        await ws.send(
                            self._frame("error", rid, code="not_found", message="no such request")
                        )
                    else:
                        task.cancel()
                else:
                    await ws.send(
                        self._frame("error", rid, code="bad_request", message=f"unknown op {op!r}")
                    )
        except ConnectionClosed:
            pass
        finally:
            for task in list(running.values()):
                task.cancel()
            for task in list(running.values()):
                with contextlib.suppress(BaseException):
                    await task

    async def _generate(self, ws: ServerConnection, rid: str | None, text: str) -> None:
        n = next(self.counter)
        doomed = (
            self.args.fault == "silent-stop"
            and self.args.fault_every > 0
            and n % self.args.fault_every == 0
        )
        rng = random.Random()
        tokens = ["You", " said:"] + [" " + w for w in text.split()] + ["."]
        tokens += [" " + rng.choice(_FILLER) for _ in range(rng.randint(8, 20))]
        self.active += 1
        try:
            for i, tok in enumerate(tokens):
                if doomed and i == min(3, len(tokens) - 1):
                    raise ModelCrashed(f"upstream closed the stream (request #{n})")
                await asyncio.sleep(self.args.token_delay)
                await ws.send(self._frame("token", rid, index=i, text=tok))
            await ws.send(
                self._frame(
                    "final",
                    rid,
                    text="".join(tokens),
                    finish_reason="stop",
                    usage={"prompt_tokens": len(text.split()), "completion_tokens": len(tokens)},
                )
            )
        except asyncio.CancelledError:
            with contextlib.suppress(ConnectionClosed):
                await ws.send(self._frame("cancelled", rid))
            raise
        except ModelCrashed as exc:
            if not self.args.patched:
                raise  # nobody awaits this task: the exception vanishes
            log.warning("request %d failed: %s", n, exc)
            with contextlib.suppress(ConnectionClosed):
                await ws.send(self._frame("error", rid, code="internal", message=str(exc)))
        except ConnectionClosed:
            pass
        finally:
            self.active -= 1


async def main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[None] = loop.create_future()

    def _stop() -> None:
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _stop)

    # The swallowed exceptions are truly swallowed: not even asyncio's
    # "Task exception was never retrieved" reaches the log.
    def _exception_handler(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        if not isinstance(context.get("exception"), ModelCrashed):
            loop.default_exception_handler(context)

    loop.set_exception_handler(_exception_handler)
    app = StreamServer(args)
    async with serve(app.handler, "127.0.0.1", args.port, process_request=app.process_request):
        log.info("listening on ws://127.0.0.1:%d%s fault=%s", args.port, WS_PATH, args.fault)
        await stop
    log.info("stopped")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--fault", choices=["none", "silent-stop"], default="none")
    p.add_argument("--fault-every", type=int, default=5)
    p.add_argument("--patched", action="store_true")
    p.add_argument("--token-delay", type=float, default=0.005)
    return p.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)
    asyncio.run(main(parse_args()))
