"""`soak status RUN_DIR`: where a running or finished run stands, read-only and quick.

Elapsed time, the latest process, thread-family and /health samples of each
target, growth so far, restarts, and chat outcomes (stalls) so far. Process
files of a multi-day run hold hundreds of thousands of samples, so only their
tail and the start of the current segment are read (a binary search on the
file by time), never the whole file; nothing is written.
"""

from __future__ import annotations

import os
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

from soak.collect.health import field_value
from soak.formatting import plural, sampled_from
from soak.rundir import CHATS, EVENTS, HEALTH, PROCESS, THREADS, RunDir, open_run_file, parse_lines
from soak.units import format_duration

#: Bytes read from the end of a data file for its latest records.
TAIL_BYTES = 65_536
#: Samples at each end of the current segment whose medians give the growth so far
#: (a quarter of the segment each when it is shorter than 4 * WINDOW samples).
WINDOW = 30
#: Growth is not shown for less than this span between the two windows, in seconds.
MIN_GROWTH_SPAN_S = 5.0
_GROWTH = (("threads", "threads", ""), ("rss_mb", "rss", "MB"), ("fds", "fds", ""))


def run_status(path: Path | str) -> dict[str, Any]:
    """The status of a run directory as plain data (what `soak status --json` prints)."""
    run = RunDir(path)
    manifest = run.manifest()
    started = float(manifest.get("started_at") or 0.0)
    ended = manifest.get("ended_at")
    now = float(ended) if isinstance(ended, int | float) else time.time()  # "ago" = before the end
    events = list(run.records(EVENTS))
    chats = _chat_totals(run)
    lag_field = ((manifest.get("profile") or {}).get("collector") or {}).get("loop_lag_field")
    return {
        "run": run.path.name,
        "path": str(run.path),
        "status": run.status(),
        "mode": manifest.get("mode", "run"),
        "started_at": started,
        "elapsed_s": now - started,
        "planned_duration_s": manifest.get("planned_duration_s"),
        "targets": {
            info.name: _target_status(run, info.name, events, chats.get(info.name), lag_field, now)
            for info in run.targets()
        },
    }


