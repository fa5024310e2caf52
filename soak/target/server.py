"""The built-in target: an asyncio WebSocket chat server with switchable slow failures.

It speaks nerve-style plain JSON events (one JSON object per text frame) on `/ws` and serves
`GET /health` with diagnostics on the same port. Each fault of real agent servers sits behind a
rate (0 = off); `patched=True` turns them all off.

Protocol
--------
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
import collections
import concurrent.futures
import contextlib
import ctypes
import dataclasses
import http
import json
import os
import signal
import tempfile
import threading
import time
import typing
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

import soak
from soak.errors import UsageError

HEARTBEAT_INTERVAL_S = 0.1
LOOP_LAG_WINDOW_S = 10.0
PR_SET_NAME = 15  # prctl option that sets the calling thread's name (linux/prctl.h)
FILLER = ["lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit"]

# Fault fields left at None take the value of the build: faulty (the default) or patched.
FAULTY_DEFAULTS: dict[str, int] = {
    "leak_thread_every": 10,
    "stall_every": 40,
    "block_loop_every": 150,
    "orphan_ticker_every": 1,
    "history_limit": 0,
}
PATCHED_DEFAULTS: dict[str, int] = {
    "leak_thread_every": 0,
    "stall_every": 0,
    "block_loop_every": 0,
    "orphan_ticker_every": 0,
    "history_limit": 100,
}


def _fault(name: str, help_text: str) -> Any:
    """A fault field: None until `TargetConfig` resolves it from the build's defaults."""
    builds = f" Default {FAULTY_DEFAULTS[name]}, patched {PATCHED_DEFAULTS[name]}."
    return field(default=None, metadata={"help": help_text + builds})


@dataclass
class TargetConfig:
    """Everything the target needs. Fault fields left at None take the build's default.

    Precedence: `patched` picks the defaults (all faults off, history bounded), and any fault
    field given explicitly wins over it, so `patched=True, stall_every=5` is the patched build
    with stalls only. `build` is "patched" only if no fault is active after that.
    """

    host: str = field(
        default="127.0.0.1", metadata={"help": "Interface to bind (loopback by default)."}
    )
    port: int = field(default=8765, metadata={"help": "TCP port; 0 picks a free one."})
    tokens: int = field(
        default=20, metadata={"help": "Words per reply (a longer prompt gives a longer reply)."}
    )
    token_interval: float = field(
        default=0.02, metadata={"help": "Seconds between two token frames."}
    )
    patched: bool = field(
        default=False,
        metadata={
            "help": "Patched build: every fault off, history bounded (explicit fault "
            "options still apply)."
        },
    )
    leak_thread_every: int | None = _fault(
        "leak_thread_every",
        "Every Nth reply runs work on a new ThreadPoolExecutor that is never shut down, "
        "leaking one thread (0 = off).",
    )
    stall_every: int | None = _fault(
        "stall_every",
        "Every Nth reply dies silently halfway through its tokens and never sends done (0 = off).",
    )
    block_loop_every: int | None = _fault(
        "block_loop_every",
        "Every Nth reply runs pure-Python CPU work on the event loop for block_loop_seconds "
        "(0 = off).",
    )
    block_loop_seconds: float = field(
        default=1.5, metadata={"help": "Seconds each event-loop block lasts."}
    )
    orphan_ticker_every: int | None = _fault(
        "orphan_ticker_every",
        "Every Nth stream leaves its coalescing ticker task running after the stream ends, "
        "so idle CPU climbs (0 = off).",
    )
    ticker_interval: float = field(
        default=0.05, metadata={"help": "Seconds between two wake-ups of a stream's ticker."}
    )
    max_orphans: int = field(
        default=3000, metadata={"help": "Cap on orphaned tickers (bounds idle CPU)."}
    )
    history_bytes_per_reply: int = field(
        default=20000, metadata={"help": "Bytes each reply appends to the global history."}
    )
    history_limit: int | None = _fault(
        "history_limit", "Replies kept in the global history (0 = unbounded: the memory leak)."
    )
    ready_file: str | None = field(
        default=None,
        metadata={
            "help": "Once listening, write JSON {pid, host, port, ws_url, health_url, "
            "build} to this file (atomically)."
        },
    )

    def __post_init__(self) -> None:
        defaults = PATCHED_DEFAULTS if self.patched else FAULTY_DEFAULTS
        for name, value in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if type(value) in (int, float) and value < 0:
                flag = "--" + f.name.replace("_", "-")
                raise UsageError(f"{flag} must be 0 or more, got {value}.")

    @property
    def build(self) -> str:
        """The build label: "patched" if no fault is active, else "faults"."""
        rates = (
            self.leak_thread_every,
            self.stall_every,
            self.block_loop_every,
            self.orphan_ticker_every,
        )
        if any(rates) or self.history_limit == 0:
            return "faults"
        return "patched"


