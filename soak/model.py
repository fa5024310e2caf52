"""The typed summary of a run: what the analysis concludes, read by attribute everywhere.

`soak.analyze.summary` builds it; criteria, findings, reports, compare and release read
it. summary.json is its serialisation (`RunSummary.to_json`, `read_summary`): version 3
is nested, one section per process series (threads, rss, fds, uss), the chats, CPU,
loop lag, drift, /health and anomalies. `read_summary` also reads versions 1 and 2, which
kept one flat entry of `{series}_{field}` keys per target.

Units: seconds (`_s`), per hour (`_per_hour`), percent of one core (`_percent`); a
series' values are in its `unit` (a count, or MiB for rss and uss). A section's
`missing` says, for each field left null, why and what to change.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

SCHEMA_VERSION = 3
#: summary.json layouts `read_summary` reads: 1 and 2 flat (2 added `inconclusive`), 3 nested.
READABLE_SCHEMAS = (1, 2, 3)
#: Process series with a trend, and the unit of their values.
SERIES_UNITS = {"threads": "", "rss": "MB", "fds": "", "uss": "MB"}
#: Series names as people read them.
SERIES_NOUNS = {"threads": "threads", "rss": "RSS", "fds": "open fds", "uss": "USS"}
#: Chat outcome counts: summary field -> outcome name in chats.jsonl.
OUTCOME_COUNTS = {
    "replies": "ok",
    "stalls": "stall",
    "errors": "error",
    "disconnects": "disconnect",
    "violations": "violation",
    "mismatches": "mismatch",
    "first_token_timeouts": "first_token_timeout",
}
#: Latency sections of the chats, timed by soak's load.
CHAT_LATENCIES = ("ttft", "reply", "connect", "ping", "itl", "tpot")

Section_T = TypeVar("Section_T")


@dataclass(kw_only=True)
class Section:
    """A part of the summary; `missing`: field name -> why it is null and what to change."""

    missing: dict[str, str] = field(default_factory=dict)

    def why_missing(self, name: str) -> str | None:
        """Why field `name` has no value (None when nothing was said)."""
        return self.missing.get(name)

    def mark_missing(self, reason: str, *names: str) -> None:
        """Record one reason for every named field."""
        self.missing.update(dict.fromkeys(names, reason))


@dataclass(kw_only=True)
class Quantiles(Section):
    """Percentiles (s) of a latency and how many samples are behind them."""

    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    max: float | None = None
    samples: int = 0


@dataclass(kw_only=True)
class SeriesSummary(Section):
    """One process series after the warm-up of its longest process segment.

    growth_*: the verdict fit (Theil–Sen, per hour, 95% CI); trend: flat, growing,
    plateau, undecided or falling; envelope: fitted on a sawtooth's floor (`drops`
    teeth); doubt: why the fit is no evidence (it saw too little of the load). Growth
    per 1,000 ok replies and per new connection fit the series against the work done.
    limit: the resource limit (its source says where it came from); hours_to_limit:
    when the growth reaches it (None: unknown or not growing).
    """

    name: str = ""
    unit: str = ""
    start: float | None = None
    end: float | None = None
    max: float | None = None
    growth_per_hour: float | None = None
    growth_ci_per_hour: list[float] | None = None
    growth_overall_per_hour: float | None = None
    trend: str | None = None
    envelope: bool = False
    drops: int = 0
    level_since_s: float | None = None
    doubt: str | None = None
    growth_per_1k_replies: float | None = None
    growth_ci_per_1k_replies: list[float] | None = None
    growth_per_connection: float | None = None
    limit: float | None = None
    limit_source: str | None = None
    hours_to_limit: float | None = None
    hours_to_limit_at_replies_per_day: float | None = None

    @property
    def noun(self) -> str:
        """The series as people name it: "threads", "RSS", "open fds"."""
        return SERIES_NOUNS.get(self.name, self.name)

    @property
    def verb(self) -> str:
        return "grow" if self.noun.endswith("s") else "grows"

    @property
    def quantity(self) -> str:
        """The unit word after numbers: " MB" or ""."""
        return f" {self.unit}" if self.unit else ""


@dataclass(kw_only=True)
class ChatSummary(Section):
    """Turns by outcome (exact counts from chats.jsonl), rates and chat latencies.

    All counts are None in a run without chats. excluded_*: failed turns soak itself
    caused by standing still; they are in no count or rate.
    """

    turns: int | None = None
    turns_started: int | None = None
    replies: int | None = None
    stalls: int | None = None
    errors: int | None = None
    disconnects: int | None = None
    violations: int | None = None
    mismatches: int | None = None
    first_token_timeouts: int | None = None
    stall_rate: float | None = None
    turns_per_s: float | None = None
    ok_per_s: float | None = None
    violations_by_kind: dict[str, int] = field(default_factory=dict)
    mismatches_by_kind: dict[str, int] = field(default_factory=dict)
    excluded_by_outcome: dict[str, int] = field(default_factory=dict)
    excluded_turns: int = 0
    chats_stuck: int = 0
    chats_never_recovered: int = 0
    stuck_chats: list[dict[str, Any]] = field(default_factory=list)
    chats_max: int = 0
    pings: int | None = None
    pings_lost: int | None = None
    gap_max_s: float | None = None
    disconnect_close_codes: dict[str, int] = field(default_factory=dict)
    ttft: Quantiles = field(default_factory=Quantiles)
    reply: Quantiles = field(default_factory=Quantiles)
    connect: Quantiles = field(default_factory=Quantiles)
    ping: Quantiles = field(default_factory=Quantiles)
    #: Inter-token latency: every gap between two token frames of an ok reply.
    itl: Quantiles = field(default_factory=Quantiles)
    #: Time per output token after the first, one per ok reply with 2+ tokens (the
    #: server's completion tokens when it reported usage, else token frames).
    tpot: Quantiles = field(default_factory=Quantiles)
    #: Output tokens per second of the median ok reply (1 / tpot.p50).
    tokens_per_s: float | None = None

    def count(self, name: str) -> int:
        """An outcome count (a field name of OUTCOME_COUNTS, or turns), 0 when unknown."""
        return int(getattr(self, name) or 0)

    def share(self, name: str) -> float | None:
        """An outcome count as a fraction of the turns ended (None without turns)."""
        value, turns = getattr(self, name), self.turns or 0
        return value / turns if value is not None and turns > 0 else None


@dataclass(kw_only=True)
class CpuSummary(Section):
    """CPU (percent of one core): medians when idle and busy, and idle CPU over time."""

    idle_percent: float | None = None
    idle_samples: int = 0
    busy_percent: float | None = None
    busy_samples: int = 0
    idle_early_percent: float | None = None
    idle_late_percent: float | None = None
    idle_growth_per_1k_replies: float | None = None
    idle_rise_points: float | None = None
    idle_periods: list[dict[str, Any]] = field(default_factory=list)
    #: The cgroup CPU quota (cores) and where it is set; None: no quota.
    limit_cores: float | None = None
    limit_source: str | None = None
    #: Share of the cgroup's CPU periods (%) in which its quota throttled it, over the run.
    throttled_percent: float | None = None


@dataclass(kw_only=True)
class HealthField(Section):
    """Statistics of one numeric /health field (levels after the warm-up)."""

    samples: int = 0
    last: float | None = None
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    growth_per_hour: float | None = None
    growth_ci_per_hour: list[float] | None = None
    trend: str | None = None


@dataclass(kw_only=True)
class HealthSummary(Section):
    """/health polls: how many, how many failed, their latency (s), and numeric fields."""

    samples: int = 0
    errors: int = 0
    last_error: str | None = None
    latency: Quantiles = field(default_factory=Quantiles)
    fields: dict[str, HealthField] = field(default_factory=dict)


@dataclass(kw_only=True)
class DriftSummary(Section):
    """Event-loop drift per interval of `bin_s` seconds and how stalls line up with it."""

    bin_s: float | None = None
    bins: int = 0
    signals: list[str] = field(default_factory=list)
    health_latency_floor_s: float | None = None
    drift_max_s: float | None = None
    spike_threshold_s: float | None = None
    drift_spike_bins: int = 0
    latency_threshold_s: float | None = None
    latency_spike_bins: int = 0
    latency_spikes_with_drift: int = 0
    latency_spikes_while_soak_saturated: int = 0
    soak_saturated_bins: int = 0
    stalls: int = 0
    stalls_after_drift: int = 0
    near_drift_share: float | None = None
    stalls_while_soak_saturated: int = 0
    first_token_timeouts_while_soak_saturated: int = 0
    reply_timeout_s: float | None = None
    worst: list[dict[str, Any]] = field(default_factory=list)


@dataclass(kw_only=True)
class AnomalySummary(Section):
    """Anomaly records: how many, per kind, and the largest groups by kind and message."""

    records: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    groups: list[dict[str, Any]] = field(default_factory=list)


@dataclass(kw_only=True)
class SegmentSummary(Section):
    """One process segment (one pid) with its own growth per hour and trend per series."""

    pid: int | None = None
    start_s: float = 0.0
    end_s: float = 0.0
    samples: int = 0
    headline: bool = False
    growth_per_hour: dict[str, float | None] = field(default_factory=dict)
    trend: dict[str, str | None] = field(default_factory=dict)


@dataclass(kw_only=True)
class TargetSummary(Section):
    """Everything the analysis concludes about one target, and its verdict."""

    name: str = ""
    verdict: str | None = None
    verdict_reasons: list[str] = field(default_factory=list)
    evidence_gaps: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    build: str | None = None
    url: str | None = None
    replaced: list[str] = field(default_factory=list)
    chats: ChatSummary = field(default_factory=ChatSummary)
    threads: SeriesSummary = field(default_factory=lambda: SeriesSummary(name="threads"))
    rss: SeriesSummary = field(default_factory=lambda: SeriesSummary(name="rss", unit="MB"))
    fds: SeriesSummary = field(default_factory=lambda: SeriesSummary(name="fds"))
    uss: SeriesSummary = field(default_factory=lambda: SeriesSummary(name="uss", unit="MB"))
    top_growing_family: dict[str, Any] | None = None
    cpu: CpuSummary = field(default_factory=CpuSummary)
    loop_lag: Quantiles = field(default_factory=Quantiles)
    drift: DriftSummary = field(default_factory=DriftSummary)
    health: HealthSummary = field(default_factory=HealthSummary)
    anomalies: AnomalySummary = field(default_factory=AnomalySummary)
    restarts: int = 0
    segments: list[SegmentSummary] = field(default_factory=list)
    samples: int = 0
    process_errors: int = 0
    soak_saturated_percent: float | None = None
    replies_per_day: float | None = None

    def series(self, name: str) -> SeriesSummary:
        """The section of a process series by name (threads, rss, fds, uss)."""
        if name not in SERIES_UNITS:
            raise KeyError(name)
        return getattr(self, name)

    def all_series(self) -> list[SeriesSummary]:
        return [self.series(name) for name in SERIES_UNITS]


@dataclass(kw_only=True)
class CheckResult:
    """The outcome of one criterion for one target; `passed` is None when skipped or
    inconclusive (measured, but no evidence either way)."""

    name: str
    expression: str
    passed: bool | None
    status: str
    value: float | None
    threshold: float
    unit: str
    message: str
    scope: str = "profile"
    target: str = ""


@dataclass(kw_only=True)
class RunSummary:
    """A whole run: what was recorded, the verdict, every check, soak's own load, targets.

    generator: soak's own load processes (see docs/summary-json.md), None without any.
    """

    schema_version: int = SCHEMA_VERSION
    soak_version: str | None = None
    recorded_with: str | None = None
    run_id: str = ""
    run_dir: str = ""
    profile_name: str | None = None
    label: str | None = None
    status: str = ""
    started_at_iso: str | None = None
    ended_at_iso: str | None = None
    duration_s: float = 0.0
    warmup_s: float = 0.0
    warmup_note: str | None = None
    has_chats: bool = False
    replies_per_day: float | None = None
    verdict: str | None = None
    evidence_gaps: list[str] = field(default_factory=list)
    criteria_source: str = "profile"
    criteria: list[CheckResult] = field(default_factory=list)
    generator: dict[str, Any] | None = None
    targets: dict[str, TargetSummary] = field(default_factory=dict)

    def checks_of(self, target: str, status: str | None = None) -> list[CheckResult]:
        """The checks of one target, optionally only those with `status`."""
        return [c for c in self.criteria if c.target == target and status in (None, c.status)]

    def to_json(self) -> dict[str, Any]:
        """summary.json's content (strict JSON: NaN and inf as null)."""
        return to_json(self)


