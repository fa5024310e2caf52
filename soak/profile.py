"""Profiles: load a TOML file, validate it strictly, resolve ${ENV} secrets.

A profile says what to soak (targets), how to talk to it (protocol), how hard
and how long (load), how often to sample (collector) and what passes
(criteria). Every error names the file, the field, why it is wrong and what to
write instead, so a typo fails in the first second and not after three days.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from soak.errors import ProfileError
from soak.units import parse_duration

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SECRET_QUERY_KEYS = re.compile(r"token|key|secret|password|auth|sig", re.IGNORECASE)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,59}$")


# --- field specs -----------------------------------------------------------------
@dataclass(frozen=True)
class Spec:
    """One profile field: how to check and convert it, its default, a valid example."""

    convert: Callable[[Any], Any]
    default: Any
    example: str
    required: bool = False


def _integer(minimum: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"expected a whole number >= {minimum}, got {value!r}")
        return value

    return convert


def _number(minimum: float) -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            raise ValueError(f"expected a number >= {minimum}, got {value!r}")
        return float(value)

    return convert


def _duration(minimum: float = 0.0) -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        seconds = parse_duration(value)
        if seconds < minimum:
            raise ValueError(f"must be at least {minimum:g} s, got {value!r}")
        return seconds

    return convert


def _think_time(value: Any) -> list[float]:
    """A fixed think time ("1s") or a [min, max] range (["0.5s", "2s"]), in seconds."""
    if isinstance(value, list):
        if len(value) != 2:
            raise ValueError(f"a range needs exactly two durations [min, max], got {value!r}")
        low, high = (parse_duration(v) for v in value)
        if low > high:
            raise ValueError(f"range minimum {low:g} s exceeds its maximum {high:g} s")
        return [low, high]
    seconds = parse_duration(value)
    return [seconds, seconds]


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__} {value!r}")
    return value


def _optional_string(value: Any) -> str | None:
    return None if value is None else _string(value)


def _name(value: Any) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValueError(
            f"expected a short name of letters, digits, '.', '_' or '-', got {value!r}"
        )
    return value


def _ws_url(value: Any) -> str:
    text = _string(value)
    if urlsplit(text).scheme not in ("ws", "wss"):
        raise ValueError(f"expected a ws:// or wss:// URL, got {text!r}")
    return text


def _http_url(value: Any) -> str | None:
    if value is None:
        return None
    text = _string(value)
    if urlsplit(text).scheme not in ("http", "https"):
        raise ValueError(f"expected an http:// or https:// URL, got {text!r}")
    return text


def _optional_pid(value: Any) -> int | None:
    return None if value is None else _integer(1)(value)


def _string_list(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"expected a list of strings, got {value!r}")
    return list(value)


def _match(value: Any) -> dict[str, Any]:
    """A frame matcher: {path = "type", value = "token"} (value may be a list)."""
    if not isinstance(value, dict) or set(value) - {"path", "value"} or "path" not in value:
        raise ValueError(f'expected {{path = "type", value = "token"}}, got {value!r}')
    _string(value["path"])
    wanted = value.get("value")
    if isinstance(wanted, dict):
        raise ValueError(f"value must be a string, number or list, got {wanted!r}")
    return {"path": value["path"], "value": wanted}


def _optional_match(value: Any) -> dict[str, Any] | None:
    return None if value is None else _match(value)


def _template(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"expected an inline table (the JSON frame to send), got {value!r}")
    return value


def _criteria_checks(value: Any) -> list[str]:
    checks = _string_list(value)
    from soak.criteria import parse_criteria  # imported late: criteria imports nothing heavy

    parse_criteria(checks)
    return checks


TARGET_FIELDS: dict[str, Spec] = {
    "name": Spec(_name, None, 'name = "patched"', required=True),
    "url": Spec(_ws_url, None, 'url = "ws://127.0.0.1:8765/ws"', required=True),
    "health": Spec(_http_url, None, 'health = "http://127.0.0.1:8765/health"'),
    "pid": Spec(_optional_pid, None, "pid = 4242"),
    "build": Spec(_optional_string, None, 'build = "v1.4.2-patched"'),
}

SECTIONS: dict[str, dict[str, Spec]] = {
    "protocol": {
        "kind": Spec(_string, "json-events", 'kind = "json-events"'),
        "prompt": Spec(_string, "Reply to request {request_id}. nonce={nonce}", 'prompt = "..."'),
        "send": Spec(
            _template,
            {
                "type": "message",
                "content": "{prompt}",
                "session_id": "{session_id}",
                "request_id": "{request_id}",
            },
            'send = { type = "message", content = "{prompt}" }',
        ),
        "ready": Spec(
            _optional_match,
            {"path": "type", "value": "session_switched"},
            'ready = { path = "type", value = "session_switched" }',
        ),
        "session_id_path": Spec(_optional_string, "session_id", 'session_id_path = "session_id"'),
        "token": Spec(_match, {"path": "type", "value": "token"}, 'token = { path = "type", ... }'),
        "token_text_path": Spec(_optional_string, "content", 'token_text_path = "content"'),
        "done": Spec(
            _match, {"path": "type", "value": ["done", "stopped"]}, 'done = { path = "type", ... }'
        ),
        "error": Spec(
            _optional_match, {"path": "type", "value": "error"}, 'error = { path = "type", ... }'
        ),
        "error_text_path": Spec(_optional_string, "error", 'error_text_path = "error"'),
        "request_id_path": Spec(_optional_string, "request_id", 'request_id_path = "request_id"'),
    },
    "load": {
        "users": Spec(_integer(1), 10, "users = 20"),
        "spawn_rate": Spec(_number(0.01), 10.0, "spawn_rate = 10  # users started per second"),
        "think_time": Spec(_think_time, [1.0, 1.0], 'think_time = "1s"  or  ["0.5s", "2s"]'),
        "duration": Spec(_duration(1.0), 600.0, 'duration = "2h"'),
        "idle_after": Spec(_duration(), 0.0, 'idle_after = "30s"  # no load, to measure idle CPU'),
        "connect_timeout": Spec(_duration(0.1), 10.0, 'connect_timeout = "10s"'),
        "first_token_timeout": Spec(_duration(0.1), 30.0, 'first_token_timeout = "30s"'),
        "reply_timeout": Spec(_duration(0.1), 120.0, 'reply_timeout = "2m"'),
        "turns_per_connection": Spec(_integer(0), 0, "turns_per_connection = 0  # 0: keep open"),
        "interval": Spec(_duration(0.5), 10.0, 'interval = "10s"  # chat aggregate interval'),
    },
    "collector": {
        "interval": Spec(_duration(0.1), 5.0, 'interval = "5s"'),
        "health_timeout": Spec(_duration(0.1), 5.0, 'health_timeout = "5s"'),
        "loop_lag_field": Spec(
            _optional_string, None, 'loop_lag_field = "diagnostics.loop_lag_ms"'
        ),
    },
    "criteria": {
        "warmup": Spec(_duration(), 60.0, 'warmup = "5m"'),
        "checks": Spec(_criteria_checks, [], 'checks = ["threads.growth_per_hour < 5"]'),
    },
}

TOP_LEVEL = {"name", "description", "targets", *SECTIONS}


# --- the model --------------------------------------------------------------------
@dataclass
class Target:
    """One server under test."""

    name: str
    url: str
    health: str | None = None
    pid: int | None = None
    build: str | None = None


@dataclass
class Profile:
    """A validated profile. Sections other than targets stay plain dicts of checked values."""

    name: str
    description: str
    targets: list[Target]
    protocol: dict[str, Any]
    load: dict[str, Any]
    collector: dict[str, Any]
    criteria: dict[str, Any]
    source: str = "<profile>"
    secrets: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain data with secrets resolved (for the run's own processes, never for disk)."""
        return {
            "name": self.name,
            "description": self.description,
            "targets": [vars(t).copy() for t in self.targets],
            "protocol": copy.deepcopy(self.protocol),
            "load": dict(self.load),
            "collector": dict(self.collector),
            "criteria": copy.deepcopy(self.criteria),
        }

    def redacted(self) -> dict[str, Any]:
        """`to_dict` with every resolved secret and secret-looking URL parameter masked."""
        return _redact(self.to_dict(), self.secrets)

    @property
    def planned_duration_s(self) -> float:
        return float(self.load["duration"] + self.load["idle_after"])


