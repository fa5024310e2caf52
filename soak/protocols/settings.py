"""Typed profile fields: `Spec` and the converters settings are declared with.

An adapter declares the [protocol] keys it reads as `settings = {key: Spec(...)}`
(soak.protocols.base.Adapter); soak.profile checks every other section with the same
`Spec`. A converter takes the value as written in TOML and returns it checked and
converted, or raises ValueError saying why (the profile adds which field and an
example of what to write). Imports nothing but the standard library and soak.units:
profile validation reads this without the load's libraries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from soak.units import parse_duration


@dataclass(frozen=True)
class Spec:
    """One profile field: how to check and convert it, its default, a valid example."""

    convert: Callable[[Any], Any]
    default: Any
    example: str
    required: bool = False


def integer(minimum: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"expected a whole number >= {minimum}, got {value!r}")
        return value

    return convert


def number(minimum: float) -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            raise ValueError(f"expected a number >= {minimum}, got {value!r}")
        return float(value)

    return convert


def duration(minimum: float = 0.0) -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        seconds = parse_duration(value)
        if seconds < minimum:
            raise ValueError(f"must be at least {minimum:g} s, got {value!r}")
        return seconds

    return convert


def string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__} {value!r}")
    return value


def optional_string(value: Any) -> str | None:
    return None if value is None else string(value)


def string_list(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"expected a list of strings, got {value!r}")
    return list(value)


def non_empty_strings(value: Any) -> list[str]:
    strings = string_list(value)
    if not strings:
        raise ValueError("expected at least one string")
    return strings


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def table(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"expected an inline table {{ key = value, ... }}, got {value!r}")
    return value


def headers(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError(f"expected an inline table of header names to strings, got {value!r}")
    return dict(value)


def http_call(value: Any, example: str, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """An HTTP call a profile describes: {path, method = "POST", body = {...}, headers =
    {...}} and the `extra` keys it requires (strings); `example` says what to write."""
    keys = {"path", "method", "body", "headers", *extra}
    if not isinstance(value, dict) or not {"path", *extra} <= set(value):
        raise ValueError(f"expected {example} (method, body, headers optional), got {value!r}")
    unknown = sorted(set(value) - keys)
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(keys))}")
    path = string(value["path"])
    if not path.startswith("/"):
        raise ValueError(f"path must start with /, got {path!r}")
    return {
        "path": path,
        "method": string(value.get("method", "POST")).upper(),
        "body": table(value.get("body", {})),
        "headers": headers(value.get("headers", {})),
        **{key: string(value[key]) for key in extra},
    }


#: WebSocket keepalive pings (the json-events and jsonrpc transports, and your own adapter's).
KEEPALIVE = Spec(duration(), 20.0, 'keepalive = "20s"  # WebSocket pings; 0: off')
#: Your own adapter's settings as one table, when it declares none of its own.
OPTIONS = Spec(table, {}, "options = { ... }  # for your own adapter")
