"""Process samples from a Prometheus server, for targets psutil cannot reach (a pod, a host).

Every collector interval, one instant query (`/api/v1/query`) per metric of the target's
`[targets.prometheus]` table becomes one process.jsonl record with the field names and
units of ProcessSampler's (threads, rss_mb, cpu_percent, cpu_user_s, cpu_system_s, fds,
create_time) and `source: "prometheus"`, so trends, segments, time-to-limit and criteria
read it like a local sample. A new start time is a restart (a new segment). Prometheus
down, slow, answering garbage, nothing or stale data: an error record and a rate-limited
collector_error event, never a crash, never a stale value passed off as fresh.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from soak.collect.health import poll_health
from soak.limits import DEFAULT_FDS, DEFAULT_THREADS, Limit, TargetLimits
from soak.redact import redact_url
from soak.rundir import PROCESS, JsonlWriter, RunDir

if TYPE_CHECKING:
    from soak.collect.collector import Events, Settings
    from soak.collect.metrics import Metrics

#: What each query answers, in the query's own unit (converted to process.jsonl's).
METRICS: dict[str, str] = {
    "threads": "threads of the target (count) -> threads",
    "rss_bytes": "resident memory (bytes) -> rss_mb",
    "cpu_cores": "CPU in use (CPU seconds per second, a rate) -> cpu_percent",
    "cpu_user_seconds": "user CPU time so far (seconds, a counter) -> cpu_user_s",
    "cpu_system_seconds": "system CPU time so far (seconds, a counter) -> cpu_system_s",
    "fds": "open file descriptors (count) -> fds",
    "start_time_seconds": "when the process started (Unix seconds) -> create_time; a change "
    "is a restart",
    "sample_time_seconds": "when the newest sample was scraped (Unix seconds): older than "
    "max_age is stale",
    "fds_limit": "open-files limit (count) -> limits of target_found",
    "threads_limit": "threads limit (count) -> limits of target_found",
    "memory_limit_bytes": "memory limit (bytes) -> limits of target_found",
}
#: Queries read once per process (when it is found or restarted), not every interval.
LIMIT_METRICS = ("fds_limit", "threads_limit", "memory_limit_bytes")

#: The preset queries; `$selector` becomes the profile's label matchers, `$window` its rate
#: window ("60s"). Each query answers one series (aggregated), or none.
PRESETS: dict[str, dict[str, str]] = {
    "process-exporter": {  # a group whose processes all ended stays, with num_procs 0
        "threads": (
            "sum(namedprocess_namegroup_num_threads{$selector})"
            " and on() (sum(namedprocess_namegroup_num_procs{$selector}) > 0)"
        ),
        "rss_bytes": 'sum(namedprocess_namegroup_memory_bytes{memtype="resident",$selector})',
        "cpu_cores": "sum(rate(namedprocess_namegroup_cpu_seconds_total{$selector}[$window]))",
        "cpu_user_seconds": 'sum(namedprocess_namegroup_cpu_seconds_total{mode="user",$selector})',
        "cpu_system_seconds": (
            'sum(namedprocess_namegroup_cpu_seconds_total{mode="system",$selector})'
        ),
        "fds": "sum(namedprocess_namegroup_open_filedesc{$selector})",
        "start_time_seconds": (
            "min(namedprocess_namegroup_oldest_start_time_seconds{$selector} > 0)"
        ),
        "sample_time_seconds": "max(timestamp(namedprocess_namegroup_num_threads{$selector}))",
        "fds_limit": (
            "min(namedprocess_namegroup_open_filedesc{$selector}"
            " / namedprocess_namegroup_worst_fd_ratio{$selector})"
        ),
    },
    "client": {
        "threads": "sum(process_threads{$selector}) or sum(go_threads{$selector})",
        "rss_bytes": "sum(process_resident_memory_bytes{$selector})",
        "cpu_cores": "sum(rate(process_cpu_seconds_total{$selector}[$window]))",
        "fds": "sum(process_open_fds{$selector})",
        "start_time_seconds": "min(process_start_time_seconds{$selector})",
        "sample_time_seconds": "max(timestamp(process_start_time_seconds{$selector}))",
        "fds_limit": "min(process_max_fds{$selector})",
    },
    "cadvisor": {
        "threads": "sum(container_threads{$selector})",
        "rss_bytes": "sum(container_memory_rss{$selector})",
        "cpu_cores": "sum(rate(container_cpu_usage_seconds_total{$selector}[$window]))",
        "cpu_user_seconds": "sum(container_cpu_user_seconds_total{$selector})",
        "cpu_system_seconds": "sum(container_cpu_system_seconds_total{$selector})",
        "fds": "sum(container_file_descriptors{$selector})",
        "start_time_seconds": "min(container_start_time_seconds{$selector})",
        "sample_time_seconds": "max(timestamp(container_threads{$selector}))",
        "threads_limit": "min(container_threads_max{$selector} > 0)",
        "memory_limit_bytes": "min(container_spec_memory_limit_bytes{$selector} > 0)",
    },
}
_MB = 1_048_576
#: Two start times further apart than this (seconds) are two processes (as for psutil's).
_START_TOLERANCE_S = 1.0
_EXCERPT = 200


class QueryError(Exception):
    """A query that got no usable answer; its message says what came back."""


def expand_queries(config: Mapping[str, Any]) -> dict[str, str]:
    """The PromQL of every metric of a validated [targets.prometheus] table: the preset's,
    then `queries` over them, with $selector and $window filled in."""
    selector = str(config.get("selector") or "").strip().removeprefix("{").removesuffix("}")
    window = f"{float(config['window']):g}s"
    merged = {**PRESETS.get(config.get("preset") or "", {}), **(config.get("queries") or {})}
    return {
        metric: query.replace("$selector", selector).replace("$window", window)
        for metric, query in merged.items()
    }


def instant_query(
    base_url: str, promql: str, timeout: float, headers: Mapping[str, str]
) -> tuple[float | None, float]:
    """(value, its timestamp in Unix seconds) of one instant query; value None when the
    query answers no series. Raises QueryError for anything but one usable number."""
    args = urlencode({"query": promql, "timeout": f"{max(1, int(timeout * 1000))}ms"})
    record = poll_health(f"{base_url.rstrip('/')}/api/v1/query?{args}", timeout, headers)
    body = record.get("body")
    if isinstance(body, dict) and body.get("status") == "error":
        raise QueryError(f"Prometheus: {str(body.get('error'))[:_EXCERPT]}")
    if "error" in record:
        raise QueryError(str(record["error"]))
    if not isinstance(body, dict) or body.get("status") != "success":
        raise QueryError(f"not a Prometheus query answer: {str(body)[:_EXCERPT]}")
    data = body.get("data")
    if not isinstance(data, dict):
        raise QueryError(f"a Prometheus answer without data: {str(body)[:_EXCERPT]}")
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        return _number(result)
    if kind != "vector" or not isinstance(result, list):
        raise QueryError(f"expected an instant vector, got {kind!r}: {str(result)[:_EXCERPT]}")
    if not result:
        return None, time.time()
    if len(result) > 1:
        raise QueryError(f"{len(result)} series; aggregate the query to one (sum, min, max)")
    entry = result[0]
    return _number(entry.get("value") if isinstance(entry, dict) else None)


def _number(pair: Any) -> tuple[float | None, float]:
    """A [timestamp, "value"] pair as floats; NaN and infinities are no value."""
    try:
        stamp, text = pair
        value, stamp = float(text), float(stamp)
    except (TypeError, ValueError):
        raise QueryError(f"not a [time, value] sample: {str(pair)[:_EXCERPT]}") from None
    return (value if math.isfinite(value) else None), stamp


class PrometheusSource:
    """The queries of one target and the process record their answers make."""

    def __init__(self, config: Mapping[str, Any], timeout: float) -> None:
        self.url: str = config["url"]
        self.headers: dict[str, str] = dict(config.get("headers") or {})
        self.max_age: float = float(config["max_age"])
        self.timeout = float(config.get("timeout") or timeout)
        queries = expand_queries(config)
        self.limit_queries = {m: q for m, q in queries.items() if m in LIMIT_METRICS}
        self.queries = {m: q for m, q in queries.items() if m not in LIMIT_METRICS}

    def _answers(self, queries: Mapping[str, str]) -> dict[str, float]:
        """{metric: value} of the queries that answered a series, within one `timeout`."""
        deadline = time.monotonic() + self.timeout
        values: dict[str, float] = {}
        now = time.time()
        for metric, promql in queries.items():
            left = deadline - time.monotonic()
            if left <= 0:
                raise QueryError(f"timeout after {self.timeout:g} s (at {metric})")
            try:
                value, stamp = instant_query(self.url, promql, left, self.headers)
            except QueryError as exc:
                raise QueryError(f"{metric}: {exc}") from None
            if now - stamp > self.max_age:
                raise QueryError(f"stale: {metric} was evaluated {now - stamp:.0f} s ago")
            if value is not None:
                values[metric] = value
        return values

    def record(self) -> dict[str, Any]:
        """One process.jsonl record (raises QueryError when there is none to write)."""
        values = self._answers(self.queries)
        if "threads" not in values:
            raise QueryError(
                "no series for threads: the process is gone, or the selector matches "
                f"nothing ({self.queries['threads']})"
            )
        now = time.time()
        scraped = values.get("sample_time_seconds")
        if scraped is not None and now - scraped > self.max_age:
            raise QueryError(
                f"stale: the newest sample was scraped {now - scraped:.0f} s ago "
                f"(max_age {self.max_age:g} s)"
            )
        record: dict[str, Any] = {
            "t": round(now, 3),
            "pid": None,
            "create_time": values.get("start_time_seconds"),
            "threads": int(values["threads"]),
        }
        converted = (
            ("rss_mb", "rss_bytes", lambda v: round(v / _MB, 2)),
            ("cpu_percent", "cpu_cores", lambda v: round(v * 100.0, 1)),
            ("cpu_user_s", "cpu_user_seconds", lambda v: round(v, 2)),
            ("cpu_system_s", "cpu_system_seconds", lambda v: round(v, 2)),
            ("fds", "fds", int),
        )
        for field, metric, convert in converted:
            if metric in values:
                record[field] = convert(values[metric])
        record["source"] = "prometheus"
        return record

    def limits(self) -> TargetLimits:
        """The target's limits as Prometheus tells them; defaults (said so) for the rest."""
        try:
            values = self._answers(self.limit_queries)
        except QueryError as exc:
            values, why = {}, f"Prometheus did not say ({exc})"
        else:
            why = "Prometheus does not say"
        known = {
            "threads": ("threads_limit", 1, Limit(DEFAULT_THREADS, f"default; {why}")),
            "fds": ("fds_limit", 1, Limit(DEFAULT_FDS, f"default ulimit -n; {why}")),
            "memory_mb": ("memory_limit_bytes", _MB, Limit(None, f"unknown; {why}")),
        }
        return TargetLimits(
            **{
                name: Limit(round(values[metric] / per, 1), f"Prometheus {metric}")
                if metric in values
                else default
                for name, (metric, per, default) in known.items()
            }
        )


