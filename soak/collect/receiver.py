"""The orchestrator's side of remote collectors: accepts `soak collect --join`, imports their files.

Runs in the collector process of `soak run` when the profile sets [collector] listen.
Each connection is authenticated (wire.py), has its clock offset measured, then gets
batches of record lines that the Importer writes into the run directory as if they
had been sampled here. A bounded queue sits between reading and writing: when the disk
is slow the reader stops reading, TCP pushes back, and the remote's send window fills
(its own run directory holds the rest). Joins, losses, refusals, backfills and clock
offsets are events in events.jsonl.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from soak.collect.importer import Importer, ImportGap, source_files
from soak.collect.wire import (
    CLOCK_ROUNDS,
    PING_EVERY_S,
    PROTOCOL,
    SILENCE_S,
    Channel,
    Clock,
    ClockSample,
    WireError,
    client_proof,
    nonce,
    proof,
    proofs_match,
)
from soak.rundir import RunDir

#: Batches read but not yet written, per connection (each at most wire.BATCH_BYTES).
RECEIVE_QUEUE = 16
#: Remote collectors connected (or still authenticating) at once.
MAX_CONNECTIONS = 8
#: How long a new connection has to authenticate, in seconds.
HANDSHAKE_S = 10.0
#: A clock offset that moved by more than this since it was last recorded is recorded, in s.
CLOCK_REPORT_S = 0.1
#: How long a replaced or closing connection gets to write what it queued, in seconds.
WRITER_JOIN_S = 10.0

#: Writes one event: kind, message, target, extra fields (collector.Events.write).
EventSink = Callable[..., None]


class Receiver:
    """Listens on `address` for remote collectors of the `targets` (names) of the run."""

    def __init__(
        self,
        run: RunDir,
        address: tuple[str, int],
        secret: str,
        targets: list[str],
        event: EventSink,
    ) -> None:
        self.importer = Importer(run)
        self.secret = secret
        self.targets = targets
        self.event = event
        self.server = socket.create_server(address, reuse_port=False)
        self.address: tuple[str, int] = self.server.getsockname()[:2]
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._lock = threading.Lock()
        self._connections: dict[str, Connection] = {}  # by source (the remote's run id)
        self._threads: list[threading.Thread] = []
        self._closing = False

    def start(self) -> None:
        thread = threading.Thread(target=self._accept, name="soak-receiver", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        while not self._closing:
            try:
                sock, peer = self.server.accept()
            except OSError:
                return  # closed
            if not self._slots.acquire(blocking=False):
                sock.close()
                continue
            thread = threading.Thread(
                target=self._serve, args=(sock, f"{peer[0]}:{peer[1]}"), daemon=True
            )
            thread.start()
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]

    def _serve(self, sock: socket.socket, peer: str) -> None:
        channel = Channel(sock)
        try:
            sock.settimeout(HANDSHAKE_S)
            hello, clock = self._handshake(channel, peer)
            sock.settimeout(SILENCE_S)
            connection = Connection(self, channel, hello, clock, peer)
            self._replace(connection)
            connection.run()
        except WireError as exc:
            self.event("remote_refused", f"remote collector {peer}: {exc}", peer=peer)
        finally:
            channel.close()
            self._slots.release()

    def _handshake(self, channel: Channel, peer: str) -> tuple[dict[str, Any], Clock]:
        challenge = nonce()
        channel.send({"type": "challenge", "protocol": PROTOCOL, "nonce": challenge})
        hello = channel.expect("hello")
        reason = self._refusal(challenge, hello)
        if reason:
            channel.send({"type": "refused", "reason": reason})
            raise WireError(f"refused: {reason}")
        self._retire(hello["source"])  # its earlier connection writes its queue out first
        channel.send(
            {
                "type": "welcome",
                "proof": proof(self.secret, "server", hello["nonce"], challenge),
                "offsets": self.importer.offsets(hello["source"]),
            }
        )
        clock = Clock()
        for _ in range(CLOCK_ROUNDS):
            clock.add(ping_round(channel))
        channel.send({"type": "start"})
        return hello, clock

    def _refusal(self, challenge: str, hello: dict[str, Any]) -> str | None:
        """Why `hello` is refused, or None."""
        if hello.get("protocol") != PROTOCOL:
            given = repr(hello.get("protocol"))[:20]  # not authenticated yet: quoted short
            return f"protocol {given}; this soak speaks protocol {PROTOCOL}"
        fields = (hello.get("source"), hello.get("nonce"), hello.get("host"))
        targets = hello.get("targets")
        if not all(isinstance(f, str) for f in fields) or not isinstance(targets, list):
            return "a hello without source, nonce, host and targets"
        if not targets or not all(isinstance(t, str) for t in targets):
            return "a hello without targets"
        if not proofs_match(client_proof(self.secret, challenge, hello), hello.get("proof")):
            return (
                "wrong secret: the remote's secret is not the run's [collector] secret; "
                "give both the same value (SOAK_COLLECT_SECRET)"
            )
        unknown = [t for t in targets if t not in self.targets]
        if unknown:
            return (
                f"target {unknown[0]!r} is not a remote target of this run (remote = true): "
                f"{', '.join(self.targets) or 'none'}; name it like the run's profile does"
            )
        return None

    def _retire(self, source: str) -> None:
        """Close the earlier connection of `source` (a reconnect the old one did not notice)."""
        with self._lock:
            old = self._connections.pop(source, None)
        if old is not None:
            old.close(wait=True)

    def _replace(self, connection: Connection) -> None:
        with self._lock:
            self._connections[connection.source] = connection

    def _forget(self, connection: Connection) -> None:
        with self._lock:
            if self._connections.get(connection.source) is connection:
                del self._connections[connection.source]

    def close(self) -> None:
        """Stop accepting, end every connection after writing what it queued."""
        self._closing = True
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)  # wakes the accept (close alone does not)
        with contextlib.suppress(OSError):
            self.server.close()
        with self._lock:
            connections = list(self._connections.values())
        for connection in connections:
            connection.close(wait=True)
        for thread in self._threads:
            thread.join(WRITER_JOIN_S)
        self.importer.close()


def ping_round(channel: Channel) -> ClockSample:
    """One ping/pong on a channel nobody else reads: the remote's clock offset and delay."""
    t0 = time.time()
    channel.send({"type": "ping", "t0": t0})
    pong = channel.expect("pong")
    return ClockSample.of(t0, _number(pong, "t1"), time.time())


