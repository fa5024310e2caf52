"""JSON over one WebSocket: the transport shared by the json-events and jsonrpc adapters.

`JsonSocket` is a small client on websockets' Sans-I/O `ClientProtocol`: the caller's
own thread (a greenlet in the load process) reads the socket inside `recv`, so a
frame costs no hand-over between threads, no locks, and no reader thread per
connection (websockets' sync client has one, plus one for keepalive). Soak's users
always read while connected (think time is spent listening), which is when server
pings are answered and the client's own keepalive pings go out.

Once open, the server's frames are cut out of the read buffer here (`_parse_frames`):
data frames, pings and pongs, which is all a streaming reply is made of, at a third
of the CPU of websockets' generator-based parser. Anything else (a close frame, a
masked frame, reserved bits or opcodes) hands the stream from that frame on to
websockets, which checks and closes as it always did; a message over the size limit
closes with 1009 and a misplaced continuation with 1002, as websockets does. Text that
is not UTF-8 is decoded with replacement characters, as before: the turn's checks,
not the transport, judge what a reply says.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import time
from collections import deque
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidHandshake, InvalidURI
from websockets.frames import CloseCode, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from soak.protocols.base import ConnectionLost

#: Largest message accepted, in bytes: bigger ones close the connection (code 1009).
MAX_FRAME_BYTES = 16 * 1024 * 1024
#: How long closing waits for the server's close frame, in seconds.
CLOSE_TIMEOUT_S = 2.0
#: Bytes read per socket read.
READ_BYTES = 65536
#: Bytes of a handshake response read before its head must have ended (websockets then
#: says what is wrong with it: its lines are at most 8 KiB, its headers 128).
_MAX_RESPONSE_HEAD = 1 << 20
#: Opcodes of the frames `JsonSocket` parses itself: data frames, pings and pongs.
_PARSED_HERE = frozenset((Opcode.CONT, Opcode.TEXT, Opcode.BINARY, Opcode.PING, Opcode.PONG))
#: First byte of an unfragmented text frame (FIN and opcode TEXT).
_FINAL_TEXT = 0x80 | Opcode.TEXT


def http_base(url: str) -> str:
    """http(s)://host:port of a ws(s):// target URL (path and query dropped)."""
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, "", "", ""))


def lookup(data: Any, path: str | None) -> Any:
    """Value at a dotted path ("params.payload.text", "items.0.id"), or None."""
    if path is None:
        return None
    return lookup_parts(data, tuple(path.split(".")))


def lookup_parts(data: Any, parts: tuple[str, ...]) -> Any:
    """`lookup` with the path already split (the per-frame hot path)."""
    if len(parts) == 1 and isinstance(data, dict):
        return data.get(parts[0])
    for part in parts:
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return None
    return data


#: json.loads' own scanner (a default JSONDecoder's): value and end index at an index.
_scan = json.JSONDecoder().scan_once


def parse(raw: str | bytes) -> Any:
    """The JSON value of a frame, or None when it is not JSON (or nested too deep to read:
    a frame of 100,000 brackets is garbage, not a reason for a turn to vanish).

    A text frame that starts with `{` and whose object ends the frame (nearly all of
    them) goes straight to json.loads' scanner, which is what json.loads does for it,
    less its wrapper's regex calls; anything else takes json.loads itself."""
    if raw.__class__ is str and raw[:1] == "{":
        try:
            value, end = _scan(raw, 0)
        except (StopIteration, ValueError, RecursionError):
            return None  # json.loads raises (JSONDecodeError, or RecursionError) for these
        if end == len(raw):
            return value
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def as_text(raw: str | bytes) -> str:
    return raw if isinstance(raw, str) else raw.decode("utf-8", "replace")


#: A keepalive ping waits for a planned send (`plan_send`) that comes at most this fraction
#: of the keepalive interval after it was due.
KEEPALIVE_FOLD = 0.5
#: How long after a planned send a keepalive ping waiting for it is sent anyway (s).
KEEPALIVE_FOLD_SLACK_S = 1.0