@dataclass(frozen=True)
class TargetOption:
    """One command-line option of the target, generated from a `TargetConfig` field."""

    name: str
    flag: str
    type: type
    default: Any
    help: str


def _options() -> tuple[TargetOption, ...]:
    hints = typing.get_type_hints(TargetConfig)
    options = []
    for f in dataclasses.fields(TargetConfig):
        kinds = [t for t in typing.get_args(hints[f.name]) if t is not type(None)]
        kind = kinds[0] if kinds else hints[f.name]
        flag = "--" + f.name.replace("_", "-")
        options.append(TargetOption(f.name, flag, kind, f.default, f.metadata["help"]))
    return tuple(options)


OPTIONS = _options()
"""Every `TargetConfig` field as an option (`default` None = the build's default)."""


class SimulatedFault(Exception):
    """Raised inside a reply to make it stall; swallowed on purpose (the bug being modelled)."""


def _every(rate: int | None, n: int) -> bool:
    """True when the fault with this rate (every Nth, 0 = off) hits reply number `n` (1-based)."""
    return bool(rate) and n % rate == 0


def _block_event_loop(seconds: float, stop: threading.Event) -> None:
    """GIL-heavy pure-Python work for `seconds` s, without ever yielding to the event loop."""
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline and not stop.is_set():
        sum(i * i for i in range(2000))


async def _ticker(buffer: dict[str, Any], interval: float) -> None:
    """A stream's coalescing ticker: every `interval` s, serialise the stream's pending buffer."""
    while True:
        await asyncio.sleep(interval)
        json.dumps(buffer)


class TargetState:
    """Process-wide state of the target: counters, fault debris and loop-lag heartbeat."""

    def __init__(self, config: TargetConfig) -> None:
        self.config = config
        self.started = time.monotonic()
        self.stopping = threading.Event()
        self.connections = 0
        self.active_chats = 0
        self.replies = 0
        self.history: list[bytes] | collections.deque[bytes] = (
            collections.deque(maxlen=config.history_limit) if config.history_limit else []
        )
        self.history_bytes = 0
        self.leaked_executors: list[concurrent.futures.ThreadPoolExecutor] = []
        self.orphans: set[asyncio.Task[None]] = set()
        self.loop_lags: collections.deque[tuple[float, float]] = collections.deque(maxlen=256)

    def remember(self, record: bytes) -> None:
        """Append one reply's record to the global history (bounded only if patched)."""
        history = self.history
        if isinstance(history, collections.deque) and len(history) == history.maxlen:
            self.history_bytes -= len(history[0])
        history.append(record)
        self.history_bytes += len(record)

    async def heartbeat(self) -> None:
        """Sleep `HEARTBEAT_INTERVAL_S` s in a loop and record how late each wake-up was."""
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(HEARTBEAT_INTERVAL_S)
            now = loop.time()
            self.loop_lags.append((now, max(0.0, now - before - HEARTBEAT_INTERVAL_S)))

    def health(self) -> dict[str, Any]:
        """The `/health` body: status, version, build, uptime and diagnostics."""
        now = asyncio.get_running_loop().time()
        recent = [lag for at, lag in self.loop_lags if now - at <= LOOP_LAG_WINDOW_S]
        latest = self.loop_lags[-1][1] if self.loop_lags else 0.0
        return {
            "status": "ok",
            "version": soak.__version__,
            "build": self.config.build,
            "uptime_s": round(time.monotonic() - self.started, 3),
            "diagnostics": {
                "thread_count": threading.active_count(),
                "asyncio_task_count": len(asyncio.all_tasks()),
                "active_chats": self.active_chats,
                "connections": self.connections,
                "replies": self.replies,
                "history_size": len(self.history),
                "history_bytes": self.history_bytes,
                "loop_lag_ms": round(latest * 1000, 3),
                "loop_lag_max_ms": round(max(recent, default=0.0) * 1000, 3),
                "orphaned_tickers": len(self.orphans),
                "leaked_executors": len(self.leaked_executors),
            },
        }


