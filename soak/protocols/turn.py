"""Drive one chat turn over any conversation and classify its outcome.

Every turn gets exactly one outcome:

- ok: tokens (or not), then the terminal frame, nothing wrong seen;
- stall: tokens came, but no terminal frame within the reply timeout;
- first_token_timeout: nothing came within the first-token timeout;
- error: an error frame, RPC error or `status: error`;
- disconnect: the connection closed mid-turn (close code and reason kept);
- violation: a frame after the terminal frame (`frame_after_done`), a second
  terminal frame (`duplicate_done`), a frame for another request
  (`wrong_request`), a gap or step back in `seq` (`seq_gap`, `seq_order`), a
  frame the protocol cannot parse (`non_json`);
- mismatch: the reply does not contain the nonce sent in the prompt: `stale_reply`
  when it carries the nonce of an earlier prompt of the same chat (it answered the
  previous question), `no_nonce` when it carries none.

Stall, error and disconnect take precedence over a violation seen earlier in
the same turn, and a violation over a mismatch, except that a stale reply wins over
frames after the terminal frame (a server a turn behind starts the next reply right
after this one: the stale reply is the finding). A first-token timeout after
frames that broke the protocol is a violation: the server did answer, but
nothing it sent was a token (garbage instead of a reply).
An exception while reading (a protocol adapter that chokes on what the server sent)
ends the turn as a disconnect that says so, and the chat hangs up and backs off.
An adapter that sees the protocol broken in ways only it can tell (a delta for a
message the server already closed) hands a `ViolationFrame` saying which violation.
Violations seen between turns (while thinking or probing) are charged to the
next turn on that connection. Frames of a request whose turn already ended without its
terminal frame (a stall, a first-token timeout) are its late tail, not a new problem:
they are ignored. Times are seconds from the moment the prompt was sent.

Token counts: `tokens` counts token frames (what inter-token latency and the outcomes
rest on). Servers that pack several tokens into one frame and say how many they made
(OpenAI-compatible `usage`) end the reply with a `UsageDone` frame; the turn then keeps
their counts, and time per output token uses the server's completion tokens, as LLM
benchmarks (genai-perf, vLLM's benchmark_serving) do.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from soak.protocols.base import (
    DONE,
    ERROR,
    INVALID,
    OTHER,
    PONG,
    TOKEN,
    ConnectionLost,
    Conversation,
    Frame,
)

OK = "ok"
STALL = "stall"
FIRST_TOKEN_TIMEOUT = "first_token_timeout"
ERRORED = "error"
DISCONNECT = "disconnect"
VIOLATION = "violation"
MISMATCH = "mismatch"
OUTCOMES = (OK, STALL, FIRST_TOKEN_TIMEOUT, ERRORED, DISCONNECT, VIOLATION, MISMATCH)

FRAME_AFTER_DONE = "frame_after_done"
DUPLICATE_DONE = "duplicate_done"
WRONG_REQUEST = "wrong_request"
SEQ_GAP = "seq_gap"
SEQ_ORDER = "seq_order"
NON_JSON = "non_json"
VIOLATION_KINDS = (FRAME_AFTER_DONE, DUPLICATE_DONE, WRONG_REQUEST, SEQ_GAP, SEQ_ORDER, NON_JSON)
STALE_REPLY = "stale_reply"
#: Violations a server that answers a turn behind makes anyway (the next reply begins
#: right after this one's end): a stale reply explains them, and wins over them.
BEHIND_KINDS = (FRAME_AFTER_DONE, DUPLICATE_DONE)
NO_NONCE = "no_nonce"
MISMATCH_KINDS = (STALE_REPLY, NO_NONCE)

#: How many of a turn's last frames an anomaly record keeps, and how much of each (chars).
LAST_FRAMES = 5
FRAME_EXCERPT = 300
#: Longest server-controlled id (session, request id) kept in a record, in characters.
ID_LIMIT = 200
#: Longest server-controlled text (a detail, a close reason) kept in a record, in characters.
TEXT_LIMIT = 2000


def clip(value: Any, limit: int) -> Any:
    """`value` cut to `limit` characters when it is a longer string (saying how much was
    cut), as it is otherwise: a server's 2 MB session id must not become 2 MB a record."""
    if not isinstance(value, str) or len(value) <= limit:
        return value
    return f"{value[:limit]}… (+{len(value) - limit:,} chars)"


