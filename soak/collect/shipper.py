"""The remote side: `soak collect --join` ships its run directory's target files to a `soak run`.

The remote collect writes its own run directory as always; that is the durable
buffer. The shipper tails its files (whole lines only, BATCH_BYTES at a time) and
sends them with byte offsets; the orchestrator says on each (re)connect how far it
has each file, so a cut of minutes is backfilled from the files, and memory stays
bounded by the send window. A cut connection is retried with backoff; a refusal
(wrong secret, unknown target) stops shipping and ends the collect with the reason.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from soak.collect.importer import read_complete_lines, source_files, source_path
from soak.collect.wire import (
    PROTOCOL,
    SILENCE_S,
    Channel,
    Refused,
    WireError,
    client_proof,
    nonce,
    proof,
    proofs_match,
)
from soak.rundir import RunDir

#: Batches sent but not acknowledged, at most (each at most wire.BATCH_BYTES).
SEND_WINDOW = 8
#: Reconnect delays: the first, doubling up to the cap, in seconds.
BACKOFF_FIRST_S, BACKOFF_CAP_S = 0.5, 8.0
#: How long to wait for a TCP connection, in seconds.
CONNECT_S = 5.0
#: How often files with nothing new are read again, in seconds.
POLL_S = 0.5
#: After the collect ends, how long the shipper goes on trying to ship the rest, in seconds.
DRAIN_S = 20.0

#: Writes one event of the remote collect: kind, message, extra fields.
EventSink = Callable[..., None]


class Window:
    """Counts batches in flight; a sender waits while SEND_WINDOW are unacknowledged."""

    def __init__(self, size: int | None = None) -> None:
        self.size = size or SEND_WINDOW
        self.in_flight = 0
        self.broken: str | None = None
        self._cond = threading.Condition()

    def acquire(self) -> None:
        with self._cond:
            while self.in_flight >= self.size and not self.broken:
                self._cond.wait()
            if self.broken:
                raise WireError(self.broken)
            self.in_flight += 1

    def release(self) -> None:
        with self._cond:
            self.in_flight = max(self.in_flight - 1, 0)
            self._cond.notify_all()

    def breaks(self, reason: str) -> None:
        with self._cond:
            self.broken = reason
            self._cond.notify_all()

    def idle(self, timeout: float) -> bool:
        """Wait up to `timeout` s for nothing in flight; whether so (WireError once broken)."""
        with self._cond:
            self._cond.wait_for(lambda: self.in_flight == 0 or self.broken, timeout)
            if self.broken:
                raise WireError(self.broken)
            return self.in_flight == 0


class Shipper:
    """Ships the files of `targets` in `run` to the orchestrator at `address`."""

    def __init__(
        self,
        run: RunDir,
        address: tuple[str, int],
        secret: str,
        targets: list[str],
        event: EventSink,
    ) -> None:
        self.run = run
        self.address = address
        self.secret = secret
        self.targets = targets
        self.event = event
        self.files = source_files({name: name for name in targets})
        self.source: str = run.manifest().get("run_id") or run.path.name
        #: Why the orchestrator refused this collector (shipping stopped), or None.
        self.failure: str | None = None
        self.finishing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-shipper", daemon=True)

    @property
    def where(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    def start(self) -> None:
        self._thread.start()

    def finish(self) -> None:
        """Ship what is left (up to DRAIN_S), then stop; call once the sampling has stopped."""
        self.finishing.set()
        self._thread.join(DRAIN_S + CONNECT_S + SILENCE_S)

    def _run(self) -> None:
        delay, deadline = BACKOFF_FIRST_S, float("inf")
        while True:
            if self.finishing.is_set():
                deadline = min(deadline, time.monotonic() + DRAIN_S)
            try:
                self._session(deadline)
                return
            except Refused as exc:
                self.failure = f"the orchestrator at {self.where} refused this collector: {exc}"
                self.event("remote_refused", self.failure, reason=str(exc))
                return
            except WireError as exc:
                lost = f"connection to {self.where} lost: {exc}"
                self.event("remote_lost", lost, reason=str(exc))
                delay = BACKOFF_FIRST_S
            except OSError as exc:  # could not connect: try again, waiting longer each time
                delay = min(delay * 2, BACKOFF_CAP_S)
                if self.finishing.is_set() and time.monotonic() > deadline:
                    self.event(
                        "remote_unshipped",
                        f"could not reach {self.where} ({exc.strerror or exc}) before the "
                        f"collect ended; merge the rest with: soak merge RUN {self.run.path}",
                    )
                    return
            if self.finishing.is_set() and time.monotonic() > deadline:
                return
            if self.finishing.is_set():
                time.sleep(delay)  # draining: no event to wait on any more
            else:
                self.finishing.wait(delay)

    def _session(self, deadline: float) -> None:
        """One connection: handshake, then ship until finished and drained."""
        sock = socket.create_connection(self.address, timeout=CONNECT_S)
        sock.settimeout(SILENCE_S)
        channel = Channel(sock)
        send_lock = threading.Lock()
        window = Window()
        reader: threading.Thread | None = None
        try:
            offsets = self._handshake(channel)
            self.event(
                "remote_joined", f"joined the run at {self.where}; shipping from its offsets",
                offsets=offsets,
            )  # fmt: skip
            reader = threading.Thread(
                target=_read, args=(channel, send_lock, window), name="soak-shipper-read",
                daemon=True,
            )  # fmt: skip
            reader.start()
            self._ship(channel, send_lock, window, offsets, deadline)
        finally:
            window.breaks("closed")
            channel.close()
            if reader is not None:
                reader.join(CONNECT_S)

    def _handshake(self, channel: Channel) -> dict[str, int]:
        challenge = channel.expect("challenge")
        if challenge.get("protocol") != PROTOCOL or not isinstance(challenge.get("nonce"), str):
            raise Refused(f"it speaks protocol {challenge.get('protocol')!r}, this soak {PROTOCOL}")
        hello: dict[str, Any] = {
            "type": "hello",
            "protocol": PROTOCOL,
            "source": self.source,
            "host": socket.gethostname(),
            "targets": self.targets,
            "sizes": {f: _size(source_path(self.run, f)) for f in self.files},
            "nonce": nonce(),
        }
        hello["proof"] = client_proof(self.secret, challenge["nonce"], hello)
        channel.send(hello)
        welcome = channel.expect("welcome")
        expected = proof(self.secret, "server", hello["nonce"], challenge["nonce"])
        if not proofs_match(expected, welcome.get("proof")):
            raise Refused("it did not prove it knows the secret (another secret, or not soak)")
        given = welcome.get("offsets") if isinstance(welcome.get("offsets"), dict) else {}
        while (message := channel.receive())["type"] != "start":
            if message["type"] == "ping":
                channel.send(_pong(message))
        return {f: int(given.get(f, 0)) for f in self.files}

    def _ship(
        self,
        channel: Channel,
        send_lock: threading.Lock,
        window: Window,
        offsets: dict[str, int],
        deadline: float,
    ) -> None:
        seq = 0
        while True:
            sent = False
            for file in self.files:
                lines, end = read_complete_lines(source_path(self.run, file), offsets[file])
                if end == offsets[file]:
                    continue
                window.acquire()
                seq += 1
                batch = {"type": "batch", "seq": seq, "file": file, "offset": offsets[file]}
                with send_lock:
                    channel.send({**batch, "end": end, "lines": lines})
                offsets[file], sent = end, True
            if sent:
                continue
            if self.finishing.is_set():
                if window.idle(max(0.0, min(POLL_S, deadline - time.monotonic()))):
                    return  # everything written is acknowledged
                if time.monotonic() > deadline:
                    raise WireError("the collect ended before everything was acknowledged")
            else:
                self.finishing.wait(POLL_S)


def _read(channel: Channel, send_lock: threading.Lock, window: Window) -> None:
    """Acknowledgements release the window; pings get a pong; the end breaks the window."""
    try:
        while True:
            message = channel.receive()
            if message["type"] == "ack":
                window.release()
            elif message["type"] == "ping":
                with send_lock:
                    channel.send(_pong(message))
            elif message["type"] == "refused":
                raise WireError(f"refused: {message.get('reason')}")
    except WireError as exc:
        window.breaks(str(exc))


def _pong(ping: dict[str, Any]) -> dict[str, Any]:
    return {"type": "pong", "t0": ping.get("t0"), "t1": time.time()}


def _size(path: Any) -> int:
    with contextlib.suppress(OSError):
        return path.stat().st_size
    return 0
