"""The wire protocol between a remote `soak collect --join` and the orchestrator of a `soak run`.

One TCP connection, one JSON object per line (UTF-8), each line at most
MAX_MESSAGE_BYTES. The orchestrator (server) speaks first::

    server  {"type": "challenge", "protocol": 1, "nonce": S}
    client  {"type": "hello", "protocol": 1, "source": RUN_ID, "host": H, "targets": [..],
             "sizes": {FILE: bytes}, "nonce": C, "proof": HMAC(secret, client|S|C|RUN_ID|targets)}
    server  {"type": "welcome", "proof": HMAC(secret, server|C|S), "offsets": {FILE: bytes}}
            or {"type": "refused", "reason": "..."} and the connection closes
    server  {"type": "ping", "t0": T0}    (CLOCK_ROUNDS times, each answered by)
    client  {"type": "pong", "t0": T0, "t1": T1}
    server  {"type": "start"}
    client  {"type": "batch", "seq": N, "file": FILE, "offset": A, "end": B, "lines": [...]}
    server  {"type": "ack", "seq": N}    and a ping now and then (the clock, and a heartbeat)

FILE is "TARGET/process.jsonl", "TARGET/threads.jsonl", "TARGET/health.jsonl" or
"events.jsonl"; offsets are byte offsets into the remote's own files, which are the
durable buffer: the orchestrator says on each (re)connect how far it has each
one, and the remote ships from there. Both sides prove they know the shared
secret (HMAC-SHA256 over fresh nonces); the secret itself is never sent. The
connection is not encrypted: samples travel in clear text (put it behind an SSH
tunnel or a VPN when the network is not trusted).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import secrets
import socket
from collections import deque
from dataclasses import dataclass
from typing import Any, BinaryIO

PROTOCOL = 1
#: Longest message line either side accepts, in bytes (a batch of lines is far less).
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
#: Most bytes of record lines in one batch.
BATCH_BYTES = 256 * 1024
#: Ping/pong rounds that measure the clock offset when a remote joins.
CLOCK_ROUNDS = 5
#: How many of the latest ping/pong samples the clock offset is the best of.
CLOCK_SAMPLES = 8
#: A connection with nothing received for this long is dead, in seconds (pings every few s).
SILENCE_S = 30.0
#: How often the orchestrator pings (clock re-measure, heartbeat), in seconds.
PING_EVERY_S = 5.0
#: The files of one target a remote ships (beside events.jsonl).
TARGET_FILES = ("process.jsonl", "threads.jsonl", "health.jsonl")


class WireError(Exception):
    """The other side broke the protocol, or the connection ended."""


class Refused(WireError):
    """The other side refused the connection (wrong secret, unknown target): do not retry
    as if the network had failed."""


def nonce() -> str:
    """A fresh random challenge (hex)."""
    return secrets.token_hex(16)


def proof(secret: str, role: str, *parts: str) -> str:
    """HMAC-SHA256 (hex) of the role and the parts under the shared secret."""
    message = "|".join((role, *parts)).encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def proofs_match(expected: str, given: Any) -> bool:
    """Constant-time comparison of a proof a peer sent with the one expected."""
    return isinstance(given, str) and hmac.compare_digest(expected, given)


def client_proof(secret: str, challenge: str, hello: dict[str, Any]) -> str:
    """The proof a remote sends in its hello: it binds the challenge, its nonce, source, targets."""
    targets = ",".join(hello["targets"])
    return proof(secret, "client", challenge, hello["nonce"], hello["source"], targets)


class Channel:
    """One side of a connection: whole JSON messages in and out, reads bounded."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._reader: BinaryIO = sock.makefile("rb")

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise WireError(f"send failed: {exc.strerror or exc}") from None

    def receive(self) -> dict[str, Any]:
        """The next message; WireError at the end of the connection or on a malformed line."""
        try:
            line = self._reader.readline(MAX_MESSAGE_BYTES + 1)
        except (OSError, ValueError) as exc:
            raise WireError(f"receive failed: {exc}") from None
        if not line:
            raise WireError("the connection was closed")
        if not line.endswith(b"\n"):
            raise WireError(f"a message longer than {MAX_MESSAGE_BYTES} bytes, or cut off")
        try:
            message = json.loads(line)
        except ValueError:
            raise WireError("a message that is not JSON") from None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise WireError("a message without a type")
        return message

    def expect(self, kind: str) -> dict[str, Any]:
        """The next message, which must be of `kind` (a refusal raises Refused)."""
        message = self.receive()
        if message["type"] == "refused":
            raise Refused(str(message.get("reason", "refused")))
        if message["type"] != kind:
            raise WireError(f"expected {kind}, got {message['type']}")
        return message

    def close(self) -> None:
        """Close both ways; a thread blocked reading this channel wakes with a WireError."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # close alone does not wake a blocked recv
        for part in (self._reader, self.sock):
            with contextlib.suppress(OSError):
                part.close()


@dataclass(frozen=True)
class ClockSample:
    """One ping/pong: the remote's clock minus the orchestrator's (s), and the round trip (s)."""

    offset_s: float
    delay_s: float

    @classmethod
    def of(cls, t0: float, t1: float, t2: float) -> ClockSample:
        """NTP-style: sent at t0 and answered at t2 (orchestrator), stamped t1 (remote)."""
        return cls(offset_s=t1 - (t0 + t2) / 2, delay_s=max(t2 - t0, 0.0))


class Clock:
    """The remote's clock offset: that of the fastest of the latest CLOCK_SAMPLES round trips
    (the least queueing delay, so the least error: at most half its delay)."""

    def __init__(self) -> None:
        self.samples: deque[ClockSample] = deque(maxlen=CLOCK_SAMPLES)

    def add(self, sample: ClockSample) -> None:
        self.samples.append(sample)

    @property
    def best(self) -> ClockSample | None:
        return min(self.samples, key=lambda s: s.delay_s, default=None)

    @property
    def offset_s(self) -> float:
        best = self.best
        return best.offset_s if best else 0.0


def parse_address(text: str, option: str) -> tuple[str, int]:
    """HOST:PORT as a (host, port) pair; ValueError saying what to write instead."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{option} must be HOST:PORT, e.g. 0.0.0.0:7557, got {text!r}")
    return host.strip("[]"), int(port)