# --- (de)serialisation ---------------------------------------------------------------
def to_json(value: Any) -> Any:
    """Plain JSON of a model object: dataclasses as objects, numpy scalars as numbers,
    tuples as lists, NaN and inf as None."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        value = value.item()  # a numpy scalar (numpy is not imported here: the CLI stays light)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def from_json(cls: type[Section_T], data: Any) -> Section_T:
    """A model object from its JSON (unknown keys ignored, missing ones defaulted)."""
    if not isinstance(data, dict):
        return cls()
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in data:
            values[f.name] = _value_of(hints[f.name], data[f.name])
    return cls(**values)


def _value_of(hint: Any, raw: Any) -> Any:
    """`raw` as the annotated type: a model object, a dict or list of them, or as is."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for option in options:
        if dataclasses.is_dataclass(option):
            return from_json(option, raw) if raw is not None else None
        origin, args = typing.get_origin(option), typing.get_args(option)
        if origin is dict and len(args) == 2 and dataclasses.is_dataclass(args[1]):
            return {str(k): from_json(args[1], v) for k, v in (raw or {}).items()}
        if origin is list and args and dataclasses.is_dataclass(args[0]):
            return [from_json(args[0], v) for v in (raw or [])]
    return raw


def read_summary(data: dict[str, Any]) -> RunSummary:
    """The RunSummary of a summary.json of any readable version; ValueError otherwise."""
    version = data.get("schema_version", 1) if isinstance(data, dict) else None
    if version not in READABLE_SCHEMAS:
        raise ValueError(
            f"summary.json has schema_version {version!r}; this soak reads "
            f"{', '.join(map(str, READABLE_SCHEMAS))} (a newer soak wrote it: upgrade soak)"
        )
    if version >= 3:
        return from_json(RunSummary, data)
    nested = dict(data)
    targets = data.get("targets") if isinstance(data.get("targets"), dict) else {}
    nested["targets"] = {name: _target_from_flat(name, t) for name, t in targets.items()}
    nested["criteria"] = [c for c in data.get("criteria") or [] if isinstance(c, dict)]
    return from_json(RunSummary, nested)