def _target_status(
    run: RunDir,
    name: str,
    events: list[dict[str, Any]],
    chats: Counter | None,
    lag_field: str | None,
    now: float,
) -> dict[str, Any]:
    process_path = run.target_file(name, PROCESS)
    samples = [r for r in tail_records(process_path) if r.get("threads") is not None]
    latest = samples[-1] if samples else None
    restarts = [e for e in events if e.get("target") == name and e.get("kind") == "target_restart"]
    detail = next((r for r in reversed(samples) if "sockets" in r or "uss_mb" in r), None)
    families = tail_records(run.target_file(name, THREADS))
    health = tail_records(run.target_file(name, HEALTH))
    status: dict[str, Any] = {
        "latest": latest,
        "age_s": now - latest["t"] if latest else None,
        "detail": detail,
        "families": families[-1].get("families") if families else None,
        "restarts": len(restarts),
        "growth_per_hour": {},
        "health": health[-1] if health else None,
        "loop_lag_ms": field_value(health[-1].get("body"), lag_field)
        if health and lag_field
        else None,
        "pyspy_dumps": sum(
            1 for e in events if e.get("target") == name and e.get("kind") == "pyspy_dump"
        ),
        "chats": dict(chats) if chats is not None else None,
    }
    if latest:
        since = float(restarts[-1]["t"]) if restarts else float("-inf")
        head = records_since(process_path, since, 4 * WINDOW)
        segment = [r for r in head if r.get("threads") is not None and r["pid"] == latest["pid"]]
        if len(head) < 4 * WINDOW:  # the whole segment is in `head`: take its quarters
            window = max(1, len(segment) // 4)
            first, last = segment[:window], segment[-window:]
        else:
            first = segment[:WINDOW]
            last = [r for r in samples if r["pid"] == latest["pid"]][-WINDOW:]
        status["growth_per_hour"] = _growth(first, last)
    return status


def _growth(first: list[dict[str, Any]], last: list[dict[str, Any]]) -> dict[str, float | None]:
    """Per-hour change between the medians of the first and last samples of a segment."""
    if not first or not last:
        return {}
    t0 = statistics.median(r["t"] for r in first)
    t1 = statistics.median(r["t"] for r in last)
    if t1 - t0 < MIN_GROWTH_SPAN_S:
        return {}
    growth: dict[str, float | None] = {}
    for column, key, _ in _GROWTH:
        a = [r[column] for r in first if isinstance(r.get(column), int | float)]
        b = [r[column] for r in last if isinstance(r.get(column), int | float)]
        if a and b:
            growth[key] = (statistics.median(b) - statistics.median(a)) * 3600.0 / (t1 - t0)
    return growth


def _chat_totals(run: RunDir) -> dict[str, Counter]:
    totals: dict[str, Counter] = {}
    for record in run.records(CHATS):
        outcomes = record.get("outcomes")
        if isinstance(outcomes, dict):
            totals.setdefault(str(record.get("target")), Counter()).update(outcomes)
    return totals


# --- reading parts of big JSON Lines files ----------------------------------------------
def tail_records(path: Path, max_bytes: int = TAIL_BYTES) -> list[dict[str, Any]]:
    """The complete records in the last `max_bytes` of a JSON Lines file (oldest first)."""
    handle = open_run_file(path)
    if handle is None:
        return []
    with handle:
        size = handle.seek(0, os.SEEK_END)
        start = max(0, size - max_bytes)
        handle.seek(start)
        chunk = handle.read()
    lines = chunk.split(b"\n")
    if start > 0:
        lines = lines[1:]  # the first line is cut
    return parse_lines(lines[:-1])  # the last piece is "" or a torn line


def records_since(path: Path, since: float, count: int) -> list[dict[str, Any]]:
    """Up to `count` records from the first one with t >= `since` (binary search by offset).

    The file must be in time order, as soak writes it.
    """
    handle = open_run_file(path)
    if handle is None:
        return []
    with handle:
        low, high = 0, handle.seek(0, os.SEEK_END)
        while high - low > 4096:
            middle = (low + high) // 2
            t = _first_t_after(handle, middle)
            if t is None or t >= since:
                high = middle
            else:
                low = middle
        handle.seek(low)
        if low:
            handle.readline()
        found: list[dict[str, Any]] = []
        for record in parse_lines(handle.readline() for _ in range(count * 4)):
            if isinstance(record.get("t"), int | float) and record["t"] >= since:
                found.append(record)
                if len(found) >= count:
                    break
        return found


def _first_t_after(handle: Any, offset: int) -> float | None:
    handle.seek(offset)
    handle.readline()  # skip to the start of the next line
    for _ in range(8):
        line = handle.readline()
        if not line.endswith(b"\n"):
            return None
        records = parse_lines([line])
        if records and isinstance(records[0].get("t"), int | float):
            return float(records[0]["t"])
    return None


# --- text ---------------------------------------------------------------------------------
def format_status(status: dict[str, Any]) -> str:
    """The status for people: a header line, then a few lines per target."""
    planned = status["planned_duration_s"]
    of = f" of {format_duration(planned)}" if isinstance(planned, int | float) else ""
    lines = [
        f"{status['run']}: {status['status']} ({status['mode']}), "
        f"{format_duration(status['elapsed_s'])} elapsed{of}"
    ]
    for name, target in status["targets"].items():
        lines.extend(_format_target(name, target))
    return "\n".join(lines)


def _format_target(name: str, target: dict[str, Any]) -> list[str]:
    latest = target["latest"]
    if latest is None:
        why = "target_lost, or remote_joined for a remote target"
        return [f"{name}: no process sample yet (see events.jsonl for {why})"]
    restarts = target["restarts"]
    head = f"{name}: {sampled_from(latest)}, sampled {format_duration(target['age_s'])} ago"
    if restarts:
        head += f", {restarts} restart{'s' if restarts > 1 else ''}"
    numbers = []
    for column, key, unit in _GROWTH:
        value = latest.get(column)
        if value is None:
            continue
        growth = target["growth_per_hour"].get(key)
        trend = f" ({growth:+,.1f}{unit}/h so far)" if growth is not None else ""
        numbers.append(f"{key} {value:,}{unit and ' ' + unit}{trend}")
    numbers.append(f"cpu {latest.get('cpu_percent')}%")
    lines = [head, "  " + ", ".join(numbers)]
    detail = target["detail"] or {}
    extra = []
    if detail.get("sockets"):
        extra.append("sockets " + ", ".join(f"{k} {v}" for k, v in detail["sockets"].items()))
    if detail.get("uss_mb") is not None:
        extra.append(f"uss {detail['uss_mb']:,} MB")
    if target["families"]:
        top = sorted(target["families"].items(), key=lambda item: -item[1])[:3]
        extra.append("families " + ", ".join(f"{k} {v}" for k, v in top))
    if extra:
        lines.append("  " + "; ".join(extra))
    lines.extend(_format_health_and_chats(target))
    return lines


def _format_health_and_chats(target: dict[str, Any]) -> list[str]:
    parts = []
    health = target["health"]
    if health:
        answer = health.get("error") or f"HTTP {health.get('status')}"
        parts.append(f"health {answer} in {format_duration(health.get('latency_s') or 0)}")
    if target["loop_lag_ms"] is not None:
        parts.append(f"loop lag {target['loop_lag_ms']:g} ms")
    chats = target["chats"]
    if chats is not None:
        bad = sum(v for k, v in chats.items() if k != "ok")
        parts.append(
            f"chats {chats.get('ok', 0)} ok, {plural(chats.get('stall', 0), 'stall')}, {bad} not ok"
        )
    if target["pyspy_dumps"]:
        parts.append(plural(target["pyspy_dumps"], "py-spy dump"))
    return ["  " + "; ".join(parts)] if parts else []