#: Ended request ids a connection remembers (to tell late frames from foreign ones).
RECENT_REQUESTS = 8
#: Nonces of a chat's earlier prompts checked for a stale reply.
EARLIER_NONCES = 4
#: Violations noted between turns and kept for the next turn, at most.
HELD_NOTES = 8
#: A stalled reply with a frame this recently (s) before its deadline is still running.
RUNAWAY_QUIET_S = 1.0
#: Frame kinds that belong to a reply (others, such as status events, never count).
REPLY_KINDS = (TOKEN, DONE, ERROR)

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class ViolationFrame(Frame):
    """A frame the adapter knows breaks the protocol (kind INVALID): `subkind` says how
    (one of VIOLATION_KINDS), `text` the detail."""

    subkind: str = NON_JSON


@dataclass(frozen=True, slots=True)
class UsageDone(Frame):
    """A terminal frame (kind DONE) with the token counts the server reported for the
    reply (None: not said)."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass
class TurnResult:
    """What one turn did; the per-turn measurements soak aggregates per interval."""

    request_id: str
    outcome: str = OK
    subkind: str | None = None  # violation or mismatch kind
    ttft_s: float | None = None
    reply_s: float | None = None
    tokens: int = 0  # token frames
    frames: int = 0
    #: Token counts the server reported for the reply (OpenAI `usage`), None when not.
    usage_prompt_tokens: int | None = None
    usage_completion_tokens: int | None = None
    longest_gap_s: float = 0.0  # longest gap between two frames of the reply
    #: Seconds between consecutive token frames (inter-token latency, as LLM
    #: benchmarks report it: one per streamed chunk).
    token_gaps_s: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0
    detail: str = ""
    close_code: int | None = None
    close_reason: str | None = None
    violations: list[tuple[str, str]] = field(default_factory=list)
    last_frames: deque[str] = field(default_factory=lambda: deque(maxlen=LAST_FRAMES))  # whole
    #: A stall whose frames were still coming at the deadline: a runaway reply, which
    #: would drown the next turn on this connection in its tail.
    runaway: bool = False

    def frame_excerpts(self) -> list[str]:
        """The last frames, each cut to FRAME_EXCERPT characters (for anomaly records)."""
        return [clip(raw, FRAME_EXCERPT) for raw in self.last_frames]

    @property
    def connection_usable(self) -> bool:
        """Whether the connection can carry the next turn: after a stall, a violation or a
        mismatch the stream cannot be trusted to be in step with our prompts."""
        return self.outcome in (OK, ERRORED)

    @property
    def output_tokens(self) -> int:
        """Output tokens of the reply: the server's completion tokens when it said, else
        token frames."""
        if self.usage_completion_tokens is not None:
            return self.usage_completion_tokens
        return self.tokens

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first (s): (reply - TTFT) / (output_tokens - 1)."""
        tokens = self.output_tokens
        if self.reply_s is None or self.ttft_s is None or tokens < 2:
            return None
        return (self.reply_s - self.ttft_s) / (tokens - 1)

    def violate(self, subkind: str, detail: str) -> None:
        self.violations.append((subkind, detail))


class NonceWatch:
    """Whether a nonce appears in a reply that arrives in pieces, and whether the nonce of
    an earlier prompt (`earlier`, newest first) does instead; keeps only a short tail."""

    def __init__(self, nonce: str, earlier: tuple[str, ...] = ()) -> None:
        self.nonce = nonce
        self.earlier = tuple(n for n in earlier if n != nonce)
        self.width = max(len(n) for n in (nonce, *self.earlier))
        self.tail = ""
        self.found = False
        self.stale: str | None = None  # the earlier nonce seen, while the nonce is not

    def feed(self, text: str) -> None:
        """Look for the nonces in `text`, the reply's next piece, plus the tail kept from
        before it (a nonce split across pieces): work in the piece's length, not the
        reply's. Once the nonce is found nothing more is looked at: an earlier nonce
        (`stale`) only matters while this one is missing."""
        if self.found or not text:
            return
        joined = self.tail + text
        if self.nonce in joined:
            self.found = True
            return
        if self.stale is None:
            for earlier in self.earlier:
                if earlier in joined:
                    self.stale = earlier
                    break
        self.tail = joined[-self.width :]


