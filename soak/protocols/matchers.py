"""Frame matchers: which JSON events are tokens, terminal frames, errors.

A profile describes a server's events declaratively (json-events over WebSocket, sse
and ndjson over HTTP): `{path = "type", value = "token"}` (value may be a list of
values), `{path = "parent_tool_use_id", absent = true}`, or a list of such conditions
that must all hold. `match` and friends check them when the profile loads;
`compile_matcher` makes the fast callable the load uses per frame. Also the JSON
templates a profile sends (`template`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from soak.protocols.settings import string
from soak.protocols.wsjson import lookup_parts


# --- in the load: compiled matchers -----------------------------------------------
class Condition:
    """One compiled `{path, value}` / `{path, absent}` condition (value may be a list;
    without value or absent: the path exists)."""

    __slots__ = ("absent", "parts", "wanted")

    def __init__(self, condition: dict[str, Any]) -> None:
        self.parts = tuple(condition["path"].split("."))
        wanted = condition.get("value")
        self.wanted = frozenset(wanted) if isinstance(wanted, list) else wanted
        self.absent = bool(condition.get("absent"))

    def __call__(self, data: Any) -> bool:
        found = lookup_parts(data, self.parts)
        if self.absent:
            return found is None
        if self.wanted is None:
            return found is not None
        if isinstance(self.wanted, frozenset):
            return isinstance(found, Hashable) and found in self.wanted
        return found == self.wanted


class Matcher:
    """A compiled matcher: one condition, or a list of conditions that must all hold."""

    __slots__ = ("conditions",)

    def __init__(self, matcher: dict[str, Any] | list[dict[str, Any]]) -> None:
        items = matcher if isinstance(matcher, list) else [matcher]
        self.conditions = tuple(Condition(item) for item in items)

    def __call__(self, data: Any) -> bool:
        return all(condition(data) for condition in self.conditions)

    @staticmethod
    def describe(matcher: dict[str, Any] | list[dict[str, Any]]) -> str:
        """`type = 'session_switched'` (and ... for a list): for messages."""
        items = matcher if isinstance(matcher, list) else [matcher]
        said = [
            f"{item['path']} absent"
            if item.get("absent")
            else f"{item['path']} = {item.get('value')!r}"
            for item in items
        ]
        return " and ".join(said)


def never(data: Any) -> bool:
    return False


def compile_condition(condition: dict[str, Any]) -> Callable[[Any], bool]:
    """One condition as a callable that does what `Condition` does; a top-level key (the
    common `type = "token"`) is read straight from a plain dict, no lookup call."""
    parts = tuple(condition["path"].split("."))
    if len(parts) != 1:
        return Condition(condition)
    key = parts[0]
    wanted = condition.get("value")
    if condition.get("absent"):

        def is_absent(data: Any) -> bool:
            found = data.get(key) if data.__class__ is dict else lookup_parts(data, parts)
            return found is None

        return is_absent
    if wanted is None:

        def is_present(data: Any) -> bool:
            found = data.get(key) if data.__class__ is dict else lookup_parts(data, parts)
            return found is not None

        return is_present
    if isinstance(wanted, list):
        wanted_set = frozenset(wanted)

        def is_one_of(data: Any) -> bool:
            found = data.get(key) if data.__class__ is dict else lookup_parts(data, parts)
            return isinstance(found, Hashable) and found in wanted_set

        return is_one_of

    def is_value(data: Any) -> bool:
        found = data.get(key) if data.__class__ is dict else lookup_parts(data, parts)
        return found == wanted

    return is_value


def compile_matcher(matcher: dict[str, Any] | list | None) -> Callable[[Any], bool]:
    """The per-frame callable of a matcher: what `Matcher` says, in fewer calls."""
    if not matcher:
        return never
    items = matcher if isinstance(matcher, list) else [matcher]
    tests = [compile_condition(item) for item in items]
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        first, second = tests

        def both(data: Any) -> bool:
            return first(data) and second(data)

        return both
    return Matcher(matcher)


# --- in the profile: checked settings -----------------------------------------------
def condition(value: Any) -> dict[str, Any]:
    """One matcher condition: {path = "type", value = "token"} (value may be a list), or
    {path = "parent_tool_use_id", absent = true}."""
    keys = {"path", "value", "absent"}
    if not isinstance(value, dict) or set(value) - keys or "path" not in value:
        raise ValueError(
            f'expected {{path = "type", value = "token"}} or {{path = "...", absent = true}}, '
            f"got {value!r}"
        )
    string(value["path"])
    wanted = value.get("value")
    if isinstance(wanted, dict):
        raise ValueError(f"value must be a string, number or list, got {wanted!r}")
    if "absent" in value and (value["absent"] is not True or "value" in value):
        raise ValueError(f"absent must be true, without a value, got {value!r}")
    if "absent" in value:
        return {"path": value["path"], "absent": True}
    return {"path": value["path"], "value": wanted}


def match(value: Any) -> dict[str, Any] | list[dict[str, Any]]:
    """A frame matcher: one condition, or a list of conditions that must all hold."""
    if isinstance(value, list):
        if not value:
            raise ValueError("expected at least one condition in the list")
        return [condition(item) for item in value]
    return condition(value)


def optional_match(value: Any) -> dict[str, Any] | list[dict[str, Any]] | None:
    return None if value is None else match(value)


def template(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"expected an inline table (the JSON frame to send), got {value!r}")
    return value


def optional_template(value: Any) -> dict[str, Any] | None:
    return None if value is None else template(value)