class PrometheusWatch:
    """Samples one target from Prometheus into its process.jsonl, noticing restarts: the
    counterpart of TargetWatch for a target sampled by psutil."""

    pid = None  # Prometheus names no process id (py-spy dumps need one)

    def __init__(
        self,
        target: Mapping[str, Any],
        run: RunDir,
        events: Events,
        settings: Settings,
        metrics: Metrics | None = None,
    ) -> None:
        self.name: str = target["name"]
        self.events = events
        self.metrics = metrics
        self.source = PrometheusSource(target["prometheus"], settings.health_timeout)
        self.found = False
        self.lost_reported = False
        self.create_time: float | None = None
        self.process_out = JsonlWriter(run.target_file(self.name, PROCESS))

    def sample(self) -> None:
        """One record: the target's series now, or the error that kept them from it."""
        try:
            record = self.source.record()
        except QueryError as exc:
            self._failed(str(exc))
            return
        self._identify(record.get("create_time"))
        self.process_out.write(record)
        if self.metrics:
            self.metrics.process(self.name, record)

    def _failed(self, message: str) -> None:
        self.process_out.write(
            {"t": round(time.time(), 3), "pid": None, "error": message, "source": "prometheus"}
        )
        self.events.error(
            f"prometheus {self.name}",
            f"{self.name}: Prometheus {redact_url(self.source.url)}: {message}",
            self.name,
        )
        if self.found and not self.lost_reported:
            self.lost_reported = True
            if self.metrics:
                self.metrics.lost(self.name)
            self.events.write("target_lost", f"{self.name}: {message}", self.name, pid=None)

    def _identify(self, create_time: float | None) -> None:
        """target_found on the first record (and after a loss), target_restart when the
        start time moved: the events and limits TargetWatch writes for a local process."""
        previous, self.create_time = self.create_time, create_time
        url = redact_url(self.source.url)
        restarted = (
            previous is not None
            and create_time is not None
            and abs(create_time - previous) > _START_TOLERANCE_S
        )
        if self.found and not restarted and not self.lost_reported:
            return
        limits = self.source.limits().to_json()
        if restarted:
            if self.metrics:
                self.metrics.restarted(self.name)
            self.events.write(
                "target_restart",
                f"{self.name}: new process (started {create_time:.0f}, was {previous:.0f}; "
                f"from Prometheus {url})",
                self.name,
                pid=None,
                old_create_time=previous,
                new_create_time=create_time,
                found_by="prometheus",
                limits=limits,
            )
        else:
            again = " again" if self.found else ""
            self.events.write(
                "target_found",
                f"{self.name}: sampling{again} from Prometheus {url}",
                self.name,
                pid=None,
                create_time=create_time,
                found_by="prometheus",
                limits=limits,
            )
        self.found, self.lost_reported = True, False

    def close(self) -> None:
        self.process_out.close()
