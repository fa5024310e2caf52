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
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from soak.collect.wire import parse_address
from soak.errors import ProfileError
from soak.protocols import registry
from soak.protocols.settings import (
    Spec,
    boolean,
    duration,
    headers,
    integer,
    number,
    optional_string,
    string,
    string_list,
    table,
)
from soak.redact import Redactor, redact_headers
from soak.redact import redact_url as redact_url  # re-exported: its old home
from soak.units import parse_duration

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,59}$")


# --- field specs -----------------------------------------------------------------
# Spec and the plain converters live in soak.protocols.settings (adapters declare their
# [protocol] keys with them); these are the other sections' own.
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


def _name(value: Any) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValueError(
            f"expected a short name of letters, digits, '.', '_' or '-', got {value!r}"
        )
    return value


def _target_url(value: Any) -> str:
    """A ws://, wss://, http:// or https:// URL (which of them: the protocol kind says)."""
    text = string(value)
    if urlsplit(text).scheme not in ("ws", "wss", "http", "https"):
        raise ValueError(f"expected a ws://, wss://, http:// or https:// URL, got {text!r}")
    return text


def _http_url(value: Any) -> str | None:
    if value is None:
        return None
    text = string(value)
    if urlsplit(text).scheme not in ("http", "https"):
        raise ValueError(f"expected an http:// or https:// URL, got {text!r}")
    return text


def _optional_pid(value: Any) -> int | None:
    return None if value is None else integer(1)(value)


def _optional_port(value: Any) -> int | None:
    port = None if value is None else integer(1)(value)
    if port is not None and port > 65535:
        raise ValueError(f"expected a TCP port 1-65535, got {port}")
    return port


def _optional_regex(value: Any) -> str | None:
    """A process-name pattern: a Python regular expression, searched in name and cmdline."""
    if value is None:
        return None
    text = string(value)
    try:
        re.compile(text)
    except re.error as exc:
        raise ValueError(f"{text!r} is not a valid regular expression ({exc})") from None
    return text


#: A docker/podman container name or id: what `docker inspect` accepts.
_CONTAINER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")


def _optional_container(value: Any) -> str | None:
    """A docker or podman container name or id ("chat-server", "3f9a1c0b2e4d")."""
    if value is None:
        return None
    text = string(value)
    if not _CONTAINER.match(text):
        raise ValueError(
            f"expected a container name or id (letters, digits, '_', '.', '-'), got {text!r}"
        )
    return text


def _optional_cgroup(value: Any) -> str | None:
    """A cgroup path as /proc/PID/cgroup shows it ("/system.slice/docker-ID.scope"), or
    its directory under /sys/fs/cgroup."""
    if value is None:
        return None
    text = string(value)
    if not text.startswith("/") or "/../" in f"{text}/" or "\n" in text:
        raise ValueError(
            f"expected an absolute cgroup path such as /kubepods.slice/... or "
            f"/sys/fs/cgroup/memory/app, got {text!r}"
        )
    return text


def _optional_argv(value: Any) -> list[str] | None:
    """A command as an argv list (run without a shell)."""
    if value is None:
        return None
    argv = string_list(value)
    if not argv or not argv[0]:
        raise ValueError("expected a non-empty argv list, the program first")
    return argv


def _optional_address(value: Any) -> str | None:
    """HOST:PORT to listen on (port 0: any free one)."""
    if value is None:
        return None
    text = string(value)
    parse_address(text, "listen")
    return text


def _optional_duration(minimum: float) -> Callable[[Any], float | None]:
    convert = duration(minimum)
    return lambda value: None if value is None else convert(value)


def _backoff(value: Any) -> list[float]:
    """[first, cap]: reconnect delays start at `first` s and double up to `cap` s."""
    first, cap = _think_time(value)
    if first <= 0:
        raise ValueError(f"the first delay must be more than 0 s, got {value!r}")
    return [first, cap]


LOAD_SHAPES = ("steady", "ramp", "steps", "waves", "bursts")
#: What a chat does after a failed turn: ask again on its connection, or open a new one.
AFTER_FAILURE = ("stay", "reconnect")


def _choice(choices: tuple[str, ...], what: str = "value") -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        text = string(value)
        if text not in choices:
            raise ValueError(f"unknown {what} {text!r}; valid: {', '.join(choices)}")
        return text

    return convert


_shape = _choice(LOAD_SHAPES, "load shape")


