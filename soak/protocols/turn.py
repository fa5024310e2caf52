"""Drive one chat turn over any conversation and classify its outcome.

Outcomes: ok, stall (tokens came, no terminal frame in time), first_token_timeout
(nothing came in time), error (the server said so), disconnect (the connection
closed mid-turn). Times are seconds from the moment the prompt was sent.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from soak.protocols.base import DONE, ERROR, TOKEN, ConnectionLost, Conversation

OK = "ok"
STALL = "stall"
FIRST_TOKEN_TIMEOUT = "first_token_timeout"
ERRORED = "error"
DISCONNECT = "disconnect"
VIOLATION = "violation"
MISMATCH = "mismatch"
OUTCOMES = (OK, STALL, FIRST_TOKEN_TIMEOUT, ERRORED, DISCONNECT, VIOLATION, MISMATCH)

#: How many of a turn's last frames an anomaly record keeps, and how much of each (chars).
LAST_FRAMES = 5
FRAME_EXCERPT = 300


@dataclass
class TurnResult:
    """What one turn did; the per-turn measurements soak aggregates per interval."""

    request_id: str
    outcome: str = OK
    ttft_s: float | None = None
    reply_s: float | None = None
    tokens: int = 0
    frames: int = 0
    longest_gap_s: float = 0.0
    elapsed_s: float = 0.0
    detail: str = ""
    last_frames: deque[str] = field(default_factory=lambda: deque(maxlen=LAST_FRAMES))

    @property
    def connection_usable(self) -> bool:
        """Whether the connection can carry the next turn (after a stall it cannot be trusted)."""
        return self.outcome in (OK, ERRORED)


def run_turn(
    conversation: Conversation,
    prompt: str,
    request_id: str,
    *,
    first_token_timeout: float,
    reply_timeout: float,
    clock=time.monotonic,
) -> TurnResult:
    """Send `prompt` and read frames until the terminal frame or a timeout."""
    result = TurnResult(request_id=request_id)
    started = clock()
    _read_reply(conversation, prompt, result, started, first_token_timeout, reply_timeout, clock)
    result.elapsed_s = clock() - started
    return result


def _read_reply(
    conversation: Conversation,
    prompt: str,
    result: TurnResult,
    started: float,
    first_token_timeout: float,
    reply_timeout: float,
    clock,
) -> None:
    request_id = result.request_id
    last_frame_at = started
    try:
        conversation.send_prompt(prompt, request_id)
        while True:
            now = clock()
            deadline = started + (reply_timeout if result.tokens else first_token_timeout)
            frame = conversation.receive(deadline - now)
            now = clock()
            if frame is None:
                if now < deadline:
                    continue
                if result.tokens:
                    result.outcome = STALL
                    result.detail = (
                        f"no terminal frame within {reply_timeout:g} s after "
                        f"{result.tokens} tokens; last frame {now - last_frame_at:.1f} s ago"
                    )
                else:
                    result.outcome = FIRST_TOKEN_TIMEOUT
                    result.detail = f"no token within {first_token_timeout:g} s"
                return
            if frame.request_id is not None and frame.request_id != request_id:
                result.last_frames.append(frame.raw[:FRAME_EXCERPT])
                continue  # a late frame of an earlier turn on this connection
            result.frames += 1
            result.last_frames.append(frame.raw[:FRAME_EXCERPT])
            result.longest_gap_s = max(result.longest_gap_s, now - last_frame_at)
            last_frame_at = now
            if frame.kind == TOKEN:
                if result.ttft_s is None:
                    result.ttft_s = now - started
                result.tokens += 1
            elif frame.kind == DONE:
                result.reply_s = now - started
                return
            elif frame.kind == ERROR:
                result.outcome = ERRORED
                result.detail = f"server error: {frame.text[:FRAME_EXCERPT]}"
                return
    except ConnectionLost as exc:
        result.outcome = DISCONNECT
        result.detail = (
            f"connection lost after {clock() - started:.1f} s: code {exc.code}, {exc.reason}"
        )
        return