# --- loading -------------------------------------------------------------------------
def load_profile(path: Path | str) -> Profile:
    """Read and validate a TOML profile file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        bundled = sorted(p.name for p in _profiles_dir().glob("*.toml"))
        hint = f" Ready profiles in profiles/: {', '.join(bundled)}." if bundled else ""
        raise ProfileError(f"profile {path} does not exist.{hint}") from None
    except OSError as exc:
        raise ProfileError(f"cannot read profile {path}: {exc.strerror}.") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path} is not valid TOML: {exc}. Check quotes and brackets.") from None
    data.setdefault("name", path.stem)
    return profile_from_mapping(data, source=str(path))


def profile_from_mapping(data: Mapping[str, Any], source: str = "<profile>") -> Profile:
    """Validate a profile given as a mapping (parsed TOML, or the run's own JSON copy)."""
    _check_keys(data, TOP_LEVEL, source, "")
    secrets: list[str] = []
    resolved = _resolve_env(dict(data), source, "", secrets)

    name = _field(resolved, "name", Spec(_name, "profile", 'name = "nightly"'), source, "")
    description = _field(resolved, "description", Spec(_string, "", ""), source, "")
    sections = {
        section: _section(resolved.get(section, {}), specs, source, section)
        for section, specs in SECTIONS.items()
    }
    targets = _targets(resolved.get("targets", []), source)
    profile = Profile(
        name=name,
        description=description,
        targets=targets,
        source=source,
        secrets=secrets,
        **sections,
    )
    _check_consistency(profile)
    return profile


def apply_overrides(
    profile: Profile,
    *,
    targets: list[str] | None = None,
    health: list[str] | None = None,
    pids: list[int] | None = None,
    users: int | None = None,
    duration: str | None = None,
) -> Profile:
    """Return the profile with command-line overrides applied and validated like the file.

    `targets` replaces the profile's targets (names t1, t2, ... unless given as
    NAME=URL); `health` and `pids` pair with targets in order.
    """
    data = profile.to_dict()
    source = f"{profile.source} (command line)"
    if targets:
        data["targets"] = []
        for index, spec in enumerate(targets, start=1):
            name, sep, url = spec.partition("=")
            if not sep or "://" in name:
                name, url = f"t{index}", spec
            data["targets"].append({"name": name, "url": url})
    for option, values, key in (("--health", health, "health"), ("--pid", pids, "pid")):
        if not values:
            continue
        if len(values) > len(data["targets"]):
            raise ProfileError(
                f"{source}: {len(values)} {option} values for {len(data['targets'])} target(s); "
                f"give one {option} per --target, in the same order."
            )
        for target, value in zip(data["targets"], values, strict=False):
            target[key] = value
    if users is not None:
        data["load"]["users"] = users
    if duration is not None:
        data["load"]["duration"] = duration
    result = profile_from_mapping(data, source=source)
    result.secrets = sorted(set(result.secrets) | set(profile.secrets))
    return result


def _profiles_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "profiles"


def _where(source: str, section: str, key: str = "") -> str:
    place = f"[{section}] {key}".strip() if section else key
    return f"{source}: {place}" if place else source


def _check_keys(data: Mapping[str, Any], valid: set[str] | dict, source: str, section: str) -> None:
    if not isinstance(data, Mapping):
        raise ProfileError(
            f"{_where(source, '', section)} must be a table ([{section}]), got {data!r}."
        )
    for key in data:
        if key not in valid:
            close = difflib.get_close_matches(key, list(valid), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ProfileError(
                f"{_where(source, section, key)}: unknown key.{hint} "
                f"Valid keys here: {', '.join(sorted(valid))}."
            )


def _field(data: Mapping[str, Any], key: str, spec: Spec, source: str, section: str) -> Any:
    if data.get(key) is None:
        if spec.required:
            raise ProfileError(
                f"{_where(source, section, key)} is required. Write for example: {spec.example}"
            )
        return copy.deepcopy(spec.default)
    try:
        return spec.convert(data[key])
    except ValueError as exc:
        hint = f" Write for example: {spec.example}" if spec.example else ""
        raise ProfileError(f"{_where(source, section, key)}: {exc}.{hint}") from None


def _section(data: Any, specs: dict[str, Spec], source: str, section: str) -> dict[str, Any]:
    _check_keys(data, specs, source, section)
    return {key: _field(data, key, spec, source, section) for key, spec in specs.items()}


def _targets(data: Any, source: str) -> list[Target]:
    if not isinstance(data, list):
        raise ProfileError(
            f"{source}: targets must be an array of tables ([[targets]] blocks), got {data!r}."
        )
    targets = []
    for index, entry in enumerate(data):
        where = f"targets[{index}]"
        _check_keys(entry, TARGET_FIELDS, source, where)
        values = {k: _field(entry, k, spec, source, where) for k, spec in TARGET_FIELDS.items()}
        targets.append(Target(**values))
    return targets


def _check_consistency(profile: Profile) -> None:
    names = [t.name for t in profile.targets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ProfileError(
            f"{profile.source}: target name {duplicates[0]!r} is used twice; "
            "give every [[targets]] its own name."
        )
    load = profile.load
    if load["first_token_timeout"] > load["reply_timeout"]:
        raise ProfileError(
            f"{profile.source}: [load] first_token_timeout ({load['first_token_timeout']:g} s) "
            f"exceeds reply_timeout ({load['reply_timeout']:g} s); make it shorter."
        )
    if profile.targets and load["users"] < len(profile.targets):
        raise ProfileError(
            f"{profile.source}: [load] users = {load['users']} cannot be split over "
            f"{len(profile.targets)} targets; use at least one user per target."
        )


def require_targets(profile: Profile) -> None:
    """A run needs at least one target; say how to give one."""
    if not profile.targets:
        raise ProfileError(
            f"{profile.source}: no targets. Add a [[targets]] block with name and url, "
            "or pass --target ws://127.0.0.1:8765/ws on the command line."
        )


# --- secrets -----------------------------------------------------------------------
def _resolve_env(value: Any, source: str, where: str, secrets: list[str]) -> Any:
    """Replace ${VAR} in every string with the environment's value, remembering secrets."""
    if isinstance(value, dict):
        return {
            k: _resolve_env(v, source, f"{where}.{k}".lstrip("."), secrets)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_resolve_env(v, source, f"{where}[{i}]", secrets) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        variable = match.group(1)
        if variable not in os.environ:
            raise ProfileError(
                f"{source}: {where} refers to ${{{variable}}}, but the environment variable "
                f"{variable} is not set. Set it (export {variable}=...) before running soak."
            )
        secret = os.environ[variable]
        if secret:
            secrets.append(secret)
        return secret

    return _ENV_REF.sub(substitute, value)


def redact_url(url: str) -> str:
    """Mask secret-looking query parameters (token=..., key=...) and passwords in a URL."""
    parts = urlsplit(url)
    query = "&".join(
        f"{k}=***" if _SECRET_QUERY_KEYS.search(k) else f"{k}{sep}{v}"
        for k, sep, v in (pair.partition("=") for pair in parts.query.split("&") if pair)
    )
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _redact(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, dict):
        return {k: _redact(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, secrets) for v in value]
    if isinstance(value, str):
        for secret in sorted(secrets, key=len, reverse=True):
            value = value.replace(secret, "***")
        if "://" in value:
            value = redact_url(value)
    return value