def _criteria_checks(value: Any) -> list[str]:
    checks = string_list(value)
    from soak.criteria import parse_criteria  # imported late: criteria imports nothing heavy

    try:
        parse_criteria(checks)
    except ValueError as exc:
        raise ValueError(str(exc).rstrip(".")) from None
    return checks


def _criteria_targets(value: Any) -> dict[str, dict[str, list[str]]]:
    """[criteria.targets.NAME] tables: checks that replace or add to the general ones, skip."""
    from soak.criteria import parse_target_overrides

    try:
        return parse_target_overrides(value)
    except ValueError as exc:
        raise ValueError(str(exc).rstrip(".")) from None


_MATCHER = r'\s*[A-Za-z_][A-Za-z0-9_]*\s*(=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"\s*'
_SELECTOR = re.compile(rf"^\{{?(?:{_MATCHER}(?:,{_MATCHER})*,?\s*)?\}}?$")


def _selector(value: Any) -> str:
    """PromQL label matchers ('{groupname="chat"}'), kept with their braces."""
    text = string(value).strip()
    if not _SELECTOR.match(text) or text.startswith("{") != text.endswith("}"):
        raise ValueError(
            f'expected PromQL label matchers such as \'{{job="chat", instance=~"10.0.*"}}\', '
            f"got {text!r}"
        )
    return "{" + text.removeprefix("{").removesuffix("}").strip() + "}"


def _server_url(value: Any) -> str:
    """An http(s) URL with a host: where a server answers."""
    text = _http_url(value)
    if text is None or not urlsplit(text).hostname:
        raise ValueError(f"expected an http:// or https:// URL with a host, got {value!r}")
    return text


def _promql(value: Any) -> str:
    text = string(value).strip()
    if not text:
        raise ValueError("expected a PromQL query, got an empty string")
    return text


def _presets() -> tuple[str, ...]:
    from soak.collect.prometheus import PRESETS  # late: the collector imports the profile

    return tuple(PRESETS)


def _preset(value: Any) -> str:
    """The name of a query preset of soak.collect.prometheus."""
    return _choice(_presets(), "preset")(value)


PROMETHEUS_FIELDS: dict[str, Spec] = {
    "url": Spec(_server_url, None, 'url = "http://127.0.0.1:9090"', required=True),
    "preset": Spec(_preset, None, 'preset = "process-exporter"  # or "client", "cadvisor"'),
    "selector": Spec(_selector, "{}", "selector = '{groupname=\"chat\"}'"),
    "window": Spec(duration(1.0), 60.0, 'window = "1m"  # of rate(): 4 scrape intervals or more'),
    "max_age": Spec(duration(1.0), 120.0, 'max_age = "2m"  # older samples are stale'),
    "timeout": Spec(
        _optional_duration(0.1), None, 'timeout = "5s"  # default: [collector] health_timeout'
    ),
    "headers": Spec(headers, {}, 'headers = { Authorization = "Bearer ${PROMETHEUS_TOKEN}" }'),
    "queries": Spec(
        table, {}, "[targets.prometheus.queries] threads = 'sum(go_threads{job=\"chat\"})'"
    ),
}


TARGET_FIELDS: dict[str, Spec] = {
    "name": Spec(_name, None, 'name = "patched"', required=True),
    "url": Spec(_target_url, None, 'url = "ws://127.0.0.1:8765/ws"'),
    "health": Spec(_http_url, None, 'health = "http://127.0.0.1:8765/health"'),
    "pid": Spec(_optional_pid, None, "pid = 4242"),
    "build": Spec(optional_string, None, 'build = "v1.4.2-patched"'),
    # finding and reading the target's process (the collector)
    "port": Spec(_optional_port, None, "port = 8765  # its process is the one listening here"),
    "process": Spec(_optional_regex, None, 'process = "uvicorn .*app:main"  # name/cmdline regex'),
    "spawn": Spec(_optional_argv, None, 'spawn = ["python", "-m", "myserver", "--port", "8765"]'),
    "container": Spec(
        _optional_container, None, 'container = "chat-server"  # docker/podman name or id'
    ),
    "cgroup": Spec(
        _optional_cgroup, None, 'cgroup = "/system.slice/docker-3f9a1c.scope"  # any container'
    ),
    "health_headers": Spec(
        headers, {}, 'health_headers = { Authorization = "Bearer ${HEALTH_TOKEN}" }'
    ),
    # sampled from a Prometheus server instead ([targets.prometheus], checked by _prometheus)
    "prometheus": Spec(lambda value: value, None, '[targets.prometheus] url = "http://..."'),
    "remote": Spec(
        boolean, False, "remote = true  # sampled on its machine by soak collect --join"
    ),
}
#: Ways to find a target's process when it has no url (soak collect).
FINDERS = ("pid", "port", "process", "spawn", "container", "cgroup", "health", "prometheus")
#: Ways to find a local process, which a target sampled from Prometheus does not use.
_LOCAL_FINDERS = ("pid", "port", "process", "container", "cgroup")