def _number(message: dict[str, Any], key: str) -> float:
    value = message.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WireError(f"{message['type']} without a numeric {key}")
    return float(value)


class Connection:
    """One authenticated remote collector: reads batches into a bounded queue; its writer
    thread imports them, acknowledges each, and pings every PING_EVERY_S."""

    def __init__(
        self, receiver: Receiver, channel: Channel, hello: dict[str, Any], clock: Clock, peer: str
    ) -> None:
        self.receiver = receiver
        self.channel = channel
        self.clock = clock
        self.peer = peer
        self.source: str = hello["source"]
        self.host: str = hello["host"]
        self.targets = {name: name for name in hello["targets"]}
        self.batches: queue.Queue[dict[str, Any] | None] = queue.Queue(RECEIVE_QUEUE)
        offsets = receiver.importer.offsets(self.source)
        sizes = hello.get("sizes") if isinstance(hello.get("sizes"), dict) else {}
        #: Bytes behind per file when it joined: what it backfills.
        self.behind = {
            f: int(sizes.get(f, 0)) for f in source_files(self.targets) if
            isinstance(sizes.get(f, 0), int) and sizes.get(f, 0) > offsets.get(f, 0)
        }  # fmt: skip
        self.backfilled = 0
        self.received = 0  # batches read from the remote
        self.joined_at = time.monotonic()
        self.reported_offset = clock.offset_s
        self._writer = threading.Thread(target=self._write, name="soak-receiver-write", daemon=True)
        self._closed = threading.Event()

    def _event(self, kind: str, message: str, **fields: Any) -> None:
        for target in self.targets.values():
            self.receiver.event(kind, f"{target}: {message}", target, host=self.host, **fields)

    def run(self) -> None:
        best = self.clock.best
        assert best is not None
        behind = sum(self.behind.values())
        self._event(
            "remote_joined",
            f"remote collector on {self.host} ({self.peer}) joined; "
            f"{behind} bytes to backfill",
            remote_run=self.source, peer=self.peer, backfill_bytes=behind,
        )  # fmt: skip
        self._clock_event(best)
        self._writer.start()
        reason = "the run ended"
        try:
            while not self._closed.is_set():
                message = self.channel.receive()
                if message["type"] == "batch":
                    self.received += 1
                    self.batches.put(message)  # blocks when full: TCP pushes back
                elif message["type"] == "pong":
                    self._pong(message)
        except WireError as exc:
            if not self._closed.is_set():
                reason = str(exc)
        finally:
            self.batches.put(None)
            self._writer.join(WRITER_JOIN_S)
            self.receiver._forget(self)
            seconds = time.monotonic() - self.joined_at
            self._event(
                "remote_lost",
                f"remote collector on {self.host} left after {seconds:.0f} s ({reason})",
                remote_run=self.source, reason=reason, connected_s=round(seconds, 1),
            )  # fmt: skip

    def _pong(self, message: dict[str, Any]) -> None:
        sample = ClockSample.of(_number(message, "t0"), _number(message, "t1"), time.time())
        self.clock.add(sample)
        best = self.clock.best
        if best is not None and abs(best.offset_s - self.reported_offset) > CLOCK_REPORT_S:
            self._clock_event(best)

    def _clock_event(self, best: ClockSample) -> None:
        self.reported_offset = best.offset_s
        self._event(
            "clock_offset",
            f"the clock of {self.host} is {best.offset_s:+.3f} s off this machine's "
            f"(round trip {best.delay_s * 1000:.1f} ms); its timestamps are corrected",
            offset_s=round(best.offset_s, 4), delay_s=round(best.delay_s, 4),
        )  # fmt: skip

    def _write(self) -> None:
        last_ping = time.monotonic()
        while True:
            try:
                batch = self.batches.get(timeout=PING_EVERY_S)
            except queue.Empty:
                batch = {}
            if batch is None:
                return
            try:
                if batch:
                    self._import(batch)
                if time.monotonic() - last_ping >= PING_EVERY_S:
                    last_ping = time.monotonic()
                    self.channel.send({"type": "ping", "t0": time.time()})
            except WireError:
                pass  # the reader sees the end too
            except ImportGap as exc:
                self.receiver.event("collector_error", f"remote {self.host}: {exc}", None)
                self.close(wait=False)
            except Exception as exc:  # noqa: BLE001 - recorded; the connection ends
                self.receiver.event(
                    "collector_error", f"remote {self.host}: {type(exc).__name__}: {exc}", None
                )
                self.close(wait=False)

    def _import(self, batch: dict[str, Any]) -> None:
        fields = (batch.get("file"), batch.get("offset"), batch.get("end"), batch.get("lines"))
        file, offset, end, lines = fields
        if not (isinstance(file, str) and isinstance(offset, int) and isinstance(end, int)):
            raise ImportGap("a batch without file, offset and end")
        if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
            raise ImportGap(f"{file}: a batch whose lines are not strings")
        importer = self.receiver.importer
        count = importer.take(
            self.source, file, offset, end, lines, self.targets, self.clock.offset_s, self.host
        )
        self.channel.send({"type": "ack", "seq": batch.get("seq")})
        if not self.behind:
            return
        self.backfilled += count
        have = importer.offsets(self.source)
        if all(have.get(f, 0) >= size for f, size in self.behind.items()):
            self._event(
                "remote_backfilled",
                f"{self.backfilled} records recorded on {self.host} while apart are in",
                records=self.backfilled,
                seconds=round(time.monotonic() - self.joined_at, 1),
            )
            self.behind = {}

    def close(self, wait: bool) -> None:
        """End the connection; with `wait`, after its writer wrote what was queued."""
        self._closed.set()
        self.channel.close()
        if wait and self._writer.is_alive() and threading.current_thread() is not self._writer:
            self._writer.join(WRITER_JOIN_S)
