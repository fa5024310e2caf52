"""The adapter interface every chat protocol implements.

An `Adapter` says its kind and the [protocol] keys it reads (`kind`, `settings`;
soak.protocols.registry lists the kinds soak ships), is made once per run from the
profile's [protocol] table and opens one `Conversation` per connection. A
conversation sends prompts (and, if the protocol has one, pings) and turns whatever
the server sends into `Frame`s: token, done, error, pong, invalid or other.
Everything else (timeouts, outcomes, violations, nonce checks) is
protocol-independent and lives in `soak.protocols.turn`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from soak.protocols.settings import KEEPALIVE, OPTIONS, Spec

TOKEN = "token"
DONE = "done"
ERROR = "error"
PONG = "pong"
INVALID = "invalid"  # a frame the protocol cannot parse (e.g. not JSON)
OTHER = "other"
FRAME_KINDS = (TOKEN, DONE, ERROR, PONG, INVALID, OTHER)


@dataclass(frozen=True, slots=True)
class Frame:
    """One recognised frame.

    kind: one of FRAME_KINDS. request_id: the request the frame says it belongs
    to (None when the protocol does not say). text: token text, final reply text
    of a done frame, or error text. raw: the frame as received (for anomaly
    records). seq: the frame's sequence number when the protocol numbers frames.
    """

    kind: str
    request_id: str | None
    text: str
    raw: str
    seq: int | None = None


class ConnectionLost(Exception):
    """The connection closed or failed; `code` and `reason` as the server gave them."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"connection lost (code {code}): {reason}")
        self.code = code
        self.reason = reason


class Conversation(ABC):
    """One open chat connection carrying one or more turns.

    Implementations must be usable from one greenlet/thread at a time; they may
    use background threads internally (they become greenlets in the load process).
    """

    #: The server's session id for this conversation, when it gives one.
    session_id: str | None = None
    #: Whether `send_ping` works: a PONG frame then follows in `receive`.
    supports_ping: bool = False
    #: Whether a new connection can carry on the session of an earlier one (`resume`):
    #: the protocol names the session in what the client sends, as a web UI's reconnect.
    resumable: bool = False
    #: Whether an ERROR frame ends the turn; False: the server still sends its terminal
    #: frame after the error, and the turn reads on to it (and is an error).
    error_ends_turn: bool = True

    def resume(self, session_id: str) -> None:
        """Carry on the chat's earlier session on this new connection (when `resumable`)."""
        self.session_id = session_id

    def notice(self, kind: str, message: str) -> None:
        """Tell soak that the server lacks a feature the profile expected (no ping method,
        no sequence numbers): recorded once as an event, and never a turn's problem."""
        self.__dict__.setdefault("_notices", []).append((kind, message))

    def take_notices(self) -> list[tuple[str, str]]:
        """The notices since the last call (kind, message)."""
        return self.__dict__.pop("_notices", [])

    @abstractmethod
    def send_prompt(self, prompt: str, request_id: str) -> None:
        """Send one user turn. Raises ConnectionLost."""

    @abstractmethod
    def receive(self, timeout: float) -> Frame | None:
        """The next frame, or None when nothing came within `timeout` seconds.

        Raises ConnectionLost when the connection closes.
        """

    def settle(self) -> None:
        """Before a turn, outside its clock: finish what the previous turn left unread (the
        end of an HTTP response after its terminal frame) so that the next request reuses
        the connection. Frames found stay queued for the turn to judge. Raises
        ConnectionLost."""
        return None  # a message-based protocol leaves nothing half-read

    def plan_ping(self, at: float) -> None:
        """soak will send a protocol ping at monotonic time `at` (s): a transport keepalive
        due a little before it waits for it, so an idle chat wakes once, not twice. Default:
        nothing to fold."""
        return None  # no transport keepalive of its own

    def send_ping(self) -> None:
        """Send one protocol ping; its answer comes as a PONG frame. Raises ConnectionLost."""
        raise NotImplementedError(f"{type(self).__name__} has no ping")

    @abstractmethod
    def close(self) -> None:
        """Close the connection; never raises."""


class Adapter(ABC):
    """Creates conversations with one target for one protocol configuration.

    `config` is the profile's [protocol] table with values checked and defaults
    filled in: the keys every kind reads (kind, prompt, require_nonce) and the
    adapter's own `settings`, nothing else.
    """

    #: The name a profile gives as [protocol] kind, for an adapter in the registry
    #: (soak.protocols.registry); your own adapter is named as 'package.module:Class'.
    kind: ClassVar[str] = ""
    #: The [protocol] keys this adapter reads besides every kind's, each with how to
    #: check it and its default; profile validation takes them from here, and a key of
    #: another kind is an error. Your own adapter reads `keepalive` and `options` (its
    #: settings as one table) unless it declares its own.
    settings: ClassVar[dict[str, Spec]] = {"keepalive": KEEPALIVE, "options": OPTIONS}
    #: The URL schemes of the targets this adapter speaks to (checked when a profile loads).
    schemes: ClassVar[tuple[str, ...]] = ("ws", "wss")

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    @abstractmethod
    def connect(self, url: str, timeout: float) -> Conversation:
        """Open a conversation (connect and handshake) within `timeout` seconds.

        Raises ConnectionLost when the target refuses or the handshake fails.
        """

    def resume_url(self, url: str, session_id: str) -> str:
        """The URL that reconnects to the chat's session `session_id` (default: `url`)."""
        return url


def fill_placeholders(template: Any, values: dict[str, str]) -> Any:
    """Fill {placeholders} in every string of a JSON template (or in one string)."""
    if isinstance(template, dict):
        return {key: fill_placeholders(value, values) for key, value in template.items()}
    if isinstance(template, list):
        return [fill_placeholders(value, values) for value in template]
    if isinstance(template, str):
        for key, value in values.items():
            template = template.replace("{" + key + "}", value)
    return template