SECTIONS: dict[str, dict[str, Spec]] = {
    #: every key some kind reads; which keys a kind reads: soak.protocols.registry
    "protocol": registry.known_settings(),
    "load": {
        "users": Spec(integer(1), 10, "users = 20"),
        "spawn_rate": Spec(number(0.01), 10.0, "spawn_rate = 10  # users started per second"),
        "think_time": Spec(_think_time, [1.0, 1.0], 'think_time = "1s"  or  ["0.5s", "2s"]'),
        "duration": Spec(duration(1.0), 600.0, 'duration = "2h"'),
        "idle_after": Spec(duration(), 0.0, 'idle_after = "30s"  # no load, to measure idle CPU'),
        "connect_timeout": Spec(duration(0.1), 10.0, 'connect_timeout = "10s"'),
        "first_token_timeout": Spec(duration(0.1), 30.0, 'first_token_timeout = "30s"'),
        "reply_timeout": Spec(duration(0.1), 120.0, 'reply_timeout = "2m"'),
        "turns_per_connection": Spec(integer(0), 0, "turns_per_connection = 0  # 0: keep open"),
        "interval": Spec(duration(0.5), 10.0, 'interval = "10s"  # chat aggregate interval'),
        "shape": Spec(_shape, "steady", 'shape = "steady"  # ' + " | ".join(LOAD_SHAPES)),
        "min_users": Spec(integer(0), 0, "min_users = 0  # ramp start, wave trough"),
        "steps": Spec(integer(1), 4, "steps = 4"),
        "period": Spec(duration(2.0), 86400.0, 'period = "24h"  # one day and one night'),
        "burst": Spec(duration(1.0), 300.0, 'burst = "5m"'),
        "gap": Spec(duration(1.0), 300.0, 'gap = "10m"  # no users between bursts'),
        "linger": Spec(duration(), 0.25, 'linger = "250ms"  # read on after done'),
        "ping_every": Spec(duration(), 30.0, 'ping_every = "30s"  # 0: no ping probes'),
        "reconnect_backoff": Spec(_backoff, [0.5, 30.0], 'reconnect_backoff = ["0.5s", "30s"]'),
        "after_failure": Spec(
            _choice(AFTER_FAILURE),
            "stay",
            'after_failure = "stay"  # ask again on the same chat; "reconnect": a new one',
        ),
        "resume_session": Spec(
            boolean, True, "resume_session = true  # a reconnect carries on the chat's session"
        ),
    },
    "collector": {
        "interval": Spec(duration(0.1), 5.0, 'interval = "5s"'),
        "health_timeout": Spec(duration(0.1), 5.0, 'health_timeout = "5s"'),
        "loop_lag_field": Spec(optional_string, None, 'loop_lag_field = "diagnostics.loop_lag_ms"'),
        "health_interval": Spec(
            _optional_duration(0.1), None, 'health_interval = "1s"  # default: 5s or interval'
        ),
        "detail_interval": Spec(
            duration(1.0), 30.0, 'detail_interval = "30s"  # sockets, USS, children, names'
        ),
        "spawn_timeout": Spec(duration(0.1), 60.0, 'spawn_timeout = "60s"  # until it listens'),
        "pyspy": Spec(boolean, False, "pyspy = true  # py-spy dumps: first stall + periodic"),
        "pyspy_every": Spec(duration(), 1800.0, 'pyspy_every = "30m"  # 0: first stall only'),
        "python_threads": Spec(
            boolean, True, "python_threads = true  # Python thread names by py-spy (Python targets)"
        ),
        "listen": Spec(
            _optional_address, None, 'listen = "0.0.0.0:7557"  # where soak collect --join connects'
        ),
        "secret": Spec(optional_string, None, 'secret = "${SOAK_COLLECT_SECRET}"'),
    },
    "criteria": {
        "warmup": Spec(duration(), 60.0, 'warmup = "5m"'),
        "checks": Spec(_criteria_checks, [], 'checks = ["threads.growth_per_hour < 5"]'),
        "targets": Spec(
            _criteria_targets,
            {},
            '[criteria.targets.legacy] checks = ["threads.growth_per_hour < 50"]',
        ),
        "replies_per_day": Spec(
            number(1.0), None, "replies_per_day = 2000  # production traffic, for extrapolation"
        ),
    },
}

