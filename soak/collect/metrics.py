"""The latest samples as Prometheus metrics on 127.0.0.1 (`--metrics-port`), for Grafana.

Needs the optional `prometheus_client` (pip install 'soak[metrics]'). The
collector threads only store their latest records here; the metric families
are built from them when Prometheus scrapes, so a family of threads that
disappears, or a target that restarts, leaves no stale series behind.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

from soak.errors import RunError, UsageError

#: Numeric /health fields exposed per target (the first ones, in body order).
MAX_HEALTH_FIELDS = 100
#: Thread-name families exposed per target (the largest ones).
MAX_FAMILIES = 50
_MB = 1_048_576
#: (kind label, process-record field) of soak_target_cgroup_cpu_periods_total.
_CGROUP_PERIODS = (("all", "cgroup_cpu_periods"), ("throttled", "cgroup_cpu_throttled_periods"))


def require_prometheus_client() -> None:
    """Raise UsageError, saying what to install, when prometheus_client is missing."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise UsageError(
            "--metrics-port needs the prometheus_client package: "
            "pip install 'soak[metrics]' (or pip install prometheus_client)."
        ) from None


def check_metrics_port(port: int) -> None:
    """Fail before a run starts when the metrics port cannot be served on 127.0.0.1."""
    require_prometheus_client()
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise RunError(
                f"cannot serve metrics on 127.0.0.1:{port} ({exc.strerror or exc}); "
                "choose another --metrics-port."
            ) from None