class JsonSocket:
    """One WebSocket client connection carrying JSON text frames."""

    def __init__(self, url: str, timeout: float, keepalive: float = 0.0) -> None:
        """Connect and handshake within `timeout` seconds. `keepalive` > 0: send a ping
        when nothing was sent for that long (seconds) and close with 1011 when its pong
        has not come after as long again."""
        self.keepalive = keepalive
        self.messages: deque[str | bytes] = deque()
        #: Bytes read but not yet parsed (a partial frame), while frames are parsed here.
        self._buffer = bytearray()
        #: Frames are parsed by `_parse_frames` (after the handshake, until a hand-over).
        self._parse_here = False
        self._fragments: list[bytes] = []
        self._fragments_size = 0  # bytes in _fragments
        self._fragment_text = True
        self._ping_sent_at: float | None = None
        self._ping_payload = b""
        self._planned_send_at: float | None = None
        deadline = time.monotonic() + timeout
        try:
            uri = parse_uri(url)
            self.sock = socket.create_connection((uri.host, uri.port), timeout=timeout)
        except (OSError, InvalidURI) as exc:
            raise ConnectionLost(None, f"connect failed: {exc}") from None
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if uri.secure:
                context = ssl.create_default_context()
                self.sock = context.wrap_socket(self.sock, server_hostname=uri.host)
            self.protocol = ClientProtocol(uri, max_size=MAX_FRAME_BYTES)
            self.protocol.send_request(self.protocol.connect())
            self._flush()
            self._handshake(deadline)
        except (OSError, InvalidHandshake) as exc:
            self.sock.close()
            raise ConnectionLost(None, f"connect failed: {exc}") from None
        except ConnectionLost:
            self.sock.close()
            raise
        self._last_sent = time.monotonic()

    def _handshake(self, deadline: float) -> None:
        """Read the server's response: its head goes to websockets, which checks it; bytes
        after a 101's head are the first frames, kept for `_parse_frames`, so that the two
        parsers never share a frame."""
        received: bytearray | None = bytearray()  # None once the head went to websockets
        while self.protocol.state is State.CONNECTING:
            data = self._recv_within(deadline - time.monotonic())
            if data is None:
                raise ConnectionLost(None, "connect failed: handshake timed out")
            if received is None:  # an error response's body: websockets reads it
                self._feed(data)
            else:
                received += data
                end = received.find(b"\r\n\r\n")
                if data and end < 0 and len(received) <= _MAX_RESPONSE_HEAD:
                    continue
                head = len(received) if end < 0 else end + 4
                self.protocol.receive_data(bytes(received[:head]))
                rest, received = bytes(received[head:]), None
                if self.protocol.state is State.OPEN and not self.protocol.extensions:
                    self._parse_here = True
                    self._buffer += rest
                elif rest:
                    self.protocol.receive_data(rest)
                if not data:
                    self.protocol.receive_eof()
            if self.protocol.handshake_exc is not None:
                raise ConnectionLost(None, f"connect failed: {self.protocol.handshake_exc}")
        for event in self.protocol.events_received():  # the response; frames when not here
            self._event(event)
        self._parse_frames()
        self._flush()  # pongs to pings that came with the response

    def _recv_within(self, timeout: float) -> bytes | None:
        """One socket read (b"" at end of stream), None when nothing came within `timeout` s."""
        if timeout <= 0:
            return None
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(READ_BYTES)
        except TimeoutError:
            return None

    # -- I/O ----------------------------------------------------------------------------
    def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.sock.sendall(data)
            else:  # end of stream after a close
                with contextlib.suppress(OSError):
                    self.sock.shutdown(socket.SHUT_WR)

    def _read(self, timeout: float) -> bool:
        """Read once from the socket (False when nothing came within `timeout` s)."""
        data = self._recv_within(timeout)
        if data is None:
            return False
        if self._parse_here and data:
            self._buffer += data
            self._parse_frames()
        else:
            if self._parse_here:  # end of stream: websockets says how the connection ended
                self._hand_over(0)
            self._feed(data)
        for event in self.protocol.events_received():
            self._event(event)
        self._flush()  # pongs to server pings, the close echo
        return True

    def _feed(self, data: bytes) -> None:
        """Bytes read (b"": the end of the stream) to websockets' parser."""
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()

    def _parse_frames(self) -> None:
        """Take the complete frames out of the read buffer: messages into `messages`,
        pings answered, pongs matched; a partial frame stays for the next read. Any other
        frame is handed over to websockets (`_hand_over`) with everything after it."""
        buffer = self._buffer
        size = len(buffer)
        at = 0
        while size - at >= 2:
            first, second = buffer[at], buffer[at + 1]
            length, head = second & 0x7F, 2
            if length == 126:
                if size - at < 4:
                    break
                length, head = int.from_bytes(buffer[at + 2 : at + 4]), 4
            elif length == 127:
                if size - at < 10:
                    break
                length, head = int.from_bytes(buffer[at + 2 : at + 10]), 10
            opcode = first & 0x0F
            unusual = second & 0x80 or first & 0x70  # masked, or reserved bits set
            if unusual or opcode not in _PARSED_HERE or (opcode >= Opcode.CLOSE and length > 125):
                self._hand_over(at)
                return
            if opcode < Opcode.CLOSE and length > MAX_FRAME_BYTES - self._fragments_size:
                self._fail(
                    CloseCode.MESSAGE_TOO_BIG,
                    f"message of {length} bytes or more exceeds limit of {MAX_FRAME_BYTES} bytes",
                )
                return
            end = at + head + length
            if end > size:
                break
            if first == _FINAL_TEXT and not self._fragments:  # a whole text message: most
                self.messages.append(buffer[at + head : end].decode("utf-8", "replace"))
                at = end
                continue
            payload = bytes(buffer[at + head : end])
            if opcode >= Opcode.CLOSE:  # ping or pong
                if opcode == Opcode.PING:
                    self.protocol.send_pong(payload)
                elif payload == self._ping_payload:
                    self._ping_sent_at = None
            else:
                if bool(opcode) == bool(self._fragments):  # TEXT/BINARY start, CONT goes on
                    why = "expected a continuation frame" if opcode else "unexpected continuation"
                    self._fail(CloseCode.PROTOCOL_ERROR, why)
                    return
                if opcode:
                    self._fragment_text = opcode == Opcode.TEXT
                self._add_fragment(payload, bool(first & 0x80))
            at = end
        del buffer[:at]

    def _add_fragment(self, data: bytes, final: bool) -> None:
        """A data frame's payload (either parser's); the message it ends into `messages`,
        text decoded with replacement characters where it is not UTF-8."""
        self._fragments.append(data)
        self._fragments_size += len(data)
        if final:
            message = b"".join(self._fragments)
            self._fragments, self._fragments_size = [], 0
            self.messages.append(
                message.decode("utf-8", "replace") if self._fragment_text else message
            )

    def _fail(self, code: CloseCode, reason: str) -> None:
        """Close with `code` as websockets would (its close frame; what follows is ignored
        until the server closes), so that `recv` raises ConnectionLost(code, reason)."""
        self._parse_here = False
        self._buffer.clear()
        self._fragments, self._fragments_size = [], 0
        self.protocol.fail(code, reason)

    def _hand_over(self, at: int) -> None:
        """From byte `at` of the read buffer on, websockets parses the frames (for good)."""
        self._parse_here = False
        rest = bytes(self._buffer[at:])
        self._buffer.clear()
        if rest:
            self.protocol.receive_data(rest)

    def _event(self, event: Any) -> None:
        opcode = getattr(event, "opcode", None)
        if opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
            if opcode is not Opcode.CONT:
                self._fragment_text = opcode is Opcode.TEXT
            self._add_fragment(event.data, event.fin)
        elif opcode is Opcode.PONG and event.data == self._ping_payload:
            self._ping_sent_at = None

    def _lost(self) -> ConnectionLost:
        rcvd, sent = self.protocol.close_rcvd, self.protocol.close_sent
        close = rcvd or sent
        if close is None:
            return ConnectionLost(None, "connection dropped without a close frame")
        return ConnectionLost(close.code, close.reason or "closed")

    def _keepalive(self, now: float) -> float:
        """Send a keepalive ping when due, fail when one went unanswered; seconds until the
        next keepalive event (inf without keepalive)."""
        if not self.keepalive:
            return float("inf")
        if self._ping_sent_at is not None:
            overdue = self._ping_sent_at + self.keepalive - now
            if overdue <= 0:
                self.protocol.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
                with contextlib.suppress(OSError):
                    self._flush()
                raise ConnectionLost(int(CloseCode.INTERNAL_ERROR), "keepalive ping timeout")
            return overdue
        due = self._last_sent + self.keepalive - now
        planned = self._planned_send_at
        if planned is not None and planned > self._last_sent:
            late = planned - (self._last_sent + self.keepalive)  # s the planned send is late
            if late <= self.keepalive * KEEPALIVE_FOLD:
                due = max(due, planned - now + KEEPALIVE_FOLD_SLACK_S)
        if due <= 0:
            self._ping_payload = os.urandom(4)
            self.protocol.send_ping(self._ping_payload)
            self._send_pending()
            self._ping_sent_at = now
            return self.keepalive
        return due

    def plan_send(self, at: float) -> None:
        """A frame will be sent at monotonic time `at` (s; an application ping): a keepalive
        ping due at most `KEEPALIVE_FOLD` of a keepalive before it waits for that frame,
        which keeps the connection alive as well (one wake-up instead of two)."""
        self._planned_send_at = at

    def _send_pending(self) -> None:
        try:
            self._flush()
        except OSError as exc:
            raise ConnectionLost(None, f"connection dropped: {exc}") from None
        self._last_sent = time.monotonic()

    # -- the interface ------------------------------------------------------------------
    def send(self, message: Any) -> None:
        """Send one JSON value as a text frame. Raises ConnectionLost."""
        if self.protocol.state is not State.OPEN:
            raise self._lost()
        self.protocol.send_text(json.dumps(message).encode())
        self._send_pending()

    def recv(self, timeout: float) -> str | bytes | None:
        """The next message, or None after `timeout` seconds. Raises ConnectionLost."""
        deadline = time.monotonic() + max(timeout, 0.0)
        while not self.messages:
            if self.protocol.state is State.CLOSED or self.protocol.close_rcvd is not None:
                raise self._lost()
            now = time.monotonic()
            remaining = deadline - now
            try:
                if not self._read(min(remaining, self._keepalive(now))) and remaining <= 0:
                    return None
            except OSError as exc:
                raise ConnectionLost(None, f"connection dropped: {exc}") from None
        return self.messages.popleft()

    def close(self) -> None:
        """Close handshake (at most CLOSE_TIMEOUT_S), then the socket; never raises."""
        try:
            if self.protocol.state is State.OPEN:
                self.protocol.send_close(CloseCode.NORMAL_CLOSURE)
                self._flush()
                deadline = time.monotonic() + CLOSE_TIMEOUT_S
                while self.protocol.state is not State.CLOSED and self._read(
                    deadline - time.monotonic()
                ):
                    pass
        except (OSError, ConnectionLost):
            pass  # closing a broken connection must never fail a user
        finally:
            self.sock.close()