def _reply_words(content: str, tokens: int) -> list[str]:
    """ "You said: <prompt words>" padded with filler words up to `tokens` words."""
    words = ["You", "said:", *content.split()]
    filler = (FILLER[i % len(FILLER)] for i in range(max(0, tokens - len(words))))
    return [*words, *filler]


def _padded(record: bytes, size: int) -> bytes:
    """`record` repeated and cut to exactly `size` bytes (real bytes, so RSS really grows)."""
    return (record * (size // len(record) + 1))[:size]


class Chat:
    """One WebSocket connection: its session id and the reply currently streaming, if any."""

    def __init__(self, state: TargetState, ws: ServerConnection) -> None:
        self.state = state
        self.ws = ws
        self.session_id = uuid.uuid4().hex
        self.turn: asyncio.Task[None] | None = None

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
        """Stream one reply, with whichever faults hit this reply number."""
        state, config = self.state, self.state.config
        state.replies += 1
        n = state.replies
        words = _reply_words(content, config.tokens)
        frame = {"type": "token", "session_id": self.session_id, "request_id": request_id}
        record = json.dumps({**frame, "prompt": content, "reply": words}).encode()
        state.remember(_padded(record, config.history_bytes_per_reply))
        buffer = {"session_id": self.session_id, "request_id": request_id, "pending": words}
        ticker = asyncio.create_task(_ticker(buffer, config.ticker_interval))
        stall_at = len(words) // 2 if _every(config.stall_every, n) else -1
        state.active_chats += 1
        try:
            if _every(config.leak_thread_every, n):
                await self.leak_thread()
            if _every(config.block_loop_every, n):
                _block_event_loop(config.block_loop_seconds, state.stopping)
            for i, word in enumerate(words):
                if i == stall_at:
                    raise SimulatedFault(f"reply {n} died after {i} tokens")
                if i:
                    await asyncio.sleep(config.token_interval)
                await self.send({**frame, "content": word + " "})
            done = {"type": "done", "session_id": self.session_id, "request_id": request_id}
            await self.send({**done, "usage": {"tokens": len(words)}})
        except ConnectionClosed:
            pass
        finally:
            state.active_chats -= 1
            orphan = _every(config.orphan_ticker_every, n)
            if orphan and len(state.orphans) < config.max_orphans:
                state.orphans.add(ticker)
            else:
                ticker.cancel()

    async def leak_thread(self) -> None:
        """Run a little work on a per-call executor that is never shut down (kept referenced)."""
        executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="reply-exec", initializer=name_native_thread
        )
        self.state.leaked_executors.append(executor)
        await asyncio.get_running_loop().run_in_executor(executor, sum, range(1000))


def name_native_thread() -> None:
    """Give the OS thread the Python thread's name (first 15 bytes, the kernel's limit).

    CPython before 3.14 leaves every thread named like the process, so a
    collector reading /proc/PID/task/*/comm could not tell thread families apart.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        name = threading.current_thread().name.encode()[:15]
        libc.prctl(PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: names are cosmetic


def _json_response(connection: ServerConnection, status: int, body: dict[str, Any]) -> Response:
    """An HTTP response with a JSON body and content-type application/json."""
    response = connection.respond(status, json.dumps(body))
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "application/json"
    return response


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
        path = urllib.parse.urlsplit(request.path).path
        if path == "/ws":
            return None
        if path == "/health":
            return _json_response(connection, http.HTTPStatus.OK, state.health())
        return _json_response(connection, http.HTTPStatus.NOT_FOUND, {"error": "not found"})

    heartbeat = asyncio.create_task(state.heartbeat())
    try:
        with _stop_on_signals(stop, state):
            async with ws_serve(
                handler,
                config.host,
                config.port,
                process_request=process_request,
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
                    "health_url": f"http://{base}/health",
                    "build": config.build,
                }
                print(
                    f"soak target ({config.build}) listening on {info['ws_url']}  "
                    f"health {info['health_url']}",
                    flush=True,
                )
                if config.ready_file:
                    _write_ready_file(config.ready_file, info)
                await stop.wait()
                state.stopping.set()
    finally:
        heartbeat.cancel()
        for task in state.orphans:
            task.cancel()
        loop.set_exception_handler(previous_handler)


def run(config: TargetConfig) -> None:
    """Run the target in the foreground until SIGINT or SIGTERM (blocking)."""
    asyncio.run(serve(config))