class Channel:
    """One open conversation plus what soak tracks across its turns: the last `seq`,
    recently ended requests, and violations seen between turns."""

    def __init__(self, conversation: Conversation, nonces: deque[str] | None = None) -> None:
        self.conversation = conversation
        self.last_seq: int | None = None
        self.recent: deque[str] = deque(maxlen=RECENT_REQUESTS)
        self.abandoned: deque[str] = deque(maxlen=RECENT_REQUESTS)  # ended without terminal
        #: Nonces of the chat's prompts, newest last (shared by the chat's connections).
        self.nonces: deque[str] = deque(maxlen=EARLIER_NONCES) if nonces is None else nonces
        self.held: deque[tuple[str, str, str]] = deque(maxlen=HELD_NOTES)  # subkind, detail, raw
        self.turns = 0

    @property
    def session_id(self) -> str | None:
        return self.conversation.session_id

    def next_frame(self, timeout: float) -> tuple[Frame | None, tuple[str, str] | None]:
        """The next frame and the `seq` violation it shows, if any. Raises ConnectionLost."""
        frame = self.conversation.receive(timeout)
        if frame is None or frame.seq is None:
            return frame, None
        last, self.last_seq = self.last_seq, frame.seq
        if last is None or frame.seq == last + 1:
            return frame, None
        if frame.seq > last + 1:
            return frame, (SEQ_GAP, f"seq jumped from {last} to {frame.seq}: events lost")
        return frame, (SEQ_ORDER, f"seq went back from {last} to {frame.seq}")

    def listen(self, seconds: float, clock: Clock = time.monotonic) -> None:
        """Read whatever arrives for `seconds` (between turns): reply frames and seq
        problems are held for the next turn. Raises ConnectionLost."""
        deadline = clock() + seconds
        while (remaining := deadline - clock()) > 0:
            frame, seq_problem = self.next_frame(remaining)
            if frame is None:
                return
            self._hold(frame, seq_problem)

    def probe(self, timeout: float, clock: Clock = time.monotonic) -> float | None:
        """Round trip of one protocol ping in seconds, None when no pong came in `timeout`.

        Only for conversations whose `supports_ping` is true. Raises ConnectionLost.
        """
        started = clock()
        self.conversation.send_ping()
        while (remaining := started + timeout - clock()) > 0:
            frame, seq_problem = self.next_frame(remaining)
            if frame is None:
                return None
            if frame.kind == PONG:
                return clock() - started
            self._hold(frame, seq_problem)
        return None

    def _hold(self, frame: Frame, seq_problem: tuple[str, str] | None) -> None:
        raw = frame.raw[:FRAME_EXCERPT]
        if seq_problem:
            self.held.append((*seq_problem, raw))
        if frame.request_id is not None and frame.request_id in self.abandoned:
            return  # the late tail of a turn that already ended without it
        if frame.kind in REPLY_KINDS:
            ended = f" of request {frame.request_id}" if frame.request_id else ""
            self.held.append((FRAME_AFTER_DONE, f"{frame.kind} frame{ended} between turns", raw))
        elif frame.kind == INVALID:
            subkind, detail = invalid(frame)
            self.held.append((subkind, f"{detail} between turns", raw))

    def take_held(self) -> Iterator[tuple[str, str, str]]:
        while self.held:
            yield self.held.popleft()


