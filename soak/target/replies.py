"""Replies of the built-in target, shared by every protocol it speaks, and their faults.

`TargetState` holds the process-wide counters and fault debris; `stream_reply` streams one
reply's words with whichever faults hit that reply number (leaked thread, loop block, stall,
orphaned ticker, unbounded history).
"""

import asyncio
import collections
import concurrent.futures
import ctypes
import json
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import soak
from soak.target.config import TargetConfig

HEARTBEAT_INTERVAL_S = 0.1
LOOP_LAG_WINDOW_S = 10.0
PR_SET_NAME = 15  # prctl option that sets the calling thread's name (linux/prctl.h)
FILLER = ["lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit"]


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


@dataclass
class ChatMemory:
    """What the target remembers of one chat (a WebSocket or a keep-alive HTTP connection)."""

    last_prompt: str | None = None


class TargetState:
    """Process-wide state of the target: counters, fault debris and loop-lag heartbeat."""

    def __init__(self, config: TargetConfig) -> None:
        self.config = config
        self.started = time.monotonic()
        self.stopping = threading.Event()
        self.connections = 0
        self.active_chats = 0
        self.replies = 0
        self.prompts = 0
        self.stale_replies = 0
        self.history: list[bytes] | collections.deque[bytes] = (
            collections.deque(maxlen=config.history_limit) if config.history_limit else []
        )
        self.history_bytes = 0
        self.leaked_executors: list[concurrent.futures.ThreadPoolExecutor] = []
        self.orphans: set[asyncio.Task[None]] = set()
        self.loop_lags: collections.deque[tuple[float, float]] = collections.deque(maxlen=256)

    def reply_words(self, prompt: str, chat: ChatMemory) -> list[str]:
        """The words of the reply to `prompt` in `chat`: usually its own; with the stale-reply
        fault, every Nth time those of the chat's previous prompt (it answers a turn late)."""
        self.prompts += 1
        previous, chat.last_prompt = chat.last_prompt, prompt
        if previous is not None and _every(self.config.stale_reply_every, self.prompts):
            self.stale_replies += 1
            prompt = previous
        return reply_words(prompt, self.config.tokens)

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
                "stale_replies": self.stale_replies,
                "leaked_executors": len(self.leaked_executors),
            },
        }


def reply_words(content: str, tokens: int) -> list[str]:
    """ "You said: <prompt words>" padded with filler words up to `tokens` words."""
    words = ["You", "said:", *content.split()]
    filler = (FILLER[i % len(FILLER)] for i in range(max(0, tokens - len(words))))
    return [*words, *filler]


def _padded(record: bytes, size: int) -> bytes:
    """`record` repeated and cut to exactly `size` bytes (real bytes, so RSS really grows)."""
    return (record * (size // len(record) + 1))[:size]


async def _leak_thread(state: TargetState) -> None:
    """Run a little work on a per-call executor that is never shut down (kept referenced)."""
    executor = concurrent.futures.ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="reply-exec", initializer=name_native_thread
    )
    state.leaked_executors.append(executor)
    await asyncio.get_running_loop().run_in_executor(executor, sum, range(1000))


async def stream_reply(
    state: TargetState,
    words: list[str],
    send_token: Callable[[str], Awaitable[None]],
    context: dict[str, Any],
) -> None:
    """Stream `words` through `send_token` ("WORD "), with whichever faults hit this reply.

    Shared by every protocol the target speaks. `context` (ids, prompt) goes into the global
    history record. A stall raises `SimulatedFault` halfway through the words; the caller
    swallows it, as the modelled bug does.
    """
    config = state.config
    state.replies += 1
    n = state.replies
    record = json.dumps({**context, "reply": words}).encode()
    state.remember(_padded(record, config.history_bytes_per_reply))
    buffer = {**context, "pending": words}
    ticker = asyncio.create_task(_ticker(buffer, config.ticker_interval))
    stall_at = len(words) // 2 if _every(config.stall_every, n) else -1
    state.active_chats += 1
    try:
        if _every(config.leak_thread_every, n):
            await _leak_thread(state)
        if _every(config.block_loop_every, n):
            _block_event_loop(config.block_loop_seconds, state.stopping)
        for i, word in enumerate(words):
            if i == stall_at:
                raise SimulatedFault(f"reply {n} died after {i} tokens")
            if i:
                await asyncio.sleep(config.token_interval)
            await send_token(word + " ")
    finally:
        state.active_chats -= 1
        orphan = _every(config.orphan_ticker_every, n)
        if orphan and len(state.orphans) < config.max_orphans:
            state.orphans.add(ticker)
        else:
            ticker.cancel()


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