def flat_names(series: str) -> dict[str, str]:
    """SeriesSummary field -> its key in a version 1/2 target entry (`rss_growth_mb_per_hour`)."""
    mb = "_mb" if SERIES_UNITS[series] else ""
    names = {name: f"{series}_{name}" for name in ("trend", "envelope", "drops", "doubt")}
    names.update({name: f"{series}_{name}{mb}" for name in ("start", "end", "max", "limit")})
    names.update(
        {
            "level_since_s": f"{series}_level_since_s",
            "limit_source": f"{series}_limit_source",
            "hours_to_limit": f"{series}_hours_to_limit",
            "hours_to_limit_at_replies_per_day": f"{series}_hours_to_limit_at_replies_per_day",
        }
    )
    for name, flat in (
        ("growth_per_hour", "growth{mb}_per_hour"),
        ("growth_ci_per_hour", "growth_ci{mb}_per_hour"),
        ("growth_overall_per_hour", "growth_overall{mb}_per_hour"),
        ("growth_per_1k_replies", "growth{mb}_per_1k_replies"),
        ("growth_ci_per_1k_replies", "growth_ci{mb}_per_1k_replies"),
        ("growth_per_connection", "growth{mb}_per_connection"),
    ):
        names[name] = f"{series}_{flat.format(mb=mb)}"
    return names