def run_turn(
    conversation: Conversation | Channel,
    prompt: str,
    request_id: str,
    *,
    first_token_timeout: float,
    reply_timeout: float,
    linger: float = 0.0,
    nonce: str | None = None,
    clock: Clock = time.monotonic,
) -> TurnResult:
    """Send `prompt` and read frames until the terminal frame or a timeout.

    `linger` seconds after the terminal frame are still read: a frame of this
    turn then is a violation. With `nonce`, a reply that does not contain it is
    a mismatch.
    """
    channel = conversation if isinstance(conversation, Channel) else Channel(conversation)
    result = TurnResult(request_id=request_id)
    for subkind, detail, raw in channel.take_held():
        result.violate(subkind, detail)
        result.last_frames.append(raw)
    watch = NonceWatch(nonce, tuple(reversed(channel.nonces))) if nonce else None
    started = clock()
    try:
        done = _read_reply(
            channel, prompt, result, watch, first_token_timeout, reply_timeout, clock
        )
        if done:
            _linger(channel, result, linger, clock)
    except ConnectionLost as exc:
        result.outcome = DISCONNECT
        result.close_code, result.close_reason = exc.code, exc.reason
        result.detail = (
            f"connection lost after {clock() - started:.1f} s: code {exc.code}, {exc.reason}"
        )
    except Exception as exc:  # noqa: BLE001 - an adapter that chokes still ends the turn
        result.outcome = DISCONNECT
        result.close_reason = unreadable(exc)
        result.detail = f"after {clock() - started:.1f} s, {result.close_reason}"
    finally:
        channel.recent.append(request_id)
        channel.turns += 1
        if nonce:
            channel.nonces.append(nonce)
    if result.outcome in (STALL, FIRST_TOKEN_TIMEOUT):
        channel.abandoned.append(request_id)
    result.elapsed_s = clock() - started
    _settle(result, watch, list(channel.nonces))
    return result


def invalid(frame: Frame) -> tuple[str, str]:
    """The violation subkind and detail of an INVALID frame."""
    if isinstance(frame, ViolationFrame):
        return frame.subkind, frame.text
    return NON_JSON, f"unparseable frame: {frame.text}"


def unreadable(exc: BaseException) -> str:
    """What to say when reading what the server sent raised: soak hangs up on the stream."""
    return f"soak could not read what the server sent ({type(exc).__name__}: {str(exc)[:200]})"


def _read_reply(
    channel: Channel,
    prompt: str,
    result: TurnResult,
    watch: NonceWatch | None,
    first_token_timeout: float,
    reply_timeout: float,
    clock: Clock,
) -> bool:
    """Read until the terminal frame (True) or a timeout/error outcome (False)."""
    request_id = result.request_id
    started = clock()
    last_frame_at: float | None = None
    last_token_at = started
    deadline = started + first_token_timeout  # then reply_timeout, from the first token
    next_frame, keep_frame = channel.next_frame, result.last_frames.append
    channel.conversation.send_prompt(prompt, request_id)
    while True:
        frame, seq_problem = next_frame(deadline - clock())
        now = clock()
        if frame is None:
            if now < deadline:
                continue
            if result.outcome != ERRORED:  # an error said is the outcome, done or not
                _timed_out(result, now, last_frame_at, first_token_timeout, reply_timeout)
            return False
        keep_frame(frame.raw)
        if seq_problem:
            result.violate(*seq_problem)
        kind, frame_request = frame.kind, frame.request_id
        if kind == INVALID:
            result.violate(*invalid(frame))
            continue
        if frame_request is None:
            if kind in (PONG, OTHER):
                continue  # status events, a late pong: not part of the reply
        elif frame_request != request_id:
            _foreign(channel, result, frame)
            continue
        result.frames += 1
        if last_frame_at is not None and now - last_frame_at > result.longest_gap_s:
            result.longest_gap_s = now - last_frame_at
        last_frame_at = now
        if kind == TOKEN:
            if result.ttft_s is None:
                result.ttft_s = now - started
                deadline = started + reply_timeout
            else:
                result.token_gaps_s.append(now - last_token_at)
            last_token_at = now
            result.tokens += 1
            if watch is not None and not watch.found:
                watch.feed(frame.text)
        elif kind == DONE:
            result.reply_s = now - started
            if isinstance(frame, UsageDone):
                result.usage_prompt_tokens = frame.prompt_tokens
                result.usage_completion_tokens = frame.completion_tokens
            if watch is not None:
                watch.feed(frame.text)
            return True
        elif kind == ERROR:
            result.outcome = ERRORED
            result.detail = f"server error: {frame.text[:FRAME_EXCERPT]}"
            if channel.conversation.error_ends_turn:
                return False


