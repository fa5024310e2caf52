"""The protocol kinds: kind name -> adapter class, read by profile validation and the load.

Each adapter class says its `kind` and the [protocol] keys it reads (`settings`, see
soak.protocols.base.Adapter); this module lists the built-in classes once. soak.profile
takes from here which [protocol] keys a kind reads and how each is checked, and the
load process makes the run's adapter from the same table (`adapter_for`).

Adding a protocol: write its adapter class with `kind` and `settings`, and add it to
BUILTIN below (or pass it to `register`). Your own adapter outside soak needs no entry:
a profile names it as 'package.module:Class', imported when the profile loads, and it
declares its `settings` the same way (by default: `keepalive` and an `options` table).

Imports neither locust nor gevent: the adapters use blocking clients.
"""

from __future__ import annotations

import importlib
from typing import Any

from soak.errors import ProfileError
from soak.protocols.base import Adapter
from soak.protocols.http_events import HttpEventsAdapter, NdjsonAdapter
from soak.protocols.json_events import JsonEventsAdapter
from soak.protocols.jsonrpc import JsonRpcAdapter
from soak.protocols.openai_chat import OpenAiChatAdapter
from soak.protocols.settings import Spec, boolean, string
from soak.protocols.socketio_agent import SocketIoAgentAdapter

#: The adapters soak ships, in the order messages list their kinds.
BUILTIN: tuple[type[Adapter], ...] = (
    JsonEventsAdapter,
    JsonRpcAdapter,
    SocketIoAgentAdapter,
    OpenAiChatAdapter,
    HttpEventsAdapter,
    NdjsonAdapter,
)
#: The kind of a profile that names none: the built-in target's protocol.
DEFAULT_KIND = JsonEventsAdapter.kind
#: Who reads the settings `Adapter` declares by default (in messages).
YOUR_OWN = "your own adapter"

#: Kind name -> adapter class: the kinds a profile may name besides 'package.module:Class'.
ADAPTERS: dict[str, type[Adapter]] = {}


def _settings_problem(adapter: type[Adapter]) -> str | None:
    """What is wrong with an adapter class's `settings`, or None."""
    settings = adapter.settings
    if not isinstance(settings, dict) or not all(
        isinstance(key, str) and isinstance(spec, Spec) for key, spec in settings.items()
    ):
        return (
            f"{adapter.__name__}.settings must map [protocol] key names to "
            f"soak.protocols.settings.Spec, got {settings!r}"
        )
    common = sorted(set(settings) & set(COMMON))
    if common:
        return (
            f"{adapter.__name__}.settings declares {common[0]!r}, which every kind reads "
            "already; give the setting another name"
        )
    return None


def register(adapter: type[Adapter]) -> type[Adapter]:
    """Make `adapter` a kind profiles can name, by its `kind`; returns it (a decorator)."""
    kind = adapter.kind
    if not isinstance(kind, str) or not kind or ":" in kind:
        raise ValueError(f"{adapter.__name__}.kind must be a name without ':', got {kind!r}")
    if ADAPTERS.get(kind, adapter) is not adapter:
        raise ValueError(f"kind {kind!r} is {ADAPTERS[kind].__name__} already")
    problem = _settings_problem(adapter)
    if problem:
        raise ValueError(problem)
    ADAPTERS[kind] = adapter
    return adapter


def _unknown_kind(kind: str) -> str:
    return (
        f"unknown protocol {kind!r}; valid kinds: {', '.join(ADAPTERS)}, "
        "or your own adapter as 'package.module:Class'"
    )


def adapter_class(kind: str) -> type[Adapter]:
    """The adapter class of a protocol kind: a registered name or `package.module:Class`."""
    if ":" not in kind:
        if kind not in ADAPTERS:
            raise ProfileError(f"[protocol] kind: {_unknown_kind(kind)}.")
        return ADAPTERS[kind]
    module_name, _, class_name = kind.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ProfileError(
            f"[protocol] kind = {kind!r}: cannot import module {module_name!r} ({exc}). "
            "Make it importable (install it, or run soak from the folder that holds it)."
        ) from None
    found = getattr(module, class_name, None)
    if not (isinstance(found, type) and issubclass(found, Adapter)):
        raise ProfileError(
            f"[protocol] kind = {kind!r}: {module_name} has no class {class_name!r} derived "
            "from soak.protocols.Adapter."
        )
    problem = _settings_problem(found)
    if problem:
        raise ProfileError(f"[protocol] kind = {kind!r}: {problem}.")
    return found


def adapter_for(protocol: dict[str, Any]) -> Adapter:
    """The adapter named by a profile's [protocol] kind, configured by that table."""
    return adapter_class(protocol.get("kind", DEFAULT_KIND))(protocol)


def _kind(value: Any) -> str:
    """A registered kind, or `package.module:Class` (imported now, so typos fail early)."""
    kind = string(value)
    if ":" not in kind:
        if kind not in ADAPTERS:
            raise ValueError(_unknown_kind(kind))
        return kind
    try:
        adapter_class(kind)
    except ProfileError as exc:
        raise ValueError(exc.message.removeprefix("[protocol] kind = ").rstrip(".")) from None
    return kind


#: The [protocol] keys every kind reads (the turn's, not an adapter's).
COMMON: dict[str, Spec] = {
    "kind": Spec(_kind, DEFAULT_KIND, f'kind = "{DEFAULT_KIND}"'),
    "prompt": Spec(string, "Reply to request {request_id}. nonce={nonce}", 'prompt = "..."'),
    "require_nonce": Spec(boolean, False, "require_nonce = true  # reply must echo {nonce}"),
}


def settings_of(kind: str) -> dict[str, Spec]:
    """The [protocol] keys a kind reads, each with its spec: COMMON, then its adapter's."""
    return {**COMMON, **adapter_class(kind).settings}


def known_settings() -> dict[str, Spec]:
    """Every [protocol] key some kind reads (the first declaration's spec of each)."""
    specs = dict(COMMON)
    for adapter in (*ADAPTERS.values(), Adapter):
        for key, spec in adapter.settings.items():
            specs.setdefault(key, spec)
    return specs


def readers(key: str) -> list[str]:
    """Who reads a [protocol] key: the registered kinds, and your own adapter by default."""
    kinds = [kind for kind, adapter in ADAPTERS.items() if key in adapter.settings]
    return [*kinds, YOUR_OWN] if key in Adapter.settings else kinds


for _adapter in BUILTIN:
    register(_adapter)