class Metrics:
    """Serves http://127.0.0.1:PORT/metrics from the latest samples of every target."""

    def __init__(self, port: int, loop_lag_field: str | None = None) -> None:
        require_prometheus_client()
        from prometheus_client import CollectorRegistry, start_http_server

        self.loop_lag_field = loop_lag_field
        self._lock = threading.Lock()
        self._process: dict[str, dict[str, Any]] = {}
        self._detail: dict[str, dict[str, Any]] = {}
        self._families: dict[str, dict[str, int]] = {}
        self._health: dict[str, dict[str, Any]] = {}
        self._up: dict[str, bool] = {}
        self._restarts: dict[str, int] = {}
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self)
        try:
            self._server, self._thread = start_http_server(
                port, addr="127.0.0.1", registry=self._registry
            )
        except OSError as exc:
            raise RunError(
                f"cannot serve metrics on 127.0.0.1:{port} ({exc.strerror or exc}); "
                "choose another --metrics-port."
            ) from None
        self.port = self._server.server_address[1]

    def serve_also(self, source: Any) -> None:
        """Serve the metric families of `source` (an object whose `collect()` yields them
        on every scrape, such as soak.collect.chat_metrics.ChatMetrics) beside these."""
        self._registry.register(source)

    # -- updates from the collector threads ---------------------------------------------
    def process(self, target: str, record: dict[str, Any]) -> None:
        """A process.jsonl record (detail fields are kept until the next detail sample)."""
        with self._lock:
            self._up[target] = True
            self._process[target] = record
            if "sockets" in record or "uss_mb" in record:
                self._detail[target] = record

    def lost(self, target: str) -> None:
        with self._lock:
            self._up[target] = False

    def restarted(self, target: str) -> None:
        with self._lock:
            self._restarts[target] = self._restarts.get(target, 0) + 1

    def families(self, target: str, families: dict[str, int]) -> None:
        with self._lock:
            self._families[target] = families

    def health(self, target: str, record: dict[str, Any], over_floor: float | None) -> None:
        with self._lock:
            self._health[target] = {**record, "over_floor_s": over_floor}

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    # -- the scrape ---------------------------------------------------------------------
    def collect(self) -> Iterator[Any]:
        """Called by prometheus_client on every scrape: metric families of the latest state."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        with self._lock:
            up, restarts = dict(self._up), dict(self._restarts)
            process, detail = dict(self._process), dict(self._detail)
            families, health = dict(self._families), dict(self._health)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Any:
            return GaugeMetricFamily(name, doc, labels=["target", *labels])

        target_up = gauge("soak_target_up", "1 while the target's process is being sampled")
        for name, value in up.items():
            target_up.add_metric([name], 1.0 if value else 0.0)
        yield target_up
        restart_total = CounterMetricFamily(
            "soak_target_restarts",
            "Target restarts seen (new pid or start time)",
            labels=["target"],
        )
        for name in up:
            restart_total.add_metric([name], restarts.get(name, 0))
        yield restart_total

        plain = (
            ("soak_target_threads", "Threads of the target process", "threads", 1.0),
            ("soak_target_rss_bytes", "Resident memory of the target process", "rss_mb", _MB),
            ("soak_target_cpu_percent", "CPU, % of one core, last interval", "cpu_percent", 1.0),
            ("soak_target_open_fds", "Open file descriptors", "fds", 1.0),
            ("soak_target_children", "Descendant processes", "children", 1.0),
            ("soak_target_pid", "Pid of the sampled process", "pid", 1.0),
            ("soak_target_uss_bytes", "Unique memory (USS), detail samples", "uss_mb", _MB),
            ("soak_target_children_rss_bytes", "RSS of descendants", "children_rss_mb", _MB),
            (
                "soak_target_cgroup_memory_bytes",
                "Memory of the target's cgroup (a container's: all its processes)",
                "cgroup_memory_mb",
                _MB,
            ),
        )
        latest = {name: {**detail.get(name, {}), **record} for name, record in process.items()}
        for metric, doc, key, scale in plain:
            family = gauge(metric, doc)
            for name, record in latest.items():
                value = record.get(key)
                if isinstance(value, int | float):
                    family.add_metric([name], value * scale)
            yield family

        cpu = CounterMetricFamily(
            "soak_target_cpu_seconds", "CPU time of the target process", labels=["target", "mode"]
        )
        switches = CounterMetricFamily(
            "soak_target_context_switches", "Context switches", labels=["target", "kind"]
        )
        sockets = gauge("soak_target_sockets", "Inet sockets by TCP state (UDP: UDP)", ("state",))
        periods = CounterMetricFamily(
            "soak_target_cgroup_cpu_periods",
            "CFS periods of the target's cgroup: all, and those its CPU quota throttled",
            labels=["target", "kind"],
        )
        for name, record in process.items():
            for mode in ("user", "system"):
                if isinstance(record.get(f"cpu_{mode}_s"), int | float):
                    cpu.add_metric([name, mode], record[f"cpu_{mode}_s"])
            for kind, key in _CGROUP_PERIODS:
                if isinstance(record.get(key), int):
                    periods.add_metric([name, kind], record[key])
        for name, record in detail.items():
            for kind in ("voluntary", "involuntary"):
                value = record.get(f"ctx_switches_{kind}")
                if isinstance(value, int):
                    switches.add_metric([name, kind], value)
            for state, count in (record.get("sockets") or {}).items():
                sockets.add_metric([name, state], count)
        yield from (cpu, switches, sockets, periods)

        threads = gauge("soak_target_thread_family", "Threads per name family", ("family",))
        for name, counts in families.items():
            largest = sorted(counts.items(), key=lambda item: -item[1])[:MAX_FAMILIES]
            for family, count in largest:
                threads.add_metric([name, family], count)
        yield threads
        yield from self._health_families(health, gauge)

    def _health_families(self, health: dict[str, dict[str, Any]], gauge: Any) -> Iterator[Any]:
        from soak.collect.health import field_value
        from soak.rundir import flatten_into

        ok = gauge("soak_health_up", "1 when the last /health poll answered 2xx without error")
        status = gauge("soak_health_status_code", "HTTP status of the last /health poll")
        latency = gauge("soak_health_latency_seconds", "Latency of the last /health poll")
        over = gauge("soak_health_latency_over_floor_seconds", "/health latency above its floor")
        lag = gauge("soak_health_loop_lag_seconds", "Event-loop lag from the loop-lag field")
        fields = gauge("soak_health_field", "Numeric /health body fields", ("field",))
        for name, record in health.items():
            code = record.get("status")
            good = isinstance(code, int) and 200 <= code < 300 and not record.get("error")
            ok.add_metric([name], 1.0 if good else 0.0)
            if isinstance(code, int):
                status.add_metric([name], code)
            latency.add_metric([name], record.get("latency_s") or 0.0)
            if record.get("over_floor_s") is not None:
                over.add_metric([name], record["over_floor_s"])
            body = record.get("body")
            if self.loop_lag_field:
                value = field_value(body, self.loop_lag_field)
                if value is not None:
                    lag.add_metric([name], value / 1000.0)
            flat: dict[str, Any] = {}
            if isinstance(body, dict):
                flatten_into(body, flat)
            for index, (path, value) in enumerate(flat.items()):
                if index >= MAX_HEALTH_FIELDS:
                    break
                fields.add_metric([name, path], value)
        yield from (ok, status, latency, over, lag, fields)