TOP_LEVEL = {"name", "description", "targets", *SECTIONS}

#: [load] keys that only one or two shapes read.
SHAPE_KEYS: dict[str, tuple[str, ...]] = {
    "min_users": ("ramp", "waves"),
    "steps": ("steps",),
    "period": ("waves",),
    "burst": ("bursts",),
    "gap": ("bursts",),
}


# --- the model --------------------------------------------------------------------
@dataclass
class Target:
    """One server under test."""

    name: str
    url: str | None = None
    health: str | None = None
    pid: int | None = None
    build: str | None = None
    port: int | None = None
    process: str | None = None
    spawn: list[str] | None = None
    container: str | None = None
    cgroup: str | None = None
    health_headers: dict[str, str] = field(default_factory=dict)
    #: The validated [targets.prometheus] table: the target is sampled from there.
    prometheus: dict[str, Any] | None = None
    remote: bool = False


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
    #: What soak will do differently from what the profile says (shown when a run starts).
    warnings: list[str] = field(default_factory=list)
    #: Whether the profile set [criteria] warmup itself (only then is its cut worth a word).
    warmup_given: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain data with secrets resolved (for the run's own processes, never for disk)."""
        return {
            "name": self.name,
            "description": self.description,
            "targets": [copy.deepcopy(vars(t)) for t in self.targets],
            "protocol": copy.deepcopy(self.protocol),
            "load": dict(self.load),
            "collector": dict(self.collector),
            "criteria": copy.deepcopy(self.criteria),
        }

    def redacted(self) -> dict[str, Any]:
        """`to_dict` with every resolved secret, secret-looking URL part and header masked.

        Every secret, however short: here soak knows each string is a profile value.
        """
        data = Redactor(self.secrets, min_length=1).value(self.to_dict())
        for target in data["targets"]:
            target["health_headers"] = redact_headers(target["health_headers"])
            if target["prometheus"]:
                prometheus = target["prometheus"]
                prometheus["headers"] = redact_headers(prometheus["headers"])
                prometheus["url"] = redact_url(prometheus["url"])
        return data

    @property
    def planned_duration_s(self) -> float:
        return float(self.load["duration"] + self.load["idle_after"])


# --- loading -------------------------------------------------------------------------
def load_profile(path: Path | str) -> Profile:
    """Read and validate a TOML profile file; a name of a ready profile that is not a file
    here ("demo", "profiles/nerve.toml") reads the bundled one."""
    path = Path(path)
    if not path.exists():
        path = _bundled(path) or path
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        folder = bundled_profiles_dir()
        bundled = sorted(p.name for p in folder.glob("*.toml"))
        hint = f" Ready profiles in {folder}: {', '.join(bundled)}." if bundled else ""
        raise ProfileError(f"profile {path} does not exist.{hint}") from None
    except OSError as exc:
        raise ProfileError(f"cannot read profile {path}: {exc.strerror}.") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path} is not valid TOML: {exc}. Check quotes and brackets.") from None
    data.setdefault("name", path.stem)
    _check_secret_is_env(data, str(path))
    return profile_from_mapping(data, source=str(path))


def profile_from_mapping(
    data: Mapping[str, Any], source: str = "<profile>", warmup_given: bool | None = None
) -> Profile:
    """Validate a profile given as a mapping (parsed TOML, or the run's own JSON copy).

    warmup_given: whether the user wrote [criteria] warmup (default: whether `data` has it).
    """
    _check_keys(data, TOP_LEVEL, source, "")
    secrets: list[str] = []
    resolved = _resolve_env(dict(data), source, "", secrets)
    try:
        return _validated(resolved, source, secrets, warmup_given)
    except ProfileError as exc:  # its message may quote a resolved value: mask the secrets
        raise ProfileError(Redactor(secrets).text(exc.message)) from None