def _quantile_names(prefix: str) -> dict[str, str]:
    names = {stat: f"{prefix}_{stat}_s" for stat in ("p50", "p95", "p99", "max")}
    return {**names, "samples": f"{prefix}_samples"}


#: Section -> {field: key in a version 1/2 target entry} of the flat layout.
_FLAT_CPU = {
    "idle_percent": "idle_cpu_percent",
    "idle_samples": "idle_cpu_samples",
    "busy_percent": "busy_cpu_percent",
    "busy_samples": "busy_cpu_samples",
    "idle_early_percent": "idle_cpu_early_percent",
    "idle_late_percent": "idle_cpu_late_percent",
    "idle_growth_per_1k_replies": "idle_cpu_growth_per_1k_replies",
    "idle_rise_points": "idle_cpu_rise_points",
    "idle_periods": "idle_periods",
}
_FLAT_HEALTH = {"samples": "health_samples", "errors": "health_errors"}
_FLAT_HEALTH["last_error"] = "health_last_error"
_FLAT_HEALTH["fields"] = "health_fields"
_FLAT_ANOMALIES = {"records": "anomaly_records", "kinds": "anomaly_kinds"}
_FLAT_ANOMALIES["groups"] = "anomaly_groups"


def _section_from_flat(entry: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """A section's JSON from a flat target entry, with its share of `unavailable`."""
    unavailable = entry.get("unavailable") if isinstance(entry.get("unavailable"), dict) else {}
    section: dict[str, Any] = {name: entry[flat] for name, flat in names.items() if flat in entry}
    section["missing"] = {
        name: unavailable[flat] for name, flat in names.items() if flat in unavailable
    }
    return section


def _target_from_flat(name: str, entry: Any) -> dict[str, Any]:
    """A version 3 target entry from a version 1/2 one."""
    if not isinstance(entry, dict):
        return {"name": name}
    target = dict(entry, name=name)
    for series in SERIES_UNITS:
        target[series] = _section_from_flat(entry, flat_names(series))
        target[series].update(name=series, unit=SERIES_UNITS[series])
    chats = {f.name: f.name for f in dataclasses.fields(ChatSummary)}
    chats = {k: v for k, v in chats.items() if k not in (*CHAT_LATENCIES, "missing")}
    target["chats"] = _section_from_flat(entry, chats)
    target["chats"]["ping"] = _section_from_flat(entry, _quantile_names("ping"))
    for kind in CHAT_LATENCIES[:3]:
        target["chats"][kind] = _section_from_flat(entry, _quantile_names(kind))
    target["cpu"] = _section_from_flat(entry, _FLAT_CPU)
    target["loop_lag"] = _section_from_flat(entry, _quantile_names("loop_lag"))
    target["health"] = _section_from_flat(entry, _FLAT_HEALTH)
    target["health"]["latency"] = _section_from_flat(entry, _quantile_names("health_latency"))
    target["anomalies"] = _section_from_flat(entry, _FLAT_ANOMALIES)
    target["top_growing_family"] = entry.get("threads_top_growing_family")
    target["segments"] = [_segment_from_flat(s) for s in entry.get("segments") or []]
    return target


def _segment_from_flat(entry: Any) -> dict[str, Any]:
    if not isinstance(entry, dict):
        return {}
    names = {series: flat_names(series) for series in SERIES_UNITS}
    return {
        **entry,
        "growth_per_hour": {s: entry.get(n["growth_per_hour"]) for s, n in names.items()},
        "trend": {s: entry.get(n["trend"]) for s, n in names.items()},
    }
