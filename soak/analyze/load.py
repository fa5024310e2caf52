"""Load a run directory into pandas DataFrames, one set per target.

Every frame is sorted by `t` (Unix seconds) and has `elapsed` (seconds since the
manifest's started_at). Frames are empty, with their columns, when a file is missing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from soak.errors import RunDirError
from soak.rundir import ANOMALIES, CHATS, EVENTS, HEALTH, PROCESS, THREADS, RunDir, TargetInfo

#: Turn outcomes as recorded in chats.jsonl `outcomes`.
OUTCOMES = ("ok", "stall", "error", "disconnect", "violation", "mismatch", "first_token_timeout")
#: Prefix of the numeric /health body fields in the health frame ("body.diagnostics.lag_ms").
BODY_PREFIX = "body."
#: Anomaly records kept per target (the report shows the first ones; counts come from chats).
ANOMALY_LIMIT = 200

_PROCESS_COLUMNS = ("pid", "create_time", "threads", "rss_mb", "cpu_percent", "fds", "children")
_CHAT_COLUMNS = ("interval_s", "started", "turns", "in_flight", "connections", *OUTCOMES)
_ANOMALY_COLUMNS = ("t", "target", "kind", "session", "request_id", "turn_elapsed_s", "detail")


@dataclass
class TargetData:
    """Everything recorded about one target.

    process: t, elapsed, pid, create_time, threads, rss_mb, cpu_percent, fds, children
    threads: t, elapsed, pid of each thread-name sample
    families: one column per thread-name family (count, 0 if absent), rows as in threads
    health: t, elapsed, status, latency_s, error, then `body.<dotted path>` numeric fields
    chats: t, elapsed, interval_s, started, turns, in_flight, connections, one column per
        outcome, ttft_hist and reply_hist (sparse histogram dicts)
    anomalies: the first ANOMALY_LIMIT records: t, elapsed, target, kind, session,
        request_id, turn_elapsed_s, detail
    """

    info: TargetInfo
    process: pd.DataFrame
    process_errors: int
    threads: pd.DataFrame
    families: pd.DataFrame
    health: pd.DataFrame
    chats: pd.DataFrame
    anomalies: pd.DataFrame
    anomaly_records: int

    @property
    def name(self) -> str:
        return self.info.name


@dataclass
class RunData:
    """A loaded run: manifest, status, time span (Unix seconds), events, targets by name."""

    path: Path
    manifest: dict[str, Any]
    status: str
    started_at: float
    ended_at: float
    events: pd.DataFrame
    targets: dict[str, TargetData]

    @property
    def profile(self) -> dict[str, Any]:
        profile = self.manifest.get("profile")
        return profile if isinstance(profile, dict) else {}


def load_run(path: Path | str, anomaly_limit: int = ANOMALY_LIMIT) -> RunData:
    """Read a run directory (running, finished or killed) into DataFrames.

    Raises RunDirError when it is not a readable run directory of a known format.
    """
    run = RunDir(path)
    manifest = run.manifest()
    status = run.status()
    started_at = _number(manifest.get("started_at"))
    if started_at is None:
        raise RunDirError(f"{run.manifest_path} has no numeric started_at; it is damaged.")
    targets = _target_infos(run)
    chats_by_target = _split_by_target(run.records(CHATS), targets)
    anomalies = _anomalies(run.records(ANOMALIES), targets, anomaly_limit)
    loaded = {
        info.name: _load_target(run, info, chats_by_target[info.name], *anomalies[info.name])
        for info in targets
    }
    for data in loaded.values():
        for frame in (data.process, data.threads, data.health, data.chats, data.anomalies):
            frame["elapsed"] = frame["t"] - started_at
    events = _frame(run.records(EVENTS), ("t", "source", "kind", "message"))
    events["elapsed"] = events["t"] - started_at
    ended_at = _number(manifest.get("ended_at"))
    if ended_at is None:
        last_times = [events["t"].max()] + [
            frame["t"].max()
            for data in loaded.values()
            for frame in (data.process, data.threads, data.health, data.chats)
        ]
        finite = [float(v) for v in last_times if pd.notna(v)]
        ended_at = max(finite, default=started_at)
    return RunData(
        path=run.path,
        manifest=manifest,
        status=status,
        started_at=started_at,
        ended_at=max(ended_at, started_at),
        events=events,
        targets=loaded,
    )


def flatten_numbers(value: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    """Yield (dotted path, number) for every int/float (not bool) inside nested dicts."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from flatten_numbers(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, int | float) and not isinstance(value, bool) and prefix:
        yield prefix, float(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if np.isfinite(value) else None


def _target_infos(run: RunDir) -> list[TargetInfo]:
    """Targets named in the manifest; else the ones that have a directory under targets/."""
    try:
        infos = [info for info in run.targets() if isinstance(info.name, str) and info.name]
    except TypeError as exc:
        raise RunDirError(f"{run.manifest_path} has a malformed targets list ({exc}).") from None
    if infos:
        return infos
    root = run.path / "targets"
    names = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    return [TargetInfo(name=name, url="") for name in names]


def _frame(records: Iterable[dict[str, Any]], columns: tuple[str, ...]) -> pd.DataFrame:
    """A frame of the records (all their keys), with `columns` present and sorted by t."""
    rows = [r for r in records if _number(r.get("t")) is not None]
    frame = pd.DataFrame.from_records(rows) if rows else pd.DataFrame()
    for column in ("t", *columns):
        if column not in frame.columns:
            frame[column] = pd.Series(dtype=float if column == "t" else object)
    frame["t"] = frame["t"].astype(float)
    return frame.sort_values("t", kind="stable").reset_index(drop=True)


def _numeric(frame: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    for column in columns:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    return frame


def _split_by_target(
    records: Iterable[dict[str, Any]], targets: list[TargetInfo]
) -> dict[str, list[dict[str, Any]]]:
    split: dict[str, list[dict[str, Any]]] = {info.name: [] for info in targets}
    for record in records:
        bucket = split.get(record.get("target"))  # type: ignore[arg-type]
        if bucket is not None:
            bucket.append(record)
    return split


def _anomalies(
    records: Iterable[dict[str, Any]], targets: list[TargetInfo], limit: int
) -> dict[str, tuple[list[dict[str, Any]], int]]:
    """First `limit` anomaly records per target (without last_frames) and the record count."""
    kept: dict[str, list[dict[str, Any]]] = {info.name: [] for info in targets}
    counts = dict.fromkeys(kept, 0)
    for record in records:
        name = record.get("target")
        if name not in kept:
            continue
        counts[name] += 1
        if len(kept[name]) < limit:
            kept[name].append({key: record.get(key) for key in _ANOMALY_COLUMNS})
    return {name: (kept[name], counts[name]) for name in kept}


def _chats(records: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for record in records:
        outcomes = record.get("outcomes")
        outcomes = outcomes if isinstance(outcomes, dict) else {}
        row = {key: record.get(key) for key in ("t", "interval_s", "started", "turns")}
        row.update(in_flight=record.get("in_flight"), connections=record.get("connections"))
        row.update({name: outcomes.get(name, 0) for name in OUTCOMES})
        for hist in ("ttft_hist", "reply_hist"):
            value = record.get(hist)
            row[hist] = value if isinstance(value, dict) else {}
        rows.append(row)
    frame = _numeric(_frame(rows, (*_CHAT_COLUMNS, "ttft_hist", "reply_hist")), _CHAT_COLUMNS)
    counts = [c for c in _CHAT_COLUMNS if c != "interval_s"]
    frame[counts] = frame[counts].fillna(0.0)
    return frame


def _process(records: Iterable[dict[str, Any]]) -> tuple[pd.DataFrame, int]:
    """Process samples without the error records, and how many error records there were."""
    good, errors = [], 0
    for record in records:
        if record.get("error") is not None or record.get("threads") is None:
            errors += 1
            continue
        good.append({key: record.get(key) for key in ("t", *_PROCESS_COLUMNS)})
    return _numeric(_frame(good, _PROCESS_COLUMNS), _PROCESS_COLUMNS), errors


def _threads(records: Iterable[dict[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(t, pid) per thread-name sample, and the family counts of each sample (same rows)."""
    rows = [r for r in records if _number(r.get("t")) is not None]
    rows.sort(key=lambda r: r["t"])
    samples = _numeric(
        _frame(({"t": r["t"], "pid": r.get("pid")} for r in rows), ("pid",)), ["pid"]
    )
    counts = [
        {name: n for name, n in families.items() if _number(n) is not None}
        if isinstance(families := r.get("families"), dict)
        else {}
        for r in rows
    ]
    families = pd.DataFrame.from_records(counts, index=samples.index) if counts else pd.DataFrame()
    return samples, families.astype(float).fillna(0.0)


def _health(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for record in records:
        row = {key: record.get(key) for key in ("t", "status", "latency_s", "error")}
        row.update(
            (BODY_PREFIX + path, number) for path, number in flatten_numbers(record.get("body"))
        )
        rows.append(row)
    frame = _frame(rows, ("status", "latency_s", "error"))
    body = [c for c in frame.columns if c.startswith(BODY_PREFIX)]
    return _numeric(frame, ["status", "latency_s", *body])


def _load_target(
    run: RunDir,
    info: TargetInfo,
    chats: list[dict[str, Any]],
    anomalies: list[dict[str, Any]],
    anomaly_records: int,
) -> TargetData:
    process, process_errors = _process(run.target_records(info.name, PROCESS))
    threads, families = _threads(run.target_records(info.name, THREADS))
    return TargetData(
        info=info,
        process=process,
        process_errors=process_errors,
        threads=threads,
        families=families,
        health=_health(run.target_records(info.name, HEALTH)),
        chats=_chats(chats),
        anomalies=_numeric(_frame(anomalies, _ANOMALY_COLUMNS), ("turn_elapsed_s",)),
        anomaly_records=anomaly_records,
    )