def _timed_out(
    result: TurnResult,
    now: float,
    last_frame_at: float | None,
    first_token_timeout: float,
    reply_timeout: float,
) -> None:
    if result.tokens:
        result.outcome = STALL
        since = now - (last_frame_at or now)
        result.runaway = since < min(RUNAWAY_QUIET_S, reply_timeout / 4)
        result.detail = (
            f"no terminal frame within {reply_timeout:g} s after {result.tokens} tokens; "
            f"last frame {since:.1f} s ago"
        )
    else:
        result.outcome = FIRST_TOKEN_TIMEOUT
        result.detail = f"no token within {first_token_timeout:g} s"


def _foreign(channel: Channel, result: TurnResult, frame: Frame) -> None:
    """A frame that names another request: a late frame of an ended one, or a stranger."""
    if frame.kind not in REPLY_KINDS or frame.request_id in channel.abandoned:
        return
    if frame.request_id in channel.recent:
        result.violate(
            FRAME_AFTER_DONE,
            f"{frame.kind} frame of earlier request {frame.request_id} after it had ended",
        )
    else:
        result.violate(
            WRONG_REQUEST,
            f"{frame.kind} frame for request {frame.request_id}, which this connection never sent",
        )


def _linger(channel: Channel, result: TurnResult, linger: float, clock: Clock) -> None:
    """Keep reading `linger` seconds after the terminal frame: anything of this turn is wrong."""
    deadline = clock() + linger
    while (remaining := deadline - clock()) > 0:
        frame, seq_problem = channel.next_frame(remaining)
        if frame is None:
            return
        result.last_frames.append(frame.raw)
        if seq_problem:
            result.violate(*seq_problem)
        if frame.kind == INVALID:
            subkind, detail = invalid(frame)
            result.violate(subkind, f"{detail} after done")
        elif frame.kind in REPLY_KINDS:
            if frame.request_id not in (None, result.request_id):
                _foreign(channel, result, frame)
            elif frame.kind == DONE:
                result.violate(DUPLICATE_DONE, "a second terminal frame for this request")
            else:
                result.violate(FRAME_AFTER_DONE, f"{frame.kind} frame after the terminal frame")


def _settle(result: TurnResult, watch: NonceWatch | None, nonces: list[str]) -> None:
    """Pick the one outcome from what the turn saw (precedence in the module docstring).

    nonces: the chat's prompt nonces, this turn's last."""
    notes = "; ".join(detail for _, detail in result.violations[:3])
    if result.outcome == FIRST_TOKEN_TIMEOUT and result.violations:
        result.outcome = VIOLATION
        result.subkind = result.violations[0][0]
        result.detail = f"{notes}; and no token within the first-token timeout"
        return
    if result.outcome != OK:
        if notes:
            result.detail = f"{result.detail} (also: {notes})"
        return
    stale = watch is not None and not watch.found and watch.stale is not None
    behind = all(kind in BEHIND_KINDS for kind, _ in result.violations)
    if result.violations and not (stale and behind):
        result.outcome = VIOLATION
        result.subkind = result.violations[0][0]
        result.detail = notes
    elif stale:
        assert watch is not None and watch.stale is not None
        result.outcome, result.subkind = MISMATCH, STALE_REPLY
        back = len(nonces) - 1 - nonces.index(watch.stale) if watch.stale in nonces else 0
        which = "the previous prompt" if back == 1 else f"the prompt {back} turns back"
        result.detail = (
            f"the reply ({result.tokens} tokens) carries the nonce {watch.stale!r} of "
            f"{which} of this chat, not {watch.nonce!r}: it answered an earlier question"
        ) + (f" (also: {notes})" if notes else "")
    elif watch and not watch.found:
        result.outcome, result.subkind = MISMATCH, NO_NONCE
        result.detail = (
            f"the reply ({result.tokens} tokens) does not contain the nonce {watch.nonce!r} "
            "sent in the prompt: an answer to another prompt?"
        )
