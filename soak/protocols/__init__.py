"""Chat protocol adapters: turn one chat turn into frames and recognise the reply.

An adapter connects to a target and returns a `Conversation`; the shared
`run_turn` drives one turn over any conversation and classifies its outcome. Each
adapter class declares its kind and the [protocol] keys it reads; soak.protocols.registry
maps kinds to adapter classes for profile validation and the load alike.
No module here imports locust or gevent: adapters use blocking clients (soak's own
small WebSocket client on websockets' Sans-I/O protocol, soak.protocols.wsjson;
python-socketio's client; requests) that become cooperative once the load process has
monkey-patched the standard library.
"""

from soak.protocols.base import (
    DONE,
    ERROR,
    INVALID,
    OTHER,
    PONG,
    TOKEN,
    Adapter,
    ConnectionLost,
    Conversation,
    Frame,
)
from soak.protocols.registry import adapter_class, adapter_for, register

__all__ = [
    "DONE",
    "ERROR",
    "INVALID",
    "OTHER",
    "PONG",
    "TOKEN",
    "Adapter",
    "ConnectionLost",
    "Conversation",
    "Frame",
    "adapter_class",
    "adapter_for",
    "register",
]