def _validated(
    resolved: Mapping[str, Any], source: str, secrets: list[str], warmup_given: bool | None
) -> Profile:
    """The Profile of a mapping whose ${ENV} references are resolved (`secrets`: their values)."""
    name = _field(resolved, "name", Spec(_name, "profile", 'name = "nightly"'), source, "")
    description = _field(resolved, "description", Spec(string, "", ""), source, "")
    sections = {
        section: _section(resolved.get(section, {}), specs, source, section)
        if section != "protocol"
        else _protocol(resolved.get(section, {}), source)
        for section, specs in SECTIONS.items()
    }
    targets = _targets(resolved.get("targets", []), source)
    _check_schemes(targets, sections["protocol"]["kind"], source)
    _check_shape_keys(resolved.get("load", {}), sections["load"], source)
    profile = Profile(
        name=name,
        description=description,
        targets=targets,
        source=source,
        secrets=secrets,
        **sections,
    )
    if warmup_given is None:
        criteria = resolved.get("criteria")
        warmup_given = isinstance(criteria, Mapping) and "warmup" in criteria
    profile.warmup_given = warmup_given
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
    idle_after: str | None = None,
    ports: list[int] | None = None,
    process: list[str] | None = None,
    spawn: list[list[str]] | None = None,
    containers: list[str] | None = None,
    cgroups: list[str] | None = None,
    interval: str | None = None,
    pyspy: bool | None = None,
    collector_listen: str | None = None,
) -> Profile:
    """Return the profile with command-line overrides applied and validated like the file.

    `targets` replaces the profile's targets (names t1, t2, ... unless given as
    NAME=URL); `health`, `pids`, `ports`, `process`, `spawn`, `containers` and `cgroups`
    pair with targets in order; without any target, they make targets t1, t2, ... (soak collect).
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
    per_target = (
        ("--health", health, "health"),
        ("--pid", pids, "pid"),
        ("--port", ports, "port"),
        ("--process", process, "process"),
        ("--spawn", spawn, "spawn"),
        ("--container", containers, "container"),
        ("--cgroup", cgroups, "cgroup"),
    )
    if not data["targets"]:
        count = max((len(values) for _, values, _ in per_target if values), default=0)
        data["targets"] = [{"name": f"t{index}"} for index in range(1, count + 1)]
    for option, values, key in per_target:
        if not values:
            continue
        if len(values) > len(data["targets"]):
            raise ProfileError(
                f"{source}: {len(values)} {option} values for {len(data['targets'])} target(s); "
                f"give one {option} per target (--target or [[targets]]), in the same order."
            )
        for target, value in zip(data["targets"], values, strict=False):
            target[key] = value
    if users is not None:
        data["load"]["users"] = users
    if duration is not None:
        data["load"]["duration"] = duration
    if idle_after is not None:
        data["load"]["idle_after"] = idle_after
    if interval is not None:
        data["collector"]["interval"] = interval
    if pyspy is not None:
        data["collector"]["pyspy"] = pyspy
    if collector_listen is not None:
        data["collector"]["listen"] = collector_listen
    result = profile_from_mapping(data, source=source, warmup_given=profile.warmup_given)
    result.secrets = sorted(set(result.secrets) | set(profile.secrets))
    return result


def bundled_profiles_dir() -> Path:
    """The ready profiles: profiles/ of the source tree soak runs from (a clone), else the
    copy a wheel installs under <prefix>/share/soak/profiles (pip install soak, pipx)."""
    source = Path(__file__).resolve().parent.parent / "profiles"
    installed = Path(sys.prefix) / "share" / "soak" / "profiles"
    return source if source.is_dir() or not installed.is_dir() else installed


def _bundled(path: Path) -> Path | None:
    """The ready profile a missing `path` names ("demo", "demo.toml", "profiles/demo.toml")."""
    if path.is_absolute() or len(path.parts) > 2 or path.parts[:-1] not in ((), ("profiles",)):
        return None
    candidate = bundled_profiles_dir() / (path.name if path.suffix else f"{path.name}.toml")
    return candidate if candidate.is_file() else None


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
            close = difflib.get_close_matches(str(key), list(valid), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            shown = _show_key(key)
            raise ProfileError(
                f"{_where(source, section, shown)}: unknown key.{hint} "
                f"Valid keys here: {', '.join(sorted(valid))}."
            )


def _show_key(key: object) -> str:
    """A key as written in a message: plain when it is a plain name, else quoted (one line)."""
    return key if isinstance(key, str) and key.replace("-", "_").isidentifier() else repr(key)


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
        if values["prometheus"] is not None:
            values["prometheus"] = _prometheus(values, source, where)
        if values["url"] is None and not any(values[key] for key in FINDERS):
            raise ProfileError(
                f"{_where(source, where, 'url')} is required (soak collect can do without it "
                f"given one of {', '.join(FINDERS)}). Write for example: "
                f"{TARGET_FIELDS['url'].example}"
            )
        _check_finders(values, source, where)
        targets.append(Target(**values))
    return targets


def _prometheus(values: dict[str, Any], source: str, where: str) -> dict[str, Any]:
    """A target's [targets.prometheus] table, checked: its keys, preset, selector, and that
    every query names a metric soak records (soak.collect.prometheus.METRICS)."""
    from soak.collect.prometheus import METRICS

    section = f"{where}.prometheus"
    config = _section(values["prometheus"], PROMETHEUS_FIELDS, source, section)
    _check_keys(config["queries"], METRICS, source, f"{section}.queries")
    config["queries"] = {
        metric: _field(
            config["queries"], metric, Spec(_promql, None, ""), source, f"{section}.queries"
        )
        for metric in config["queries"]
    }
    if config["preset"] is None and "threads" not in config["queries"]:
        raise ProfileError(
            f"{_where(source, section, 'preset')} is required unless "
            f"[{section}.queries] gives threads. Presets: {', '.join(_presets())}; "
            'write for example: preset = "process-exporter"'
        )
    local = [key for key in _LOCAL_FINDERS if values[key]]
    if local:
        raise ProfileError(
            f"{_where(source, where, local[0])} does not apply to a target sampled from "
            f"Prometheus ([{section}]): its process is not looked for on this machine. "
            f"Remove {local[0]}, or the [{section}] table."
        )
    return config


#: Keys that each say which process is the target, so no two of them go together.
_ONE_PROCESS = ("pid", "spawn", "container", "cgroup")


def _check_finders(values: dict[str, Any], source: str, where: str) -> None:
    """container and cgroup find a process already running in a container: neither goes
    with pid or spawn, nor with the other (`process` and `port` may narrow them down)."""
    given = [key for key in _ONE_PROCESS if values[key]]
    if len(given) > 1 and {"container", "cgroup"} & set(given):
        first, second = given[:2]
        raise ProfileError(
            f"{_where(source, where, second)} cannot go with {first}: both say which process "
            "is the target. Keep one: container = for a docker/podman container, cgroup = "
            "for any other (Kubernetes, containerd, systemd-nspawn); add process = "
            '"PATTERN" to pick one of the container\'s processes.'
        )


def _protocol(given: Any, source: str) -> dict[str, Any]:
    """The [protocol] values of its kind: the keys every kind reads, then the settings its
    adapter declares (soak.protocols.registry); a key of another kind is an error."""
    table = given if isinstance(given, Mapping) else {}  # not a table: _check_keys says so
    kind = _field(table, "kind", registry.COMMON["kind"], source, "protocol")
    specs = registry.settings_of(kind)
    _check_keys(given, {**registry.known_settings(), **specs}, source, "protocol")
    for key in given:
        if key not in specs:
            raise ProfileError(
                f"{_where(source, 'protocol', key)} does not apply to kind = {kind!r} (it is for "
                f"{' and '.join(registry.readers(key))}). "
                f"Keys for {kind!r}: {', '.join(sorted(specs))}."
            )
    return {key: _field(given, key, spec, source, "protocol") for key, spec in specs.items()}


def _check_schemes(targets: list[Target], kind: str, source: str) -> None:
    """Every target URL must be one the protocol kind speaks (ws:// or http://)."""
    schemes = registry.adapter_class(kind).schemes
    for index, target in enumerate(targets):
        scheme = urlsplit(target.url).scheme if target.url else None
        if scheme is None or scheme in schemes:
            continue
        http_kinds = [k for k, a in registry.ADAPTERS.items() if scheme in a.schemes]
        instead = f"; for {scheme}:// servers use kind = {' or '.join(map(repr, http_kinds))}"
        raise ProfileError(
            f"{_where(source, f'targets[{index}]', 'url')}: {target.url!r} starts {scheme}://, "
            f"but [protocol] kind = {kind!r} speaks {' and '.join(s + '://' for s in schemes)}. "
            f"Give the URL as {schemes[0]}://HOST:PORT/...{instead if http_kinds else ''}."
        )


def _check_shape_keys(given: Mapping[str, Any], load: dict[str, Any], source: str) -> None:
    """A shape key set (to other than its default) for a shape that does not read it is an error."""
    shape = load["shape"]
    for key, shapes in SHAPE_KEYS.items():
        if key in given and shape not in shapes and load[key] != SECTIONS["load"][key].default:
            raise ProfileError(
                f"{_where(source, 'load', key)} does not apply to shape = {shape!r}; it is for "
                f"shape = {' or '.join(repr(s) for s in shapes)}."
            )


def _check_consistency(profile: Profile) -> None:
    names = [t.name for t in profile.targets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ProfileError(
            f"{profile.source}: target name {duplicates[0]!r} is used twice; "
            "give every [[targets]] its own name."
        )
    _check_remote(profile)
    load = profile.load
    if load["first_token_timeout"] > load["reply_timeout"]:
        raise ProfileError(
            f"{profile.source}: [load] first_token_timeout ({load['first_token_timeout']:g} s) "
            f"exceeds reply_timeout ({load['reply_timeout']:g} s); make it shorter."
        )
    if profile.protocol["require_nonce"] and "{nonce}" not in profile.protocol["prompt"]:
        raise ProfileError(
            f"{profile.source}: [protocol] require_nonce = true, but prompt has no {{nonce}}; "
            'put it in the prompt, e.g. prompt = "Repeat {nonce}, then answer ..."'
        )
    if load["min_users"] > load["users"]:
        raise ProfileError(
            f"{profile.source}: [load] min_users = {load['min_users']} exceeds users = "
            f"{load['users']}; min_users is the low point of the {load['shape']} shape."
        )
    overridden = sorted(set(profile.criteria["targets"]) - set(names))
    if profile.targets and overridden:
        raise ProfileError(
            f"{profile.source}: [criteria.targets.{overridden[0]}] names no target; the "
            f"targets are {', '.join(names)}. Use a [[targets]] name (on the command line: "
            "--target NAME=URL)."
        )
    from soak.criteria import capped_warmup

    _, note = capped_warmup(profile.criteria["warmup"], load["duration"])
    if note and profile.warmup_given:
        profile.warnings.append(f"{profile.source}: {note}; lower [criteria] warmup")
    if profile.targets and load["users"] < len(profile.targets):
        raise ProfileError(
            f"{profile.source}: [load] users = {load['users']} cannot be split over "
            f"{len(profile.targets)} targets; use at least one user per target."
        )


#: Shortest [collector] secret accepted, in characters (an HMAC key guessed is no key).
MIN_SECRET_CHARS = 16


def _check_remote(profile: Profile) -> None:
    """Remote targets need a listen address and a secret; they are not looked for here."""
    collector, where = profile.collector, profile.source
    for target in profile.targets:
        local = ("pid", "port", "process", "spawn", "container", "cgroup", "prometheus")
        finder = next((k for k in local if getattr(target, k)), None)
        if target.remote and finder:
            raise ProfileError(
                f"{where}: target {target.name} has remote = true and {finder}; a remote "
                f"target's process is sampled on its own machine, so drop {finder} (or remote)."
            )
    if any(t.remote for t in profile.targets) and not collector["listen"]:
        raise ProfileError(
            f"{where}: a target has remote = true, but [collector] listen is not set; write "
            'listen = "0.0.0.0:7557" (where soak collect --join connects), or --collector-listen.'
        )
    if collector["listen"] and len(collector["secret"] or "") < MIN_SECRET_CHARS:
        raise ProfileError(
            f"{where}: [collector] listen needs a secret of at least {MIN_SECRET_CHARS} "
            "characters shared with the remote collectors; write secret = "
            '"${SOAK_COLLECT_SECRET}" and export SOAK_COLLECT_SECRET=$(openssl rand -hex 16).'
        )


def _check_secret_is_env(data: Mapping[str, Any], source: str) -> None:
    """[collector] secret must come from the environment: a profile file is often shared."""
    collector = data.get("collector")
    secret = collector.get("secret") if isinstance(collector, Mapping) else None
    if isinstance(secret, str) and not _ENV_REF.fullmatch(secret):
        raise ProfileError(
            f"{source}: [collector] secret must be an environment reference, not the secret "
            'itself; write secret = "${SOAK_COLLECT_SECRET}" and set that variable.'
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
            k: _resolve_env(v, source, f"{where}.{_show_key(k)}".lstrip("."), secrets)
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
