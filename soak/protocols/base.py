"""The adapter interface every chat protocol implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from soak.errors import ProfileError

TOKEN = "token"
DONE = "done"
ERROR = "error"
OTHER = "other"


@dataclass(frozen=True)
class Frame:
    """One recognised frame: its kind, the request it belongs to, its text."""

    kind: str  # token | done | error | other
    request_id: str | None
    text: str
    raw: str


class ConnectionLost(Exception):
    """The connection closed or failed; `code` and `reason` as the server gave them."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"connection lost (code {code}): {reason}")
        self.code = code
        self.reason = reason


class Conversation(ABC):
    """One open chat connection carrying one or more turns."""

    session_id: str | None = None

    @abstractmethod
    def send_prompt(self, prompt: str, request_id: str) -> None:
        """Send one user turn. Raises ConnectionLost."""

    @abstractmethod
    def receive(self, timeout: float) -> Frame | None:
        """The next frame, or None when nothing came within `timeout` seconds.

        Raises ConnectionLost when the connection closes.
        """

    @abstractmethod
    def close(self) -> None:
        """Close the connection; never raises."""


class Adapter(ABC):
    """Creates conversations with one target for one protocol configuration."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    @abstractmethod
    def connect(self, url: str, timeout: float) -> Conversation:
        """Open a conversation (connect and handshake) within `timeout` seconds.

        Raises ConnectionLost when the target refuses or the handshake fails.
        """


def adapter_for(protocol: dict[str, Any]) -> Adapter:
    """The adapter named by a profile's [protocol] kind."""
    from soak.protocols.json_events import JsonEventsAdapter

    adapters: dict[str, type[Adapter]] = {"json-events": JsonEventsAdapter}
    kind = protocol.get("kind", "json-events")
    if kind not in adapters:
        raise ProfileError(
            f"[protocol] kind: unknown protocol {kind!r}; valid kinds: {', '.join(adapters)}."
        )
    return adapters[kind](protocol)
